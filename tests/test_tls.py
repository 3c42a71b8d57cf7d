"""mqtts:// against a real mosquitto TLS listener with certificates made in the test."""

from __future__ import annotations

import pytest

from tests.certs import TestCA
from tests.realparts import Mosquitto, Subscriber, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path):
    ca = TestCA(tmp_path / "pki")
    server_cert, server_key = ca.issue("server", "localhost", hosts=["localhost", "127.0.0.1"])
    client_cert, client_key = ca.issue("client", "xray-agent-test", client=True)
    return {"ca": str(ca.ca_path), "cert": str(server_cert), "key": str(server_key),
            "client_cert": str(client_cert), "client_key": str(client_key), "dir": tmp_path / "pki"}


def tls_broker(tmp_path, pki, require_certificate=False) -> Mosquitto:
    return Mosquitto(tmp_path / "broker", tls=dict(pki, require_certificate=require_certificate)).start()


def test_mqtts_with_verification_delivers_status(tmp_path, pki, agent_factory):
    mq = tls_broker(tmp_path, pki)
    try:
        sub = Subscriber(mq.port, tls=pki).start()
        agent_factory(mq.port, mqtt={"url": f"mqtts://localhost:{mq.port}", "ca_file": pki["ca"]})
        birth = wait_for(lambda: sub.snapshot("/status"), 20, "birth status over TLS")[0]
        assert birth.json()["online"] is True
        sub.stop()
    finally:
        mq.kill()


def test_mutual_tls_with_client_certificate(tmp_path, pki, agent_factory):
    mq = tls_broker(tmp_path, pki, require_certificate=True)
    try:
        sub = Subscriber(mq.port, tls=pki).start()
        agent_factory(mq.port, mqtt={"url": f"mqtts://localhost:{mq.port}", "ca_file": pki["ca"],
                                     "cert_file": pki["client_cert"], "key_file": pki["client_key"]})
        wait_for(lambda: sub.snapshot("/status"), 20, "birth status over mutual TLS")
        sub.stop()
    finally:
        mq.kill()


def test_wrong_ca_fails_with_a_clear_error(tmp_path, pki, agent_factory):
    other = TestCA(tmp_path / "other-pki", name="some other CA")
    mq = tls_broker(tmp_path, pki)
    try:
        agent = agent_factory(mq.port, mqtt={"url": f"mqtts://localhost:{mq.port}", "ca_file": str(other.ca_path)})
        wait_for(lambda: "TLS certificate verification failed" in agent.log(), 20, "TLS error in the log")
        log = agent.log()
        assert "mqtt.ca_file" in log and str(other.ca_path) in log
        assert "connected to broker" not in log
    finally:
        mq.kill()


def test_certificate_for_another_host_name_is_rejected(tmp_path, pki, agent_factory):
    ca = TestCA(tmp_path / "pki2")
    cert, key = ca.issue("server", "broker.example", hosts=["broker.example"])
    mq = Mosquitto(tmp_path / "broker", tls={"ca": str(ca.ca_path), "cert": str(cert), "key": str(key)}).start()
    try:
        agent = agent_factory(mq.port, mqtt={"url": f"mqtts://localhost:{mq.port}", "ca_file": str(ca.ca_path)})
        wait_for(lambda: "TLS certificate verification failed" in agent.log(), 20, "hostname mismatch error")
        assert "Hostname mismatch" in agent.log()
    finally:
        mq.kill()
