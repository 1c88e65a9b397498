"""A virtual table for very long result sets (a million samples).

Only the rows on screen exist: the widget is a line-API `ScrollView` whose virtual
height is the row count, and rows come in pages fetched by thread workers from the
`count` / `page` callables it is given (both must be thread-safe and must not touch
the UI). Rows not fetched yet render as a placeholder; the UI thread never waits
on the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    justify: str = "left"
    format: Callable[[Row], str | Text] | None = None


class PagedTable(ScrollView, can_focus=True):
    """Rows `count()` long, read `page(offset, limit)` at a time, in workers."""

    PAGE = 100
    MAX_PAGES = 64

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    COMPONENT_CLASSES = {"paged-table--header", "paged-table--cursor", "paged-table--pending"}

    DEFAULT_CSS = """
    PagedTable {
        height: 1fr;
        background: $surface;
    }
    PagedTable > .paged-table--header { text-style: bold; background: $panel; color: $foreground; }
    PagedTable > .paged-table--cursor { background: $accent 40%; }
    PagedTable:focus > .paged-table--cursor { background: $accent; color: $text; }
    PagedTable > .paged-table--pending { color: $text-muted; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=True)

    class Highlighted(Message):
        """The cursor moved to a row (`row` is None while its page loads)."""

        def __init__(self, table: PagedTable, index: int, row: Row | None) -> None:
            super().__init__()
            self.table, self.index, self.row = table, index, row

        @property
        def control(self) -> PagedTable:
            return self.table

    class Selected(Message):
        """Enter (or a double click) on a loaded row."""

        def __init__(self, table: PagedTable, index: int, row: Row) -> None:
            super().__init__()
            self.table, self.index, self.row = table, index, row

        @property
        def control(self) -> PagedTable:
            return self.table

    class Counted(Message):
        """The row count is known (after `reload`)."""

        def __init__(self, table: PagedTable, total: int) -> None:
            super().__init__()
            self.table, self.total = table, total

        @property
        def control(self) -> PagedTable:
            return self.table

    def __init__(
        self,
        columns: list[Column],
        count: Callable[[], int],
        page: Callable[[int, int], list[Row]],
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = columns
        self._count = count
        self._page = page
        self.total: int | None = None
        self._pages: OrderedDict[int, list[Row]] = OrderedDict()
        self._pending: set[int] = set()
        self._generation = 0
        self._kick_scheduled = False
        self._width = sum(c.width for c in columns) + len(columns) - 1
        self._target: int | None = None

    # ---- data -----------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.reload()

    def reload(self, keep_cursor: bool = False) -> None:
        """Forget every cached page and count again (filters changed, or new data)."""
        self._generation += 1
        self._pages.clear()
        self._pending.clear()
        if not keep_cursor:
            self.total = None
            self._update_virtual_size()
            self.cursor_row = 0
            self.scroll_to(y=0, animate=False)
        self._load_count(self._generation)
        self.refresh()

    @work(thread=True, group="paged-count", exclusive=True)
    def _load_count(self, generation: int) -> None:
        n = self._count()
        self.app.call_from_thread(self._set_total, generation, n)

    def _set_total(self, generation: int, n: int) -> None:
        if generation != self._generation:
            return
        self.total = n
        self._update_virtual_size()
        if self.cursor_row >= n:
            self.cursor_row = max(0, n - 1)
        if self._target is not None:
            self.cursor_row = self._target if self._target >= 0 else max(0, n - 1)
            self._target = None
        self.post_message(self.Counted(self, n))
        self._emit_highlight()
        self.refresh()

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self._width, (self.total or 0) + 1)

    def row(self, index: int) -> Row | None:
        page = self._pages.get(index // self.PAGE)
        if page is None:
            return None
        i = index % self.PAGE
        return page[i] if i < len(page) else None

    @property
    def current(self) -> Row | None:
        return self.row(self.cursor_row)

    def _want(self, page: int) -> None:
        if page in self._pages or page in self._pending:
            return
        if not self._kick_scheduled:
            self._kick_scheduled = True
            self.call_after_refresh(self._kick)

    def _visible_pages(self) -> list[int]:
        top = int(self.scroll_offset.y)
        bottom = top + max(1, self.size.height)
        pages = list(range(top // self.PAGE, bottom // self.PAGE + 1))
        cur = self.cursor_row // self.PAGE
        if cur not in pages:
            pages.append(cur)
        return pages

    def _kick(self) -> None:
        self._kick_scheduled = False
        if self.total is None:
            return
        last = max(0, (self.total - 1) // self.PAGE)
        todo = [
            p
            for p in self._visible_pages()
            if 0 <= p <= last and p not in self._pages and p not in self._pending
        ]
        if todo:
            self._pending.update(todo)
            self._fetch(todo, self._generation)

    @work(thread=True, group="paged-fetch")
    def _fetch(self, pages: list[int], generation: int) -> None:
        for p in pages:
            rows = self._page(p * self.PAGE, self.PAGE)
            self.app.call_from_thread(self._loaded, generation, p, rows)

    def _loaded(self, generation: int, page: int, rows: list[Row]) -> None:
        if generation != self._generation:
            return
        self._pending.discard(page)
        self._pages[page] = rows
        self._pages.move_to_end(page)
        while len(self._pages) > self.MAX_PAGES:
            self._pages.popitem(last=False)
        if self.cursor_row // self.PAGE == page:
            self._emit_highlight()
        self.refresh()

    # ---- cursor ------------------------------------------------------------------------------
    def watch_cursor_row(self, old: int, new: int) -> None:
        self._scroll_cursor_into_view()
        self._emit_highlight()
        self.refresh()

    def _emit_highlight(self) -> None:
        if self.total:
            self.post_message(self.Highlighted(self, self.cursor_row, self.current))

    def _scroll_cursor_into_view(self) -> None:
        h = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + h:
            self.scroll_to(y=self.cursor_row - h + 1, animate=False)

    def move_to(self, index: int) -> None:
        """Put the cursor on row `index` (-1 = last), now or once the count is known."""
        if self.total is None:
            self._target = index
            return
        if index < 0:
            index = self.total - 1
        self.cursor_row = max(0, min(index, max(0, self.total - 1)))

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor_row + direction * max(1, self.size.height - 2))

    def action_jump(self, index: int) -> None:
        self.move_to(index)

    def action_select(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Selected(self, self.cursor_row, row))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1 or not self.total:
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if index < self.total:
            self.cursor_row = index
            if event.chain >= 2:
                self.action_select()

    def on_resize(self) -> None:
        self._scroll_cursor_into_view()

    # ---- rendering ------------------------------------------------------------------------------
    def _cells(self, row: Row | None, header: bool = False) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, col in enumerate(self.columns):
            if header:
                cell = Text(col.label)
            elif row is None:
                cell = Text("…" if i == 0 else "")
            else:
                v = col.format(row) if col.format else row.get(col.key, "")
                cell = v if isinstance(v, Text) else Text("" if v is None else str(v))
            cell = cell.copy()
            cell.truncate(col.width, overflow="ellipsis")
            pad = col.width - cell.cell_len
            if col.justify == "right":
                cell = Text(" " * pad) + cell
            else:
                cell.pad_right(pad)
            if i:
                out.append(" ")
            out.append_text(cell)
        return out

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            text = self._cells(None, header=True)
            style = base + self.get_component_rich_style("paged-table--header")
            if self.total is not None:
                label = f" {self.total:,} rows" if self.total != 1 else " 1 row"
            else:
                label = " counting…"
            return self._strip(text, style, width, scroll_x, label)
        index = int(scroll_y) + y - 1
        if self.total is None or index >= self.total:
            return Strip.blank(width, base)
        row = self.row(index)
        if row is None:
            self._want(index // self.PAGE)
        style = base
        if row is None:
            style = base + self.get_component_rich_style("paged-table--pending")
        if index == self.cursor_row:
            style = style + self.get_component_rich_style("paged-table--cursor")
        return self._strip(self._cells(row), style, width, scroll_x)

    def _strip(self, text: Text, style: Style, width: int, scroll_x: int, right: str = "") -> Strip:
        segments = list(text.render(self.app.console, end=""))
        strip = Strip(list(Segment.apply_style(segments, style)))
        strip = strip.crop_extend(scroll_x, scroll_x + width, style)
        if right and text.cell_len - scroll_x + len(right) < width:
            strip = Strip([*strip.crop(0, width - len(right)), Segment(right, style)])
        return strip
