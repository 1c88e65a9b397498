"""LoRA training, measured two ways: the whole train stage (s/example) or one step (time, memory).

    python benchmarks/bench_train.py                                  # stage, demo model, demo.toml's [train]
    python benchmarks/bench_train.py --examples 16 --reps 1           # stage, smallest useful run
    python benchmarks/bench_train.py --examples 64 --batch-size 4 --grad-accum 4 --reps 3 --bf16 --ckpt
    python benchmarks/bench_train.py --model ~/.cache/ssd-tui/models/gguf/<hash> \\
        --examples 4 --batch-size 1 --grad-accum 2 --max-length 896 --reps 1
    python benchmarks/bench_train.py --mode step --model ~/.cache/ssd-tui/models/gguf/<hash>
    python benchmarks/bench_train.py --mode step --prompt 60 --completion 40   # demo model

--mode stage (default): the train stage, seconds per example, grouped passes against the
old step. Examples: the demo's training prompts with their reference solutions (real code,
the lengths spread as programs do), tokenised by the model's own tokenizer. Each mode is
one ``HFTrainer.train`` call (model load included, as in the pipeline's train stage) in
this process, modes alternating (A B B A ...) so a change in the machine's load hits both:

- ``before``: micro-batches of ``batch_size`` in the shuffled order, padded to their
  longest row (``[train] group_by_length = false``), fp32.
- ``after``: the default: each optimiser step's examples in length-grouped passes.
- ``bf16`` (with --bf16): ``after`` plus ``[train] autocast = "bf16"``.
- ``ckpt`` (with --ckpt): ``after`` plus ``[train] gradient_checkpointing = true``.

Printed per mode: median wall s/example, median CPU s/example (this process's CPU time:
steadier than wall time on a shared machine), the padded share of the computed tokens,
and the first and last step's loss (``before`` and ``after`` take the same steps: same
loss); then after / before.

--mode step: one LoRA training step with and without the prompt-logits cut
(``completion_loss_sum``). The trainer computes logits only from the position before the
first completion token on (``logits_to_keep``); the peer (``full``) is the same step with
every position's logits. Each measurement is a fresh process (peak RSS only grows within
one): load the model in float32, add LoRA (r 8, all linear layers), run --steps forward +
backward passes on one row of --prompt prompt tokens and --completion completion tokens
(random ids: time and memory depend on the shapes, not the values), and report the median
step time (the first step is warm-up) and the process's peak RSS. Modes alternate (cut,
full, full, cut, ...); printed: each process's step, peak RSS and loss, then the medians
and cut / full for time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --mode stage ------------------------------------------------------------------------


def examples(n: int) -> list[tuple[str, str]]:
    rows = (ROOT / "assets" / "demo" / "train_prompts.jsonl").read_text().splitlines()
    out = []
    for line in rows[:n]:
        r = json.loads(line)
        out.append((r["prompt"], r["canonical_solution"]))
    return out


def padding_share(trainer, feats: list, per_step: int, group: bool) -> float:
    """Padded positions / computed positions over one epoch in the trainer's seeded order."""
    import torch

    from ssd_tui.engine.hf import plan_passes

    s = trainer.settings
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(s.seed)).tolist()
    real = padded = 0
    for k in range(0, len(order), per_step):
        for p in plan_passes([feats[i] for i in order[k : k + per_step]], s.batch_size, group):
            width = max(len(ids) for ids, _ in p)
            real += sum(len(ids) for ids, _ in p)
            padded += width * len(p)
    return 1 - real / padded


def bench_stage(args: argparse.Namespace, model: str) -> None:
    from ssd_tui.engine.base import LoraSettings, TrainSettings
    from ssd_tui.engine.hf import HFTrainer, load_tokenizer

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


# --mode step -------------------------------------------------------------------------


def one_step_run(model_path: str, prompt: int, completion: int, steps: int, cut: bool) -> dict:
    """One process's measurement: load, add LoRA, --steps forward + backward passes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ssd_tui.engine.hf import completion_loss_sum

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        model_path, torch_dtype=torch.float32, local_files_only=True
    )
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    model.train()
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    vocab = base.config.vocab_size
    n = prompt + completion
    ids = torch.randint(0, vocab, (1, n))
    labels = ids.clone()
    labels[:, :prompt] = -100
    attn = torch.ones_like(ids)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = completion_loss_sum(model, ids, attn, labels, cut_prompt_logits=cut)
        (loss / completion).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {
        "cut": cut,
        "step_s": statistics.median(times[1:] if steps > 1 else times),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loaded_rss_gb": rss_loaded,
        "loss": float(loss) / completion,
        "vocab": vocab,
    }


def bench_step(args: argparse.Namespace, model: str) -> None:
    order = []
    for i in range(args.reps):
        order += ["cut", "full"] if i % 2 == 0 else ["full", "cut"]
    results: dict[str, list[dict]] = {"cut": [], "full": []}
    for mode in order:
        cmd = [sys.executable, __file__, "--mode", "step", "--model", model, "--child", mode]
        cmd += ["--prompt", str(args.prompt), "--completion", str(args.completion)]
        cmd += ["--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results[mode].append(r)
        print(
            f"{mode:4}  step {r['step_s']:.2f} s  peak RSS {r['peak_rss_gb']:.2f} GB "
            f"(after load {r['loaded_rss_gb']:.2f})  loss {r['loss']:.4f}",
            flush=True,
        )
    load = os.getloadavg()[0]
    med = {m: statistics.median(x["step_s"] for x in results[m]) for m in results}
    peak = {m: max(x["peak_rss_gb"] for x in results[m]) for m in results}
    vocab = results["cut"][0]["vocab"]
    print(
        f"\nvocab {vocab}, 1 × ({args.prompt} prompt + {args.completion} completion) tokens, "
        f"load {load:.1f}"
    )
    print(f"{'':6}{'step s (median)':>16}{'peak RSS GB':>14}")
    for m in ("full", "cut"):
        print(f"{m:6}{med[m]:>16.2f}{peak[m]:>14.2f}")
    print(
        f"cut / full: time {med['cut'] / med['full']:.2f}×, "
        f"peak RSS {peak['cut'] / peak['full']:.2f}×"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--mode",
        choices=("stage", "step"),
        default="stage",
        help="stage: the train stage, s/example (default); step: one step, cut vs full logits",
    )
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model"), help="model folder")
    ap.add_argument("--reps", type=int, default=2, help="runs (stage) or processes (step) per mode")
    st = ap.add_argument_group("--mode stage")
    st.add_argument("--examples", type=int, default=128)
    st.add_argument("--batch-size", type=int, default=16)
    st.add_argument("--grad-accum", type=int, default=1)
    st.add_argument("--max-length", type=int, default=256)
    st.add_argument("--bf16", action="store_true", help="also measure bf16 autocast")
    st.add_argument("--ckpt", action="store_true", help="also measure gradient checkpointing")
    sp = ap.add_argument_group("--mode step")
    sp.add_argument("--prompt", type=int, default=486, help="prompt tokens (LeetCode chat mean)")
    sp.add_argument("--completion", type=int, default=170, help="completion tokens")
    sp.add_argument("--steps", type=int, default=3, help="steps per process (first is warm-up)")
    sp.add_argument("--child", choices=["cut", "full"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = os.path.expanduser(args.model)
    if args.child:
        r = one_step_run(model, args.prompt, args.completion, args.steps, args.child == "cut")
        print(json.dumps(r))
    elif args.mode == "step":
        bench_step(args, model)
    else:
        bench_stage(args, model)


if __name__ == "__main__":
    main()
