"""Sample browser: problems on the left, that problem's samples (all rounds, paged) on
the right, the highlighted sample below with its verdict and test error.

Every query runs in a thread worker on this screen's own DB connection; the samples
list is a `PagedTable`, so a run with a million samples scrolls without loading it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Static

from ssd_tui.store.reads import RunReader, SampleDetail, SampleFilter
from ssd_tui.tui.data import fmt_float
from ssd_tui.tui.messages import OpenDiff, OpenTokens
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.paged_table import Column, PagedTable
from ssd_tui.tui.widgets.sample_view import (
    SUSPECT_MARK,
    SUSPECT_STYLE,
    VERDICT_STYLE,
    SampleView,
    describe,
)

VERDICTS = (None, "passed", "failed", "error", "timeout")
PURPOSES = (None, "eval", "train")


def _verdict(row: dict[str, Any]) -> Text:
    s = row.get("status")
    text = Text(s or "–", style=VERDICT_STYLE.get(s, ""))
    if row.get("suspect"):  # looks like it games the tests: the reasons are in the detail
        text.append(f" {SUSPECT_MARK}", style=SUSPECT_STYLE)
    return text


def _pass_cell(row: dict[str, Any]) -> Text:
    if not row.get("n"):
        return Text("")
    return Text(f"{row['passed']}/{row['n']}", style="green" if row["passed"] else "red")


ALL_PROBLEMS: dict[str, Any] = {
    "id": None,
    "name": "(all problems)",
    "purpose": "",
    "difficulty": "",
}
PROBLEM_COLUMNS = [
    Column(
        "name",
        "problem",
        18,
        "left",
        lambda r: Text(
            r["name"],
            style="italic" if r["id"] is None else "" if r["purpose"] == "eval" else "dim",
        ),
    ),
    Column(
        "difficulty", "diff", 6, "left", lambda r: r.get("difficulty") or r.get("purpose") or ""
    ),
    Column("pass", "pass", 5, "right", _pass_cell),
]

SAMPLE_COLUMNS = [
    Column("id", "id", 8, "right"),
    Column("round", "rnd", 3, "right"),
    Column("purpose", "purpose", 7),
    Column("temperature", "T", 4, "right", lambda r: f"{r['temperature']:g}"),
    Column("problem", "problem", 18),
    Column("sample_idx", "#", 4, "right"),
    Column("status", "verdict", 9, "left", _verdict),  # "timeout ⚑"
    Column("n_tokens", "tokens", 6, "right"),
    Column("mean_entropy", "H̄", 5, "right", lambda r: fmt_float(r.get("mean_entropy"))),
]


class SampleBrowserScreen(Screen):
    HELP_TITLE = "sample browser"  # what the help screen calls it
    SUB_TITLE = "samples"
    AUTO_FOCUS = "#samples"
    BINDINGS = [
        Binding("m", "mark", "Mark as A", tooltip="mark this sample as the left side of a diff"),
        Binding(
            "d",
            "diff",
            "Diff",
            tooltip="diff the marked sample (or the previous round's) with this one",
        ),
        Binding("t", "tokens", "Tokens", tooltip="entropy, fork and lock positions of this sample"),
        Binding(
            "left_square_bracket",
            "round(-1)",
            "Round -",
            key_display="[",
            tooltip="the previous round (or all rounds)",
        ),
        Binding(
            "right_square_bracket",
            "round(1)",
            "Round +",
            key_display="]",
            tooltip="the next round (or all rounds)",
        ),
        Binding("v", "verdict", "Verdict", tooltip="all, passed, failed, error, timeout"),
        Binding(
            "exclamation_mark",
            "suspect",
            "Suspect",
            key_display="!",
            tooltip="only samples whose program looks like it games the tests (⚑), or all",
        ),
        Binding("o", "purpose", "Eval/train", tooltip="all samples, eval only, training only"),
        Binding(
            "T",
            "temperature",
            "Temp",
            tooltip="eval samples at T_eval, at every temperature, at each baseline temperature",
        ),
        Binding("a", "all_problems", "All problems", tooltip="clear the problem filter"),
        Binding("tab", "app.focus_next", "Next pane", show=False),
        Binding("escape", "back", "Back"),
    ]

    class ProblemsLoaded(Message):
        def __init__(
            self,
            problems: list[dict[str, Any]],
            rounds: list[int],
            temperatures: list[float] | None = None,
        ) -> None:
            super().__init__()
            self.problems = problems
            self.rounds = rounds
            self.temperatures = temperatures  # T_eval first, then the baseline's (config)

    class DetailLoaded(Message):
        def __init__(self, detail: SampleDetail | None) -> None:
            super().__init__()
            self.detail = detail

    def __init__(
        self,
        ref: RunRef,
        round: int | None = None,
        problem: str | None = None,
        sample_ids: tuple[int, ...] | None = None,
        note: str = "",
        eval_temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.ref = ref
        self.title = ref.db_path.parent.name
        self.reader = RunReader(ref.db_path)
        self.filter = SampleFilter(
            round=round, sample_ids=sample_ids, eval_temperature=eval_temperature
        )
        # The run's evaluation temperatures, T_eval first (from its config, in a worker):
        # until they are read, T switches between the one given and every temperature.
        self.temperatures: list[float] = [] if eval_temperature is None else [eval_temperature]
        self.want_problem = problem
        self.note = note
        self.problems: list[dict[str, Any]] = []
        self.problem_rows: list[dict[str, Any]] = [ALL_PROBLEMS]
        self.rounds: list[int] = []
        self.marked: dict[str, Any] | None = None
        self._debounce: Timer | None = None
        # The problem row a jump moves to: highlights of other rows before the cursor gets
        # there (the reload's own, under load) must not clear the jump's sample filter.
        self._moving_to: int | None = None
        self._had_row = False
        self._detail_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="browse-head")
        with Horizontal(id="browse"):
            with Vertical(id="problem-pane"):
                yield PagedTable(
                    PROBLEM_COLUMNS,
                    lambda: len(self.problem_rows),
                    lambda o, n: self.problem_rows[o : o + n],
                    id="problems",
                )
            with Vertical(id="sample-pane"):
                yield PagedTable(SAMPLE_COLUMNS, self._count, self._page, id="samples")
                yield SampleView(id="sample")
        yield Footer(compact=True)  # every key fits in 140 columns

    def on_mount(self) -> None:
        self._load_problems()
        self._update_head()

    def on_unmount(self) -> None:
        self.reader.close()

    # ---- data sources for the paged table (run in its workers) ------------------------------
    def _count(self) -> int:
        return self.reader.count_samples(self.filter)

    def _page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return self.reader.sample_page(self.filter, offset, limit)

    # ---- problems -----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="problems")
    def _load_problems(self) -> None:
        cfg = self.reader.config()
        temps = [cfg.eval.temperature, *cfg.eval.baseline_temperatures] if cfg else None
        self.post_message(
            self.ProblemsLoaded(
                self.reader.problems(self.filter.round), self.reader.rounds(), temps
            )
        )

    def on_sample_browser_screen_problems_loaded(self, msg: ProblemsLoaded) -> None:
        self.problems = msg.problems
        self.rounds = msg.rounds
        if msg.temperatures:
            self.temperatures = list(dict.fromkeys(msg.temperatures))
            self._update_head()
        # A virtual list too: a run may have ten thousand training prompts.
        self.problem_rows = [ALL_PROBLEMS, *self.problems]
        target = 0
        for i, p in enumerate(self.problems, 1):
            if self.want_problem == p["name"] or self.filter.problem_id == p["id"]:
                target = i
                break
        if self.want_problem is not None and target:
            # Set the filter before the cursor: the highlight it causes is then a no-op.
            self.filter = replace(self.filter, problem_id=self.problems[target - 1]["id"])
            self.want_problem = None
            self._moving_to = target
            self._reload_samples()
        t = self.query_one("#problems", PagedTable)
        t.reload()
        t.move_to(target)

    @on(PagedTable.Highlighted, "#problems")
    def _problem_highlighted(self, event: PagedTable.Highlighted) -> None:
        # Debounced: moving through the list quickly reloads the samples once. Highlights
        # of the problem already shown (programmatic moves) are no-ops.
        event.stop()
        if event.row is None or event.index != event.table.cursor_row:
            return  # not loaded yet, or stale: the cursor has moved on since
        if self._moving_to is not None:
            if event.index != self._moving_to:
                return  # a highlight from before the jump's move
            self._moving_to = None
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None
        pid = event.row["id"]
        if pid != self.filter.problem_id:
            self._debounce = self.set_timer(0.15, lambda: self._set_problem(pid))

    def _set_problem(self, pid: int | None) -> None:
        self.filter = replace(self.filter, problem_id=pid, sample_ids=None)
        self.note = ""
        self._reload_samples()

    def _reload_samples(self) -> None:
        self.query_one("#samples", PagedTable).reload()
        self._update_head()

    def _update_head(self) -> None:
        f = self.filter
        t_eval = self.temperatures[0] if self.temperatures else None
        parts = [f.describe(t_eval)]
        if f.problem_id is not None:
            name = next(
                (p["name"] for p in self.problems if p["id"] == f.problem_id), f"#{f.problem_id}"
            )
            parts.append(f"problem {name}")
        if self.marked is not None:
            parts.append(f"A = #{self.marked['id']}")
        text = Text(" · ".join(parts), style="bold")
        if f.eval_temperature is None and t_eval is not None:
            text.append(
                f"   every temperature (T: one at a time; T_eval is {t_eval:g})", style="dim"
            )
        elif f.eval_temperature != t_eval and t_eval is not None:
            text.append("   the temperature-only baseline's (T: the next temperature)", style="dim")
        elif len(self.temperatures) > 1 and f.round in (None, 0):
            # Only round 0 holds the temperature-only baseline's samples.
            others = ", ".join(f"{t:g}" for t in sorted(self.temperatures[1:]))
            text.append(f"   T: other temperatures (the baseline's {others})", style="dim")
        if self.note:
            text.append("\n" + self.note, style="yellow")
        self.query_one("#browse-head", Static).update(text)

    # ---- the highlighted sample ----------------------------------------------------------------------
    @on(PagedTable.Highlighted, "#samples")
    def _sample_highlighted(self, event: PagedTable.Highlighted) -> None:
        has_row = event.row is not None
        if has_row != self._had_row:  # mark / diff / tokens need a loaded row
            self._had_row = has_row
            self.refresh_bindings()
        if self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None
        if event.row is not None:
            # Debounced: holding a key down scrolls the list without loading every sample.
            sid = event.row["id"]
            self._detail_timer = self.set_timer(0.08, lambda: self._load_detail(sid))

    @on(PagedTable.Selected, "#problems")
    def _problem_selected(self) -> None:
        self.query_one("#samples").focus()  # enter on a problem: on to its samples

    @on(PagedTable.Selected, "#samples")
    def _sample_selected(self) -> None:
        self.action_tokens()  # enter / double click: the closer look

    @on(PagedTable.Counted, "#samples")
    def _counted(self, event: PagedTable.Counted) -> None:
        if event.total == 0:
            self.query_one(SampleView).show(None)
            self._had_row = False
            self.refresh_bindings()

    @work(thread=True, exclusive=True, group="detail")
    def _load_detail(self, sample_id: int) -> None:
        self.post_message(self.DetailLoaded(self.reader.sample(sample_id)))

    def on_sample_browser_screen_detail_loaded(self, msg: DetailLoaded) -> None:
        self.query_one(SampleView).show(msg.detail)

    @property
    def current(self) -> dict[str, Any] | None:
        return self.query_one("#samples", PagedTable).current

    # ---- actions ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("mark", "tokens", "diff") and self.current is None:
            return None
        return True

    def action_mark(self) -> None:
        row = self.current
        if row is not None:
            self.marked = row
            self.notify(f"A = {describe(row)}", title="Marked for diff", markup=False)
            self._update_head()

    def action_diff(self) -> None:
        row = self.current
        if row is None:
            return
        a = self.marked["id"] if self.marked and self.marked["id"] != row["id"] else None
        self.post_message(OpenDiff(self.ref, a_id=a, b_id=row["id"]))

    def action_tokens(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(OpenTokens(self.ref, row["id"]))

    def action_round(self, step: int) -> None:
        options: list[int | None] = [None, *self.rounds]
        i = options.index(self.filter.round) if self.filter.round in options else 0
        self.filter = replace(
            self.filter, round=options[(i + step) % len(options)], sample_ids=None
        )
        self.note = ""
        self._reload_samples()
        self._load_problems()

    def action_verdict(self) -> None:
        i = VERDICTS.index(self.filter.status) if self.filter.status in VERDICTS else 0
        self.filter = replace(self.filter, status=VERDICTS[(i + 1) % len(VERDICTS)])
        self._reload_samples()

    def action_suspect(self) -> None:
        self.filter = replace(self.filter, suspect=not self.filter.suspect)
        self._reload_samples()

    def action_purpose(self) -> None:
        i = PURPOSES.index(self.filter.purpose) if self.filter.purpose in PURPOSES else 0
        self.filter = replace(self.filter, purpose=PURPOSES[(i + 1) % len(PURPOSES)])
        self._reload_samples()

    def action_temperature(self) -> None:
        """T_eval → every temperature → each other temperature of the run, in order."""
        first, rest = self.temperatures[:1], sorted(self.temperatures[1:])
        options: list[float | None] = [*first, None, *rest]
        now = self.filter.eval_temperature
        i = options.index(now) if now in options else -1
        self.filter = replace(self.filter, eval_temperature=options[(i + 1) % len(options)])
        self._reload_samples()

    def action_all_problems(self) -> None:
        self.filter = replace(self.filter, problem_id=None, sample_ids=None)
        self.note = ""
        self.query_one("#problems", PagedTable).move_to(0)
        self._reload_samples()

    def action_back(self) -> None:
        self.app.pop_screen()
