"""The rounds table: one row per round, updated in place (the cursor never jumps)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

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
    )
    # Fixed widths: Textual's DataTable caches cell renders without their width, so columns
    # that grow after a first render would stay cut ("analy"); fixed ones never change.
    WIDTHS = (5, 8, 11, 6, 6, 8, 9, 8, 3, 4)

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.rows_by_round: dict[int, RoundRow] = {}

    def on_mount(self) -> None:
        for c, w in zip(self.COLUMNS, self.WIDTHS, strict=True):
            self.add_column(c, key=c, width=w)

    def set_k_label(self, k: int, diversity: str) -> None:
        self.columns["pass@k"].label = Text(f"pass@{k}" if k > 1 else "pass@k")
        self.refresh()

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

    def update_rounds(self, rounds: list[RoundRow]) -> None:
        keep = {str(r.round) for r in rounds}
        for key in [k.value for k in self.rows if k.value not in keep]:
            self.remove_row(key)
        for r in rounds:
            key = str(r.round)
            cells = self.cells(r)
            if key in self.rows:
                if self.rows_by_round.get(r.round) != r:
                    for col, value in zip(self.COLUMNS, cells, strict=False):
                        self.update_cell(key, col, value)
            else:
                self.add_row(*cells, key=key)
            self.rows_by_round[r.round] = r

    @property
    def current_round(self) -> int | None:
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(key.value) if key.value is not None else None
