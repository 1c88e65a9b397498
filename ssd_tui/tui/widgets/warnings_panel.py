"""Mode-collapse warnings: the rules that fired, and the evidence of the selected one."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.json import JSON
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from ssd_tui.analysis.evidence import evidence_targets
from ssd_tui.tui.data import evidence_text


class WarningsPanel(Horizontal):
    DEFAULT_CSS = """
    WarningsPanel { height: 1fr; }
    WarningsPanel > DataTable { width: 3fr; height: 1fr; }
    WarningsPanel > VerticalScroll { width: 2fr; height: 1fr; border-left: solid $panel-lighten-2; padding: 0 1; }
    """

    class Jump(Message):
        """Show the samples behind a warning."""

        def __init__(self, warning: dict[str, Any]) -> None:
            super().__init__()
            self.warning = warning

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.warnings: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(cursor_type="row", id="warnings-table")
        table.add_column("round", width=5)
        table.add_column("rule", width=20)
        table.add_column("message", width=90)
        yield table
        with VerticalScroll(id="warning-evidence"):
            yield Static("no warnings: no collapse rule has fired", id="evidence-body")

    def set_warnings(self, warnings: list[dict[str, Any]]) -> None:
        if warnings == self.warnings:
            return
        self.warnings = warnings
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for i, w in enumerate(warnings):
            table.add_row(
                Text(str(w["round"]), justify="right"),
                Text(w["rule"], style="bold yellow"),
                w["message"],
                key=str(i),
            )
        if warnings:
            table.move_cursor(row=min(row, len(warnings) - 1))
        self._show(self.current)

    @property
    def current(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.warnings or table.cursor_row < 0:
            return None
        return self.warnings[min(table.cursor_row, len(self.warnings) - 1)]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show(self.current)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.current is not None:
            self.post_message(self.Jump(self.current))

    def _show(self, w: dict[str, Any] | None) -> None:
        body = self.query_one("#evidence-body", Static)
        if w is None:
            body.update("no warnings: no collapse rule has fired")
            return
        problems, ids = evidence_targets(w["evidence"])
        target = []
        if problems:
            target.append(f"problem {', '.join(problems[:3])}")
        if ids:
            target.append(f"{len(ids)} sample(s)")
        head = Text.assemble(
            (f"round {w['round']} · rule ", "dim"),
            (w["rule"], "bold yellow"),
            "\n",
            w["message"],
            "\n",
            ("jump (j / enter): " + (", ".join(target) or f"round {w['round']}'s samples"), "cyan"),
            "\n",
        )
        body.update(Group(head, JSON(evidence_text(w["evidence"]))))
