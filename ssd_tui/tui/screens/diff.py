"""Diff two samples (same problem, any rounds): side by side or unified.

With no A chosen, A is B's counterpart one round earlier: the same problem, sample index,
purpose and temperature, so one more SSD round is the only difference (round 0 also holds
the temperature-only baseline's samples at other temperatures: never a like one). Where
there is none, the screen says so instead of picking another sample.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ssd_tui.store.reads import RunReader, SampleDetail
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.diff_view import DiffView
from ssd_tui.tui.widgets.sample_view import describe, verdict_text


def program(d: SampleDetail) -> str:
    return d.row["code"] or (d.prompt + d.row["completion"])


class DiffScreen(Screen):
    HELP_TITLE = "diff of two samples"  # what the help screen calls it
    SUB_TITLE = "diff"
    AUTO_FOCUS = "DiffView"
    BINDINGS = [
        Binding("s", "toggle_mode", "Split/unified", tooltip="side by side or unified diff"),
        Binding("left_square_bracket", "step(-1)", "B: previous", key_display="["),
        Binding("right_square_bracket", "step(1)", "B: next", key_display="]"),
        Binding("escape", "back", "Back"),
    ]

    class Loaded(Message):
        def __init__(
            self,
            a: SampleDetail | None,
            b: SampleDetail | None,
            candidates: list[dict[str, Any]],
            missing: str = "",
        ) -> None:
            super().__init__()
            self.a, self.b, self.candidates, self.missing = a, b, candidates, missing

    def __init__(self, ref: RunRef, a_id: int | None, b_id: int) -> None:
        super().__init__()
        self.ref = ref
        self.reader = RunReader(ref.db_path)
        self.a_id, self.b_id = a_id, b_id
        self.a: SampleDetail | None = None
        self.b: SampleDetail | None = None
        self.candidates: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="diff-head")
        yield DiffView(id="diff")
        yield Footer()

    def on_mount(self) -> None:
        self._load(self.a_id, self.b_id)

    def on_unmount(self) -> None:
        self.reader.close()

    @work(thread=True, exclusive=True, group="diff")
    def _load(self, a_id: int | None, b_id: int) -> None:
        b = self.reader.sample(b_id)
        cands = self.reader.same_problem(b_id) if b else []
        missing = ""
        if a_id is None and b is not None:
            r = b.row
            if r["round"] == 0:
                missing = "round 0 is the first round: no earlier sample"
            else:
                a_id = self.reader.counterpart(b_id, r["round"] - 1)
                if a_id is None:
                    missing = (
                        f"round {r['round'] - 1} has no {r['purpose']} sample of {r['problem']} "
                        f"#{r['sample_idx']} at T {r['temperature']:g}"
                    )
        a = self.reader.sample(a_id) if a_id is not None else None
        self.post_message(self.Loaded(a, b, cands, missing))

    def on_diff_screen_loaded(self, msg: Loaded) -> None:
        self.a, self.b, self.candidates = msg.a, msg.b, msg.candidates
        head = self.query_one("#diff-head", Static)
        view = self.query_one(DiffView)
        if self.b is None:
            head.update(f"sample #{self.b_id} not found")
            return
        rb = self.b.row
        self.b_id = rb["id"]
        steps = (
            f"   ([ ] step B through {len(self.candidates)} samples of this problem, "
            f"{rb['purpose']}"
            + (f" at T {rb['temperature']:g})" if rb["purpose"] == "eval" else ")")
        )
        b_line = Text.assemble(
            ("B ", "bold green"), describe(rb), " ", verdict_text(rb["status"]), (steps, "dim")
        )
        if self.a is None:
            head.update(
                Text.assemble(
                    ("no A: ", "bold red"),
                    msg.missing or "no sample to compare with",
                    (
                        " (a diff compares like with like: the same problem, sample index, "
                        "purpose and T, one round earlier); m marks a sample as A in the "
                        "sample list\n",
                        "dim",
                    ),
                    b_line,
                )
            )
            view.clear()
            return
        ra = self.a.row
        self.a_id = ra["id"]
        like = all(ra[k] == rb[k] for k in ("problem", "sample_idx", "purpose", "temperature"))
        head.update(
            Text.assemble(
                ("A ", "bold red"),
                describe(ra),
                " ",
                verdict_text(ra["status"]),
                (
                    "   (same problem, sample index, purpose and T)"
                    if like
                    else "   (marked: not the same sample key as B)",
                    "dim",
                ),
                "\n",
                b_line,
            )
        )
        view.show(
            program(self.a),
            program(self.b),
            f"A #{ra['id']} (round {ra['round']}, T {ra['temperature']:g})",
            f"B #{rb['id']} (round {rb['round']}, T {rb['temperature']:g})",
        )

    def action_toggle_mode(self) -> None:
        view = self.query_one(DiffView)
        view.mode = "unified" if view.mode == "split" else "split"

    def action_step(self, step: int) -> None:
        ids = [c["id"] for c in self.candidates if c["id"] != self.a_id]
        if not ids:
            return
        i = ids.index(self.b_id) if self.b_id in ids else -1
        self._load(self.a_id, ids[(i + step) % len(ids)])

    def action_back(self) -> None:
        self.app.pop_screen()
