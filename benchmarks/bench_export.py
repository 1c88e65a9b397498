"""Time `export_run` on a synthetic run database of realistic size.

    python benchmarks/bench_export.py                 # ~100k samples, 200 tokens each
    python benchmarks/bench_export.py --samples 20000 --tokens 100 --keep /tmp/bench

Builds RUN_DIR/run.db through RunStore (rounds 0..3: eval samples every round, training
samples in rounds 1..3), then times each export kind and prints seconds and sizes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_tui.outputs.export import export_run  # noqa: E402
from ssd_tui.store.run_store import RunStore, SampleRow  # noqa: E402

ROUNDS = 3
EVAL_PROBLEMS, EVAL_N = 164, 20
BATCH = 512


def build(db: Path, samples: int, tokens: int) -> None:
    rng = np.random.default_rng(0)
    s = RunStore.open(db, create=True)
    s.init_run("bench", "Qwen/Qwen2.5-Coder-1.5B", "{}", "", str(db.parent))
    eval_per_round = EVAL_PROBLEMS * EVAL_N
    train_per_round = max(0, samples - (ROUNDS + 1) * eval_per_round) // ROUNDS
    n_train_problems = max(1, train_per_round // 4)
    prob = lambda i, d: SimpleNamespace(  # noqa: E731
        id=f"p{i}",
        prompt=f"def f{i}(x):\n    '''doc'''\n" * 8,
        tests="assert True",
        entry_point=f"f{i}",
        difficulty=d,
        source="bench",
    )
    train_ids = list(
        s.add_problems("train", [prob(i, None) for i in range(n_train_problems)]).values()
    )
    eval_ids = list(
        s.add_problems("eval", [prob(i, "easy") for i in range(EVAL_PROBLEMS)]).values()
    )
    # A pool of varied completions and token arrays, larger than gzip's 32 KiB window,
    # so that compressed sizes are not flattered by repetition.
    words = ["return", "x", "for", "in", "range(n)", "if", "else", "sorted(", ")", "+", "1", "key"]
    pool = []
    for _ in range(64):
        text = " ".join(rng.choice(words, tokens)) + "\n"
        vals = rng.random(tokens).astype(np.float32).tolist()
        pool.append((text, rng.integers(0, 150_000, tokens).tolist(), vals))

    def write(rnd: int, purpose: str, temp: float, keys: list[tuple[int, int]]) -> None:
        for i in range(0, len(keys), BATCH):
            rows = []
            for n, (pid, j) in enumerate(keys[i : i + BATCH]):
                text, tok, vals = pool[(i + n) % len(pool)]
                code = text if purpose == "eval" else None
                rows.append(
                    SampleRow(
                        rnd,
                        purpose,
                        pid,
                        j,
                        temp,
                        20,
                        0.95,
                        0.0,
                        text,
                        code,
                        "stop",
                        tok,
                        vals,
                        vals,
                        vals,
                    )
                )
            s.add_samples(rows)

    for rnd in range(ROUNDS + 1):
        s.plan_round(rnd, ["evaluate"] if rnd == 0 else ["sample", "train", "evaluate"])
        if rnd:
            write(
                rnd,
                "train",
                1.1,
                [
                    (train_ids[i % len(train_ids)], i // len(train_ids))
                    for i in range(train_per_round)
                ],
            )
            s.set_adapter(rnd, f"/runs/bench/adapters/round-{rnd}", "0" * 64)
        write(rnd, "eval", 0.6, [(p, j) for p in eval_ids for j in range(EVAL_N)])
        s.add_verdicts([(r["id"], "passed", None, 0.01) for r in s.unjudged(rnd, 0.6)])
        s.set_metrics(rnd, "eval", 0.6, {"all": {"pass@1": 0.5}})
    s.close()


def mib(p: Path) -> str:
    return f"{p.stat().st_size / 2**20:8.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--tokens", type=int, default=200, help="tokens per sample")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "run.db"
    try:
        if not db.exists():
            t = time.perf_counter()
            build(db, a.samples, a.tokens)
            print(f"built {db} in {time.perf_counter() - t:.1f}s")
        src = RunStore.open(db, readonly=True)
        total = src.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        r2 = src.conn.execute("SELECT COUNT(*) FROM samples WHERE round = 2").fetchone()[0]
        src.close()
        print(f"source: {total} samples ({r2} in round 2), {a.tokens} tokens each, {mib(db)}")
        cases = [
            ("round 2 -> .db", dict(round=2)),
            ("whole run -> .db", dict()),
            ("round 2 -> .db.gz", dict(round=2, compress=True)),
            ("round 2 -> .jsonl", dict(round=2, jsonl=True)),
            ("whole run -> .jsonl", dict(jsonl=True)),
            ("whole run -> .jsonl.gz", dict(jsonl=True, compress=True)),
        ]
        out_dir = work / "out"
        out_dir.mkdir(exist_ok=True)
        for label, kw in cases:
            t = time.perf_counter()
            out = export_run(db, out_dir, **kw)
            dt = time.perf_counter() - t
            print(f"{label:24s} {dt:7.2f}s  {mib(out)}  {out.name}")
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
