"""Formatting shared by the screens: numbers, durations, times and paths as people read
them. No textual here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def fmt_float(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "–"
    d = max(0.0, now - ts)
    if d < 60:
        return "just now"
    if d < 3600:
        return f"{int(d // 60)} min ago"
    if d < 86400:
        return f"{int(d // 3600)} h ago"
    return f"{int(d // 86400)} d ago"


def fmt_offset(ts: float, start: float) -> str:
    """A time as +H:MM:SS since the run started (stable, timezone-free)."""
    d = max(0, int(ts - start))
    return f"+{d // 3600}:{(d % 3600) // 60:02d}:{d % 60:02d}"


def display_path(p: Path | str) -> str:
    """A path as shown to people: relative to the current directory when inside it."""
    p = Path(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def evidence_text(evidence: Any) -> str:
    return json.dumps(evidence, indent=2, sort_keys=True, ensure_ascii=False)
