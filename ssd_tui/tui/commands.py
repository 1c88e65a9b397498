"""Command palette: every action bound on the current screen, with its key.

One provider for all screens, built from the screen's active bindings, so a binding
shown in the footer is always in the palette too (and one hidden because it does not
apply, e.g. engine actions in review mode, is in neither). Screens can add commands
without a key through `palette_commands()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class ScreenCommands(Provider):
    def _commands(self) -> Iterator[tuple[str, str, Callable]]:
        screen = self.screen
        app = self.app
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            b = active.binding
            if not active.enabled or not b.show or not b.description or b.action in seen:
                continue
            seen.add(b.action)
            help_text = f"key: {app.get_key_display(b)}"
            if b.tooltip:
                help_text += f" · {b.tooltip}"
            yield b.description, help_text, partial(app.run_action, b.action, active.node)
        extra = getattr(screen, "palette_commands", None)
        if extra is not None:
            yield from extra()

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
