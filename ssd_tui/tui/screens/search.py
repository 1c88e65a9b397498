"""Search samples by text across rounds (and the runs of a sweep), with their verdicts.

Type the text and press enter: the exact text, case-sensitive (`ssd_tui.store.search`); start
it with `fts:` for an SQLite FTS5 query. Enter on a hit opens the sample view on that
run's hits; `d` diffs the hit with the same sample one round earlier (same problem, sample
index, purpose and temperature).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from ssd_tui.errors import SSDError
from ssd_tui.store.search import HIT_COLUMNS, RUN_COLUMN, Hit, hit_cells, search_many
from ssd_tui.tui.messages import OpenDiff, OpenSamples
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.sample_view import VERDICT_STYLE


class SearchScreen(Screen):
    SUB_TITLE = "search samples"
    AUTO_FOCUS = "#search-input"
    BINDINGS = [
        Binding(
            "enter", "open_hit", "Open", tooltip="the hit in the sample view (with this run's hits)"
        ),
        Binding("d", "diff", "Diff", tooltip="diff the hit with the same sample one round earlier"),
        Binding("slash", "focus_input", "New search", key_display="/"),
        Binding("escape", "back", "Back"),
    ]

    class Found(Message):
        def __init__(self, query: str, hits: list[Hit], total: int, error: str = "") -> None:
            super().__init__()
            self.query, self.hits, self.total, self.error = query, hits, total, error

    def __init__(self, dbs: list[tuple[Path, str]], query: str = "", limit: int = 500) -> None:
        super().__init__()
        self.dbs = dbs
        self.query_text = query
        self.limit = limit
        self.hits: list[Hit] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(
            self.query_text,
            placeholder="text to find, e.g. while True   (fts: for an FTS5 query: fts:while NOT break)",
            id="search-input",
        )
        yield Static(f"searching {len(self.dbs)} run(s): type and press enter", id="search-status")
        yield DataTable(id="search-hits", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#search-hits", DataTable)
        for name, width in ([RUN_COLUMN] if len(self.dbs) > 1 else []) + list(HIT_COLUMNS):
            table.add_column(name, width=width)
        if self.query_text:
            self._submit(self.query_text)

    @on(Input.Submitted, "#search-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self._submit(event.value)

    def _submit(self, raw: str) -> None:
        fts = raw.startswith("fts:")
        text = raw[4:].strip() if fts else raw
        self.query_one("#search-status", Static).update(f"searching for {text!r}…")
        self._search(text, fts)

    @work(thread=True, exclusive=True, group="search")
    def _search(self, text: str, fts: bool) -> None:
        try:
            hits, total = search_many(self.dbs, text, fts=fts, limit=self.limit)
        except SSDError as e:
            self.post_message(self.Found(text, [], 0, str(e)))
            return
        self.post_message(self.Found(text, hits, total))

    def on_search_screen_found(self, msg: Found) -> None:
        status = self.query_one("#search-status", Static)
        table = self.query_one("#search-hits", DataTable)
        table.clear()
        self.hits = msg.hits
        if msg.error:
            status.update(Text(msg.error, style="red"))
            return
        more = f" (first {len(msg.hits)})" if msg.total > len(msg.hits) else ""
        status.update(f"{msg.total} sample(s) hold {msg.query!r}{more}")
        many = len(self.dbs) > 1
        verdict = len(HIT_COLUMNS) - 2 + many  # the verdict cell, styled by its status
        for i, h in enumerate(msg.hits):
            cells: list[str | Text] = list(hit_cells(h, many))
            cells[verdict] = Text(str(cells[verdict]), style=VERDICT_STYLE.get(h.status, ""))
            table.add_row(*cells, key=str(i))
        if msg.hits:
            table.focus()

    @property
    def current(self) -> Hit | None:
        table = self.query_one("#search-hits", DataTable)
        if not self.hits or not (0 <= table.cursor_row < len(self.hits)):
            return None
        return self.hits[table.cursor_row]

    def _ref(self, hit: Hit) -> RunRef:
        return RunRef(hit.db.resolve(), review=self.app.review_mode)

    @on(DataTable.RowSelected, "#search-hits")
    def action_open_hit(self) -> None:
        hit = self.current
        if hit is None:
            return
        same_run = tuple(h.sample_id for h in self.hits if h.db == hit.db)
        self.post_message(
            OpenSamples(
                self._ref(hit),
                sample_ids=same_run,
                note=f"search {self.query_one(Input).value!r}: {len(same_run)} hit(s) in this run",
            )
        )

    def action_diff(self) -> None:
        hit = self.current
        if hit is not None:
            self.post_message(OpenDiff(self._ref(hit), a_id=None, b_id=hit.sample_id))

    def action_focus_input(self) -> None:
        self.query_one(Input).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
