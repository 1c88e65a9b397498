"""Read-only queries the app needs beyond `RunStore` (no textual import here).

Everything in this module runs in thread workers, never on the UI thread. Each
`RunReader` owns one SQLite connection (opened read-only) behind a lock, so a screen
can poll `PRAGMA data_version` on it cheaply: the value changes only when another
connection (the engine) commits.

Queries that stay fast on a run with a million samples (see
benchmarks/bench_tui_queries.py for the plans and timings):

* rounds table: per-round `COUNT(*)` over the samples key index (a range scan per
  round; finished rounds are cached), stages and metrics by primary key;
* sample pages: ids first, from the covering key index (or `samples_problem` for one
  problem), with LIMIT/OFFSET; then the page's few rows by rowid.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_tui.config import RunConfig, config_from_json, dump_toml, load_config, toml_value
from ssd_tui.errors import SSDError
from ssd_tui.runs.runner import engine_pid
from ssd_tui.store.run_store import RunStore, unpack

# Metric names tried (in order) for the rounds table's "diversity" column.
DIVERSITY_METRICS = ("distinct_2", "unique_share")
DIFFICULTY_ORDER = ("easy", "medium", "hard")
# Samples with a flagged verdict (store.py writes NULL for a clean one; "" from another writer
# counts as clean too). Asked as a list of ids from the partial index verdicts_suspect: as a
# join, SQLite walks every sample instead (36 ms against 0.1 ms at 120k samples).
_SUSPECT_IDS = (
    "s.id IN (SELECT v.sample_id FROM verdicts v WHERE v.suspect IS NOT NULL AND v.suspect != '')"
)


# ---- formatting helpers (shared by screens) ----------------------------------------------
def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def fmt_float(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "–"
    d = max(0.0, now - ts)
    if d < 60:
        return "just now"
    if d < 3600:
        return f"{int(d // 60)} min ago"
    if d < 86400:
        return f"{int(d // 3600)} h ago"
    return f"{int(d // 86400)} d ago"


def fmt_offset(ts: float, start: float) -> str:
    """A time as +H:MM:SS since the run started (stable, timezone-free)."""
    d = max(0, int(ts - start))
    return f"+{d // 3600}:{(d % 3600) // 60:02d}:{d % 60:02d}"


# ---- the runs folder ------------------------------------------------------------------------
@dataclass
class RunListing:
    run_dir: Path
    name: str
    model: str = ""
    rounds_done: int = 0
    rounds_planned: int | None = None
    best_pass1: float | None = None
    last_activity: float | None = None
    engine_pid: int | None = None
    state: str = "idle"  # new (config only) | idle | running | unreadable
    error: str = ""

    @property
    def db_path(self) -> Path:
        return self.run_dir / "run.db"


def _open_ro(db: Path) -> RunStore:
    return RunStore.open(db, readonly=True)


def read_listing(run_dir: Path) -> RunListing:
    db = run_dir / "run.db"
    item = RunListing(run_dir=run_dir, name=run_dir.name)
    cfg_path = run_dir / "config.toml"
    if not db.exists():
        item.state = "new"
        try:
            cfg = load_config(cfg_path)
            item.name, item.model = cfg.run.name, cfg.model.path
            item.rounds_planned = cfg.run.rounds
        except SSDError as e:
            item.error = str(e)
        item.last_activity = cfg_path.stat().st_mtime if cfg_path.exists() else None
        return item
    item.engine_pid = engine_pid(db)
    try:
        store = _open_ro(db)
    except SSDError as e:
        # An engine that is creating the database: not readable yet, but not broken.
        item.state, item.error = ("running", "") if item.engine_pid else ("unreadable", str(e))
        return item
    try:
        info = store.run_info()
        if info:
            item.name, item.model = info["name"], info["model"]
            cfg = config_from_json(info["config_json"], Path(info["base_dir"] or run_dir))
            # A run extended past its plan (`--rounds 4` on a 3-round plan) planned more.
            last = store.conn.execute("SELECT MAX(round) FROM rounds").fetchone()[0]
            item.rounds_planned = max(cfg.run.rounds, last or 0)
            row = store.conn.execute(
                "SELECT MAX(value) FROM metrics WHERE purpose='eval' AND name='pass@1' "
                "AND scope='all' AND temperature=?",
                (cfg.eval.temperature,),
            ).fetchone()
            item.best_pass1 = row[0]
        item.rounds_done = store.conn.execute(
            "SELECT COUNT(*) FROM rounds WHERE status='done' AND round > 0"
        ).fetchone()[0]
        last = [
            store.conn.execute("SELECT ts FROM events ORDER BY id DESC LIMIT 1").fetchone(),
            store.conn.execute(
                "SELECT MAX(MAX(COALESCE(finished_at, 0)), MAX(COALESCE(started_at, 0))) FROM stages"
            ).fetchone(),
        ]
        stamps = [r[0] for r in last if r and r[0]]
        item.last_activity = max(stamps) if stamps else (info or {}).get("created_at")
    except Exception as e:  # noqa: BLE001 - a damaged DB must not hide the others
        item.state, item.error = "unreadable", f"{db}: {e}"
    finally:
        store.close()
    if item.engine_pid is not None:
        item.state, item.error = "running", ""
    return item


def list_runs(runs_dir: Path) -> list[RunListing]:
    """Every subfolder of `runs_dir` with a run.db (or a config.toml not yet started)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if (d / "run.db").exists() or (d / "config.toml").exists():
            out.append(read_listing(d))
    return out


# ---- one run ------------------------------------------------------------------------------------
@dataclass
class RoundRow:
    round: int
    stage: str
    status: str
    pass1: float | None
    passk: float | None
    samples: int
    diversity: float | None
    seconds: float
    warnings: int
    suspect: int = 0  # judged samples flagged as looking like they game the tests


@dataclass
class StageRow:
    round: int
    stage: str
    status: str
    done: int
    total: int
    detail: str
    started_at: float | None
    seconds: float

    def fraction(self) -> float | None:
        """How much of the whole stage is done, 0..1, never going back within a stage run.

        The engine's done/total restart at each phase: an evaluation generates, then tests
        (done/total restart at 0), and the baseline does both once per temperature, its
        detail saying which ("testing T=0.4 (2/4)"). So the stage's own share is
        (phases before this one + this phase's done/total) / phases.
        """
        if not self.total:
            return None
        part = min(1.0, max(0.0, self.done / self.total))
        m = re.search(r"\((\d+)/(\d+)\)", self.detail or "")
        i, n = (int(m[1]), int(m[2])) if m and 0 < int(m[1]) <= int(m[2]) else (1, 1)
        if self.stage in ("evaluate", "baseline"):
            testing = "testing" in (self.detail or "")
            return ((i - 1) * 2 + int(testing) + part) / (2 * n)
        return (i - 1 + part) / n


@dataclass
class Progress:
    """Rate and ETA of a running stage from what the app saw it do (no DB access).

    The rate counts only work the app watched being done: a resumed stage starts with
    the work of an earlier session already counted in `done`, and dividing that by the
    time since this session's start showed "240/s · ETA 1s". So: items per second since
    the first sight of the current phase, and the stage's ETA from its fraction done
    since the first sight of this stage run.
    """

    key: tuple[int, str, float | None]  # (round, stage, started_at): one stage run
    phase: str = ""
    phase_t0: float = 0.0
    phase_done0: int = 0
    t0: float = 0.0
    fraction0: float | None = None

    @classmethod
    def first(cls, st: StageRow, now: float) -> Progress:
        return cls((st.round, st.stage, st.started_at), st.detail, now, st.done, now, st.fraction())

    def update(self, st: StageRow, now: float) -> tuple[float | None, float | None]:
        """(items per second in this phase, seconds left in the stage), None if unknown."""
        if (st.round, st.stage, st.started_at) != self.key:
            self.__dict__.update(Progress.first(st, now).__dict__)
        if st.detail != self.phase or st.done < self.phase_done0:
            self.phase, self.phase_t0, self.phase_done0 = st.detail, now, st.done
        rate = None
        if now > self.phase_t0 and st.done > self.phase_done0:
            rate = (st.done - self.phase_done0) / (now - self.phase_t0)
        eta = None
        f = st.fraction()
        if f is not None and self.fraction0 is not None and now > self.t0 and f > self.fraction0:
            eta = (1.0 - f) * (now - self.t0) / (f - self.fraction0)
        elif f is not None and self.fraction0 is None:
            self.t0, self.fraction0 = now, f
        return rate, eta


@dataclass
class Snapshot:
    data_version: int
    name: str
    model: str
    created_at: float
    k: int
    t_eval: float
    rounds: list[RoundRow]
    running: list[StageRow]
    curve: dict[str, list[tuple[int, float]]]
    baseline: tuple[float, float] | None  # (temperature, best T-only pass@1)
    events: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    engine_pid: int | None
    last_event_id: int = 0
    diversity_name: str = ""
    provisional: tuple[int, float] | None = None  # pass@1 so far of a round being evaluated
    sandbox: list[str] = field(default_factory=list)  # isolations that ran its tests (issue 20)
    engines: list[str] = field(default_factory=list)  # sampler engines that drew (issue 16)
    verdict: str | None = None  # SSD vs the temperature-only baseline (the CLI's line)
    probe: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # fork/lock stats
    last_stage_start: float | None = None  # the latest started_at of any stage
    planned_rounds: int = 0  # [run] rounds: the last round of the run's plan


@dataclass
class SampleFilter:
    round: int | None = None
    purpose: str | None = None
    problem_id: int | None = None
    status: str | None = None  # verdict status
    sample_ids: tuple[int, ...] | None = None
    suspect: bool = False  # only samples whose program looks like it games the tests

    def describe(self) -> str:
        parts = []
        if self.round is not None:
            parts.append(f"round {self.round}")
        if self.purpose:
            parts.append(self.purpose)
        if self.status:
            parts.append(self.status)
        if self.suspect:
            parts.append("suspect")
        if self.sample_ids is not None:
            parts.append(f"{len(self.sample_ids)} flagged samples")
        return ", ".join(parts) or "all samples"


@dataclass
class TokenRow:
    index: int
    token_id: int
    text: str
    prob: float
    entropy: float
    tail: float
    kind: str  # fork | lock | ""


@dataclass
class SampleDetail:
    row: dict[str, Any]
    prompt: str
    tests: str | None
    others: list[dict[str, Any]] = field(default_factory=list)


class RunReader:
    """Read-only access to one run DB for the app: one connection, used under a lock."""

    def __init__(self, db_path: Path, fallback_config: Path | None = None):
        self.db_path = Path(db_path)
        self.fallback_config = fallback_config
        self._store: RunStore | None = None
        self._lock = threading.RLock()
        self._config: RunConfig | None = None
        self._done_counts: dict[int, int] = {}
        self._closed = False

    # ---- connection ---------------------------------------------------------------------
    @property
    def store(self) -> RunStore | None:
        """The open store, or None while the DB does not exist (yet) or is not initialised."""
        with self._lock:
            # Closed (its screen is gone): a worker still running must not reopen it.
            if self._store is None and self.db_path.exists() and not self._closed:
                try:
                    self._store = _open_ro(self.db_path)
                except SSDError:
                    return None
            return self._store

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None

    def data_version(self) -> int | None:
        with self._lock:
            s = self.store
            return None if s is None else s.data_version()

    def config(self) -> RunConfig | None:
        """The run's config: from the DB (runs.config_json), else RUN_DIR/config.toml."""
        with self._lock:
            if self._config is not None:
                return self._config
            s = self.store
            info = s.run_info() if s is not None else None
            if info:
                self._config = config_from_json(
                    info["config_json"], Path(info["base_dir"] or self.db_path.parent)
                )
                return self._config
        for path in (self.db_path.parent / "config.toml", self.fallback_config):
            if path is not None and path.exists():
                try:
                    return load_config(path)
                except SSDError:
                    return None
        return None

    # ---- dashboard ------------------------------------------------------------------------
    def snapshot(self, after_event_id: int, now: float) -> Snapshot | None:
        with self._lock:
            s = self.store
            if s is None:
                return None
            # The version *before* reading: a commit that lands while the rows below are
            # read then shows as a change at the next poll (read at the end, it was taken
            # as seen, and the dashboard stayed stale until the engine's next commit).
            data_version = s.data_version()
            info = s.run_info()
            if info is None:
                return None
            cfg = self.config()
            assert cfg is not None
            c = s.conn
            t_eval = cfg.eval.temperature
            k = max(cfg.eval.k)
            pid = engine_pid(self.db_path)
            rounds = s.rounds()
            stages = [
                StageRow(**{k_: r[k_] for k_ in StageRow.__dataclass_fields__}) for r in s.stages()
            ]
            metrics = [
                dict(r)
                for r in c.execute(
                    "SELECT round, temperature, name, scope, value FROM metrics WHERE purpose='eval'"
                )
            ]
            warnings = s.warnings()
            suspects = self._suspect_counts()
            by_round_warn: dict[int, int] = {}
            for w in warnings:
                by_round_warn[w["round"]] = by_round_warn.get(w["round"], 0) + 1
            at_t = {
                (m["round"], m["name"], m["scope"]): m["value"]
                for m in metrics
                if m["temperature"] == t_eval
            }
            div_name = next(
                (n for n in DIVERSITY_METRICS if any(m["name"] == n for m in metrics)), ""
            )
            rows: list[RoundRow] = []
            for r in rounds:
                rnd = r["round"]
                st = [x for x in stages if x.round == rnd]
                status, stage = _round_state(r["status"], st, pid is not None)
                # Time of a running stage counts only while its engine is alive.
                seconds = sum(x.seconds for x in st) + sum(
                    max(0.0, now - x.started_at)
                    for x in st
                    if x.status == "running" and x.started_at and pid is not None
                )
                rows.append(
                    RoundRow(
                        rnd,
                        stage,
                        status,
                        at_t.get((rnd, "pass@1", "all")),
                        # with k = [1] there is no pass@k: leave the column empty
                        at_t.get((rnd, f"pass@{k}", "all")) if k > 1 else None,
                        self._count_round(rnd, r["status"] == "done"),
                        at_t.get((rnd, div_name, "all")) if div_name else None,
                        seconds,
                        by_round_warn.get(rnd, 0),
                        suspects.get(rnd, 0),
                    )
                )
            curve: dict[str, list[tuple[int, float]]] = {}
            for key, label in (("pass@1", "pass@1"), (f"pass@{k}", f"pass@{k}")):
                pts = sorted(
                    (rnd, v)
                    for (rnd, n, sc), v in at_t.items()
                    if n == key and sc == "all" and v is not None
                )
                if pts:
                    curve[label] = pts
            scopes = sorted(
                {sc for (_r, n, sc) in at_t if n == "pass@1" and sc != "all"},
                key=lambda x: (DIFFICULTY_ORDER.index(x) if x in DIFFICULTY_ORDER else 9, x),
            )
            for sc in scopes:
                curve[f"pass@1 {sc}"] = sorted(
                    (rnd, v)
                    for (rnd, n, s_), v in at_t.items()
                    if n == "pass@1" and s_ == sc and v is not None
                )
            base = [
                (m["temperature"], m["value"])
                for m in metrics
                if m["round"] == 0
                and m["name"] == "pass@1"
                and m["scope"] == "all"
                and m["value"] is not None
            ]
            # The temperature-only baseline exists when round 0 evaluated other T_eval values.
            baseline = max(base, key=lambda x: x[1]) if any(t != t_eval for t, _ in base) else None
            provisional = None
            for r in rows:
                if r.pass1 is None and r.status != "done":
                    counts = s.pass_counts(r.round, t_eval)
                    judged = [(n, c) for _name, _d, n, c in counts if n]
                    if judged:
                        provisional = (r.round, sum(c / n for n, c in judged) / len(judged))
            if after_event_id == 0:
                events = [
                    dict(e)
                    for e in c.execute(
                        "SELECT * FROM (SELECT * FROM events ORDER BY id DESC LIMIT 500) ORDER BY id"
                    )
                ]
            else:
                events = s.events(after_event_id, limit=500)
            last_id = events[-1]["id"] if events else after_event_id
            from ssd_tui.analysis.verdict import baseline_verdict  # `ssd-tui run` ends with it

            return Snapshot(
                data_version=data_version,
                name=info["name"],
                model=info["model"],
                created_at=info["created_at"],
                k=k,
                t_eval=t_eval,
                rounds=rows,
                running=[x for x in stages if x.status == "running"],
                curve=curve,
                baseline=baseline,
                events=events,
                warnings=warnings,
                engine_pid=pid,
                last_event_id=last_id,
                diversity_name=div_name,
                provisional=provisional,
                sandbox=s.sandbox_labels(),
                engines=s.engine_labels(),
                verdict=baseline_verdict(s, cfg),
                probe=self._probe_series(t_eval),
                last_stage_start=max((x.started_at for x in stages if x.started_at), default=None),
                planned_rounds=cfg.run.rounds,
            )

    def _probe_series(self, t_eval: float) -> dict[str, list[tuple[int, float]]]:
        """Fork/lock probe statistics per round (purpose 'probe', scope 'all'), at T_eval
        when a round has several temperatures."""
        s = self.store
        assert s is not None
        by: dict[str, dict[int, float]] = {}
        rows = s.conn.execute(
            "SELECT round, name, value FROM metrics WHERE purpose='probe' AND scope='all' "
            "AND value IS NOT NULL ORDER BY ABS(temperature - ?) DESC",
            (t_eval,),
        )
        for rnd, name, value in rows:  # the closest temperature comes last and wins
            by.setdefault(name, {})[rnd] = value
        return {name: sorted(pts.items()) for name, pts in by.items()}

    def _suspect_counts(self) -> dict[int, int]:
        """Suspect samples per round (every temperature: what `b` then `!` lists). The
        partial index on flagged verdicts keeps this cheap however many verdicts a run has."""
        s = self.store
        assert s is not None
        if not s.has_column("verdicts", "suspect"):
            return {}  # a file from before schema 3, opened read-only
        rows = s.conn.execute(
            f"SELECT s.round, COUNT(*) FROM samples s WHERE {_SUSPECT_IDS} GROUP BY s.round"
        )
        return {r[0]: r[1] for r in rows}

    def _count_round(self, rnd: int, done: bool) -> int:
        if rnd in self._done_counts:
            return self._done_counts[rnd]
        s = self.store
        assert s is not None
        n = s.conn.execute("SELECT COUNT(*) FROM samples WHERE round=?", (rnd,)).fetchone()[0]
        if done:
            self._done_counts[rnd] = n
        return n

    # ---- samples --------------------------------------------------------------------------
    def problems(self, rnd: int | None = None) -> list[dict[str, Any]]:
        """Problems (eval first), with pass counts at T_eval in round `rnd` when given."""
        with self._lock:
            s = self.store
            if s is None:
                return []
            rows = [
                dict(r)
                for r in s.conn.execute(
                    "SELECT id, purpose, name, difficulty FROM problems ORDER BY purpose='train', id"
                )
            ]
            if rnd is not None:
                cfg = self.config()
                t = cfg.eval.temperature if cfg else None
                counts = {
                    r[0]: (r[1], r[2])
                    for r in s.conn.execute(
                        "SELECT s.problem_id, COUNT(*), SUM(v.status='passed') FROM samples s "
                        "JOIN verdicts v ON v.sample_id = s.id WHERE s.round=? AND s.purpose='eval' "
                        "AND s.temperature=? GROUP BY s.problem_id",
                        (rnd, t),
                    )
                }
                for r in rows:
                    n, c = counts.get(r["id"], (0, 0))
                    r["n"], r["passed"] = n, c or 0
            return rows

    def rounds(self) -> list[int]:
        with self._lock:
            s = self.store
            return [] if s is None else [r["round"] for r in s.rounds()]

    def _where(self, f: SampleFilter) -> tuple[str, list[Any], bool]:
        where, args = [], []
        for col, val in (
            ("s.round", f.round),
            ("s.purpose", f.purpose),
            ("s.problem_id", f.problem_id),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        join = False
        if f.status:
            where.append("v.status=?")
            args.append(f.status)
            join = True
        if f.suspect:
            s = self.store
            has = s is not None and s.has_column("verdicts", "suspect")
            where.append(_SUSPECT_IDS if has else "0")  # an older file has no suspects
        if f.sample_ids is not None:
            where.append(f"s.id IN ({','.join('?' * len(f.sample_ids)) or 'NULL'})")
            args += list(f.sample_ids)
        return (" WHERE " + " AND ".join(where)) if where else "", args, join

    def count_samples(self, f: SampleFilter) -> int:
        with self._lock:
            where, args, join = self._where(f)
            q = (
                "SELECT COUNT(*) FROM samples s"
                + (" JOIN verdicts v ON v.sample_id = s.id" if join else "")
                + where
            )
            s = self.store
            return 0 if s is None else s.conn.execute(q, args).fetchone()[0]

    def sample_page(self, f: SampleFilter, offset: int, limit: int) -> list[dict[str, Any]]:
        """A page of samples in key order: ids from an index first, then those rows."""
        with self._lock:
            where, args, join = self._where(f)
            q = (
                "SELECT s.id FROM samples s"
                + (" JOIN verdicts v ON v.sample_id = s.id" if join else "")
                + where
                + " ORDER BY s.round, s.purpose, s.temperature, s.problem_id, s.sample_idx LIMIT ? OFFSET ?"
            )
            s = self.store
            if s is None:
                return []
            ids = [r[0] for r in s.conn.execute(q, [*args, limit, offset])]
            if not ids:
                return []
            rows = s.conn.execute(
                "SELECT s.id, s.round, s.purpose, s.temperature, s.sample_idx, s.n_tokens, "
                "s.finish_reason, s.mean_entropy, p.name AS problem, p.difficulty, v.status, "
                f"{s.suspect_sql()} AS suspect FROM samples s JOIN problems p ON p.id = s.problem_id "
                "LEFT JOIN verdicts v ON v.sample_id = s.id "
                f"WHERE s.id IN ({','.join('?' * len(ids))})",
                ids,
            )
            by_id = {r["id"]: dict(r) for r in rows}
            return [by_id[i] for i in ids if i in by_id]

    def sample(self, sample_id: int) -> SampleDetail | None:
        with self._lock:
            s = self.store
            if s is None:
                return None
            r = s.conn.execute(
                "SELECT s.*, p.name AS problem, p.difficulty, p.prompt, p.tests, v.status, "
                f"v.message, v.duration_s, {s.suspect_sql()} AS suspect FROM samples s JOIN problems p ON p.id = s.problem_id "
                "LEFT JOIN verdicts v ON v.sample_id = s.id WHERE s.id=?",
                (sample_id,),
            ).fetchone()
            if r is None:
                return None
            row = dict(r)
            return SampleDetail(row=row, prompt=row.pop("prompt"), tests=row.pop("tests"))

    def same_problem(self, sample_id: int, limit: int = 400) -> list[dict[str, Any]]:
        """Other samples of the same problem and purpose (all rounds), for picking a diff."""
        with self._lock:
            s = self.store
            if s is None:
                return []
            r = s.conn.execute(
                "SELECT problem_id, purpose FROM samples WHERE id=?", (sample_id,)
            ).fetchone()
            if r is None:
                return []
            return self.sample_page(SampleFilter(problem_id=r[0], purpose=r[1]), 0, limit)

    def probe_rounds(self, sample_id: int) -> list[int]:
        """Rounds whose model re-scored this sample (analysis' probe_stats), if any."""
        with self._lock:
            s = self.store
            if s is None:
                return []
            has = s.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='probe_stats'"
            ).fetchone()
            if not has:
                return []
            return [
                r[0]
                for r in s.conn.execute(
                    "SELECT round FROM probe_stats WHERE sample_id=? ORDER BY round", (sample_id,)
                )
            ]

    def token_rows(
        self, sample_id: int, decode: Any = None, probe_round: int | None = None
    ) -> tuple[list[TokenRow], dict[str, float]]:
        """Per-token statistics with a fork/lock class each (see `classify`).

        With `probe_round`, the statistics are those of round `probe_round`'s model
        re-scoring this sample (analysis' probe_stats: exact top-1 probabilities);
        otherwise the sample's own, recorded when it was generated.
        """
        top1 = None
        train_tail = None
        with self._lock:
            s = self.store
            if s is None:
                return [], {}
            if probe_round is None:
                ts = s.token_stats(sample_id)
            else:
                row = s.conn.execute(
                    "SELECT * FROM probe_stats WHERE round=? AND sample_id=?",
                    (probe_round, sample_id),
                ).fetchone()
                if row is None:
                    return [], {}
                ts = {
                    "token_ids": unpack(row["token_ids"], "<i4"),
                    "logprobs": unpack(row["logprobs"]),
                    "entropies": unpack(row["entropies"]),
                    "tail_mass": unpack(row["tail_mass"]),
                }
                top1 = unpack(row["top1"])
                # The paper's KeptMass (training truncation set); absent in older probes.
                if "train_tail_mass" in row.keys() and row["train_tail_mass"] is not None:
                    train_tail = unpack(row["train_tail_mass"])
        cfg = self.config()
        fork_h = cfg.analysis.fork_entropy if cfg else 1.0
        lock_p = cfg.analysis.lock_top1 if cfg else 0.9
        ids = [int(x) for x in ts["token_ids"]]
        texts = decode(ids) if decode is not None else [f"⟨{i}⟩" for i in ids]
        out = []

        def at(arr: Any, i: int) -> float:
            return float(arr[i]) if arr is not None and i < len(arr) else float("nan")

        for i, tid in enumerate(ids):
            lp, h, tail = at(ts["logprobs"], i), at(ts["entropies"], i), at(ts["tail_mass"], i)
            p = math.exp(lp) if not math.isnan(lp) else float("nan")
            top = at(top1, i) if top1 is not None else p
            out.append(TokenRow(i, tid, texts[i], p, h, tail, classify(h, top, fork_h, lock_p)))
        n = len(out)
        summary = {
            "tokens": n,
            "forks": sum(t.kind == "fork" for t in out),
            "locks": sum(t.kind == "lock" for t in out),
            "mean_entropy": (sum(t.entropy for t in out) / n) if n else float("nan"),
            "mean_tail": (sum(t.tail for t in out) / n) if n else float("nan"),
            "fork_entropy": fork_h,
            "lock_top1": lock_p,
            "exact_top1": top1 is not None,
        }
        if train_tail is not None and len(train_tail) == n and n:
            kept = 1.0 - train_tail.astype(float)
            locks = [t.index for t in out if t.kind == "lock"]
            summary["train_kept"] = float(kept.mean())
            summary["lock_train_kept"] = float(kept[locks].mean()) if locks else float("nan")
        return out, summary


def classify(entropy: float, top1: float, fork_entropy: float, lock_top1: float) -> str:
    """Fork / lock class of one position, with the thresholds of `[analysis]`, and the
    precedence of `ssd_tui.analysis.rounds.classify_positions` (lock wins when both hold).

    lock: top-1 probability ≥ `lock_top1`. For a sample's own statistics the store keeps
    p(sampled token), not the top-1's, so `top1` is then p(sampled token): a lower bound.
    p(sampled) ≥ lock_top1 > 0.5 means the sampled token *is* the top-1 with at least
    that mass, so every position marked lock is a lock; a lock whose sampled token came
    from the tail is not marked (its low entropy still shows in the colour). Probe
    statistics (a round's model re-scoring round 0's samples) carry the exact top-1.
    fork: entropy of the full next-token distribution ≥ `fork_entropy` (nats).
    """
    if not math.isnan(top1) and top1 >= lock_top1:
        return "lock"
    if not math.isnan(entropy) and entropy >= fork_entropy:
        return "fork"
    return ""


def _round_state(round_status: str, stages: list[StageRow], engine_alive: bool) -> tuple[str, str]:
    """(status, stage) for the rounds table."""
    for st in stages:
        if st.status == "running":
            # 'running' in the DB but no engine holds the lock: the engine died mid-stage.
            return ("running" if engine_alive else "interrupted"), st.stage
    for bad in ("failed", "stopped"):
        for st in stages:
            if st.status == bad:
                return bad, st.stage
    if stages and all(st.status == "done" for st in stages):
        return "done", stages[-1].stage
    nxt = next((st for st in stages if st.status != "done"), None)
    if nxt is not None and any(st.status == "done" for st in stages):
        return "paused", nxt.stage
    return round_status if round_status != "running" else "pending", nxt.stage if nxt else ""


def next_round_target(rounds: list[RoundRow]) -> int:
    """`--rounds` value that finishes the next unfinished round (0 for a fresh run)."""
    for r in rounds:
        if r.status != "done":
            return r.round
    return (rounds[-1].round + 1) if rounds else 0


def evidence_targets(evidence: Any) -> tuple[list[str], list[int]]:
    """Problem names and sample ids mentioned anywhere in a warning's evidence JSON."""
    problems: list[str] = []
    ids: list[int] = []

    def walk(obj: Any, key: str = "") -> None:
        k = key.lower()
        if isinstance(obj, dict):
            for kk, vv in obj.items():
                walk(vv, str(kk))
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, bool):
            return
        elif isinstance(obj, int) and ("sample" in k and "id" in k or k in ("samples", "sample")):
            ids.append(obj)
        elif isinstance(obj, str) and k in ("problem", "problems", "problem_name", "name") and obj:
            problems.append(obj)

    walk(evidence)
    return list(dict.fromkeys(problems)), list(dict.fromkeys(ids))


def evidence_text(evidence: Any) -> str:
    return json.dumps(evidence, indent=2, sort_keys=True, ensure_ascii=False)


# ---- new run from an example config --------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    label: str
    section: str
    key: str
    kind: str  # str | path | value (any TOML value: numbers are parsed as TOML)


FORM_FIELDS: tuple[FormField, ...] = (
    FormField("model path", "model", "path", "path"),
    FormField("prompt set", "data", "train_prompts", "path"),
    FormField("benchmark", "data", "benchmark", "path"),
    FormField("T_train", "sampling", "temperature", "value"),
    FormField("top-k", "sampling", "top_k", "value"),
    FormField("top-p", "sampling", "top_p", "value"),
    FormField("samples per prompt", "sampling", "samples_per_prompt", "value"),
    FormField("LoRA r", "lora", "r", "value"),
    FormField("rounds", "run", "rounds", "value"),
)

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def example_dirs(only: Path | None = None) -> list[Path]:
    """Where example configs are looked for: ./examples and the source checkout's
    examples/ (or only `only`, when the app was given an examples folder)."""
    import ssd_tui

    if only is not None:
        return [Path(only).resolve()] if Path(only).is_dir() else []
    dirs = [Path.cwd() / "examples", Path(ssd_tui.__file__).resolve().parent.parent / "examples"]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def example_configs(dirs: list[Path]) -> list[Path]:
    out = []
    for d in dirs:
        out += sorted(d.glob("*.toml"))
    # demo.toml first: it is the one to start from.
    return sorted(out, key=lambda p: (p.name != "demo.toml", p.name))


def read_example(path: Path) -> dict[str, dict[str, Any]]:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SSDError(f"{path}: cannot read example config: {e}") from None


def display_path(p: Path | str) -> str:
    """A path as shown to people: relative to the current directory when inside it."""
    p = Path(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def form_values(example: dict[str, dict[str, Any]], example_dir: Path) -> dict[str, str]:
    """The form's initial texts. Paths of the example (relative to its folder) are shown
    relative to the current directory, the one the form's relative paths are read from."""
    out = {}
    for f in FORM_FIELDS:
        v = example.get(f.section, {}).get(f.key)
        if v is None:
            out[field_id(f)] = ""
            continue
        if f.kind == "path" and isinstance(v, str) and v:
            resolved = resolve_path_value(v, example_dir, f.key)
            if resolved != v:
                # Shown relative to the current directory only when it exists (so that
                # reading it back cannot mistake it for a hub id); else absolute.
                v = display_path(resolved) if Path(resolved).exists() else resolved
        out[field_id(f)] = v if isinstance(v, str) else toml_value(v)
    return out


def field_id(f: FormField) -> str:
    return f"{f.section}-{f.key}".replace("_", "-")


def _parse_value(raw: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # kept as a string: the config check then names the expected type


def resolve_path_value(raw: str, base: Path, key: str) -> str:
    """A path-like config value made absolute against `base`; a named problem set
    ('humaneval', 'leetcode[:…]') or a Hugging Face model id stays as it is.

    The example's own values resolve against the example's folder (what the config
    format says); values typed in the form resolve against the current directory.
    """
    if not raw:
        return raw
    p = Path(raw).expanduser()
    if p.is_absolute():
        return str(p)
    if (base / p).exists() or raw.startswith((".", "~")):
        return str((base / p).resolve())
    if key != "path":  # a problem set: a name, or a JSONL file
        name = raw.strip().lower()
        if name == "humaneval" or name == "leetcode" or name.startswith("leetcode:"):
            return raw
        return str((base / p).resolve())
    if raw.count("/") == 1:  # shaped like a hub id ("org/name"), as the engine reads it
        return raw
    return str((base / p).resolve())


def build_run_config(
    example: dict[str, dict[str, Any]],
    example_dir: Path,
    name: str,
    values: dict[str, str],
    source: Path,
) -> str:
    """The config.toml text for a new run in `source.parent` (= RUNS_DIR/<name>).

    Starts from the example, applies the form's values, sets `[run] name` and `dir = "."`,
    and makes every path absolute: the example's own relative paths against its folder,
    typed ones against the current directory.
    """
    data: dict[str, dict[str, Any]] = {
        s: dict(t) for s, t in example.items() if isinstance(t, dict)
    }
    for f in FORM_FIELDS:
        raw = values.get(field_id(f), "").strip()
        table = data.setdefault(f.section, {})
        if f.kind == "value":
            if raw == "" and f.key not in table:
                continue
            table[f.key] = _parse_value(raw)
        else:
            if raw == "":
                table.pop(f.key, None)
            else:
                table[f.key] = resolve_path_value(raw, Path.cwd(), f.key)
    run = data.setdefault("run", {})
    run["name"] = name
    run["dir"] = "."
    ordered = {"run": data.pop("run"), **data}
    return dump_toml(ordered, header=f"ssd-tui run '{name}', created in the app from {example_dir}")


def check_new_run(runs_dir: Path, name: str, text: str) -> Path:
    """Validate a new run's name and config text exactly as `ssd-tui run` would; return the
    config path to write. Raises SSDError with the CLI's message."""
    if not name:
        raise SSDError("run name: missing")
    if not RUN_NAME_RE.match(name):
        raise SSDError(
            f"run name {name!r}: use letters, digits, '.', '_' or '-' (it names the run folder)"
        )
    run_dir = Path(runs_dir) / name
    if (run_dir / "config.toml").exists() or (run_dir / "run.db").exists():
        raise SSDError(f"run name {name!r}: {run_dir} already holds a run")
    path = run_dir / "config.toml"
    from ssd_tui.config import loads_config

    loads_config(text, source=str(path), base_dir=run_dir.resolve())
    return path


def write_new_run(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def now() -> float:
    return time.time()
