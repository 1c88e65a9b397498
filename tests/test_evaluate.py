"""Evaluation: test programs, verdicts, HumanEval's canonical solutions, pass@k."""

from __future__ import annotations

import math
import time

import pytest

from ssd_tui.errors import SSDError
from ssd_tui.evaluation.check import Verdict, build_program, check_samples, pass_at_k, summarize
from ssd_tui.evaluation.sandbox import Limits
from ssd_tui.problems.sets import Problem, load_humaneval

ADD = Problem(
    id="add",
    prompt="def add(a, b):\n",
    tests="def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
    entry_point="add",
)


def test_build_program_appends_tests_and_call() -> None:
    program = build_program(ADD, "def add(a, b):\n    return a + b")
    assert program == (
        "def add(a, b):\n    return a + b\n\n" + ADD.tests + "\n\ncheck(add)\n"  # type: ignore[operator]
    )


def test_build_program_needs_tests() -> None:
    with pytest.raises(SSDError, match='"x" has no tests'):
        build_program(Problem(id="x", prompt="p"), "pass")


def test_verdicts_for_each_kind_of_sample() -> None:
    codes = [
        "def add(a, b):\n    return a + b",  # passed
        "def add(a, b):\n    return a - b",  # failed
        "def add(a, b):\n    return a + c",  # error (NameError)
        "def add(a, b)\n    return a + b",  # error (SyntaxError)
        "def add(a, b):\n    while True:\n        pass",  # timeout
    ]
    seen: list[tuple[int, int]] = []
    got = dict(
        check_samples(
            [(ADD, c) for c in codes],
            Limits(timeout_s=1.5),
            workers=2,
            progress=lambda done, total: seen.append((done, total)),
        )
    )
    assert [got[i].status for i in range(5)] == ["passed", "failed", "error", "error", "timeout"]
    # A failed test names the assert that failed; an error, the test line it happened under.
    assert got[1].message == "AssertionError (test line 2: assert candidate(1, 2) == 3)"
    assert got[2].message == (
        "NameError: name 'c' is not defined (test line 2: assert candidate(1, 2) == 3)"
    )
    assert got[3].message.startswith("SyntaxError")
    assert all(isinstance(v, Verdict) and v.duration_s > 0 for v in got.values())
    assert seen == [(i, 5) for i in range(1, 6)]


def test_the_failing_test_line_is_the_innermost_one_in_the_tests() -> None:
    from ssd_tui.evaluation.check import failing_test_line, tests_first_line

    codes = [
        # the solution's own assert fails, under the tests' second assert
        "def add(a, b):\n    assert a > 0, 'too small'\n    return a + b",
        # the tests' first assert passes, the second fails; output and a fake traceback first
        "import sys\ndef add(a, b):\n    print('Traceback (most recent call last):\\n"
        '  File "<program>", line 1, in x\', file=sys.stderr)\n    return 3',
        "def add(a, b):\n    return a + b\nraise ValueError('at import')",  # before the tests
    ]
    got = dict(check_samples([(ADD, c) for c in codes], Limits(timeout_s=5), workers=2))
    assert got[0].message == "AssertionError: too small (test line 3: assert candidate(-1, 1) == 0)"
    assert got[1].message == "AssertionError (test line 3: assert candidate(-1, 1) == 0)"
    assert got[2].message == "ValueError: at import"  # no test ran: none is named
    program = build_program(ADD, codes[0])
    first = tests_first_line(codes[0])
    assert program.splitlines()[first - 1] == "def check(candidate):"
    assert failing_test_line(program, first, "no traceback") == ""


def test_all_humaneval_canonical_solutions_pass() -> None:
    problems = load_humaneval()
    items = [(p, p.prompt + (p.canonical_solution or "")) for p in problems]
    start = time.monotonic()
    got = dict(check_samples(items, Limits(timeout_s=20)))
    elapsed = time.monotonic() - start
    failures = {problems[i].id: v.message for i, v in got.items() if v.status != "passed"}
    assert len(got) == 164 and failures == {}
    assert elapsed < 120, f"164 canonical solutions took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),  # 0.7
        (10, 0, 1, 0.0),
        (10, 0, 10, 0.0),
        (3, 3, 1, 1.0),
        (3, 3, 3, 1.0),
        (10, 8, 3, 1.0),  # n - c < k: every k-subset has a pass
        (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
        (200, 13, 100, 1 - math.comb(187, 100) / math.comb(200, 100)),
    ],
)
def test_pass_at_k(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_pass_at_k_rejects_impossible_input(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_summarize_overall_and_by_difficulty() -> None:
    results = [
        ("a", "easy", 5, 2),
        ("b", "easy", 5, 5),
        ("c", "hard", 5, 0),
        ("d", None, 2, 1),
        ("e", "hard", 0, 0),  # no samples: ignored
    ]
    out = summarize(results, [1, 2, 5])
    assert list(out) == ["all", "easy", "hard"]
    assert out["all"] == pytest.approx(
        {"pass@1": (0.4 + 1 + 0 + 0.5) / 4, "pass@2": (0.7 + 1 + 0 + 1) / 4}
    )
    assert out["easy"] == pytest.approx({"pass@1": 0.7, "pass@2": 0.85, "pass@5": 1.0})
    assert out["hard"] == {"pass@1": 0.0, "pass@2": 0.0, "pass@5": 0.0}


def test_summarize_nothing() -> None:
    assert summarize([], [1]) == {"all": {}}
