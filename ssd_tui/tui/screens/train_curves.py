"""Training curves: loss and learning rate per optimiser step, for every round or one."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ssd_tui.errors import SSDError
from ssd_tui.store.reads import train_log
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.train_chart import TrainChart


class TrainCurvesScreen(Screen):
    SUB_TITLE = "training curves"
    BINDINGS = [
        Binding(
            "left_square_bracket",
            "round(-1)",
            "Round -",
            key_display="[",
            tooltip="the previous round (or every round)",
        ),
        Binding(
            "right_square_bracket",
            "round(1)",
            "Round +",
            key_display="]",
            tooltip="the next round (or every round)",
        ),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, log: dict, error: str = "") -> None:
            super().__init__()
            self.rows, self.error = log, error

    def __init__(self, ref: RunRef, round: int | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.title = ref.db_path.parent.name
        self.train_log: dict = {}
        self.shown: int | None = round

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="train-head")
        yield TrainChart(id="train-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="train-log")
    def _load(self) -> None:
        try:
            self.post_message(self.Loaded(train_log(self.ref.db_path)))
        except SSDError as e:
            self.post_message(self.Loaded({}, str(e)))

    def on_train_curves_screen_loaded(self, msg: Loaded) -> None:
        self.train_log = msg.rows
        if self.shown is not None and self.shown not in self.train_log:
            self.shown = None
        self._show(msg.error)

    def _show(self, error: str = "") -> None:
        head = self.query_one("#train-head", Static)
        if error:
            head.update(f"[red]{error}[/]")
        elif not self.train_log:
            head.update("no training steps yet: round 1's train stage writes them")
        else:
            which = "every round" if self.shown is None else f"round {self.shown}"
            steps = sum(len(v) for v in self.train_log.values())
            head.update(
                f"{which} · {steps} steps in {len(self.train_log)} round(s) · [ ] change the round"
            )
        self.query_one(TrainChart).set_data(self.train_log, self.shown)

    def action_round(self, step: int) -> None:
        options: list[int | None] = [None, *sorted(self.train_log)]
        i = options.index(self.shown) if self.shown in options else 0
        self.shown = options[(i + step) % len(options)]
        self._show()

    def action_back(self) -> None:
        self.app.pop_screen()
