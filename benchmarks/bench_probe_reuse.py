"""Round 0's fork/lock probe read from the store, against scoring its samples again.

    python benchmarks/bench_probe_reuse.py             # the demo's round 0 (examples/demo.toml)
    python benchmarks/bench_probe_reuse.py --quick     # 12 problems, no baseline temperatures
    python benchmarks/bench_probe_reuse.py --config examples/qwen-coder-0.5b-cpu.toml --max-eval 16

Runs round 0 of the config once, with this tree's code, in a temporary folder (the
transformers engine: the sampler records the probe's extras as it draws), then on that
same run, modes alternating (read, scored, scored, read, ...) so a change in the
machine's load hits both:

- ``read``: round 0's analyse stage as a run does it: the probe samples' statistics read
  from the store where their tokens are the probe's (docs/analysis.md §2);
- ``scored``: the same stage scoring every probe sample again (``Pipeline.reuse_stored =
  False``: the probe before the change). The sampler's model is loaded in both, as it is
  in a run (the evaluate stage before it used it).

And what recording the extras costs the sampling: round 0's evaluation batches decoded by
the run's ``HFSampler`` with the extras (``extra``) and without (``plain``), alternating,
the same seeds (the script checks that the tokens are the same). Printed: the machine,
the date, ``uptime`` before and after, every repetition, the medians, and the net saving
(analyse saved minus the sampling's extra cost). Each analyse also checks that the probe's
arrays equal the other mode's within 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_config(src: Path, folder: Path, quick: bool, max_eval: int) -> Path:
    """``src`` with round 0 only, absolute paths, the transformers engine, in ``folder``."""
    from ssd_tui.config import load_config

    cfg = load_config(src)
    data = cfg.to_dict()
    data["run"].update(dir=str(folder / "run"), rounds=0, engine="hf")
    data["model"]["path"] = str(cfg.resolve(cfg.model.path))
    for key in ("train_prompts", "benchmark"):
        value = data["data"][key]
        if value and cfg.resolve(value).exists():
            data["data"][key] = str(cfg.resolve(value))
    if quick:
        data["data"]["max_eval_problems"] = 12
        data["eval"]["baseline_temperatures"] = []
    if max_eval:
        data["data"]["max_eval_problems"] = max_eval
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path = folder / "round0.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def analyse(pipe, reuse: bool) -> tuple[float, dict, str]:
    """Round 0's analyse stage once; (seconds, probe arrays, the probe's log line)."""
    pipe.reuse_stored = reuse
    t0 = time.perf_counter()
    pipe.stage_analyse(0)
    seconds = time.perf_counter() - t0
    line = [e["message"] for e in pipe.store.events() if "fork/lock probe" in e["message"]][-1]
    return seconds, pipe.store.probe_stats(0), line


def same_probe(a: dict, b: dict) -> float:
    """The largest |difference| between two probes' float arrays (token ids must match)."""
    import numpy as np

    assert a.keys() == b.keys()
    worst = 0.0
    for sid in a:
        for k, v in a[sid].items():
            if k in ("token_ids", "offsets"):
                assert np.array_equal(v, b[sid][k]), (sid, k)
            elif len(v):
                worst = max(worst, float(np.max(np.abs(v - b[sid][k]))))
    assert worst <= 1e-4, worst
    return worst


def sampling_work(pipe) -> list:
    """Round 0's evaluation batches at T_eval as the evaluate stage hands them to the sampler."""
    from ssd_tui.runs.pipeline import derive_seed

    cfg = pipe.cfg
    params = pipe._with_probe_stats(0, cfg.eval_sampling(seed=cfg.run.seed))
    size, problems = cfg.eval.batch_size, pipe.eval_problems
    return [
        (
            [pipe.render(p) for p in problems[b : b + size]],
            replace(
                params, seed=derive_seed(cfg.run.seed, 0, "eval", params.temperature, b // size)
            ),
        )
        for b in range(0, len(problems), size)
    ]


def decode(sampler, work: list, extra: bool) -> tuple[float, list]:
    if not extra:
        work = [(prompts, replace(p, extra_truncation=None)) for prompts, p in work]
    t0 = time.perf_counter()
    out = [outs for _, outs in sorted(sampler.generate_batches(work), key=lambda x: x[0])]
    return time.perf_counter() - t0, [[c.token_ids for per in b for c in per] for b in out]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "demo.toml"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-eval", type=int, default=0, help="cut the benchmark (0: the config's)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} · {platform.node()} · {os.cpu_count()} CPUs")
    print(f"before: {uptime()}")
    with tempfile.TemporaryDirectory() as tmp:
        measure(write_config(Path(args.config), Path(tmp), args.quick, args.max_eval), args.reps)
    print(f"after:  {uptime()}")


def measure(config: Path, reps: int) -> None:
    from ssd_tui.config import load_config
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore

    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    t0 = time.perf_counter()
    assert pipe.run() == "done"
    print(
        f"round 0 of {cfg.run.name}: {time.perf_counter() - t0:.0f} s, stages "
        + ", ".join(f"{s['stage']} {s['seconds']:.1f} s" for s in store.stages(0))
    )
    print(next(e["message"] for e in store.events() if "fork/lock probe" in e["message"]))
    times: dict[str, list[float]] = {"read": [], "scored": [], "extra": [], "plain": []}
    probes: dict[str, dict] = {}
    for i in range(reps):
        for mode in ("read", "scored") if i % 2 == 0 else ("scored", "read"):
            seconds, probes[mode], line = analyse(pipe, mode == "read")
            times[mode].append(seconds)
            print(f"  analyse {mode:6s} {seconds:6.2f} s   {line.split(': ', 1)[1]}")
    print(
        f"  probe arrays read vs scored: max |diff| {same_probe(probes['read'], probes['scored']):.1e}"
    )
    sampler, work = pipe.engines.sampler(None), sampling_work(pipe)
    tokens = {}
    for i in range(reps):
        for mode in ("extra", "plain") if i % 2 == 0 else ("plain", "extra"):
            seconds, tokens[mode] = decode(sampler, work, mode == "extra")
            times[mode].append(seconds)
            print(f"  decode  {mode:6s} {seconds:6.2f} s   ({len(work)} batches)")
    assert tokens["extra"] == tokens["plain"], "the extras changed what was drawn"
    med = {k: statistics.median(v) for k, v in times.items()}
    saved, cost = med["scored"] - med["read"], med["extra"] - med["plain"]
    print(
        f"medians: analyse read {med['read']:.2f} s, scored {med['scored']:.2f} s "
        f"(saved {saved:.2f} s, {saved / med['scored']:.0%}); decode with the extras "
        f"{med['extra']:.2f} s, without {med['plain']:.2f} s (cost {cost:+.2f} s); "
        f"net {saved - cost:+.2f} s per round 0"
    )
    pipe.release_sampler()
    store.close()


if __name__ == "__main__":
    main()
