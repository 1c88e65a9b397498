"""Notes and tags of a run (and its rounds): read them, add a note, add or remove tags.

Written to the run DB in a small transaction (beside a running engine: WAL); an export
under review is read-only, so the inputs are hidden there. What a note or tag is on (the
run, or one round) is a labelled choice above the note, the run unless the opener names a
round: a note meant for the run must never land on a round unasked.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static

from ssd_tui.errors import SSDError
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.workbench import NotesData, read_notes, write_note, write_tags

RUN = "run"  # the note target "the whole run" (a Select value; rounds are their numbers)


def target_label(rnd: int | None) -> str:
    return "the run" if rnd is None else f"round {rnd}"


class NotesScreen(Screen):
    SUB_TITLE = "notes and tags"
    AUTO_FOCUS = "#note-text"
    BINDINGS = [
        Binding("ctrl+o", "focus_target", "Note on", tooltip="the run, or one of its rounds"),
        Binding("ctrl+n", "focus_note", "Note", tooltip="write a note"),
        Binding("ctrl+t", "focus_tags", "Tags", tooltip="add tags (space-separated; -tag removes)"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, data: NotesData | None, error: str = "") -> None:
            super().__init__()
            self.data, self.error = data, error

    def __init__(self, ref: RunRef, round: int | None = None) -> None:
        """`round`: the target a note starts on (None: the run)."""
        super().__init__()
        self.ref = ref
        self.title = ref.db_path.parent.name
        self.round = round
        self._saved_id: int | None = None  # the note just saved: highlighted when listed

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="tags-line")
        yield DataTable(id="notes-table", cursor_type="row", zebra_stripes=True)
        if not self.ref.review:
            with Vertical(id="note-form"):
                with Horizontal(classes="note-row"):
                    yield Label("note on", classes="note-label")
                    yield Select(
                        self._targets([] if self.round is None else [self.round]),
                        value=self._value(self.round),
                        allow_blank=False,
                        id="note-target",
                    )
                    yield Static(
                        "the run, or one round (ctrl+o); tags go there too",
                        classes="note-help",
                    )
                with Horizontal(classes="note-row"):
                    yield Label("note", classes="note-label")
                    yield Input(placeholder=self._note_hint(self.round), id="note-text")
                with Horizontal(classes="note-row"):
                    yield Label("tags", classes="note-label")
                    yield Input(
                        placeholder="space-separated (enter saves; -tag removes)", id="tag-input"
                    )
        yield Static("", id="notes-status")
        yield Footer()

    @staticmethod
    def _value(rnd: int | None) -> str:
        return RUN if rnd is None else str(rnd)

    @classmethod
    def _targets(cls, rounds: list[int]) -> list[tuple[str, str]]:
        return [(target_label(None), RUN)] + [(target_label(r), cls._value(r)) for r in rounds]

    @staticmethod
    def _note_hint(rnd: int | None) -> str:
        return f"a note on {target_label(rnd)} (enter saves)"

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
                key=str(n["id"]),
            )
        if self._saved_id is not None and str(self._saved_id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(self._saved_id)))
        if not self.ref.review:
            target = self.query_one("#note-target", Select)
            keep = target.value
            target.set_options(self._targets(d.rounds))
            if any(v == keep for _label, v in self._targets(d.rounds)):
                target.value = keep

    @property
    def target(self) -> int | None:
        """The round a note or tags go to (None: the run)."""
        value = self.query_one("#note-target", Select).value
        return None if value in (RUN, Select.NULL) else int(str(value))

    @on(Select.Changed, "#note-target")
    def _target_changed(self) -> None:
        self.query_one("#note-text", Input).placeholder = self._note_hint(self.target)

    @on(Input.Submitted, "#note-text")
    def _add_note(self, event: Input.Submitted) -> None:
        self._save("note", event.value, self.target)

    @on(Input.Submitted, "#tag-input")
    def _add_tags(self, event: Input.Submitted) -> None:
        self._save("tags", event.value, self.target)

    @work(thread=True, exclusive=True, group="notes-write")
    def _save(self, what: str, value: str, rnd: int | None) -> None:
        try:
            if what == "note":
                saved = write_note(self.ref.db_path, value, rnd)
            else:
                write_tags(self.ref.db_path, value.split(), rnd)
                saved = None
        except SSDError as e:
            self.app.call_from_thread(
                self.query_one("#notes-status", Static).update, Text(str(e), style="red")
            )
            return
        self.app.call_from_thread(self._saved, what, value, rnd, saved)

    def _saved(self, what: str, value: str, rnd: int | None, note_id: int | None) -> None:
        field = "#note-text" if what == "note" else "#tag-input"
        self.query_one(field, Input).value = ""
        self._saved_id = note_id
        shown = value.strip() if what == "note" else " ".join(value.split())
        status = Text(f"saved {'note' if what == 'note' else 'tags'} on {target_label(rnd)}: ")
        status.append(shown, style="bold")
        self.query_one("#notes-status", Static).update(status)
        self._load()

    def action_focus_target(self) -> None:
        if not self.ref.review:
            self.query_one("#note-target", Select).focus()

    def action_focus_tags(self) -> None:
        if not self.ref.review:
            self.query_one("#tag-input", Input).focus()

    def action_focus_note(self) -> None:
        if not self.ref.review:
            self.query_one("#note-text", Input).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
