"""Check a state database and, when it is damaged, keep the damaged file intact beside it and rebuild a fresh one from
every row still readable. Used by the outbox, the dose history, the QC store and the folder-intake state.

- `check(path)`: `PRAGMA quick_check` on a read-only connection (https://www.sqlite.org/pragma.html#pragma_quick_check:
  O(N), no index cross-checks, does not block writers under WAL). Returns None when sound, else what is wrong.
- `recover(spec, detail)`: renames the file and its -wal/-shm/-journal to `NAME.damaged-UTCSTAMP[-wal|-shm]` (byte for
  byte as found), reads every readable row (agent.statedb.salvage), writes them into a new file built by the owner's
  own schema code, and renames that into place. The owner reopens it and goes on.
- `is_damage(exc)`: whether an sqlite3 error means the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB, a short read),
  as opposed to busy, full or read-only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from agent.statedb.salvage import salvage

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")
SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_IOERR_SHORT_READ = 11, 26, 522  # https://www.sqlite.org/rescode.html
DAMAGE_MESSAGES = ("malformed", "not a database", "disk i/o error")  # for errors raised without a code


@dataclass(frozen=True)
class Spec:
    """How to rebuild one state file.

    name: short name for logs and equipment ids ("outbox", "dose", "qc", "folder").
    create: builds the current schema on an empty connection (the owner's migrations).
    adopt: tables that may take rows of orphan pages (matched by column count; must be unambiguous).
    fixup: runs on the rebuilt file after the rows are in (derived totals, consistency).
    """

    name: str
    path: Path
    create: Callable[[sqlite3.Connection], None]
    adopt: tuple[str, ...] = ()
    fixup: Callable[[sqlite3.Connection], None] | None = None


@dataclass
class Recovery:
    """What one recovery did: for the log, the equipment state and the tests."""

    name: str
    path: Path
    damaged_copy: Path | None
    detail: str
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written into the new file
    adopted: int = 0
    unreadable_pages: int = 0
    dropped: int = 0  # rows read but refused by the new file's constraints

    def summary(self) -> str:
        kept = f"; damaged file kept as {self.damaged_copy}" if self.damaged_copy else ""
        rows = ", ".join(f"{n} {t}" for t, n in sorted(self.rows.items())) or "no rows"
        return (f"{self.name} state file {self.path} was damaged ({self.detail}); rebuilt with {rows} recovered "
                f"({self.adopted} from orphan pages, {self.unreadable_pages} unreadable pages, {self.dropped} rows "
                f"dropped){kept}")


def is_damage(exc: BaseException) -> bool:
    """True for errors that mean the file's content is damaged (not busy, locked, full or read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB) or code == SQLITE_IOERR_SHORT_READ
    return any(m in str(exc).lower() for m in DAMAGE_MESSAGES)


def check(path: Path) -> str | None:
    """None when the file is absent or sound; else the first problem quick_check (or opening it) reports."""
    path = Path(path)
    if not path.exists():
        if any(Path(f"{path}{s}").exists() for s in ("-wal", "-journal")):
            return "a journal is present without its database file"
        return None
    if not path.is_file():
        return None  # a directory or device where the file should be: the owner's open says so, nothing to rebuild
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10)
    except sqlite3.Error:
        return None  # cannot open at all (permissions): not damage; the owner's own open reports it
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        problems = [line for r in rows for line in str(r[0]).splitlines()
                    if line != "ok" and not line.startswith("*** in database")]
        return "; ".join(problems) if problems else None
    except sqlite3.DatabaseError as exc:
        return str(exc) if is_damage(exc) else None  # busy or locked is not damage: the next check tries again
    finally:
        conn.close()


def aside_name(path: Path, at: datetime) -> Path:
    """Where a damaged file is kept: beside it, named by the time it was found (UTC)."""
    base = path.with_name(f"{path.name}.damaged-{at.strftime('%Y%m%dT%H%M%SZ')}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}.{n}"), n + 1
    return candidate


def move_aside(path: Path, at: datetime) -> Path | None:
    """Rename the file and its side files, unchanged, to the damaged name (side files first: a database file must
    never be found next to another file's journal). Returns the new name of the main file (None if it had none).

    A marker file (`NAME.recovering`: stage and damaged name) makes the move and the rebuild that follows resumable:
    ensure_sound() finishes what a crash interrupted, so the rows of a moved file are never left behind."""
    target = aside_name(path, at)
    _mark(path, "moving", target)
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{target}{suffix}"))
    moved = None
    if path.exists():
        os.replace(path, target)
        moved = target
    _mark(path, "rebuilding", target)
    _sync_dir(path.parent)
    return moved


def recover(spec: Spec, detail: str, moved: Path | None = None) -> Recovery:
    """Move the damaged file aside (unless the caller did: `moved`), rebuild `spec.path` from its readable rows.

    Raises OSError / sqlite3.Error when the new file cannot be written (disk full): the damaged file is put back where
    it was, the caller keeps refusing and tries again later."""
    at = datetime.now(timezone.utc)
    if moved is None:
        moved = move_aside(spec.path, at)
    try:
        result = _rebuild(spec, detail, moved, at)
    except BaseException:
        _put_back(moved, spec.path)
        raise
    _marker(spec.path).unlink(missing_ok=True)
    log.error("%s", result.summary())
    return result


def _rebuild(spec: Spec, detail: str, moved: Path | None, at: datetime) -> Recovery:
    """Write the rows readable in `moved` into a new file built by spec.create, then rename it to spec.path."""
    result = Recovery(spec.name, spec.path, moved, detail, at)
    building = spec.path.with_name(f"{spec.path.name}.rebuilding")
    for leftover in [building, *(Path(f"{building}{s}") for s in SIDE_FILES)]:
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(building, isolation_level=None)
    try:
        if moved is not None:  # the new file gets the old one's permissions (state files are 0600)
            os.chmod(building, stat.S_IMODE(moved.stat().st_mode))
        spec.create(conn)
        tables = _tables(conn)
        if moved is not None:
            adopt: dict[int, list[str]] = {}
            for name in spec.adopt:
                if name in tables:
                    adopt.setdefault(tables[name][0], []).append(name)
            kinds = {name: _column_kinds(conn, name) for names in adopt.values() for name in names}
            found = salvage(moved, {t: (n, rowid) for t, (n, rowid, _) in tables.items()}, adopt,
                            fits=lambda name, values: _fits(kinds[name], values))
            result.adopted, result.unreadable_pages = found.adopted, found.bad_pages
            conn.execute("BEGIN IMMEDIATE")
            for table, rows in found.rows.items():
                if table in tables:
                    written, dropped = _insert(conn, table, tables[table], rows)
                    result.rows[table], result.dropped = written, result.dropped + dropped
            _restore_sequences(conn, found.rows.get("sqlite_sequence", []))
            if spec.fixup is not None:
                spec.fixup(conn)
            conn.execute("COMMIT")
        conn.close()
        os.replace(building, spec.path)
        _sync_dir(spec.path.parent)
    except BaseException:
        conn.close()
        building.unlink(missing_ok=True)
        raise
    return result


def recover_in_use(spec: Spec, detail: str, close_connections: Callable[[], None]) -> Recovery:
    """recover() for a file the process has open. A read-only connection holds the file while the owner closes its
    own connections, so the last of those does not checkpoint into the damaged file or delete its WAL (a read-only
    connection does neither when it closes): the damaged copy stays byte for byte as found. If close_connections
    raises, nothing has been moved."""
    pin = None
    if spec.path.exists():
        try:
            pin = sqlite3.connect(f"file:{spec.path}?mode=ro", uri=True, isolation_level=None)
            pin.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            pass  # a header too damaged to open: nothing can be checkpointed into it either
    try:
        close_connections()
        moved = move_aside(spec.path, datetime.now(timezone.utc))
    finally:
        if pin is not None:
            pin.close()
    return recover(spec, detail, moved=moved)


def ensure_sound(spec: Spec) -> Recovery | None:
    """At start: finish a rebuild a crash interrupted, check the file and rebuild it if damaged. Returns what was
    done (None if the file was sound)."""
    resumed = _resume(spec)
    problem = check(spec.path)
    if problem is None:
        return resumed
    log.error("%s state file %s is damaged: %s; moving it aside and recovering its readable rows", spec.name,
              spec.path, problem)
    return recover(spec, problem)


def _marker(path: Path) -> Path:
    return path.with_name(f"{path.name}.recovering")


def _mark(path: Path, stage: str, target: Path) -> None:
    marker = _marker(path)
    with open(marker, "w") as f:
        f.write(f"{stage}\n{target}\n")
        f.flush()
        os.fsync(f.fileno())


def _resume(spec: Spec) -> Recovery | None:
    """Finish what a crash interrupted: a move aside (put the files back) or a rebuild (do it again)."""
    marker = _marker(spec.path)
    try:
        stage, target = marker.read_text().split("\n")[:2]
    except (OSError, ValueError):
        marker.unlink(missing_ok=True)
        return None
    aside = Path(target)
    if spec.path.exists():
        if stage == "moving":  # the database file was never moved: give it back its side files
            for suffix in SIDE_FILES:
                if Path(f"{aside}{suffix}").exists():
                    os.replace(Path(f"{aside}{suffix}"), Path(f"{spec.path}{suffix}"))
        marker.unlink()  # "rebuilding" with the file in place: the rebuilt file was renamed in, only this was left
        return None
    log.error("%s state file %s: a rebuild from %s was interrupted; doing it again", spec.name, spec.path, aside)
    return recover(spec, "rebuild interrupted", moved=aside if aside.exists() else None)


def _tables(conn: sqlite3.Connection) -> dict[str, tuple[int, bool, list[str]]]:
    """name -> (column count, has rowid, column names) of the fresh file's tables."""
    out = {}
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                  "AND name NOT LIKE 'sqlite_%'").fetchall():
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
        out[name] = (len(columns), "without rowid" not in sql.lower(), columns)
    return out


def _insert(conn: sqlite3.Connection, table: str, shape: tuple[int, bool, list[str]],
            rows: list[tuple[int | None, list]]) -> tuple[int, int]:
    """Write salvaged rows (the rowid kept where the table has one); returns (written, refused)."""
    ncols, has_rowid, columns = shape
    alias = _rowid_alias(conn, table) if has_rowid else None
    written = dropped = 0
    for rowid, values in rows:
        values = list(values[:ncols])
        if alias is not None and alias < len(values) and values[alias] is None:
            values[alias] = rowid  # an INTEGER PRIMARY KEY is stored as the rowid, NULL in the record
        names = list(columns[:len(values)])
        if has_rowid and alias is None and rowid is not None:
            names, values = ["rowid", *names], [rowid, *values]
        quoted = ", ".join(f'"{n}"' for n in names)
        try:
            cur = conn.execute(f'INSERT OR IGNORE INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(values))})',
                               values)
            written += cur.rowcount
        except sqlite3.Error:
            dropped += 1
    return written, dropped


def _column_kinds(conn: sqlite3.Connection, table: str) -> list[tuple[str, bool]]:
    """Per column: (the storage class its declared type gives, per SQLite's affinity rules (datatype3.html 3.1), or ""
    for any; whether a NULL is refused). An INTEGER PRIMARY KEY is NULL in the record (it is the rowid)."""
    kinds = []
    for _cid, _name, declared, notnull, _default, pk in conn.execute(f'PRAGMA table_info("{table}")'):
        declared = (declared or "").upper()
        if "INT" in declared:
            kind = "integer"
        elif any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
            kind = "text"
        else:
            kind = ""  # BLOB, REAL or NUMERIC affinity: several storage classes are possible
        rowid_alias = bool(pk) and declared == "INTEGER"
        kinds.append((kind, bool(notnull) and not rowid_alias))
    return kinds


def _fits(kinds: list[tuple[str, bool]], values: list) -> bool:
    """Whether a salvaged record could have been stored in a table of these column kinds."""
    for (kind, notnull), value in zip(kinds, values):
        if value is None:
            if notnull:
                return False
        elif kind == "integer" and not isinstance(value, (int, float)):  # INTEGER affinity keeps text only if
            if not isinstance(value, str) or value.strip().lstrip("+-").isdigit():  # it is not a number
                return False
        elif kind == "text" and not isinstance(value, (str, bytes)):  # TEXT affinity stores numbers as text
            return False
    return True


def _rowid_alias(conn: sqlite3.Connection, table: str) -> int | None:
    """Index of the INTEGER PRIMARY KEY column (an alias of the rowid), if the table has one."""
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    keys = [r for r in info if r[5]]
    if len(keys) == 1 and keys[0][2].upper() == "INTEGER":
        return keys[0][0]
    return None


def _restore_sequences(conn: sqlite3.Connection, rows: list[tuple[int | None, list]]) -> None:
    """AUTOINCREMENT counters never go back: a number handed out before the damage is never handed out again."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        return
    for _rowid, values in rows:
        if len(values) == 2 and isinstance(values[0], str) and isinstance(values[1], int):
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (values[1], values[0]))
            conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (values[0], values[1], values[0]))


def _put_back(moved: Path | None, path: Path) -> None:
    """Undo move_aside after a failed rebuild, so the next attempt finds the damaged file where it was."""
    if moved is not None and not path.exists():
        try:
            os.replace(moved, path)
            for suffix in SIDE_FILES:
                if Path(f"{moved}{suffix}").exists():
                    os.replace(Path(f"{moved}{suffix}"), Path(f"{path}{suffix}"))
        except OSError as exc:
            log.error("could not put %s back as %s: %s", moved, path, exc)
            return  # the marker stays: the next start resumes from the moved file
    _marker(path).unlink(missing_ok=True)


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
