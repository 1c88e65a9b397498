"""Review of two run DBs: round-by-round metrics side by side, and both curves."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ssd_tui.runs.diff import diff_paths, setting_lines
from ssd_tui.store.reads import RunReader
from ssd_tui.tui.data import display_path, fmt_pct
from ssd_tui.tui.messages import OpenDashboard
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.views import Snapshot, snapshot
from ssd_tui.tui.widgets.curve import PassCurve


def _delta(a: float | None, b: float | None) -> Text:
    if a is None or b is None:
        return Text("–", justify="right")
    d = 100 * (b - a)
    return Text(f"{d:+.1f}", style="green" if d > 0 else "red" if d < 0 else "", justify="right")


class CompareScreen(Screen):
    HELP_TITLE = "compare two runs (A vs B)"  # what the help screen calls it
    SUB_TITLE = "review: compare (read-only)"
    AUTO_FOCUS = "#cmp-table"
    BINDINGS = [
        Binding("1", "open(0)", "Open A"),
        Binding("2", "open(1)", "Open B"),
        Binding("escape", "app.quit", "Quit"),
    ]

    class Loaded(Message):
        def __init__(
            self, snaps: list[Snapshot | None], errors: list[str], settings: list[str]
        ) -> None:
            super().__init__()
            self.snaps, self.errors, self.settings = snaps, errors, settings

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.paths = [Path(a), Path(b)]
        self.snaps: list[Snapshot | None] = [None, None]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="cmp-head")
        yield Static("", id="cmp-diff")
        yield DataTable(id="cmp-table", cursor_type="row", zebra_stripes=True)
        yield PassCurve(title="pass rate by round (%): A vs B", id="cmp-curve")
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        snaps, errors = [], []
        for p in self.paths:
            reader = RunReader(p)
            try:
                snaps.append(snapshot(reader, 0, self.app.clock()))
                errors.append("" if snaps[-1] else f"{p}: not a run database")
            except Exception as e:  # noqa: BLE001
                snaps.append(None)
                errors.append(f"{p}: {e}")
            finally:
                reader.close()
        self.post_message(self.Loaded(snaps, errors, self._settings()))

    def _settings(self) -> list[str]:
        """Config / environment / problem-set / record differences (as `ssd-tui diff`)."""
        try:
            d, _ = diff_paths(*self.paths)
        except Exception as e:  # noqa: BLE001 - shown, not raised: the table still loads
            return [f"cannot compare settings: {e}"]
        return setting_lines(d)

    def on_compare_screen_loaded(self, msg: Loaded) -> None:
        self.snaps = msg.snaps
        a, b = msg.snaps
        head = Text()
        for label, snap, path, err in zip("AB", msg.snaps, self.paths, msg.errors, strict=False):
            head.append(f"{label} ", style="bold")
            head.append(f"{snap.name} · {snap.model}" if snap else err, style="" if snap else "red")
            head.append(f"  {display_path(path)}\n", style="dim")
        self.query_one("#cmp-head", Static).update(head)
        diff = Text()
        for i, line in enumerate(msg.settings):
            same = line.startswith("same ")
            diff.append("\n" if i else "")
            diff.append(("" if same else "≠ ") + line, style="dim" if same else "yellow")
        self.query_one("#cmp-diff", Static).update(diff)
        if a is None or b is None:
            return
        k = a.k if a.k == b.k and a.k > 1 else None  # k = 1 would repeat pass@1
        t = self.query_one("#cmp-table", DataTable)
        t.clear(columns=True)
        cols = ["round", "A pass@1", "B pass@1", "Δ pass@1"]
        if k:
            cols += [f"A pass@{k}", f"B pass@{k}", f"Δ pass@{k}"]
        cols += ["A samples", "B samples", "A ⚠", "B ⚠"]
        for c in cols:
            t.add_column(c, width=max(5, len(c)))
        ra = {r.round: r for r in a.rounds}
        rb = {r.round: r for r in b.rounds}
        for rnd in sorted(set(ra) | set(rb)):
            x, y = ra.get(rnd), rb.get(rnd)
            p1a, p1b = (x.pass1 if x else None), (y.pass1 if y else None)
            row = [
                Text(str(rnd), justify="right"),
                Text(fmt_pct(p1a), justify="right"),
                Text(fmt_pct(p1b), justify="right"),
                _delta(p1a, p1b),
            ]
            if k:
                pka, pkb = (x.passk if x else None), (y.passk if y else None)
                row += [
                    Text(fmt_pct(pka), justify="right"),
                    Text(fmt_pct(pkb), justify="right"),
                    _delta(pka, pkb),
                ]
            row += [
                Text(f"{x.samples:,}" if x else "–", justify="right"),
                Text(f"{y.samples:,}" if y else "–", justify="right"),
                Text(f"⚠ {x.warnings}" if x and x.warnings else "", style="bold yellow"),
                Text(f"⚠ {y.warnings}" if y and y.warnings else "", style="bold yellow"),
            ]
            t.add_row(*row, key=str(rnd))
        series = {}
        for label, snap in (("A", a), ("B", b)):
            for name in ("pass@1", f"pass@{snap.k}"):
                if name in snap.curve:
                    series[f"{label} {name}"] = snap.curve[name]
        self.query_one(PassCurve).set_data(series)

    def action_open(self, which: int) -> None:
        self.post_message(OpenDashboard(RunRef(self.paths[which].resolve(), review=True)))
