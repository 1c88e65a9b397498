"""The run database: one SQLite file per run, the one interface between engine and UI.

Plain, well-indexed tables any SQLite client can read (see docs/store.md). The engine
writes in small transactions (one generation or test batch each), so a kill -9
loses at most the batch in flight; natural keys make every write idempotent.
Per-token statistics are packed little-endian arrays (int32 ids, float32 values).
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssd_tui.errors import SSDError
from ssd_tui.store import schema
from ssd_tui.store.schema import PROBE_BLOBS, SCHEMA_VERSION

#: A tag: 1-64 characters, no spaces or commas (they separate tags in exports and lists).
TAG_RE = re.compile(r"[^\s,]{1,64}")


def pack(values: Sequence[float] | Sequence[int], dtype: str = "<f4") -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


def unpack(blob: bytes | None, dtype: str = "<f4") -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=dtype)


@dataclass
class SampleRow:
    """One sample to write; token arrays may be empty (e.g. the vLLM fake)."""

    round: int
    purpose: str
    problem_id: int
    sample_idx: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    completion: str
    code: str | None
    finish_reason: str
    token_ids: Sequence[int]
    logprobs: Sequence[float]
    entropies: Sequence[float]
    tail_mass: Sequence[float]
    # The fork/lock probe's extras, where recorded (round 0's eval samples): empty otherwise.
    top1: Sequence[float] = ()
    train_tail_mass: Sequence[float] = ()


#: The token_stats columns a sample's statistics are written to, in order.
_TOKEN_STATS_INSERT = (
    "INSERT INTO token_stats (sample_id, token_ids, logprobs, entropies, tail_mass, top1, "
    "train_tail_mass) VALUES (?,?,?,?,?,?,?)"
)


def _optional(values: Sequence[float] | None) -> bytes | None:
    """A packed array, or NULL for one that was not recorded."""
    return pack(values) if values is not None and len(values) else None


#: The columns of a sample another run's round lends (``import_eval_rows``), in order.
_COPIED_SAMPLE_COLUMNS = (
    "sample_idx",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "completion",
    "code",
    "n_tokens",
    "logprob_sum",
    "mean_entropy",
    "mean_tail_mass",
    "finish_reason",
    "created_at",
)


def _sqlite_header(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


class RunStore:
    """A run database. Open with `RunStore.open(path)`; one writer (the engine), many readers."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool):
        self.conn = conn
        self.path = path
        self.readonly = readonly

    @functools.cached_property
    def db(self) -> Any:
        """sqlite-utils' `Database` on this connection, made on first use: importing
        sqlite-utils imports pandas where it is installed, 1-2 s of every app start
        for an object nothing opened by the app uses (benchmarks/bench_overlay.py)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    # ---- opening --------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, create: bool = False, readonly: bool = False) -> RunStore:
        p = Path(path)
        if not p.exists() and not create:
            raise SSDError(f"run database not found: {p}")
        if p.exists() and p.is_dir():
            raise SSDError(f"{p} is a folder, not a run database")
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            conn = _connect(p, readonly)
            store = cls(conn, p, readonly)
            store._setup(create and not readonly)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            # The header is read only now, when SQLite could not: closing another descriptor
            # of a database file drops every POSIX lock this process holds on it, those of
            # its other connections too (a dashboard's, while the app lists the runs beside
            # it), and an engine ending meanwhile would then checkpoint and delete the WAL
            # under them ("database disk image is malformed"; sqlite.org/howtocorrupt.html
            # §2.2). A file that is no database fails SQLite's first read, before any write.
            if p.stat().st_size > 0 and not _sqlite_header(p):
                raise SSDError(f"{p} is not an SQLite database") from None
            raise SSDError(
                f"{p}: cannot read the database ({e}); the file may be truncated or damaged"
            ) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return store

    def _setup(self, create: bool) -> None:
        c = self.conn
        if not self.readonly:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=30000")
        if not schema.has_table(c, "meta"):
            if not create:
                raise SSDError(f"{self.path} is not an ssd-tui run database (no meta table)")
            with self.transaction():
                schema.create(c)
                c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT INTO meta VALUES ('created_at', ?)", (str(time.time()),))
            return
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SSDError(
                f"{self.path} was written by a newer ssd-tui (schema {version}; this version reads "
                f"up to {SCHEMA_VERSION}): upgrade ssd-tui to open it"
            )
        if version < 1:
            raise SSDError(
                f"{self.path} has no valid schema version; it is not an ssd-tui run database"
            )
        if version < SCHEMA_VERSION and not self.readonly:
            with self.transaction():
                schema.migrate(c, from_version=version)
                c.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                )

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: a batch lands whole or not at all."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    @contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed snapshot, however
        much the engine writes meanwhile."""
        c = self.conn
        c.execute("BEGIN")
        try:
            yield c
        finally:
            if c.in_transaction:
                c.execute("ROLLBACK")

    # ---- run and config -------------------------------------------------------------
    def init_run(
        self, name: str, model: str, config_json: str, config_toml: str, base_dir: str
    ) -> None:
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM runs").fetchone() is None:
                c.execute(
                    "INSERT INTO runs (id, name, model, config_toml, config_json, base_dir, created_at) VALUES (1,?,?,?,?,?,?)",
                    (name, model, config_toml, config_json, base_dir, time.time()),
                )

    def run_info(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id=1").fetchone()
        return dict(row) if row else None

    def update_config(self, config_json: str, config_toml: str, base_dir: str) -> None:
        """The config a resumed run was started with; ``base_dir`` is the folder its
        relative paths resolve against (they are stored as written)."""
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET config_json=?, config_toml=?, base_dir=? WHERE id=1",
                (config_json, config_toml, base_dir),
            )

    def rename(self, name: str) -> None:
        """The run's name as listed (runs.name), e.g. after its folder was set aside."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET name=? WHERE id=1", (name,))

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_meta(self, values: dict[str, str]) -> None:
        """Several meta keys in one transaction."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def add_config_history(
        self,
        event: str,
        config_toml: str,
        config_json: str,
        environment: str,
        meta: dict[str, str],
    ) -> None:
        """Append a start or resume to config_history and write ``meta`` keys, in one
        transaction (the record of a run's start: runs/record.py)."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO config_history (ts, event, config_toml, config_json, environment) "
                "VALUES (?,?,?,?,?)",
                (time.time(), event, config_toml, config_json, environment),
            )
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())

    def config_history(self) -> list[dict[str, Any]]:
        """Every start and resume, oldest first ([] for a database from before the record)."""
        if not self._has_table("config_history"):
            return []
        return [dict(r) for r in self.conn.execute("SELECT * FROM config_history ORDER BY id")]

    # ---- rounds and stages ------------------------------------------------------------
    def plan_round(self, rnd: int, stages: Sequence[str]) -> None:
        """Create the round's row and its stages (idempotent)."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO rounds (round) VALUES (?)", (rnd,))
            for i, s in enumerate(stages):
                c.execute(
                    "INSERT OR IGNORE INTO stages (round, stage, position) VALUES (?,?,?)",
                    (rnd, s, i),
                )

    def stage(self, rnd: int, stage: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM stages WHERE round=? AND stage=?", (rnd, stage)
        ).fetchone()
        return dict(row) if row else None

    def start_stage(self, rnd: int, stage: str, total: int, detail: str = "") -> None:
        now = time.time()
        with self.transaction() as c:
            c.execute(
                "UPDATE rounds SET status='running', started_at=COALESCE(started_at, ?) WHERE round=?",
                (now, rnd),
            )
            c.execute(
                "UPDATE stages SET status='running', total=?, detail=?, started_at=? WHERE round=? AND stage=?",
                (total, detail, now, rnd, stage),
            )

    def progress(
        self, rnd: int, stage: str, done: int, total: int | None = None, detail: str | None = None
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE stages SET done=?, total=COALESCE(?, total), detail=COALESCE(?, detail) WHERE round=? AND stage=?",
                (done, total, detail, rnd, stage),
            )

    def end_stage(self, rnd: int, stage: str, status: str) -> None:
        """Close a stage as done, stopped or failed, adding the time spent to its total."""
        now = time.time()
        with self.transaction() as c:
            c.execute(
                "UPDATE stages SET status=?, finished_at=?, seconds = seconds + (? - COALESCE(started_at, ?)) "
                "WHERE round=? AND stage=?",
                (status, now, now, now, rnd, stage),
            )
            if status == "done":
                left = c.execute(
                    "SELECT COUNT(*) FROM stages WHERE round=? AND status!='done'", (rnd,)
                ).fetchone()[0]
                if left == 0:
                    c.execute(
                        "UPDATE rounds SET status='done', finished_at=? WHERE round=?", (now, rnd)
                    )

    def set_adapter(self, rnd: int, path: str, sha256: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE rounds SET adapter_path=?, adapter_sha256=? WHERE round=?",
                (path, sha256, rnd),
            )

    def rounds(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM rounds ORDER BY round")]

    # ---- what each round's model is and what it learnt from (schema 5, docs/rounds.md) ----
    def set_round_base(self, rnd: int, base_path: str | None) -> None:
        """Round ``rnd``'s model is its adapter on the weights in ``base_path`` (None: the
        run's [model] path; relative: inside the run folder)."""
        with self.transaction() as c:
            c.execute("UPDATE rounds SET base_path=? WHERE round=?", (base_path, rnd))

    def set_round_source(self, rnd: int, source_round: int) -> None:
        """Round ``rnd`` draws its training samples from round ``source_round``'s model."""
        with self.transaction() as c:
            c.execute("UPDATE rounds SET source_round=? WHERE round=?", (source_round, rnd))

    def add_decision(
        self,
        rnd: int,
        action: str,
        rule: str | None,
        next_source: int | None,
        message: str,
        evidence: dict[str, Any],
    ) -> dict[str, Any]:
        """Store what [control] decided after round ``rnd``, with its event, in one
        transaction; a decision already stored for the round is kept (a rerun makes none
        anew) and returned."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO decisions (round, action, rule, next_source, message, "
                "evidence, created_at) VALUES (?,?,?,?,?,?,?)",
                (rnd, action, rule, next_source, message, json.dumps(evidence), time.time()),
            )
            if cur.rowcount:
                level = "info" if action == "continue" else "warning"
                c.execute(
                    "INSERT INTO events (ts, round, stage, level, message) VALUES (?,?,?,?,?)",
                    (time.time(), rnd, "control", level, message),
                )
        decision = self.decision(rnd)
        assert decision is not None
        return decision

    def decision(self, rnd: int) -> dict[str, Any] | None:
        """What [control] decided after round ``rnd`` (None: nothing was decided)."""
        return next((d for d in self.decisions() if d["round"] == rnd), None)

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision, by round, evidence parsed ([] in a file from before schema 5)."""
        if not self._has_table("decisions"):
            return []
        out = []
        for r in self.conn.execute("SELECT * FROM decisions ORDER BY round"):
            d = dict(r)
            d["evidence"] = json.loads(d["evidence"])
            out.append(d)
        return out

    def set_train_set(self, rnd: int, sample_ids: Sequence[int]) -> None:
        """The samples round ``rnd``'s adapter trains on (replaced whole, one transaction)."""
        with self.transaction() as c:
            c.execute("DELETE FROM train_sets WHERE round=?", (rnd,))
            c.executemany(
                "INSERT INTO train_sets (round, sample_id) VALUES (?,?)",
                [(rnd, sid) for sid in sample_ids],
            )

    def train_set(self, rnd: int) -> dict[int, int]:
        """sample id -> the round it was sampled in, of round ``rnd``'s training set."""
        if not self._has_table("train_sets"):
            return {}
        q = (
            "SELECT t.sample_id, s.round FROM train_sets t JOIN samples s ON s.id = t.sample_id "
            "WHERE t.round=? ORDER BY t.sample_id"
        )
        return {r[0]: r[1] for r in self.conn.execute(q, (rnd,))}

    def rounds_of_samples(self, sample_ids: Sequence[int]) -> dict[int, int]:
        """round -> how many of these samples were drawn in it."""
        out: dict[int, int] = {}
        for i in range(0, len(sample_ids), 500):  # SQLite's limit on bound parameters
            chunk = list(sample_ids[i : i + 500])
            q = (
                f"SELECT round, COUNT(*) FROM samples WHERE id IN ({','.join('?' * len(chunk))}) "
                "GROUP BY round"
            )
            for r, n in self.conn.execute(q, chunk):
                out[r] = out.get(r, 0) + n
        return out

    def eval_rows(self, rnd: int, temperature: float) -> list[dict[str, Any]]:
        """A round's eval samples at one temperature, every stored column with the problem's
        name, token statistics (packed) and verdict: what ``import_eval_rows`` copies."""
        q = (
            "SELECT s.*, p.name AS problem, t.token_ids, t.logprobs, t.entropies, "
            "t.tail_mass AS tails, v.status, v.message, v.duration_s, "
            f"{self.suspect_sql()} AS suspect FROM samples s "
            "JOIN problems p ON p.id = s.problem_id JOIN token_stats t ON t.sample_id = s.id "
            "LEFT JOIN verdicts v ON v.sample_id = s.id "
            "WHERE s.round=? AND s.purpose='eval' AND s.temperature=? ORDER BY s.id"
        )
        return [dict(r) for r in self.conn.execute(q, (rnd, temperature))]

    def import_eval_rows(
        self,
        rnd: int,
        stage: str,
        rows: Sequence[dict[str, Any]],
        problem_ids: dict[str, int],
        source: dict[str, Any],
    ) -> int:
        """Write another run's eval samples (``eval_rows``) as round ``rnd``'s, byte for
        byte (text, tokens, statistics, verdicts), and mark ``stage`` as reused from
        ``source`` (``stages.reused_from``, JSON), in one transaction; a sample whose key
        exists is skipped. Returns how many were written."""
        written = 0
        with self.transaction() as c:
            c.execute(
                "UPDATE stages SET reused_from=? WHERE round=? AND stage=?",
                (json.dumps(source, sort_keys=True), rnd, stage),
            )
            for r in rows:
                cur = c.execute(
                    "INSERT OR IGNORE INTO samples (round, purpose, problem_id, sample_idx, "
                    "temperature, top_k, top_p, min_p, completion, code, n_tokens, logprob_sum, "
                    "mean_entropy, mean_tail_mass, finish_reason, created_at) "
                    "VALUES (?,'eval',?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        rnd,
                        problem_ids[r["problem"]],
                        *(r[k] for k in _COPIED_SAMPLE_COLUMNS),
                    ),
                )
                if cur.rowcount == 0:
                    continue
                written += 1
                sid = cur.lastrowid
                # Not the probe's extras: they were recorded under the other run's training
                # truncation, which may differ ([sampling] does not make round 0).
                c.execute(
                    _TOKEN_STATS_INSERT,
                    (sid, r["token_ids"], r["logprobs"], r["entropies"], r["tails"], None, None),
                )
                if r["status"] is not None:
                    c.execute(
                        "INSERT INTO verdicts (sample_id, status, message, duration_s, suspect) "
                        "VALUES (?,?,?,?,?)",
                        (sid, r["status"], r["message"], r["duration_s"], r["suspect"]),
                    )
        return written

    def stages(self, rnd: int | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT * FROM stages"
            + (" WHERE round=?" if rnd is not None else "")
            + " ORDER BY round, position"
        )
        return [dict(r) for r in self.conn.execute(q, (rnd,) if rnd is not None else ())]

    def note_sandbox(self, rnd: int, stage: str, label: str) -> None:
        """Record the isolation that runs a stage's test programs; a stage resumed under
        another one keeps both, in order ("root+cgroup-v1, none")."""
        self._note_stage(rnd, stage, "sandbox", label)

    def note_engine(self, rnd: int, stage: str, label: str) -> None:
        """Record the engine that samples in a stage ("hf", "vllm on cpu"); a stage resumed
        on another engine keeps both, in order."""
        self._note_stage(rnd, stage, "engine", label)

    def _note_stage(self, rnd: int, stage: str, column: str, label: str) -> None:
        with self.transaction() as c:
            row = c.execute(
                f"SELECT {column} FROM stages WHERE round=? AND stage=?", (rnd, stage)
            ).fetchone()
            seen = [x for x in ((row[0] if row else None) or "").split(", ") if x]
            if label not in seen:
                c.execute(
                    f"UPDATE stages SET {column}=? WHERE round=? AND stage=?",
                    (", ".join([*seen, label]), rnd, stage),
                )

    def sandbox_labels(self) -> list[str]:
        """Every isolation that ran test programs in this run, in stage order (none recorded
        in files from before schema 2)."""
        return self._stage_labels("sandbox")

    def engine_labels(self) -> list[str]:
        """Every engine that sampled in this run, in stage order (none in older files)."""
        return self._stage_labels("engine")

    def _stage_labels(self, column: str) -> list[str]:
        if not self.has_column("stages", column):
            return []
        out: list[str] = []
        q = f"SELECT {column} FROM stages WHERE {column} IS NOT NULL ORDER BY round, position"
        for (value,) in self.conn.execute(q):
            out += [x for x in value.split(", ") if x and x not in out]
        return out

    # ---- problems -----------------------------------------------------------------------
    def add_problems(self, purpose: str, problems: Iterable[Any]) -> dict[str, int]:
        """Insert problems once (by purpose and name); return name → row id."""
        with self.transaction() as c:
            for p in problems:
                c.execute(
                    "INSERT OR IGNORE INTO problems (purpose, name, prompt, tests, entry_point, difficulty, source) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (purpose, p.id, p.prompt, p.tests, p.entry_point, p.difficulty, p.source),
                )
        return {
            r["name"]: r["id"]
            for r in self.conn.execute("SELECT id, name FROM problems WHERE purpose=?", (purpose,))
        }

    def problems(self, purpose: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM problems" + (" WHERE purpose=?" if purpose else "") + " ORDER BY id"
        return [dict(r) for r in self.conn.execute(q, (purpose,) if purpose else ())]

    # ---- samples ------------------------------------------------------------------------
    def sample_keys(self, rnd: int, purpose: str, temperature: float) -> set[tuple[int, int]]:
        rows = self.conn.execute(
            "SELECT problem_id, sample_idx FROM samples WHERE round=? AND purpose=? AND temperature=?",
            (rnd, purpose, temperature),
        )
        return {(r[0], r[1]) for r in rows}

    def add_samples(self, rows: Sequence[SampleRow]) -> int:
        """Write a batch of samples and their token statistics in one transaction.

        A sample whose natural key exists already is skipped, so a replayed batch
        never duplicates anything. Returns the number written.
        """
        now = time.time()
        written = 0
        with self.transaction() as c:
            for s in rows:
                n = len(s.token_ids)
                cur = c.execute(
                    "INSERT OR IGNORE INTO samples (round, purpose, problem_id, sample_idx, temperature, top_k, top_p, "
                    "min_p, completion, code, n_tokens, logprob_sum, mean_entropy, mean_tail_mass, finish_reason, "
                    "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        s.round,
                        s.purpose,
                        s.problem_id,
                        s.sample_idx,
                        s.temperature,
                        s.top_k,
                        s.top_p,
                        s.min_p,
                        s.completion,
                        s.code,
                        n,
                        # None, not 0, for tokens stored without log-probs (a vLLM stage's
                        # samples until the exact-statistics pass fills them).
                        float(np.sum(s.logprobs)) if len(s.logprobs) else None,
                        float(np.mean(s.entropies)) if len(s.entropies) else None,
                        float(np.mean(s.tail_mass)) if len(s.tail_mass) else None,
                        s.finish_reason,
                        now,
                    ),
                )
                if cur.rowcount == 0:
                    continue
                written += 1
                c.execute(
                    _TOKEN_STATS_INSERT,
                    (
                        cur.lastrowid,
                        pack(s.token_ids, "<i4"),
                        pack(s.logprobs),
                        pack(s.entropies),
                        pack(s.tail_mass),
                        _optional(s.top1),
                        _optional(s.train_tail_mass),
                    ),
                )
        return written

    def samples(
        self,
        rnd: int | None = None,
        purpose: str | None = None,
        temperature: float | None = None,
        problem_id: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Samples with their verdict and problem name, in key order (paged with limit/offset)."""
        where, args = [], []
        for col, val in (
            ("s.round", rnd),
            ("s.purpose", purpose),
            ("s.temperature", temperature),
            ("s.problem_id", problem_id),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        cond = " WHERE " + " AND ".join(where) if where else ""
        order = " ORDER BY s.round, s.purpose, s.temperature, s.problem_id, s.sample_idx"
        q = (
            "SELECT s.*, p.name AS problem, p.difficulty, v.status, v.message, v.duration_s, "
            f"{self.suspect_sql()} AS suspect FROM samples s "
            "JOIN problems p ON p.id = s.problem_id LEFT JOIN verdicts v ON v.sample_id = s.id"
        )
        if limit is None:
            q += cond + order
        else:
            # The page's ids from the key index alone, then the joins for those rows only: an
            # offset deep into a large run skips index entries, not joined rows (12x faster
            # at the end of 1M samples; benchmarks/bench_store.py).
            q += f" WHERE s.id IN (SELECT s.id FROM samples s{cond}{order} LIMIT ? OFFSET ?){order}"
            args += [limit, offset]
        return [dict(r) for r in self.conn.execute(q, args)]

    def token_stats(self, sample_id: int) -> dict[str, np.ndarray]:
        row = self.conn.execute(
            "SELECT * FROM token_stats WHERE sample_id=?", (sample_id,)
        ).fetchone()
        if row is None:
            return {k: np.zeros(0) for k in ("token_ids", "logprobs", "entropies", "tail_mass")}
        out = {
            "token_ids": unpack(row["token_ids"], "<i4"),
            "logprobs": unpack(row["logprobs"]),
            "entropies": unpack(row["entropies"]),
            "tail_mass": unpack(row["tail_mass"]),
        }
        for extra in ("top1", "train_tail_mass"):  # where recorded (schema 7)
            if extra in row.keys() and row[extra] is not None:
                out[extra] = unpack(row[extra])
        return out

    def probe_ready_samples(self, rnd: int, purpose: str, temperature: float) -> list[dict]:
        """A round's samples at one temperature whose statistics include the probe's extras
        (top-1 and the training truncation's tail), as stored: id, problem_id, completion,
        top_k, top_p, min_p, and the arrays token_ids, logprobs, entropies, tail_mass, top1,
        train_tail_mass. Empty in files from before schema 7."""
        if not self.has_column("token_stats", "top1"):
            return []
        q = (
            "SELECT s.id, s.problem_id, s.completion, s.top_k, s.top_p, s.min_p, t.token_ids, "
            "t.logprobs, t.entropies, t.tail_mass, t.top1, t.train_tail_mass FROM samples s "
            "JOIN token_stats t ON t.sample_id = s.id WHERE s.round=? AND s.purpose=? AND "
            "s.temperature=? AND t.top1 IS NOT NULL AND t.train_tail_mass IS NOT NULL "
            "AND s.mean_entropy IS NOT NULL ORDER BY s.id"
        )
        out = []
        for r in self.conn.execute(q, (rnd, purpose, temperature)):
            row = dict(r)
            row["token_ids"] = unpack(row["token_ids"], "<i4")
            for k in ("logprobs", "entropies", "tail_mass", "top1", "train_tail_mass"):
                row[k] = unpack(row[k])
            out.append(row)
        return out

    # Exact token statistics are filled in after sampling for an engine that does not give
    # them (vLLM, docs/engine.md); nothing in the schema marks it: a sample with tokens and
    # a NULL mean_entropy has not been scored yet.
    def samples_without_stats(
        self, rnd: int, purpose: str, temperature: float | None = None
    ) -> list[dict[str, Any]]:
        """Samples with tokens but no exact statistics (NULL ``mean_entropy``), in id order.

        Each row: id, problem_id, sample_idx, temperature, top_k, top_p, min_p, token_ids
        (int32 array).
        """
        q = (
            "SELECT s.id, s.problem_id, s.sample_idx, s.temperature, s.top_k, s.top_p, s.min_p, "
            "t.token_ids "
            "FROM samples s JOIN token_stats t ON t.sample_id = s.id WHERE s.round=? AND "
            "s.purpose=? AND s.mean_entropy IS NULL AND s.n_tokens > 0"
        )
        args: list[Any] = [rnd, purpose]
        if temperature is not None:
            q += " AND s.temperature=?"
            args.append(temperature)
        rows = []
        for r in self.conn.execute(q + " ORDER BY s.id", args):
            row = dict(r)
            row["token_ids"] = unpack(row["token_ids"], "<i4")
            rows.append(row)
        return rows

    def set_token_stats(self, stats: Sequence[tuple[Any, ...]]) -> int:
        """Write exact statistics in one transaction: per sample (sample id, logprobs,
        entropies, tail_mass), optionally followed by (top1, train_tail_mass), the probe's
        extras (None: not recorded).

        Only samples still without them (NULL ``mean_entropy``) are written, and the arrays
        must match the stored tokens: a replayed batch changes nothing. Returns how many
        were written.
        """
        written = 0
        with self.transaction() as c:
            for sid, logprobs, entropies, tails, *extra in stats:
                n = c.execute(
                    "SELECT n_tokens FROM samples WHERE id=? AND mean_entropy IS NULL", (sid,)
                ).fetchone()
                if n is None:
                    continue
                top1, train_tails = (extra + [None, None])[:2]
                lengths = {
                    len(a) for a in (logprobs, entropies, tails, top1, train_tails) if a is not None
                }
                if lengths != {n[0]}:
                    raise ValueError(f"sample {sid}: statistics do not match its {n[0]} tokens")
                c.execute(
                    "UPDATE samples SET logprob_sum=?, mean_entropy=?, mean_tail_mass=? WHERE id=?",
                    (
                        float(np.sum(np.asarray(logprobs, dtype=np.float64))),
                        float(np.mean(np.asarray(entropies, dtype=np.float64))),
                        float(np.mean(np.asarray(tails, dtype=np.float64))),
                        sid,
                    ),
                )
                c.execute(
                    "UPDATE token_stats SET logprobs=?, entropies=?, tail_mass=?, top1=?, "
                    "train_tail_mass=? WHERE sample_id=?",
                    (
                        pack(logprobs),
                        pack(entropies),
                        pack(tails),
                        _optional(top1),
                        _optional(train_tails),
                        sid,
                    ),
                )
                written += 1
        return written

    def sample_temperatures(self, rnd: int, purpose: str) -> list[float]:
        """The temperatures a round has samples of, for one purpose."""
        q = "SELECT DISTINCT temperature FROM samples WHERE round=? AND purpose=?"
        return [r[0] for r in self.conn.execute(q, (rnd, purpose))]

    def sample_groups(self, rnd: int) -> list[tuple[str, float]]:
        """(purpose, temperature) of each group of a round's samples, sorted."""
        q = (
            "SELECT DISTINCT purpose, temperature FROM samples WHERE round=? "
            "ORDER BY purpose, temperature"
        )
        return [(r[0], r[1]) for r in self.conn.execute(q, (rnd,))]

    def rounds_with_samples(self, purpose: str, up_to: int) -> list[int]:
        """Rounds up to ``up_to`` that have samples of a purpose, in order."""
        q = "SELECT DISTINCT round FROM samples WHERE purpose=? AND round<=? ORDER BY round"
        return [r[0] for r in self.conn.execute(q, (purpose, up_to))]

    def problem_names(self, sample_ids: Sequence[int]) -> list[str]:
        """The names of the problems these samples answer, each once."""
        if not sample_ids:
            return []
        q = (
            "SELECT DISTINCT p.name FROM samples s JOIN problems p ON p.id = s.problem_id "
            f"WHERE s.id IN ({','.join('?' * len(sample_ids))})"
        )
        return [r[0] for r in self.conn.execute(q, list(sample_ids))]

    def count_samples(self, rnd: int, purpose: str, temperature: float | None = None) -> int:
        q = "SELECT COUNT(*) FROM samples WHERE round=? AND purpose=?"
        args: list[Any] = [rnd, purpose]
        if temperature is not None:
            q += " AND temperature=?"
            args.append(temperature)
        return self.conn.execute(q, args).fetchone()[0]

    # ---- verdicts -----------------------------------------------------------------------
    def unjudged(self, rnd: int, temperature: float) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT s.id, s.problem_id, s.code FROM samples s LEFT JOIN verdicts v ON v.sample_id = s.id "
            "WHERE s.round=? AND s.purpose='eval' AND s.temperature=? AND v.sample_id IS NULL ORDER BY s.id",
            (rnd, temperature),
        )
        return [dict(r) for r in rows]

    def add_verdicts(
        self,
        rows: Iterable[tuple[int, str, str, float] | tuple[int, str, str, float, str | None]],
    ) -> None:
        """Write verdicts: (sample id, status, message, duration_s[, suspect]). ``suspect``:
        the comma-separated `ssd_tui.evaluation.suspect` reasons, or None (or "") for a clean program."""
        values = [(*r[:4], (r[4] or None) if len(r) > 4 else None) for r in rows]
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO verdicts (sample_id, status, message, duration_s, suspect) "
                "VALUES (?,?,?,?,?)",
                values,
            )

    def has_column(self, table: str, column: str) -> bool:
        """Whether ``table`` has ``column``: a file of an older schema opened read-only lacks
        what later migrations add (asked each time: its writer may migrate it meanwhile)."""
        return column in schema.columns(self.conn, table)

    def suspect_sql(self, alias: str = "v") -> str:
        """SQL for a verdict's suspect reasons, "NULL" in a file from before schema 3."""
        return f"{alias}.suspect" if self.has_column("verdicts", "suspect") else "NULL"

    def pass_counts(self, rnd: int, temperature: float) -> list[tuple[str, str | None, int, int]]:
        """(problem, difficulty, n, passed) per eval problem of a round, at one temperature."""
        rows = self.conn.execute(
            "SELECT p.name, p.difficulty, COUNT(*) AS n, SUM(v.status='passed') AS c FROM samples s "
            "JOIN problems p ON p.id = s.problem_id JOIN verdicts v ON v.sample_id = s.id "
            "WHERE s.round=? AND s.purpose='eval' AND s.temperature=? GROUP BY s.problem_id ORDER BY s.problem_id",
            (rnd, temperature),
        )
        return [(r[0], r[1], r[2], r[3] or 0) for r in rows]

    # ---- behaviours (docs/analysis.md §1) --------------------------------------------------
    def known_behaviours(self, recorder: int) -> dict[tuple[int, str], tuple[str, str, float]]:
        """(problem id, program key) → (class, detail, duration_s) of every program of the run
        already run by recorder version ``recorder``: what a new sample with the same
        (normalised) program for the same problem takes instead of running again."""
        if not self._has_table("behaviours"):
            return {}
        rows = self.conn.execute(
            "SELECT s.problem_id, b.program, b.class, b.detail, b.duration_s FROM behaviours b "
            "JOIN samples s ON s.id = b.sample_id WHERE b.recorder=? AND b.ran=1",
            (recorder,),
        )
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}

    def add_behaviours(
        self, rows: Iterable[tuple[int, str, str, str | None, int, int, float | None]]
    ) -> None:
        """Write (sample id, program key, class, detail, recorder, ran, duration_s) rows,
        replacing a sample's earlier class (a newer recorder's run)."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO behaviours "
                "(sample_id, program, class, detail, recorder, ran, duration_s) "
                "VALUES (?,?,?,?,?,?,?)",
                list(rows),
            )

    def behaviours(
        self, rnd: int | None = None, temperature: float | None = None, recorder: int | None = None
    ) -> dict[int, dict[str, Any]]:
        """sample id → its behaviour row (``class``, ``detail``, ``ran``, ``duration_s``,
        ``recorder``) for a round's eval samples (every round when None); empty in a file
        from before schema 6."""
        if not self._has_table("behaviours"):
            return {}
        where, args = ["s.purpose='eval'"], []
        for col, val in (
            ("s.round", rnd),
            ("s.temperature", temperature),
            ("b.recorder", recorder),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        rows = self.conn.execute(
            "SELECT b.* FROM behaviours b JOIN samples s ON s.id = b.sample_id WHERE "
            + " AND ".join(where),
            args,
        )
        return {r["sample_id"]: dict(r) for r in rows}

    def behaviour_counts(
        self, temperature: float, recorder: int
    ) -> list[tuple[int, str, str, int]]:
        """(round, problem, class, samples) of every round's eval samples at one temperature:
        each problem's behaviours per round, for the problems × rounds grid."""
        if not self._has_table("behaviours"):
            return []
        rows = self.conn.execute(
            "SELECT s.round, p.name, b.class, COUNT(*) FROM behaviours b "
            "JOIN samples s ON s.id = b.sample_id JOIN problems p ON p.id = s.problem_id "
            "WHERE s.purpose='eval' AND s.temperature=? AND b.recorder=? "
            "GROUP BY s.round, s.problem_id, b.class ORDER BY s.round, s.problem_id",
            (temperature, recorder),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # ---- metrics, training log, events, warnings ---------------------------------------------
    def set_metrics(
        self, rnd: int, purpose: str, temperature: float, values: dict[str, dict[str, float]]
    ) -> None:
        """values: scope → name → value (e.g. {"all": {"pass@1": 0.4}, "hard": {...}})."""
        with self.transaction() as c:
            for scope, named in values.items():
                for name, v in named.items():
                    c.execute(
                        "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?)",
                        (rnd, purpose, temperature, name, scope, None if v is None else float(v)),
                    )

    def metrics(self, purpose: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if purpose:
            where.append("purpose=?")
            args.append(purpose)
        if name:
            where.append("name=?")
            args.append(name)
        q = (
            "SELECT * FROM metrics"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY round, name, scope"
        )
        return [dict(r) for r in self.conn.execute(q, args)]

    def metric(
        self,
        rnd: int,
        name: str,
        purpose: str = "eval",
        temperature: float | None = None,
        scope: str = "all",
    ) -> float | None:
        q = "SELECT value FROM metrics WHERE round=? AND purpose=? AND name=? AND scope=?"
        args: list[Any] = [rnd, purpose, name, scope]
        if temperature is not None:
            q += " AND temperature=?"
            args.append(temperature)
        row = self.conn.execute(q, args).fetchone()
        return None if row is None else row[0]

    def metric_at(self, rnd: int, name: str, purpose: str, temperature: float) -> float | None:
        """A metric of scope 'all' at a temperature, within 1e-6 of it (a float read back from
        a config may differ from the stored one in its last bits)."""
        row = self.conn.execute(
            "SELECT value FROM metrics WHERE round=? AND purpose=? AND name=? AND scope='all' "
            "AND ABS(temperature - ?) < 1e-6",
            (rnd, purpose, name, temperature),
        ).fetchone()
        return None if row is None else row[0]

    def metric_any_temperature(self, rnd: int, name: str, purpose: str) -> float | None:
        """A metric of scope 'all' at the lowest temperature it has in the round."""
        row = self.conn.execute(
            "SELECT value FROM metrics WHERE round=? AND purpose=? AND name=? AND scope='all' "
            "ORDER BY temperature LIMIT 1",
            (rnd, purpose, name),
        ).fetchone()
        return None if row is None else row[0]

    def baseline_pass_rows(self) -> list[tuple[float, str, float | None]]:
        """(temperature, name, value) of round 0's pass@k (scope 'all'), by temperature."""
        rows = self.conn.execute(
            "SELECT temperature, name, value FROM metrics WHERE round=0 AND purpose='eval' "
            "AND scope='all' AND name LIKE 'pass@%' ORDER BY temperature"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def pass_rows(self) -> list[tuple[int, float, str, float | None]]:
        """(round, temperature, name, value) of every round's pass@k (scope 'all'), by round."""
        rows = self.conn.execute(
            "SELECT round, temperature, name, value FROM metrics WHERE purpose='eval' "
            "AND scope='all' AND name LIKE 'pass@%' ORDER BY round"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def metric_rounds(self) -> set[int]:
        """Every round that has a metric."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT round FROM metrics")}

    def clear_analysis(self, rnd: int, names: Sequence[str], probe_too: bool) -> None:
        """Drop what an analyse of a round wrote: its warnings, its train and eval metrics
        called ``names`` (never the evaluate stage's pass@k) and, with ``probe_too``, its
        probe metrics."""
        marks = ",".join("?" * len(names))
        with self.transaction() as c:
            c.execute("DELETE FROM warnings WHERE round=?", (rnd,))
            c.execute(
                "DELETE FROM metrics WHERE round=? AND purpose IN ('train','eval') "
                f"AND name IN ({marks})",
                (rnd, *names),
            )
            if probe_too:
                c.execute("DELETE FROM metrics WHERE round=? AND purpose='probe'", (rnd,))

    def add_train_log(self, rnd: int, history: Sequence[dict[str, float]]) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM train_log WHERE round=?", (rnd,))
            c.executemany(
                "INSERT INTO train_log VALUES (?,?,?,?)",
                [(rnd, int(h["step"]), h.get("loss"), h.get("lr")) for h in history],
            )

    def train_log(self) -> list[tuple[int, int, float | None, float | None]]:
        """(round, step, loss, lr) of every optimiser step, in order."""
        q = "SELECT round, step, loss, lr FROM train_log ORDER BY round, step"
        return [(r[0], r[1], r[2], r[3]) for r in self.conn.execute(q)]

    def log(
        self, message: str, level: str = "info", rnd: int | None = None, stage: str | None = None
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO events (ts, round, stage, level, message) VALUES (?,?,?,?,?)",
                (time.time(), rnd, stage, level, message),
            )

    def events(self, after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [dict(r) for r in rows]

    def add_warning(self, rnd: int, rule: str, message: str, evidence: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO warnings (round, rule, message, evidence, created_at) VALUES (?,?,?,?,?)",
                (rnd, rule, message, json.dumps(evidence, sort_keys=True), time.time()),
            )

    def warnings(self, rnd: int | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT * FROM warnings"
            + (" WHERE round=?" if rnd is not None else "")
            + " ORDER BY round, rule"
        )
        out = []
        for r in self.conn.execute(q, (rnd,) if rnd is not None else ()):
            d = dict(r)
            d["evidence"] = json.loads(d["evidence"]) if d["evidence"] else {}
            out.append(d)
        return out

    # ---- notes and tags (an older file opened read-only may have neither table) ------------
    def _has_table(self, name: str) -> bool:
        return schema.has_table(self.conn, name)

    def _check_annotation(self, rnd: int | None) -> None:
        """Notes and tags go on a run DB, on the run or one of its rounds."""
        if self.meta("export_kind") is not None:
            raise SSDError(
                f"{self.path} is an export (read-only review); add notes and tags to the run DB"
            )
        if rnd is None:
            return
        rounds = [r["round"] for r in self.rounds()]
        if rnd not in rounds:
            have = f"rounds {rounds[0]}–{rounds[-1]}" if rounds else "no rounds yet"
            raise SSDError(f"round {rnd}: this run has {have}")

    def add_note(self, text: str, rnd: int | None = None) -> int:
        """A note on the run (rnd None) or on one round; returns its id. SSDError for an
        empty note, a round the run does not have, or an export (a read-only review)."""
        text = text.strip()
        if not text:
            raise SSDError("the note is empty")
        self._check_annotation(rnd)
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO notes (round, text, created_at) VALUES (?,?,?)",
                (rnd, text, time.time()),
            )
        return int(cur.lastrowid)

    def notes(self, rnd: int | None = None, run_too: bool = True) -> list[dict[str, Any]]:
        """Notes, oldest first: all of them, or one round's (plus the run's when run_too)."""
        if not self._has_table("notes"):
            return []
        if rnd is None:
            q, args = "SELECT * FROM notes ORDER BY id", ()
        else:
            q = "SELECT * FROM notes WHERE round=?" + (" OR round IS NULL" if run_too else "")
            q, args = q + " ORDER BY id", (rnd,)
        return [dict(r) for r in self.conn.execute(q, args)]

    def add_tag(self, tag: str, rnd: int | None = None) -> bool:
        """Tag the run (rnd None) or a round; False when it had the tag already. SSDError
        for a tag that is not 1-64 characters without spaces or commas (the exports' and
        the runs list's separators), a round the run does not have, or an export."""
        if not TAG_RE.fullmatch(tag):
            raise SSDError(f"tag {tag!r}: 1–64 characters, no spaces or commas")
        self._check_annotation(rnd)
        with self.transaction() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO tags (tag, round, created_at) VALUES (?,?,?)",
                (tag, rnd, time.time()),
            )
        return cur.rowcount > 0

    def remove_tag(self, tag: str, rnd: int | None = None) -> bool:
        if not self._has_table("tags"):
            return False
        with self.transaction() as c:
            return (
                c.execute(
                    "DELETE FROM tags WHERE tag=? AND IFNULL(round, -1)=IFNULL(?, -1)", (tag, rnd)
                ).rowcount
                > 0
            )

    def tags(self, rnd: int | None = None, all_rounds: bool = False) -> list[str]:
        """The run's tags (rnd None), one round's, or every tag (all_rounds), sorted."""
        if not self._has_table("tags"):
            return []
        if all_rounds:
            q, args = "SELECT DISTINCT tag FROM tags ORDER BY tag", ()
        else:
            q, args = (
                "SELECT tag FROM tags WHERE IFNULL(round, -1)=IFNULL(?, -1) ORDER BY tag",
                (rnd,),
            )
        return [r[0] for r in self.conn.execute(q, args)]

    def tag_rows(self) -> list[dict[str, Any]]:
        """Every tag row (tag, round, created_at), by tag: a tag on the run and on a round
        is two rows."""
        if not self._has_table("tags"):
            return []
        return [dict(r) for r in self.conn.execute("SELECT * FROM tags ORDER BY tag")]

    # ---- the fork/lock probe (analysis/rounds.py; none in an older file opened read-only) --
    def write_probe(self, rnd: int, scored: dict[int, dict[str, np.ndarray]]) -> None:
        """Replace a round's probe: sample id -> per-token arrays (PROBE_BLOBS). ``offsets``
        may be missing (written as -1, unknown), ``train_tail_mass`` too (written as NULL)."""
        cols = ", ".join(k for k, _ in PROBE_BLOBS)
        marks = ",".join("?" * (len(PROBE_BLOBS) + 2))
        with self.transaction() as c:
            c.execute("DELETE FROM probe_stats WHERE round=?", (rnd,))
            c.executemany(
                f"INSERT INTO probe_stats (round, sample_id, {cols}) VALUES ({marks})",
                [
                    (rnd, sid, *(_probe_blob(s, k, dt) for k, dt in PROBE_BLOBS))
                    for sid, s in scored.items()
                ],
            )

    def probe_stats(
        self, rnd: int, sample_id: int | None = None
    ) -> dict[int, dict[str, np.ndarray]]:
        """sample_id -> per-token arrays of one round's probe (empty when there is none)."""
        if not self._has_table("probe_stats"):
            return {}
        q = "SELECT * FROM probe_stats WHERE round=?"
        args: tuple[int, ...] = (rnd,)
        if sample_id is not None:
            q, args = q + " AND sample_id=?", (rnd, sample_id)
        return {
            r["sample_id"]: {
                k: unpack(r[k], dt) for k, dt in PROBE_BLOBS if k in r.keys() and r[k] is not None
            }
            for r in self.conn.execute(q + " ORDER BY sample_id", args)
        }

    def probe_rounds(self, sample_id: int) -> list[int]:
        """The rounds whose model re-scored this sample (the probe), in order."""
        if not self._has_table("probe_stats"):
            return []
        q = "SELECT round FROM probe_stats WHERE sample_id=? ORDER BY round"
        return [r[0] for r in self.conn.execute(q, (sample_id,))]

    def probe_series(self, sample_id: int) -> dict[int, dict[str, np.ndarray]]:
        """round -> per-token arrays of one probe sample, for drawing it across rounds."""
        return {
            rnd: self.probe_stats(rnd, sample_id)[sample_id] for rnd in self.probe_rounds(sample_id)
        }

    def probe_sample_ids(self, rnd: int) -> set[int]:
        """The samples a round's probe scored."""
        if not self._has_table("probe_stats"):
            return set()
        q = "SELECT sample_id FROM probe_stats WHERE round=?"
        return {r[0] for r in self.conn.execute(q, (rnd,))}

    def data_version(self) -> int:
        """Changes when another connection commits: a cheap poll for readers."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]


def _probe_blob(stats: dict[str, np.ndarray], key: str, dtype: str) -> bytes | None:
    if key in stats:
        return pack(stats[key], dtype)
    if key == "train_tail_mass":
        return None  # a scorer without the training settings
    # Offsets are optional for a scorer: -1 = unknown, one per token.
    return pack(np.full(len(stats["entropies"]), -1), dtype)
