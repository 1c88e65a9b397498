"""The rounds table: one row per round, updated in place (the cursor never jumps).

Its McNemar column pairs each round with a reference round (round 0 until the dashboard
sets another, `m`): the exact p-value of the problems that flipped between the two
(analysis/flips.py), so any two rounds can be compared.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ssd_tui.analysis import flips
from ssd_tui.store.reads import RoundRow
from ssd_tui.tui.data import fmt_duration, fmt_float, fmt_pct

STATUS_STYLE = {
    "done": "green",
    "running": "bold cyan",
    "paused": "yellow",
    "stopped": "yellow",
    "failed": "bold red",
    "interrupted": "bold red",
    "pending": "dim",
}


class RoundsTable(DataTable):
    """Rows are keyed by round number; `update_rounds` adds, updates and removes rows."""

    DEFAULT_CSS = """
    RoundsTable { height: 1fr; }
    """

    COLUMNS = (
        "round",
        "stage",
        "status",
        "pass@1",
        "pass@k",
        "samples",
        "diversity",
        "duration",
        "⚠",
        "⚑",  # suspect samples: programs that look like they game the tests
        "p",  # McNemar's p against the reference round (its label names the round)
    )
    # Fixed widths: Textual's DataTable caches cell renders without their width, so columns
    # that grow after a first render would stay cut ("analy"); fixed ones never change.
    WIDTHS = (5, 8, 11, 6, 6, 8, 9, 8, 3, 4, 6)

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.rows_by_round: dict[int, RoundRow] = {}
        self.reference = 0  # McNemar's p is against this round
        self.pass_counts: dict[int, flips.PassCounts] = {}
        self._shown_p: dict[int, str] = {}

    def on_mount(self) -> None:
        for c, w in zip(self.COLUMNS, self.WIDTHS, strict=True):
            self.add_column("p·r0" if c == "p" else c, key=c, width=w)

    def set_k_label(self, k: int, diversity: str) -> None:
        self.columns["pass@k"].label = Text(f"pass@{k}" if k > 1 else "pass@k")
        self.refresh()

    def set_reference(self, rnd: int) -> None:
        """Compare every round with ``rnd`` (McNemar's p column)."""
        self.reference = rnd
        self.columns["p"].label = Text(f"p·r{rnd}")
        self._update_p()
        self.refresh()

    def p_value(self, rnd: int) -> flips.McNemar | None:
        """McNemar's test of round ``rnd`` against the reference (None: one lacks verdicts,
        or it is the reference)."""
        a, b = sorted((self.reference, rnd))
        if a == b or a not in self.pass_counts or b not in self.pass_counts:
            return None
        return flips.compare(a, b, self.pass_counts[a], self.pass_counts[b])

    def _p_cell(self, rnd: int) -> Text:
        if rnd == self.reference:
            return Text("ref", style="dim", justify="right")
        m = self.p_value(rnd)
        if m is None:
            return Text("")
        text = "<.001" if m.p < 0.001 else f"{m.p:.3f}".lstrip("0") if m.p < 1 else "1"
        return Text(text, style="bold" if m.p < 0.05 else "", justify="right")

    def _update_p(self) -> None:
        for rnd in self.rows_by_round:
            cell = self._p_cell(rnd)
            if self._shown_p.get(rnd) != cell.plain and str(rnd) in self.rows:
                self.update_cell(str(rnd), "p", cell)
                self._shown_p[rnd] = cell.plain

    @staticmethod
    def cells(r: RoundRow) -> list:
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        badge = Text(f"⚠ {r.warnings}", style="bold black on yellow") if r.warnings else Text("")
        flagged = r.suspect if r.suspect < 10_000 else f"{r.suspect // 1000}k"  # fits in 4
        suspect = (
            Text(f"{flagged}", style="bold magenta", justify="right") if r.suspect else Text("")
        )
        return [
            Text(str(r.round), justify="right"),
            r.stage,
            status,
            Text(fmt_pct(r.pass1), justify="right"),
            Text(fmt_pct(r.passk), justify="right"),
            Text(f"{r.samples:,}", justify="right"),
            Text(fmt_float(r.diversity), justify="right"),
            Text(fmt_duration(r.seconds), justify="right"),
            badge,
            suspect,
        ]

    def update_rounds(
        self, rounds: list[RoundRow], pass_counts: dict[int, flips.PassCounts] | None = None
    ) -> None:
        keep = {str(r.round) for r in rounds}
        for key in [k.value for k in self.rows if k.value not in keep]:
            self.remove_row(key)
        if pass_counts is not None:
            self.pass_counts = pass_counts
        for r in rounds:
            key = str(r.round)
            cells = self.cells(r)
            if key in self.rows:
                if self.rows_by_round.get(r.round) != r:
                    for col, value in zip(self.COLUMNS, cells, strict=False):
                        self.update_cell(key, col, value)
            else:
                p = self._p_cell(r.round)
                self.add_row(*cells, p, key=key)
                self._shown_p[r.round] = p.plain
            self.rows_by_round[r.round] = r
        self._update_p()

    @property
    def current_round(self) -> int | None:
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(key.value) if key.value is not None else None
