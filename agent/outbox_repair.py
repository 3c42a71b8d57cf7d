"""The outbox's answer to a damaged file while it runs, and its WAL after a write outage (agent.outbox uses these).

- `guarded_read`: reads return a neutral value while the file is damaged or being rebuilt, and a read that meets
  damage marks it, so the publisher waits instead of failing in a loop.
- `RepairableFile.repair()`: stop the writer, close every reader, keep the damaged file intact beside the new one
  (agent.statedb), start again on the rebuilt file. Sequence numbers never go back (sqlite_sequence is restored), so
  the publisher's place in the queue stays valid.
- `truncate_wal`: after writes failed (disk full), checkpoint and cut the WAL to zero so the space it took during the
  outage is given back at once instead of the WAL refilling the disk.
"""

from __future__ import annotations

import logging
import sqlite3

from agent import statedb

log = logging.getLogger("agent.outbox")


def guarded_read(default):
    """A read that returns `default` while the file is damaged or being rebuilt, and marks it damaged when the read
    itself meets damage (the publisher then waits instead of failing in a loop)."""
    def wrap(fn):
        def guarded(self, *args):
            with self._read_gate:
                if self.damage is None:
                    try:
                        return fn(self, *args)
                    except sqlite3.DatabaseError as exc:
                        if not statedb.is_damage(exc):
                            raise
                        self.mark_damaged(f"{fn.__name__}: {exc}")
                return default(self) if callable(default) else default
        guarded.__name__, guarded.__doc__ = fn.__name__, fn.__doc__
        return guarded
    return wrap


class RepairableFile:
    """Mixed into Outbox: damage state and the rebuild while running. Needs the Outbox's _read_gate, _readers,
    _generation, _stop_writer(), _start_writer(), _open_and_migrate(), state_spec() and changed."""

    def mark_damaged(self, detail: str) -> None:
        """Refuse everything from now until repair(); wake the integrity watch (once per episode)."""
        if self.damage is not None:
            return
        self.damage = detail
        log.error("outbox %s is damaged (%s): refusing every message (DICOM 0xA700, readings held) until it is "
                  "rebuilt", self.path, detail)
        if self.on_damage is not None:
            self.on_damage(detail)

    def repair(self, detail: str) -> statedb.Recovery:
        """Rebuild the damaged file in place while the agent runs: stop the writer, close every reader, keep the
        damaged file intact beside the new one, start again. Raises OSError/sqlite3.Error if it cannot be rebuilt
        (the outbox then stays damaged and refusing; the watch tries again)."""
        self.mark_damaged(detail)

        def close_all() -> None:
            with self._read_gate:
                self._stop_writer(30.0)
                for conn in self._readers:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                self._readers.clear()
                self._generation += 1

        self.recovery = statedb.recover_in_use(self.state_spec(), detail, close_all)
        self._open_and_migrate()
        self._keep_sequence()
        self._start_writer()
        self.damage = None  # after the writer runs: alive() never reads False in between (the supervisor watches)
        self.changed.set()
        return self.recovery


    def _keep_sequence(self) -> None:
        """Sequence numbers this process handed out are never handed out again, even if the damaged file lost the
        record of them (the publisher's place in the queue is a sequence number)."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'messages'", (self.high_seq,))
            conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sqlite_sequence WHERE name = 'messages')", (self.high_seq,))
        finally:
            conn.close()


def after_rebuild(conn: sqlite3.Connection) -> None:
    """After a rebuild: drop recovered rows already delivered (their delete was lost with the damage) and recount."""
    conn.execute("DELETE FROM messages WHERE msg_id IN (SELECT msg_id FROM delivered)")
    conn.execute("UPDATE totals SET bytes = (SELECT coalesce(sum(length(payload)), 0) FROM messages) WHERE id = 1")
    conn.execute("DELETE FROM share_totals")  # the per-class totals the fair shares are judged by, recounted too
    conn.execute("INSERT INTO share_totals (share, bytes) SELECT share, sum(length(payload)) FROM messages "
                 "GROUP BY share")


def truncate_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint and cut the WAL to zero bytes (after a write outage it may have grown to what the disk held);
    False when readers kept it from completing (tried again after the next commit)."""
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("outbox WAL checkpoint failed: %s", exc)
        return False
    if not busy:
        log.info("outbox WAL checkpointed and truncated after the write outage")
    return not busy
