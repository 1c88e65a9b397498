"""Which series a chart shows: a toggle list over the chart's series (key c)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList
from textual.widgets.selection_list import Selection


class SeriesScreen(ModalScreen[set[str] | None]):
    """Space toggles a series, enter applies; dismisses with the set of hidden names."""

    BINDINGS = [
        Binding("enter", "apply", "Apply", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, names: list[str], hidden: set[str]) -> None:
        super().__init__()
        self.names = names
        self.hidden = set(hidden)

    def compose(self) -> ComposeResult:
        with Vertical(id="series-box"):
            yield Label("Series shown on the chart (space toggles, enter applies)")
            yield SelectionList[str](
                *(Selection(n, n, n not in self.hidden) for n in self.names), id="series-list"
            )

    @on(SelectionList.SelectedChanged)
    def _changed(self) -> None:
        shown = set(self.query_one(SelectionList).selected)
        self.hidden = {n for n in self.names if n not in shown}

    def action_apply(self) -> None:
        self.dismiss(self.hidden)

    def action_cancel(self) -> None:
        self.dismiss(None)
