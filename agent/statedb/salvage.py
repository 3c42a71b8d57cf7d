"""Reads every row still readable from a damaged SQLite file, from the file format itself.

Why not SQLite's own recovery: the `sqlite3` shell's `.recover` needs the `sqlite_dbpage` virtual table, which Debian's
libsqlite3 (3.40) is built without (".recover" fails with "no such table: sqlite_dbpage"), and Python's sqlite3 module
exposes no recovery API (the sqlite3_recover extension is compiled into the shell only). So this module walks the file
as https://www.sqlite.org/fileformat2.html describes it:

- the newest committed frame of each page in the `-wal` file replaces the page of the main file (section 4.3, frames
  checked by salt and cumulative checksum, those after the last commit frame ignored);
- each table of the schema is walked from its root page (table b-trees: interior 0x05, leaf 0x0D; WITHOUT ROWID
  tables are index b-trees, 0x02/0x0A, whose cells hold whole rows), skipping any page or cell that does not parse;
- table leaf pages no walk reached (their parent page was damaged) and not on the freelist are "orphans": their rows
  are given to the caller's tables by column count (`adopt`), as `.recover`'s lost_and_found would hold them.

Every value comes back as Python's sqlite3 would return it (int, float, str, bytes, None). Nothing here writes.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEADER = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums computed little-endian / big-endian
TABLE_INTERIOR, TABLE_LEAF, INDEX_INTERIOR, INDEX_LEAF = 0x05, 0x0D, 0x02, 0x0A


@dataclass
class Salvaged:
    """What was read: rows per table (rowid, values) and counts for the log."""

    rows: dict[str, list[tuple[int | None, list]]] = field(default_factory=dict)
    adopted: int = 0  # rows of orphan pages given to a table by their column count (and column types)
    ambiguous: int = 0  # rows of orphan pages that fit no table or more than one: left out, never merged
    bad_pages: int = 0  # pages that did not parse as what their parent said they were
    bad_cells: int = 0
    schema_found: bool = False  # page 1's schema table was readable


class _Pages:
    """Page access with the WAL's committed frames laid over the main file."""

    def __init__(self, path: Path):
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        head = bytes(self._map[:100])
        self.page_size = 4096
        self.reserved = 0
        self.utf = "utf-8"
        self.freelist = (0, 0)
        if len(head) == 100 and head[:16] == HEADER:
            raw = struct.unpack(">H", head[16:18])[0]
            self.page_size = 65536 if raw == 1 else (raw if raw >= 512 and raw & (raw - 1) == 0 else 4096)
            self.reserved = head[20]
            self.utf = {2: "utf-16-le", 3: "utf-16-be"}.get(struct.unpack(">I", head[56:60])[0], "utf-8")
            self.freelist = struct.unpack(">II", head[32:40])
        self.count = max(1, size // self.page_size)
        self.wal: dict[int, bytes] = _read_wal(Path(f"{path}-wal"), self.page_size)
        if self.wal:
            self.count = max(self.count, max(self.wal))

    @property
    def usable(self) -> int:
        return self.page_size - self.reserved

    def get(self, number: int) -> bytes | None:
        if number < 1 or number > self.count:
            return None
        if number in self.wal:
            return self.wal[number]
        start = (number - 1) * self.page_size
        page = bytes(self._map[start:start + self.page_size])
        return page if len(page) == self.page_size else None

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()


def _read_wal(path: Path, page_size: int) -> dict[int, bytes]:
    """Page number -> newest committed content in the WAL (empty if there is none or its header is bad)."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if len(data) < 32:
        return {}
    magic, _version, wal_page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC:
        return {}
    page_size = wal_page_size or page_size
    endian = "<" if magic == WAL_MAGIC[0] else ">"
    s0, s1 = _wal_checksum(data[:24], 0, 0, endian)
    if (s0, s1) != (c1, c2):
        return {}
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    offset = 32
    while offset + 24 + page_size <= len(data):
        number, commit, fsalt1, fsalt2, fc1, fc2 = struct.unpack(">6I", data[offset:offset + 24])
        if (fsalt1, fsalt2) != (salt1, salt2):
            break
        s0, s1 = _wal_checksum(data[offset:offset + 8], s0, s1, endian)
        page = data[offset + 24:offset + 24 + page_size]
        s0, s1 = _wal_checksum(page, s0, s1, endian)
        if (s0, s1) != (fc1, fc2):
            break  # a torn or damaged frame ends the valid log (fileformat2 section 4.3)
        pending[number] = page
        if commit:
            pages.update(pending)
            pending = {}
        offset += 24 + page_size
    return pages


def _wal_checksum(data: bytes, s0: int, s1: int, endian: str) -> tuple[int, int]:
    words = struct.unpack(f"{endian}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


class _Reader:
    def __init__(self, pages: _Pages):
        self.pages = pages
        self.visited: set[int] = set()
        self.result = Salvaged()

    # ---- records -------------------------------------------------------------------------------------------------
    def payload(self, page: bytes, pos: int, size: int, leaf_table: bool) -> bytes:
        """A cell's payload of `size` bytes starting at `pos`, following its overflow chain (fileformat2 1.6)."""
        usable = self.pages.usable
        x = usable - 35 if leaf_table else ((usable - 12) * 64 // 255) - 23
        if size <= x:
            local = size
        else:
            m = ((usable - 12) * 32 // 255) - 23
            k = m + ((size - m) % (usable - 4))
            local = k if k <= x else m
        out = bytearray(page[pos:pos + local])
        if local < size:
            (nxt,) = struct.unpack(">I", page[pos + local:pos + local + 4])
            seen = set()
            while len(out) < size:
                overflow = self.pages.get(nxt)
                if overflow is None or nxt in seen:
                    raise ValueError("overflow chain broken")
                seen.add(nxt)
                self.visited.add(nxt)
                out += overflow[4:4 + min(usable - 4, size - len(out))]
                (nxt,) = struct.unpack(">I", overflow[:4])
        if len(out) != size:
            raise ValueError("payload cut short")
        return bytes(out)

    def record(self, data: bytes) -> list:
        """Decode one record (fileformat2 2.1); raises on anything that does not add up."""
        header_size, pos = _varint(data, 0)
        if header_size > len(data) or header_size < 1:
            raise ValueError("bad record header")
        types = []
        while pos < header_size:
            t, pos = _varint(data, pos)
            types.append(t)
        if pos != header_size:
            raise ValueError("bad record header")
        values, body = [], header_size
        for t in types:
            if t == 0:
                values.append(None)
            elif 1 <= t <= 6:
                n = (1, 2, 3, 4, 6, 8)[t - 1]
                values.append(int.from_bytes(data[body:body + n], "big", signed=True))
                body += n
            elif t == 7:
                values.append(struct.unpack(">d", data[body:body + 8])[0])
                body += 8
            elif t in (8, 9):
                values.append(t - 8)
            elif t >= 12:
                n = (t - 12) // 2
                chunk = data[body:body + n]
                values.append(chunk if t % 2 == 0 else chunk.decode(self.pages.utf))
                body += n
            else:
                raise ValueError("reserved serial type")
        if body != len(data):
            raise ValueError("record length mismatch")
        return values

    # ---- pages ---------------------------------------------------------------------------------------------------
    def cells(self, number: int) -> tuple[int, list[int], bytes] | None:
        """(page type, cell offsets, page bytes) or None when the page does not parse as a b-tree page."""
        page = self.pages.get(number)
        if page is None:
            return None
        base = 100 if number == 1 else 0
        kind = page[base]
        if kind not in (TABLE_INTERIOR, TABLE_LEAF, INDEX_INTERIOR, INDEX_LEAF):
            return None
        count = struct.unpack(">H", page[base + 3:base + 5])[0]
        header = base + (12 if kind in (TABLE_INTERIOR, INDEX_INTERIOR) else 8)
        if header + 2 * count > self.pages.usable:
            return None
        offsets = list(struct.unpack(f">{count}H", page[header:header + 2 * count]))
        return kind, offsets, page

    def walk(self, root: int, table: str, rowid_table: bool) -> None:
        """Every row reachable from `root`, into result.rows[table]."""
        rows = self.result.rows.setdefault(table, [])
        stack, seen = [root], set()
        while stack:
            number = stack.pop()
            if number in seen or number in self.visited:
                continue
            seen.add(number)
            parsed = self.cells(number)
            expected = (TABLE_INTERIOR, TABLE_LEAF) if rowid_table else (INDEX_INTERIOR, INDEX_LEAF)
            if parsed is None or parsed[0] not in expected:
                self.result.bad_pages += 1
                continue
            self.visited.add(number)
            kind, offsets, page = parsed
            base = 100 if number == 1 else 0
            if kind in (TABLE_INTERIOR, INDEX_INTERIOR):
                stack.append(struct.unpack(">I", page[base + 8:base + 12])[0])
            for off in offsets:
                try:
                    if kind == TABLE_INTERIOR:
                        stack.append(struct.unpack(">I", page[off:off + 4])[0])
                    elif kind == TABLE_LEAF:
                        rows.append(self.leaf_row(page, off))
                    else:
                        pos = off
                        if kind == INDEX_INTERIOR:
                            stack.append(struct.unpack(">I", page[off:off + 4])[0])
                            pos += 4
                        size, pos = _varint(page, pos)
                        rows.append((None, self.record(self.payload(page, pos, size, False))))
                except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                    self.result.bad_cells += 1

    def leaf_row(self, page: bytes, off: int) -> tuple[int, list]:
        size, pos = _varint(page, off)
        rowid, pos = _varint(page, pos)
        if rowid >= 1 << 63:
            rowid -= 1 << 64
        return rowid, self.record(self.payload(page, pos, size, True))

    def freelist_pages(self) -> set[int]:
        """Pages on the freelist (their old rows were deleted): never adopted."""
        free: set[int] = set()
        trunk, remaining = self.pages.freelist
        while trunk and trunk not in free and len(free) <= self.pages.count:
            page = self.pages.get(trunk)
            if page is None:
                break
            free.add(trunk)
            nxt, count = struct.unpack(">II", page[:8])
            count = min(count, (self.pages.usable - 8) // 4)
            free.update(struct.unpack(f">{count}I", page[8:8 + 4 * count]))
            trunk = nxt
        return free


def salvage(path: Path, tables: dict[str, tuple[int, bool]], adopt: dict[int, list[str]] | None = None,
            fits: Callable[[str, list], bool] | None = None) -> Salvaged:
    """Rows of `tables` ({name: (column count, has rowid)}) still readable in the file at `path` and its -wal.

    The damaged file's own schema (page 1) gives each table's root page; rows of table leaf pages no walk reached go to
    a table of `adopt[column count]` when given (only rowid tables: an orphan index page cannot be told from a real
    index). Where several tables have that column count, a page's rows go to the one table all of them `fits` (a
    b-tree page holds rows of one table only); a page that fits none or more than one is left out (`ambiguous`), so
    rows of two tables are never merged. Never raises for damage; OSError when the file cannot be opened."""
    pages = _Pages(path)
    try:
        reader = _Reader(pages)
        reader.walk(1, "sqlite_schema", True)
        schema = reader.result.rows.pop("sqlite_schema", [])
        roots = {}
        for _rowid, values in schema:
            if len(values) >= 4 and values[0] == "table" and isinstance(values[3], int) and values[3] > 0:
                roots[values[1]] = values[3]
        reader.result.schema_found = bool(roots)
        for name, (_ncols, rowid_table) in tables.items():
            reader.result.rows.setdefault(name, [])
            if name in roots:
                reader.walk(roots[name], name, rowid_table)
        if "sqlite_sequence" in roots:
            reader.walk(roots["sqlite_sequence"], "sqlite_sequence", True)
        if adopt:
            free = reader.freelist_pages()
            for number in range(1, pages.count + 1):
                if number in reader.visited or number in free:
                    continue
                parsed = reader.cells(number)
                if parsed is None or parsed[0] != TABLE_LEAF:
                    continue
                _, offsets, page = parsed
                rows = []
                for off in offsets:
                    try:
                        rows.append(reader.leaf_row(page, off))
                    except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                        reader.result.bad_cells += 1
                for count in {len(values) for _rowid, values in rows}:
                    group = [row for row in rows if len(row[1]) == count]
                    candidates = [t for t in adopt.get(count, ())
                                  if fits is None or all(fits(t, values) for _rowid, values in group)]
                    if len(candidates) != 1:
                        reader.result.ambiguous += len(group) if adopt.get(count) else 0
                        continue
                    reader.result.rows[candidates[0]].extend(group)
                    reader.result.adopted += len(group)
        return reader.result
    finally:
        pages.close()
