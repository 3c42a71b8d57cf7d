"""Hostile peers against the DICOM listener's guard: associations that complete their request and then idle, from
several addresses at once; a listener configured for a single association. Bookkeeping tests use a fake clock
(as tests/test_dicom_guard.py); the network test uses real dcmtk echoscu and pynetdicom associations from other
loopback addresses (127.0.0.2 and up are this machine, as other hosts would be)."""

from __future__ import annotations

import time

import pytest

from agent.config import DicomConfig
from agent.dicom.guard import ConnectionGuard
from agent.dicom.scp import limits_from_config
from tests.test_dicom_guard import Clock, assoc
from tests.test_dicom_hostile import AGENT_AET, MODALITY_AET, Watch, echo, hostile_agent  # noqa: F401 - fixture


def _guard(**dicom) -> ConnectionGuard:
    return ConnectionGuard(limits_from_config(DicomConfig(**dicom)), clock=Clock())


HELD: list = []  # the guard books associations by id(): keep the stand-ins alive so no id is reused


def _associate(g: ConnectionGuard, address: str) -> str | None:
    a = assoc()
    HELD.append(a)
    refused = g.opened(a, address)
    if refused:
        return refused
    refused = g.requested(a)
    if refused is None:
        g.accepted(a)
    else:
        g.closed(a)  # pynetdicom answers A-ASSOCIATE-RJ and closes
    return refused


def test_idle_associations_from_many_addresses_leave_the_listed_modality_a_slot():
    """Peers that know an accepted AE title complete their requests and idle: within the per-peer limit, from
    enough addresses, they held every association slot and the modality listed in dicom.allowed_peers was
    rejected for as long as they lasted."""
    g = _guard(allowed_peers=["10.0.0.1", "10.0.1.0/24"], max_associations=4, max_associations_per_peer=2)
    answers = [_associate(g, f"10.0.1.{n}") for n in (2, 2, 3, 3, 4, 4)]
    assert answers[:3] == [None] * 3
    assert all("kept for" in a for a in answers[3:]), answers
    assert _associate(g, "10.0.0.1") is None


@pytest.mark.parametrize("listed", [[], ["10.0.0.1"]])
def test_a_single_association_listener_accepts_its_first_peer(listed):
    """dicom.max_associations = 1 (a room with one modality): the one place must not be kept for a known peer
    nobody can become."""
    g = _guard(max_associations=1, allowed_peers=listed)
    assert _associate(g, "10.0.0.1") is None


@pytest.mark.integration
def test_idle_associations_from_several_addresses_do_not_lock_the_modality_out(hostile_agent):  # noqa: F811
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    agent = hostile_agent(max_associations=4, max_associations_per_peer=2, pdu_timeout_s=60,
                          allowed_peers=["127.0.0.1", "127.0.0.0/8"])
    assert echo(agent.dicom_port)[0] == 0
    held = []
    ae = AE(ae_title=MODALITY_AET)  # the AE title is no secret on the room network
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    try:
        with Watch(agent) as watch:
            for n in (2, 2, 3, 3, 4, 4):
                assoc = ae.associate("127.0.0.1", agent.dicom_port, ae_title=AGENT_AET,
                                     bind_address=(f"127.0.0.{n}", 0))
                if assoc.is_established:
                    held.append(assoc)
            time.sleep(6)
        watch.assert_held()
        assert len(held) == 3, f"{len(held)} idle associations established; one slot is the modality's"
    finally:
        for assoc in held:
            assoc.abort()
