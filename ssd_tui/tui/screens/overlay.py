"""Many runs on one chart: a sweep folder, or runs picked on the start screen.

pass@1 by round, one line per setting (the mean over its seeds, with a ± sd band) or per
run, the legend beside the plot; the sweep's summary table (mean ± sd per round, as
`ssd-tui sweep` prints it) and the runs, each opening its dashboard. All reading happens
in a thread worker; the chart only replots what it was handed.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ssd_tui.runs.sweep import fmt_mean_sd
from ssd_tui.tui.messages import GoBack, OpenDashboard, OpenSearch
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.keys_footer import KeysFooter
from ssd_tui.tui.widgets.overlay_chart import OverlayChart, OverlayState, Series
from ssd_tui.tui.workbench import PALETTE, OverlayData, OverlayRun, load_overlay, rgb


def build_state(data: OverlayData, hidden: set[str], bands: bool, every_run: bool) -> OverlayState:
    series, extra = [], []
    for i, g in enumerate(data.groups):
        color = PALETTE[i % len(PALETTE)]
        pts = tuple(
            (rnd, cells["pass@1"][0], cells["pass@1"][1])
            for rnd, cells in sorted(g.rounds.items())
            if cells.get("pass@1") and cells["pass@1"][0] is not None
        )
        series.append(Series(g.label, color, pts, len(g.runs), g.label in hidden))
        if every_run:
            for c in g.runs:
                run_pts = tuple(
                    (rnd, v["pass@1"], None) for rnd, v in sorted(c.rounds.items()) if "pass@1" in v
                )
                extra.append(Series(c.label, color, run_pts, 1, g.label in hidden))
    bests = [b[1] for g in data.groups if (b := g.best_baseline())]
    baseline = max(bests) if bests else None
    return OverlayState(tuple(series), baseline, bands and not every_run, tuple(extra))


class OverlayScreen(Screen):
    SUB_TITLE = "runs overlaid"
    AUTO_FOCUS = "#ov-runs"
    BINDINGS = [
        Binding(
            "enter",
            "open_run",
            "Open run",
            tooltip="the highlighted run's dashboard",
            priority=True,  # over the table's own enter: shown in the footer
        ),
        Binding(
            "space",
            "toggle_series",
            "Show/hide",
            tooltip="hide or show the highlighted run's setting",
        ),
        Binding(
            "m", "toggle_runs", "Mean/every run", tooltip="mean ± sd per setting, or every run"
        ),
        Binding(
            "slash",
            "search",
            "Search",
            key_display="/",
            tooltip="search these runs' samples by text",
        ),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, data: OverlayData) -> None:
            super().__init__()
            self.data = data

    def __init__(self, runs: list[OverlayRun], title: str = "") -> None:
        super().__init__()
        self.runs = runs
        self.head = title or f"{len(runs)} runs"
        self.data: OverlayData | None = None
        self.hidden: set[str] = set()
        self.every_run = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.head, id="ov-head")
        yield OverlayChart(id="ov-chart")
        yield DataTable(id="ov-summary", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="ov-runs", cursor_type="row", zebra_stripes=True)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.action_refresh()
        self._fill_placeholders()

    def _fill_placeholders(self) -> None:
        """The tables' rows before the runs are read (names, settings and seeds are known):
        the tables have their final heights from the first paint, so the chart above them
        is laid out once and its picture built once, at its final size."""
        colors = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(self._groups())}
        summary = self._setting_columns(self.query_one("#ov-summary", DataTable))
        summary.add_column("reading…", width=14)
        for g, color in colors.items():
            summary.add_row(Text(g, style=rgb(color)), "…", key=g)
        table = self._run_columns(self.query_one("#ov-runs", DataTable))
        for run in self.runs:
            name = Text(run.label, style=rgb(colors[run.group]))
            table.add_row(name, run.group, str(run.seed), key=str(run.db))

    def _groups(self) -> list[str]:
        """The settings in order (as `load_overlay` makes its groups)."""
        return list(dict.fromkeys(r.group for r in self.runs))

    @staticmethod
    def _setting_columns(table: DataTable) -> DataTable:
        table.clear(columns=True)
        table.add_column("setting", width=30)
        return table

    @staticmethod
    def _run_columns(table: DataTable) -> DataTable:
        table.clear(columns=True)
        table.add_column("run", width=34)
        table.add_column("setting", width=24)
        table.add_column("seed", width=5)
        return table

    def action_refresh(self) -> None:
        self._load(list(self.runs), self.head)

    @work(thread=True, exclusive=True, group="overlay")
    def _load(self, runs: list[OverlayRun], title: str) -> None:
        self.post_message(self.Loaded(load_overlay(runs, title)))

    def on_overlay_screen_loaded(self, msg: Loaded) -> None:
        self.data = msg.data
        self._redraw()
        self._fill_tables()

    def _redraw(self) -> None:
        if self.data is not None:
            self.query_one(OverlayChart).set_state(
                build_state(self.data, self.hidden, True, self.every_run)
            )

    def _fill_tables(self) -> None:
        data = self.data
        assert data is not None
        rounds = sorted({r for g in data.groups for r in g.rounds})
        ks = [k for k in sorted({k for g in data.groups for k in g.ks}) if k != 1]
        last = rounds[-1] if rounds else 0
        summary = self._setting_columns(self.query_one("#ov-summary", DataTable))
        for r in rounds:
            summary.add_column(f"r{r} pass@1", width=14)
        for k in ks:
            summary.add_column(f"r{last} pass@{k}", width=14)
        summary.add_column("best T-only", width=16)
        summary.add_column("runs", width=5)
        for i, g in enumerate(data.groups):
            b = g.best_baseline()
            summary.add_row(
                Text(g.label, style=rgb(PALETTE[i % len(PALETTE)])),
                *[fmt_mean_sd(g.rounds.get(r, {}).get("pass@1")) for r in rounds],
                *[fmt_mean_sd(g.rounds.get(last, {}).get(f"pass@{k}")) for k in ks],
                f"{b[1]:.3f} (T={b[0]:g})" if b else "—",
                str(len(g.runs)),
                key=g.label,
            )
        table = self.query_one("#ov-runs", DataTable)
        row = table.cursor_row
        self._run_columns(table)
        for r in rounds:
            table.add_column(f"r{r}", width=6)
        colors = {g.label: PALETTE[i % len(PALETTE)] for i, g in enumerate(data.groups)}
        for run in data.runs:
            curve = data.curves.get(run.label)
            cells = [
                f"{curve.rounds[r]['pass@1']:.3f}"
                if curve and "pass@1" in curve.rounds.get(r, {})
                else "–"
                for r in rounds
            ]
            name = Text(run.label, style=rgb(colors[run.group]))
            if run.label in data.errors:
                name.append(" (unreadable)", style="red")
            table.add_row(name, run.group, str(run.seed), *cells, key=str(run.db))
        if data.runs:
            table.move_cursor(row=min(max(row, 0), len(data.runs) - 1))

    @property
    def current(self) -> OverlayRun | None:
        table = self.query_one("#ov-runs", DataTable)
        if not self.runs or not (0 <= table.cursor_row < len(self.runs)):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowSelected, "#ov-runs")
    def action_open_run(self) -> None:
        run = self.current
        if run is None:
            return
        self.post_message(
            OpenDashboard(RunRef(Path(run.db).resolve(), review=self.app.review_mode))
        )

    def action_toggle_series(self) -> None:
        run = self.current
        if run is None:
            return
        self.hidden ^= {run.group}
        self._redraw()

    def action_toggle_runs(self) -> None:
        self.every_run = not self.every_run
        self._redraw()

    def action_search(self) -> None:
        self.post_message(OpenSearch([(r.db, r.label) for r in self.runs]))

    def action_back(self) -> None:
        # Opened directly (`ssd-tui open SWEEP_DIR`), nothing is under it: the runs list.
        self.post_message(GoBack())
