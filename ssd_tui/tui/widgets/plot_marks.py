"""Markers on the measured points of plotext's braille lines.

plotext places a braille line's dots on a grid of 2 x 4 dots a cell, but a one-character
marker (`scatter(..., marker="●")`) or an x tick on a grid of 1 x 1: the two roundings
put a marker up to a row away from the line through it (a line between two close values
drawn under both its markers) and a round's tick a column beside its point. So the charts
draw their lines in braille with plotext, and these functions put each marker into the
very cell that holds its point's braille dot, found from the frame plotext drew around the
data area and the limits the chart set, and move the rounds' ticks to those columns.

No textual here: rich text in, rich text out (the charts' `render`, the overlay's worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

Limits = tuple[float, float]


@dataclass(frozen=True)
class Mark:
    """A measured point: where, its glyph and its colour (a Rich colour)."""

    x: float
    y: float
    glyph: str
    color: str


@dataclass
class Panel:
    """One plot (a subplot, in the order plotext lays them out) and its marks; `ticks`,
    the x values labelled on `fig` (a plotext figure), are moved to their points' columns."""

    xlim: Limits
    ylim: Limits
    marks: list[Mark] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    fig: Any = None
    tick_positions: list[float] = field(default_factory=list)  # where they are now


def data_areas(lines: list[str]) -> list[tuple[int, int, int, int]]:
    """The data areas inside plotext's frames, row by row and left to right (plotext's
    subplot order): (top, left, bottom, right), inclusive."""
    out = []
    for r, line in enumerate(lines):
        c = line.find("┌")
        while c >= 0:
            right = line.find("┐", c)
            bottom = next((b for b in range(r + 1, len(lines)) if lines[b][c : c + 1] == "└"), None)
            if right > c + 1 and bottom is not None and bottom > r + 1:
                out.append((r + 1, c + 1, bottom - 1, right - 1))
            c = line.find("┌", c + 1)
    return out


def dot_cell(value: float, lim: Limits, cells: int, dots_per_cell: int) -> int | None:
    """The cell (from the low end) holding `value`'s braille dot, as plotext computes it
    (`get_matrix_data` on the canvas widened `dots_per_cell` times); None outside."""
    lo, hi = lim
    dots = cells * dots_per_cell
    if hi == lo or not math.isfinite(value):
        return None
    dot = math.floor(round(0.5 + (dots - 1) * (value - lo) / (hi - lo), 8))
    return dot // dots_per_cell if 0 <= dot < dots else None


def align_ticks(panels: list[Panel], areas: list[tuple[int, int, int, int]]) -> bool:
    """Put each panel's ticks where plotext's 1 x 1 rounding lands on the braille column of
    the same x (the cell's own position: floor(0.5 + (W - 1) t) = c for t = c / (W - 1));
    False when no tick moves (a repaint at the same size: they were moved before)."""
    moved = False
    for panel, (_top, left, _bottom, right) in zip(panels, areas, strict=False):
        width, (lo, hi) = right - left + 1, panel.xlim
        if panel.fig is None or not panel.ticks or width < 2 or hi == lo:
            continue
        cells = [dot_cell(x, panel.xlim, width, 2) for x in panel.ticks]
        pos = [lo + (hi - lo) * c / (width - 1) for c in cells if c is not None]
        labels = [f"{x:g}" for x, c in zip(panel.ticks, cells, strict=True) if c is not None]
        if pos != panel.tick_positions:
            panel.fig.xticks(pos, labels)
            panel.tick_positions, moved = pos, True
    return moved


def marked(picture: Text, panels: list[Panel], build: Callable[[], str]) -> Text:
    """A plotext picture with the rounds' ticks under their points (`build` draws it again,
    as ANSI text, once they are moved) and each panel's marks in their dots' cells."""
    if not any(p.marks for p in panels):
        return picture
    areas = data_areas(picture.plain.split("\n"))
    if align_ticks(panels, areas):
        picture = Text.from_ansi(build())
    return place_marks(picture, panels)


def place_marks(text: Text, panels: list[Panel]) -> Text:
    """`text` (a plotext picture) with each panel's marks put in their dots' cells."""
    if not any(p.marks for p in panels):
        return text
    lines = text.split("\n", allow_blank=True)
    areas = data_areas([line.plain for line in lines])
    for panel, (top, left, bottom, right) in zip(panels, areas, strict=False):
        for m in panel.marks:
            col = dot_cell(m.x, panel.xlim, right - left + 1, 2)
            row = dot_cell(m.y, panel.ylim, bottom - top + 1, 4)
            if col is None or row is None:
                continue
            line, at = lines[bottom - row], left + col
            line.plain = line.plain[:at] + m.glyph + line.plain[at + 1 :]
            line.stylize(m.color, at, at + 1)
    return Text("\n").join(lines)
