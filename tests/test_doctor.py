"""`xray-agent doctor` against real parts: mosquitto (plain and TLS), a pty as serial port, real sockets and files."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import tomllib

import pytest

from tests.certs import TestCA
from tests.realparts import REPO, Mosquitto, free_port, wait_for, write_agent_config

pytestmark = pytest.mark.integration
AS_ROOT = os.geteuid() == 0


def doctor(config, user: str = "root") -> tuple[int, dict[str, list[str]]]:
    """Exit status and the output lines by check name (a name may have several lines: one per file or port)."""
    out = subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(config), "--user", user],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    lines: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        level, rest = line.split(None, 1)
        lines.setdefault(rest.split(":", 1)[0], []).append(f"{level} {rest}")
    return out.returncode, lines


def level(lines: dict[str, list[str]], name: str) -> str:
    return " ".join(line.split()[0] for line in lines[name])


@pytest.fixture
def serial_pty():
    master, slave = pty.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_healthy_room_passes_and_each_broken_part_fails(broker, tmp_path, serial_pty):
    config = write_agent_config(tmp_path / "agent", broker.port,
                                instruments=[{"id": "kvp-1", "driver": "victoreen_4000m", "port": serial_pty}])
    status, lines = doctor(config)
    assert status == 0, lines
    for name in ("config", "secret site.secret_key_file", "dicom port", "web port", "broker", "mqtt", "state", "disk"):
        assert level(lines, name).startswith("ok"), lines[name]
    # a pty is usable, but it is not a serial device the unit's DevicePolicy lets through: a warning says so
    assert level(lines, "serial kvp-1") == "warn" and "DeviceAllow=char-pts" in lines["serial kvp-1"][0]
    assert level(lines, "clock") in ("ok", "warn")

    broken = write_agent_config(tmp_path / "broken", free_port(),
                                health={"disk_floor_mib": 10**9},
                                instruments=[{"id": "kvp-1", "driver": "victoreen_4000m",
                                              "port": str(tmp_path / "unplugged")}])
    (tmp_path / "broken" / "site.key").chmod(0o644)
    busy = socket.socket()
    busy.bind(("127.0.0.1", tomllib.loads(broken.read_text())["dicom"]["port"]))
    busy.listen()
    try:
        status, lines = doctor(broken)
    finally:
        busy.close()
    assert status == 1
    assert lines["broker"][0].startswith("FAIL broker: broker 127.0.0.1:") and "refused" in lines["broker"][0]
    assert "-> start the broker or correct mqtt.url" in lines["broker"][0]
    assert lines["serial kvp-1"][0].startswith("FAIL") and "plug the adapter in" in lines["serial kvp-1"][0]
    assert lines["dicom port"][0].startswith("FAIL") and f"(pid {os.getpid()})" in lines["dicom port"][0]
    assert lines["secret site.secret_key_file"][0].startswith("FAIL") and "chmod 0600" in \
        lines["secret site.secret_key_file"][0]
    assert lines["disk"][0].startswith("FAIL") and "free some space" in lines["disk"][0]


@pytest.mark.skipif(not AS_ROOT, reason="checking as another user's permissions needs root (doctor runs as root)")
def test_service_user_permissions_on_serial_port_and_secret(broker, tmp_path, serial_pty):
    config = write_agent_config(tmp_path / "agent", broker.port,
                                instruments=[{"id": "kvp-1", "driver": "victoreen_4000m", "port": serial_pty}])
    os.chmod(serial_pty, 0o620)  # as udev leaves a pty: owner and group tty only
    status, lines = doctor(config, user="nobody")
    assert status == 1
    assert lines["user"][0].startswith("ok user: checking as service user nobody")
    serial = lines["serial kvp-1"][0]
    assert serial.startswith("FAIL") and "user nobody" in serial and "cannot open" in serial and "usermod -aG" in serial
    secret = lines["secret site.secret_key_file"][0]
    assert secret.startswith("FAIL") and "user nobody cannot read" in secret
    assert lines["state"][0].startswith("FAIL") and "cannot write" in lines["state"][0]
    os.chmod(serial_pty, 0o666)
    _, lines = doctor(config, user="nobody")
    assert lines["serial kvp-1"][0].startswith("warn")  # openable now; only the unit's device policy remains


def test_doctor_recognises_the_running_agent_on_its_port(broker, agent_factory, tmp_path):
    agent = agent_factory(broker.port)
    wait_for(lambda: "DICOM listener" in agent.log() and "health endpoints" in agent.log(), 15, "agent listening")
    status, lines = doctor(agent.config)
    assert status == 0, lines
    assert "bound by the running agent (pid" in lines["dicom port"][0]
    assert "bound by the running agent (pid" in lines["web port"][0]


def test_invalid_config_exits_2(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[site]\nid = "a"\nroom = "b"\nsecret_key_file = "k"\n[web]\nport = 0\n')
    status, lines = doctor(config)
    assert status == 2 and lines["config"][0].startswith("FAIL config:") and "web.port" in lines["config"][0]


@pytest.fixture
def pki(tmp_path):
    ca = TestCA(tmp_path / "pki")
    cert, key = ca.issue("server", "localhost", hosts=["localhost"])  # not 127.0.0.1: reached by that, it mismatches
    return {"ca": str(ca.ca_path), "cert": str(cert), "key": str(key), "dir": tmp_path / "pki"}


def test_tls_handshake_verified_and_its_failures_named(tmp_path, pki):
    mq = Mosquitto(tmp_path / "broker", tls=pki).start()
    try:
        good = write_agent_config(tmp_path / "good", mq.port, mqtt={"url": f"mqtts://localhost:{mq.port}",
                                                                    "ca_file": pki["ca"]})
        status, lines = doctor(good)
        assert status == 0, lines  # a warning is not a failure
        tls = lines["tls"][0]
        assert tls.startswith("warn tls: TLSv1.") and "CN=localhost" in tls and "for host localhost" in tls
        assert "(in 1 days) -> renew the broker's certificate" in tls  # the test CA issues for one day only
        assert lines["mqtt"][0].startswith("ok")

        other = TestCA(tmp_path / "other", name="some other CA")
        wrong_ca = write_agent_config(tmp_path / "wrong-ca", mq.port, mqtt={
            "url": f"mqtts://localhost:{mq.port}", "ca_file": str(other.ca_path)})
        status, lines = doctor(wrong_ca)
        assert status == 1 and lines["tls"][0].startswith("FAIL tls: certificate not accepted")
        assert "set mqtt.ca_file to the CA that signed" in lines["tls"][0]

        wrong_name = write_agent_config(tmp_path / "wrong-name", mq.port, mqtt={
            "url": f"mqtts://127.0.0.1:{mq.port}", "ca_file": pki["ca"]})
        status, lines = doctor(wrong_name)
        assert status == 1 and "mismatch" in lines["tls"][0].lower()
        assert "reissue it for '127.0.0.1'" in lines["tls"][0]
    finally:
        mq.kill()
