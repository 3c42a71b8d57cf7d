#!/usr/bin/env bash
# Installs what xray-agent and its tests need on a Debian machine: system packages (only those missing) and a
# virtual environment in .venv with the agent and its test extras. Safe to run again. Used by test.sh and demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package providing it
declare -A PROGRAMS=(
  [mosquitto]=mosquitto          # the broker the integration tests and the demo talk to
  [mosquitto_sub]=mosquitto-clients
  [storescu]=dcmtk               # a real DICOM sender for intake tests
  [socat]=socat                  # pseudo-terminal pairs for serial tests
  [openssl]=openssl
  [chromium]=chromium            # the QC page's browser test (headless, driven by Selenium)
  [chromedriver]=chromium-driver # Debian's driver for it, so Selenium never downloads one
  [pdftotext]=poppler-utils      # the QC report test reads the PDF back (pdfinfo, pdftotext, pdftoppm)
  [systemd-analyze]=systemd      # the unit file tests: verify and security --offline (no PID 1 needed)
)
missing=()
for prog in "${!PROGRAMS[@]}"; do
  if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ]; then
    missing+=("${PROGRAMS[$prog]}")
  fi
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "==> installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"xray-agent needs Python 3.11 or newer; this is {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtual environment .venv"
  python3 -m venv .venv
fi
echo "==> installing xray-agent and test dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
