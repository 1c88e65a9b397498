"""Where a round's time goes: `ssd-tui run` on a copy of a config; or, with --stats-pass, the
exact-statistics pass against the sampling it follows, in one sample stage.

    python benchmarks/bench_round.py              # the demo config, rounds = 1 (round 0 + round 1)
    python benchmarks/bench_round.py --quick      # 16 train prompts, 4 eval problems (~1 min)
    python benchmarks/bench_round.py --omp-ab     # and again with OMP_WAIT_POLICY=ACTIVE
    python benchmarks/bench_round.py --against main   # and again with main's code, interleaved
    python benchmarks/bench_round.py --config examples/demo.toml --model PATH --keep /tmp/br
    .venv-vllm/bin/python benchmarks/bench_round.py --config examples/qwen-coder-0.5b-cpu.toml \\
        --engines hf,vllm --max-train 16 --max-eval 20      # both engines, side by side
    python benchmarks/bench_round.py --stats-pass             # the pass, demo model, HF engine
    python benchmarks/bench_round.py --stats-pass --quick     # 4 prompts, 16 new tokens
    .venv-vllm/bin/python benchmarks/bench_round.py --stats-pass --engines vllm \\
        --model ~/.cache/ssd-tui/models/gguf/<id>              # the pass under vLLM, Qwen

Copies the config into a temporary folder (paths made absolute, `dir` pointed at the
temporary run folder, `rounds = 1`), runs `ssd-tui run` on it as a user would, then reads
the per-stage seconds from the run DB's `stages` table. The evaluate stage is split into
generation and testing at the time its last sample was written (`samples.created_at`).
Peers measured in the same run: each stage's share of the round, and the sample stage's
tokens/s (from the DB's token counts) beside the total; with `--omp-ab`, the same run
again with OMP_WAIT_POLICY=ACTIVE (torch's OpenMP threads then spin instead of sleeping
while they wait: the default before `ssd-tui` set PASSIVE at its entry point, and what
costs most when other work shares the cores); with `--engines hf,vllm`, the same round on
each sampler engine (run it with the vLLM environment's python, so both engines use the
same transformers and torch). The whole run (round 0
+ `rounds` rounds of the original config) is extrapolated from round 0 and round 1.

The floor (printed after the stages): per stage, the arithmetic it had to do (FLOPs from the
model's shape and the tokens the run DB says it processed; benchmarks/round_flops.py says
what is counted) and the rate it reached, beside this machine's matmul rate measured in the
same invocation (float32 and bfloat16, best of a few ~0.2 s timings); each round's time as
a multiple of its floor (its FLOPs at the matmul rate of the run's dtype) is the figure to
improve. `ssd-tui run` runs this tree's ssd_tui (PYTHONPATH), not an installed one.

Needs assets/demo-model (trained by `python -m ssd_tui.demo.pretrain`); `--model PATH`
points the copy at another model folder.

--stats-pass: a throw-away run (the demo's training prompts, completion style; its own
config, not --config) and the pipeline's own sample path (``Pipeline._generate``:
sampling in batches, then ``fill_token_stats``), in this process, timing its parts:

- engine start (vLLM: the first ``generate``; HF: loading the model), paid once per engine;
- sampling: the batches, with their tokens/s;
- the pass: loading the transformers scoring model (base, no adapter here) and the
  teacher-forced scoring of every sample (under vLLM every sample lacks entropies; under
  the HF engine the pass finds nothing to do, so it is run once more on blanked stats to
  show what it would cost).

Printed as one JSON object (tokens, seconds, tokens/s, pass / sampling, threads, load).
Defaults: 16 prompts (`--max-train`), one sample each, 128 new tokens, T 1.2 / top-k 20 /
top-p 0.95, batch 16, float32, the HF engine (`--engines` names one engine here), every
core this process may use, OMP_WAIT_POLICY=PASSIVE unless set (as ssd-tui's entry point).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from round_flops import matmul_rate, stage_flops

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = ("dir", "path", "train_prompts", "benchmark")
DEMO = ROOT / "assets" / "demo"


def copy_config(
    src: Path,
    run_dir: Path,
    model: Path | None,
    quick: bool,
    max_train: int = 0,
    max_eval: int = 0,
) -> str:
    """The config's text with absolute paths, our run folder and rounds = 1."""
    if quick:
        max_train, max_eval = max_train or 16, max_eval or 4
    out = []
    section = ""
    for line in src.read_text().splitlines():
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            section = m.group(1)
        m = re.match(r'(\s*)(\w+)(\s*=\s*)"([^"]*)"(.*)$', line)
        if m and m.group(2) in PATH_KEYS:
            key, value = m.group(2), m.group(4)
            if section == "run" and key == "dir":
                value = str(run_dir)
            elif section == "model" and key == "path" and model is not None:
                value = str(model.resolve())
            elif value and not value.startswith("/") and (src.parent / value).exists():
                value = str((src.parent / value).resolve())
            line = f'{m.group(1)}{key}{m.group(3)}"{value}"{m.group(5)}'
        line = re.sub(r"^(\s*rounds\s*=\s*)\d+", r"\g<1>1", line)
        if max_train:
            line = re.sub(r"^(\s*max_train_prompts\s*=\s*)\d+", rf"\g<1>{max_train}", line)
        if max_eval:
            line = re.sub(r"^(\s*max_eval_problems\s*=\s*)\d+", rf"\g<1>{max_eval}", line)
        out.append(line)
    return "\n".join(out) + "\n"


def with_engine(cfg_text: str, engine: str | None) -> str:
    """The config text with `[run] engine` set (None: as it is)."""
    if engine is None:
        return cfg_text
    text, n = re.subn(r"(?m)^engine\s*=.*$", f'engine = "{engine}"', cfg_text)
    return text if n else re.sub(r"(?m)^\[run\]$", f'[run]\nengine = "{engine}"', cfg_text, count=1)


def archive(ref: str, dest: Path) -> Path:
    """The code of git ``ref`` of this repository, unpacked into ``dest`` (for --against)."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def tree_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of `ssd-tui run`: this tree's ssd_tui first (not an installed one)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_once(
    work: Path, cfg_text: str, name: str, env: dict[str, str], engine: str | None = None
) -> dict:
    """`ssd-tui run` on the config copy in work/name; the stages table, read back."""
    run_dir = work / name / "run"
    cfg = work / name / "demo.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(with_engine(cfg_text, engine).replace("@RUN_DIR@", str(run_dir)))
    cmd = [sys.executable, "-m", "ssd_tui", "run", str(cfg)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tree_env(env))
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"ssd-tui run failed with status {proc.returncode}")
    db = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    stages = list(db.execute("SELECT * FROM stages ORDER BY round, position"))
    per_round: dict[int, float] = {}
    rows: dict[tuple[int, str], float] = {}
    for s in stages:
        rnd, stage, secs = s["round"], s["stage"], s["seconds"]
        per_round[rnd] = per_round.get(rnd, 0.0) + secs
        # The sampling stages split at the last sample written and at the end of the exact
        # token-statistics pass (vLLM runs only; its event is logged when it ends).
        purpose = "eval" if stage in ("evaluate", "baseline") else "train"
        if stage in ("evaluate", "baseline", "sample"):
            last = db.execute(
                "SELECT MAX(created_at) FROM samples WHERE round=? AND purpose=?", (rnd, purpose)
            ).fetchone()[0]
            gen = max(0.0, min(secs, (last or s["started_at"]) - s["started_at"]))
            stats_end = db.execute(
                "SELECT MAX(ts) FROM events WHERE round=? AND stage=? AND message LIKE "
                "'%exact token statistics%'",
                (rnd, stage),
            ).fetchone()[0]
            stats = max(0.0, min(secs - gen, (stats_end or 0) - (last or 0)))
            rows[(rnd, f"{stage}: generate")] = gen
            if stats > 0:
                rows[(rnd, f"{stage}: token stats")] = stats
            if stage != "sample":
                rows[(rnd, f"{stage}: test")] = secs - gen - stats
            elif secs - gen - stats > 0.5:
                rows[(rnd, f"{stage}: rest")] = secs - gen - stats
        else:
            rows[(rnd, stage)] = secs
    tokens = db.execute(
        "SELECT COUNT(*), SUM(n_tokens) FROM samples WHERE round=1 AND purpose='train'"
    ).fetchone()
    tests = db.execute(
        "SELECT COUNT(*), SUM(duration_s) FROM verdicts v JOIN samples s ON s.id = v.sample_id "
        "WHERE s.round = 1"
    ).fetchone()
    db.close()
    flops, shape, dtype = stage_flops(cfg)
    return {"cmd": cmd, "wall": wall, "rows": rows, "per_round": per_round,
            "train": tuple(tokens), "tests": tuple(tests), "load": os.getloadavg()[0],
            "flops": flops, "shape": shape, "dtype": dtype}  # fmt: skip


# the floor ---------------------------------------------------------------------------


def print_floor(results: dict[str, dict], quick: bool) -> None:
    """Per stage: the arithmetic it had to do and the rate it reached, beside the machine's
    matmul rate measured now; each round's time as a multiple of its floor (the FLOPs at
    that rate). benchmarks/round_flops.py says what is counted."""
    first = next(iter(results.values()))
    shape, dtype = first["shape"], first["dtype"]
    n, reps = (1024, 3) if quick else (2048, 5)
    rates = {dt: matmul_rate(dt, n, reps) for dt in ("float32", "bfloat16")}
    peak = rates.get("float32" if dtype in ("float32", "fp32", "auto") else "bfloat16")
    print(f"\nfloor: matmul {n}x{n} (best of {reps}, load {os.getloadavg()[0]:.2f}): "
          + ", ".join(f"{dt} {r:,.1f} GFLOP/s" if r else f"{dt} n/a" for dt, r in rates.items())
          + f"; the run computes in {dtype}")  # fmt: skip
    print(f"model: {shape.body_params / 1e6:.1f}M parameters in linear layers + LM head "
          f"{shape.head_params / 1e6:.1f}M ({shape.layers} layers, hidden {shape.hidden})")  # fmt: skip
    for name, r in results.items():
        print(f"\n{name}: {'round':>5s}  {'stage':22s}{'GFLOP':>10s}{'s':>9s}{'GFLOP/s':>9s}"
              f"{'of matmul':>11s}")  # fmt: skip
        total: dict[int, float] = {}
        for (rnd, stage), secs in r["rows"].items():
            f = r["flops"].get((rnd, stage), 0.0)
            total[rnd] = total.get(rnd, 0.0) + f
            rate = f / secs / 1e9 if secs > 0 and f else None
            share = f"{rate / peak:10.1%}" if rate and peak else f"{'-':>10s}"
            print(f"{'':{len(name) + 1}s} {rnd:5d}  {stage:22s}{f / 1e9:10.1f}{secs:9.1f}"
                  f"{rate or 0:9.2f} {share}")  # fmt: skip
        for rnd, f in total.items():
            floor = f / (peak * 1e9) if peak else None
            took = r["per_round"].get(rnd, 0.0)
            ratio = f"{took / floor:.1f}x the floor" if floor else "no floor"
            print(f"{'':{len(name) + 1}s} {rnd:5d}  {'total':22s}{f / 1e9:10.1f}{took:9.1f}  "
                  f"floor {floor or 0:.1f}s: round = {ratio}")  # fmt: skip


# --stats-pass ------------------------------------------------------------------------


def max_model_len(model: Path, want: int = 1024) -> int:
    """``want``, or less where the model's positions end (vLLM refuses more)."""
    conf = json.loads((model / "config.json").read_text())
    return min(want, int(conf.get("max_position_embeddings") or want))


def stats_config(folder: Path, a: argparse.Namespace, model: Path, engine: str) -> Path:
    """The throw-away run's config: the demo's training prompts, the sampling options."""
    text = f"""
[run]
name = "bench"
dir = "{folder / "run"}"
engine = "{engine}"
threads = 0
[model]
path = "{model}"
dtype = "{a.dtype}"
[data]
train_prompts = "{DEMO / "train_prompts.jsonl"}"
benchmark = "{DEMO / "eval.jsonl"}"
max_train_prompts = {a.max_train}
[sampling]
temperature = {a.temperature}
top_k = {a.top_k}
top_p = {a.top_p}
samples_per_prompt = {a.n}
max_new_tokens = {a.max_new_tokens}
batch_size = {a.batch}
[vllm]
max_model_len = {max_model_len(model)}
"""
    path = folder / "bench.toml"
    path.write_text(text)
    return path


def stats_pass(a: argparse.Namespace, model: Path, engine: str) -> dict:
    """One sample stage through ``Pipeline._generate``, its parts timed."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ssd-tui's entry point sets it
    sys.path.insert(0, str(ROOT))
    import torch

    from ssd_tui.config import load_config
    from ssd_tui.engine.base import SamplingParams, encode_prompt
    from ssd_tui.engine.hf import load_tokenizer
    from ssd_tui.runs.pipeline import STATS_BATCH_TOKENS, Pipeline
    from ssd_tui.store.run_store import RunStore

    class Timed(Pipeline):
        """The pipeline, with the time spent loading and running the pass recorded."""

        load_s = 0.0
        pass_s = 0.0
        scored = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            load = self.engines.scoring_model

            def timed_load(adapter):
                t = time.perf_counter()
                out = load(adapter)
                self.load_s += time.perf_counter() - t
                return out

            self.engines.scoring_model = timed_load

        def fill_token_stats(self, *args, **kwargs):
            t, load = time.perf_counter(), self.load_s
            n = super().fill_token_stats(*args, **kwargs)
            self.pass_s += time.perf_counter() - t - (self.load_s - load)
            self.scored += n
            return n

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-stats-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = load_config(stats_config(work, a, model, engine))
        store = RunStore.open(cfg.db_path, create=True)
        pipe = Timed(cfg, store)
        pipe.prepare()
        params = cfg.train_sampling(seed=cfg.run.seed)
        problems = pipe.train_problems

        t = time.perf_counter()  # engine start: load (HF) or the first generate (vLLM)
        pipe.engines.sampler(None).generate([problems[0].prompt], SamplingParams(max_new_tokens=1))
        start_s = time.perf_counter() - t

        t = time.perf_counter()
        pipe._generate(1, "sample", "train", problems, params, None, a.batch)
        total_s = time.perf_counter() - t
        sample_s = total_s - pipe.pass_s - pipe.load_s
        rows = store.conn.execute(
            "SELECT COUNT(*), SUM(n_tokens), COUNT(mean_entropy) FROM samples"
        ).fetchone()
        n_samples, n_tokens, with_stats = rows[0], rows[1] or 0, rows[2]
        ran_in_stage = pipe.scored > 0
        if not ran_in_stage:  # HF engine: stats exist; blank them to time the pass anyway
            pipe.release_sampler()
            store.conn.execute("UPDATE samples SET mean_entropy = NULL")
            store.conn.commit()
            pipe.fill_token_stats(1, "sample", "train", params.temperature, None, problems)
            pipe.engines.release_scoring_model()
        tok = load_tokenizer(pipe.model_path)  # prompts are stored as text: count their tokens
        prompt_tokens = sum(len(encode_prompt(tok, p.prompt)) for p in problems) * a.n
        pipe.release_sampler()
        store.close()
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    return {
        "model": model.name,
        "engine": engine,
        "samples": n_samples,
        "generated_tokens": n_tokens,
        "prompt_tokens": prompt_tokens,
        "with_stats_after_stage": with_stats,
        "pass_ran_in_stage": ran_in_stage,
        "engine_start_s": round(start_s, 1),
        "sampling_s": round(sample_s, 1),
        "sampling_tok_s": round(n_tokens / sample_s, 1) if sample_s > 0 else None,
        "pass_model_load_s": round(pipe.load_s, 1),
        "pass_s": round(pipe.pass_s, 1),
        "pass_tok_s": round(n_tokens / pipe.pass_s, 1) if pipe.pass_s > 0 else None,
        "pass_over_sampling": round(pipe.pass_s / sample_s, 3) if sample_s > 0 else None,
        "stats_batch_tokens": STATS_BATCH_TOKENS,
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg()[0],
    }


# the round ---------------------------------------------------------------------------


def variants_for(a: argparse.Namespace, work: Path) -> list[tuple[str, dict[str, str], str | None]]:
    """(name, environment, engine) of each run to compare, in the order they run."""
    variants: list[tuple[str, dict[str, str], str | None]] = [("as-is", {}, None)]
    if a.engines:
        variants = [(e, {}, e) for e in a.engines.split(",")]
    if a.omp_ab:
        variants.append(("active", {"OMP_WAIT_POLICY": "ACTIVE"}, None))
    if a.against:
        tree = archive(a.against, work / "against")
        variants = [
            v
            for name, env, engine in variants
            for v in (
                (name, env, engine),
                (f"{name}@{a.against}", {**env, "PYTHONPATH": str(tree)}, engine),
            )
        ]
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="16 train prompts, 4 eval problems")
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "demo.toml")
    ap.add_argument("--model", type=Path, help="model folder instead of the config's")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it")
    ap.add_argument("--omp-ab", action="store_true",
                    help="also run with OMP_WAIT_POLICY=ACTIVE (spinning) and compare")  # fmt: skip
    ap.add_argument("--engines", help="comma-separated sampler engines to compare, e.g. hf,vllm")
    ap.add_argument("--against", metavar="GIT_REF",
                    help="also run each variant with the code of GIT_REF (old against new)")  # fmt: skip
    ap.add_argument("--max-train", type=int, default=0, help="max_train_prompts for the copy")
    ap.add_argument("--max-eval", type=int, default=0, help="max_eval_problems for the copy")
    sp = ap.add_argument_group(
        "--stats-pass (also: --engines ONE, default hf; --model, default the demo model; "
        "--max-train, prompts, default 16; --quick: 4 prompts, 16 new tokens; --keep)"
    )
    sp.add_argument("--stats-pass", action="store_true",
                    help="time the exact-statistics pass against sampling, one sample stage")  # fmt: skip
    sp.add_argument("--dtype", default="float32")
    sp.add_argument("--n", type=int, default=1, help="samples per prompt")
    sp.add_argument("--max-new-tokens", type=int, help="(128; 16 with --quick)")
    sp.add_argument("--batch", type=int, default=16)
    sp.add_argument("--temperature", type=float, default=1.2)
    sp.add_argument("--top-k", type=int, default=20)
    sp.add_argument("--top-p", type=float, default=0.95)
    a = ap.parse_args()
    if a.model is not None:
        a.model = a.model.expanduser()
    if a.stats_pass:
        engines = (a.engines or "hf").split(",")
        if len(engines) != 1 or engines[0] not in ("hf", "vllm"):
            ap.error("--stats-pass measures one engine: --engines hf or --engines vllm")
        if a.omp_ab:
            ap.error("--omp-ab is for the round, not --stats-pass")
        a.max_train = a.max_train or (4 if a.quick else 16)
        a.max_new_tokens = a.max_new_tokens or (16 if a.quick else 128)
        model = (a.model or ROOT / "assets" / "demo-model").resolve()
        print(json.dumps(stats_pass(a, model, engines[0]), indent=1))
        return
    original = tomllib.loads(a.config.read_text())
    raw = Path(os.path.expanduser(original["model"]["path"]))
    model = a.model or (a.config.parent / raw).resolve()
    if not model.exists():  # a folder with config.json, or one `ssd-tui models get` made
        print(f"no model at {model}: the demo model is trained with "
              "`python -m ssd_tui.demo.pretrain --out assets/demo-model`; nothing measured")  # fmt: skip
        sys.exit(2)
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-round-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg_text = copy_config(a.config, Path("@RUN_DIR@"), a.model, a.quick, a.max_train, a.max_eval)
    omp = os.environ.get("OMP_WAIT_POLICY")
    variants = variants_for(a, work)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; "
          f"OMP_WAIT_POLICY={omp or '(unset: ssd-tui sets PASSIVE)'}")  # fmt: skip
    print(f"config: copy of {a.config} (rounds = 1{', quick sizes' if a.quick else ''}); "
          f"model {model}")  # fmt: skip
    try:
        results = {}
        for name, env, engine in variants:
            r = run_once(work, cfg_text, name, env, engine)
            results[name] = r
            label = " ".join(f"{k}={v}" for k, v in env.items())
            print(f"$ {label + ' ' if label else ''}{' '.join(r['cmd'])}".replace(str(work), "TMP"))
            print(f"  {r['wall']:.1f}s wall (load {r['load']:.2f})")
        first, *others = [v[0] for v in variants]
        base = results[first]
        head = f"{'round':>5s}  {'stage':22s}{first + ' s':>9s}{'share':>8s}"
        for o in others:
            head += f"  {o + ' s':>9s}  {o + '/' + first:>13s}"
        print("\n" + head)
        keys = list(dict.fromkeys(k for r in results.values() for k in r["rows"]))
        keys.sort(key=lambda k: k[0])  # by round, each engine's stage order kept
        for rnd, stage in keys:
            secs = base["rows"].get((rnd, stage), 0.0)
            line = f"{rnd:5d}  {stage:22s}{secs:9.1f}{secs / base['per_round'][rnd]:8.1%}"
            for o in others:
                other = results[o]["rows"].get((rnd, stage), 0.0)
                line += f"{other:11.1f}{other / max(secs, 1e-3):14.2f}x"
            print(line)
        for rnd, total in base["per_round"].items():
            line = f"{rnd:5d}  {'total':22s}{total:9.1f}{'':8s}"
            for o in others:
                other = results[o]["per_round"].get(rnd, 0.0)
                line += f"{other:11.1f}{other / total:14.2f}x"
            print(line)
        for name, r in results.items():
            n, tokens = r["train"]
            sample_s = r["rows"].get((1, "sample: generate"))
            if n and sample_s:
                print(f"{name}: round 1 sampling: {n} samples, {tokens:,} tokens, "
                      f"{tokens / sample_s:,.1f} tok/s")  # fmt: skip
        count, durations = base["tests"]
        test_s = base["rows"].get((1, "evaluate: test"))
        if count and test_s:
            print(f"round 1 tests: {count} programs, {count / test_s:.1f}/s "
                  f"(sum of program durations {durations:.1f}s)")  # fmt: skip
        print_floor(results, a.quick)
        rounds = original["run"].get("rounds", 3)
        for name, r in results.items():
            if 1 in r["per_round"]:
                total = r["per_round"].get(0, 0.0) + rounds * r["per_round"][1]
                print(f"{name}: the original config's whole run (round 0 + {rounds} rounds like "
                      f"round 1): ~{total:.0f}s = {total / 60:.1f} min")  # fmt: skip
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
