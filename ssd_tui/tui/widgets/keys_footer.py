"""Textual's footer, recomposed only when the keys it shows change.

Textual recomposes its `Footer` at every bindings refresh of the screen (the screen pushed,
focus set, focus styles updated: three times while a screen opens), each time removing and
mounting every key widget again: 30-150 ms of the UI thread apiece on a busy machine,
paid before the screen's first paint (benchmarks/bench_overlay.py). This one compares
what it would show with what it shows and recomposes only on a difference.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._shown: tuple | None = None
        self._pending = False

    def _keys(self) -> tuple:
        """What `Footer.compose` reads: the shown bindings, their state, the palette key."""
        return (
            self.compact,
            self.show_command_palette,
            tuple(
                (b.key, b.action, b.description, b.key_display, b.group, enabled, tooltip)
                for _, b, enabled, tooltip in self.screen.active_bindings.values()
                if b.show or b.key == self.app.COMMAND_PALETTE_BINDING
            ),
        )

    def compose(self) -> ComposeResult:
        # Textual's composes empty and fills itself at the first bindings refresh (one more
        # remove-and-mount); the keys are known now.
        self._bindings_ready = True
        self._shown = self._keys()
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._pending:
            self._pending = True  # one recompose for a burst of refreshes
            self.call_after_refresh(self._recompose_if_changed)

    async def _recompose_if_changed(self) -> None:
        self._pending = False
        if not self.is_attached:  # its screen went away meanwhile
            return
        keys = self._keys()
        if keys != self._shown:
            self._shown = keys
            await self.recompose()
