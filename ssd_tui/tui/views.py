"""What the dashboard, the compare view and the token view show, composed in their
thread workers: the store's rows (`ssd_tui.store.reads`), the analysis' rules (round
state, fork/lock classes, the verdict) and whether an engine holds the run
(`ssd_tui.tui.process`). No textual here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ssd_tui.analysis import flips
from ssd_tui.analysis.behaviour import RECORDER_VERSION, entropy
from ssd_tui.analysis.positions import KINDS, classify_positions
from ssd_tui.analysis.round_state import round_state
from ssd_tui.analysis.verdict import baseline_verdict
from ssd_tui.config import AnalysisSection
from ssd_tui.runs.runner import engine_pid
from ssd_tui.store.reads import DashboardRows, RoundRow, RunReader, StageRow, TokenStats

# Metric names tried (in order) for the rounds table's "diversity" column.
DIVERSITY_COLUMN = ("distinct_2", "unique_share")
DIFFICULTY_ORDER = ("easy", "medium", "hard")

Points = list[tuple[int, float]]


# ---- the dashboard --------------------------------------------------------------------------
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
    curve: dict[str, Points]
    baseline: tuple[float, float] | None  # (temperature, best T-only pass@1)
    events: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    engine_pid: int | None
    last_event_id: int = 0
    diversity_name: str = ""
    provisional: tuple[int, float] | None = None  # pass@1 so far of a round being evaluated
    sandbox: list[str] = field(default_factory=list)  # isolations that ran its tests
    engines: list[str] = field(default_factory=list)  # sampler engines that drew
    verdict: str | None = None  # SSD vs the temperature-only baseline (the CLI's line)
    probe: dict[str, Points] = field(default_factory=dict)  # fork/lock stats
    last_stage_start: float | None = None  # the latest started_at of any stage
    planned_rounds: int = 0  # [run] rounds: the last round of the run's plan
    # Each round's per-problem pass counts at T_eval: McNemar's test between any two rounds.
    pass_counts: dict[int, flips.PassCounts] = field(default_factory=dict)


def snapshot(reader: RunReader, after_event_id: int, now: float) -> Snapshot | None:
    """The dashboard's picture of the run at `now`: events after `after_event_id`."""
    # The engine before the rows: one that ends while they are read shows as a change of
    # pid at the next poll, never as a stage left 'interrupted' by an engine seen gone.
    pid = engine_pid(reader.db_path)
    rows = reader.dashboard_rows(after_event_id)
    if rows is None:
        return None
    cfg = rows.config
    t_eval, k = cfg.eval.temperature, max(cfg.eval.k)
    at_t = {
        (m["round"], m["name"], m["scope"]): m["value"]
        for m in rows.metrics
        if m["temperature"] == t_eval
    }
    div_name = next((n for n in DIVERSITY_COLUMN if any(m["name"] == n for m in rows.metrics)), "")
    rounds = _round_rows(rows, at_t, k, div_name, pid is not None, now)
    return Snapshot(
        data_version=rows.data_version,
        name=rows.info["name"],
        model=rows.info["model"],
        created_at=rows.info["created_at"],
        k=k,
        t_eval=t_eval,
        rounds=rounds,
        running=[x for x in rows.stages if x.status == "running"],
        curve=_curve(at_t, k),
        baseline=_baseline(rows.metrics, t_eval),
        events=rows.events,
        warnings=rows.warnings,
        engine_pid=pid,
        last_event_id=rows.events[-1]["id"] if rows.events else after_event_id,
        diversity_name=div_name,
        provisional=_provisional(reader, rounds, t_eval),
        sandbox=rows.sandbox,
        engines=rows.engines,
        verdict=reader.use(lambda s: baseline_verdict(s, cfg)),  # `ssd-tui run` ends with it
        probe=rows.probe,
        last_stage_start=max((x.started_at for x in rows.stages if x.started_at), default=None),
        planned_rounds=cfg.run.rounds,
        pass_counts=reader.use(lambda s: flips.round_pass_counts(s, t_eval)) or {},
    )


def _round_rows(
    rows: DashboardRows,
    at_t: dict[tuple[int, str, str], float | None],
    k: int,
    div_name: str,
    engine_alive: bool,
    now: float,
) -> list[RoundRow]:
    warnings: dict[int, int] = {}
    for w in rows.warnings:
        warnings[w["round"]] = warnings.get(w["round"], 0) + 1
    out = []
    for r in rows.rounds:
        rnd = r["round"]
        st = [x for x in rows.stages if x.round == rnd]
        status, stage = round_state(r["status"], st, engine_alive)
        # Time of a running stage counts only while its engine is alive.
        seconds = sum(x.seconds for x in st) + sum(
            max(0.0, now - x.started_at)
            for x in st
            if x.status == "running" and x.started_at and engine_alive
        )
        out.append(
            RoundRow(
                rnd,
                stage,
                status,
                at_t.get((rnd, "pass@1", "all")),
                # with k = [1] there is no pass@k: leave the column empty
                at_t.get((rnd, f"pass@{k}", "all")) if k > 1 else None,
                rows.samples[rnd],
                at_t.get((rnd, div_name, "all")) if div_name else None,
                seconds,
                warnings.get(rnd, 0),
                rows.suspects.get(rnd, 0),
            )
        )
    return out


def _curve(at_t: dict[tuple[int, str, str], float | None], k: int) -> dict[str, Points]:
    """pass@1 and pass@k by round, then pass@1 per difficulty (easy, medium, hard first)."""
    curve: dict[str, Points] = {}
    for key in ("pass@1", f"pass@{k}"):
        pts = sorted(
            (rnd, v)
            for (rnd, n, sc), v in at_t.items()
            if n == key and sc == "all" and v is not None
        )
        if pts:
            curve[key] = pts
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
    return curve


def _baseline(metrics: list[dict[str, Any]], t_eval: float) -> tuple[float, float] | None:
    """(temperature, pass@1) of the best base model, when round 0 evaluated other T_eval
    values than the run's (the temperature-only baseline)."""
    base = [
        (m["temperature"], m["value"])
        for m in metrics
        if m["round"] == 0
        and m["name"] == "pass@1"
        and m["scope"] == "all"
        and m["value"] is not None
    ]
    return max(base, key=lambda x: x[1]) if any(t != t_eval for t, _ in base) else None


def _provisional(
    reader: RunReader, rounds: list[RoundRow], t_eval: float
) -> tuple[int, float] | None:
    """pass@1 so far of the last round still being evaluated: the mean over the problems
    with a judged sample."""
    provisional = None
    for r in rounds:
        if r.pass1 is None and r.status != "done":
            judged = [(n, c) for _name, _d, n, c in reader.pass_counts(r.round, t_eval) if n]
            if judged:
                provisional = (r.round, sum(c / n for n, c in judged) / len(judged))
    return provisional


# ---- problems × rounds ------------------------------------------------------------------------
@dataclass
class ProblemGrid:
    """Each evaluation problem's solved share per round at T_eval, its flips, its
    behaviours per round, and McNemar's test between consecutive rounds."""

    t_eval: float
    rounds: list[int]
    rows: list[flips.GridRow]
    behaviours: dict[tuple[str, int], tuple[int, float]]  # (problem, round) → (classes, entropy)
    steps: list[flips.McNemar]  # round r−1 → r, for each round after the first


def problem_grid(reader: RunReader) -> ProblemGrid | None:
    """The grid of a run (None without a DB or config yet)."""
    cfg = reader.config()
    if cfg is None:
        return None
    t = cfg.eval.temperature

    def read(s: Any) -> tuple[dict[int, flips.PassCounts], list[tuple[int, str, str, int]]]:
        return flips.round_pass_counts(s, t), s.behaviour_counts(t, RECORDER_VERSION)

    got = reader.use(read)
    if got is None:
        return None
    by_round, counts = got
    classes: dict[tuple[str, int], list[str]] = {}
    for rnd, name, cls, n in counts:
        classes.setdefault((name, rnd), []).extend([cls] * n)
    rounds = sorted(by_round)
    return ProblemGrid(
        t,
        rounds,
        flips.grid(by_round),
        {key: (len(set(c)), entropy(c)) for key, c in classes.items()},
        [flips.compare(a, b, by_round[a], by_round[b]) for a, b in pairwise(rounds)],
    )


def sort_grid(rows: list[flips.GridRow], key: str) -> list[flips.GridRow]:
    """'problem' (as the set lists them), 'difficulty' (easy → hard, then the problem
    order) or 'flips' (most first, then the problem order)."""
    order = {id(r): i for i, r in enumerate(rows)}
    if key == "difficulty":
        rank = {d: i for i, d in enumerate(DIFFICULTY_ORDER)}
        return sorted(rows, key=lambda r: (rank.get(r.difficulty or "", 9), order[id(r)]))
    if key == "flips":
        return sorted(rows, key=lambda r: (-r.flips, order[id(r)]))
    return list(rows)


# ---- the token view -------------------------------------------------------------------------
@dataclass
class TokenRow:
    index: int
    token_id: int
    text: str
    prob: float
    entropy: float
    tail: float
    kind: str  # fork | lock | ""


def token_rows(
    reader: RunReader,
    sample_id: int,
    decode: Callable[[list[int]], list[str]] | None = None,
    probe_round: int | None = None,
) -> tuple[list[TokenRow], dict[str, Any]]:
    """Per-token statistics with a fork/lock class each, and their summary.

    With `probe_round`, the statistics are those of round `probe_round`'s model
    re-scoring this sample (exact top-1 probabilities); otherwise the sample's own,
    recorded when it was generated: the store keeps p(sampled token), not the top-1's,
    so a lock is then p(sampled) ≥ lock_top1, a lower bound (lock_top1 > 0.5 makes the
    sampled token the top-1; a lock whose sampled token came from the tail is not marked,
    its low entropy still shows in the colour).
    """
    stats = reader.token_stats(sample_id, probe_round)
    if stats is None:
        return [], {}
    cfg = reader.config()
    acfg = cfg.analysis if cfg else AnalysisSection()
    ids = [int(x) for x in stats.token_ids]
    n = len(ids)
    texts = decode(ids) if decode is not None else [f"⟨{i}⟩" for i in ids]
    logprobs = _column(stats.logprobs, n)
    entropies = _column(stats.entropies, n)
    tails = _column(stats.tail_mass, n)
    probs = [math.exp(lp) if not math.isnan(lp) else float("nan") for lp in logprobs]
    top1 = _column(stats.top1, n) if stats.top1 is not None else probs
    # float64, as each value is shown: a float32 column would meet a threshold a float64
    # value misses (0.9 as float32 is ≥ 0.9).
    kinds = classify_positions(np.array(entropies), np.array(top1), acfg)
    out = [
        TokenRow(i, tid, texts[i], probs[i], entropies[i], tails[i], KINDS[kinds[i]])
        for i, tid in enumerate(ids)
    ]
    return out, _token_summary(out, stats, acfg)


def _column(arr: np.ndarray | None, n: int) -> list[float]:
    """n floats of a statistic; NaN past its end (a statistic not recorded)."""
    return [float(arr[i]) if arr is not None and i < len(arr) else float("nan") for i in range(n)]


def _token_summary(
    rows: list[TokenRow], stats: TokenStats, acfg: AnalysisSection
) -> dict[str, Any]:
    n = len(rows)
    summary: dict[str, Any] = {
        "tokens": n,
        "forks": sum(t.kind == "fork" for t in rows),
        "locks": sum(t.kind == "lock" for t in rows),
        "mean_entropy": (sum(t.entropy for t in rows) / n) if n else float("nan"),
        "mean_tail": (sum(t.tail for t in rows) / n) if n else float("nan"),
        "fork_entropy": acfg.fork_entropy,
        "lock_top1": acfg.lock_top1,
        "exact_top1": stats.top1 is not None,
    }
    train_tail = stats.train_tail_mass
    if train_tail is not None and len(train_tail) == n and n:
        kept = 1.0 - train_tail.astype(float)
        locks = [t.index for t in rows if t.kind == "lock"]
        summary["train_kept"] = float(kept.mean())
        summary["lock_train_kept"] = float(kept[locks].mean()) if locks else float("nan")
    return summary
