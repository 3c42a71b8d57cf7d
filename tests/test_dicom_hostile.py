"""The DICOM listener under hostile or huge traffic, with real dcmtk senders and raw sockets on loopback.

Throughout each scenario the modality's C-ECHO (dcmtk's echoscu from 127.0.0.1, once a second) must be answered
within 5 s, and the agent's resident memory must stay within 64 MiB of what it was just before. Hostile peers use
other loopback addresses (127.0.0.2 and up: all of 127/8 is this machine), as they would be other hosts.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib

import psutil
import pytest

from tests.large_objects import write_deflate_bomb, write_large_xa
from tests.realparts import REPO, wait_for

pytestmark = pytest.mark.integration

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
ECHO_WITHIN_S = 5.0
MEMORY_BOUND_MB = 64
ECHOSCU, STORESCU = shutil.which("echoscu"), shutil.which("storescu")


@pytest.fixture
def hostile_agent(broker, subscriber, agent_factory):
    """Call with dicom overrides; returns a running agent with .dicom_port."""
    if ECHOSCU is None or STORESCU is None:
        pytest.fail("dcmtk is not installed; scripts/test.sh installs it (apt-get install dcmtk)")

    def make(**dicom):
        agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET],
                                                  **dicom})
        wait_for(lambda: "DICOM listener" in agent.log(), 20, "DICOM listener up")
        agent.dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
        return agent
    return make


def echo(port: int) -> tuple[int, float]:
    """(exit status, seconds) of one echoscu from the modality's address."""
    t0 = time.monotonic()
    try:
        result = subprocess.run([ECHOSCU, "-aet", MODALITY_AET, "-aec", AGENT_AET, "-to", "10", "-ta", "10",
                                 "-td", "10", "127.0.0.1", str(port)], capture_output=True, timeout=15)
        status = result.returncode
    except subprocess.TimeoutExpired:
        status = -1
    return status, time.monotonic() - t0


class Watch:
    """In the background: an echo every second, and the agent's RSS every 50 ms."""

    def __init__(self, agent):
        self.port = agent.dicom_port
        self.process = psutil.Process(agent.proc.pid)
        self.rss_before_mb = self.process.memory_info().rss / 2**20
        self.rss_peak_mb = self.rss_before_mb
        self.echoes: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._echo, daemon=True),
                         threading.Thread(target=self._memory, daemon=True)]

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _echo(self) -> None:
        while not self._stop.is_set():
            self.echoes.append(echo(self.port))
            self._stop.wait(1.0)

    def _memory(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.rss_peak_mb = max(self.rss_peak_mb, self.process.memory_info().rss / 2**20)
            except psutil.Error:
                return

    def assert_held(self) -> None:
        assert self.echoes, "no echo was tried"
        slow = [(status, round(took, 2)) for status, took in self.echoes if status != 0 or took > ECHO_WITHIN_S]
        assert not slow, f"echoes failed or slow: {slow} of {len(self.echoes)}"
        grew = self.rss_peak_mb - self.rss_before_mb
        print(f"echoes: {len(self.echoes)}, max {max(t for _, t in self.echoes):.2f} s; RSS before "
              f"{self.rss_before_mb:.1f} MiB, peak {self.rss_peak_mb:.1f} MiB (+{grew:.1f})")
        assert grew < MEMORY_BOUND_MB, f"RSS grew by {grew:.1f} MiB"


def trickle(address: str, port: int, stop: threading.Event, every_s: float, connects: list) -> None:
    """A slow peer: connect from `address`, send one byte every `every_s`; reconnect whenever cut off."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0)) as sock:
                connects.append(time.monotonic())
                payload = b"\x01\x00\x00\x00\x10\x00" + b"\x00" * 0x1000  # an A-ASSOCIATE-RQ that never ends
                for byte in payload:
                    sock.sendall(bytes([byte]))
                    if stop.wait(every_s):
                        return
                    if _closed(sock):
                        break
        except OSError:
            pass
        stop.wait(0.2)


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def run_tricklers(addresses: list[str], port: int, seconds: float, every_s: float = 20.0) -> list:
    stop, connects = threading.Event(), []
    threads = [threading.Thread(target=trickle, args=(a, port, stop, every_s, connects), daemon=True)
               for a in addresses]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return connects


def test_sixteen_slow_connections_from_one_peer_do_not_lock_the_modality_out(hostile_agent):
    agent = hostile_agent()
    assert echo(agent.dicom_port)[0] == 0
    with Watch(agent) as watch:
        time.sleep(0.5)
        run_tricklers(["127.0.0.2"] * 16, agent.dicom_port, seconds=25)
    watch.assert_held()
    log = agent.log()
    assert "refused DICOM connection from 127.0.0.2: 4 connections from this address already open" in log
    assert "DICOM connection from 127.0.0.2 closed: no complete association request within 10 s" in log
    assert "allowed_calling_aets" not in log  # the old, wrong reason


def test_slow_connections_from_many_addresses_leave_the_known_modality_a_place(hostile_agent):
    agent = hostile_agent(associate_timeout_s=30)  # the slow peers hold their places for the whole test
    assert echo(agent.dicom_port)[0] == 0  # the modality has associated before: a known peer
    with Watch(agent) as watch:
        time.sleep(0.5)
        run_tricklers([f"127.0.0.{n}" for n in range(2, 20)], agent.dicom_port, seconds=15)
    watch.assert_held()
    assert "have not yet completed an association request" in agent.log()


def raw_send(port: int, path) -> str:
    sent = subprocess.run([sys.executable, "-m", "tests.raw_scu", str(port), AGENT_AET, MODALITY_AET, str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stderr[-2000:]
    return sent.stdout.split()[-1]


def test_deflate_bomb_is_answered_out_of_resources_within_memory(hostile_agent, tmp_path):
    agent = hostile_agent(max_object_bytes=64 * 2**20)
    bomb = write_deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=1536)  # ~1.5 MiB inflating to 1.5 GiB
    assert bomb.stat().st_size < 3 * 2**20
    assert echo(agent.dicom_port)[0] == 0
    with Watch(agent) as watch:
        time.sleep(0.5)
        statuses = [raw_send(agent.dicom_port, bomb) for _ in range(3)]
        time.sleep(1)
    watch.assert_held()
    assert statuses == ["0xA700"] * 3
    assert "inflates to more than dicom.max_object_bytes" in agent.log()


def test_400_mib_object_is_received_to_disk_within_memory(hostile_agent, subscriber, tmp_path):
    agent = hostile_agent()
    big = write_large_xa(tmp_path / "cine.dcm", mib=400)
    assert echo(agent.dicom_port)[0] == 0
    with Watch(agent) as watch:
        time.sleep(0.5)
        sent = subprocess.run([STORESCU, "-aet", MODALITY_AET, "-aec", AGENT_AET, "-nh", "127.0.0.1",
                               str(agent.dicom_port), str(big)], capture_output=True, text=True, timeout=300)
        time.sleep(1)
    watch.assert_held()
    assert sent.returncode == 0, sent.stderr[-2000:]
    event = wait_for(lambda: [m.json() for m in subscriber.snapshot("/exposure")], 30, "the cine's exposure event")
    assert event[0]["modality"] == "XA"


def test_long_value_before_the_pixel_data_stays_within_memory(hostile_agent, subscriber, tmp_path):
    agent = hostile_agent()
    odd = write_large_xa(tmp_path / "odd.dcm", mib=4, private_before_pixels=500 * 2**20)
    assert echo(agent.dicom_port)[0] == 0
    with Watch(agent) as watch:
        time.sleep(0.5)
        status = raw_send(agent.dicom_port, odd)
        time.sleep(1)
    watch.assert_held()
    assert status == "0x0000"
    assert "skipped unread" in agent.log()
    wait_for(lambda: subscriber.snapshot("/exposure"), 30, "the object's exposure event")


def test_an_association_trickling_a_pdu_is_closed_after_pdu_timeout(hostile_agent):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    agent = hostile_agent(pdu_timeout_s=3)
    ae = AE(ae_title=MODALITY_AET)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", agent.dicom_port, ae_title=AGENT_AET)
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    with Watch(agent) as watch:
        # A P-DATA-TF PDU announcing 64 KiB, then one byte a second: never complete.
        sock.sendall(b"\x04\x00\x00\x01\x00\x00")
        for _ in range(8):
            try:
                sock.sendall(b"\x00")
            except OSError:
                break
            time.sleep(1)
    watch.assert_held()
    assert "closed: no complete PDU within 3 s (dicom.pdu_timeout_s)" in agent.log()
    assoc.abort()
