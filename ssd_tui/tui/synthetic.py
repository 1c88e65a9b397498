"""Synthetic run databases for the app's tests, snapshots and benchmarks.

Built only with `RunStore`'s public write methods (the same calls the engine makes),
then every timestamp is pinned to a fixed clock so screenshots are deterministic.
No textual import here: the benchmark script uses it too.

    python -m ssd_tui.tui.synthetic RUNS_DIR/demo-run        # a small finished-ish run
    python -m ssd_tui.tui.synthetic /tmp/big --samples 1000000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd_tui.config import loads_config
from ssd_tui.passk import pass_at_k
from ssd_tui.store import RunStore, SampleRow
from ssd_tui.suspect import suspect_reasons

# Every timestamp in a synthetic run is BASE_TS + a fixed offset; tests run the app with
# a clock pinned at NOW_TS so relative times ("2 min ago", ETA) never change.
BASE_TS = 1_750_000_000.0
NOW_TS = BASE_TS + 4 * 3600.0

CONFIG_TEMPLATE = """\
[run]
name = "{name}"
dir = "."
seed = 0
rounds = {rounds}

[model]
path = "{model}"

[data]
train_prompts = "{train}"
benchmark = "{bench}"

[sampling]
temperature = 1.6
top_k = 20
top_p = 0.8
samples_per_prompt = 1

[eval]
temperature = 0.8
top_p = 0.95
samples_per_problem = 4
k = [1, 4]
baseline_temperatures = [0.6, 1.0]

[lora]
r = 8

[analysis]
fork_entropy = 1.0
lock_top1 = 0.9
"""


@dataclass
class _Problem:
    id: str
    prompt: str
    tests: str | None
    entry_point: str | None
    difficulty: str | None
    source: str = "synthetic"


EVAL_PROBLEMS = [
    ("add_two", "easy"),
    ("reverse_words", "easy"),
    ("count_vowels", "medium"),
    ("balanced_parens", "medium"),
    ("longest_run", "hard"),
    ("merge_intervals", "hard"),
]
TRAIN_PROBLEMS = [f"train_{i:02d}" for i in range(8)]

_BODIES = [
    "    result = []\n    for x in {arg}:\n        result.append(x)\n    return result\n",
    "    return [x for x in {arg}]\n",
    "    out = list({arg})\n    out.sort()\n    return out\n",
    "    total = 0\n    for x in {arg}:\n        total += 1\n    return total\n",
    "    if not {arg}:\n        return None\n    return {arg}[0]\n",
    "    pass\n",
]


def _prompt(name: str) -> str:
    return f'def {name}(xs):\n    """Solve {name.replace("_", " ")} for xs."""\n'


def _completion(name: str, rnd: int, idx: int) -> str:
    # Later rounds converge on fewer variants (a gentle, visible collapse).
    variants = max(1, len(_BODIES) - 2 * rnd)
    body = _BODIES[(hash_int(name) + idx) % variants]
    return body.format(arg="xs")


def hash_int(text: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(text))


def _token_arrays(rng: np.random.Generator, n: int):
    ids = rng.integers(5, 500, size=n)
    ent = rng.gamma(1.2, 0.6, size=n).astype(np.float32)
    # Low-entropy positions get a confident sampled token, high-entropy ones less so.
    p = np.clip(np.exp(-ent) + rng.normal(0, 0.05, size=n), 0.02, 0.999)
    tail = np.clip((1 - p) * 0.3, 0, 1).astype(np.float32)
    return ids.tolist(), np.log(p).astype(np.float32).tolist(), ent.tolist(), tail.tolist()


def _sample_rows(rnd, purpose, pid, name, n, temperature, rng, code=True, tokens=True):
    rows = []
    for j in range(n):
        text = _completion(name, rnd, j)
        ntok = max(4, len(text) // 4) if tokens else 0
        ids, lps, ents, tails = _token_arrays(rng, ntok)
        rows.append(
            SampleRow(
                rnd,
                purpose,
                pid,
                j,
                temperature,
                20 if purpose == "train" else 0,
                0.8 if purpose == "train" else 0.95,
                0.0,
                text,
                (_prompt(name) + text) if (code and purpose == "eval") else None,
                "stop",
                ids,
                lps,
                ents,
                tails,
            )
        )
    return rows


# Suspect samples (programs that look like they game the tests): (round, problem, sample
# index) of evaluate's samples at T_eval → what is appended to the tested program. Only
# that program changes (not the completion nor its tokens; the verdict, read from the
# program by _verdict, neither), so every other number of the synthetic run stays as it was.
_FRAMES_CHEAT = (
    "\nimport sys\n\n\nclass _Expected:\n    def __eq__(self, other):\n"
    "        return sys._getframe(1).f_locals.get('expected') == other\n"
)
CHEATS = {
    (1, "longest_run", 1): _FRAMES_CHEAT,
    (2, "longest_run", 1): _FRAMES_CHEAT,
    (2, "merge_intervals", 2): "\nimport gc\nimport sys\n\nsys.settrace(None)\n"
    "_objects = gc.get_objects()\n",
}


def _verdict(sample_id: int, rnd: int, code: str) -> tuple[int, str, str, float]:
    if "pass\n" in code:
        return (sample_id, "failed", "AssertionError: expected [1, 2] got None", 0.05)
    if "total" in code:
        return (sample_id, "error", "TypeError: 'int' object is not iterable\n  line 4", 0.04)
    if (sample_id + rnd) % 5 == 0:
        return (sample_id, "timeout", "timed out after 10.0 s", 10.0)
    return (sample_id, "passed", "", 0.03)


def _suspect(code: str | None) -> str | None:
    return ",".join(suspect_reasons(code)) or None  # as the pipeline writes it


def _metrics_for(store: RunStore, rnd: int, temperature: float, ks=(1, 4)) -> None:
    counts = store.pass_counts(rnd, temperature)
    scopes: dict[str, list[tuple[int, int]]] = {"all": []}
    for _name, diff, n, c in counts:
        scopes["all"].append((n, c))
        scopes.setdefault(diff or "all", []).append((n, c))
    values: dict[str, dict[str, float]] = {}
    for scope, pairs in scopes.items():
        values[scope] = {
            f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in pairs) / len(pairs) for k in ks
        }
    values["all"]["samples"] = float(sum(n for n, _ in scopes["all"]))
    store.set_metrics(rnd, "eval", temperature, values)


def build_run(
    run_dir: Path,
    name: str = "demo-run",
    model: str = "/models/tiny-coder",
    rounds_done: int = 2,
    running_round: bool = True,
    warnings: bool = True,
    write_config: bool = True,
    suspects: bool = True,
) -> Path:
    """A small, realistic run: rounds 0..rounds_done done, then (optionally) a round whose
    `sample` stage is half way. Returns the DB path. Deterministic. With `suspects`, the
    samples of `CHEATS` are flagged as looking like they game the tests."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = CONFIG_TEMPLATE.format(
        name=name, model=model, train="train.jsonl", bench="bench.jsonl", rounds=3
    )
    cfg = loads_config(text, source=str(run_dir / "config.toml"), base_dir=run_dir)
    if write_config:
        (run_dir / "config.toml").write_text(text)
    db = run_dir / "run.db"
    store = RunStore.open(db, create=True)
    store.init_run(name, model, cfg.to_json(), text, str(run_dir))
    eval_ids = store.add_problems(
        "eval",
        [_Problem(n, _prompt(n), f"assert {n}([1]) is not None", n, d) for n, d in EVAL_PROBLEMS],
    )
    train_ids = store.add_problems(
        "train", [_Problem(n, _prompt(n), None, None, None) for n in TRAIN_PROBLEMS]
    )
    rng = np.random.default_rng(0)
    t_eval = cfg.eval.temperature
    last = rounds_done + (1 if running_round else 0)
    for rnd in range(last + 1):
        stages = (
            ["evaluate", "baseline", "analyse"]
            if rnd == 0
            else ["sample", "train", "evaluate", "analyse"]
        )
        store.plan_round(rnd, stages)
        running = running_round and rnd == last
        for stage in stages:
            if running and stage != "sample":
                break
            store.start_stage(rnd, stage, total=0)
            if stage == "sample":
                todo = TRAIN_PROBLEMS[: len(TRAIN_PROBLEMS) // 2] if running else TRAIN_PROBLEMS
                rows = []
                for pname in todo:
                    rows += _sample_rows(rnd, "train", train_ids[pname], pname, 1, 1.6, rng)
                store.add_samples(rows)
                store.progress(rnd, stage, len(todo), len(TRAIN_PROBLEMS), "generating")
                if running:
                    break
            elif stage in ("evaluate", "baseline"):
                temps = [t_eval] if stage == "evaluate" else [0.6, 1.0]
                for t in temps:
                    rows = []
                    for pname, _d in EVAL_PROBLEMS:
                        new = _sample_rows(rnd, "eval", eval_ids[pname], pname, 4, t, rng)
                        for row in new if stage == "evaluate" and suspects else []:
                            extra = CHEATS.get((rnd, pname, row.sample_idx), "")
                            row.code = (row.code or "") + extra
                        rows += new
                    store.add_samples(rows)
                    todo = store.unjudged(rnd, t)
                    store.add_verdicts(
                        (*_verdict(r["id"], rnd, r["code"]), _suspect(r["code"])) for r in todo
                    )
                    _metrics_for(store, rnd, t)
                store.progress(rnd, stage, 24, 24, "testing")
            elif stage == "train":
                store.add_train_log(
                    rnd, [{"step": s, "loss": 2.0 / (s + 1), "lr": 2e-4} for s in range(4)]
                )
                store.set_adapter(rnd, str(run_dir / "adapters" / f"round-{rnd:03d}"), "0" * 64)
                store.progress(rnd, stage, 4, 4, "training")
            elif stage == "analyse":
                n_uniq = max(1, 6 - 2 * rnd)
                store.set_metrics(
                    rnd,
                    "eval",
                    t_eval,
                    {
                        "all": {
                            "distinct_2": round(0.8 - 0.15 * rnd, 3),
                            "unique_share": round(n_uniq / 6, 3),
                        }
                    },
                )
                # The fork/lock probe: entropies in nats, masses as probabilities (the
                # lock tail mass is small: on a shared axis it would be a flat line at 0).
                probe = {
                    "fork_entropy": round(1.9 - 0.25 * rnd, 3),
                    "lock_tail_mass": round(0.012 - 0.003 * rnd, 4),
                    "kept_mass": round(0.93 + 0.02 * rnd, 3),
                    "n_fork": 40.0 - 5 * rnd,
                    "n_lock": 300.0 + 10 * rnd,
                }
                store.set_metrics(rnd, "probe", t_eval, {"all": probe})
            store.log(f"round {rnd}: {stage} started", rnd=rnd, stage=stage)
            store.end_stage(rnd, stage, "done")
            store.log(f"round {rnd}: {stage} done", rnd=rnd, stage=stage)
    if warnings and rounds_done >= 2:
        ids = [r["id"] for r in store.samples(2, "eval", t_eval, eval_ids["count_vowels"])]
        store.add_warning(
            2,
            "unique_share",
            "share of unique programs fell to 0.33 (< 0.3 of round 0's 1.00)",
            {
                "unique_share": 0.333,
                "round0_unique_share": 1.0,
                "threshold": 0.3,
                "problem": "count_vowels",
                "sample_ids": ids[:3],
            },
        )
        store.log(
            "round 2: warning [unique_share] share of unique programs fell", "warning", 2, "analyse"
        )
    _pin_clock(store, last)
    store.close()
    return db


def _pin_clock(store: RunStore, last_round: int) -> None:
    """Rewrite every timestamp to BASE_TS + fixed offsets (deterministic screenshots)."""
    c = store.conn
    with store.transaction():
        c.execute("UPDATE runs SET created_at=?", (BASE_TS,))
        c.execute("UPDATE meta SET value=? WHERE key='created_at'", (str(BASE_TS),))
        for i, row in enumerate(
            c.execute("SELECT round, stage FROM stages ORDER BY round, position").fetchall()
        ):
            start = BASE_TS + 600.0 * i
            c.execute(
                "UPDATE stages SET started_at=CASE WHEN status!='pending' THEN ? END, "
                "finished_at=CASE WHEN status='done' THEN ? END, "
                "seconds=CASE WHEN status='done' THEN 540.0 ELSE 0 END WHERE round=? AND stage=?",
                (start, start + 540.0, row[0], row[1]),
            )
        c.execute(
            "UPDATE rounds SET started_at=(SELECT MIN(started_at) FROM stages s WHERE s.round=rounds.round), "
            "finished_at=CASE WHEN status='done' THEN (SELECT MAX(finished_at) FROM stages s WHERE s.round=rounds.round) END"
        )
        # A running stage started 2 minutes before NOW_TS (so rate and ETA are fixed).
        c.execute("UPDATE stages SET started_at=? WHERE status='running'", (NOW_TS - 120.0,))
        c.execute("UPDATE events SET ts = ? + 60.0 * id", (BASE_TS,))
        c.execute("UPDATE warnings SET created_at=?", (BASE_TS + 3000.0,))
        c.execute("UPDATE samples SET created_at = ? + id", (BASE_TS,))


def build_large(path: Path, n_samples: int, n_problems: int = 500, batch: int = 20_000) -> Path:
    """A big run DB for benchmarks: `n_samples` eval samples over 6 rounds, with verdicts,
    short token arrays and metrics. Written in `batch`-sized transactions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = CONFIG_TEMPLATE.format(
        name="big", model="/models/x", train="t.jsonl", bench="b.jsonl", rounds=5
    )
    cfg = loads_config(text, base_dir=path.parent)
    store = RunStore.open(path, create=True)
    store.init_run("big", "/models/x", cfg.to_json(), text, str(path.parent))
    diffs = ["easy", "medium", "hard"]
    ids = store.add_problems(
        "eval",
        [
            _Problem(f"p{i:04d}", _prompt(f"p{i:04d}"), "assert True", "f", diffs[i % 3])
            for i in range(n_problems)
        ],
    )
    rounds = 6
    rng = np.random.default_rng(0)
    names = list(ids)
    t0 = time.time()
    for rnd in range(rounds):
        quota = n_samples // rounds + (n_samples % rounds if rnd == rounds - 1 else 0)
        store.plan_round(
            rnd,
            ["evaluate", "analyse"] if rnd == 0 else ["sample", "train", "evaluate", "analyse"],
        )
        store.start_stage(rnd, "evaluate", total=quota)
        rows: list[SampleRow] = []
        written = 0
        j = 0
        while written + len(rows) < quota:
            for pname in names:
                if written + len(rows) >= quota:
                    break
                text_c = _completion(pname, rnd, j)
                tok = _token_arrays(rng, 16)
                rows.append(
                    SampleRow(
                        rnd, "eval", ids[pname], j, 0.8, 0, 0.95, 0.0, text_c, text_c, "stop", *tok
                    )
                )
                if len(rows) >= batch:
                    store.add_samples(rows)
                    written += len(rows)
                    rows = []
            j += 1
        if rows:
            store.add_samples(rows)
        c = store.conn
        with store.transaction():
            c.execute(
                "INSERT OR IGNORE INTO verdicts (sample_id, status, message, duration_s) "
                "SELECT id, CASE WHEN id % 3 = 0 THEN 'passed' ELSE 'failed' END, "
                "'', 0.01 FROM samples WHERE round=?",
                (rnd,),
            )
        _metrics_for(store, rnd, 0.8, ks=(1, 4))
        for stage in ("sample", "train", "evaluate", "analyse") if rnd else ("evaluate", "analyse"):
            store.start_stage(rnd, stage, total=1)
            store.end_stage(rnd, stage, "done")
        print(f"round {rnd}: {quota} samples ({time.time() - t0:.0f}s)", flush=True)
    store.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out", help="run folder (small run) or DB file (--samples)")
    ap.add_argument("--samples", type=int, default=0, help="build a big DB with this many samples")
    a = ap.parse_args()
    if a.samples:
        print(build_large(Path(a.out), a.samples))
    else:
        print(build_run(Path(a.out), name=Path(a.out).name))


if __name__ == "__main__":
    main()
