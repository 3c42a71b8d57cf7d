"""The durable outbox: every message is in SQLite before anyone is told it was taken, and leaves only after PUBACK.

One writer thread owns the only write connection and commits with group commit: the enqueues that arrive while a
commit is in progress are written together in the next transaction (one fsync), and each caller returns only after the
transaction holding its rows committed with synchronous=FULL. Readers (the publisher, `outbox stats`) use their own
connections; WAL lets them read while the writer writes. Other processes may open the same file (the demo generator,
`xray-agent` tools); SQLite's locking serialises them and the byte totals are kept by triggers so they stay exact.

Fair shares: each message belongs to an intake class (its `share`: dicom, readings, qc, telemetry) and each class may
hold at most its configured fraction of max_bytes, so one class filling up (a meter sending frames during a broker
outage) never refuses another (DICOM).

Parking: a message the broker refuses (MQTT 5 PUBACK reason code >= 0x80) or that is larger than the broker accepts is
parked: it stays in the file with the reason, out of the delivery order, until `retry_parked()` releases it.

Damage (agent.statedb): the file is checked before the writer starts and rebuilt from its readable rows if damaged. A
read or write that meets damage while running marks the outbox damaged: every enqueue then raises OutboxDamaged (the
intakes refuse: 0xA700, readings held), reads return nothing, and `on_damage` wakes the integrity watch, which calls
`repair()`. Disk full: `write_error` holds the last write's failure until a write succeeds again; the first success
after a failure checkpoints and truncates the WAL, so the space the outage's WAL took is given back at once.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from agent import statedb
from agent.outbox_repair import RepairableFile, after_rebuild, guarded_read, truncate_wal
from agent.privacy.files import private_dir, private_sqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MAX_OPS_PER_COMMIT = 512
REFUSING_CLEARS_BELOW = 0.9  # hysteresis: stop reporting "full" only once 10% is free again
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # after a checkpoint the WAL is cut back to this (PRAGMA journal_size_limit)


class OutboxError(Exception):
    """The outbox could not store a message (disk full, file unwritable, closed): the intake must not acknowledge."""


class OutboxFull(OutboxError):
    """The outbox is at its configured size; a message that must not be dropped was refused. Retry later."""


class OutboxDamaged(OutboxError):
    """The outbox file is damaged and being rebuilt; nothing is stored (or acknowledged) until it is."""


@dataclass(frozen=True)
class OutMessage:
    """A message ready to store: its full topic, wire payload and delivery flags."""

    msg_id: str
    topic: str
    payload: bytes
    retain: bool = False
    coalesce: bool = False  # keep only the newest undelivered message of this topic (status/health samples)
    share: str = ""  # intake class whose share of max_bytes it uses; "" for the whole outbox only


class StoredMessage(NamedTuple):
    """A message read back from the outbox for publishing (a tuple: the publisher makes thousands a second)."""

    seq: int
    msg_id: str
    topic: str
    payload: bytes
    retain: bool
    coalesce: bool


@dataclass(frozen=True)
class OutboxStats:
    """What `xray-agent outbox stats` prints."""

    depth_by_topic: dict[str, int]
    oldest_age_s: float | None
    bytes_used: int
    max_bytes: int
    counters: dict[str, int]
    parked_now: int = 0  # messages out of the delivery order until retried (counters["parked"]: over the file's life)
    share_bytes: dict[str, int] = field(default_factory=dict)  # bytes held per intake class
    share_max_bytes: dict[str, int] = field(default_factory=dict)  # each class's share of max_bytes


class ParkedMessage(NamedTuple):
    """A message the broker would not take, as `outbox stats` lists it."""

    seq: int
    msg_id: str
    topic: str
    size_bytes: int
    reason: str
    created_at: float


@dataclass
class _Op:
    messages: tuple[OutMessage, ...] = ()
    acks: tuple[tuple[int, str, bool], ...] = ()  # (seq, msg_id, remember msg_id for dedupe)
    maintain: bool = False
    park: tuple[tuple[int, str], ...] = ()  # (seq, reason)
    unpark: bool = False
    released: int = 0
    probe: bool = False  # a one-page write, to learn whether writes succeed again after a failure
    done: threading.Event = field(default_factory=threading.Event)
    inserted: list[bool] = field(default_factory=list)
    error: Exception | None = None


# Each entry upgrades the file from version i to i+1 (PRAGMA user_version). Never edit a released entry: append one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        retain INTEGER NOT NULL DEFAULT 0,
        coalesce INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_topic ON messages (topic, seq);
    CREATE TABLE delivered (msg_id TEXT PRIMARY KEY, delivered_at REAL NOT NULL) WITHOUT ROWID;
    """,
    """
    CREATE INDEX delivered_at ON delivered (delivered_at);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL);
    INSERT INTO totals (id, bytes) SELECT 1, coalesce(sum(length(payload)), 0) FROM messages;
    CREATE TRIGGER messages_add AFTER INSERT ON messages
        BEGIN UPDATE totals SET bytes = bytes + length(NEW.payload) WHERE id = 1; END;
    CREATE TRIGGER messages_del AFTER DELETE ON messages
        BEGIN UPDATE totals SET bytes = bytes - length(OLD.payload) WHERE id = 1; END;
    """,
    """
    ALTER TABLE messages ADD COLUMN share TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN parked TEXT;
    CREATE INDEX messages_parked ON messages (seq) WHERE parked IS NOT NULL;
    CREATE TABLE share_totals (share TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TRIGGER messages_share_add AFTER INSERT ON messages
        BEGIN INSERT INTO share_totals (share, bytes) VALUES (NEW.share, length(NEW.payload))
              ON CONFLICT (share) DO UPDATE SET bytes = bytes + excluded.bytes; END;
    CREATE TRIGGER messages_share_del AFTER DELETE ON messages
        BEGIN UPDATE share_totals SET bytes = bytes - length(OLD.payload) WHERE share = OLD.share; END;
    INSERT INTO share_totals (share, bytes) SELECT share, sum(length(payload)) FROM messages GROUP BY share;
    INSERT OR REPLACE INTO counters (name, value) SELECT 'refusing:', value FROM counters WHERE name = 'refusing';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """Open the outbox file with the settings every connection needs (WAL, FULL sync, busy timeout)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: with WAL, NORMAL may lose the last commits on power loss; an acknowledged C-STORE must survive that.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA wal_autocheckpoint = 8000")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return conn


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the file up to `target` schema version; returns the version found. Refuses files from a newer agent."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise OutboxError(f"outbox schema version {found} is newer than this agent understands ({SCHEMA_VERSION}); "
                          "upgrade the agent or move the file aside")
    for version in range(found, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit the open transaction)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined.strip())
            current = []
    return [s for s in statements if s]


class Outbox(RepairableFile):
    """Durable FIFO of outgoing messages with idempotent enqueue, coalescing and a size bound."""

    def __init__(self, path: Path, *, max_bytes: int, telemetry_max_age_s: float = 86400,
                 dedupe_days: float = 30, shares: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.time):
        """shares: fraction of max_bytes each intake class may hold (e.g. {"dicom": 0.55, "readings": 0.25}); a
        message of a class not listed is bounded by max_bytes alone."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.share_max_bytes = {name: int(fraction * max_bytes) for name, fraction in (shares or {}).items()}
        self.telemetry_max_age_s = telemetry_max_age_s
        self.dedupe_s = dedupe_days * 86400
        self._clock = clock
        self._ops: queue.Queue[_Op | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._read_local = threading.local()
        self.changed = threading.Event()  # set after a commit that added messages; the publisher waits on it
        self.busy_since: float | None = None  # monotonic start of the commit in progress (watchdog: a stalled disk)
        self.write_error: str | None = None  # why the last write failed; None once a write succeeded (readiness)
        self.damage: str | None = None  # what is wrong with the file, until repair() has rebuilt it
        self.recovery: statedb.Recovery | None = None  # the last rebuild (at start or while running)
        self.on_damage: Callable[[str], None] | None = None  # the integrity watch's wake-up
        self._read_gate = threading.RLock()  # repair() waits for reads in progress; reentrant: a read may call another
        self._readers: list[sqlite3.Connection] = []
        self._generation = 0  # bumped by repair(): threads reopen their read connection on the new file
        self._truncate_wal = False
        self.high_seq = 0  # the highest sequence number this process stored (kept across a rebuild)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the file (rebuilding it if damaged), create or upgrade it, then start the writer thread."""
        private_dir(self.path.parent)  # checked before the file is created: a missing file may be
        # one a crash left moved aside mid-rebuild (agent.statedb resumes it), never an empty new one
        try:
            self.recovery = statedb.ensure_sound(self.state_spec()) or self.recovery
            private_sqlite(self.path)  # 0600, and so its -wal/-shm
        except (OSError, sqlite3.Error) as exc:  # damaged and cannot be rebuilt now (disk full): refuse, watch retries
            self.damage = f"{statedb.check(self.path) or 'damaged'}; rebuild failed: {exc}"
            log.error("outbox %s is damaged and could not be rebuilt (%s): refusing every message until it is",
                      self.path, exc)
            return
        try:
            self._open_and_migrate()
        except sqlite3.DatabaseError as exc:
            if not statedb.is_damage(exc):
                raise
            self.recovery = statedb.recover(self.state_spec(), str(exc))
            self._open_and_migrate()
        self.damage = None
        self._start_writer()

    def _open_and_migrate(self) -> None:
        conn = connect(self.path)
        try:
            migrate(conn)
        finally:
            conn.close()

    def state_spec(self) -> statedb.Spec:
        """How agent.statedb rebuilds this file: the migrations, lost message rows adopted, totals recounted."""
        return statedb.Spec("outbox", self.path, migrate, adopt=("messages",), fixup=after_rebuild)

    def _start_writer(self) -> None:
        _fail_all(self._ops, OutboxError("outbox restarted"))  # a dead writer's leftovers (and its stop sentinel)
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then stop the writer."""
        try:
            self._stop_writer(timeout)
        except OSError as exc:
            log.error("%s", exc)
            self._thread = None

    def _stop_writer(self, timeout: float) -> None:
        if self._thread is None:
            return
        self._ops.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise OSError(f"outbox writer did not stop within {timeout:.0f} s (disk stalled?)")
        self._thread = None

    def alive(self) -> bool:
        """The writer runs, or the file is damaged and refusing (the integrity watch owns it until rebuilt)."""
        return self.damage is not None or (self._thread is not None and self._thread.is_alive())

    # ---- writing ---------------------------------------------------------------------------------------------
    def enqueue(self, messages: Iterable[OutMessage], timeout: float = 30.0) -> list[bool]:
        """Store messages atomically and durably; return, per message, True if stored or False if a duplicate.

        Raises OutboxFull (nothing of this call stored) when a non-coalescing message does not fit, and OutboxError
        when the file cannot be written or the writer is not running. Returns only after the commit is on disk.
        """
        op = _Op(messages=tuple(messages))
        self._submit(op, timeout)
        return op.inserted

    def ack(self, acks: Iterable[tuple[int, str, bool]], wait: bool = False) -> None:
        """Remove published messages by (seq, msg_id, remember): remember keeps msg_id to drop later re-sends."""
        op = _Op(acks=tuple(acks))
        if self.damage is not None:
            return  # the rows stay and are sent again after the rebuild (subscribers drop the repeats by msg_id)
        if wait:
            self._submit(op, 30.0)
        elif self.alive():
            self._ops.put(op)

    def park(self, parked: Iterable[tuple[int, str]]) -> None:
        """Take messages out of the delivery order by (seq, reason); they stay stored until retried (no wait)."""
        op = _Op(park=tuple(parked))
        if op.park and self.alive():
            self._ops.put(op)

    def retry_parked(self, timeout: float = 30.0) -> int:
        """Put every parked message back into the delivery order; returns how many. Works from another process
        too: the publisher sees the `retried` counter move and sends them."""
        op = _Op(unpark=True)
        self._submit(op, timeout)
        return op.released

    def maintain(self) -> None:
        """Expire stale telemetry and forget old delivered ids (the supervisor calls this now and then)."""
        self._submit(_Op(maintain=True), 30.0)

    def probe(self) -> None:
        """One small write (readiness after a failed write: succeeds once the disk takes writes again)."""
        self._submit(_Op(probe=True), 30.0)

    def _submit(self, op: _Op, timeout: float) -> None:
        if self.damage is not None:
            raise OutboxDamaged(f"outbox is damaged and being rebuilt ({self.damage})")
        if not self.alive():
            raise OutboxError("outbox is not running")
        self._ops.put(op)
        if not op.done.wait(timeout):
            raise OutboxError(f"outbox did not commit within {timeout:.0f} s (disk stalled?)")
        if op.error is not None:
            raise op.error

    def _writer(self) -> None:
        batch: list[_Op] = []
        try:
            conn = connect(self.path)
        except Exception as exc:
            _fail_all(self._ops, OutboxError(f"outbox cannot be opened: {exc}"))
            raise
        try:
            while True:
                op = self._ops.get()
                if op is None:
                    return
                batch = [op]
                while len(batch) < MAX_OPS_PER_COMMIT:
                    try:
                        nxt = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._ops.put(None)  # finish this batch, then stop
                        break
                    batch.append(nxt)
                self.busy_since = time.monotonic()
                self._commit(conn, batch)
                self.busy_since = None
        except BaseException as exc:
            # A dying writer fails everything waiting for it at once (the intakes answer 0xA700 now, not after a
            # 30 s timeout) and alive() turns False, so nothing is acknowledged until the supervisor restarts it.
            log.critical("outbox writer died: %r", exc, exc_info=True)
            error = OutboxError(f"outbox writer died: {exc!r}")
            for op in batch:
                if not op.done.is_set():
                    op.error = op.error or error
                    op.done.set()
            _fail_all(self._ops, error)
            raise
        finally:
            self.busy_since = None
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        now = self._clock()
        added = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            used = conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0]
            for op in batch:
                used, op_added = self._apply(conn, op, used, now)
                added |= op_added
            self._clear_refusing(conn, used)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            if self.write_error is None:  # once per outage: a full disk fails every write until space returns
                log.error("outbox write failed: %s (file %s); refusing until a write succeeds again", exc, self.path)
            else:
                log.debug("outbox write failed again: %s", exc)
            self.write_error = str(exc)
            for op in batch:
                op.inserted = []
                op.error = op.error or OutboxError(f"outbox write failed: {exc}")
            if statedb.is_damage(exc):
                self.mark_damaged(str(exc))
        else:
            if self.write_error is not None:
                log.warning("outbox writes succeed again (after: %s)", self.write_error)
                self.write_error, self._truncate_wal = None, True
            if self._truncate_wal:
                self._truncate_wal = not truncate_wal(conn)
        for op in batch:
            op.done.set()
        if added:
            self.changed.set()

    def _clear_refusing(self, conn: sqlite3.Connection, used: int) -> None:
        """Accept a refused class again once it (and the whole outbox) is below 90% of its bound (hysteresis)."""
        flags = [name for (name,) in conn.execute(
            "SELECT name FROM counters WHERE name LIKE 'refusing:%' AND value = 1").fetchall()]
        for name in flags:
            share = name.removeprefix("refusing:")
            held, bound = self._share_used(conn, share), self.share_max_bytes.get(share, self.max_bytes)
            if held < bound * REFUSING_CLEARS_BELOW and used < self.max_bytes * REFUSING_CLEARS_BELOW:
                _set_flag(conn, name, 0)
                log.warning("outbox has room again for %s messages (%d of %d bytes of its share, %d of %d in all); "
                            "intake accepted", share or "all", held, bound, used, self.max_bytes)
        if flags:
            still = conn.execute("SELECT 1 FROM counters WHERE name LIKE 'refusing:%' AND value = 1").fetchone()
            _set_flag(conn, "refusing", int(still is not None))

    @staticmethod
    def _share_used(conn: sqlite3.Connection, share: str) -> int:
        row = conn.execute("SELECT bytes FROM share_totals WHERE share = ?", (share,)).fetchone()
        return row[0] if row else 0

    def _no_room(self, conn: sqlite3.Connection, msg: OutMessage, used: int) -> str:
        """Why msg does not fit ("" when it does): the whole outbox or its class's share is full."""
        if used + len(msg.payload) > self.max_bytes:
            return f"outbox full ({used} of {self.max_bytes} bytes)"
        bound = self.share_max_bytes.get(msg.share)
        if bound is not None:
            held = self._share_used(conn, msg.share)
            if held + len(msg.payload) > bound:
                return f"the {msg.share} share of the outbox is full ({held} of {bound} bytes)"
        return ""

    def _apply(self, conn: sqlite3.Connection, op: _Op, used: int, now: float) -> tuple[int, bool]:
        """Apply one op inside the open transaction; returns the new byte total and whether anything was added."""
        if op.park:
            parked = sum(conn.execute("UPDATE messages SET parked = ? WHERE seq = ? AND parked IS NULL",
                                      (reason, seq)).rowcount for seq, reason in op.park)
            _bump(conn, "parked", parked)
            return used, False
        if op.unpark:
            op.released = conn.execute("UPDATE messages SET parked = NULL WHERE parked IS NOT NULL").rowcount
            _bump(conn, "retried", op.released)
            return used, op.released > 0
        if op.acks:
            # One statement per table with the ids as a JSON array: a row-per-call executemany gives up and retakes the
            # GIL for every row, and behind a busy publisher thread each retake waits a switch interval.
            seqs = json.dumps([seq for seq, _, _ in op.acks])
            remembered = json.dumps([msg_id for _, msg_id, remember in op.acks if remember])
            conn.execute("DELETE FROM messages WHERE seq IN (SELECT value FROM json_each(?))", (seqs,))
            conn.execute("INSERT OR IGNORE INTO delivered (msg_id, delivered_at) SELECT value, ? FROM json_each(?)",
                         (now, remembered))
            return conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0], False
        if op.maintain:
            self._expire(conn, now)
            return conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0], False
        if op.probe:
            conn.execute("UPDATE totals SET bytes = bytes WHERE id = 1")  # rewrites one page: a real write
            return used, False
        conn.execute("SAVEPOINT op")
        inserted = []
        for msg in op.messages:
            why = "" if msg.coalesce else self._no_room(conn, msg, used)
            if why:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                self._refuse(conn, msg, why)
                op.error = OutboxFull(f"{why}; refused {msg.topic}")
                return conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0], False
            inserted.append(self._insert(conn, msg, now))
            used = conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0]
        conn.execute("RELEASE op")
        op.inserted = inserted
        return used, any(inserted)

    def _insert(self, conn: sqlite3.Connection, msg: OutMessage, now: float) -> bool:
        if conn.execute("SELECT 1 FROM delivered WHERE msg_id = ?", (msg.msg_id,)).fetchone():
            return False
        if msg.coalesce:
            gone = conn.execute("DELETE FROM messages WHERE topic = ? AND coalesce = 1", (msg.topic,)).rowcount
            _bump(conn, "coalesced", gone)
        cur = conn.execute(
            "INSERT OR IGNORE INTO messages (msg_id, topic, payload, retain, coalesce, created_at, share) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (msg.msg_id, msg.topic, msg.payload, int(msg.retain), int(msg.coalesce), now, msg.share))
        if cur.rowcount != 1:
            return False
        self.high_seq = cur.lastrowid
        return True

    def _refuse(self, conn: sqlite3.Connection, msg: OutMessage, why: str) -> None:
        _bump(conn, "refused", 1)
        if msg.share:
            _bump(conn, f"refused:{msg.share}", 1)
        _set_flag(conn, "refusing", 1)
        if _set_flag(conn, f"refusing:{msg.share}", 1):
            log.error("%s: refusing %s messages until the broker drains it; intake answers 'out of resources' so "
                      "senders retry", why, msg.share or msg.topic)

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        gone = conn.execute("DELETE FROM messages WHERE coalesce = 1 AND created_at < ?",
                            (now - self.telemetry_max_age_s,)).rowcount
        if gone:
            _bump(conn, "expired", gone)
            log.info("expired %d undelivered status/health samples older than %.0f s", gone, self.telemetry_max_age_s)
        conn.execute("DELETE FROM delivered WHERE delivered_at < ?", (now - self.dedupe_s,))

    # ---- reading ---------------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._read_local, "conn", None)
        if conn is None or getattr(self._read_local, "generation", None) != self._generation:
            conn = connect(self.path)
            self._read_local.conn, self._read_local.generation = conn, self._generation
            self._readers.append(conn)
        return conn

    @guarded_read([])
    def fetch_after(self, seq: int, limit: int) -> list[StoredMessage]:
        """Undelivered messages with seq greater than `seq`, oldest first (FIFO per topic follows); parked ones are
        left out."""
        # The batch comes back as one JSON value (payloads hex-encoded): one SQLite step instead of one per row, so
        # the publisher thread does not queue for the GIL once per row behind paho's network thread.
        (batch,) = self._reader().execute(
            "SELECT json_group_array(json_array(seq, msg_id, topic, hex(payload), retain, coalesce)) FROM "
            "(SELECT * FROM messages WHERE seq > ? AND parked IS NULL ORDER BY seq LIMIT ?)", (seq, limit)).fetchone()
        rows = sorted(json.loads(batch))  # json_group_array does not promise the subquery's order; seq comes first
        return [StoredMessage(r[0], r[1], r[2], bytes.fromhex(r[3]), bool(r[4]), bool(r[5])) for r in rows]

    @property
    @guarded_read(False)
    def refusing(self) -> bool:
        """True while exposure-class messages are refused for lack of room (whichever process refused them)."""
        row = self._reader().execute("SELECT value FROM counters WHERE name = 'refusing'").fetchone()
        return bool(row and row[0])

    @property
    @guarded_read(0)
    def retried_total(self) -> int:
        """Parked messages put back into the delivery order over the file's life (the publisher watches it)."""
        row = self._reader().execute("SELECT value FROM counters WHERE name = 'retried'").fetchone()
        return row[0] if row else 0

    @guarded_read(0)
    def parked_count(self) -> int:
        """Messages parked now."""
        return self._reader().execute("SELECT count(*) FROM messages WHERE parked IS NOT NULL").fetchone()[0]

    @guarded_read([])
    def parked_messages(self, limit: int = 100) -> list[ParkedMessage]:
        """The oldest parked messages with the reason the broker did not take them."""
        rows = self._reader().execute(
            "SELECT seq, msg_id, topic, length(payload), parked, created_at FROM messages WHERE parked IS NOT NULL "
            "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [ParkedMessage(*row) for row in rows]

    @property
    @guarded_read(0)
    def refused_total(self) -> int:
        """Messages refused for lack of room over the life of this outbox file."""
        row = self._reader().execute("SELECT value FROM counters WHERE name = 'refused'").fetchone()
        return row[0] if row else 0

    @guarded_read(0)
    def depth(self) -> int:
        """Number of undelivered messages."""
        return self._reader().execute("SELECT count(*) FROM messages").fetchone()[0]

    @guarded_read(lambda self: OutboxStats({}, None, 0, self.max_bytes, {}))
    def stats(self) -> OutboxStats:
        """Depth per topic, oldest undelivered age, bytes used and the event counters."""
        conn = self._reader()
        depth = dict(conn.execute("SELECT topic, count(*) FROM messages GROUP BY topic ORDER BY topic").fetchall())
        oldest = conn.execute("SELECT min(created_at) FROM messages").fetchone()[0]
        used = conn.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        held = dict(conn.execute("SELECT share, bytes FROM share_totals WHERE share != ''").fetchall())
        share_bytes = {name: held.get(name, 0) for name in self.share_max_bytes} | held
        return OutboxStats(depth, age, used, self.max_bytes, counters, self.parked_count(), share_bytes,
                           dict(self.share_max_bytes))

    def close_reader(self) -> None:
        """Close this thread's read connection (call from the thread that read)."""
        with self._read_gate:
            conn = getattr(self._read_local, "conn", None)
            if conn is not None:
                if conn in self._readers:
                    self._readers.remove(conn)
                conn.close()
                self._read_local.conn = None


def _fail_all(ops: queue.Queue, error: Exception) -> None:
    """Answer every op still queued with `error` (dropping stop sentinels)."""
    while True:
        try:
            op = ops.get_nowait()
        except queue.Empty:
            return
        if op is not None:
            op.inserted, op.error = [], error
            op.done.set()


def _set_flag(conn: sqlite3.Connection, name: str, value: int) -> bool:
    """Set a 0/1 flag in the counters table (shared with other processes); True if it changed."""
    current = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    if (current[0] if current else 0) == value:
        return False
    conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))
    return True


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, by))


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
