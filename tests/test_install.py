"""scripts/install.sh into a temporary root: tree, modes, owners, idempotent re-run, uninstall keeps data, purge.

The venv is really created and the project really installed from this checkout, offline, from a wheelhouse of its
dependencies built once per dependency set (cached under ~/.cache/xray-agent-tests, so only the first run needs the
package index).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realparts import REPO
from tests.test_systemd_unit import ANALYZE, PROGRAM, verify

pytestmark = pytest.mark.integration
INSTALL = REPO / "scripts" / "install.sh"
AS_ROOT = os.geteuid() == 0
PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter behind the test venv


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + sys.version.encode()).hexdigest()[:12]
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xray-agent-tests" / f"wheelhouse-{key}"
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                                "-w", str(folder), str(REPO), "setuptools>=77"], capture_output=True, text=True,
                               timeout=600)
        if built.returncode != 0:
            pytest.skip(f"could not build the dependency wheelhouse (package index unreachable?): "
                        f"{built.stderr.strip().splitlines()[-1:]}")
        for wheel in folder.glob("xray_agent-*.whl"):
            wheel.unlink()  # the installer builds the project from the checkout itself
        (folder / "complete").touch()
    return folder


def install(root: Path, wheelhouse: Path, *args: str) -> str:
    out = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--wheelhouse", str(wheelhouse),
                          "--python", PYTHON, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def passwd_ids(root: Path, name: str) -> tuple[int, int] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def node(path: Path) -> tuple[str, int, int]:
    st = path.lstat()
    return f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid, st.st_gid


def test_install_upgrade_uninstall_purge(tmp_path, wheelhouse):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    out = install(root, wheelhouse)
    assert "systemd is not running here (--root)" in out and "systemctl daemon-reload && systemctl enable" in out

    uid, gid = passwd_ids(root, "xray-agent")
    assert 100 <= uid < 1000 and "dialout:x:20:xray-agent" in (root / "etc" / "group").read_text()
    assert f"xray-agent:x:{gid}:" in (root / "etc" / "group").read_text()
    expected = {"etc/xray-agent": ("0750", 0, gid), "etc/xray-agent/agent.toml": ("0640", 0, gid),
                "etc/xray-agent/site.key": ("0600", uid, gid), "var/lib/xray-agent": ("0750", uid, gid),
                "var/log/xray-agent": ("0750", uid, gid), "etc/systemd/system/xray-agent.service": ("0644", 0, 0)}
    for rel, (mode, owner, group) in expected.items():
        got = node(root / rel)
        assert got[0] == mode, f"{rel}: mode {got[0]}, expected {mode}"
        if AS_ROOT:
            assert got[1:] == (owner, group), f"{rel}: owner {got[1:]}, expected {(owner, group)}"
    program = root / PROGRAM.lstrip("/")
    assert subprocess.run([program, "--version"], capture_output=True, text=True).stdout.startswith("xray-agent ")
    assert os.readlink(root / "usr/local/bin/xray-agent") == PROGRAM
    config = (root / "etc/xray-agent/agent.toml").read_text()
    assert 'path = "/var/lib/xray-agent/outbox.db"' in config  # never under /etc, which the unit keeps read-only
    assert len(bytes.fromhex((root / "etc/xray-agent/site.key").read_text().strip())) >= 32
    if ANALYZE:  # the unit as installed, its program paths pointing into the temporary root
        unit = root / "etc/systemd/system/xray-agent.service"
        copy = tmp_path / "verify" / unit.name
        copy.parent.mkdir()
        copy.write_text(unit.read_text().replace("/opt/xray-agent", str(root / "opt/xray-agent")))
        result = verify(copy)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr

    # Upgrade: config, secret and outbox stay as they are; nothing is added twice.
    (root / "etc/xray-agent/agent.toml").write_text(config + "# edited by biomed\n")
    key = (root / "etc/xray-agent/site.key").read_text()
    (root / "var/lib/xray-agent/outbox.db").write_bytes(b"data")
    out = install(root, wheelhouse)
    assert "wrote" not in out and "created" not in out
    assert (root / "etc/xray-agent/agent.toml").read_text().endswith("# edited by biomed\n")
    assert (root / "etc/xray-agent/site.key").read_text() == key
    assert (root / "var/lib/xray-agent/outbox.db").read_bytes() == b"data"
    assert [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()] == ["root", "xray-agent"]
    assert node(root / "etc/xray-agent/agent.toml")[0] == "0640"

    out = install(root, wheelhouse, "--uninstall")
    assert not (root / "opt/xray-agent").exists() and not (root / "etc/systemd/system/xray-agent.service").exists()
    assert not (root / "usr/local/bin/xray-agent").is_symlink()
    assert (root / "var/lib/xray-agent/outbox.db").read_bytes() == b"data"
    assert (root / "etc/xray-agent/site.key").read_text() == key and passwd_ids(root, "xray-agent")

    install(root, wheelhouse, "--uninstall", "--purge")
    for gone in ("etc/xray-agent", "var/lib/xray-agent", "var/log/xray-agent"):
        assert not (root / gone).exists(), gone
    assert passwd_ids(root, "xray-agent") is None
    assert (root / "etc/group").read_text() == "root:x:0:\ndialout:x:20:\n"
    assert (root / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/bash\n"
