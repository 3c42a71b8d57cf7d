"""Disk full under the real agent, then space back: readiness follows the last write, the WAL is cut back.

The state directory is a 16 MiB tmpfs mounted in a private mount namespace (`unshare --user --map-root-user --mount`,
so no privilege is needed and nothing outside the agent's process sees the mount); the test fills it through
/proc/PID/root with a ballast file until the kernel answers ENOSPC, and frees it by deleting the ballast.

What must hold: while full, C-STOREs are answered 0xA700 and /readyz says the last write failed (not "writable");
when space returns, /readyz turns ready without any intake traffic (the agent probes), the WAL is checkpointed and
truncated (it held the outage's pages: it must not keep the space it took), and every acknowledged object is
delivered once the broker is up.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.realparts import REPO, AgentProcess, Mosquitto, free_port, wait_for
from tests.test_state_corruption import DICOM, dx_files, markers, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TMPFS_MIB = 16


class NamespacedAgent(AgentProcess):
    """`xray-agent run` with its state directory on a small tmpfs of its own mount namespace."""

    def __init__(self, config: Path, state_dir: Path):
        super().__init__(config)
        self.state_dir = state_dir

    def start(self) -> "NamespacedAgent":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        script = (f'mount -t tmpfs -o size={TMPFS_MIB}m tmpfs "$1" && shift && exec "$@"')
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(self.state_dir),
             sys.executable, "-m", "agent", "run", "--config", str(self.config)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"))
        return self

    def inside(self, name: str) -> Path:
        """A path in the agent's tmpfs, as this process can reach it."""
        return Path(f"/proc/{self.proc.pid}/root") / self.state_dir.relative_to("/") / name


def fill(path: Path) -> int:
    """Write zeros to `path` until the file system is full; bytes written."""
    written = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                small = b"\0" * 4096
                try:
                    while True:
                        written += f.write(small)
                except OSError:
                    return written


def test_disk_full_then_space_back(tmp_path, agent_factory):
    if shutil.which("storescu") is None or shutil.which("unshare") is None:
        pytest.fail("storescu (dcmtk) and unshare (util-linux) are needed")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user and mount namespaces are not available here: {probe.stderr.decode().strip()}")
    from tests.realparts import write_agent_config
    from tests.test_health_agent import http

    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    config = write_agent_config(tmp_path / "agent", port, dicom=DICOM, outbox={"path": str(state / "outbox.db")},
                                health={"broker_grace_s": 3600, "disk_floor_mib": 0})
    agent = NamespacedAgent(config, state).start()
    try:
        wait_for(lambda: "DICOM listener" in agent.log(), 20, "agent up")
        dicom_port = tomllib.loads(config.read_text())["dicom"]["port"]
        first = dx_files(tmp_path / "first", 150)
        assert set(storescu(dicom_port, first).values()) == {"0x0000"}
        wait_for(lambda: http(f"http://127.0.0.1:{tomllib.loads(config.read_text())['web']['port']}/readyz")[0]
                 == 200, 15, "ready before the disk fills")
        web = f"http://127.0.0.1:{tomllib.loads(config.read_text())['web']['port']}"

        ballast = agent.inside("ballast")
        fill(ballast)
        refused = storescu(dicom_port, dx_files(tmp_path / "refused", 30, base=3000))
        assert "0xa700" in refused.values(), refused
        acked = {1000 + i for i in range(150)} | {int(Path(f).stem[2:]) for f, s in refused.items() if s == "0x0000"}
        status, body = wait_for(lambda: (r := http(web + "/readyz"))[0] == 503 and r, 10, "/readyz 503 while full")
        assert "last write failed" in body and "full" in body, body
        wal_full = agent.inside("outbox.db-wal").stat().st_size

        ballast.unlink()
        wait_for(lambda: http(web + "/readyz")[0] == 200, 15, "/readyz 200 once space is back (no traffic needed)")
        log = agent.log()
        assert "outbox writes succeed again" in log and "WAL checkpointed and truncated" in log, log[-3000:]
        wal_after = agent.inside("outbox.db-wal").stat().st_size
        assert wal_after < min(wal_full, 512 * 1024), (wal_full, wal_after)

        again = storescu(dicom_port, dx_files(tmp_path / "again", 10, base=5000))
        assert set(again.values()) == {"0x0000"}, again
        broker = Mosquitto(tmp_path / "broker", port=port)
        subscriber = broker.start_with_subscriber()
        try:
            wanted = acked | set(range(5000, 5010))
            wait_for(lambda: wanted <= markers(subscriber), 60, "every acknowledged event")
            refused_markers = {int(Path(f).stem[2:]) for f, s in refused.items() if s != "0x0000"}
            assert not markers(subscriber) & refused_markers, "an object refused while full was published"
        finally:
            subscriber.stop()
            broker.kill()
        assert agent.terminate() == 0
    finally:
        agent.ensure_stopped()
