"""Problem → prompt, and model answer → the program that is tested.

Two styles:
- ``completion``: the model continues the problem's code prefix (signature +
  docstring); the program is prompt + completion.
- ``chat``: one user turn (after a system message) asks for the function; the answer
  is markdown, and the program is the code in its fenced block.
"""

from __future__ import annotations

import re

from ssd_tui.problems import Problem

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def chat_messages(problem: Problem, system_prompt: str) -> list[dict[str, str]]:
    """The paper's single-turn instruct prompt: a system message and the task."""
    if problem.entry_point and problem.tests is not None and not problem.statement:
        # HumanEval-style: keep the given signature so the tests can call it.
        task = (
            "Complete the following Python function. Keep its name and signature.\n\n"
            f"```python\n{problem.prompt.rstrip()}\n```"
        )
    else:
        task = problem.statement or problem.prompt
        if problem.entry_point and "```" in problem.prompt:
            task = problem.prompt
    msgs = [{"role": "user", "content": task}]
    if system_prompt:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def extract_code(answer: str) -> str:
    """The code of a markdown answer: the longest ```python block (else the longest block).

    Longest, because instruct models often put a short usage example or test call in
    a second block after the solution; an unfenced answer is taken as code whole,
    and an unclosed fence (cut by the token budget) still yields what it holds.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(answer)]
    if not blocks:
        return answer.strip("\n")
    py = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    return max(py or [b for _, b in blocks], key=len).strip("\n")


def program_for(problem: Problem, completion: str, style: str) -> str:
    """The program a sample stands for (before tests are appended)."""
    if style == "completion":
        return problem.prompt + completion
    code = extract_code(completion)
    # An answer that gives only the body of a HumanEval function: put the prompt back.
    if problem.entry_point and f"def {problem.entry_point}" not in code and problem.prompt.lstrip().startswith(("def ", "from ", "import ")):
        return problem.prompt + code
    # Keep the prompt's imports (HumanEval's `from typing import List`).
    imports = "".join(line + "\n" for line in problem.prompt.splitlines() if line.startswith(("import ", "from ")))
    return imports + code
