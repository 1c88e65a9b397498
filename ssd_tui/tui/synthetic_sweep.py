"""A deterministic synthetic sweep (settings × seeds of small run DBs, a sweep.json), for the
app's overlay tests, screenshots and benchmarks/bench_overlay.py. No textual here.

Each run holds what the overlay and the training-curve screens read: the metrics rows of
its rounds (pass@1/pass@4 at T_eval and by difficulty, the temperature-only baseline at
round 0) and a train_log per round. The numbers follow a simple rule so screenshots are
stable: a setting's pass@1 moves by its own step per round, seeds scatter around it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssd_tui import sweep as sw
from ssd_tui.config import loads_config
from ssd_tui.store import RunStore
from ssd_tui.tui.synthetic import BASE_TS, CONFIG_TEMPLATE

T_EVAL = 0.8  # CONFIG_TEMPLATE's


def _pass1(setting_i: int, seed: int, rnd: int) -> float:
    step = (0.04, -0.03, 0.02, 0.06, -0.01, 0.03)[setting_i % 6]
    noise = ((seed * 37 + rnd * 11 + setting_i * 5) % 7 - 3) / 300
    return round(min(0.95, max(0.02, 0.45 + step * rnd + (noise if rnd else 0))), 4)


def build_sweep(
    folder: Path,
    temperatures: tuple[float, ...] = (0.5, 0.8),
    seeds: int = 2,
    rounds: int = 3,
    steps: int = 6,
) -> Path:
    """Write a sweep over sampling.temperature × `seeds` seeds into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = CONFIG_TEMPLATE.format(
        name="synthetic",
        model="/models/tiny-coder",
        train="train.jsonl",
        bench="bench.jsonl",
        rounds=rounds,
    )
    plan = sw.Sweep(
        folder=folder,
        base_config=base,
        base_dir=str(folder),
        axes=[("sampling.temperature", list(temperatures))],
        seeds=list(range(seeds)),
        rounds=rounds,
    )
    for si, t in enumerate(temperatures):
        for seed in range(seeds):
            setting = {"sampling.temperature": t}
            run = sw.SweepRun(sw.run_label(setting, seed), setting, seed)
            plan.runs.append(run)
            _build_run(plan.run_dir(run), run, si, rounds, steps)
    (folder / sw.MANIFEST).write_text(plan.to_json())
    return folder


def _build_run(run_dir: Path, run: sw.SweepRun, si: int, rounds: int, steps: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = CONFIG_TEMPLATE.format(
        name=run.label,
        model="/models/tiny-coder",
        train="train.jsonl",
        bench="bench.jsonl",
        rounds=rounds,
    ).replace("temperature = 1.6", f"temperature = {run.setting['sampling.temperature']}")
    text = text.replace("seed = 0", f"seed = {run.seed}")
    (run_dir / "config.toml").write_text(text)
    cfg = loads_config(text, source=str(run_dir / "config.toml"), base_dir=run_dir)
    store = RunStore.open(run_dir / "run.db", create=True)
    store.init_run(run.label, "/models/tiny-coder", cfg.to_json(), text, str(run_dir))
    for rnd in range(rounds + 1):
        stages = (
            ["evaluate", "baseline", "analyse"]
            if rnd == 0
            else ["sample", "train", "evaluate", "analyse"]
        )
        store.plan_round(rnd, stages)
        p1 = _pass1(si, run.seed, rnd)
        values = {"all": {"pass@1": p1, "pass@4": min(1.0, p1 + 0.2)}}
        for d, shift in (("easy", 0.2), ("medium", 0.0), ("hard", -0.2)):
            values[d] = {"pass@1": round(min(1.0, max(0.0, p1 + shift)), 4)}
        store.set_metrics(rnd, "eval", T_EVAL, values)
        if rnd == 0:
            for t, v in ((0.6, 0.5), (1.0, 0.38)):
                store.set_metrics(0, "eval", t, {"all": {"pass@1": v + run.seed / 200}})
        else:
            store.add_train_log(
                rnd,
                [
                    {
                        "step": s,
                        "loss": round(1.6 / (1 + 0.3 * s + 0.5 * rnd), 4),
                        "lr": 1e-3 * (1 - s / steps),
                    }
                    for s in range(steps)
                ],
            )
        for stage in stages:
            store.start_stage(rnd, stage, total=1)
            store.end_stage(rnd, stage, "done")
    with store.transaction() as c:
        c.execute("UPDATE runs SET created_at=?", (BASE_TS,))
        c.execute("UPDATE rounds SET started_at=?, finished_at=?", (BASE_TS, BASE_TS + 60))
        c.execute(
            "UPDATE stages SET started_at=?, finished_at=?, seconds=10", (BASE_TS, BASE_TS + 10)
        )
        c.execute("UPDATE meta SET value=? WHERE key='created_at'", (json.dumps(BASE_TS),))
    store.close()
