"""Problem → prompt, and model answer → the program that is tested.

``prompt_for`` gives the final prompt text the samplers and the trainer get (the engine
turns it into tokens with one BOS rule, ``engine.base.encode_prompt``); ``program_for``
the program a sample stands for.

Two styles (``[model] prompt_style``):

- ``completion``: the model continues the problem's code prefix (signature +
  docstring); the program is prompt + completion.
- ``chat`` (instruct models, as the SSD paper prompts them): the model's own chat
  template, one turn: a system message asking for Python in a markdown block, then the
  task. The answer is markdown; the program is the code of one fenced block.

The task text of a chat prompt (``instruction``):

- a problem with a ``statement`` (LeetCode): the statement, then the starter code
  (signature only: docstrings and imports taken out) with "keep the names and signature";
- a problem whose prompt is code (HumanEval): "complete this function, keep its name and
  signature", then the prompt (signature + docstring) in a ```python block;
- otherwise the prompt as it is (a plain-language training prompt).

Which fenced block is the solution (``extract_code``): the **first** Python block that
defines the entry point (``def NAME`` / ``class NAME``); when no block does (or the problem
has none), the **longest** Python block. First, because small models often follow the
solution with a second "optimised version" or a usage example that redefines or calls the
function; longest as the fallback, because a block of imports or a one-line usage example
is shorter than a solution. Blocks tagged with another language (```bash, ```text, ...)
count only when there is nothing else. An unclosed fence (cut by the token budget or by
the stop string ``"\\n```\\n"``) still yields what it holds, and an answer without fences is
taken as code whole. See docs/models.md for real examples and the stop-string advice.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ssd_tui.errors import SSDError
from ssd_tui.problems.sets import Problem

# ```lang [info]\n body ``` — the closing fence must start a line; a last block may be unclosed.
_FENCE = re.compile(
    r"^([ \t]*)```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.M
)
_PY_TAGS = ("python", "py", "python3", "py3", "")
_IMPORT = re.compile(r"^(?:import\s+\w|from\s+[\w.]+\s+import\s)")

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Keep its name and signature, "
    "and give the whole function with any imports it needs."
)
STARTER_INSTRUCTION = (
    "Write the solution in Python, starting from this code. "
    "Keep the class name, the method name and its signature."
)


# ---------------------------------------------------------------------------- prompts


def prompt_for(problem: Problem, style: str, system_prompt: str, tokenizer: Any = None) -> str:
    """The prompt the model is given for ``problem``: its code prefix (completion style),
    or the chat messages through the model's chat template (chat style, which needs the
    model's ``tokenizer``)."""
    if style == "completion":
        return problem.prompt
    return render_prompt(tokenizer, chat_messages(problem, system_prompt), True)


def render_prompt(tokenizer: Any, prompt: str | list[dict], use_chat_template: bool) -> str:
    """Turn a raw prompt or chat messages into the final prompt string.

    With ``use_chat_template`` a plain string becomes one user message; the template is
    applied with ``add_generation_prompt=True`` so the text ends where the answer starts.
    """
    if not use_chat_template:
        if isinstance(prompt, str):
            return prompt
        raise SSDError("chat messages need a chat template (set use_chat_template)")
    if not getattr(tokenizer, "chat_template", None):
        raise SSDError(
            "use_chat_template is set but the tokenizer has no chat template "
            "(use a completion-style prompt for a base model)"
        )
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # defensive: some versions return a list for batches
        raise SSDError("chat template did not render to a string")
    return text


def chat_messages(problem: Problem, system_prompt: str) -> list[dict[str, str]]:
    """The paper's single-turn instruct prompt: a system message (if any) and the task."""
    msgs = [{"role": "user", "content": instruction(problem)}]
    if system_prompt:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def instruction(problem: Problem) -> str:
    """The user turn of a chat prompt for ``problem`` (see the module docstring)."""
    prompt = problem.prompt
    if problem.statement:
        starter = code_outline(prompt) if prompt.strip() != problem.statement.strip() else ""
        if starter:
            return f"{problem.statement.rstrip()}\n\n{STARTER_INSTRUCTION}\n\n```python\n{starter}\n```"
        return problem.statement.rstrip()
    if _defines_code(prompt):
        return f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt.strip()}\n```"
    return prompt.strip()


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return None


def _defines_code(text: str) -> bool:
    tree = _parse(text)
    return tree is not None and any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body
    )


def code_outline(code: str) -> str:
    """``code`` without docstrings and top-level imports: the signatures a model must keep.

    Returns "" when ``code`` is not Python that defines something.
    """
    tree = _parse(code)
    if tree is None or not _defines_code(code):
        return ""
    drop: set[int] = set()  # 1-based line numbers
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and body
        ):
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                drop.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = [ln for i, ln in enumerate(code.splitlines(), 1) if i not in drop]
    return "\n".join(lines).strip("\n")


# ---------------------------------------------------------------------------- answers


def _blocks(answer: str) -> list[tuple[str, str]]:
    """(language tag, body) of each fenced block, in order; the last may be unclosed.

    A fence indented (inside a list item) has that indentation taken off its lines.
    """
    out = []
    for indent, lang, body in _FENCE.findall(answer):
        if indent:
            body = "\n".join(
                ln[len(indent) :] if ln.startswith(indent) else ln for ln in body.split("\n")
            )
        out.append((lang.lower(), body))
    return out


def defines(code: str, name: str) -> bool:
    """Does ``code`` define ``name`` at the top level (``def name`` or ``class name``)?"""
    return re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", code, re.M) is not None


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The code of a markdown answer (see the module docstring for which block).

    Code cut by the token budget keeps its longest prefix that parses and still defines the
    entry point. Import lines from the answer's other Python blocks are put in front, so an answer that
    shows its imports in a block of their own still runs. Top-level usage examples are
    dropped (``if __name__ == "__main__":`` blocks, bare calls such as ``print(f(3))``,
    ``assert`` lines): the program runs as ``__main__`` under the tests, and a wrong
    self-made assert or an ``input()`` would fail a correct function.
    """
    blocks = _blocks(answer)
    if not blocks:
        return _drop_main_guard(answer.strip("\n"))
    py = [body for lang, body in blocks if lang in _PY_TAGS]
    pool = py or [body for _, body in blocks]
    chosen = None
    if entry_point:
        chosen = next((b for b in pool if defines(b, entry_point)), None)
    if chosen is None:
        chosen = max(pool, key=lambda b: len(b.strip()))
    code = chosen.strip("\n")
    have = {ln.strip() for ln in code.splitlines()}
    extra: list[str] = []
    for body in pool:
        if body is chosen:
            continue
        for ln in body.splitlines():
            s = ln.strip()
            if ln == s and _IMPORT.match(s) and s not in have and s not in extra:
                extra.append(s)
    if extra:
        code = "\n".join(extra) + "\n" + code
    return _drop_main_guard(_parseable_prefix(code, entry_point))


def _parseable_prefix(code: str, entry_point: str | None) -> str:
    """``code`` if it parses; else its longest prefix of whole lines that parses and still
    defines ``entry_point`` (an answer cut by the token budget inside a usage example after
    a complete solution); else ``code`` unchanged, to fail as it is."""
    if _parse(code) is not None:
        return code
    lines = code.splitlines()
    for end in range(len(lines) - 1, 0, -1):
        prefix = "\n".join(lines[:end]).rstrip()
        if (
            prefix
            and _parse(prefix) is not None
            and (not entry_point or defines(prefix, entry_point))
        ):
            return prefix
    return code


def _drop_main_guard(code: str) -> str:
    """Drop top-level example usage: ``if __name__ == ...`` blocks, bare expression
    statements (``print(f(3))``, ``check_solution()``) and ``assert`` statements.

    A solution never needs them, and small models often end their block with a usage
    example or self-made asserts that are wrong or read input, which would fail a correct
    function. Definitions, imports and assignments stay. Code that does not parse is
    returned as it is.
    """
    tree = _parse(code)
    if tree is None:
        return code
    drop: set[int] = set()
    for i, node in enumerate(tree.body):
        main_guard = (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        )
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if (
            main_guard
            or isinstance(node, ast.Assert)
            or (isinstance(node, ast.Expr) and not docstring)
        ):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    if not drop:
        return code
    lines = [ln for i, ln in enumerate(code.splitlines(), 1) if i not in drop]
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()  # the "# Example usage" comment that led to what was dropped
    return "\n".join(lines) if lines else code


def program_for(problem: Problem, completion: str, style: str) -> str:
    """The program a sample stands for (the tests are appended by ``ssd_tui.evaluation.check``).

    Chat style: the extracted code, with the prompt's top-level imports in front (HumanEval's
    ``from typing import List``; LeetCode's prelude, the imports LeetCode's own judge
    provides). An answer that gives only the indented body of the function gets the prompt
    put back in front. ``from __future__`` imports are moved to the top, where Python
    requires them.
    """
    if style == "completion":
        return problem.prompt + completion
    code = extract_code(completion, problem.entry_point)
    entry = problem.entry_point
    if (
        entry
        and not defines(code, entry)
        and defines(problem.prompt, entry)
        and code[:1] in (" ", "\t")
        and problem.prompt.rstrip().endswith(('"""', "'''", ":"))
    ):
        return problem.prompt + code + "\n"
    own = set(code.splitlines())
    imports = [ln for ln in problem.prompt.splitlines() if _IMPORT.match(ln) and ln not in own]
    lines = [*imports, *code.splitlines()]
    future = [ln for ln in lines if ln.startswith("from __future__ import")]
    rest = [ln for ln in lines if not ln.startswith("from __future__ import")]
    return "\n".join(dict.fromkeys(future)) + ("\n" if future else "") + "\n".join(rest) + "\n"


def extraction_rule(style: str) -> str:
    """In words, how an answer becomes the tested program (recorded in every run DB)."""
    if style == "completion":
        return "completion style: program = prompt + completion (cut at the stop strings)"
    return (
        "chat style: extract_code: the first Python fenced block that defines the entry point, "
        "else the longest Python block (another language's block only when there is no Python "
        "one); an unclosed fence yields what it holds; no fence: the whole answer; imports "
        "from the other Python blocks are prepended; code cut by the token budget keeps its "
        "longest parseable prefix; top-level usage (__main__ guards, bare calls, asserts) is "
        "dropped"
    )
