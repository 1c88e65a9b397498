"""A sample's tokens coloured by entropy, with fork and lock positions marked."""

from __future__ import annotations

import math

from rich.color import Color
from rich.style import Style
from rich.text import Text

from ssd_tui.tui.views import TokenRow

LOW = Color.from_rgb(90, 140, 220)  # low entropy: cool blue
MID = Color.from_rgb(230, 200, 80)  # around the fork threshold: yellow
HIGH = Color.from_rgb(240, 80, 70)  # well above it: red
FORK_BG = "on #4a1d4a"
LOCK_BG = "on #0f2f38"


def _blend(a: Color, b: Color, t: float) -> Color:
    ta, tb = a.get_truecolor(), b.get_truecolor()
    return Color.from_rgb(*(round(x + (y - x) * t) for x, y in zip(ta, tb, strict=False)))


def entropy_color(h: float, fork_entropy: float) -> Color:
    """Blue (0 nats) → yellow (the fork threshold) → red (twice the threshold)."""
    if math.isnan(h):
        return Color.from_rgb(150, 150, 150)
    ref = max(fork_entropy, 1e-6)
    if h <= ref:
        return _blend(LOW, MID, h / ref)
    return _blend(MID, HIGH, min(1.0, (h - ref) / ref))


def token_text(rows: list[TokenRow], fork_entropy: float) -> Text:
    out = Text()
    for t in rows:
        style = Style(color=entropy_color(t.entropy, fork_entropy))
        if t.kind == "fork":
            style += Style.parse("bold underline " + FORK_BG)
        elif t.kind == "lock":
            style += Style.parse(LOCK_BG)
        piece = t.text
        if "\n" in piece:
            # Keep the layout; show the newline token itself as a visible mark.
            piece = piece.replace("\n", "⏎\n")
        out.append(piece or "∅", style=style)
    return out


def legend(fork_entropy: float, lock_top1: float) -> Text:
    t = Text("colour = entropy:  ")
    for h in (0.0, 0.5 * fork_entropy, fork_entropy, 1.5 * fork_entropy, 2 * fork_entropy):
        t.append(f" {h:.2g} ", style=Style(color=entropy_color(h, fork_entropy), reverse=True))
    t.append("  nats    ")
    t.append(" fork ", style=Style.parse("bold underline " + FORK_BG))
    t.append(f" entropy ≥ {fork_entropy:g}   ")
    t.append(" lock ", style=Style.parse(LOCK_BG))
    t.append(f" p(T=1) ≥ {lock_top1:g}")
    return t
