"""Problem + code → test program → verdict (in the sandbox, in parallel); pass@k."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ssd_tui.config import RunConfig
from ssd_tui.errors import SSDError
from ssd_tui.evaluation.passk import pass_at_k  # the one pass@k (re-exported)
from ssd_tui.evaluation.sandbox import ExecResult, Isolation, Limits, run_many
from ssd_tui.problems.sets import DIFFICULTIES, Problem

STATUSES = ("passed", "failed", "error", "timeout")


@dataclass(frozen=True)
class Verdict:
    status: str  # passed | failed | error | timeout
    message: str  # one line: the last line of the traceback, or why it did not pass,
    # then the test line it stopped at when there is one: "AssertionError (test line 2: …)"
    duration_s: float


def eval_limits(cfg: RunConfig) -> Limits:
    """The limits a run's test programs run under (``[eval] timeout_s``, ``memory_mb``)."""
    return Limits(
        timeout_s=cfg.eval.timeout_s,
        cpu_s=int(cfg.eval.timeout_s) + 1,
        memory_mb=cfg.eval.memory_mb,
    )


def build_program(problem: Problem, code: str) -> str:
    """The test program: ``code`` (a full program; for completion style, prompt +
    completion, which the caller assembles), the problem's tests, then the call."""
    if problem.tests is None or not problem.entry_point:
        raise SSDError(f'problem "{problem.id}" has no tests to evaluate with')
    return f"{code}\n\n{problem.tests}\n\ncheck({problem.entry_point})\n"


def tests_first_line(code: str) -> int:
    """The line (1-based) of ``build_program``'s output where the problem's tests begin."""
    return code.count("\n") + 3


# A frame of the test program in a traceback (the sandbox compiles it as "<program>"). At
# most 9 digits: the traceback is the program's own output, and int() refuses a number of
# over 4,300 digits.
_FRAME = re.compile(r'^  File "<program>", line (\d{1,9}), in ', re.MULTILINE)
TEST_LINE_CHARS = 120
#: A grader that fails this many samples in a row is broken, not the samples: the stage
#: stops with an error (and nothing of the batch is stored) instead of judging every
#: sample "error".
GRADER_FAILURES_IN_A_ROW = 3


def failing_test_line(program: str, first: int, stderr: str) -> str:
    """Where the tests stopped: "test line K: SOURCE" for the innermost frame of the last
    traceback on ``stderr`` that lies in the tests (lines ``first``… of ``program``), or ""
    when there is none (no traceback, or one cut off with the program's output).

    A failed verdict's message alone is often just "AssertionError"; this names the
    assert. The traceback is the program's own stderr, so a program could fake one: it
    can only make us quote another line of our own program text. Any text gives an
    answer (fuzzed).
    """
    last = stderr.rfind("Traceback (most recent call last):")
    if last < 0:
        return ""
    lines = program.splitlines()
    end = len(lines) - 1  # the closing `check(...)` call is not part of the tests
    for m in reversed(list(_FRAME.finditer(stderr, last))):
        n = int(m.group(1))
        if first <= n < end:
            source = " ".join(lines[n - 1].split())
            if len(source) > TEST_LINE_CHARS:
                source = source[: TEST_LINE_CHARS - 1] + "…"
            return f"test line {n - first + 1}: {source}"
    return ""


def check_samples(
    items: Sequence[tuple[Problem, str]],
    limits: Limits | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    iso: Isolation | None = None,
    hide: Sequence[str] = (),
) -> Iterator[tuple[int, Verdict]]:
    """Run each (problem, code) against the problem's tests; yield (index into items,
    verdict) as they finish: one verdict for every item, whatever its program does.
    ``progress(done, total)`` is called after each one. ``iso``:
    ``sandbox.choose_isolation(policy)``; by default the strongest that works. ``hide``:
    paths the programs must not see (the run's problem files).

    Should the grader itself fail on one sample (it is built not to), that sample's verdict
    is ``error`` naming the failure; GRADER_FAILURES_IN_A_ROW in a row raise SSDError.
    """
    programs = [build_program(p, code) for p, code in items]
    failures = 0
    for done, (i, r) in enumerate(run_many(programs, limits, workers, iso, hide), start=1):
        if progress:
            progress(done, len(programs))
        try:
            if r.grader_error:
                raise RuntimeError(r.grader_error)
            verdict = _verdict(r, programs[i], items[i][1])
            failures = 0
        except Exception as e:
            failures += 1
            if failures >= GRADER_FAILURES_IN_A_ROW:
                raise SSDError(
                    f"sandbox: the grader failed on {failures} samples in a row: {e}"
                ) from e
            verdict = Verdict("error", _storable(f"grader failed: {e}"), r.duration_s)
        yield i, verdict


def _verdict(r: ExecResult, program: str, code: str) -> Verdict:
    message = r.message
    if r.status in ("failed", "error"):
        where = failing_test_line(program, tests_first_line(code), r.stderr)
        message = f"{message} ({where})" if where else message
    return Verdict(r.status, _storable(message), r.duration_s)


def _storable(text: str) -> str:
    """As UTF-8 can hold it: a program's exception text may carry lone surrogates
    ("\\ud800"), which SQLite refuses; they are kept as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def summarize(
    results: Iterable[tuple[str, str | None, int, int]], ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Mean pass@k over problems, overall ("all") and per difficulty.

    ``results`` holds (problem id, difficulty, n, c) per problem. Problems with no
    samples are ignored; a k larger than some problem's n is left out of that group.
    """
    groups: dict[str, list[tuple[int, int]]] = {"all": []}
    for _pid, difficulty, n, c in results:
        if n <= 0:
            continue
        groups["all"].append((n, c))
        if difficulty:
            groups.setdefault(difficulty, []).append((n, c))
    order = {d: i for i, d in enumerate(("all", *DIFFICULTIES))}
    out: dict[str, dict[str, float]] = {}
    for name in sorted(groups, key=lambda g: (order.get(g, len(order)), g)):
        nc = groups[name]
        out[name] = {
            f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in nc) / len(nc)
            for k in ks
            if nc and k <= min(n for n, _ in nc)
        }
    return out
