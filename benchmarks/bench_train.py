"""The LoRA training stage, seconds per example: the old step against the current one.

    python benchmarks/bench_train.py                                  # demo model, demo.toml's [train]
    python benchmarks/bench_train.py --model ~/.cache/ssd-tui/models/gguf/<hash> \\
        --examples 4 --batch-size 1 --grad-accum 2 --max-length 896 --reps 1

Examples: the demo's training prompts with their reference solutions (real code, the
lengths spread as programs do), tokenised by the model's own tokenizer. Each mode is one
``HFTrainer.train`` call (model load included, as in the pipeline's train stage) in this
process, modes alternating (A B B A ...) so a change in the machine's load hits both:

- ``before``: the step as it was: micro-batches of ``batch_size`` in the shuffled order,
  padded to their longest row (``[train] group_by_length = false``), fp32.
- ``after``: the default: each optimiser step's examples in length-grouped passes.
- ``bf16`` (with --bf16): ``after`` plus ``[train] autocast = "bf16"``.
- ``ckpt`` (with --ckpt): ``after`` plus ``[train] gradient_checkpointing = true``.

Printed per mode: median wall s/example, median CPU s/example (this process's CPU time:
steadier than wall time on a shared machine), the padded share of the computed tokens, and the first
and last step's loss (``before`` and ``after`` take the same steps: same loss).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ssd_tui.engine.base import LoraSettings, TrainSettings  # noqa: E402
from ssd_tui.engine.hf import HFTrainer, load_tokenizer, plan_passes  # noqa: E402


def examples(n: int) -> list[tuple[str, str]]:
    rows = (ROOT / "assets" / "demo" / "train_prompts.jsonl").read_text().splitlines()
    out = []
    for line in rows[:n]:
        r = json.loads(line)
        out.append((r["prompt"], r["canonical_solution"]))
    return out


def padding_share(trainer: HFTrainer, feats: list, per_step: int, group: bool) -> float:
    """Padded positions / computed positions over one epoch in the trainer's seeded order."""
    import torch

    s = trainer.settings
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(s.seed)).tolist()
    real = padded = 0
    for k in range(0, len(order), per_step):
        for p in plan_passes([feats[i] for i in order[k : k + per_step]], s.batch_size, group):
            width = max(len(ids) for ids, _ in p)
            real += sum(len(ids) for ids, _ in p)
            padded += width * len(p)
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2, help="runs per mode")
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 autocast")
    ap.add_argument("--ckpt", action="store_true", help="also measure gradient checkpointing")
    args = ap.parse_args()
    model = os.path.expanduser(args.model)
    data = examples(args.examples)
    base = TrainSettings(
        learning_rate=1e-3,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        autocast="off",
    )
    modes = {
        "before": TrainSettings(**{**base.__dict__, "group_by_length": False}),
        "after": base,
    }
    if args.bf16:
        modes["bf16"] = TrainSettings(**{**base.__dict__, "autocast": "bf16"})
    if args.ckpt:
        modes["ckpt"] = TrainSettings(**{**base.__dict__, "gradient_checkpointing": True})
    lora = LoraSettings(r=8, alpha=16, dropout=0.0)
    names = list(modes)
    order = []
    for i in range(args.reps):
        order += names if i % 2 == 0 else names[::-1]

    tok = load_tokenizer(model)
    probe = HFTrainer(model, lora, base)
    feats = probe._encode(tok, data)
    per_step = args.batch_size * args.grad_accum
    times: dict[str, list[float]] = {m: [] for m in names}
    cpu: dict[str, list[float]] = {m: [] for m in names}
    losses: dict[str, tuple[float, float]] = {}
    print(f"{len(feats)} examples, {sum(len(f[0]) for f in feats)} tokens; load {os.getloadavg()}")
    for mode in order:
        trainer = HFTrainer(model, lora, modes[mode])
        with tempfile.TemporaryDirectory() as d:
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train(data, Path(d) / "a")
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        times[mode].append(dt / len(feats))
        cpu[mode].append(dc / len(feats))
        losses[mode] = (trainer.history[0]["loss"], trainer.history[-1]["loss"])
        print(f"  {mode:6} {dt / len(feats):.3f} s/example, CPU {dc / len(feats):.3f}", flush=True)
    print(
        f"\n{model}: batch {args.batch_size} × accum {args.grad_accum}, max_length "
        f"{args.max_length}; load {os.getloadavg()[0]:.1f}"
    )
    head = f"{'mode':8}{'s/example':>11}{'CPU s/ex':>10}{'padding':>9}"
    print(head + f"{'loss first':>12}{'loss last':>11}")
    for m in names:
        group = modes[m].group_by_length
        pad = padding_share(probe, feats, per_step, group)
        first, last = losses[m]
        row = f"{m:8}{statistics.median(times[m]):>11.3f}{statistics.median(cpu[m]):>10.3f}"
        print(row + f"{pad:>9.0%}{first:>12.4f}{last:>11.4f}")
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"after / before: {a / b:.2f}×")


if __name__ == "__main__":
    main()
