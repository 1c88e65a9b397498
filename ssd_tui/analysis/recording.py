"""Running the behaviour recorder (analysis/behaviour.py) over a round's programs in the
sandbox, with the evaluation's limits and isolation, and caching each class in the store.

Apart from behaviour.py so that what reads classes (the app, reports) never loads the
sandbox.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ssd_tui.analysis.behaviour import (
    CRASH,
    RECORDER_VERSION,
    Behaviour,
    code_hash,
    read_result,
    recorder_program,
    rewrite_tests,
)
from ssd_tui.evaluation.sandbox import Isolation, Limits, run_many
from ssd_tui.store.run_store import RunStore

# ---- running programs -------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxSettings:
    """How the behaviour programs run: the evaluation's own limits and isolation."""

    limits: Limits
    workers: int
    iso: Isolation | None = None
    hide: tuple[str, ...] = ()
    progress: Callable[[int, int], None] | None = None  # (programs run, programs to run)


def run_behaviours(
    items: Sequence[tuple[str, str, str]],
    settings: SandboxSettings,
    progress: Callable[[int, int], None] | None = None,
) -> list[Behaviour]:
    """The behaviour of each (code, tests, entry point), run in the sandbox in parallel
    (the tests as ``rewrite_tests`` leaves them)."""
    nonce = secrets.token_hex(16)
    programs = [recorder_program(c, t, e, nonce) for c, t, e in items]
    out: list[Behaviour | None] = [None] * len(programs)
    stream = run_many(programs, settings.limits, settings.workers, settings.iso, settings.hide)
    for done, (i, r) in enumerate(stream, start=1):
        out[i] = (
            read_result(r, nonce)
            if not r.grader_error
            else Behaviour(CRASH, f"grader failed: {r.grader_error}", r.duration_s)
        )
        if progress:
            progress(done, len(programs))
    return [b for b in out if b is not None]


# ---- a round's behaviours, cached in the store --------------------------------------------------

RUN_BATCH = 64  # programs run and written per transaction: a killed stage loses at most these


def record_round(
    store: RunStore,
    rnd: int,
    temperature: float,
    settings: SandboxSettings,
    key: Callable[[str], str] = lambda code: code,
) -> tuple[int, int]:
    """Give every eval sample of a round at one temperature its behaviour class; returns
    (programs run, samples classed). Programs are told apart by ``key(code)`` (the analysis
    passes ``normalize_program``: names, comments, docstrings and formatting change no
    behaviour); one already run for the same problem, in this round or an earlier one, is
    not run again. Samples that have a class keep it, so a rerun, or a resume after a
    kill, runs only what is missing."""
    have = store.behaviours(rnd, temperature, RECORDER_VERSION)
    problems = {p["id"]: p for p in store.problems("eval")}
    groups: dict[tuple[int, str], list[tuple[int, str]]] = defaultdict(list)
    for r in store.samples(rnd, "eval", temperature):
        if r["id"] not in have and (problems[r["problem_id"]].get("tests") or "").strip():
            code = r["code"] or ""
            groups[(r["problem_id"], code_hash(key(code)))].append((r["id"], code))
    known = store.known_behaviours(RECORDER_VERSION)
    # Programs seen before: their samples take the class at once.
    store.add_behaviours(
        (sid, prog, *known[(pid, prog)][:2], RECORDER_VERSION, 0, known[(pid, prog)][2])
        for (pid, prog), members in groups.items()
        if (pid, prog) in known
        for sid, _ in members
    )
    runs = [k for k in groups if k not in known]
    tests = {pid: rewrite_tests(problems[pid]["tests"]) for pid, _ in runs}
    for b in range(0, len(runs), RUN_BATCH):
        batch = runs[b : b + RUN_BATCH]
        items = [(groups[k][0][1], tests[k[0]], problems[k[0]]["entry_point"] or "") for k in batch]
        rows = []
        for (pid, prog), found in zip(batch, run_behaviours(items, settings), strict=True):
            rows += [
                (
                    sid,
                    prog,
                    found.cls,
                    found.detail,
                    RECORDER_VERSION,
                    int(i == 0),
                    found.duration_s,
                )
                for i, (sid, _) in enumerate(groups[(pid, prog)])
            ]
        store.add_behaviours(rows)
        if settings.progress:
            settings.progress(b + len(batch), len(runs))
    return len(runs), sum(len(m) for m in groups.values())
