"""Problems × rounds: where a run's gains and losses are.

One row per evaluation problem, one column per round: the share of its samples at T_eval
that passed, a problem that became solved (at least half its samples pass) marked ↑ and
one that stopped marked ↓. Sorted as the set lists the problems, by difficulty or by
number of flips; `b` shows each cell's behaviours instead (distinct behaviour classes and
their entropy); enter opens the highlighted problem's samples of the highlighted round.
The head line has McNemar's test between consecutive rounds (analysis/flips.py).
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ssd_tui.analysis.flips import GridRow, McNemar
from ssd_tui.store.reads import RunReader
from ssd_tui.tui import views
from ssd_tui.tui.messages import GoBack, OpenSamples
from ssd_tui.tui.refs import RunRef

SORTS = {"problem": "as listed", "difficulty": "by difficulty", "flips": "by flips"}
FIXED = ("problem", "diff", "flips")  # the columns before the rounds


def share_cell(row: GridRow, rnd: int) -> Text:
    """'↑0.80': the pass share, the flip mark, green when solved, red when not."""
    share = row.shares.get(rnd)
    if share is None:
        return Text("", justify="right")
    flip = row.flip(rnd)
    mark = "↑" if flip > 0 else "↓" if flip < 0 else " "
    style = "green" if row.solved(rnd) else "red"
    return Text(f"{mark}{share:.2f}", style=f"bold {style}" if flip else style, justify="right")


def behaviour_cell(grid: views.ProblemGrid, row: GridRow, rnd: int) -> Text:
    """'3 0.95': distinct behaviours and their entropy (nats), dim where there is one."""
    got = grid.behaviours.get((row.problem, rnd))
    if got is None:
        return Text("–" if rnd in row.shares else "", style="dim", justify="right")
    n, h = got
    return Text(f"{n} {h:.2f}", style="dim" if n == 1 else "", justify="right")


def mcnemar_text(steps: list[McNemar]) -> str:
    """'r0→r1 +9 −3 p .146' for each consecutive pair of rounds."""
    return " · ".join(
        f"r{m.a}→r{m.b_round} +{m.gained} −{m.lost} p {m.p:.3f}".replace("p 0.", "p .")
        for m in steps
    )


class ProblemGridScreen(Screen):
    HELP_TITLE = "problems × rounds"  # what the help screen calls it
    SUB_TITLE = "problems × rounds"
    AUTO_FOCUS = "#grid"
    BINDINGS = [
        Binding(
            "enter", "open", "Samples", tooltip="the highlighted problem's samples, that round"
        ),
        Binding("d", "sort('difficulty')", "By difficulty", tooltip="easy, medium, hard"),
        Binding("f", "sort('flips')", "By flips", tooltip="most flips first"),
        Binding("o", "sort('problem')", "As listed", tooltip="the problem set's own order"),
        Binding(
            "b",
            "cells",
            "Share/behaviours",
            tooltip="cells: solved share ↔ behaviours (classes and their entropy)",
        ),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, grid: views.ProblemGrid | None) -> None:
            super().__init__()
            self.grid = grid

    def __init__(self, ref: RunRef) -> None:
        super().__init__()
        self.ref = ref
        self.title = ref.db_path.parent.name
        self.reader = RunReader(ref.db_path)
        self.grid: views.ProblemGrid | None = None
        self.sort = "problem"
        self.behaviours = False  # cells show behaviours instead of the solved share
        self.rows: list[GridRow] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="grid-head")
        yield DataTable(id="grid", cursor_type="cell", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_refresh()

    def on_unmount(self) -> None:
        self.reader.close()

    def action_refresh(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="grid")
    def _load(self) -> None:
        self.post_message(self.Loaded(views.problem_grid(self.reader)))

    def on_problem_grid_screen_loaded(self, msg: Loaded) -> None:
        self.grid = msg.grid
        self._show()

    # ---- the table ---------------------------------------------------------------------------
    def _show(self) -> None:
        table = self.query_one("#grid", DataTable)
        grid = self.grid
        keep = table.cursor_coordinate
        # The highlighted problem stays highlighted when the rows are sorted again.
        current = self.rows[keep.row].problem if 0 <= keep.row < len(self.rows) else None
        table.clear(columns=True)
        if grid is None or not grid.rows:
            self._head()
            return
        for name, width in zip(FIXED, (22, 6, 5), strict=True):
            table.add_column(name, key=name, width=width)
        for rnd in grid.rounds:
            table.add_column(f"r{rnd}", key=f"r{rnd}", width=7 if self.behaviours else 6)
        self.rows = views.sort_grid(grid.rows, self.sort)
        for row in self.rows:
            cells = [
                behaviour_cell(grid, row, r) if self.behaviours else share_cell(row, r)
                for r in grid.rounds
            ]
            flips = Text(str(row.flips) if row.flips else "", justify="right")
            table.add_row(row.problem, row.difficulty or "", flips, *cells, key=row.problem)
        at = next((i for i, r in enumerate(self.rows) if r.problem == current), keep.row)
        table.move_cursor(row=at, column=keep.column)
        self._head()

    def _head(self) -> None:
        grid = self.grid
        head = self.query_one("#grid-head", Static)
        if grid is None or not grid.rows:
            head.update(
                "no judged evaluation samples yet: each round's evaluate stage fills the grid"
            )
            return
        what = (
            "behaviours per round: distinct classes and their entropy (nats)"
            if self.behaviours
            else "share of samples passing per round"
        )
        text = Text(
            f"{len(grid.rows)} problems · {what} at T_eval {grid.t_eval:g} · sorted "
            f"{SORTS[self.sort]}",
            style="bold",
        )
        text.append(
            "\nsolved = at least half the samples pass; ↑ became solved, ↓ stopped (vs the "
            "round before) · McNemar: ",
            style="dim",
        )
        text.append(mcnemar_text(grid.steps) or "one round: nothing to compare")
        head.update(text)

    # ---- actions ------------------------------------------------------------------------------
    def action_sort(self, key: str) -> None:
        self.sort = key
        self._show()

    def action_cells(self) -> None:
        self.behaviours = not self.behaviours
        self._show()

    def action_open(self) -> None:
        grid = self.grid
        table = self.query_one("#grid", DataTable)
        if grid is None or not self.rows or not grid.rounds:
            return
        row = self.rows[min(table.cursor_row, len(self.rows) - 1)]
        column = table.cursor_column - len(FIXED)
        rnd = grid.rounds[column] if 0 <= column < len(grid.rounds) else grid.rounds[-1]
        self.post_message(
            OpenSamples(self.ref, round=rnd, problem=row.problem, eval_temperature=grid.t_eval)
        )

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_open()

    def action_back(self) -> None:
        self.post_message(GoBack())
