"""A sample's tokens coloured by entropy, with fork and lock positions marked.

fork = entropy ≥ `[analysis] fork_entropy`; lock = p(sampled token) ≥ `[analysis]
lock_top1` (see `ssd_tui.analysis.positions.classify_positions`). Tokens are decoded
with the run's tokenizer when one loads from the model path (`ssd_tui.tui.refs`, in a
worker); otherwise token ids are shown.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ssd_tui.store.reads import RunReader, SampleDetail
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.views import TokenRow, token_rows
from ssd_tui.tui.widgets.paged_table import Column, PagedTable
from ssd_tui.tui.widgets.sample_view import describe, verdict_text
from ssd_tui.tui.widgets.token_view import legend, token_text

KIND_STYLE = {"fork": "bold magenta", "lock": "cyan"}
TOKEN_COLUMNS = [
    Column("index", "#", 5, "right"),
    Column("text", "token", 24, "left", lambda r: repr(r["text"])[1:-1]),
    Column("token_id", "id", 7, "right"),
    Column("prob", "p(T=1)", 8, "right", lambda r: f"{r['prob']:.3f}"),
    Column("entropy", "entropy", 8, "right", lambda r: f"{r['entropy']:.3f}"),
    Column("tail", "tail mass", 9, "right", lambda r: f"{r['tail']:.3f}"),
    Column(
        "kind", "class", 5, "left", lambda r: Text(r["kind"], style=KIND_STYLE.get(r["kind"], ""))
    ),
]


def _loadable(model: str) -> bool:
    """A local folder, or something shaped like a hub id (tried from the local cache)."""
    if Path(model).expanduser().exists():
        return True
    return model.count("/") == 1 and not model.startswith((".", "/", "~"))


class TokenScreen(Screen):
    HELP_TITLE = "token view"  # what the help screen calls it
    SUB_TITLE = "tokens"
    AUTO_FOCUS = "#tok-table"
    BINDINGS = [
        Binding("f", "next_kind('fork')", "Next fork"),
        Binding("k", "next_kind('lock')", "Next lock"),
        Binding(
            "left_square_bracket,right_square_bracket",
            "view",
            "Scored by",
            key_display="[ ]",
            tooltip="the sample's own statistics, or a round's model re-scoring it (probe)",
        ),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(
            self,
            detail: SampleDetail | None,
            rows: list[TokenRow],
            summary: dict,
            note: str,
            views: list[int | None],
        ) -> None:
            super().__init__()
            self.detail, self.rows, self.summary, self.note = detail, rows, summary, note
            self.views = views

    def __init__(self, ref: RunRef, sample_id: int, decode: bool = True) -> None:
        super().__init__()
        self.ref = ref
        self.sample_id = sample_id
        self.decode = decode
        self.reader = RunReader(ref.db_path)
        self.rows: list[TokenRow] = []
        self.view: int | None = None  # None: as sampled; k: re-scored by round k's model
        self.views: list[int | None] = [None]
        self._decode = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading tokens…", id="tok-head")
        yield Static("", id="tok-legend")
        with VerticalScroll(id="tok-text"):
            yield Static("", id="tok-body")
        yield PagedTable(
            TOKEN_COLUMNS,
            lambda: len(self.rows),
            lambda o, n: [asdict(r) for r in self.rows[o : o + n]],
            id="tok-table",
        )
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    def on_unmount(self) -> None:
        self.reader.close()

    @work(thread=True, exclusive=True, group="tokens")
    def _load(self) -> None:
        detail = self.reader.sample(self.sample_id)
        views: list[int | None] = [None, *self.reader.probe_rounds(self.sample_id)]
        decode, note = None, "token ids shown (no tokenizer)"
        cfg = self.reader.config()
        info_model = None
        store = self.reader.store
        if store is not None and store.run_info():
            info_model = store.run_info()["model"]
        model = info_model or (str(cfg.resolve(cfg.model.path)) if cfg else None)
        if self.decode and model and _loadable(model):
            try:
                tok = self.app.tokenizer(model)

                def decode(ids: list[int]) -> list[str]:
                    return [
                        tok.decode(
                            [i], skip_special_tokens=False, clean_up_tokenization_spaces=False
                        )
                        for i in ids
                    ]

                note = f"decoded with the tokenizer of {model}"
            except Exception as e:  # noqa: BLE001 - any failure: show ids instead
                decode, note = (
                    None,
                    f"token ids shown: tokenizer not loadable from {model} ({type(e).__name__})",
                )
        rows, summary = token_rows(self.reader, self.sample_id, decode, self.view)
        self.post_message(self.Loaded(detail, rows, summary, note, views))

    def on_token_screen_loaded(self, msg: Loaded) -> None:
        self.rows = msg.rows
        self.views = msg.views
        self.refresh_bindings()
        s = msg.summary
        head = self.query_one("#tok-head", Static)
        if msg.detail is None:
            head.update(f"sample #{self.sample_id} not found")
            return
        r = msg.detail.row
        if not self.rows:
            head.update(
                Text.assemble((describe(r), "bold"), "  no token statistics stored for this sample")
            )
            return
        head.update(
            Text.assemble(
                (describe(r), "bold"),
                "  ",
                verdict_text(r["status"]),
                "\n",
                f"{s['tokens']} tokens · {s['forks']} forks · {s['locks']} locks · "
                f"mean entropy {s['mean_entropy']:.2f} nats · mean tail mass {s['mean_tail']:.3f}"
                + _train_kept(s),
                (f"   {msg.note}", "dim"),
                "\n",
                (
                    "as sampled (lock: p(T=1) ≥ threshold, a lower bound of top-1)"
                    if self.view is None
                    else f"re-scored by round {self.view}'s model (probe: exact top-1)",
                    "italic",
                ),
                (
                    f"   [ ] also: {', '.join('as sampled' if v is None else f'round {v}' for v in self.views)}"
                    if len(self.views) > 1
                    else "",
                    "dim",
                ),
                "\n",
                (
                    "p(T=1): the token's probability in the full distribution at T = 1, "
                    f"untruncated, not the one it was sampled with (T {r['temperature']:g}, "
                    "truncated)",
                    "dim",
                ),
            )
        )
        self.query_one("#tok-legend", Static).update(legend(s["fork_entropy"], s["lock_top1"]))
        self.query_one("#tok-body", Static).update(token_text(self.rows, s["fork_entropy"]))
        self.query_one("#tok-table", PagedTable).reload()

    def action_next_kind(self, kind: str) -> None:
        t = self.query_one("#tok-table", PagedTable)
        n = len(self.rows)
        for step in range(1, n + 1):
            i = (t.cursor_row + step) % n
            if self.rows[i].kind == kind:
                t.move_to(i)
                return
        self.notify(f"no {kind} positions in this sample", markup=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "view":
            return len(self.views) > 1
        return True

    def action_view(self) -> None:
        i = self.views.index(self.view) if self.view in self.views else 0
        self.view = self.views[(i + 1) % len(self.views)]
        self._load()

    def action_back(self) -> None:
        self.app.pop_screen()


def _train_kept(s: dict[str, float]) -> str:
    """The paper's KeptMass (mass inside the T_train truncation set), when the probe has it."""
    if "train_kept" not in s:
        return ""
    locks = s["lock_train_kept"]
    at_locks = f", at locks {locks:.3f}" if locks == locks else ""
    return f" · KeptMass (T_train set) {s['train_kept']:.3f}{at_locks}"
