"""Notes and tags of a run (and its rounds): read them, add a note, add or remove tags.

Written to the run DB in a small transaction (beside a running engine: WAL); an export
under review is read-only, so the inputs are hidden there.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from ssd_tui.errors import SSDError
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.workbench import NotesData, read_notes, write_note, write_tags


def parse_round(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise SSDError(f"round {raw!r}: a round number, or empty for the whole run")
    return int(raw)


class NotesScreen(Screen):
    SUB_TITLE = "notes and tags"
    AUTO_FOCUS = "#note-text"
    BINDINGS = [
        Binding("ctrl+t", "focus_tags", "Tags", tooltip="add tags (space-separated; -tag removes)"),
        Binding("ctrl+n", "focus_note", "Note", tooltip="write a note"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, data: NotesData | None, error: str = "") -> None:
            super().__init__()
            self.data, self.error = data, error

    def __init__(self, ref: RunRef, round: int | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.title = ref.db_path.parent.name
        self.round = round

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="tags-line")
        yield DataTable(id="notes-table", cursor_type="row", zebra_stripes=True)
        if not self.ref.review:
            with Horizontal(id="note-row"):
                yield Input(
                    "" if self.round is None else str(self.round),
                    placeholder="round",
                    id="note-round",
                    type="integer",
                )
                yield Input(
                    placeholder="a note (enter saves); round empty = the whole run", id="note-text"
                )
            yield Input(
                placeholder="tags, space-separated (enter saves; -tag removes)", id="tag-input"
            )
        yield Static("", id="notes-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#notes-table", DataTable)
        table.add_column("#", width=4)
        table.add_column("when", width=16)
        table.add_column("on", width=8)
        table.add_column("note", width=80)
        if self.ref.review:
            self.query_one("#notes-status", Static).update("review: read-only")
        self._load()

    @work(thread=True, exclusive=True, group="notes")
    def _load(self) -> None:
        try:
            self.post_message(self.Loaded(read_notes(self.ref.db_path)))
        except SSDError as e:
            self.post_message(self.Loaded(None, str(e)))

    def on_notes_screen_loaded(self, msg: Loaded) -> None:
        if msg.data is None:
            self.query_one("#notes-status", Static).update(Text(msg.error, style="red"))
            return
        d = msg.data
        line = Text("tags: ", style="bold")
        line.append(" ".join(d.run_tags) or "–")
        for rnd, tags in sorted(d.round_tags.items()):
            line.append(f"   round {rnd}: ", style="bold")
            line.append(" ".join(tags))
        self.query_one("#tags-line", Static).update(line)
        table = self.query_one("#notes-table", DataTable)
        table.clear()
        for n in d.notes:
            table.add_row(
                str(n["id"]),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(n["created_at"])),
                "run" if n["round"] is None else f"round {n['round']}",
                n["text"],
            )

    def _round(self) -> int | None:
        return parse_round(self.query_one("#note-round", Input).value)

    @on(Input.Submitted, "#note-text")
    def _add_note(self, event: Input.Submitted) -> None:
        self._write("note", event.value)

    @on(Input.Submitted, "#tag-input")
    def _add_tags(self, event: Input.Submitted) -> None:
        self._write("tags", event.value)

    def _write(self, what: str, value: str) -> None:
        try:
            rnd = self._round()
        except SSDError as e:
            self.query_one("#notes-status", Static).update(Text(str(e), style="red"))
            return
        self._save(what, value, rnd)

    @work(thread=True, exclusive=True, group="notes-write")
    def _save(self, what: str, value: str, rnd: int | None) -> None:
        try:
            if what == "note":
                write_note(self.ref.db_path, value, rnd)
            else:
                write_tags(self.ref.db_path, value.split(), rnd)
        except SSDError as e:
            self.app.call_from_thread(
                self.query_one("#notes-status", Static).update, Text(str(e), style="red")
            )
            return
        self.app.call_from_thread(self._saved, what)

    def _saved(self, what: str) -> None:
        field = "#note-text" if what == "note" else "#tag-input"
        self.query_one(field, Input).value = ""
        self.query_one("#notes-status", Static).update(f"{what} saved")
        self._load()

    def action_focus_tags(self) -> None:
        if not self.ref.review:
            self.query_one("#tag-input", Input).focus()

    def action_focus_note(self) -> None:
        if not self.ref.review:
            self.query_one("#note-text", Input).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
