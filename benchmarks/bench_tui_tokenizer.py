"""The token view's first load: the run's tokenizer through `tokenizers` (what the app
uses for a model folder with a tokenizer.json) against `transformers.AutoTokenizer`
(what it used before, when the view showed "loading tokens…" for 4-5.5 s).

Each load runs in a fresh Python process (imports included, as the app pays them once),
interleaved (ours, peer, peer, ours, ...); the median of the repetitions is printed.

    python benchmarks/bench_tui_tokenizer.py [--model assets/demo-model] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OURS = """
import time; t = time.perf_counter()
from ssd_tui.tui.refs import load_tokenizer
tok = load_tokenizer({model!r}); tok.decode([1])
print(time.perf_counter() - t)
"""
PEER = """
import time; t = time.perf_counter()
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({model!r}); tok.decode([1])
print(time.perf_counter() - t)
"""


def once(code: str, model: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code.format(model=model)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ours, peer = [], []
    for i in range(args.reps):
        order = [(OURS, ours), (PEER, peer)] if i % 2 == 0 else [(PEER, peer), (OURS, ours)]
        for code, into in order:
            into.append(once(code, args.model))
    load = os.getloadavg()[0]
    print(f"load average (1 min) {load:.1f} on {os.cpu_count()} cores")
    print(f"tokenizers (app)       median {statistics.median(ours):.2f} s  {ours}")
    print(f"AutoTokenizer (before) median {statistics.median(peer):.2f} s  {peer}")


if __name__ == "__main__":
    main()
