"""Ask for a branch's name: the dashboard's `B` on a finished round (docs/rounds.md)."""

from __future__ import annotations

import re

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

#: A branch's name is its folder's: letters, digits, . _ - (no spaces, no slashes).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class BranchPrompt(ModalScreen[str | None]):
    """The new run's name; it starts from round ``round`` of the run ``parent``, with the
    parent's config, in a folder beside it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, parent: str, round: int, default: str) -> None:
        super().__init__()
        self.parent_name = parent
        self.round = round
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Static(
                f"Branch from round {self.round} of {self.parent_name}: a new run whose round 0 "
                f"is round {self.round}'s model, with this run's config. Its name (folder):",
                id="n-question",
            )
            yield Input(self.default, id="branch-name")
            yield Static(
                f"[dim]runs `ssd-tui run NAME/config.toml --from RUN_DIR --round {self.round}`[/]",
                id="n-error",
            )
            with Horizontal():
                yield Button("Branch", id="ok", variant="primary")
                yield Button("Cancel", id="no")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        name = self.query_one(Input).value.strip()
        if not NAME_RE.fullmatch(name):
            self.query_one("#n-error", Static).update(
                "[red]a folder name: letters, digits, . _ - (up to 64, no spaces)[/]"
            )
            return
        self.dismiss(name)

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)
