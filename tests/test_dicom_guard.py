"""The listener's connection guard as pure bookkeeping (agent/dicom/guard.py): a fake clock and stand-in
associations; the network behaviour is in tests/test_dicom_hostile.py."""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace

from agent.dicom.guard import ConnectionGuard, Limits
from agent.dicom.scp import rejection_reason


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def assoc():
    return SimpleNamespace(dul=None)  # no socket: the guard only books


def pdata(nbytes: int):
    return SimpleNamespace(presentation_data_value_items=[SimpleNamespace(presentation_data_value=b"x" * nbytes)])


def guard(**limits) -> tuple[ConnectionGuard, Clock]:
    clock = Clock()
    return ConnectionGuard(Limits(**limits), clock=clock), clock


def test_per_peer_limit_and_address_allow_list():
    g, _ = guard(max_associations_per_peer=2, networks=(ipaddress.ip_network("10.0.0.0/24"),))
    assert g.opened(assoc(), "10.0.0.5") is None and g.opened(assoc(), "10.0.0.5") is None
    assert "max_associations_per_peer = 2" in g.opened(assoc(), "10.0.0.5")
    assert g.opened(assoc(), "10.0.0.6") is None
    assert g.opened(assoc(), "192.168.1.1") == "not in dicom.allowed_peers"


def test_one_waiting_place_is_kept_for_a_peer_that_associated_before():
    g, _ = guard(max_associations=4, max_associations_per_peer=4)
    modality = assoc()
    assert g.opened(modality, "10.0.0.1") is None and g.requested(modality) is None
    g.accepted(modality)
    g.closed(modality)
    strangers = [assoc() for _ in range(4)]
    answers = [g.opened(a, f"10.0.1.{n}") for n, a in enumerate(strangers)]
    assert answers[:3] == [None] * 3 and "one place kept for known peers" in answers[3]
    assert g.opened(assoc(), "10.0.0.1") is None  # the known modality still gets in


def test_association_slots_are_counted_apart_from_waiting_connections():
    g, _ = guard(max_associations=2, max_associations_per_peer=8)
    conns = [assoc() for _ in range(3)]
    answers = []
    for c in conns:  # each sends its request at once: none is left waiting
        assert g.opened(c, "10.0.0.1") is None
        answers.append(g.requested(c))
    assert answers[:2] == [None, None] and "all 2 association slots in use" in answers[2]


def test_time_bounds_to_associate_and_per_pdu_but_not_while_the_agent_works():
    g, clock = guard(associate_timeout_s=10, pdu_timeout_s=30)
    slow, working = assoc(), assoc()
    g.opened(slow, "10.0.0.2")
    g.opened(working, "10.0.0.1")
    g.requested(working)
    clock.now = 10.5
    assert [reason for _, reason in g.overdue()] == [
        "no complete association request within 10 s (dicom.associate_timeout_s)"]
    with g.working(working):
        clock.now = 100
        assert g.overdue() == []  # the peer waits for our answer
    clock.now = 131
    assert "no complete PDU within 30 s" in g.overdue()[0][1]


def test_pdu_progress_resets_the_pdu_clock_and_object_bytes_are_bounded():
    g, clock = guard(pdu_timeout_s=30, max_object_bytes=1000)
    a = assoc()
    g.opened(a, "10.0.0.1")
    g.requested(a)
    for t in range(0, 100, 20):
        clock.now = t
        g.pdu_received(a, pdata(100))
        assert g.overdue() == []
    g.pdu_received(a, pdata(600))
    assert "larger than dicom.max_object_bytes" in g.overdue()[0][1]


def test_a_cut_wakes_a_reader_blocked_on_the_socket():
    left, right = socket.socketpair()
    try:
        g, clock = guard(associate_timeout_s=1)
        a = SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=right)))
        g.opened(a, "10.0.0.2")
        clock.now = 2
        assert g.reap() == 1
        right.settimeout(1)
        assert right.recv(1) == b""  # what pynetdicom's blocked recv() returns once the guard cuts
    finally:
        left.close()
        right.close()


def test_rejections_are_logged_with_their_real_reason():
    assert "calling AE title 'X' is not in dicom.allowed_calling_aets" == rejection_reason(1, 1, 3, "X", "A", "A")
    assert "calls AE title 'B'; ours is 'A'" in rejection_reason(1, 1, 7, "X", "B", "A")
    assert "association slots in use" in rejection_reason(2, 3, 2, "X", "A", "A")


def test_a_peer_listed_by_address_is_known_before_it_has_associated():
    from agent.config import DicomConfig
    from agent.dicom.scp import limits_from_config

    limits = limits_from_config(DicomConfig(allowed_peers=["10.0.0.1", "10.0.1.0/24"], max_associations=3))
    assert limits.hosts == frozenset({"10.0.0.1"})
    g = ConnectionGuard(limits, clock=Clock())
    assert g.opened(assoc(), "10.0.1.7") is None and g.opened(assoc(), "10.0.1.8") is None
    assert "kept for known peers" in g.opened(assoc(), "10.0.1.9")
    assert g.opened(assoc(), "10.0.0.1") is None
