"""Pure pieces of the publisher and topic layout."""

from __future__ import annotations

import ssl

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import Config
from agent.publisher import describe_connect_error, publish_properties
from agent.topics import Topics, policy_for

CFG = Config.model_validate({"site": {"id": "s", "room": "r", "secret_key_file": "/k"},
                             "mqtt": {"url": "mqtts://broker.example:8883", "ca_file": "/etc/ca.pem"}})


@pytest.mark.parametrize("packet_type", [PacketTypes.PUBLISH, PacketTypes.WILLMESSAGE])
def test_fast_properties_pack_exactly_like_paho_built_ones(packet_type):
    reference = Properties(packet_type)
    reference.ContentType = "application/json"
    reference.UserProperty = [("msg_id", "3f2a")]
    assert publish_properties("3f2a", packet_type).pack() == reference.pack()
    # each message gets its own user property, the template is not shared mutable state
    assert publish_properties("other").UserProperty == [("msg_id", "other")]
    assert publish_properties("3f2a").UserProperty == [("msg_id", "3f2a")]


def test_tls_errors_say_what_to_check():
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate in certificate chain"
    text = describe_connect_error(exc, CFG)
    assert "broker.example:8883" in text and "mqtt.ca_file" in text and "/etc/ca.pem" in text
    assert "refused the connection" in describe_connect_error(ConnectionRefusedError(111, "refused"), CFG)


def test_topic_layout_and_policies():
    topics = Topics("xray/v1", "stmarys", "xr-03")
    assert topics.topic("exposure") == "xray/v1/stmarys/xr-03/exposure"
    assert topics.topic("equipment/dap-1") == "xray/v1/stmarys/xr-03/equipment/dap-1"
    assert policy_for("status").retain and policy_for("status").coalesce
    assert policy_for("equipment/dap-1").retain
    assert not policy_for("exposure").coalesce and not policy_for("qc/reading").coalesce
    with pytest.raises(ValueError, match="unknown topic kind"):
        topics.topic("exposures")
