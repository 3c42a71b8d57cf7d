"""JSON Schemas of the published payloads, generated from the pydantic models (`xray-agent schema --out DIR`).

The repository keeps the generated files beside this module; tests/test_schemas.py fails when they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.payloads import MODELS

HERE = Path(__file__).parent


def schema_filename(model) -> str:
    """`xray.exposure/1` -> `xray.exposure.v1.json`."""
    name, version = model.model_fields["schema_"].default.split("/")
    return f"{name}.v{version}.json"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, for every payload model."""
    out = {}
    for model in MODELS:
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$id"] = model.model_fields["schema_"].default
        out[schema_filename(model)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every schema into out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written
