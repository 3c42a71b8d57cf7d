#!/usr/bin/env bash
# Sets up everything the tests need (system packages, .venv) and runs the whole suite against real parts:
# mosquitto, dcmtk's storescu, pseudo-terminals. Extra arguments go to pytest (e.g. -k outbox, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> running tests"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
