"""Chat prompts and code extraction, on messy answers (several taken from real
Qwen2.5-Coder-0.5B-Instruct outputs, see docs/models.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssd_tui.config import CHAT_STOP
from ssd_tui.engine.hf import load_tokenizer
from ssd_tui.errors import SSDError
from ssd_tui.problems.prompting import (
    HUMANEVAL_INSTRUCTION,
    chat_messages,
    code_outline,
    extract_code,
    instruction,
    program_for,
    prompt_for,
    render_prompt,
)
from ssd_tui.problems.sets import Problem, load_humaneval

HE = Problem(
    id="HumanEval/0",
    prompt='from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    """Sum of xs.\n    >>> add([1, 2])\n    3\n    """\n',
    tests="def check(candidate):\n    assert candidate([1, 2]) == 3\n",
    entry_point="add",
)

LC = Problem(
    id="leetcode/add_strings",
    prompt=(
        "from typing import *\nimport math\n\n\nclass Solution:\n"
        '    def add_strings(self, num1: str, num2: str) -> str:\n        """\n        # Add Strings\n\n'
        '        Add them.\n        """\n'
    ),
    tests="def check(candidate):\n    assert candidate().add_strings('1', '2') == '3'\n",
    entry_point="Solution",
    difficulty="easy",
    source="leetcode",
    statement="# Add Strings\n\nAdd them.",
)


# ---------------------------------------------------------------------------- prompts


def test_humaneval_instruction_keeps_the_signature_and_docstring() -> None:
    msgs = chat_messages(HE, "SYSTEM")
    assert msgs[0] == {"role": "system", "content": "SYSTEM"}
    user = msgs[1]["content"]
    assert user.startswith(HUMANEVAL_INSTRUCTION)
    assert "```python\nfrom typing import List\n\n\ndef add(xs: List[int]) -> int:" in user
    assert ">>> add([1, 2])" in user and user.endswith('"""\n```')


def test_no_system_message_when_empty() -> None:
    assert [m["role"] for m in chat_messages(HE, "")] == ["user"]


def test_statement_problems_get_statement_then_starter_outline() -> None:
    user = instruction(LC)
    assert user.startswith("# Add Strings\n\nAdd them.\n\n")
    assert "Keep the class name, the method name and its signature." in user
    assert user.endswith(
        "```python\nclass Solution:\n    def add_strings(self, num1: str, num2: str) -> str:\n```"
    )
    assert "import" not in user  # the prelude is put back by program_for, not shown


def test_plain_language_prompt_is_used_as_is() -> None:
    p = Problem(id="t", prompt="  Write a program that reads n and prints n squared.  ")
    assert instruction(p) == "Write a program that reads n and prints n squared."
    only_statement = Problem(id="s", prompt="Do X.", statement="Do X.")
    assert instruction(only_statement) == "Do X."


def test_code_outline() -> None:
    src = 'import os\n\ndef f(a):\n    """Doc\n    more."""\n    return a\n\nclass C:\n    """C."""\n    def g(self):\n        """g."""\n'
    assert code_outline(src) == "def f(a):\n    return a\n\nclass C:\n    def g(self):"
    assert code_outline("not python (") == ""
    assert code_outline("x = 1\n") == ""


def test_every_humaneval_prompt_renders() -> None:
    for p in load_humaneval():
        user = instruction(p)
        assert user.startswith(HUMANEVAL_INSTRUCTION)
        assert f"def {p.entry_point}(" in user


# ---------------------------------------------------------------------------- extraction

PY = "```python\n{}\n```"


def test_first_block_defining_the_entry_point_wins() -> None:
    answer = (
        "Here is the function:\n\n"
        + PY.format("def add(xs):\n    return sum(xs)")
        + "\n\nAn optimised version that is longer and longer:\n\n"
        + PY.format(
            "def add(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total + 1"
        )
    )
    assert extract_code(answer, "add") == "def add(xs):\n    return sum(xs)"
    # Without an entry point: the longest block.
    assert extract_code(answer).endswith("return total + 1")


def test_usage_example_block_is_not_chosen_even_when_longer() -> None:
    answer = (
        PY.format("def add(xs):\n    return sum(xs)")
        + "\n\nExample usage:\n"
        + PY.format(
            "print(add([1, 2, 3]))  # 6\nprint(add([]))  # 0\nprint(add([10, 20, 30, 40, 50]))  # 150"
        )
    )
    assert extract_code(answer, "add") == "def add(xs):\n    return sum(xs)"


def test_imports_in_a_separate_block_are_kept() -> None:
    answer = (
        "First import what we need:\n"
        + PY.format("import math\nfrom typing import List")
        + "\nThen:\n"
        + PY.format("def add(xs: List[int]) -> int:\n    return math.fsum(xs)")
    )
    code = extract_code(answer, "add")
    assert code.splitlines()[:2] == ["import math", "from typing import List"]
    assert "def add" in code


def test_unclosed_fence_cut_by_budget_or_stop_string() -> None:
    answer = "Sure!\n```python\ndef add(xs):\n    return sum(xs)\n"
    assert extract_code(answer, "add") == "def add(xs):\n    return sum(xs)"
    # What the sampler returns when it stops at CHAT_STOP ("\n```\n" is removed).
    full = "Sure!\n```python\ndef add(xs):\n    return sum(xs)\n```\nThis adds the numbers."
    cut = full[: full.find(CHAT_STOP[0])]
    assert extract_code(cut, "add") == "def add(xs):\n    return sum(xs)"


def test_stop_string_never_matches_an_opening_fence() -> None:
    assert CHAT_STOP[0] not in "Here it is:\n```python\ndef f():\n    pass\n"
    assert CHAT_STOP[0] not in "Here it is:\n```py\nx = 1\n"


def test_no_fence_means_the_whole_answer() -> None:
    assert (
        extract_code("\ndef add(xs):\n    return sum(xs)\n\n", "add")
        == "def add(xs):\n    return sum(xs)"
    )


def test_other_languages_only_as_a_last_resort() -> None:
    answer = (
        "Run:\n```bash\npip install numpy\n```\n```python\ndef add(xs):\n    return sum(xs)\n```"
    )
    assert extract_code(answer) == "def add(xs):\n    return sum(xs)"
    assert extract_code("```text\nhello\n```") == "hello"


def test_untagged_and_variant_tags_count_as_python() -> None:
    assert (
        extract_code("```\ndef add(xs):\n    return 1\n```", "add") == "def add(xs):\n    return 1"
    )
    assert extract_code("```Python3 title='x'\ndef add(xs):\n    return 2\n```", "add").endswith(
        "return 2"
    )


def test_main_guard_is_dropped() -> None:
    answer = PY.format(
        "def add(xs):\n    return sum(xs)\n\nif __name__ == '__main__':\n    n = int(input())\n    print(add([n]))"
    )
    assert extract_code(answer, "add") == "def add(xs):\n    return sum(xs)"


def test_inline_backticks_are_not_fences() -> None:
    answer = "Use ```python``` blocks, like this:\n```python\ndef add(xs):\n    return 3\n```"
    assert extract_code(answer, "add") == "def add(xs):\n    return 3"


def test_indented_fences_inside_a_list() -> None:
    answer = "1. Code:\n   ```python\n   def add(xs):\n       return 4\n   ```\n2. Done."
    assert extract_code(answer, "add") == "def add(xs):\n    return 4"


# ---------------------------------------------------------------------------- programs


def test_program_keeps_prompt_imports() -> None:
    prog = program_for(HE, PY.format("def add(xs: List[int]) -> int:\n    return sum(xs)"), "chat")
    assert prog.startswith("from typing import List\ndef add(")
    ns: dict = {}
    exec(prog + "\n" + HE.tests + "\ncheck(add)\n", ns)  # noqa: S102 - our own code


def test_body_only_answer_gets_the_prompt_back() -> None:
    prog = program_for(HE, PY.format("    return sum(xs)"), "chat")
    assert prog.startswith(HE.prompt) and prog.endswith("    return sum(xs)\n")
    ns: dict = {}
    exec(prog + "\n" + HE.tests + "\ncheck(add)\n", ns)  # noqa: S102


def test_future_import_goes_first() -> None:
    p = Problem(
        id="x",
        prompt="from __future__ import annotations\nfrom typing import *\n\nclass Solution:\n    pass\n",
        entry_point="Solution",
    )
    prog = program_for(
        p,
        PY.format("from __future__ import annotations\nclass Solution:\n    x: List[int] = []"),
        "chat",
    )
    assert prog.splitlines()[0] == "from __future__ import annotations"
    assert prog.count("from __future__") == 1
    compile(prog, "p", "exec")


def test_completion_style_is_prompt_plus_completion() -> None:
    assert program_for(HE, "    return 0\n", "completion") == HE.prompt + "    return 0\n"


@pytest.mark.parametrize(
    "answer",
    [
        "```python\nclass Solution:\n    def add_strings(self, num1: str, num2: str) -> str:\n        return str(int(num1) + int(num2))\n```",
        "```python\nclass Solution:\n    def add_strings(self, num1, num2):\n        return str(int(num1) + int(num2))\n\n# Example\nsol = Solution()\nprint(sol.add_strings('1', '2'))\n```",
    ],
)
def test_leetcode_program_runs_against_check(answer: str) -> None:
    prog = program_for(LC, answer, "chat")
    assert prog.startswith("from typing import *\nimport math\n")
    ns: dict = {}
    exec(prog + "\n" + LC.tests + "\ncheck(Solution)\n", ns)  # noqa: S102


# ---------------------------------------------------------------------------- real outputs
# Verbatim answers of Qwen2.5-Coder-0.5B-Instruct (the GGUF of `ssd-tui models get`), with
# the system prompt of the default config; "cut" = as the sampler returned it.

REAL_PRINT_AFTER = (  # greedy, HumanEval/7-like ending with a test print
    "```python\nfrom typing import List\n\n\ndef filter_by_substring(strings: List[str], substring: str) -> List[str]:\n"
    '    """ Filter an input list of strings only for ones that contain given substring\n    """\n'
    "    return [s for s in strings if substring in s]\n\n"
    "# Test the function\nprint(filter_by_substring(['abc', 'bacd', 'cde', 'array'], 'a'))  # Output: ['abc', 'bacd', 'array']\n```"
)

REAL_CUT_IN_SELF_TEST = (  # T=1.0, HumanEval/4, finish_reason "length" (384 tokens)
    "```python\nfrom typing import List\n\n\ndef mean_absolute_deviation(numbers: List[float]) -> float:\n"
    '    """ For a given list of input numbers, calculate Mean Absolute Deviation\n'
    '    >>> mean_absolute_deviation([1.0, 2.0, 3.0, 4.0])\n    1.0\n    """\n'
    "    mean = sum(numbers) / len(numbers)\n    \n"
    "    absolute_deviations = [abs(x - mean) for x in numbers]\n"
    "    return sum(absolute_deviations) / len(absolute_deviations)\n\n"
    "# Check function with provided data points\ndef check_solution():\n"
    '    assert mean_absolute_deviation([1.0, 2.0, 3.0, 4.0]) == 1.0, "Test case 1 failed"\n'
    '    assert mean_absolute_deviation([1.0, 2.0, 3.0, 4.0]) == 2.2361268319796304, "Test case 2 failed"\n'
    '    assert mean_absolute_deviation([1.5, 2.5, 3.5, 4.5, 5.5, 6.5]) == 3.598112460189265, "'
)

REAL_STOPPED = (  # T=1.0, a LeetCode problem, cut by the stop string "\n```\n"
    "```python\n\nclass Solution:\n    def is_palindrome(self, s: str) -> bool:\n"
    "        # Remove non-alphanumeric characters and convert to lowercase\n"
    "        s = ''.join(char.lower() for char in s if char.isalnum())\n        \n"
    "        # Compare the string with its reverse\n        return s == s[::-1]\n"
)

REAL_OWN_IMPORTS = (  # T=1.0: the model imports what LeetCode's prelude already has
    "```python\nfrom collections import deque\n\nclass Solution:\n"
    "    def max_sliding_window(self, nums: list[int], k: int) -> list[int]:\n"
    "        window = deque()\n        return [max(nums[i:i + k]) for i in range(len(nums) - k + 1)]\n```"
)


def test_real_test_print_after_the_solution_is_dropped() -> None:
    code = extract_code(REAL_PRINT_AFTER, "filter_by_substring")
    assert code.rstrip().endswith("return [s for s in strings if substring in s]")
    assert "print(" not in code


def test_real_answer_cut_inside_its_own_test_keeps_the_solution() -> None:
    he = {p.entry_point: p for p in load_humaneval()}["mean_absolute_deviation"]
    prog = program_for(he, REAL_CUT_IN_SELF_TEST, "chat")
    compile(prog, "prog", "exec")
    assert "Test case 2 failed" in prog  # the complete lines of its self-test stay, unused
    ns: dict = {}
    exec(prog + "\n" + he.tests + "\ncheck(mean_absolute_deviation)\n", ns)  # noqa: S102


def test_real_answer_stopped_at_the_fence() -> None:
    code = extract_code(REAL_STOPPED, "Solution")
    assert code.startswith("class Solution:") and code.endswith("return s == s[::-1]")


def test_real_answer_with_its_own_imports() -> None:
    p = Problem(
        id="lc",
        prompt="from typing import *\nfrom collections import deque\n\n\nclass Solution:\n    pass\n",
        entry_point="Solution",
    )
    prog = program_for(p, REAL_OWN_IMPORTS, "chat")
    assert prog.count("from collections import deque") == 1
    ns: dict = {}
    exec(prog, ns)  # noqa: S102
    assert ns["Solution"]().max_sliding_window([1, 3, -1, -3, 5, 3, 6, 7], 3) == [3, 3, 5, 5, 6, 7]


def test_asserts_and_calls_at_top_level_are_dropped_but_assignments_stay() -> None:
    code = extract_code(
        PY.format(
            "TABLE = [i * i for i in range(10)]\n\ndef add(xs):\n    return sum(xs)\n\nassert add([1]) == 2\nadd([input()])"
        ),
        "add",
    )
    assert code == "TABLE = [i * i for i in range(10)]\n\ndef add(xs):\n    return sum(xs)"


# ---------------------------------------------------------------------------- the prompt text


def test_render_prompt(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    assert render_prompt(tok, "def f():", use_chat_template=False) == "def f():"
    text = render_prompt(tok, "write f", use_chat_template=True)
    assert text == "<|im_start|>user\nwrite f<|im_end|>\n<|im_start|>assistant\n"
    msgs = [{"role": "system", "content": "Python."}, {"role": "user", "content": "hi"}]
    assert render_prompt(tok, msgs, use_chat_template=True).startswith("<|im_start|>system\n")
    tok.chat_template = None
    with pytest.raises(SSDError, match="no chat template"):
        render_prompt(tok, "x", use_chat_template=True)
    with pytest.raises(SSDError):
        render_prompt(tok, msgs, use_chat_template=False)


def test_prompt_for_each_style(tiny_model_dir: Path) -> None:
    assert prompt_for(HE, "completion", "You are terse.") == HE.prompt  # no tokenizer needed
    tok = load_tokenizer(str(tiny_model_dir))
    text = prompt_for(HE, "chat", "You are terse.", tok)
    assert text == render_prompt(tok, chat_messages(HE, "You are terse."), True)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n")
