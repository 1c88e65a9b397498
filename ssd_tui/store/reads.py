"""What the app reads from run DBs beyond `RunStore`: rows, never analysis.

Everything in this module runs in the app's thread workers, never on its UI thread. Each
`RunReader` owns one SQLite connection (opened read-only) behind a lock, so a screen
can poll `PRAGMA data_version` on it cheaply: the value changes only when another
connection (the engine) commits. The app composes these rows with the analysis' rules
(round state, fork/lock classes, the verdict) and whether an engine runs
(`ssd_tui/tui/views.py`).

Queries that stay fast on a run with a million samples (see
benchmarks/bench_tui_queries.py for the plans and timings):

* rounds table: per-round `COUNT(*)` over the samples key index (a range scan per
  round; finished rounds are cached), stages and metrics by primary key;
* sample pages: ids first, from the covering key index (or `samples_problem` for one
  problem), with LIMIT/OFFSET; then the page's few rows by rowid.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ssd_tui.config import RunConfig, config_from_json, load_config
from ssd_tui.errors import SSDError
from ssd_tui.store.run_store import RunStore

T = TypeVar("T")

# Samples with a flagged verdict (store.py writes NULL for a clean one; "" from another writer
# counts as clean too). Asked as a list of ids from the partial index verdicts_suspect: as a
# join, SQLite walks every sample instead (36 ms against 0.1 ms at 120k samples).
_SUSPECT_IDS = (
    "s.id IN (SELECT v.sample_id FROM verdicts v WHERE v.suspect IS NOT NULL AND v.suspect != '')"
)


def _open_ro(db: Path) -> RunStore:
    return RunStore.open(db, readonly=True)


def run_config(store: RunStore) -> RunConfig:
    """The run's stored config (defaults when the DB has none, e.g. a bare test DB)."""
    info = store.run_info()
    if info and info.get("config_json"):
        return config_from_json(info["config_json"], Path(info.get("base_dir") or "."))
    return RunConfig()


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
    state: str = "idle"  # new (config only) | idle | stopped ([control]) | running | unreadable
    error: str = ""
    # Lineage (runs/branch.py): this run's id, and for a branch its parent and round.
    uid: str = ""
    parent_dir: str = ""
    parent_uid: str = ""
    parent_round: int | None = None
    parent_name: str = ""
    stopped: str = ""  # why [control] ended the run ("" when it did not)

    @property
    def db_path(self) -> Path:
        return self.run_dir / "run.db"


def run_listing(run_dir: Path) -> RunListing:
    """One run of the runs folder as its files tell it: state 'new' (a config.toml only),
    'idle' or 'unreadable'. Whether an engine holds it is the caller's to ask."""
    db = run_dir / "run.db"
    item = RunListing(run_dir=run_dir, name=run_dir.name)
    if not db.exists():
        return _new_listing(item, run_dir / "config.toml")
    try:
        store = _open_ro(db)
    except SSDError as e:
        item.state, item.error = "unreadable", str(e)
        return item
    try:
        _read_listing(store, item)
    except Exception as e:  # noqa: BLE001 - a damaged DB must not hide the others
        item.state, item.error = "unreadable", f"{db}: {e}"
    finally:
        store.close()
    return item


def _new_listing(item: RunListing, cfg_path: Path) -> RunListing:
    item.state = "new"
    try:
        cfg = load_config(cfg_path)
        item.name, item.model = cfg.run.name, cfg.model.path
        item.rounds_planned = cfg.run.rounds
    except SSDError as e:
        item.error = str(e)
    item.last_activity = cfg_path.stat().st_mtime if cfg_path.exists() else None
    return item


def _read_listing(store: RunStore, item: RunListing) -> None:
    info = store.run_info()
    if info:
        item.name, item.model = info["name"], info["model"]
        cfg = config_from_json(info["config_json"], Path(info["base_dir"] or item.run_dir))
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
    _read_lineage(store, item)


def _read_lineage(store: RunStore, item: RunListing) -> None:
    """The run's id, its parent when it is a branch, and a [control] stop."""
    item.uid = store.meta("run_uid") or ""
    item.parent_dir = store.meta("parent_run") or ""
    if item.parent_dir:
        item.parent_uid = store.meta("parent_run_uid") or ""
        item.parent_name = store.meta("parent_name") or ""
        item.parent_round = int(store.meta("parent_round") or 0)
    stop = next((d for d in store.decisions() if d["action"] == "stop"), None)
    item.stopped = stop["message"] if stop else ""
    if stop:
        item.state = "stopped"


def is_parent_of(parent: RunListing, child: RunListing) -> bool:
    """Whether ``child`` is a branch of ``parent``: by run id where both have one (a moved
    or set-aside folder keeps it), else by the parent's folder."""
    if not child.parent_dir:
        return False
    if child.parent_uid and parent.uid:
        return child.parent_uid == parent.uid
    return Path(child.parent_dir).resolve() == parent.run_dir.resolve()


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
class DashboardRows:
    """What one dashboard poll reads of a run, as stored."""

    data_version: int
    info: dict[str, Any]
    config: RunConfig
    rounds: list[dict[str, Any]]  # round, status
    stages: list[StageRow]
    metrics: list[dict[str, Any]]  # eval metrics: round, temperature, name, scope, value
    warnings: list[dict[str, Any]]
    suspects: dict[int, int]  # round -> suspect samples
    samples: dict[int, int]  # round -> samples
    events: list[dict[str, Any]]
    sandbox: list[str]  # isolations that ran the run's tests
    engines: list[str]  # sampler engines that drew
    probe: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # fork/lock stats


@dataclass
class SampleFilter:
    round: int | None = None
    purpose: str | None = None
    problem_id: int | None = None
    status: str | None = None  # verdict status
    sample_ids: tuple[int, ...] | None = None
    suspect: bool = False  # only samples whose program looks like it games the tests
    # Evaluation samples at this temperature only (round 0 also holds the temperature-only
    # baseline's); training samples stay, each round's drawn at its one T_train.
    eval_temperature: float | None = None

    def describe(self, t_eval: float | None = None) -> str:
        """In words; `t_eval` names the run's own evaluation temperature as such."""
        parts = []
        if self.round is not None:
            parts.append(f"round {self.round}")
        if self.purpose:
            parts.append(self.purpose)
        if self.eval_temperature is not None:
            own = " (T_eval)" if self.eval_temperature == t_eval else ""
            parts.append(f"eval at T {self.eval_temperature:g}{own}")
        if self.status:
            parts.append(self.status)
        if self.suspect:
            parts.append("suspect")
        if self.sample_ids is not None:
            parts.append(f"{len(self.sample_ids)} flagged samples")
        return ", ".join(parts) or "all samples"


@dataclass
class SampleDetail:
    row: dict[str, Any]
    prompt: str
    tests: str | None
    others: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TokenStats:
    """One sample's per-token statistics: as sampled, or as a round's model re-scored it."""

    token_ids: np.ndarray
    logprobs: np.ndarray
    entropies: np.ndarray
    tail_mass: np.ndarray
    top1: np.ndarray | None = None  # exact top-1 probabilities (a probe's only)
    train_tail_mass: np.ndarray | None = None  # mass outside the T_train set (newer probes)


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

    def use(self, read: Callable[[RunStore], T]) -> T | None:
        """`read(store)` on this reader's connection, under its lock (None without a DB):
        how a caller runs a reader of its own, an analysis, beside these."""
        with self._lock:
            s = self.store
            return None if s is None else read(s)

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
    def dashboard_rows(self, after_event_id: int) -> DashboardRows | None:
        """The run's rounds, stages, eval metrics, warnings and the events after
        `after_event_id` (the last 500 when 0); None until the run is initialised."""
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
            rounds = s.rounds()
            return DashboardRows(
                data_version=data_version,
                info=info,
                config=cfg,
                rounds=rounds,
                stages=[
                    StageRow(**{k: r[k] for k in StageRow.__dataclass_fields__}) for r in s.stages()
                ],
                metrics=self._eval_metrics(s),
                warnings=s.warnings(),
                suspects=self._suspect_counts(s),
                samples={
                    r["round"]: self._count_round(s, r["round"], r["status"] == "done")
                    for r in rounds
                },
                events=self._events(s, after_event_id),
                sandbox=s.sandbox_labels(),
                engines=s.engine_labels(),
                probe=self._probe_series(s, cfg.eval.temperature),
            )

    def pass_counts(self, rnd: int, temperature: float) -> list[tuple[str, str | None, int, int]]:
        """(problem, difficulty, n, passed) per eval problem of a round, at one temperature."""
        return self.use(lambda s: s.pass_counts(rnd, temperature)) or []

    @staticmethod
    def _eval_metrics(s: RunStore) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in s.conn.execute(
                "SELECT round, temperature, name, scope, value FROM metrics WHERE purpose='eval'"
            )
        ]

    @staticmethod
    def _events(s: RunStore, after_event_id: int) -> list[dict[str, Any]]:
        if after_event_id:
            return s.events(after_event_id, limit=500)
        return [
            dict(e)
            for e in s.conn.execute(
                "SELECT * FROM (SELECT * FROM events ORDER BY id DESC LIMIT 500) ORDER BY id"
            )
        ]

    @staticmethod
    def _probe_series(s: RunStore, t_eval: float) -> dict[str, list[tuple[int, float]]]:
        """Fork/lock probe statistics per round (purpose 'probe', scope 'all'), at T_eval
        when a round has several temperatures."""
        by: dict[str, dict[int, float]] = {}
        rows = s.conn.execute(
            "SELECT round, name, value FROM metrics WHERE purpose='probe' AND scope='all' "
            "AND value IS NOT NULL ORDER BY ABS(temperature - ?) DESC",
            (t_eval,),
        )
        for rnd, name, value in rows:  # the closest temperature comes last and wins
            by.setdefault(name, {})[rnd] = value
        return {name: sorted(pts.items()) for name, pts in by.items()}

    @staticmethod
    def _suspect_counts(s: RunStore) -> dict[int, int]:
        """Suspect samples per round (every temperature: what `b` then `!` lists). The
        partial index on flagged verdicts keeps this cheap however many verdicts a run has."""
        if not s.has_column("verdicts", "suspect"):
            return {}  # a file from before schema 3, opened read-only
        rows = s.conn.execute(
            f"SELECT s.round, COUNT(*) FROM samples s WHERE {_SUSPECT_IDS} GROUP BY s.round"
        )
        return {r[0]: r[1] for r in rows}

    def _count_round(self, s: RunStore, rnd: int, done: bool) -> int:
        if rnd in self._done_counts:
            return self._done_counts[rnd]
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
        if f.eval_temperature is not None:
            where.append("(s.purpose != 'eval' OR s.temperature = ?)")
            args.append(f.eval_temperature)
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
        """Samples like this one in every round, for stepping a diff's B: the same problem
        and purpose, and for an evaluation sample the same temperature."""
        with self._lock:
            s = self.store
            if s is None:
                return []
            r = s.conn.execute(
                "SELECT problem_id, purpose, temperature FROM samples WHERE id=?", (sample_id,)
            ).fetchone()
            if r is None:
                return []
            like = SampleFilter(problem_id=r[0], purpose=r[1], eval_temperature=r[2])
            return self.sample_page(like, 0, limit)

    def counterpart(self, sample_id: int, rnd: int) -> int | None:
        """The sample of round `rnd` with this one's problem, sample index, purpose and
        temperature (the samples' natural key), if there is one: what a diff compares."""
        with self._lock:
            s = self.store
            if s is None:
                return None
            row = s.conn.execute(
                "SELECT o.id FROM samples a JOIN samples o ON o.round = ? "
                "AND o.purpose = a.purpose AND o.temperature = a.temperature "
                "AND o.problem_id = a.problem_id AND o.sample_idx = a.sample_idx WHERE a.id = ?",
                (rnd, sample_id),
            ).fetchone()
            return None if row is None else row[0]

    # ---- tokens ---------------------------------------------------------------------------
    def probe_rounds(self, sample_id: int) -> list[int]:
        """Rounds whose model re-scored this sample (analysis' probe_stats), if any."""
        with self._lock:
            s = self.store
            return s.probe_rounds(sample_id) if s is not None else []

    def token_stats(self, sample_id: int, probe_round: int | None = None) -> TokenStats | None:
        """The sample's own per-token statistics, recorded when it was generated; with
        `probe_round`, round `probe_round`'s model re-scoring it (analysis' probe_stats:
        exact top-1 probabilities). None without a DB or without that probe."""
        with self._lock:
            s = self.store
            if s is None:
                return None
            if probe_round is None:
                ts = s.token_stats(sample_id)
                return TokenStats(ts["token_ids"], ts["logprobs"], ts["entropies"], ts["tail_mass"])
            probe = s.probe_stats(probe_round, sample_id).get(sample_id)
        if probe is None:
            return None
        return TokenStats(
            probe["token_ids"],
            probe["logprobs"],
            probe["entropies"],
            probe["tail_mass"],
            top1=probe["top1"],
            # the paper's KeptMass (training truncation set); absent in older probes
            train_tail_mass=probe.get("train_tail_mass"),
        )


# ---- training log ---------------------------------------------------------------------------
def train_log(db: Path) -> dict[int, list[tuple[int, float | None, float | None]]]:
    """round → [(step, loss, lr)] from the run's train_log."""
    store = _open_ro(db)
    try:
        out: dict[int, list[tuple[int, float | None, float | None]]] = {}
        for rnd, step, loss, lr in store.train_log():
            out.setdefault(rnd, []).append((step, loss, lr))
        return out
    finally:
        store.close()
