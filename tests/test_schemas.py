"""The JSON Schemas kept in the repository match the payload models (regenerate: xray-agent schema --out agent/schemas)."""

from __future__ import annotations

import json
import subprocess
import sys

from agent.payloads import MODELS
from agent.schemas import HERE, render_schemas
from tests.realparts import REPO


def test_committed_schemas_are_up_to_date():
    rendered = render_schemas()
    assert len(rendered) == len(MODELS)
    for name, text in rendered.items():
        path = HERE / name
        assert path.exists(), f"{name} missing: run xray-agent schema --out agent/schemas"
        assert path.read_text() == text, f"{name} is stale: run xray-agent schema --out agent/schemas"
    stray = {p.name for p in HERE.glob("*.json")} - set(rendered)
    assert not stray, f"schemas without a model: {stray}"


def test_every_schema_requires_the_envelope_fields(tmp_path):
    subprocess.run([sys.executable, "-m", "agent", "schema", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    for path in tmp_path.glob("*.json"):
        schema = json.loads(path.read_text())
        assert {"schema", "msg_id", "site", "room", "ts"} <= set(schema["properties"]), path.name
        assert schema["additionalProperties"] is False
