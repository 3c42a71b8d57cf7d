"""The unit file passes `systemd-analyze verify` and `systemd-analyze security --offline=yes` (exposure <= 2.0).

Both run without a systemd PID 1 (this sandbox, CI containers). verify insists that ExecStart= names an executable
that exists, and the unit names /opt/xray-agent/venv/bin/xray-agent, which only an installed machine has: the test
verifies a copy whose program paths point at a stand-in executable in the test's folder; every other line is the
unit's own. tests/test_install.py verifies the unit as installed into a temporary root, against the real program.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.realparts import REPO

UNIT = REPO / "systemd" / "xray-agent.service"
PROGRAM = "/opt/xray-agent/venv/bin/xray-agent"
EXPOSURE_MAX = 2.0
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed; scripts/setup.sh "
                                                           "installs it (Debian package systemd)")


def verify(unit: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of one unit file (it prints problems but may still exit 0: callers check both)."""
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)


def unit_with_program(tmp_path: Path, program: Path, text: str | None = None) -> Path:
    """A copy of the unit (same file name) whose ExecStart/ExecStartPre program is `program`."""
    copy = tmp_path / "unit" / UNIT.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text((text or UNIT.read_text()).replace(PROGRAM, str(program)))
    return copy


@needs_analyze
def test_unit_verifies_clean(tmp_path):
    stand_in = tmp_path / "xray-agent"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    result = verify(unit_with_program(tmp_path, stand_in))
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
    # The check is not vacuous: an unknown key is reported.
    typo = UNIT.read_text().replace("[Service]\n", "[Service]\nWatchDogSec=1\n")
    broken = unit_with_program(tmp_path, stand_in, typo)
    assert "Unknown key" in verify(broken).stderr


@needs_analyze
def test_security_exposure_at_most_2():
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)], capture_output=True,
                            text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure score in the output:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= EXPOSURE_MAX, result.stdout


def test_unit_declares_what_the_agent_relies_on():
    text = UNIT.read_text()
    keys = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines() if "=" in line
            and not line.startswith("#")}
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main" and int(keys["WatchdogSec"]) > 0
    assert keys["Restart"] == "on-failure" and keys["RestartPreventExitStatus"] == "2"
    assert keys["User"] == "xray-agent" and keys["SupplementaryGroups"] == "dialout"
    assert keys["ProtectSystem"] == "strict" and keys["DevicePolicy"] == "closed" and keys["UMask"] == "0077"
    assert "PrivateDevices" not in keys  # it would hide /dev/ttyUSB* and /dev/ttyACM*
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw"} <= {v for k, v in _all(text, "DeviceAllow")}
    assert keys["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE" and keys["AmbientCapabilities"] == ""
    # the program paths the installer creates
    assert f"{PROGRAM} run --config /etc/xray-agent/agent.toml" in text


def _all(text: str, key: str) -> list[tuple[str, str]]:
    return [(key, line.split("=", 1)[1]) for line in text.splitlines() if line.startswith(f"{key}=")]
