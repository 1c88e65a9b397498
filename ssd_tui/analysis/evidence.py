"""What a mode-collapse warning points at: the problems and samples its evidence names."""

from __future__ import annotations

from typing import Any


def evidence_targets(evidence: Any) -> tuple[list[str], list[int]]:
    """Problem names and sample ids mentioned anywhere in a warning's evidence JSON."""
    problems: list[str] = []
    ids: list[int] = []

    def walk(obj: Any, key: str = "") -> None:
        k = key.lower()
        if isinstance(obj, dict):
            for kk, vv in obj.items():
                walk(vv, str(kk))
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, bool):
            return
        elif isinstance(obj, int) and ("sample" in k and "id" in k or k in ("samples", "sample")):
            ids.append(obj)
        elif isinstance(obj, str) and k in ("problem", "problems", "problem_name", "name") and obj:
            problems.append(obj)

    walk(evidence)
    return list(dict.fromkeys(problems)), list(dict.fromkeys(ids))
