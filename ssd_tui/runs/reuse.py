"""A round's evaluation taken from another run instead of computed again (docs/rounds.md,
docs/workbench.md): the runs of a sweep that differ only in keys acting after round 0
share one round 0, and a branch's round 0 is its parent's round K.

What is reused: the evaluation samples at one temperature, byte for byte (text, tokens,
token statistics) with their verdicts; the metrics are then computed from them here, as an
evaluation computes them, and the stage says where its samples came from
(``stages.reused_from``). Only when the two evaluations are the same one:

- the same model: weights hash, the round's adapter hash and the weights it goes on;
- the same problems (the hash of the problems as loaded) and the same seed and evaluation
  settings (``config.round0_diff``);
- the same sampling engine, as chosen here and as recorded by the source's stage;
- a finished stage in the source, holding every sample at that temperature, judged;
- and no sample of this round at that temperature yet (a stage begun here stays here).

Otherwise the round is evaluated here, and the reason goes to the run's log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_tui.config import RunConfig, round0_diff
from ssd_tui.store.reads import run_config
from ssd_tui.store.run_store import RunStore


@dataclass(frozen=True)
class RoundSource:
    """Another run's round whose evaluation may stand for one of this run's."""

    db: Path  # its run database
    round: int


def model_identity(store: RunStore, rnd: int, run_dir: Path) -> tuple[str, str, str]:
    """(weights hash, the weights its adapter goes on, adapter hash) of a round's model:
    the base is '' for the run's own model, else the resolved folder."""
    row = next((r for r in store.rounds() if r["round"] == rnd), None) or {}
    base = row.get("base_path") or ""
    if base:
        base = str((run_dir / base).resolve()) if not Path(base).is_absolute() else base
    return store.meta("model_sha256") or "", base, row.get("adapter_sha256") or ""


def _eval_sha(store: RunStore) -> str:
    sets = json.loads(store.meta("problems") or "{}")
    return (sets.get("eval") or {}).get("sha256", "")


def _why_not_same_run(src: RunStore, src_cfg: RunConfig, store: RunStore, cfg: RunConfig) -> str:
    """Why the source run's evaluation is not this run's ('' when it is)."""
    keys = round0_diff(src_cfg, cfg)
    if keys:
        return f"its config differs in {', '.join(keys)}"
    if not _eval_sha(src) or _eval_sha(src) != _eval_sha(store):
        return "its evaluation problems differ (sha256)"
    return ""


def _why_not_same_stage(
    src: RunStore, src_cfg: RunConfig, source: RoundSource, temperature: float, engine: str
) -> str:
    """Why the source round has no finished evaluation at ``temperature`` drawn by
    ``engine`` ('' when it has)."""
    stage = "evaluate" if abs(temperature - src_cfg.eval.temperature) < 1e-9 else "baseline"
    row = src.stage(source.round, stage)
    if row is None or row["status"] != "done":
        return f"its round {source.round} has no finished evaluation at T={temperature:g}"
    drawn = [x for x in (row.get("engine") or "").split(", ") if x]
    if drawn and drawn != [engine]:
        return f"its samples were drawn by {', '.join(drawn)}, this run samples with {engine}"
    want = len(src.problems("eval")) * src_cfg.eval.samples_per_problem
    have = src.count_samples(source.round, "eval", temperature)
    if have != want or src.unjudged(source.round, temperature):
        return (
            f"its round {source.round} holds {have} of {want} judged samples at T={temperature:g}"
        )
    return ""


def borrow(
    store: RunStore,
    cfg: RunConfig,
    rnd: int,
    stage: str,
    temperature: float,
    source: RoundSource,
    engine: str,
    problem_ids: dict[str, int],
) -> tuple[int, str, dict[str, Any]]:
    """Copy the source round's evaluation at ``temperature`` into round ``rnd`` (marking
    ``stage`` as reused) when it is the same evaluation. Returns (samples copied, why not
    when none were, the source as recorded)."""
    if store.count_samples(rnd, "eval", temperature):
        return 0, "this round has samples of its own at this temperature already", {}
    if not source.db.exists():
        return 0, f"{source.db} does not exist", {}
    src = RunStore.open(source.db, readonly=True)
    try:
        src_cfg = run_config(src)
        why = _why_not_same_run(src, src_cfg, store, cfg) or _why_not_same_stage(
            src, src_cfg, source, temperature, engine
        )
        mine = model_identity(store, rnd, cfg.run_dir)
        theirs = model_identity(src, source.round, source.db.parent)
        if not why and (not mine[0] or mine != theirs):
            why = f"its round {source.round}'s model is not this round's model"
        if why:
            return 0, why, {}
        info = src.run_info() or {}
        recorded = {
            "run": str(source.db.parent.resolve()),
            "name": info.get("name", ""),
            "run_uid": src.meta("run_uid") or "",
            "round": source.round,
        }
        rows = src.eval_rows(source.round, temperature)
    finally:
        src.close()
    return store.import_eval_rows(rnd, stage, rows, problem_ids, recorded), "", recorded
