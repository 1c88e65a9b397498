"""The ssd-tui app: runs list → run dashboard → sample browser, diff and token views.

`run_app` is the public entry point (the CLI imports this module only when the app
is launched, so `ssd-tui run` never loads textual).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from ssd_tui.tui.commands import ScreenCommands
from ssd_tui.tui.data import display_path
from ssd_tui.tui.messages import (
    ChooseSeries,
    GoBack,
    OpenDashboard,
    OpenDiff,
    OpenGrid,
    OpenNewRun,
    OpenNotes,
    OpenOverlay,
    OpenSamples,
    OpenSearch,
    OpenTokens,
    OpenTrainCurves,
)
from ssd_tui.tui.process import EngineProcess
from ssd_tui.tui.refs import RunRef, load_tokenizer


class SSDApp(App[None]):
    """Keyboard first; every action is in the footer and the command palette (ctrl+p)."""

    CSS_PATH = "app.tcss"
    TITLE = "ssd-tui"
    SUB_TITLE = "simple self-distillation"
    COMMANDS = App.COMMANDS | {ScreenCommands}
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help", tooltip="keys and what the screens show"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        runs_dir: Path,
        open_db: Path | None = None,
        review: list[Path] | None = None,
        start_config: Path | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.5,
        examples_dir: Path | None = None,
        autostart_rounds: int | None = None,
        open_sweep: Path | None = None,
    ) -> None:
        super().__init__()
        self.open_sweep = Path(open_sweep) if open_sweep else None
        self.runs_dir = Path(runs_dir)
        self.open_db = Path(open_db) if open_db else None
        self.review = [Path(p) for p in review] if review else []
        self.start_config = Path(start_config) if start_config else None
        self.clock = clock
        self.poll_interval = poll_interval
        self.examples_dir = examples_dir
        self.autostart_rounds = autostart_rounds
        self.engines: dict[Path, EngineProcess] = {}
        self._tokenizers: dict[str, Any] = {}
        self._tokenizer_lock = threading.Lock()

    @property
    def review_mode(self) -> bool:
        return bool(self.review)

    def on_mount(self) -> None:
        # Each screen's module is imported when it is shown first (the dashboard's alone
        # took 0.1-0.4 s of a start that shows an overlay).
        if self.review:
            from ssd_tui.tui.screens.compare import CompareScreen
            from ssd_tui.tui.screens.dashboard import DashboardScreen

            self.sub_title = "review (read-only)"
            if len(self.review) == 1:
                self.push_screen(DashboardScreen(RunRef(self.review[0], review=True)))
            else:
                self.push_screen(CompareScreen(self.review[0], self.review[1]))
            return
        if self.open_sweep is None or self.open_db is not None:
            # An overlay opened alone has no runs list under it: `esc` makes one then.
            # Mounting it underneath cost a second screen's layout, listing and footer at
            # start-up (benchmarks/bench_overlay.py).
            from ssd_tui.tui.screens.start import StartScreen

            self.push_screen(StartScreen())
        if self.open_sweep is not None:
            from ssd_tui.tui.screens.overlay import OverlayScreen
            from ssd_tui.tui.workbench import sweep_runs

            title, runs = sweep_runs(self.open_sweep)
            self.push_screen(OverlayScreen(runs, title))
        if self.open_db is not None:
            from ssd_tui.tui.screens.dashboard import DashboardScreen

            self.push_screen(
                DashboardScreen(
                    RunRef(
                        self.open_db.resolve(),
                        config_path=self.start_config,
                        autostart_rounds=self.autostart_rounds,
                    )
                )
            )

    def engine_for(self, ref: RunRef) -> EngineProcess:
        key = ref.run_dir.resolve()
        if key not in self.engines:
            self.engines[key] = EngineProcess(ref.run_dir, ref.db_path)
        return self.engines[key]

    def tokenizer(self, model_path: str) -> Any:
        """The run's tokenizer, loaded once (call it from a worker thread).

        A model folder with a `tokenizer.json` is read with the `tokenizers` library
        (well under a second); importing transformers for `AutoTokenizer` took 4-5.5 s
        and more on a loaded machine, so it is only the fallback (hub ids, old formats).
        """
        with self._tokenizer_lock:
            if model_path not in self._tokenizers:
                self._tokenizers[model_path] = load_tokenizer(model_path)
            return self._tokenizers[model_path]

    def preload_tokenizer(self, model_path: str) -> None:
        """Load the run's tokenizer in the background, so the first token view is quick."""

        def load() -> None:
            try:
                self.tokenizer(model_path)
            except Exception:  # noqa: BLE001 - the token view reports it when opened
                pass

        self.run_worker(load, thread=True, group="tokenizer", exclusive=False, exit_on_error=False)

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Save a screenshot where a folder exists, and say where (Textual's default,
        ~/Downloads, is often missing: "Failed to save screenshot")."""
        folder = Path(path) if path else self._screenshot_folder()
        try:
            saved = self.save_screenshot(filename, str(folder), time_format)
        except OSError as e:
            self.notify(
                f"cannot save the screenshot in {folder}: {e.strerror or e}",
                title="Screenshot",
                severity="error",
                markup=False,
            )
            return None
        self.notify(f"saved to {display_path(saved)}", title="Screenshot", markup=False)
        return saved

    def _screenshot_folder(self) -> Path:
        """The shown run's folder, else the runs folder, else the current directory
        (never beside a file under review: a review writes nothing there)."""
        ref = getattr(self.screen, "ref", None)
        if isinstance(ref, RunRef) and not ref.review and ref.run_dir.is_dir():
            return ref.run_dir
        if not self.review_mode and self.runs_dir.is_dir():
            return self.runs_dir
        return Path.cwd()

    def action_help(self) -> None:
        from ssd_tui.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    # ---- navigation: what screens ask for (ssd_tui.tui.messages) ------------------------------
    # Each screen's module is imported here, when it is first shown, as in on_mount.
    def on_open_dashboard(self, msg: OpenDashboard) -> None:
        from ssd_tui.tui.screens.dashboard import DashboardScreen

        if msg.replace:
            self.switch_screen(DashboardScreen(msg.ref))
        else:
            self.push_screen(DashboardScreen(msg.ref))

    def on_open_samples(self, msg: OpenSamples) -> None:
        from ssd_tui.tui.screens.samples import SampleBrowserScreen

        self.push_screen(
            SampleBrowserScreen(
                msg.ref,
                round=msg.round,
                problem=msg.problem,
                sample_ids=msg.sample_ids,
                note=msg.note,
                eval_temperature=msg.eval_temperature,
            )
        )

    def on_open_grid(self, msg: OpenGrid) -> None:
        from ssd_tui.tui.screens.grid import ProblemGridScreen

        self.push_screen(ProblemGridScreen(msg.ref))

    def on_open_diff(self, msg: OpenDiff) -> None:
        from ssd_tui.tui.screens.diff import DiffScreen

        self.push_screen(DiffScreen(msg.ref, a_id=msg.a_id, b_id=msg.b_id))

    def on_open_tokens(self, msg: OpenTokens) -> None:
        from ssd_tui.tui.screens.tokens import TokenScreen

        self.push_screen(TokenScreen(msg.ref, msg.sample_id))

    def on_open_search(self, msg: OpenSearch) -> None:
        from ssd_tui.tui.screens.search import SearchScreen

        self.push_screen(SearchScreen(msg.dbs))

    def on_open_overlay(self, msg: OpenOverlay) -> None:
        from ssd_tui.tui.screens.overlay import OverlayScreen

        self.push_screen(OverlayScreen(msg.runs, msg.title))

    def on_open_new_run(self, msg: OpenNewRun) -> None:
        from ssd_tui.tui.screens.new_run import NewRunScreen

        self.push_screen(NewRunScreen())

    def on_open_train_curves(self, msg: OpenTrainCurves) -> None:
        from ssd_tui.tui.screens.train_curves import TrainCurvesScreen

        self.push_screen(TrainCurvesScreen(msg.ref))

    def on_open_notes(self, msg: OpenNotes) -> None:
        from ssd_tui.tui.screens.notes import NotesScreen

        self.push_screen(NotesScreen(msg.ref, msg.round))

    def on_choose_series(self, msg: ChooseSeries) -> None:
        from ssd_tui.tui.screens.series import SeriesScreen

        self.push_screen(SeriesScreen(msg.names, msg.hidden), msg.done)

    def on_go_back(self, msg: GoBack) -> None:
        if len(self.screen_stack) > 2:
            self.pop_screen()
        elif self.review_mode:
            self.exit()
        else:
            from ssd_tui.tui.screens.start import StartScreen

            self.switch_screen(StartScreen())


def run_app(
    runs_dir: Path,
    open_db: Path | None = None,
    review: list[Path] | None = None,
    start_config: Path | None = None,
    autostart_rounds: int | None = None,
    open_sweep: Path | None = None,
) -> None:
    """Open the app on `runs_dir`; `open_sweep` overlays a sweep folder's runs; `open_db`
    attaches to one run (live or finished); `review` opens exported/finished run DBs read-only
    (two: compared round by round); `autostart_rounds` starts the engine on `open_db` up to
    that round, unless done."""
    opened = []
    if review:
        # Exports may be gzipped (.db.gz): review a decompressed temporary copy, removed
        # when the app ends (ssd_tui.store.review.open_export).
        from ssd_tui.store.review import open_export

        opened = [open_export(Path(p)) for p in review]
        review = [s.path for s in opened]
    try:
        SSDApp(
            Path(runs_dir),
            open_db=open_db,
            review=review,
            start_config=start_config,
            autostart_rounds=autostart_rounds,
            open_sweep=open_sweep,
        ).run()
    finally:
        for store in opened:
            store.close()
