"""Start screen: the runs in the runs folder; open one, or create a new one."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ssd_tui.tui.data import RunListing, display_path, fmt_ago, fmt_pct, list_runs

REFRESH_S = 3.0
EMPTY_HINT = (
    "No runs here yet. Try the bundled demo: quit (ctrl+q) and run [b]ssd-tui demo[/b] "
    "(minutes on a CPU), or press [b]n[/b] to create a run from an example config, "
    "or start one headless with [b]ssd-tui run CONFIG.toml[/b]."
)
STATE_STYLE = {"running": "bold cyan", "new": "yellow", "unreadable": "bold red", "idle": "green"}


class StartScreen(Screen):
    HELP_TITLE = "runs"  # what the help screen calls it
    AUTO_FOCUS = "#runs"
    BINDINGS = [
        Binding(
            "enter",
            "open_run",
            "Open run",
            tooltip="open the highlighted run's dashboard",
            priority=True,
        ),
        Binding("n", "new_run", "New run", tooltip="create a run from an example config"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "app.quit", "Quit"),
    ]

    class Listed(Message):
        def __init__(self, runs: list[RunListing]) -> None:
            super().__init__()
            self.runs = runs

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunListing] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="run-error")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_column("run", key="run", width=22)
        table.add_column("model", key="model", width=38)
        # Fixed widths (DataTable would keep cells first drawn at a narrower auto width).
        table.add_column("rounds", key="rounds", width=7)
        table.add_column("best pass@1", key="best", width=11)
        table.add_column("last activity", key="last", width=13)
        table.add_column("state", key="state", width=10)
        self.query_one("#runs-title", Static).update(
            f"Runs in [b]{escape(display_path(self.app.runs_dir))}[/b]  (each folder with a run.db or a config.toml)"
        )
        self.action_refresh()
        # Runs change under the list (an engine starts, creates or finishes a run): keep
        # it current without r, but only while this screen is the one shown.
        self.set_interval(REFRESH_S, self._auto_refresh)

    def _auto_refresh(self) -> None:
        if self.is_current:
            self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self._list(self.app.runs_dir)

    @work(thread=True, exclusive=True, group="list-runs")
    def _list(self, runs_dir: Path) -> None:
        self.post_message(self.Listed(list_runs(runs_dir)))

    def on_start_screen_listed(self, message: Listed) -> None:
        if message.runs == self.runs and self.runs:
            return  # unchanged: keep the table (and its cursor) as it is
        self.runs = message.runs
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear()
        now = self.app.clock()
        for r in self.runs:
            planned = f"/{r.rounds_planned}" if r.rounds_planned is not None else ""
            # A folder named apart from its run (the demo set aside as demo.<date-time>)
            # shows the folder too: two rows both named "demo" could not be told apart.
            name = Text(r.name, style="bold")
            if r.run_dir.name != r.name:
                name.append(f" {r.run_dir.name}", style="dim")
            table.add_row(
                name,
                Text(r.model or "–", overflow="ellipsis"),
                f"{r.rounds_done}{planned}",
                Text(fmt_pct(r.best_pass1), justify="right"),
                fmt_ago(r.last_activity, now),
                Text(r.state, style=STATE_STYLE.get(r.state, "")),
                key=str(r.run_dir),
            )
        if self.runs:
            table.move_cursor(row=min(max(row, 0), len(self.runs) - 1))
        self._show_error()

    @on(DataTable.RowHighlighted, "#runs")
    def _show_error(self) -> None:
        r = self.current
        text: str | Text = EMPTY_HINT if not self.runs else ""
        if r is not None and r.error:
            text = Text(r.error, style="red")
        self.query_one("#run-error", Static).update(text)

    @property
    def current(self) -> RunListing | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.cursor_row < 0 or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowSelected, "#runs")
    def action_open_run(self) -> None:
        r = self.current
        if r is None:
            return
        from ssd_tui.tui.app import RunRef
        from ssd_tui.tui.screens.dashboard import DashboardScreen

        self.app.push_screen(DashboardScreen(RunRef(r.db_path.resolve())))

    def action_new_run(self) -> None:
        from ssd_tui.tui.screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen())
