"""Status, equipment, health, readiness and metrics of the real agent process against a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import tomllib
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.emulators.victoreen import VictoreenEmulator
from tests import dicom_factory as factory
from tests.realparts import Subscriber, free_port, wait_for
from tests.test_dicom_network import STORESCU, save

pytestmark = pytest.mark.integration

BASE = "xray/v1/test-site/xr-01"


def web_port(agent) -> int:
    return tomllib.loads(agent.config.read_text())["web"]["port"]


def http(agent_or_url, path: str = "", headers: dict | None = None) -> tuple[int, str]:
    """(status, body) of a GET, 4xx/5xx included; status 0 when nothing answers."""
    url = agent_or_url if isinstance(agent_or_url, str) else f"http://127.0.0.1:{web_port(agent_or_url)}{path}"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:  # not listening (yet)
        return 0, str(exc)


def metric(agent, name: str, **labels) -> float | None:
    """One sample's value from /metrics, parsed with prometheus-client's own parser."""
    for family in text_string_to_metric_families(http(agent, "/metrics")[1]):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def latest(sub: Subscriber, suffix: str) -> dict | None:
    messages = sub.snapshot(suffix)
    return messages[-1].json() if messages else None


def test_last_will_then_restart_with_new_boot_id_and_agent_equipment(broker, agent_factory, tmp_path):
    agent = agent_factory(broker.port, health={"interval_s": 1})
    watcher = Subscriber(broker.port, topic=f"{BASE}/#").start()
    try:
        birth = wait_for(lambda: latest(watcher, "/status"), 15, "birth")
        assert birth["online"] and birth["reason"] == "birth"
        link = wait_for(lambda: latest(watcher, "/equipment/broker-link"), 10, "equipment/broker-link")
        assert link["device_type"] == "broker-link" and link["state"] == "ok"
        assert link["endpoint"] == f"127.0.0.1:{broker.port}" and link["link"]["connects"] == 1
        listener = wait_for(lambda: latest(watcher, "/equipment/dicom-listener"), 10, "equipment/dicom-listener")
        assert listener["state"] == "ok" and listener["dicom"]["received"] == 0
        health = wait_for(lambda: latest(watcher, "/health"), 10, "a health sample")
        assert health["schema"] == "xray.health/1" and health["boot_id"] == birth["boot_id"]
        assert health["broker_connected"] and health["clock_sync"] in ("synchronized", "unsynchronized", "unknown")
        assert health["disk_free_bytes"] > 0 and health["agent_rss_bytes"] > 10**6

        agent.kill()  # SIGKILL: no DISCONNECT, the broker publishes the last will
        will = wait_for(lambda: [m.json() for m in watcher.snapshot("/status") if m.json()["reason"] == "lost"],
                        30, "last will")[0]
        assert will["online"] is False and will["boot_id"] == birth["boot_id"]
        agent_factory(broker.port)
        reborn = wait_for(lambda: [m.json() for m in watcher.snapshot("/status") if m.json()["reason"] == "birth"
                                   and m.json()["boot_id"] != birth["boot_id"]], 15, "birth with a new boot id")[0]
        assert reborn["online"] is True
    finally:
        watcher.stop()
    late = Subscriber(broker.port, topic=f"{BASE}/status").start()  # what a dashboard connecting now sees
    try:
        retained = wait_for(lambda: late.snapshot(), 10, "retained status")[0]
        assert retained.retain and retained.json()["boot_id"] == reborn["boot_id"] and retained.json()["online"]
    finally:
        late.stop()


def test_equipment_follows_unplug_on_topic_and_metrics_and_modality_shows(broker, subscriber, agent_factory,
                                                                          tmp_path):
    victoreen = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05)
    victoreen.start()
    try:
        agent = agent_factory(broker.port, dicom={"ae_title": "XRAYAGENT", "allowed_calling_aets": ["DR_ROOM1"]},
                              health={"equipment_every_s": 1},
                              instruments=[{"id": "kvp-1", "driver": "victoreen_4000m", "port": victoreen.link,
                                            "settings": {"poll_interval_s": 0.05, "read_timeout_s": 0.02}}])
        wait_for(lambda: (latest(subscriber, "/equipment/kvp-1") or {}).get("state") == "ok", 15, "kvp-1 ok")
        assert metric(agent, "xray_equipment_state", device_id="kvp-1", state="ok") == 1.0
        victoreen.unplug(2.0)
        wait_for(lambda: latest(subscriber, "/equipment/kvp-1")["state"] == "down", 5, "kvp-1 down")
        assert metric(agent, "xray_equipment_state", device_id="kvp-1", state="down") == 1.0
        wait_for(lambda: latest(subscriber, "/equipment/kvp-1")["state"] == "ok", 15, "kvp-1 ok after the replug")

        if STORESCU is None:
            pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
        port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
        sent = subprocess.run([STORESCU, "-aet", "DR_ROOM1", "-aec", "XRAYAGENT", "127.0.0.1", str(port),
                               str(save(factory.make_dx(), tmp_path, "dx"))], capture_output=True)
        assert sent.returncode == 0, sent.stderr
        modality = wait_for(lambda: latest(subscriber, "/equipment/modality-DR_ROOM1"), 10, "equipment/modality-…")
        assert modality["device_type"] == "modality" and modality["endpoint"] == "DR_ROOM1"
        assert modality["state"] == "ok" and 0 <= modality["last_reading_age_s"] < 10
        listener = wait_for(lambda: [m.json() for m in subscriber.snapshot("/equipment/dicom-listener")
                                     if m.json()["dicom"]["received"] == 1], 10, "listener counters")[-1]
        assert listener["dicom"]["events_stored"] == 1
    finally:
        victoreen.stop()


def test_readyz_503_beyond_broker_grace_then_200_and_endpoints(broker, agent_factory, tmp_path):
    agent = agent_factory(broker.port, health={"broker_grace_s": 2})
    wait_for(lambda: http(agent, "/readyz")[0] == 200, 15, "/readyz 200")
    status, body = http(agent, "/livez")
    assert status == 200 and json.loads(body)["live"] is True
    assert metric(agent, "xray_broker_connected") == 1.0 and metric(agent, "xray_agent_ready") == 1.0
    assert metric(agent, "xray_agent_info", site="test-site", room="xr-01") == 1.0
    assert metric(agent, "process_resident_memory_bytes") > 10**6

    broker.stop()
    wait_for(lambda: metric(agent, "xray_broker_connected") == 0.0, 10, "the agent noticing the outage")
    status, body = http(agent, "/readyz")
    assert status == 200, body  # down, but for less than the grace
    status, body = wait_for(lambda: (r := http(agent, "/readyz"))[0] == 503 and r, 10, "/readyz 503")
    ready = json.loads(body)
    assert ready["ready"] is False and ready["failing"] == ["broker"]
    assert "grace 2 s" in ready["checks"]["broker"]["detail"] and ready["checks"]["outbox"]["ok"]
    assert http(agent, "/livez")[0] == 200  # alive all along: only readiness depends on the broker
    broker.start()
    wait_for(lambda: http(agent, "/readyz")[0] == 200, 15, "/readyz 200 after the broker is back")


def test_token_asked_of_other_hosts_only(broker, agent_factory, tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface's address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to reach the server from 'another host'")
    token_file = tmp_path / "web.token"
    room_token = "s3cret-room-token-" + "x" * 20
    token_file.write_text(room_token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    agent = agent_factory(broker.port, web={"bind": "0.0.0.0", "port": port, "token_file": str(token_file),
                                            "public_names": [address]})
    wait_for(lambda: http(f"http://127.0.0.1:{port}/livez")[0] == 200, 15, "local /livez without a token")
    status, body = http(f"http://{address}:{port}/livez")
    assert status == 401 and "Authorization: Bearer" in json.loads(body)["error"]
    assert http(f"http://{address}:{port}/livez", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert http(f"http://{address}:{port}/metrics", headers={"Authorization": f"Bearer {room_token}"})[0] == 200
    assert agent.terminate() == 0
