"""Behavioural diversity: programs grouped by what they do on their problem's tests,
run in the real sandbox (analysis/behaviour.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssd_tui.analysis import behaviour as beh
from ssd_tui.analysis import recording as rec
from ssd_tui.analysis import rounds as an
from ssd_tui.config import AnalysisSection, RunConfig
from ssd_tui.evaluation.sandbox import Limits
from ssd_tui.store.run_store import RunStore, SampleRow

SANDBOX = rec.SandboxSettings(Limits(timeout_s=1.5, cpu_s=2), workers=2)
TESTS = (
    "def check(candidate):\n"
    "    assert candidate([1, 2]) == 3\n"
    "    assert candidate([]) == 0\n"
    "    assert candidate([5]) == 5\n"
)


def classes(codes: list[str], tests: str = TESTS, entry: str = "f") -> list[beh.Behaviour]:
    rewritten = beh.rewrite_tests(tests)
    return rec.run_behaviours([(c, rewritten, entry) for c in codes], SANDBOX)


def test_programs_that_differ_in_text_but_not_behaviour_are_one_class():
    got = classes(
        [
            "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n",
            "def f(ys):\n    return sum(ys)\n",
            "def f(ys):\n    return float(sum(ys))  # 3.0 == 3: one output\n",
            "from __future__ import annotations\ndef f(v: list[int]) -> int:\n"
            "    print('noise' * 50000)\n    return sum(v)\n",
        ]
    )
    assert len({b.cls for b in got}) == 1 and got[0].cls.startswith("rec:")
    assert got[0].detail.startswith("n3 | n0 | n5")  # what the class does, readable


def test_a_timeout_an_exception_a_crash_and_no_output_are_classes_of_their_own():
    got = classes(
        [
            "def f(xs):\n    return sum(xs)\n",
            "def f(xs):\n    while True:\n        pass\n",  # timeout
            "def f(xs):\n    raise ValueError('no')\n",  # an exception on every input
            "def f(xs):\n    return xs[0] + xs[1]\n",  # right on one input, IndexError on two
            "import ctypes\nctypes.string_at(0)\n",  # killed by SIGSEGV
            "import os\nos._exit(0)\n",  # ends before the recorder can say anything
            "def f(xs)\n    return 1\n",  # does not compile
        ]
    )
    cls = [b.cls for b in got]
    assert cls[1] == beh.TIMEOUT and cls[4] == beh.CRASH and cls[5] == beh.NO_OUTPUT
    assert all(c.startswith("rec:") for c in (cls[0], cls[2], cls[3], cls[6]))
    assert len(set(cls)) == len(cls)  # seven behaviours
    assert got[2].detail.startswith("raise ValueError")
    assert got[6].detail == "load-raised SyntaxError"


def test_a_wrong_answer_is_followed_over_every_input_not_just_to_its_first_failure():
    """Both fail the first assert with the same value; they differ on the second input,
    which an evaluation that stops at the first failure would never call."""
    got = classes(
        [
            "def f(xs):\n    return 4 if len(xs) == 2 else 0\n",
            "def f(xs):\n    return 4 if len(xs) == 2 else 1\n",
            "def f(xs):\n    return 4 if len(xs) == 2 else len(xs) * 0\n",  # same as the first
        ]
    )
    assert got[0].cls != got[1].cls and got[0].cls == got[2].cls
    assert "assert-failed" in got[0].detail


def test_what_counts_as_the_same_output():
    tests = "def check(candidate):\n    candidate(0)\n"
    same = [
        # floats to 10 significant digits; -0.0 is 0
        ("def f(x):\n    return 0.1 + 0.2\n", "def f(x):\n    return 0.3\n"),
        ("def f(x):\n    return -0.0\n", "def f(x):\n    return 0\n"),
        # sets and mappings by content, not order
        # (set([9, 1]) iterates 9 first, set([1, 9]) 1 first)
        ("def f(x):\n    return set([9, 1, 17])\n", "def f(x):\n    return set([1, 9, 17])\n"),
        ("def f(x):\n    return {'b': 1, 'a': 2}\n", "def f(x):\n    return {'a': 2, 'b': 1}\n"),
        (
            "from collections import Counter\ndef f(x):\n    return Counter('aab')\n",
            "def f(x):\n    return {'a': 2, 'b': 1}\n",
        ),
        # default reprs by class and attributes, never by address
        (
            "class N:\n    def __init__(s, v): s.v = v\ndef f(x):\n    return N(1)\n",
            "class N:\n    def __init__(self, v):\n        self.v = v\n\ndef f(x):\n    return N(1)\n",
        ),
    ]
    different = [
        ("def f(x):\n    return [1, 2]\n", "def f(x):\n    return (1, 2)\n"),  # == tells
        ("def f(x):\n    return 0.3\n", "def f(x):\n    return 0.3000001\n"),
        (
            "class N:\n    def __init__(s, v): s.v = v\ndef f(x):\n    return N(1)\n",
            "class N:\n    def __init__(s, v): s.v = v\ndef f(x):\n    return N(2)\n",
        ),
    ]
    # an argument changed in place is part of what the call did
    in_place = ("def f(xs):\n    xs.sort()\n", "def f(xs):\n    sorted(xs)\n")
    mutating_tests = "def check(candidate):\n    candidate([2, 1])\n"
    codes = [c for pair in same + different for c in pair]
    got = [b.cls for b in classes(codes, tests)] + [
        b.cls for b in classes(list(in_place), mutating_tests)
    ]
    pairs = list(zip(got[::2], got[1::2], strict=True))
    assert [a == b for a, b in pairs] == [True] * len(same) + [False] * (len(different) + 1)


def test_rewritten_tests_keep_what_they_check():
    rewritten = beh.rewrite_tests(TESTS)
    assert "assert " not in rewritten and "__ssd_assert(candidate([1, 2]) == 3, 2)" in rewritten
    assert beh.rewrite_tests("def check(c):\n  assert (") == "def check(c):\n  assert ("


def test_entropy_and_round_metrics_on_hand_made_classes():
    assert beh.entropy(["a"] * 5) == 0.0
    assert f"{beh.entropy(['a'] * 5):.2f}" == "0.00"  # not -0.0, shown as "-0.00"
    assert beh.entropy(["a", "b", "c", "d", "e"]) == pytest.approx(math.log(5))
    m = beh.behaviour_metrics(
        {
            "p0": [("a", "x"), ("a", "y"), ("a", "y"), ("b", "z")],  # 2 behaviours, 3 texts
            "p1": [("c", "u"), ("c", "u")],  # one behaviour, one text
        }
    )
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert m["behaviours"] == pytest.approx(1.5)
    assert m["behaviour_entropy"] == pytest.approx(h0 / 2)
    assert m["behaviour_share"] == pytest.approx(3 / 6)
    assert m["behaviour_programs"] == pytest.approx(4 / 3)
    assert beh.behaviour_metrics({}) == dict.fromkeys(beh.BEHAVIOUR_METRICS)


# ---- a round in the store: classes cached, identical programs run once -------------------

SUM = "def f(xs):\n    return sum(xs)\n"
LOOP = "def f(xs):\n    t = 0\n    for x in xs:\n        t += x\n    return t\n"
WRONG = "def f(xs):\n    return len(xs)\n"


def _store(tmp_path: Path) -> RunStore:
    store = RunStore.open(tmp_path / "run.db", create=True)
    problems = [
        SimpleNamespace(
            id=name, prompt="def f(xs):\n", tests=TESTS, entry_point="f", difficulty=d, source="t"
        )
        for name, d in (("p0", "easy"), ("p1", "hard"))
    ]
    store.add_problems("eval", problems)
    return store


def _add(store: RunStore, rnd: int, codes: dict[str, list[str]]) -> None:
    ids = {p["name"]: p["id"] for p in store.problems("eval")}
    store.add_samples(
        [
            SampleRow(
                rnd,
                "eval",
                ids[name],
                j,
                0.8,
                0,
                1.0,
                0.0,
                code,
                code,
                "stop",
                [1],
                [0.0],
                [0.5],
                [0.0],
            )
            for name, cs in codes.items()
            for j, code in enumerate(cs)
        ]
    )


def test_a_round_is_classed_with_each_distinct_program_run_once_and_cached(tmp_path):
    store = _store(tmp_path)
    _add(store, 0, {"p0": [SUM, SUM, LOOP, WRONG], "p1": [WRONG, WRONG]})
    assert rec.record_round(store, 0, 0.8, SANDBOX) == (4, 6)  # SUM, LOOP, WRONG twice (2 problems)
    rows = store.behaviours(0, 0.8)
    assert sum(r["ran"] for r in rows.values()) == 4
    by_text = {}
    for s in store.samples(0, "eval"):
        by_text.setdefault((s["problem"], s["code"]), set()).add(rows[s["id"]]["class"])
    assert all(len(c) == 1 for c in by_text.values())
    assert by_text[("p0", SUM)] == by_text[("p0", LOOP)] != by_text[("p0", WRONG)]
    m = beh.round_metrics(store, 0, 0.8)
    assert m["all"]["behaviours"] == pytest.approx((2 + 1) / 2)
    assert m["easy"]["behaviours"] == 2 and m["hard"]["behaviour_entropy"] == 0.0
    # a rerun has nothing to do; a later round runs only what the run has never seen
    assert rec.record_round(store, 0, 0.8, SANDBOX) == (0, 0)
    _add(store, 1, {"p0": [SUM, "def f(xs):\n    return -1\n"], "p1": [SUM]})
    assert rec.record_round(store, 1, 0.8, SANDBOX) == (2, 3)
    got = store.behaviours(1, 0.8)
    assert [got[sid]["ran"] for sid in sorted(got)] == [0, 1, 1]


def test_programs_the_analysis_normalises_to_one_run_once(tmp_path):
    """Names, comments and formatting change no behaviour: the analysis dedupes on
    normalize_program, so a renamed copy takes the class of the program it copies."""
    renamed = "def f(values):\n    acc = 0  # running total\n    for v in values:\n        acc += v\n    return acc\n"
    store = _store(tmp_path)
    _add(store, 0, {"p0": [LOOP, renamed, SUM]})
    assert rec.record_round(store, 0, 0.8, SANDBOX, key=an.normalize_program) == (2, 3)
    got = store.behaviours(0, 0.8)
    assert len({b["class"] for b in got.values()}) == 1 and sum(b["ran"] for b in got.values()) == 2


def test_analyse_round_writes_the_behaviour_metrics_and_keeps_them_without_a_sandbox(tmp_path):
    store = _store(tmp_path)
    _add(store, 0, {"p0": [SUM, LOOP, WRONG, WRONG, WRONG], "p1": [SUM] * 5})
    store.add_verdicts((s["id"], "passed", "", 0.0) for s in store.samples(0, "eval"))
    cfg = RunConfig(analysis=AnalysisSection())
    an.analyse_round(store, 0, cfg, sandbox=SANDBOX)
    assert store.metric_at(0, "behaviours", "eval", 0.8) == pytest.approx(1.5)
    assert store.metric_at(0, "behaviour_share", "eval", 0.8) == pytest.approx(3 / 10)
    assert any(
        "behaviours of 10 eval samples: 4 distinct programs run" in e["message"]
        for e in store.events()
    )
    an.analyse_round(store, 0, cfg)  # no sandbox: the stored classes give the same numbers
    assert store.metric_at(0, "behaviours", "eval", 0.8) == pytest.approx(1.5)
    off = RunConfig(analysis=AnalysisSection(behaviours=False))
    store2 = _store(tmp_path / "off")
    _add(store2, 0, {"p0": [SUM]})
    an.analyse_round(store2, 0, off, sandbox=SANDBOX)
    assert store2.behaviours() == {} and store2.metric_at(0, "behaviours", "eval", 0.8) is None


# ---- the rule: behaviours collapse while pass@k falls ------------------------------------------


def _round_with_classes(store: RunStore, rnd: int, classes: list[str], passed: int) -> None:
    """Five samples a problem with the given behaviour classes; ``passed`` of them pass."""
    codes = [f"def f(xs):\n    return {i}\n" for i in range(len(classes))]
    _add(store, rnd, {"p0": codes, "p1": codes})
    rows = store.samples(rnd, "eval")
    store.add_verdicts(
        (r["id"], "passed" if r["sample_idx"] < passed else "failed", "", 0.0) for r in rows
    )
    store.add_behaviours(
        (r["id"], r["code"], classes[r["sample_idx"]], "", beh.RECORDER_VERSION, 1, 0.0)
        for r in rows
    )


@pytest.mark.parametrize("passed_after,fires", [(0, True), (2, False)])
def test_behaviour_collapse_needs_the_drop_and_pass_at_k_falling(tmp_path, passed_after, fires):
    store = _store(tmp_path)
    cfg = RunConfig()
    _round_with_classes(store, 0, ["a", "b", "c", "d", "e"], passed=2)
    an.analyse_round(store, 0, cfg)
    _round_with_classes(store, 1, ["a"] * 5, passed=passed_after)
    rules = {w["rule"]: w for w in an.analyse_round(store, 1, cfg)}
    assert store.metric_at(1, "behaviours", "eval", 0.8) == 1.0
    assert ("behaviour_collapse" in rules) is fires
    if fires:
        ev = rules["behaviour_collapse"]["evidence"]
        assert ev["values"] == [pytest.approx(math.log(5), abs=1e-4), 0.0]
        assert ev["behaviours"] == [5.0, 1.0] and ev["pass@5"] == [1.0, 0.0]
        assert set(ev["problems"]) == {"p0", "p1"} and len(ev["sample_ids"]) == 10
