"""Every sample as one flat row, its problem and verdict joined: what a JSONL export writes
(ssd_tui/outputs/export.py describes each field in ``JSONL_FIELDS``)."""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Iterator
from typing import Any

from ssd_tui.store.run_store import RunStore

#: Field -> SQL expression, in the order a row holds them (sample_id first).
FLAT_SAMPLE_SQL: dict[str, str] = {
    "sample_id": "s.id",
    "round": "s.round",
    "purpose": "s.purpose",
    "problem_id": "s.problem_id",
    "problem": "p.name",
    "difficulty": "p.difficulty",
    "problem_source": "p.source",
    "prompt": "p.prompt",
    "completion": "s.completion",
    "code": "s.code",
    "sample_idx": "s.sample_idx",
    "temperature": "s.temperature",
    "top_k": "s.top_k",
    "top_p": "s.top_p",
    "min_p": "s.min_p",
    "n_tokens": "s.n_tokens",
    "logprob_sum": "s.logprob_sum",
    "mean_entropy": "s.mean_entropy",
    "mean_tail_mass": "s.mean_tail_mass",
    "finish_reason": "s.finish_reason",
    "verdict": "v.status",
    "verdict_message": "v.message",
    "verdict_duration_s": "v.duration_s",
    "verdict_suspect": "v.suspect",  # "NULL" in files from before schema 3 (_fields)
}
_FROM = (
    "FROM samples s JOIN problems p ON p.id = s.problem_id "
    "LEFT JOIN verdicts v ON v.sample_id = s.id"
)
_ORDER = "ORDER BY s.round, s.purpose, s.temperature, s.problem_id, s.sample_idx"


def flat_samples(store: RunStore, rnd: int | None = None) -> Iterator[sqlite3.Row]:
    """Rows of FLAT_SAMPLE_SQL's fields, of one round or of the whole run: the witnesses
    (`witness_ids`) first, then the rest in key order.

    The queries run before this returns; call it inside ``store.read_snapshot()`` so that
    the witnesses and the rows come from the same snapshot.
    """
    fields = _fields(store)
    where, args = ("WHERE s.round = ?", (rnd,)) if rnd is not None else ("", ())
    select = ", ".join(f"{e} AS {n}" for n, e in fields.items())
    conn = store.conn
    first = witness_ids(conn, fields, where, args)
    head = conn.execute(
        f"SELECT {select} {_FROM} WHERE s.id IN ({','.join('?' * len(first))}) {_ORDER}", first
    )
    rest = conn.execute(f"SELECT {select} {_FROM} {where} {_ORDER}", args)
    skip = set(first)
    return itertools.chain(head, (r for r in rest if r[0] not in skip))


def _fields(store: RunStore) -> dict[str, str]:
    """FLAT_SAMPLE_SQL for this file: a column its schema lacks (an older run, read-only)
    reads as null."""
    return {**FLAT_SAMPLE_SQL, "verdict_suspect": store.suspect_sql()}


def _missing(v: Any) -> bool:
    """Null as written: JSON has no NaN or infinity, so those are written as null too."""
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def witness_ids(
    conn: sqlite3.Connection, fields: dict[str, str], where: str, args: tuple
) -> list[int]:
    """Samples to write first so that every field that is ever non-null is non-null early.

    Readers infer column types from the first lines (🤗 Datasets: the first 10 MB); a
    field that is null there and a string later (verdict_message when the first samples
    all passed) fails to load. When the first sample in key order lacks a field that some
    other sample has, that other sample goes first: at most one per field, usually none.
    """
    select = ", ".join(f"{e} AS {n}" for n, e in fields.items())
    first = conn.execute(f"SELECT {select} {_FROM} {where} {_ORDER} LIMIT 1", args)
    row = first.fetchone()
    if row is None:
        return []
    missing = [n for n, v in zip(fields, row, strict=True) if _missing(v)]
    if not missing:
        return []

    def present(expr: str) -> str:  # non-null once written (infinities are written as null)
        return f"{expr} IS NOT NULL AND {expr} NOT IN (9e999, -9e999)"

    agg = ", ".join(f"MIN(CASE WHEN {present(fields[n])} THEN s.id END)" for n in missing)
    found = conn.execute(f"SELECT {agg} {_FROM} {where}", args).fetchone()
    return sorted({i for i in found if i is not None})
