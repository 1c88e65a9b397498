"""Start screen: the runs (and sweeps) in the runs folder; open one, overlay several, or
create a new one."""

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

from ssd_tui.errors import SSDError
from ssd_tui.store.reads import RunListing
from ssd_tui.tui.data import display_path, fmt_ago, fmt_pct
from ssd_tui.tui.listing import list_runs, tree_order
from ssd_tui.tui.messages import OpenDashboard, OpenNewRun, OpenOverlay
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.workbench import picked_runs, run_tags, sweep_folders, sweep_runs

REFRESH_S = 3.0
EMPTY_HINT = (
    "No runs here yet. Try the bundled demo: quit (ctrl+q) and run [b]ssd-tui demo[/b] "
    "(minutes on a CPU), or press [b]n[/b] to create a run from an example config, "
    "or start one headless with [b]ssd-tui run CONFIG.toml[/b]."
)
STATE_STYLE = {
    "running": "bold cyan",
    "new": "yellow",
    "unreadable": "bold red",
    "idle": "green",
    "stopped": "yellow",
}


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
        Binding("space", "mark", "Mark", tooltip="mark the highlighted run for an overlay"),
        Binding(
            "c",
            "overlay",
            "Overlay",
            tooltip="pass@1 of the marked runs (or of every run listed) on one chart",
        ),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "app.quit", "Quit"),
    ]

    class Listed(Message):
        def __init__(
            self,
            runs: list[RunListing],
            sweeps: list[Path] | None = None,
            tags: dict[Path, list[str]] | None = None,
        ) -> None:
            super().__init__()
            self.runs = runs
            self.sweeps = sweeps or []
            self.tags = tags or {}

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunListing] = []  # as shown: each run followed by its branches
        self.listed: list[RunListing] = []  # as listed, to tell when the folder changed
        self.depth: dict[Path, int] = {}  # how deep in the tree of branches a run is
        self.sweeps: list[Path] = []  # sweep folders, listed first
        self.marked: set[Path] = set()
        self.tags: dict[Path, list[str]] = {}

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
        runs = list_runs(runs_dir)
        self.post_message(self.Listed(runs, sweep_folders(runs_dir), run_tags(runs)))

    def on_start_screen_listed(self, message: Listed) -> None:
        if message.runs == self.listed and self.listed:
            return  # unchanged: keep the table (and its cursor) as it is
        self.listed = message.runs
        tree = tree_order(message.runs)
        self.runs = [r for r, _ in tree]
        self.depth = {r.run_dir: d for r, d in tree}
        self.sweeps = message.sweeps
        self.tags = message.tags
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear()
        now = self.app.clock()
        for folder in self.sweeps:
            table.add_row(
                Text(f"▸ {folder.name}", style="bold magenta"),
                Text("sweep: enter overlays its runs", style="dim"),
                "",
                "",
                "",
                Text("sweep", style="magenta"),
                key=f"sweep:{folder}",
            )
        for r in self.runs:
            planned = f"/{r.rounds_planned}" if r.rounds_planned is not None else ""
            table.add_row(
                self._name_cell(r),
                Text(r.model or "–", overflow="ellipsis"),
                f"{r.rounds_done}{planned}",
                Text(fmt_pct(r.best_pass1), justify="right"),
                fmt_ago(r.last_activity, now),
                Text(r.state, style=STATE_STYLE.get(r.state, "")),
                key=str(r.run_dir),
            )
        if self.runs or self.sweeps:
            table.move_cursor(row=min(max(row, 0), len(self.runs) + len(self.sweeps) - 1))
        self._show_error()

    @on(DataTable.RowHighlighted, "#runs")
    def _show_error(self) -> None:
        r = self.current
        text: str | Text = EMPTY_HINT if not (self.runs or self.sweeps) else ""
        if r is not None and r.error:
            text = Text(r.error, style="red")
        self.query_one("#run-error", Static).update(text)

    def _name_cell(self, r: RunListing) -> Text:
        mark = "● " if r.run_dir in self.marked else ""
        depth = self.depth.get(r.run_dir, 0)
        cell = Text()
        if depth:  # under its parent in the tree of branches
            cell.append("  " * (depth - 1) + "└ ", style="dim")
        cell.append(mark + r.name, style="bold")
        if depth:  # a branch: the round of its parent it starts from
            cell.append(f" ⑂r{r.parent_round}", style="magenta")
        # A folder named apart from its run (the demo set aside as demo.<date-time>)
        # shows the folder too: two rows both named "demo" could not be told apart.
        if r.run_dir.name != r.name:
            cell.append(f" {r.run_dir.name}", style="dim")
        if tags := self.tags.get(r.run_dir):
            cell.append(" " + " ".join(f"#{t}" for t in tags), style="italic cyan")
        return cell

    @property
    def current(self) -> RunListing | None:
        table = self.query_one("#runs", DataTable)
        i = table.cursor_row - len(self.sweeps)
        if not self.runs or i < 0 or i >= len(self.runs):
            return None
        return self.runs[i]

    @property
    def current_sweep(self) -> Path | None:
        row = self.query_one("#runs", DataTable).cursor_row
        return self.sweeps[row] if 0 <= row < len(self.sweeps) else None

    def action_mark(self) -> None:
        r = self.current
        if r is None:
            return
        self.marked ^= {r.run_dir}
        table = self.query_one("#runs", DataTable)
        table.update_cell(str(r.run_dir), "run", self._name_cell(r))
        table.move_cursor(row=table.cursor_row + 1)

    def action_overlay(self) -> None:
        picked = [r for r in self.runs if r.run_dir in self.marked] or self.runs
        dbs = [r.db_path for r in picked if r.db_path.exists()]
        if not dbs:
            self.notify("no run with a database to overlay", severity="warning")
            return
        what = "marked" if self.marked else "listed"
        self.post_message(OpenOverlay(picked_runs(dbs), f"{len(dbs)} {what} runs"))

    def _open_sweep(self, folder: Path) -> None:
        try:
            title, runs = sweep_runs(folder)
        except SSDError as e:
            self.notify(str(e), severity="error")
            return
        self.post_message(OpenOverlay(runs, title))

    @on(DataTable.RowSelected, "#runs")
    def action_open_run(self) -> None:
        if (folder := self.current_sweep) is not None:
            self._open_sweep(folder)
            return
        r = self.current
        if r is None:
            return
        self.post_message(OpenDashboard(RunRef(r.db_path.resolve())))

    def action_new_run(self) -> None:
        self.post_message(OpenNewRun())
