"""Sample search: what the full-text index costs, kept in sync by triggers in the run DB
(what the engine would pay per sample) or built lazily in the sidecar (what ssd-tui does).

    python benchmarks/bench_search.py [--samples 20000] [--batch 32]

1. Ingest: `--samples` eval samples (~300-character programs, 96 tokens of statistics each)
   written through `RunStore.add_samples` in batches of `--batch` (one transaction per
   generation batch, like the pipeline) into (a) a plain run DB, (b) a run DB whose samples
   table has sqlite-utils FTS triggers (`enable_fts(..., create_triggers=True)`), segment by
   segment interleaved so machine load hits both alike.
2. Lazy: the first search of (a) indexes everything in the sidecar (ssd_tui.store.search); a
   search after one more batch indexes only that batch; the query itself.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlite_utils  # noqa: E402

from ssd_tui.config import RunConfig  # noqa: E402
from ssd_tui.store.run_store import RunStore, SampleRow  # noqa: E402
from ssd_tui.store.search import search, sync_index  # noqa: E402

WORDS = "for while if return range len x y i j item total result append True False None".split()


def program(rng: random.Random) -> str:
    lines = ["    total = 0"]
    for _ in range(rng.randint(4, 10)):
        lines.append("    " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))))
    return "\n".join(lines) + "\n    return total\n"


def new_store(path: Path, fts: bool, n_problems: int) -> tuple[RunStore, list[int]]:
    store = RunStore.open(path, create=True)
    store.init_run("b", "m", RunConfig().to_json(), "", str(path.parent))
    ids = store.add_problems(
        "eval",
        [
            SimpleNamespace(
                id=f"p{i}",
                prompt="def f():\n",
                tests="",
                entry_point="f",
                difficulty="easy",
                source="b",
            )
            for i in range(n_problems)
        ],
    )
    if fts:
        sqlite_utils.Database(store.conn)["samples"].enable_fts(
            ["completion", "code"], create_triggers=True
        )
    return store, list(ids.values())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    rng = random.Random(0)
    n_problems = 200
    per_problem = -(-args.samples // n_problems)
    rows: list[SampleRow] = []
    for i in range(args.samples):
        text = program(rng)
        rows.append(
            SampleRow(
                0,
                "eval",
                0,
                i // n_problems,
                0.8,
                0,
                1.0,
                0.0,
                text,
                text,
                "stop",
                list(range(96)),
                [0.0] * 96,
                [0.0] * 96,
                [0.0] * 96,
            )
        )
    plain, pids = new_store(tmp / "plain" / "run.db", False, n_problems)
    trig, _ = new_store(tmp / "trig" / "run.db", True, n_problems)
    for i, r in enumerate(rows):
        r.problem_id = pids[i % n_problems]
    t = {"plain": 0.0, "trig": 0.0}
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    for k, b in enumerate(batches):
        for name, store in (
            (("plain", plain), ("trig", trig)) if k % 2 else (("trig", trig), ("plain", plain))
        ):
            t0 = time.perf_counter()
            store.add_samples(b)
            t[name] += time.perf_counter() - t0
    n = len(rows)
    print(
        f"samples {n} ({per_problem} per problem), batch {args.batch}, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"ingest, plain run DB:        {t['plain']:.2f} s  ({1e6 * t['plain'] / n:.0f} µs/sample)"
    )
    print(
        f"ingest, FTS triggers in it:  {t['trig']:.2f} s  ({1e6 * t['trig'] / n:.0f} µs/sample, "
        f"+{100 * (t['trig'] / t['plain'] - 1):.0f}%)"
    )
    size = lambda p: sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))  # noqa: E731
    print(
        f"file size: plain {size(plain.path) / 1e6:.1f} MB, with FTS {size(trig.path) / 1e6:.1f} MB"
    )
    plain.close()
    trig.close()
    db = tmp / "plain" / "run.db"
    t0 = time.perf_counter()
    _, added = sync_index(db)
    first = time.perf_counter() - t0
    print(
        f"lazy: first search indexes {added} samples in {first:.2f} s ({1e6 * first / added:.0f} µs/sample)"
    )
    store = RunStore.open(db)
    more = [SampleRow(**{**r.__dict__, "round": 1}) for r in rows[: args.batch]]
    store.add_samples(more)
    store.close()
    t0 = time.perf_counter()
    _, added = sync_index(db)
    print(
        f"lazy: catch-up after one batch ({added} samples): {1e3 * (time.perf_counter() - t0):.0f} ms"
    )
    t0 = time.perf_counter()
    hits, total = search(db, "while True", limit=200)
    print(
        f"search 'while True' (up to date): {total} hits in {1e3 * (time.perf_counter() - t0):.0f} ms"
    )
    print(
        f"sidecar size {Path(str(db).replace('run.db', 'run.search.db')).stat().st_size / 1e6:.1f} MB"
    )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
