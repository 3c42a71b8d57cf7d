#!/usr/bin/env bash
# Sets up (system packages, .venv) and runs the agent's main job locally: mosquitto, the agent, sample sources and a
# subscriber printing what arrives. Ctrl-C stops everything. Extra arguments go to scripts/demo.py (e.g. --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
