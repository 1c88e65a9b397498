"""Copies of a run database for a SQLite export: a consistent snapshot of a live run, one
round of it, and the export's own facts and descriptions.

``ssd_tui/outputs/export.py`` decides where the files go and what they say; this module
holds the SQL that fills them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssd_tui.store.run_store import RunStore

#: The table an export adds: what each table and column of the file means.
DESCRIPTIONS_TABLE = "descriptions"


@contextlib.contextmanager
def open_copy(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a new copy: autocommit, no journal and no fsync, as the copy is a
    temporary file renamed into place when complete."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        yield conn
    finally:
        conn.close()


def snapshot(store: RunStore, conn: sqlite3.Connection) -> str | None:
    """Copy the whole run database into ``conn``; return what is damaged in it, None when
    it is intact.

    One backup step (pages=-1) copies every page under a single read transaction: a
    consistent snapshot of the live run. A truncated or damaged file can open and copy fine,
    so the copy is checked.
    """
    store.conn.backup(conn, pages=-1)
    first = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if first == "ok":
        return None
    return next((ln for ln in first.splitlines() if ln and not ln.startswith("***")), first)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def copy_round(conn: sqlite3.Connection, snap: Path, rnd: int) -> None:
    """Fill ``conn`` with round ``rnd`` of the snapshot at ``snap``, with the snapshot's schema."""
    c = conn
    c.execute("ATTACH DATABASE ? AS snap", (str(snap),))
    objects = c.execute(
        "SELECT type, name, sql FROM snap.sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    tables = [name for typ, name, _ in objects if typ == "table"]
    c.execute("BEGIN")
    for typ, _, sql in objects:
        if typ == "table":
            c.execute(sql)
    # samples first: the other tables are selected by the samples kept.
    for table in sorted(tables, key=lambda t: t != "samples"):
        cols = {r[1] for r in c.execute(f"PRAGMA snap.table_info({_q(table)})")}
        if table == "samples":
            where = "WHERE round = :r"
        elif table == "problems":
            where = "WHERE id IN (SELECT problem_id FROM main.samples)"
        elif "sample_id" in cols:
            where = "WHERE sample_id IN (SELECT id FROM main.samples)"
        elif table in ("notes", "tags"):  # the round's and the whole run's
            where = "WHERE round = :r OR round IS NULL"
        elif "round" in cols:
            where = "WHERE round = :r"
        else:
            where = ""  # meta, runs: the whole table
        c.execute(
            f"INSERT INTO main.{_q(table)} SELECT * FROM snap.{_q(table)} {where}", {"r": rnd}
        )
    for typ, _, sql in objects:
        if typ != "table":  # indexes, views, triggers: after the data
            c.execute(sql)
    c.execute("COMMIT")
    c.execute("DETACH DATABASE snap")


def stamp_export(
    conn: sqlite3.Connection,
    facts: dict[str, str],
    descriptions: dict[str, tuple[str, dict[str, str]]],
) -> dict[str, Any]:
    """Write the export's ``meta`` keys (``facts``) and the descriptions table (table ->
    (what a row is, {column: description}), for the tables the file has), and make the copy
    a one-file database.

    Returns what the file says about itself: run, model, schema_version, tables.
    """
    c = conn
    # A backup of a WAL database is a WAL database; an export is one self-contained file.
    c.execute("PRAGMA journal_mode=DELETE")
    c.execute("BEGIN")
    c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", facts.items())
    c.execute(f"DROP TABLE IF EXISTS {DESCRIPTIONS_TABLE}")
    c.execute(
        f"CREATE TABLE {DESCRIPTIONS_TABLE} (\n"
        "  table_name TEXT NOT NULL,\n"
        "  column_name TEXT NOT NULL,                       -- '' = the table itself\n"
        "  description TEXT NOT NULL,\n"
        "  PRIMARY KEY (table_name, column_name)\n)"
    )
    present = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = []
    for table, (what, columns) in descriptions.items():
        if table in present:
            rows.append((table, "", what))
            rows += [(table, col, d) for col, d in columns.items()]
    c.executemany(f"INSERT INTO {DESCRIPTIONS_TABLE} VALUES (?, ?, ?)", rows)
    c.execute("COMMIT")
    run = c.execute("SELECT name, model FROM runs WHERE id = 1").fetchone() or ("?", "?")
    version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return {
        "run": run[0],
        "model": run[1],
        "schema_version": version[0] if version else "?",
        "tables": present,
    }
