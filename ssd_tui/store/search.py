"""Search samples by text: `ssd-tui search RUN.db "while True"` and the app's search screen.

A full-text index (SQLite FTS5, built with sqlite-utils' ``enable_fts``) over every sample's
completion and tested program. It lives in a sidecar file beside the run DB
(``RUN_DIR/run.search.db``; in ``~/.cache/ssd-tui/search/`` when that folder is not
writable, e.g. an export under review) and is brought up to date at each search: samples
are only ever appended (ids grow), so catching up indexes the rows with an id above the
last indexed one. The engine therefore pays nothing per sample; the first search of a run
pays for its samples once (benchmarks/bench_search.py measures both ways). The run DB is
only read, so a search runs beside a live engine, on exports, and on read-only files.

A query is literal text by default: FTS5 finds the samples holding its words as a
phrase, then only those that contain the exact text (case-sensitive) are kept, so
``while True`` does not match ``while true_value``. ``fts=True`` takes an FTS5 query as it
is (``while NOT break``, ``"for i" OR enumerate``, ``retur*``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from ssd_tui.errors import SSDError
from ssd_tui.store.run_store import RunStore

_CHUNK = 5000
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Hit:
    """One matching sample, with what the search list shows."""

    db: Path
    sample_id: int
    round: int
    purpose: str
    temperature: float
    problem: str
    problem_id: int
    sample_idx: int
    status: str | None
    line: str  # the first line holding the match
    run: str = ""


#: A hits table's columns as the app and `ssd-tui search` both show them: (name, width),
#: after a "run" column when the hits come from several runs.
HIT_COLUMNS = (
    ("id", 7),
    ("round", 5),
    ("purpose", 7),
    ("T", 4),
    ("problem", 22),
    ("verdict", 8),
    ("line", 60),
)
RUN_COLUMN = ("run", 28)


def hit_cells(hit: Hit, with_run: bool) -> list[str]:
    """One hit's row, column by column (HIT_COLUMNS, after RUN_COLUMN ``with_run``)."""
    return ([hit.run] if with_run else []) + [
        str(hit.sample_id),
        str(hit.round),
        hit.purpose,
        f"{hit.temperature:g}",
        f"{hit.problem}[{hit.sample_idx}]",
        hit.status or "–",
        hit.line,
    ]


def index_path(db: Path) -> Path:
    db = Path(db).resolve()
    if os.access(db.parent, os.W_OK):
        return db.with_name(db.stem + ".search.db")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ssd-tui" / "search"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / (hashlib.sha1(str(db).encode()).hexdigest()[:16] + ".search.db")


def _source_id(store: RunStore) -> str:
    """What ties an index to its run DB: the DB's creation time (a replaced DB differs)."""
    return store.meta("created_at") or ""


def _open_index(path: Path, source: str) -> sqlite_utils.Database:
    idx = sqlite_utils.Database(path)
    meta = idx["meta"]
    if meta.exists():
        row = next(meta.rows_where("key = 'source'"), None)
        if row is None or row["value"] != source:
            idx.close()
            path.unlink()
            idx = sqlite_utils.Database(path)
    if not idx["samples"].exists():
        idx.execute("PRAGMA journal_mode=WAL")
        idx["meta"].insert({"key": "source", "value": source}, pk="key", replace=True)
        idx["samples"].create({"id": int, "completion": str, "code": str}, pk="id")
        # Kept in sync with the sidecar's own table by triggers; nothing touches the run DB.
        idx["samples"].enable_fts(["completion", "code"], create_triggers=True)
    return idx


def sync_index(db: Path) -> tuple[Path, int]:
    """Index the run's samples not indexed yet; returns (index file, samples added)."""
    path = index_path(db)
    store = RunStore.open(db, readonly=True)
    try:
        idx = _open_index(path, _source_id(store))
        try:
            last = idx.execute("SELECT IFNULL(MAX(id), 0) FROM samples").fetchone()[0]
            top = store.conn.execute("SELECT IFNULL(MAX(id), 0) FROM samples").fetchone()[0]
            if last > top:  # not this DB's index after all: start over
                idx.close()
                path.unlink()
                idx = _open_index(path, _source_id(store))
                last = 0
            added = 0
            while True:
                rows = store.conn.execute(
                    "SELECT id, completion, IFNULL(code, '') FROM samples WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (last, _CHUNK),
                ).fetchall()
                if not rows:
                    break
                with idx.conn:
                    idx["samples"].insert_all(
                        ({"id": r[0], "completion": r[1], "code": r[2]} for r in rows),
                        batch_size=1000,
                    )
                last, added = rows[-1][0], added + len(rows)
        finally:
            idx.close()
    finally:
        store.close()
    return path, added


def _phrase(query: str) -> str:
    return '"' + query.replace('"', '""') + '"'


def _first_line(text: str, needle: str | None, words: list[str]) -> str:
    for line in text.splitlines():
        if needle is not None and needle in line:
            return line.strip()
        if needle is None and any(w.lower() in line.lower() for w in words):
            return line.strip()
    return text.strip().splitlines()[0] if text.strip() else ""


def search(
    db: Path,
    query: str,
    *,
    fts: bool = False,
    limit: int = 200,
    rnd: int | None = None,
    purpose: str | None = None,
    status: str | None = None,
) -> tuple[list[Hit], int]:
    """Samples matching `query`, in key order (round, …); returns (hits up to limit, total)."""
    query = query.strip("\n")
    if not query.strip():
        raise SSDError("the search text is empty")
    words = _WORD.findall(query)
    if not fts and not words:
        raise SSDError(
            f"search {query!r}: give at least one word or number (punctuation alone is not indexed)"
        )
    path, _ = sync_index(db)
    idx = sqlite3.connect(path)
    try:
        match = query if fts else _phrase(query)
        q = "SELECT s.id FROM samples_fts JOIN samples s ON s.rowid = samples_fts.rowid WHERE samples_fts MATCH ?"
        args: list[Any] = [match]
        if not fts:
            q += " AND (instr(s.completion, ?) > 0 OR instr(s.code, ?) > 0)"
            args += [query, query]
        try:
            ids = [r[0] for r in idx.execute(q + " ORDER BY s.id", args)]
        except sqlite3.OperationalError as e:
            raise SSDError(f"search {query!r}: not a valid FTS5 query ({e})") from None
    finally:
        idx.close()
    hits = _details(db, ids, query if not fts else None, words)
    hits = [
        h
        for h in hits
        if (rnd is None or h.round == rnd)
        and (purpose is None or h.purpose == purpose)
        and (status is None or (h.status or "untested") == status)
    ]
    return hits[:limit], len(hits)


def _details(db: Path, ids: list[int], needle: str | None, words: list[str]) -> list[Hit]:
    if not ids:
        return []
    store = RunStore.open(db, readonly=True)
    try:
        out = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in store.conn.execute(
                "SELECT s.id, s.round, s.purpose, s.temperature, s.problem_id, s.sample_idx, "
                "s.completion, s.code, p.name, v.status FROM samples s "
                "JOIN problems p ON p.id = s.problem_id LEFT JOIN verdicts v ON v.sample_id = s.id "
                f"WHERE s.id IN ({marks})",
                chunk,
            ):
                text = r["completion"] if needle is None or needle in r["completion"] else r["code"]
                out.append(
                    Hit(
                        Path(db),
                        r["id"],
                        r["round"],
                        r["purpose"],
                        r["temperature"],
                        r["name"],
                        r["problem_id"],
                        r["sample_idx"],
                        r["status"],
                        _first_line(text or "", needle, words),
                    )
                )
    finally:
        store.close()
    out.sort(key=lambda h: (h.round, h.purpose, h.temperature, h.problem_id, h.sample_idx))
    return out


def search_many(
    dbs: list[tuple[Path, str]], query: str, *, limit: int = 200, **kw: Any
) -> tuple[list[Hit], int]:
    """Search several runs (a sweep): hits labelled with their run, run by run."""
    hits: list[Hit] = []
    total = 0
    for db, label in dbs:
        found, n = search(db, query, limit=limit, **kw)
        for h in found:
            h.run = label
        hits += found
        total += n
    return hits[:limit], total
