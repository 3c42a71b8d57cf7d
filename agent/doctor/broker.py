"""Broker checks: the TCP connection, a real TLS handshake with the configured CA (certificate dates and host name),
then an MQTT CONNECT with the configured credentials under a client id of its own (the agent's id would push the
running agent off the broker)."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import Config
from agent.doctor.report import Result, fail, ok, warn
from agent.publisher import describe_connect_error
from agent.secretfile import read_secret_text

TIMEOUT_S = 5.0
EXPIRY_WARN_DAYS = 30


def check_broker(cfg: Config) -> list[Result]:
    """Reachability, TLS (when mqtts://) and the MQTT handshake, stopping at the first failure."""
    m = cfg.mqtt
    where = f"{m.host}:{m.port}"
    try:
        sock = socket.create_connection((m.host, m.port), timeout=TIMEOUT_S)
    except OSError as exc:
        return [fail("broker", describe_connect_error(exc, cfg), f"start the broker or correct mqtt.url ({m.url})")]
    results = [ok("broker", f"{where} reachable")]
    with sock:
        if m.tls:
            tls = check_tls(cfg, sock)
            results.append(tls)
            if tls.level == "FAIL":
                return results
    results.append(check_mqtt(cfg))
    return results


def tls_context(cfg: Config) -> ssl.SSLContext:
    """Verification as the agent does it: the configured CA (or the system's), host name checked."""
    m = cfg.mqtt
    context = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
    if m.cert_file and m.key_file:
        context.load_cert_chain(str(m.cert_file), str(m.key_file))
    return context


def check_tls(cfg: Config, sock: socket.socket) -> Result:
    """Handshake on an open connection; reports the certificate's subject, expiry and the protocol."""
    m = cfg.mqtt
    ca = m.ca_file or "the system CAs"
    try:
        with tls_context(cfg).wrap_socket(sock, server_hostname=m.host) as tls:
            cert, version = tls.getpeercert(), tls.version()
    except ssl.SSLCertVerificationError as exc:
        return fail("tls", f"certificate not accepted: {exc.verify_message}", _verify_fix(exc, cfg))
    except (ssl.SSLError, OSError) as exc:
        return fail("tls", f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}",
                    "check mqtt.cert_file/key_file and that the broker speaks TLS on this port (mqtts://)")
    expires = ssl.cert_time_to_seconds(cert["notAfter"])
    days = (expires - time.time()) / 86400
    subject = dict(pair for rdn in cert.get("subject", ()) for pair in rdn).get("commonName", "?")
    detail = f"{version}, certificate CN={subject} verified with {ca} for host {m.host}, expires {cert['notAfter']}"
    if days < EXPIRY_WARN_DAYS:
        return warn("tls", f"{detail} (in {days:.0f} days)", "renew the broker's certificate before it expires")
    return ok("tls", f"{detail} (in {days:.0f} days)")


def _verify_fix(exc: ssl.SSLCertVerificationError, cfg: Config) -> str:
    message = (exc.verify_message or "").lower()
    if "hostname" in message or "ip address mismatch" in message:
        return f"use the name the certificate carries in mqtt.url, or reissue it for '{cfg.mqtt.host}'"
    if "expired" in message or "not yet valid" in message:
        return "renew the broker's certificate (and check this machine's clock)"
    return f"set mqtt.ca_file to the CA that signed the broker's certificate (now {cfg.mqtt.ca_file or 'system CAs'})"


def check_mqtt(cfg: Config) -> Result:
    """CONNECT with the agent's credentials; the broker's CONNACK says whether they are accepted."""
    m = cfg.mqtt
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-doctor",
                         protocol=mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311)
    if m.username:
        client.username_pw_set(m.username, read_secret_text("mqtt.password_file", m.password_file) if m.password_file else None)
    if m.tls:
        client.tls_set_context(tls_context(cfg))
    answered, outcome = threading.Event(), {}
    client.on_connect = lambda c, u, flags, rc, props: (outcome.update(rc=rc), answered.set())
    try:
        client.connect(m.host, m.port, keepalive=10)
        client.loop_start()
        if not answered.wait(TIMEOUT_S):
            return fail("mqtt", f"no CONNACK within {TIMEOUT_S:.0f} s", "check that the port speaks MQTT")
    except (OSError, ValueError) as exc:
        return fail("mqtt", describe_connect_error(exc, cfg), "check mqtt.url")
    finally:
        client.disconnect()
        client.loop_stop()
    rc = outcome["rc"]
    if rc.is_failure:
        return fail("mqtt", f"broker refused the connection: {rc}", "check mqtt.username, mqtt.password_file and "
                                                                    "the broker's ACL")
    return ok("mqtt", f"MQTT {m.protocol} CONNECT accepted{' as ' + m.username if m.username else ''}")
