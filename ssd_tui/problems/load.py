"""A problem set by its name in a config: "humaneval", a LeetCode spec, or a JSONL path."""

from __future__ import annotations

from pathlib import Path

from ssd_tui.errors import SSDError
from ssd_tui.problems.leetcode import is_leetcode_spec, load_leetcode_spec
from ssd_tui.problems.sets import HUMANEVAL, Problem, load_humaneval, load_jsonl


def is_named_problem_set(spec: str) -> bool:
    """'humaneval' or a 'leetcode[:split][:difficulty]' spec, rather than a JSONL path."""
    return spec.strip().lower() == HUMANEVAL or is_leetcode_spec(spec)


def load_problem_set(
    spec: str,
    base_dir: Path | None = None,
    require_tests: bool = False,
    limit: int | None = None,
) -> list[Problem]:
    """``spec`` is "humaneval", "leetcode[:train|eval][:easy|medium|hard]" or a JSONL path
    (relative to ``base_dir`` when given).

    ``limit`` keeps the first N problems; ``require_tests`` raises an SSDError naming
    the first kept problem that has no tests.
    """
    leetcode = load_leetcode_spec(spec, require_tests, limit)
    if spec.strip().lower() == HUMANEVAL:
        problems = load_humaneval()
    elif leetcode is not None:
        problems = leetcode
    else:
        path = Path(spec).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        problems = load_jsonl(path)
    if limit is not None:
        problems = problems[:limit]
    if require_tests:
        for p in problems:
            if p.tests is None:
                raise SSDError(
                    f'{p.source or spec}: problem "{p.id}" has no tests (evaluation needs them)'
                )
    return problems
