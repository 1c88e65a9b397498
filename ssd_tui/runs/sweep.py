"""Sweeps: one run per grid point and seed, under one sweep folder, with a summary table.

`ssd-tui sweep CONFIG --set sampling.temperature=0.5,0.8 --seeds 3` plans the grid
(every combination of the --set values, times the seeds), writes the sweep's manifest
(``SWEEP_DIR/sweep.json``) and one ordinary run folder per run
(``SWEEP_DIR/<label>/config.toml``, then ``run.db`` and ``adapters/`` as any run), and runs
them one after another, each as its own ``ssd-tui run`` process. Each run is resumable
on its own, so the sweep is too: a rerun skips finished runs (read back, not redone) and
resumes the partial one. Runs never write to each other's files, so several can run at
once later (one engine per run folder; the run lock already enforces it).

Round 0 (the base model's evaluation and the temperature-only baseline) is computed once
per distinct round-0 input: a run whose config differs from an earlier run's only in keys
that act after round 0 (``config.round0_diff``: T_train, truncation, LoRA, training, the
[rounds] and [control] keys, …) reuses that run's round 0 (``ssd-tui run --round0-from``;
``runs/reuse.py`` checks it is the same evaluation and records where it came from).

No textual and no engine code here: the app reads sweeps through this module too.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import signal
import statistics
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssd_tui.config import (
    _SECTION_TYPES,
    dump_toml,
    load_config,
    loads_config,
    parse_config,
    round0_diff,
)
from ssd_tui.errors import SSDError
from ssd_tui.runs import runner
from ssd_tui.store.review import resolve_run_db
from ssd_tui.store.run_store import RunStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = "sweep.json"
MANIFEST_VERSION = 1
# Keys a sweep sets itself: each run's folder, name and seed.
_OWN_KEYS = ("run.dir", "run.name", "run.seed")
# Path-valued keys, made absolute so a run's config means the same from its own folder.
_PATH_KEYS = ("model.path", "data.train_prompts", "data.benchmark")


# ---- planning -------------------------------------------------------------------------------
@dataclass
class SweepRun:
    """One run of a sweep: its grid point (key → value), seed and folder (relative)."""

    label: str
    setting: dict[str, Any]
    seed: int

    @property
    def setting_label(self) -> str:
        return setting_label(self.setting)


@dataclass
class Sweep:
    folder: Path
    base_config: str  # the config file's text, as given
    base_dir: str  # the folder its relative paths resolve against
    axes: list[tuple[str, list[Any]]]
    seeds: list[int]
    rounds: int | None = None  # run until this round (None: the config's [run] rounds)
    runs: list[SweepRun] = field(default_factory=list)

    def run_dir(self, run: SweepRun) -> Path:
        return self.folder / run.label

    def db_path(self, run: SweepRun) -> Path:
        return self.run_dir(run) / "run.db"

    def settings(self) -> list[dict[str, Any]]:
        """The grid points, in plan order (each has len(seeds) runs)."""
        out: list[dict[str, Any]] = []
        for r in self.runs:
            if r.setting not in out:
                out.append(r.setting)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "base_config": self.base_config,
                "base_dir": self.base_dir,
                "axes": [[k, v] for k, v in self.axes],
                "seeds": self.seeds,
                "rounds": self.rounds,
                "runs": [dataclasses.asdict(r) for r in self.runs],
            },
            indent=1,
        )


def setting_label(setting: dict[str, Any]) -> str:
    """'sampling.temperature=0.5 sampling.top_p=0.8' (or 'as configured' for no axes)."""
    return " ".join(f"{k}={_show(v)}" for k, v in setting.items()) or "as configured"


def _show(v: Any) -> str:
    return (
        json.dumps(v)
        if isinstance(v, (list, str))
        else f"{v:g}"
        if isinstance(v, float)
        else str(v)
    )


def split_values(raw: str) -> list[str]:
    """Split 'a,b,[1,2],"x,y"' at top-level commas (lists and strings keep theirs)."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """'section.key=v1,v2' → ('section.key', [v1, v2]); values are TOML literals (bare
    words count as strings). Raises SSDError naming the assignment."""
    name, eq, raw = text.partition("=")
    name = name.strip()
    section, _, key = name.partition(".")
    if not eq or not key or not raw.strip():
        raise SSDError(f"--set {text!r}: expected section.key=value[,value…]")
    if section not in _SECTION_TYPES:
        known = ", ".join(_SECTION_TYPES)
        raise SSDError(f"--set {text!r}: unknown section {section!r} (known: {known})")
    keys = [f.name for f in fields(_SECTION_TYPES[section])]
    if key not in keys:
        raise SSDError(
            f"--set {text!r}: unknown key {key!r} in [{section}] (known: {', '.join(keys)}; "
            "see `ssd-tui options`)"
        )
    if name in _OWN_KEYS:
        raise SSDError(f"--set {text!r}: the sweep sets {name} itself (use --seeds for seeds)")
    values = []
    for item in split_values(raw):
        if not item:
            raise SSDError(f"--set {text!r}: an empty value")
        try:
            values.append(tomllib.loads(f"v = {item}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(item)  # a bare word: a string; the config check names the type
    if len(set(map(json.dumps, values))) != len(values):
        raise SSDError(f"--set {text!r}: a value is given twice")
    return name, values


def _slug(v: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", _show(v)).strip("_") or "x"


def run_label(setting: dict[str, Any], seed: int) -> str:
    """Folder name: 'temperature-0.5_top_p-0.8_seed-0' (the section too when a key name
    is ambiguous, e.g. sampling.temperature and eval.temperature)."""
    short = [k.partition(".")[2] for k in setting]
    parts = [
        f"{k if short.count(k.partition('.')[2]) > 1 else k.partition('.')[2]}-{_slug(v)}"
        for k, v in setting.items()
    ]
    return "_".join([*parts, f"seed-{seed}"])


def _absolute(value: str, base: Path) -> str:
    """A relative path that exists beside the base config, made absolute; a named problem
    set ('humaneval') or a hub id stays as it is."""
    if not value or Path(value).expanduser().is_absolute():
        return value
    p = (base / value).expanduser()
    return str(p.resolve()) if p.exists() else value


def run_config_text(sweep: Sweep, run: SweepRun) -> str:
    """The base config with the run's grid point and seed; its folder is the run folder."""
    data = tomllib.loads(sweep.base_config)
    base = Path(sweep.base_dir)
    for name in _PATH_KEYS:
        s, _, k = name.partition(".")
        if isinstance(data.get(s, {}).get(k), str):
            data[s][k] = _absolute(data[s][k], base)
    for name, value in run.setting.items():
        s, _, k = name.partition(".")
        data.setdefault(s, {})[k] = value
    data.setdefault("run", {}).update(name=run.label, dir=".", seed=run.seed)
    ordered = {"run": data.pop("run"), **data}
    return dump_toml(
        ordered, header=f"run {run.label} of the sweep in {sweep.folder} (written by ssd-tui sweep)"
    )


def plan(
    config: Path,
    sets: list[str],
    seeds: int,
    out: Path | None = None,
    rounds: int | None = None,
) -> Sweep:
    """Plan a sweep (nothing written). Every run's config is validated here, so a bad value
    fails before any run starts."""
    config = Path(config)
    if not config.is_file():
        raise SSDError(f"config file not found: {config}")
    if seeds < 1:
        raise SSDError(f"--seeds {seeds}: must be at least 1")
    if rounds is not None and rounds < 0:
        raise SSDError(f"--rounds {rounds}: must be ≥ 0")
    text = config.read_text(encoding="utf-8")
    base_cfg = loads_config(text, source=str(config), base_dir=config.resolve().parent)
    axes: list[tuple[str, list[Any]]] = []
    for s in sets:
        name, values = parse_assignment(s)
        if any(name == k for k, _ in axes):
            raise SSDError(f"--set {name} is given twice; list its values in one --set")
        axes.append((name, values))
    folder = Path(out) if out else Path(base_cfg.run_dir).parent / f"sweep-{config.stem}"
    sweep = Sweep(
        folder=folder,
        base_config=text,
        base_dir=str(config.resolve().parent),
        axes=axes,
        seeds=list(range(base_cfg.run.seed, base_cfg.run.seed + seeds)),
        rounds=rounds,
    )
    grid = itertools.product(*[values for _, values in axes])
    for point in grid:
        setting = {k: v for (k, _), v in zip(axes, point, strict=True)}
        for seed in sweep.seeds:
            run = SweepRun(run_label(setting, seed), setting, seed)
            where = f"{config} with {setting_label(setting) if setting else 'no --set'}"
            # No text: a line number would point into the generated config, not the user's.
            parse_config(
                tomllib.loads(run_config_text(sweep, run)), "", where, base_dir=folder.resolve()
            )
            sweep.runs.append(run)
    if len({r.label for r in sweep.runs}) != len(sweep.runs):
        raise SSDError("two grid points give the same run folder name; use distinct values")
    return sweep


def load(folder: Path) -> Sweep:
    """Read a sweep folder's manifest."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SSDError(f"{folder} is not a sweep folder (no {MANIFEST})")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return Sweep(
            folder=Path(folder),
            base_config=d["base_config"],
            base_dir=d["base_dir"],
            axes=[(k, v) for k, v in d["axes"]],
            seeds=list(d["seeds"]),
            rounds=d.get("rounds"),
            runs=[SweepRun(r["label"], r["setting"], r["seed"]) for r in d["runs"]],
        )
    except (ValueError, KeyError, TypeError) as e:
        raise SSDError(f"{path}: not a readable sweep manifest ({e})") from None


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def run_dbs(path: Path) -> list[tuple[Path, str]]:
    """A run DB, a run folder, or every started run of a sweep folder: [(db, label)]."""
    if path.is_dir() and is_sweep(path):
        sweep = load(path)
        dbs = [(sweep.db_path(r), r.label) for r in sweep.runs if sweep.db_path(r).exists()]
        if not dbs:
            raise SSDError(f"{path}: no run of this sweep has started yet")
        return dbs
    db = resolve_run_db(path)
    return [(db, path.name if db != path else "")]


def prepare(sweep: Sweep) -> Sweep:
    """Write the manifest and run configs, or check they match an existing sweep folder.

    A rerun of the same command finds the same plan and goes on; a different plan in the
    same folder is refused (its runs would mix). Only --rounds may change (extends runs).
    """
    folder = sweep.folder
    if is_sweep(folder):
        old = load(folder)
        same = (
            old.base_config == sweep.base_config
            and json.loads(json.dumps(old.axes)) == json.loads(json.dumps(sweep.axes))
            and old.seeds == sweep.seeds
        )
        if not same:
            raise SSDError(
                f"{folder} holds a different sweep (other config, --set or --seeds); "
                "give another --out, or rerun it with its own settings"
            )
    elif folder.exists() and any(folder.iterdir()):
        raise SSDError(f"{folder} exists and is not a sweep folder; give another --out")
    folder.mkdir(parents=True, exist_ok=True)
    for run in sweep.runs:
        cfg = sweep.run_dir(run) / "config.toml"
        text = run_config_text(sweep, run)
        if not cfg.exists():
            cfg.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(cfg, text)
    _write_atomic(folder / MANIFEST, sweep.to_json())
    return sweep


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- running --------------------------------------------------------------------------------
def target_round(sweep: Sweep, run: SweepRun) -> int:
    if sweep.rounds is not None:
        return sweep.rounds
    cfg = loads_config(
        (sweep.run_dir(run) / "config.toml").read_text(encoding="utf-8"),
        source=str(sweep.run_dir(run) / "config.toml"),
        base_dir=sweep.run_dir(run).resolve(),
    )
    return cfg.run.rounds


def run_state(sweep: Sweep, run: SweepRun) -> tuple[str, int]:
    """('done' | 'partial' | 'pending', rounds done) of one run, read from its DB; a run
    [control] stopped is done (a rerun would stop it again)."""
    db = sweep.db_path(run)
    if not db.exists() or db.stat().st_size == 0:
        # An empty file is a run killed before its first write (SQLite makes the file on
        # connect, the schema comes after): nothing to resume, the run starts over.
        return "pending", 0
    store = RunStore.open(db, readonly=True)
    try:
        done = {r["round"] for r in store.rounds() if r["status"] == "done"}
    finally:
        store.close()
    if runner.run_finished(db, target_round(sweep, run)):
        return "done", len(done)
    return "partial", len(done)


def round0_leaders(sweep: Sweep) -> dict[str, SweepRun]:
    """run label -> the first run of the plan whose round 0 is the same (``round0_diff``):
    the run itself when no run before it has the same."""
    cfgs = {r.label: load_config(sweep.run_dir(r) / "config.toml") for r in sweep.runs}
    out: dict[str, SweepRun] = {}
    for i, run in enumerate(sweep.runs):
        same = (r for r in sweep.runs[: i + 1] if not round0_diff(cfgs[r.label], cfgs[run.label]))
        out[run.label] = next(same)
    return out


def run_sweep(sweep: Sweep, threads: int = 0, say: Any = print) -> int:
    """Run every unfinished run in plan order, one engine at a time. Returns an exit status:
    0 when all are done, 130 when interrupted (rerun to resume), else the failing run's."""
    n = len(sweep.runs)
    leaders = round0_leaders(sweep)
    for i, run in enumerate(sweep.runs, 1):
        state, _ = run_state(sweep, run)
        if state == "done":
            say(f"[{i}/{n}] {run.label}: done, skipped")
            continue
        verb = "resuming" if state == "partial" else "starting"
        lead = leaders[run.label]
        shared = f" (round 0 from {lead.label})" if lead is not run else ""
        say(f"[{i}/{n}] {run.label}: {verb}{shared}")
        cmd = runner.engine_command(
            sweep.run_dir(run) / "config.toml",
            rounds=sweep.rounds,
            threads=threads,
            round0_from=sweep.run_dir(lead).resolve() if lead is not run else None,
        )
        try:
            # The engine dies with the sweep, so a rerun finds no engine holding the run.
            code = runner.run_engine(cmd, die_with_parent=True)
        except KeyboardInterrupt:
            return 130
        if code == 130 or code == -signal.SIGINT:
            say(f"interrupted in {run.label}; run the same command again to resume")
            return 130
        if code != 0:
            raise SSDError(
                f"run {run.label} failed (exit {code}); see its output above, fix it and "
                "rerun the sweep to resume"
            )
    return 0


# ---- the summary ----------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with no values; sd None with one)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class RunCurve:
    """What one run contributes to a sweep's table and charts."""

    label: str
    seed: int
    setting: dict[str, Any]
    t_eval: float
    ks: list[int]
    rounds: dict[int, dict[str, float]]  # round → {'pass@1': …, 'pass@5': …, 'easy': …}
    baseline: dict[float, float]  # T_eval → round 0 pass@1 (the temperature-only baseline)


@dataclass
class SettingSummary:
    """One grid point over its seeds: mean and sd per round and metric."""

    setting: dict[str, Any]
    label: str
    runs: list[RunCurve]
    ks: list[int]
    rounds: dict[int, dict[str, tuple[float | None, float | None, int]]]  # name → (mean, sd, n)
    baseline: dict[float, tuple[float | None, float | None, int]]

    def best_baseline(self) -> tuple[float, float] | None:
        vals = [(t, m) for t, (m, _, _) in self.baseline.items() if m is not None]
        return max(vals, key=lambda x: x[1]) if vals else None

    def best_ssd(self) -> tuple[int, float] | None:
        vals = [(r, v["pass@1"][0]) for r, v in self.rounds.items() if r >= 1 and "pass@1" in v]
        vals = [(r, m) for r, m in vals if m is not None]
        return max(vals, key=lambda x: x[1]) if vals else None


DIFFICULTIES = ("easy", "medium", "hard")


def read_curve(db: Path, label: str = "", seed: int = 0, setting: dict | None = None) -> RunCurve:
    """A run's pass@k per round at T_eval, by difficulty, and its round-0 baseline."""
    # Here, not at the top: the app's start screen imports this module (through the
    # workbench) and the analysis costs it 18-38 ms it does not need until a sweep opens.
    from ssd_tui.analysis import rounds as an
    from ssd_tui.store.reads import run_config

    store = RunStore.open(db, readonly=True)
    try:
        cfg = run_config(store)
        t_eval = cfg.eval.temperature
        rounds: dict[int, dict[str, float]] = {}
        for point in an.ssd_curve(store, t_eval):
            rounds[point["round"]] = {k: v for k, v in point.items() if k.startswith("pass@")}
        for m in store.metrics("eval", "pass@1"):
            if m["scope"] == "all" or abs(m["temperature"] - t_eval) >= 1e-6:
                continue
            if m["value"] is not None and m["round"] in rounds:
                rounds[m["round"]][m["scope"]] = m["value"]
        baseline = {
            p["temperature"]: p["pass@1"] for p in an.baseline_curve(store) if "pass@1" in p
        }
        return RunCurve(
            label or db.parent.name,
            seed,
            setting or {},
            t_eval,
            sorted(set(cfg.eval.k)),
            rounds,
            baseline,
        )
    finally:
        store.close()


def _aggregate(values: list[float]) -> tuple[float | None, float | None, int]:
    m, sd = mean_sd(values)
    return m, sd, len(values)


def summarize(sweep: Sweep) -> list[SettingSummary]:
    """Per grid point: pass@k per round (mean ± sd over the seeds whose run reached that
    round) and the temperature-only baseline. Runs without a DB yet are left out."""
    out = []
    for setting in sweep.settings():
        curves = [
            read_curve(sweep.db_path(r), r.label, r.seed, r.setting)
            for r in sweep.runs
            if r.setting == setting and sweep.db_path(r).exists()
        ]
        out.append(summarize_curves(curves, setting))
    return out


def summarize_curves(curves: list[RunCurve], setting: dict[str, Any]) -> SettingSummary:
    ks = sorted({k for c in curves for k in c.ks}) or [1]
    names = [f"pass@{k}" for k in ks] + list(DIFFICULTIES)
    rounds: dict[int, dict[str, tuple[float | None, float | None, int]]] = {}
    for rnd in sorted({r for c in curves for r in c.rounds}):
        rounds[rnd] = {
            name: _aggregate([c.rounds[rnd][name] for c in curves if name in c.rounds.get(rnd, {})])
            for name in names
        }
    temps = sorted({t for c in curves for t in c.baseline})
    baseline = {t: _aggregate([c.baseline[t] for c in curves if t in c.baseline]) for t in temps}
    return SettingSummary(setting, setting_label(setting), curves, ks, rounds, baseline)


def fmt_mean_sd(cell: tuple[float | None, float | None, int] | None) -> str:
    if cell is None or cell[0] is None:
        return "—"
    m, sd, _ = cell
    return f"{m:.3f}" if sd is None or math.isnan(sd) else f"{m:.3f} ± {sd:.3f}"


def tables(sweep: Sweep, summaries: list[SettingSummary]) -> list[Any]:
    """The README-style tables (rich): pass@1 by round per setting with pass@k and the gain
    over round 0; pass@1 by difficulty; the temperature-only baseline."""
    from rich.table import Table

    ks = [k for k in sorted({k for s in summaries for k in s.ks}) if k != 1]
    rounds = sorted({r for s in summaries for r in s.rounds})
    last = rounds[-1] if rounds else 0
    n_seeds = len(sweep.seeds)
    t1 = Table(
        title=f"pass@1 at T_eval by round (mean ± sd over {n_seeds} seed(s))", header_style="bold"
    )
    cols = ["setting", *[f"round {r}" for r in rounds], *[f"pass@{k} r{last}" for k in ks]]
    for col in [*cols, f"Δ r{last} vs r0", "runs"]:
        t1.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for s in summaries:
        first, end = s.rounds.get(0, {}).get("pass@1"), s.rounds.get(last, {}).get("pass@1")
        gain = (
            f"{end[0] - first[0]:+.3f}" if first and end and None not in (first[0], end[0]) else "—"
        )
        t1.add_row(
            setting_label(s.setting),
            *[fmt_mean_sd(s.rounds.get(r, {}).get("pass@1")) for r in rounds],
            *[fmt_mean_sd(s.rounds.get(last, {}).get(f"pass@{k}")) for k in ks],
            gain,
            f"{len(s.runs)}/{n_seeds}",
        )
    t2 = Table(title=f"pass@1 by difficulty, round {last}", header_style="bold")
    for col in ["setting", *DIFFICULTIES]:
        t2.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for s in summaries:
        cells = s.rounds.get(last, {})
        t2.add_row(setting_label(s.setting), *[fmt_mean_sd(cells.get(d)) for d in DIFFICULTIES])
    temps = sorted({t for s in summaries for t in s.baseline})
    t3 = Table(
        title="temperature-only baseline: the base model's pass@1 at each T_eval (round 0)",
        header_style="bold",
    )
    for col in ["setting", *[f"T={t:g}" for t in temps], "best baseline", "best SSD", "gain"]:
        t3.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for s in summaries:
        b, best = s.best_baseline(), s.best_ssd()
        t3.add_row(
            setting_label(s.setting),
            *[fmt_mean_sd(s.baseline.get(t)) for t in temps],
            f"{b[1]:.3f} (T={b[0]:g})" if b else "—",
            f"{best[1]:.3f} (r{best[0]})" if best else "—",
            f"{best[1] - b[1]:+.3f}" if b and best else "—",
        )
    return [t1, t2, t3]


def print_tables(sweep: Sweep, console: Any = None) -> list[SettingSummary]:
    from rich.console import Console

    # Wide when written to a file or pipe: a wrapped "mean ± sd" cell is hard to read.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    summaries = summarize(sweep)
    for t in tables(sweep, summaries):
        console.print(t)
    return summaries
