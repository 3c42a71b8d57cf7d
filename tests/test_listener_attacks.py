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


def _send_partial_store(port: int, data_set_bytes: int, fragments: int, abort: bool = True):
    """Associate as the modality, send a C-STORE-RQ and the first `fragments` P-DATA of its data set, then abort:
    a sender that dies (or is cut) mid-object."""
    from io import BytesIO

    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pynetdicom import AE
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as SOP

    ae = AE(ae_title=MODALITY_AET)
    ae.add_requested_context(SOP, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=AGENT_AET)
    assert assoc.is_established
    prim = C_STORE()
    prim.MessageID, prim.Priority = 1, 2
    prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = SOP, generate_uid()
    # (0009,0010) a private OB value announcing the whole data set: the agent writes what comes to its temp file.
    value = b"\x00" * (data_set_bytes - 12)
    prim.DataSet = BytesIO(b"\x09\x00\x10\x00OB\x00\x00" + len(value).to_bytes(4, "little") + value)
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    sock = assoc.dul.socket.socket
    context_id = assoc.accepted_contexts[0].context_id
    for n, pdata in enumerate(msg.encode_msg(context_id, 64 * 1024)):
        if n > fragments:
            break
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        sock.sendall(pdu.encode())
    time.sleep(0.5)
    if abort:
        assoc.abort()
    return assoc


@pytest.mark.integration
def test_an_object_cut_mid_transfer_leaves_no_temporary_file(hostile_agent, tmp_path, monkeypatch):  # noqa: F811
    """pynetdicom deletes its receive file only after the C-STORE handler ran: a sender that aborts (or a
    connection the guard cuts) mid-object left the partial object in $TMPDIR, one per attempt, until the disk was
    full."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    agent = hostile_agent()
    for _ in range(3):
        _send_partial_store(agent.dicom_port, 8 * 2**20, fragments=40)
    time.sleep(1.0)
    left = [(p.name, p.stat().st_size) for p in tmp.rglob("*") if p.is_file()]
    assert left == [], f"partial objects left behind: {left}"
    assert echo(agent.dicom_port)[0] == 0


@pytest.mark.integration
def test_sigterm_during_a_receive_leaves_no_temporary_file(hostile_agent, tmp_path, monkeypatch):  # noqa: F811
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    agent = hostile_agent()
    assoc = _send_partial_store(agent.dicom_port, 8 * 2**20, fragments=40, abort=False)
    try:
        assert [p for p in tmp.rglob("*.dcm")], "the partial object is being received to $TMPDIR"
        assert agent.terminate() == 0
    finally:
        assoc.abort()
    left = [(p.name, p.stat().st_size) for p in tmp.rglob("*") if p.is_file()]
    assert left == [], f"partial objects left behind: {left}"


def test_stop_waits_for_a_request_being_handled_then_cuts_everything():
    g = _guard()
    idle, working = assoc(), assoc()
    HELD.extend([idle, working])
    g.opened(idle, "10.0.0.2")
    g.opened(working, "10.0.0.1")
    with g.working(working):
        assert g.cut_all(grace_s=0.2) == 2  # the busy one past its grace too
    assert g.cut_all(grace_s=0) == 0  # each connection is cut once


# ---- the agent's own folders ------------------------------------------------------------------------------------
FOLDERS = """
[site]
id = "stmarys"
room = "xr-03"
secret_key_file = "site.key"

[dicom]
allowed_calling_aets = ["DR_ROOM3"]
"""


@pytest.mark.parametrize("dicom,error", [
    ('quarantine_dir = "kept"\nretain_raw_dir = "kept"', "dicom.retain_raw_dir"),
    ('quarantine_dir = "export"\n[dicom.folder]\npath = "export"', "dicom.folder.path"),
    ('quarantine_dir = "q"\nretain_raw_dir = "export/.."\n[dicom.folder]\npath = "export"', "dicom.folder.path"),
    ('quarantine_dir = "q"\n[dicom.folder]\npath = "export"\nafter = "move"\nmove_to = "q"', "dicom.folder.move_to"),
])
def test_folders_the_agent_writes_cannot_be_shared_or_read_back(tmp_path, dicom, error):
    """Two bounded folders on one folder share one index: each trimmed the other's copies by its own bounds. A
    watched folder inside the quarantine read the agent's own copies back, quarantined them again and deleted
    the originals, for ever."""
    from agent.config import ConfigError, load_config

    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    (tmp_path / "agent.toml").write_text(FOLDERS.replace('allowed_calling_aets = ["DR_ROOM3"]',
                                                          'allowed_calling_aets = ["DR_ROOM3"]\n' + dicom))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "agent.toml")
    assert error in str(err.value)


def test_the_watched_folder_skips_the_agents_own_folders_inside_it(tmp_path):
    """A quarantine (or retention) folder inside the watched folder: its copies are the agent's own, never read."""
    from agent.config import FolderIntakeConfig
    from agent.dicom.folder import FolderWatcher
    from agent.dicom.intake import DicomIntake
    from agent.dicom.quarantine import BoundedFolder
    from tests import dicom_factory as factory

    export = tmp_path / "export"
    (export / "quarantine").mkdir(parents=True)
    junk = export / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)

    class NoSink:
        site, room = "s", "r"

    intake = DicomIntake(NoSink(), factory.TEST_SECRET,
                         quarantine=BoundedFolder(export / "quarantine", 10 * 2**20, 100))
    watcher = FolderWatcher(FolderIntakeConfig(path=export, settle_s=0, after="delete"), intake,
                            tmp_path / "state" / "folder.db")
    (tmp_path / "state").mkdir()
    db = watcher.open_state()
    for _ in range(4):
        watcher.scan(db)
    db.close()
    assert intake.counters.received == 1, "the quarantined copy was read back"
    assert len(list((export / "quarantine").glob("*.dcm"))) == 1


# ---- listeners on one port ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dicom_bind", ["127.0.0.1", "0.0.0.0"])
def test_dicom_and_web_on_one_port_is_a_config_error(tmp_path, dicom_bind):
    """Each listener alone could bind, so check-config passed; at run the second one found its port taken by the
    first: the error blamed 'another program'."""
    import subprocess
    import sys

    from tests.realparts import REPO, free_port

    port = free_port()
    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    (tmp_path / "agent.toml").write_text(FOLDERS + f'bind = "{dicom_bind}"\nport = {port}\nquarantine_dir = "q"\n'
                                         f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n')
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", str(tmp_path / "agent.toml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "web.port" in result.stderr and "dicom.port" in result.stderr


# ---- a data set where none belongs --------------------------------------------------------------------------------
def _echo_with_data_set(port: int, mib: int, endless_command: bool = False) -> bool:
    """A C-ECHO-RQ whose command says a data set follows, then `mib` MiB of it: pynetdicom receives every message
    but a C-STORE into memory. Returns whether the agent closed the connection before all was sent."""
    import struct

    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.dsutils import encode
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=MODALITY_AET)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AGENT_AET)
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    command = Dataset()
    command.AffectedSOPClassUID = Verification
    command.CommandField = 0x0030
    command.MessageID = 1
    command.CommandDataSetType = 0x0001  # "a data set follows"
    command.CommandGroupLength = 0
    body = encode(command, True, True)
    command.CommandGroupLength = len(body) - 12
    body = encode(command, True, True)

    def pdata(control: int, data: bytes) -> bytes:
        item = struct.pack(">IBB", len(data) + 2, context_id, control) + data
        return struct.pack(">BBI", 0x04, 0, len(item)) + item

    sock = assoc.dul.socket.socket
    chunk = pdata(0x01 if endless_command else 0x00, b"\x00" * (64 * 1024 - 6))
    cut = False
    try:
        if not endless_command:
            sock.sendall(pdata(0x03, body))
        for _ in range(mib * 16):
            sock.sendall(chunk)
    except OSError:
        cut = True
    assoc.abort()
    return cut


@pytest.mark.integration
@pytest.mark.parametrize("endless_command", [False, True], ids=["data set with an echo", "endless command set"])
def test_a_data_set_sent_with_an_echo_is_not_held_in_memory(hostile_agent, endless_command):  # noqa: F811
    agent = hostile_agent()
    assert echo(agent.dicom_port)[0] == 0
    with Watch(agent) as watch:
        time.sleep(0.5)
        cut = _echo_with_data_set(agent.dicom_port, mib=300, endless_command=endless_command)
        time.sleep(1)
    watch.assert_held()
    grew = watch.rss_peak_mb - watch.rss_before_mb
    assert grew < 64, f"RSS grew by {grew:.0f} MiB receiving a data set nothing asked for"
    assert cut, "the connection was not closed"


# ---- a dual-stack listener -----------------------------------------------------------------------------------------
def test_ipv4_peers_of_a_dual_stack_listener_are_their_ipv4_address():
    """With dicom.bind = "::" an IPv4 peer arrives as ::ffff:a.b.c.d: it matched no IPv4 entry of
    dicom.allowed_peers (the modality was refused outright), nor the per-peer count of its IPv4 address."""
    g = _guard(allowed_peers=["10.0.0.1", "10.0.1.0/24"], max_associations_per_peer=1)
    assert _associate(g, "::ffff:10.0.0.1") is None
    assert "already open" in (g.opened(assoc(), "10.0.0.1") or "")
    assert _associate(g, "::ffff:10.0.1.7") is None
    assert g.opened(assoc(), "::ffff:192.168.1.1") == "not in dicom.allowed_peers"


@pytest.mark.integration
def test_a_dual_stack_listener_accepts_the_listed_ipv4_modality(hostile_agent):  # noqa: F811
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 on this machine ({exc})")
    agent = hostile_agent(bind="::", allowed_peers=["127.0.0.1"])
    assert echo(agent.dicom_port)[0] == 0, agent.log()[-2000:]
