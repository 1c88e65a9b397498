"""Measure the demo model: pass@1 / pass@k on the eval set at a few temperatures, and speed.

    python -m ssd_tui.demo.measure --model assets/demo-model --out measure.json

A deliberately plain loop, independent of the project's sampler and evaluator, so
the model card's numbers can be reproduced from this package alone: batched
``model.generate`` with temperature and top-p (top-k off), completions cut at the
demo's stop strings, each program run in its own ``python -I`` subprocess with a
timeout, and the unbiased pass@k estimator.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ssd_tui.evaluation.passk import pass_at_k

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pretrain.py

STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def cut(text: str, stops: Sequence[str] = STOP) -> str:
    """The completion up to the first stop string."""
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end]


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def run_test(program: str, timeout_s: float = 5.0) -> bool:
    """True when the program exits 0 (its asserts pass) within the timeout."""
    try:
        res = subprocess.run(
            [sys.executable, "-I", "-S", "-c", program],
            capture_output=True,
            timeout=timeout_s,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    rows: int = 40,
    seed: int = 0,
    top_k: int = 0,
) -> tuple[list[list[str]], int, float]:
    """``n`` completions per prompt; returns (completions, generated tokens, seconds)."""
    import torch

    tok.padding_side = "left"
    per = max(1, rows // n)
    out: list[list[str]] = []
    tokens = 0
    t0 = time.time()
    for b in range(0, len(prompts), per):
        chunk = list(prompts[b : b + per])
        enc = tok(chunk, return_tensors="pt", padding=True)
        torch.manual_seed(seed * 100003 + b)
        with torch.no_grad():
            gen = model.generate(
                **enc,
                do_sample=temperature > 0,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        for i in range(len(chunk)):
            texts = []
            for j in range(n):
                row = new[i * n + j].tolist()
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id) + 1]
                row = [t for t in row if t != tok.pad_token_id]
                tokens += len(row)
                texts.append(cut(tok.decode(row, skip_special_tokens=True)))
            out.append(texts)
    return out, tokens, time.time() - t0


def evaluate(
    model: Any,
    tok: Any,
    problems: Sequence[dict],
    n: int,
    temperature: float,
    top_p: float,
    ks: Sequence[int],
    max_new_tokens: int,
    seed: int = 0,
    top_k: int = 0,
) -> dict[str, Any]:
    """pass@k overall and per difficulty for one temperature, and a few samples."""
    comps, tokens, secs = generate(
        model,
        tok,
        [p["prompt"] for p in problems],
        n,
        temperature,
        top_p,
        max_new_tokens,
        seed=seed,
        top_k=top_k,
    )
    programs = []
    for p, cs in zip(problems, comps, strict=True):
        tail = "\n\n" + p["tests"] + "\n\ncheck(" + p["entry_point"] + ")\n"
        programs += [p["prompt"] + c + tail for c in cs]
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(run_test, programs))
    res: dict[str, Any] = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "n": n,
        "problems": len(problems),
    }
    groups: dict[str, list[int]] = {"all": list(range(len(problems)))}
    if len(problems) > 60:
        groups["first_60"] = list(range(60))  # what the demo config evaluates
    for i, p in enumerate(problems):
        groups.setdefault(p["difficulty"], []).append(i)
    for name, idx in groups.items():
        cs = [sum(verdicts[i * n : (i + 1) * n]) for i in idx]
        res[name] = {
            f"pass@{k}": round(sum(pass_at_k(n, c, k) for c in cs) / len(cs), 4)
            for k in ks
            if k <= n
        }
        res[name]["problems"] = len(idx)
    flat = [c for cs in comps for c in cs]
    res["distinct_completions"] = round(len(set(flat)) / len(flat), 3)
    res["mean_tokens"] = round(tokens / len(flat), 1)
    # Useful tokens (up to EOS) per second of generate: a batch runs until its longest row stops.
    res["useful_tokens_per_s"] = round(tokens / secs, 1)
    res["examples"] = [
        {"id": problems[i]["id"], "completion": comps[i][0], "passed": verdicts[i * n]}
        for i in range(3)
    ]
    return res


def speed(
    model: Any, tok: Any, prompts: Sequence[str], batch: int = 16, steps: int = 96
) -> dict[str, float]:
    """Raw sampling throughput: one batch of ``batch`` prompts at T=1 for exactly ``steps``
    new tokens each (EOS ignored, so every row works every step), after a warm-up."""
    import torch

    tok.padding_side = "left"
    enc = tok(list(prompts[:batch]), return_tensors="pt", padding=True)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=8, min_new_tokens=8, **kw)
        t0 = time.time()
        model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, **kw)
        secs = time.time() - t0
    tokens = batch * steps
    return {
        "batch": batch,
        "tokens": tokens,
        "seconds": round(secs, 2),
        "tokens_per_s": round(tokens / secs, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure the demo model's pass@k and speed.")
    ap.add_argument("--model", type=Path, default=Path("assets/demo-model"))
    ap.add_argument("--problems", type=Path, default=Path("assets/demo/eval.jsonl"))
    ap.add_argument("--limit", type=int, default=0, help="first N problems (0 = all)")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.6, 0.8, 1.0])
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=0, help="0 = off")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    problems = [json.loads(line) for line in args.problems.read_text(encoding="utf-8").splitlines()]
    if args.limit:
        problems = problems[: args.limit]
    report: dict[str, Any] = {
        "model": str(args.model),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "threads": args.threads,
        "speed": speed(model, tok, [p["prompt"] for p in problems]),
        "runs": [],
    }
    print(json.dumps(report["speed"]), flush=True)
    for t in args.temperatures:
        r = evaluate(
            model,
            tok,
            problems,
            args.n,
            t,
            args.top_p,
            (1, args.n),
            args.max_new_tokens,
            args.seed,
            args.top_k,
        )
        report["runs"].append(r)
        by = " ".join(f"{d}={r[d]['pass@1']:.2f}" for d in ("easy", "medium", "hard") if d in r)
        print(
            f"T={t}: pass@1 {r['all']['pass@1']:.3f} pass@{args.n} {r['all'][f'pass@{args.n}']:.3f} "
            f"({by}) distinct {r['distinct_completions']} tokens {r['mean_tokens']}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
