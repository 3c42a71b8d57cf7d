"""Property tests of the row salvage (agent/statedb/salvage.py) against files SQLite itself wrote.

- Undamaged file (with or without the rows still in the WAL): every row comes back with exactly its values
  (integers of every width, floats, NULL, unicode text, blobs long enough to need overflow pages).
- One page destroyed: nothing comes back that was not stored, and what is lost is bounded by what that page held:
  the cells of a leaf page (SQLite's dbstat counts them), one row for an overflow page, nothing for an interior page
  (its leaves are adopted as orphans) or a page of an index.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.statedb.salvage import salvage

TABLES = {"items": (4, True)}
values = st.one_of(
    st.none(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=6000),  # beyond a page: overflow chains
)
rows_strategy = st.lists(st.tuples(values, values), min_size=1, max_size=300)


def build(path: Path, rows: list[tuple], wal: bool) -> tuple[dict[int, tuple], sqlite3.Connection | None]:
    """rowid -> (a, b, tag) as stored; with wal, the still open connection (closing the last connection would fold
    the WAL into the main file, and the rows must stay in the WAL)."""
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, a, b, tag TEXT NOT NULL)")
    conn.execute("CREATE INDEX items_tag ON items (tag)")
    conn.execute("BEGIN")
    stored = {}
    for i, (a, b) in enumerate(rows, start=1):
        conn.execute("INSERT INTO items (id, a, b, tag) VALUES (?, ?, ?, ?)", (i * 7, a, b, f"t{i}"))
        stored[i * 7] = (a, b, f"t{i}")
    conn.execute("COMMIT")
    if wal:
        return stored, conn
    conn.close()
    return stored, None


def recovered(path: Path) -> dict[int, tuple]:
    found = salvage(path, TABLES, adopt={4: ["items"]})
    out = {}
    for rowid, vals in found.rows["items"]:
        assert rowid not in out or out[rowid] == tuple(vals[1:]), "one rowid, two different rows"
        out[rowid] = tuple(vals[1:])
    return out


def same(a: tuple, b: tuple) -> bool:
    return all((x == y) or (x != x and y != y) for x, y in zip(a, b, strict=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, wal=st.booleans())
def test_an_undamaged_file_gives_back_every_row_exactly(tmp_path, rows, wal):
    path = tmp_path / "t.db"
    stored, conn = build(path, rows, wal)
    try:
        got = recovered(path)
        assert got.keys() == stored.keys()
        assert all(same(got[k], stored[k]) for k in stored)
    finally:
        if conn is not None:
            conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, seed=st.integers(min_value=0, max_value=10 ** 6))
def test_one_destroyed_page_loses_at_most_what_it_held(tmp_path, rows, seed):
    path = tmp_path / "t.db"
    stored, _ = build(path, rows, wal=False)
    conn = sqlite3.connect(path)
    pages = conn.execute("SELECT pageno, name, pagetype, ncell FROM dbstat").fetchall()
    conn.close()
    if not pages:
        return
    rng = random.Random(seed)
    pageno, name, kind, ncell = rng.choice(pages)
    with open(path, "r+b") as f:
        f.seek((pageno - 1) * 4096)
        f.write(bytes([0xF7]) + bytes(rng.randrange(256) for _ in range(4095)))

    got = recovered(path)
    assert all(k in stored and same(got[k], stored[k]) for k in got), "a row that was never stored"
    lost = len(stored) - len(got)
    if name == "items" and kind == "leaf":
        assert lost <= ncell
    elif name == "items" and kind == "overflow":
        assert lost <= 1
    else:  # an interior page of the table, the index or the schema (page 1): every row is still readable
        assert lost == 0, (name, kind)
