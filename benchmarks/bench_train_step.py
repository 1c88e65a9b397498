"""One LoRA training step with and without the prompt-logits cut (`completion_loss_sum`).

    python benchmarks/bench_train_step.py --model ~/.cache/ssd-tui/models/gguf/<hash>
    python benchmarks/bench_train_step.py --model assets/demo-model --prompt 60 --completion 40

The trainer computes logits only from the position before the first completion token on
(`logits_to_keep`); the peer is the same step with every position's logits, as the
trainer did before. Each measurement is a fresh process (peak RSS only grows within one):
load the model in float32, add LoRA (r 8, all linear layers), run --steps forward + backward
passes on one row of --prompt prompt tokens and --completion completion tokens (random ids:
time and memory depend on the shapes, not the values), and report the median step time
and the process's peak RSS. Modes alternate (cut, full, full, cut, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def one_run(model_path: str, prompt: int, completion: int, steps: int, cut: bool) -> dict:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="a local model folder")
    ap.add_argument("--prompt", type=int, default=486, help="prompt tokens (LeetCode chat mean)")
    ap.add_argument("--completion", type=int, default=170, help="completion tokens")
    ap.add_argument("--steps", type=int, default=3, help="steps per process (first is warm-up)")
    ap.add_argument("--reps", type=int, default=2, help="processes per mode")
    ap.add_argument("--child", choices=["cut", "full"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = os.path.expanduser(args.model)
    if args.child:
        r = one_run(model, args.prompt, args.completion, args.steps, args.child == "cut")
        print(json.dumps(r))
        return
    order = []
    for i in range(args.reps):
        order += ["cut", "full"] if i % 2 == 0 else ["full", "cut"]
    results: dict[str, list[dict]] = {"cut": [], "full": []}
    for mode in order:
        cmd = [sys.executable, __file__, "--model", model, "--child", mode]
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


if __name__ == "__main__":
    main()
