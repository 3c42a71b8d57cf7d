"""One agent per outbox, and configuration errors that exit 2 at `run` (the unit does not restart on them).

Real agent processes and real sockets on loopback: a second `xray-agent run` on the same config exits 1 naming the
running one's pid without touching the broker or any port; a port another program holds, or a bind address that is
not this machine's, exits 2 naming the key, and `check-config` names a bad bind address too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.realparts import REPO, AgentProcess, wait_for, write_agent_config


def run_agent(config, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_second_agent_on_the_same_outbox_exits_1_naming_the_first(tmp_path, broker, subscriber):
    config = write_agent_config(tmp_path / "agent", broker.port)
    first = AgentProcess(config).start()
    try:
        wait_for(lambda: subscriber.snapshot("/status"), 30, "the first agent's status")
        t0 = time.monotonic()
        second = run_agent(config)
        assert second.returncode == 1, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"pid {first.proc.pid}" in lines[0] and "already running" in lines[0], lines
        assert time.monotonic() - t0 < 30
        time.sleep(1)
        # The first one was not knocked off the broker (a second session with its client id would take it over).
        assert "lost connection to broker" not in first.log()
        assert first.proc.poll() is None
    finally:
        first.terminate()
    # Once the first has stopped, the lock is free again (the kernel drops it with the process).
    again = AgentProcess(config).start()
    try:
        wait_for(lambda: "DICOM listener" in again.log(), 30, "a new agent starting on the freed outbox")
    finally:
        again.terminate()


def test_port_in_use_exits_2_naming_the_key(tmp_path, broker):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        config = write_agent_config(tmp_path / "agent", broker.port, dicom={"port": port})
        result = run_agent(config)
        assert result.returncode == 2, result.stderr
        assert f"dicom.port: cannot listen on 127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.close()


def test_bind_address_not_of_this_machine_exits_2_at_run_and_in_check_config(tmp_path, broker):
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    config = write_agent_config(tmp_path / "agent", broker.port, dicom={"bind": "192.0.2.7"})
    result = run_agent(config)
    assert result.returncode == 2 and "dicom.bind: cannot listen on 192.0.2.7" in result.stderr, result.stderr
    check = subprocess.run([sys.executable, "-m", "agent", "check-config", str(config)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "dicom.bind" in check.stderr, check.stderr


def test_check_config_passes_beside_a_running_agent(tmp_path, broker, subscriber):
    """check-config looks at addresses, not ports: the running agent's own ports are no error."""
    config = write_agent_config(tmp_path / "agent", broker.port)
    agent = AgentProcess(config).start()
    try:
        wait_for(lambda: "DICOM listener" in agent.log(), 30, "the agent listening")
        check = subprocess.run([sys.executable, "-m", "agent", "check-config", str(config)], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
    finally:
        agent.terminate()


def test_the_unit_stops_restarting_on_a_configuration_error_and_loads_usb_serial_drivers_at_boot():
    unit = (REPO / "systemd" / "xray-agent.service").read_text()
    keys = [line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")]
    # RestartPreventExitStatus= covers the main process only: a pre-start check exiting 2 would be restarted forever.
    assert not [k for k, _ in keys if k.startswith("ExecStartPre")]
    assert ("RestartPreventExitStatus", "2") in [tuple(kv) for kv in keys]
    assert "systemd-modules-load.service" in dict(keys)["After"]
    modules = (REPO / "systemd" / "xray-agent-modules.conf").read_text().split()
    assert {"usbserial", "cdc_acm"} <= set(modules)
    assert "xray-agent-modules.conf" in (REPO / "scripts" / "install.sh").read_text()
