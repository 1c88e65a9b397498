"""Diffs of two programs, unified and side by side: difflib for the alignment, rich for
the colours (Python syntax highlighting kept in the side-by-side view)."""

from __future__ import annotations

import difflib

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

ADDED = "on #12361f"
REMOVED = "on #3d1619"
ADDED_WORD = "bold on #1f6b37"
REMOVED_WORD = "bold on #7a2630"


def unified_diff_text(
    a: str, b: str, label_a: str = "A", label_b: str = "B", context: int = 3
) -> str:
    lines = difflib.unified_diff(
        a.splitlines(), b.splitlines(), fromfile=label_a, tofile=label_b, lineterm="", n=context
    )
    return "\n".join(lines)


def unified_diff(a: str, b: str, label_a: str = "A", label_b: str = "B") -> RenderableType:
    text = unified_diff_text(a, b, label_a, label_b)
    if not text:
        return Text("the two programs are identical", style="italic")
    out = Text(no_wrap=True)
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green " + ADDED
        elif line.startswith("-"):
            style = "red " + REMOVED
        else:
            style = ""
        out.append(line + "\n", style=style)
    out.rstrip()
    return out


def _highlighted_lines(code: str) -> list[Text]:
    if not code:
        return []
    text = Syntax(code, "python", theme="monokai").highlight(code)
    text.rstrip()
    lines = text.split("\n", allow_blank=True)
    return list(lines)[: len(code.splitlines())]


def side_by_side(a: str, b: str, label_a: str = "A", label_b: str = "B") -> RenderableType:
    """Two columns of line-numbered, highlighted code; changed lines tinted, changed
    characters within a replaced line in bold."""
    la, lb = a.splitlines(), b.splitlines()
    ha, hb = _highlighted_lines(a), _highlighted_lines(b)
    table = Table(box=None, expand=True, show_header=True, padding=(0, 1), header_style="bold")
    table.add_column("", justify="right", style="dim", width=4, no_wrap=True)
    table.add_column(label_a, ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("", justify="right", style="dim", width=4, no_wrap=True)
    table.add_column(label_b, ratio=1, no_wrap=True, overflow="ellipsis")
    sm = difflib.SequenceMatcher(a=la, b=lb, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=False):
                table.add_row(str(i + 1), ha[i], str(j + 1), hb[j])
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            i, j = i1 + k, j1 + k
            left = ha[i].copy() if i < i2 else Text("")
            right = hb[j].copy() if j < j2 else Text("")
            if i < i2:
                left.stylize(REMOVED)
            if j < j2:
                right.stylize(ADDED)
            if tag == "replace" and i < i2 and j < j2:
                cm = difflib.SequenceMatcher(a=la[i], b=lb[j], autojunk=False)
                for ctag, a1, a2, b1, b2 in cm.get_opcodes():
                    if ctag != "equal":
                        left.stylize(REMOVED_WORD, a1, a2)
                        right.stylize(ADDED_WORD, b1, b2)
            table.add_row(str(i + 1) if i < i2 else "", left, str(j + 1) if j < j2 else "", right)
    ratio = sm.ratio()
    summary = Text(f"similarity {ratio:.0%} · {len(la)} → {len(lb)} lines", style="dim")
    return Group(summary, table)


class DiffView(VerticalScroll):
    """Shows the diff of `a` and `b`; `mode` is 'split' (side by side) or 'unified'."""

    DEFAULT_CSS = """
    DiffView { height: 1fr; }
    DiffView > Static { width: 1fr; }
    """

    mode: reactive[str] = reactive("split")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.a = self.b = ""
        self.label_a, self.label_b = "A", "B"

    def compose(self):
        yield Static("", id="diff-body")

    def show(self, a: str, b: str, label_a: str, label_b: str) -> None:
        self.a, self.b, self.label_a, self.label_b = a, b, label_a, label_b
        self._render_diff()

    def clear(self) -> None:
        """Nothing to compare: an empty view (the screen's head says why)."""
        self.a = self.b = ""
        if self.is_mounted:
            self.query_one("#diff-body", Static).update("")

    def watch_mode(self) -> None:
        self._render_diff()

    def _render_diff(self) -> None:
        if not self.is_mounted or not (self.a or self.b):
            return
        fn = side_by_side if self.mode == "split" else unified_diff
        self.query_one("#diff-body", Static).update(fn(self.a, self.b, self.label_a, self.label_b))
