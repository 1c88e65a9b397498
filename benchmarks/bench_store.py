"""Run database: ingest rate of a 100k-sample round, and the dashboard's queries on 1M samples.

    python benchmarks/bench_store.py                  # 100k ingest; 1M DB built once in /tmp
    python benchmarks/bench_store.py --quick          # 10k ingest, queries on it (< 1 min)
    python benchmarks/bench_store.py --big-db /tmp/bench-store-1m/run.db --rebuild

1. Ingest: one round of `--samples` training samples with `--tokens` tokens of statistics
   each, written through `RunStore.add_samples` in batches of `--batch` rows (the demo's
   sampling batch: one transaction per generation batch, like the pipeline), interleaved
   segment by segment with a peer: the same rows, pre-packed, written with a bare
   `executemany` into the same schema in the same transactions (the floor for SQLite
   here). Then ingest's share of a round: the sample stage alone takes
   samples x tokens / (sampler tokens per second) -- the rate is an argument, by default
   the one bench_sampler.py measured for the demo model on this machine.
2. Queries: the dashboard's reads on the 1M-sample DB (rounds 1..10 of 100k samples:
   ~96.7k train + 3,280 eval with verdicts; round 0: eval only), and the same reads on
   the 100k DB from part 1 as the peer (how they scale with the run's size). The samples
   page is timed as `RunStore.samples(limit=50, offset=...)` and, as a peer, the app's
   two-step page (keys from the index first, then 50 rows by id).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_tui.store.reads import RunReader, SampleFilter  # noqa: E402
from ssd_tui.store.run_store import RunStore, SampleRow, pack  # noqa: E402

EVAL_PROBLEMS, EVAL_N, T_EVAL, T_TRAIN = 164, 20, 0.6, 1.1
TRAIN_PROBLEMS = 10_000
DEFAULT_TPS = 2_000.0  # demo-sized model, HFSampler, batch 32, 2 cores (bench_sampler.py, README)
STATUSES = ("passed", "failed", "error", "timeout")


class Pool:
    """64 varied completions with token statistics, as the sampler hands them over (lists)."""

    def __init__(self, tokens: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        words = ["return", "x", "for", "in", "range(n)", "if", "else", "sorted(", ")", "+", "1"]
        self.items = []
        for _ in range(64):
            text = " ".join(rng.choice(words, tokens)) + "\n"
            ids = rng.integers(0, 150_000, tokens).tolist()
            lp = (-rng.exponential(1.0, tokens)).astype(np.float32).tolist()
            ent = rng.exponential(1.0, tokens).astype(np.float32).tolist()
            tail = rng.random(tokens).astype(np.float32).tolist()
            self.items.append((text, ids, lp, ent, tail))

    def row(self, k: int, rnd: int, purpose: str, pid: int, idx: int, temp: float) -> SampleRow:
        text, ids, lp, ent, tail = self.items[k % len(self.items)]
        code = "def f(x):\n" + text if purpose == "eval" else None
        return SampleRow(
            rnd, purpose, pid, idx, temp, 20, 0.95, 0.0, text, code, "length", ids, lp, ent, tail
        )


def _problem(i: int, purpose: str) -> SimpleNamespace:
    return SimpleNamespace(
        id=f"{purpose}{i}",
        prompt=f"def f{i}(x):\n    '''Return something about x.'''\n",
        tests="def check(c):\n    assert c(1) == 1\n",
        entry_point=f"f{i}",
        difficulty=("easy", "medium", "hard")[i % 3] if purpose == "eval" else None,
        source="bench",
    )


def new_store(db: Path) -> tuple[RunStore, list[int], list[int]]:
    s = RunStore.open(db, create=True)
    s.init_run("bench", "demo-model", "{}", "", str(db.parent))
    train = list(
        s.add_problems("train", [_problem(i, "train") for i in range(TRAIN_PROBLEMS)]).values()
    )
    evals = list(
        s.add_problems("eval", [_problem(i, "eval") for i in range(EVAL_PROBLEMS)]).values()
    )
    return s, train, evals


def train_keys(train_ids: list[int], n: int) -> list[tuple[int, int]]:
    return [(train_ids[i % len(train_ids)], i // len(train_ids)) for i in range(n)]


# ---------------------------------------------------------------------------- ingest

_INSERT_SAMPLE = (
    "INSERT OR IGNORE INTO samples (round, purpose, problem_id, sample_idx, temperature, top_k, top_p, "
    "min_p, completion, code, n_tokens, logprob_sum, mean_entropy, mean_tail_mass, finish_reason, "
    "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class RawWriter:
    """The peer: same schema and transactions; rows pre-packed, ids assigned by us."""

    def __init__(self, db: Path, pool: Pool):
        self.conn = sqlite3.connect(str(db), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.next_id = 1 + (self.conn.execute("SELECT MAX(id) FROM samples").fetchone()[0] or 0)
        self.packed = [
            (len(ids), float(np.sum(lp)), float(np.mean(ent)), float(np.mean(tail)),
             pack(ids, "<i4"), pack(lp), pack(ent), pack(tail))
            for _, ids, lp, ent, tail in pool.items
        ]  # fmt: skip
        self.texts = [t for t, *_ in pool.items]

    def write(self, keys: list[tuple[int, int]], k0: int, rnd: int) -> None:
        now = time.time()
        samples, stats = [], []
        for n, (pid, idx) in enumerate(keys):
            k = (k0 + n) % len(self.packed)
            nt, lps, ment, mtail, b_ids, b_lp, b_ent, b_tail = self.packed[k]
            sid = self.next_id
            self.next_id += 1
            samples.append((sid, rnd, "train", pid, idx, T_TRAIN, 20, 0.95, 0.0, self.texts[k],
                            None, nt, lps, ment, mtail, "length", now))  # fmt: skip
            stats.append((sid, b_ids, b_lp, b_ent, b_tail))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", samples)
        c.executemany("INSERT INTO token_stats VALUES (?,?,?,?,?)", stats)
        c.execute("COMMIT")


def ingest(work: Path, samples: int, batch: int, pool: Pool, segments: int) -> dict[str, float]:
    """Seconds for `samples` rows on each side, interleaved in `segments` segments."""
    sides: dict[str, Callable[[list[tuple[int, int]], int], None]] = {}
    stores = []
    for name in ("ours", "raw"):
        s, train_ids, _ = new_store(work / f"ingest-{name}.db")
        stores.append(s)
        s.plan_round(1, ["sample", "train", "evaluate", "analyse"])
        if name == "ours":
            sides[name] = lambda keys, k0, s=s: s.add_samples(
                [
                    pool.row(k0 + n, 1, "train", pid, idx, T_TRAIN)
                    for n, (pid, idx) in enumerate(keys)
                ]
            )
        else:
            s.close()
            raw = RawWriter(work / f"ingest-{name}.db", pool)
            sides[name] = lambda keys, k0, raw=raw: raw.write(keys, k0, 1)
    keys = train_keys(train_ids, samples)
    seconds = dict.fromkeys(sides, 0.0)
    seg = -(-samples // segments)
    for g, lo in enumerate(range(0, samples, seg)):
        part = keys[lo : lo + seg]
        order = list(sides) if g % 2 == 0 else list(reversed(sides))
        for name in order:
            t = time.perf_counter()
            for i in range(0, len(part), batch):
                sides[name](part[i : i + batch], lo + i)
            seconds[name] += time.perf_counter() - t
    stores[0].close()
    return seconds


# ---------------------------------------------------------------------------- the 1M DB


def build_db(db: Path, total: int, rounds: int, pool: Pool, batch: int = 512) -> None:
    """Rounds 0..`rounds`: 3,280 eval samples (164 x 20, with verdicts) each; training
    samples in rounds 1.. (the rest of `total`, evenly). Written through add_samples."""
    s, train_ids, eval_ids = new_store(db)
    eval_keys = [(p, j) for p in eval_ids for j in range(EVAL_N)]
    n_train = (total - (rounds + 1) * len(eval_keys)) // rounds
    per_round = n_train + len(eval_keys)
    rng = np.random.default_rng(1)
    k = 0
    for rnd in range(rounds + 1):
        stages = ["evaluate", "analyse"] if rnd == 0 else ["sample", "train", "evaluate", "analyse"]
        s.plan_round(rnd, stages)
        for st in stages:
            s.start_stage(rnd, st, total=per_round)
        if rnd:
            keys = train_keys(train_ids, n_train)
            for i in range(0, len(keys), batch):
                s.add_samples([pool.row(k + n, rnd, "train", p, j, T_TRAIN)
                               for n, (p, j) in enumerate(keys[i : i + batch])])  # fmt: skip
                k += batch
            s.set_adapter(rnd, f"/runs/bench/adapters/round-{rnd:03d}", "0" * 64)
        for i in range(0, len(eval_keys), batch):
            s.add_samples([pool.row(k + n, rnd, "eval", p, j, T_EVAL)
                           for n, (p, j) in enumerate(eval_keys[i : i + batch])])  # fmt: skip
            k += batch
        todo = s.unjudged(rnd, T_EVAL)
        status = rng.choice(STATUSES, len(todo), p=[0.45, 0.4, 0.1, 0.05])
        s.add_verdicts([(r["id"], str(st), "AssertionError" if st != "passed" else "", 0.03)
                        for r, st in zip(todo, status, strict=True)])  # fmt: skip
        s.set_metrics(rnd, "eval", T_EVAL, {"all": {"pass@1": 0.4 + rnd / 100, "pass@5": 0.6},
                                            "easy": {"pass@1": 0.6}, "hard": {"pass@1": 0.2}})  # fmt: skip
        for st in stages:
            s.end_stage(rnd, st, "done")
    s.close()


# ---------------------------------------------------------------------------- queries


def query_cases(s: RunStore) -> list[tuple[str, Callable[[], object]]]:
    total = s.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]  # bookkeeping
    last = max(r["round"] for r in s.rounds())
    in_round = s.count_samples(last, "train")
    app = RunReader(s.path)  # the app's reads of the same file (store/reads.py)
    return [
        ("rounds table (the app's dashboard rows)", lambda: app.dashboard_rows(0)),
        ("samples(limit=50, offset=0)", lambda: s.samples(limit=50, offset=0)),
        ("samples(limit=50, offset=total/2)", lambda: s.samples(limit=50, offset=total // 2)),
        ("samples(limit=50, offset=total-50)", lambda: s.samples(limit=50, offset=total - 50)),
        (
            "  the app's page, offset=total-50",
            lambda: app.sample_page(SampleFilter(), total - 50, 50),
        ),
        (
            f"samples(round={last}, train, 50, offset=half)",
            lambda: s.samples(last, "train", limit=50, offset=in_round // 2),
        ),  # fmt: skip
        (f"pass_counts(round={last}, T={T_EVAL})", lambda: s.pass_counts(last, T_EVAL)),
    ]


def time_queries(db: Path, reps: int) -> tuple[float, list[tuple[str, float, float]], int]:
    """Open time, then (name, first call ms, median of `reps` later calls ms) per query."""
    t = time.perf_counter()
    s = RunStore.open(db, readonly=True)
    s.rounds()
    opened = time.perf_counter() - t
    out = []
    for name, fn in query_cases(s):
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out.append((name, 1000 * first, 1000 * statistics.median(ts)))
    n = s.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    s.close()
    return 1000 * opened, out, n


def gib(p: Path) -> str:
    size = sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))
    return f"{size / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="10k-sample ingest, queries on it only")
    ap.add_argument("--samples", type=int, help="samples in the ingested round (100k; 10k quick)")
    ap.add_argument("--tokens", type=int, default=200, help="tokens per sample")
    ap.add_argument("--batch", type=int, default=32, help="rows per add_samples (demo: 32)")
    ap.add_argument("--tokens-per-s", type=float, default=DEFAULT_TPS,
                    help="sampler throughput for the round-time estimate")  # fmt: skip
    ap.add_argument("--big-db", type=Path, default=Path("/tmp/bench-store-1m/run.db"))
    ap.add_argument("--big-samples", type=int, default=1_000_000)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the big DB")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per query")
    a = ap.parse_args()
    samples = a.samples or (10_000 if a.quick else 100_000)
    pool = Pool(a.tokens)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; "
          f"sqlite {sqlite3.sqlite_version}")  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        secs = ingest(work, samples, a.batch, pool, segments=10)
        print(f"\n1. ingest: {samples} samples x {a.tokens} tokens, {a.batch} rows per "
              f"transaction, 10 interleaved segments (load {os.getloadavg()[0]:.2f})")  # fmt: skip
        print(f"   {'':40s}{'samples/s':>10s}{'seconds':>9s}")
        for name, label in (("ours", "RunStore.add_samples"),
                            ("raw", "peer: executemany, pre-packed")):  # fmt: skip
            print(f"   {label:40s}{samples / secs[name]:10.0f}{secs[name]:9.2f}")
        print(f"   add_samples / peer: {secs['ours'] / secs['raw']:.2f}x the time")
        sample_s = samples * a.tokens / a.tokens_per_s
        share = secs["ours"] / (secs["ours"] + sample_s)
        print(f"   round estimate: sampling {samples * a.tokens / 1e6:.0f}M tokens at "
              f"{a.tokens_per_s:,.0f} tok/s = {sample_s / 3600:.2f} h (sample stage only; "
              f"train/evaluate add more) -> ingest is <= {share:.2%} of the round")  # fmt: skip
        for gpu_tps in (50_000.0, 500_000.0):
            t = samples * a.tokens / gpu_tps
            print(f"   at {gpu_tps:,.0f} tok/s (assumed GPU rate): ingest <= "
                  f"{secs['ours'] / (secs['ours'] + t):.1%} of the sample stage")  # fmt: skip

        small_n = 20_000 if a.quick else 100_000
        dbs = [(f"{small_n // 1000}k DB", work / "small.db", small_n, 1 if a.quick else 2)]
        if not a.quick:
            if a.rebuild and a.big_db.parent.exists():
                shutil.rmtree(a.big_db.parent)
            dbs.insert(0, (f"{a.big_samples / 1e6:g}M DB", a.big_db, a.big_samples, 10))
        print()
        for label, db, total, rounds in dbs:
            if db.exists():
                print(f"{label}: reusing {db} ({gib(db)})")
                continue
            db.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            build_db(db, total, rounds, pool)
            dt = time.perf_counter() - t
            print(f"{label}: built {db} in {dt:.1f}s = {total / dt:,.0f} samples/s, "
                  f"rounds 0..{rounds}, {gib(db)} (load {os.getloadavg()[0]:.2f})")  # fmt: skip
        results = []
        for label, db, _, _ in dbs:
            results.append((label, db, *time_queries(db, a.reps)))
        print(f"\n2. dashboard queries: first call / median of {a.reps} (ms), "
              f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
        head = "".join(f"{f'{lbl} ({n:,})':>30s}" for lbl, _, _, _, n in results)
        print(f"   {'':48s}{head}")
        print(f"   {'RunStore.open(readonly) + rounds()':48s}"
              + "".join(f"{o:30.1f}" for _, _, o, _, _ in results))  # fmt: skip
        for i, (name, _, _) in enumerate(results[0][3]):
            cells = "".join(f"{r[3][i][1]:14.1f} /{r[3][i][2]:13.1f}" for r in results)
            print(f"   {name:48s}{cells}")
        if len(results) == 2:
            ratios = [
                b[2] / max(c[2], 1e-3) for b, c in zip(results[0][3], results[1][3], strict=True)
            ]
            print("   big / small DB (median): " + ", ".join(f"{r:.1f}x" for r in ratios))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
