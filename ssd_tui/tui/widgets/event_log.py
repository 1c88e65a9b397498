"""The run's event log (events table), appended as new rows arrive."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from ssd_tui.tui.data import fmt_offset

LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(max_lines=2000, wrap=False, markup=False, auto_scroll=True, **kw)
        self.start = 0.0
        self.count = 0

    def add_events(self, events: list[dict[str, Any]], start: float) -> None:
        self.start = start
        for e in events:
            line = Text(no_wrap=True)
            line.append(fmt_offset(e["ts"], start) + " ", style="dim")
            where = " ".join(
                x
                for x in (f"r{e['round']}" if e["round"] is not None else "", e["stage"] or "")
                if x
            )
            line.append(f"{where:<14} ", style="cyan")
            line.append(e["message"], style=LEVEL_STYLE.get(e["level"], ""))
            self.write(line)
            self.count += 1

    def add_lines(self, lines: list[str], style: str = "dim") -> None:
        for ln in lines:
            self.write(Text(ln, style=style))
