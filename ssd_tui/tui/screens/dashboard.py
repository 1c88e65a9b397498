"""Run dashboard: rounds table, pass@1 curve, stage progress, events, warnings, engine log.

The screen follows the run DB: a timer polls `PRAGMA data_version` in a thread worker
and, only when another connection (the engine) has committed, reads a fresh snapshot
(also in the worker) and posts it up as a message; the handler hands the pieces down
to the widgets. The engine is a separate process (see `ssd_tui.tui.process`), so its
crash shows up as a notification and an 'interrupted' stage, never as a frozen UI.
"""

from __future__ import annotations

import signal
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)

from ssd_tui.analysis.evidence import evidence_targets
from ssd_tui.analysis.round_state import next_round_target
from ssd_tui.config import weaker_than_strict
from ssd_tui.errors import SSDError
from ssd_tui.store.reads import RunReader, StageRow
from ssd_tui.tui import views
from ssd_tui.tui.data import display_path
from ssd_tui.tui.listing import lineage_text
from ssd_tui.tui.messages import (
    ChooseSeries,
    GoBack,
    OpenDashboard,
    OpenGrid,
    OpenNotes,
    OpenSamples,
    OpenSearch,
    OpenTrainCurves,
)
from ssd_tui.tui.refs import RunRef
from ssd_tui.tui.widgets.branch_prompt import BranchPrompt
from ssd_tui.tui.widgets.curve import PassCurve
from ssd_tui.tui.widgets.event_log import EventLog
from ssd_tui.tui.widgets.rounds_table import RoundsTable
from ssd_tui.tui.widgets.stage_progress import StageProgress
from ssd_tui.tui.widgets.warnings_panel import WarningsPanel

ENGINE_START = {"next_stage", "next_round", "run_rounds"}
ENGINE_SIGNAL = {"pause", "stop"}
LINEAGE_S = 3.0  # how often the lineage line re-reads the runs beside this one


def explain_exit(code: int, tail: list[str]) -> str:
    """One line for an engine that ended badly: its signal, or its own error line."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (the stage resumes when run again)"
    for line in reversed(tail):
        s = line.strip()
        if s.startswith(("error:", "internal error:")) or s.endswith("Error") or "Error: " in s:
            return s
    return f"exited with status {code}"


class RoundsPrompt(ModalScreen[int | None]):
    """Ask up to which round to run unattended, in `ssd-tui run --rounds N`'s terms:
    N is the last round run (round 0 is the base model, rounds 1..N are SSD rounds)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, first: int, planned: int) -> None:
        super().__init__()
        self.first = first
        self.planned = planned

    def compose(self) -> ComposeResult:
        plan = (
            f"round 0 is the base model, rounds 1–{self.planned} the planned SSD rounds"
            if self.planned >= 1
            else "round 0 is the base model, rounds 1, 2, … SSD rounds"
        )
        with Vertical(id="prompt"):
            yield Static(
                f"Run unattended up to which round? ({plan}; next to run: round {self.first})",
                id="n-question",
            )
            yield Input(str(max(self.first, self.planned)), id="n-rounds", type="integer")
            yield Static("[dim]runs `ssd-tui run CONFIG --rounds N`[/]", id="n-error")
            with Horizontal():
                yield Button("Run", id="ok", variant="primary")
                yield Button("Cancel", id="no")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        raw = self.query_one(Input).value.strip()
        if not raw.isdigit() or int(raw) < self.first:
            self.query_one("#n-error", Static).update(
                f"[red]a round number ≥ {self.first} (round {self.first} is the next to run)[/]"
            )
            return
        self.dismiss(int(raw))

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DashboardScreen(Screen):
    HELP_TITLE = "run dashboard"  # what the help screen calls it
    AUTO_FOCUS = "#rounds"
    BINDINGS = [
        Binding(
            "s", "next_stage", "Next stage", tooltip="run the next stage (ssd-tui run --stages 1)"
        ),
        Binding("r", "next_round", "Next round", tooltip="run until the next round is done"),
        Binding("u", "run_rounds", "N rounds", tooltip="run up to round N unattended (--rounds N)"),
        Binding("p", "pause", "Pause", tooltip="finish the current stage, then stop (SIGUSR1)"),
        Binding("x", "stop", "Stop", tooltip="stop between batches (SIGINT); resumable"),
        Binding("b", "browse", "Samples", tooltip="browse the highlighted round's samples"),
        Binding(
            "g",
            "grid",
            "Grid",
            tooltip="problems × rounds: solved share per round, flips, McNemar's test",
        ),
        # Not in the footer (it is full at 150 columns): the rounds table's title, the help
        # notes and the palette name it.
        Binding("m", "reference", show=False),
        Binding("w", "warnings", "Warnings", tooltip="collapse warnings and their evidence"),
        Binding("j", "jump", "Jump", tooltip="the samples behind the selected warning"),
        Binding("e", "events", "Events", tooltip="the run's event log"),
        Binding("l", "engine_log", "Log", tooltip="the engine's output (RUN_DIR/engine.log)"),
        Binding("c", "series", "Series", tooltip="choose the chart's series (toggle list)"),
        Binding(
            "f",
            "chart_view",
            "Probe",
            tooltip="chart: pass rates → the fork/lock probe, page by page → pass rates",
        ),
        Binding("t", "train_curves", "Loss/lr", tooltip="training loss and learning rate per step"),
        Binding("n", "notes", "Notes", tooltip="notes and tags of the run and its rounds"),
        Binding("slash", "search", "Search", key_display="/", tooltip="find samples by text"),
        Binding("escape", "back", "Back"),
        # Last in the footer: a wide terminal shows it, help (?) and ctrl+p always do.
        Binding(
            "B",
            "branch",
            "Branch",
            tooltip="a new run whose round 0 is the highlighted round's model (--from --round)",
        ),
        # Reached only when the engine key itself is disabled or hidden (review, no config,
        # an engine already running): says why instead of doing nothing.
        Binding("s,r,u,p,x", "engine_unavailable", show=False),
        Binding("j", "no_jump", show=False),  # the same for j on a run without warnings
    ]

    class Polled(Message):
        def __init__(
            self,
            snapshot: views.Snapshot | None,
            engine_pid: int | None,
            exit_code: int | None,
            log_lines: list[str] | None,
            error: str = "",
            engine_since: float | None = None,
        ) -> None:
            super().__init__()
            self.engine_since = engine_since
            self.snapshot = snapshot
            self.engine_pid = engine_pid
            self.exit_code = exit_code
            self.log_lines = log_lines
            self.error = error

    class Lineage(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, ref: RunRef) -> None:
        super().__init__()
        self.ref = ref
        self.reader = RunReader(ref.db_path, fallback_config=ref.config_path)
        self.snapshot: views.Snapshot | None = None
        self.engine_pid: int | None = None
        self._dv: int | None = None
        self._last_event = 0
        self._polling = False
        # s/r/u target the next unfinished round, which only the first poll knows: until it
        # arrives they are disabled, or an early `r` would start `--rounds 0` on a done run.
        self._polled = False
        self._log_size = -2  # never read: the first poll fills the Engine log tab
        self._title_set = False
        self._autostart = ref.autostart_rounds if not ref.review else None
        self.engine_since: float | None = None
        self._lineage_text = ""  # what the lineage line shows

    @property
    def engine(self):
        return self._engine

    # ---- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="run-head")
        yield Static("", id="lineage")  # a branch's parent, its branches, a [control] stop
        yield Static("", id="verdict")
        with Horizontal(id="top"):
            yield RoundsTable(id="rounds")
            yield PassCurve(id="curve")
        yield StageProgress(self.app.clock, id="progress")
        with TabbedContent(id="bottom", initial="tab-events"):
            with TabPane("Events", id="tab-events"):
                yield EventLog(id="events")
            with TabPane("Warnings", id="tab-warnings"):
                yield WarningsPanel(id="warnings")
            with TabPane("Engine log", id="tab-log"):
                yield RichLog(id="engine-log", max_lines=500, wrap=False, markup=False)
        yield Footer(compact=True)  # every key fits in 150 columns

    def on_mount(self) -> None:
        self._engine = self.app.engine_for(self.ref)
        self.query_one("#run-head", Static).update(
            f"[dim]{escape(display_path(self.ref.db_path))}[/]"
        )
        self.set_interval(self.app.poll_interval, self.poll)
        self.poll()
        self.set_interval(LINEAGE_S, self._read_lineage)
        self._read_lineage()

    @work(thread=True, exclusive=True, group="lineage", exit_on_error=False)
    def _read_lineage(self) -> None:
        self.post_message(self.Lineage(lineage_text(self.ref.run_dir)))

    def on_dashboard_screen_lineage(self, msg: Lineage) -> None:
        if msg.text == self._lineage_text:
            return
        self._lineage_text = msg.text
        line = self.query_one("#lineage", Static)
        events = self.query_one(EventLog)
        following = events.is_vertical_scroll_end
        line.display = bool(msg.text)
        line.update(Text.from_markup(msg.text))
        if following:  # the line takes rows from the log: keep its last event in view
            self.call_after_refresh(events.scroll_end, animate=False)

    def on_unmount(self) -> None:
        self.reader.close()

    # ---- polling (thread worker) -------------------------------------------------------------
    def poll(self) -> None:
        if self._polling:
            # A slow query is still running: skip this tick, but keep the clock-driven
            # parts (ETA, elapsed) moving.
            self._tick()
            return
        self._polling = True
        self._poll(self._dv, self._last_event)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll(self, last_dv: int | None, last_event: int) -> None:
        engine = self.engine
        try:
            exit_code = engine.poll() if engine.proc is not None else None
            pid = None if self.ref.review else engine.pid()
            dv = self.reader.data_version()
            snap = None
            if dv is None or dv != last_dv or pid != self.engine_pid:
                snap = views.snapshot(self.reader, last_event, self.app.clock())
            size = engine.log_path.stat().st_size if engine.log_path.exists() else -1
            lines = engine.log_tail(200) if size != self._log_size else None
            self._log_size = size
            since = None if pid is None else engine.since()
            self.post_message(self.Polled(snap, pid, exit_code, lines, engine_since=since))
        except Exception as e:  # noqa: BLE001 - the UI must survive anything the DB does
            self.post_message(
                self.Polled(None, self.engine_pid, None, None, error=f"{type(e).__name__}: {e}")
            )

    def on_dashboard_screen_polled(self, msg: Polled) -> None:
        self._polling = False
        if msg.error:
            self.query_one("#run-head", Static).update(
                f"[red]cannot read {escape(display_path(self.ref.db_path))}: {escape(msg.error)}[/]"
            )
            return
        engine_changed = msg.engine_pid != self.engine_pid or not self._polled
        self._polled = True
        self.engine_pid = msg.engine_pid
        self.engine_since = msg.engine_since
        if msg.exit_code is not None and self.engine.proc is not None:
            self._engine_exited(msg.exit_code)
        if msg.log_lines is not None:
            log = self.query_one("#engine-log", RichLog)
            log.clear()
            for ln in msg.log_lines or self._no_log_text():
                log.write(ln)
        if msg.snapshot is not None:
            self.apply(msg.snapshot)
        elif self.snapshot is None:
            self._show_no_db()
        self._tick()
        if engine_changed:
            self.refresh_bindings()
        if self._autostart is not None:
            self._start_on_open(self._autostart)

    def _start_on_open(self, last: int) -> None:
        """`ssd-tui demo --tui`: run the demo up to its last round, unless it is done or
        an engine already runs on it (then the dashboard just follows it)."""
        self._autostart = None
        done = (
            {r.round for r in self.snapshot.rounds if r.status == "done"}
            if self.snapshot
            else set()
        )
        if self.engine_pid is None and not done >= set(range(last + 1)):
            self._start(rounds=last)

    def _engine_exited(self, code: int) -> None:
        self.engine.proc = None
        if code == 0:
            self.notify(
                "engine finished (run the next step when you like)", title="Engine", markup=False
            )
        elif code == 130:
            self.notify(
                "engine stopped between batches; the stage resumes when run again",
                title="Engine",
                markup=False,
            )
        else:
            why = explain_exit(code, self.engine.log_tail(40))
            self.notify(
                f"{why}\n(engine log: key l)",
                title="Engine failed",
                severity="error",
                timeout=12,
                markup=False,
            )
            self.query_one("#events", EventLog).add_lines([f"engine failed: {why}"], "bold red")
        self.refresh_bindings()

    def _no_log_text(self) -> list[Text]:
        """Why the Engine log tab is empty: only an engine the app starts writes there."""
        return [
            Text(line, style="dim")
            for line in (
                f"no engine log ({display_path(self.engine.log_path)}): the app writes one "
                "when its keys (s, r, u) start the engine.",
                "An engine started from a shell (ssd-tui run, ssd-tui demo) writes to the "
                "terminal that started it.",
                "The run's own events (stages, progress, warnings) are in the Events tab (e).",
            )
        ]

    def _show_no_db(self) -> None:
        cfg = self.ref.engine_config
        if self.engine_pid is not None:
            text = f"engine starting (pid {self.engine_pid}): loading libraries and the model…"
            self.query_one("#progress", StageProgress).show([], text)
            return
        text = "[b]This run has not started yet.[/b] "
        text += (
            f"Press [b]s[/b] to run the first stage or [b]r[/b] for round 0 "
            f"(config: {escape(display_path(cfg)) if cfg else ''})."
            if cfg and not self.ref.review
            else f"No run database at {escape(display_path(self.ref.db_path))}."
        )
        self.query_one("#progress", StageProgress).show([], text)

    # ---- snapshot → widgets ---------------------------------------------------------------------
    def apply(self, snap: views.Snapshot) -> None:
        first = self.snapshot is None
        self.snapshot = snap
        self._dv = snap.data_version
        self._last_event = snap.last_event_id
        self.title = f"{snap.name}"
        mode = "review (read-only)" if self.ref.review else display_path(self.ref.run_dir)
        self.sub_title = f"{snap.model}"
        weak = any(weaker_than_strict(x) for x in snap.sandbox)
        sandbox = f" · [{'b red' if weak else 'dim'}]sandbox {', '.join(snap.sandbox)}[/]"
        engines = f" · [dim]{escape(', '.join(snap.engines))}[/]" if snap.engines else ""
        self.query_one("#run-head", Static).update(
            f"[b]{escape(snap.name)}[/b] · {escape(snap.model)} · T_eval {snap.t_eval:g}"
            f"{engines}{sandbox if snap.sandbox else ''} · [dim]{escape(mode)}[/]"
        )
        self._show_verdict(snap)
        table = self.query_one(RoundsTable)
        if first and Path(snap.model).is_dir():
            self.app.preload_tokenizer(snap.model)  # the first token view is then quick
        if first:
            table.set_k_label(snap.k, snap.diversity_name)
            table.border_title = "rounds" + (
                f" · diversity = {snap.diversity_name}" if snap.diversity_name else ""
            )
            table.border_subtitle = "p: McNemar vs round 0 · m: vs the highlighted round"
        table.update_rounds(snap.rounds, snap.pass_counts)
        curve = self.query_one(PassCurve)
        curve.set_data(snap.curve, snap.baseline, snap.provisional, snap.probe)
        self.query_one(EventLog).add_events(snap.events, snap.created_at)
        self.query_one(WarningsPanel).set_warnings(snap.warnings)
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-warnings").label = (
            f"Warnings ({len(snap.warnings)})" if snap.warnings else "Warnings"
        )
        self.refresh_bindings()

    def _show_verdict(self, snap: views.Snapshot) -> None:
        """The line the CLI prints when a run ends (SSD vs the temperature-only baseline);
        'so far' until the run's planned rounds are done."""
        verdict = self.query_one("#verdict", Static)
        verdict.display = bool(snap.verdict)
        if snap.verdict:
            done = {r.round for r in snap.rounds if r.status == "done"}
            final = done >= set(range(snap.planned_rounds + 1))
            verdict.update(
                Text.assemble(("verdict" if final else "so far", "bold"), ": ", snap.verdict)
            )

    def _tick(self) -> None:
        """Clock-driven parts only (rate, ETA): no DB access."""
        snap = self.snapshot
        if snap is None:
            return
        # Only a live engine's stages move: review mode and stale rows get no bar.
        running: list[StageRow] = snap.running if self.engine_pid is not None else []
        self.query_one(StageProgress).show(running, self._idle_text(snap))

    def _idle_text(self, snap: views.Snapshot) -> str:
        if self.ref.review:
            return "review: read-only, no engine actions"
        stale = [s for s in snap.running]
        if stale and self.engine_pid is None:
            s = stale[0]
            return (
                f"[red]round {s.round} {s.stage} was left running by an engine that is gone "
                f"(crashed or killed)[/]: press [b]s[/b] to resume it"
            )
        if self.engine_pid is not None:
            since, last = self.engine_since, snap.last_stage_start
            if since is not None and (last is None or last < since):
                # No stage has started since this engine did: it is importing its
                # libraries and loading the model (seconds on a CPU).
                return f"engine starting (pid {self.engine_pid}): loading libraries and the model…"
            return f"engine running (pid {self.engine_pid}), between stages"
        done = [r for r in snap.rounds if r.status == "done"]
        return (
            f"engine idle · {len(done)} round(s) done · s: next stage · r: next round · u: N rounds"
        )

    # ---- bindings ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("engine_unavailable", "no_jump"):
            return True
        if action == "branch" and self.ref.review:
            return False  # hidden: an export is reviewed, never branched from
        if action in ENGINE_START | ENGINE_SIGNAL:
            if self.ref.review:
                return False  # hidden: review mode offers no engine actions
            if action in ENGINE_START:
                return (
                    None
                    if (
                        self.engine_pid is not None
                        or self.ref.engine_config is None
                        or not self._polled
                    )
                    else True
                )
            return True if self.engine_pid is not None else None
        if action in ("browse", "jump") and self.snapshot is None:
            return None
        if action == "jump" and not (self.snapshot and self.snapshot.warnings):
            return None
        return True

    # ---- engine actions --------------------------------------------------------------------------
    def action_engine_unavailable(self) -> None:
        self.notify(self._why_no_engine_action(), title="Engine", severity="warning", markup=False)

    def _why_no_engine_action(self) -> str:
        if self.ref.review:
            return (
                "review is read-only: no engine actions here (a run's own run.db, opened "
                "with ssd-tui open, can be run)"
            )
        if self.engine_pid is not None:
            return f"an engine is already running (pid {self.engine_pid}): p pauses, x stops it"
        if self.ref.engine_config is None:
            return f"no config.toml in {display_path(self.ref.run_dir)}: the engine needs one"
        if not self._polled:
            return "still reading the run database: try again in a moment"
        return "no engine is running (s, r or u starts one)"

    def _start(self, rounds: int | None = None, stages: int | None = None) -> None:
        cfg = self.ref.engine_config
        if cfg is None:
            self.notify(
                "no config.toml for this run: the engine needs one", severity="error", markup=False
            )
            return
        if self.engine_pid is not None:
            self.notify(
                f"an engine is already running (pid {self.engine_pid})",
                severity="warning",
                markup=False,
            )
            return
        try:
            pid = self.engine.start(cfg, rounds=rounds, stages=stages)
        except OSError as e:
            self.notify(f"cannot start the engine: {e}", severity="error", markup=False)
            return
        self.engine_pid = pid
        what = f"--stages {stages}" if stages else f"--rounds {rounds}"
        self.notify(
            f"engine started (pid {pid}, {what}); output in {display_path(self.engine.log_path)}",
            title="Engine",
            markup=False,
        )
        self.refresh_bindings()

    def _target(self) -> int:
        return next_round_target(self.snapshot.rounds if self.snapshot else [])

    def action_next_stage(self) -> None:
        self._start(rounds=max(self._target(), self._planned_rounds()), stages=1)

    def _planned_rounds(self) -> int:
        cfg = self.reader.config()
        return cfg.run.rounds if cfg else 0

    def action_next_round(self) -> None:
        self._start(rounds=self._target())

    def action_run_rounds(self) -> None:
        def go(last: int | None) -> None:
            if last is not None:
                self._start(rounds=last)

        self.app.push_screen(RoundsPrompt(self._target(), self._planned_rounds()), go)

    def action_pause(self) -> None:
        if self.engine.pause():
            self.notify("pausing after the current stage…", title="Engine", markup=False)

    def action_stop(self) -> None:
        if self.engine.stop():
            self.notify("stopping between batches…", title="Engine", markup=False)

    # ---- navigation ---------------------------------------------------------------------------------
    def action_browse(self, round: int | None = None) -> None:
        rnd = self.query_one(RoundsTable).current_round if round is None else round
        # The run's own evaluation samples first: round 0 also holds the temperature-only
        # baseline's, at other temperatures (the browser's T shows those).
        t_eval = self.snapshot.t_eval if self.snapshot else None
        self.post_message(OpenSamples(self.ref, round=rnd, eval_temperature=t_eval))

    def palette_commands(self):
        yield (
            "McNemar's p against the highlighted round",
            "key: m · the rounds table's p column compares every round with that one",
            self.action_reference,
        )

    def action_grid(self) -> None:
        self.post_message(OpenGrid(self.ref))

    def action_reference(self) -> None:
        table = self.query_one(RoundsTable)
        rnd = table.current_round
        if rnd is not None:
            table.set_reference(rnd)
            table.border_subtitle = f"p: McNemar vs round {rnd} · m: vs the highlighted round"
            self.notify(
                f"McNemar's p of every round against round {rnd} (problems that flipped)",
                title="p column",
                markup=False,
            )

    @on(RoundsTable.RowSelected, "#rounds")
    def _round_selected(self) -> None:
        self.action_browse()

    def _show_tab(self, tab: str, focus: str) -> None:
        """Switch the bottom tab and focus its content, in that order's reverse: a focused
        widget left in the pane being hidden hands focus to its neighbour in the same pane,
        and a pane that gains focus makes itself active again (the tab would "stick")."""
        self.query_one(focus).focus()
        self.query_one(TabbedContent).active = tab

    def action_warnings(self) -> None:
        self._show_tab("tab-warnings", "#warnings-table")

    def action_events(self) -> None:
        self._show_tab("tab-events", "#events")

    def action_engine_log(self) -> None:
        self._show_tab("tab-log", "#engine-log")

    def action_series(self) -> None:
        curve = self.query_one(PassCurve)

        def done(hidden: set[str] | None) -> None:
            if hidden is not None:
                curve.set_hidden(hidden)

        self.post_message(ChooseSeries(curve.names(), curve.hidden, done))

    def action_chart_view(self) -> None:
        self.query_one(PassCurve).next_view()

    def action_no_jump(self) -> None:
        text = (
            "still reading the run database: try again in a moment"
            if self.snapshot is None
            else "no collapse warnings in this run (yet): j opens the samples behind a "
            "warning once an analyse stage raises one"
        )
        self.notify(text, title="Jump", markup=False)

    def action_jump(self) -> None:
        w = self.query_one(WarningsPanel).current
        if w is not None:
            self._jump(w)

    @on(WarningsPanel.Jump)
    def _on_jump(self, event: WarningsPanel.Jump) -> None:
        self._jump(event.warning)

    def _jump(self, w: dict) -> None:
        problems, ids = evidence_targets(w["evidence"])
        self.post_message(
            OpenSamples(
                self.ref,
                round=w["round"],
                problem=problems[0] if problems else None,
                sample_ids=tuple(ids) if ids else None,
                note=f"warning [{w['rule']}] round {w['round']}: {w['message']}",
            )
        )

    # ---- the workbench screens -------------------------------------------------------------------
    def action_train_curves(self) -> None:
        self.post_message(OpenTrainCurves(self.ref))

    def action_notes(self) -> None:
        # On the run: the rounds table always highlights a row (round 0 when the dashboard
        # opens), so its cursor is no sign the user meant a round; the notes screen offers
        # every round by name.
        self.post_message(OpenNotes(self.ref, None))

    def action_search(self) -> None:
        self.post_message(OpenSearch([(self.ref.db_path, self.ref.run_dir.name)]))

    def action_branch(self) -> None:
        """A branch from the highlighted round: its config written beside this run, its
        engine started with --from/--round, its dashboard opened."""
        rnd = self.query_one(RoundsTable).current_round
        done = (
            {r.round for r in self.snapshot.rounds if r.status == "done"}
            if self.snapshot
            else set()
        )
        if self.ref.review or rnd is None or rnd not in done:
            what = "review is read-only" if self.ref.review else f"round {rnd} is not done"
            self.notify(f"{what}: a branch starts from a finished round", severity="warning")
            return
        parent = self.ref.run_dir

        def go(name: str | None) -> None:
            if name is None:
                return
            # Here: runs.branch brings the record and the model hashing (~30 ms) that a
            # dashboard needs only when a branch starts.
            from ssd_tui.runs.branch import branch_config

            try:
                config = branch_config(parent, name, parent.parent)
            except SSDError as e:
                self.notify(str(e), severity="error", markup=False)
                return
            ref = RunRef(config.parent / "run.db")
            try:
                self.app.engine_for(ref).start(config, branch=(parent, rnd))
            except OSError as e:
                self.notify(f"cannot start the engine: {e}", severity="error", markup=False)
                return
            self.notify(f"branch {name} started from round {rnd}", title="Branch", markup=False)
            self.post_message(OpenDashboard(ref))

        name = self.snapshot.name if self.snapshot else parent.name
        self.app.push_screen(BranchPrompt(name, rnd, f"{parent.name}-r{rnd}"), go)

    def action_back(self) -> None:
        self.post_message(GoBack())
