"""The ssd-tui app: runs list → run dashboard → sample browser, diff and token views.

`run_app` is the public entry point (the CLI imports this module only when the app
is launched, so `ssd-tui run` never loads textual).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from ssd_tui.tui.commands import ScreenCommands
from ssd_tui.tui.process import EngineProcess


@dataclass
class RunRef:
    """What a dashboard shows: a run DB, its folder, and how the engine is started."""

    db_path: Path
    review: bool = False
    config_path: Path | None = None  # config for `ssd-tui run`; RUN_DIR/config.toml by default

    @property
    def run_dir(self) -> Path:
        return self.db_path.parent

    @property
    def engine_config(self) -> Path | None:
        own = self.run_dir / "config.toml"
        if own.exists():
            return own
        return self.config_path if self.config_path and self.config_path.exists() else None


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
        open_sweep: Path | None = None,
    ) -> None:
        super().__init__()
        self.open_sweep = Path(open_sweep) if open_sweep else None  # issue 19
        self.runs_dir = Path(runs_dir)
        self.open_db = Path(open_db) if open_db else None
        self.review = [Path(p) for p in review] if review else []
        self.start_config = Path(start_config) if start_config else None
        self.clock = clock
        self.poll_interval = poll_interval
        self.examples_dir = examples_dir
        self.engines: dict[Path, EngineProcess] = {}
        self._tokenizers: dict[str, Any] = {}

    @property
    def review_mode(self) -> bool:
        return bool(self.review)

    def on_mount(self) -> None:
        from ssd_tui.tui.screens.compare import CompareScreen
        from ssd_tui.tui.screens.dashboard import DashboardScreen
        from ssd_tui.tui.screens.start import StartScreen

        if self.review:
            self.sub_title = "review (read-only)"
            if len(self.review) == 1:
                self.push_screen(DashboardScreen(RunRef(self.review[0], review=True)))
            else:
                self.push_screen(CompareScreen(self.review[0], self.review[1]))
            return
        self.push_screen(StartScreen())
        if self.open_sweep is not None:
            from ssd_tui.tui.screens.overlay import OverlayScreen
            from ssd_tui.tui.workbench import sweep_runs

            title, runs = sweep_runs(self.open_sweep)
            self.push_screen(OverlayScreen(runs, title))
        if self.open_db is not None:
            self.push_screen(
                DashboardScreen(RunRef(self.open_db.resolve(), config_path=self.start_config))
            )

    def engine_for(self, ref: RunRef) -> EngineProcess:
        key = ref.run_dir.resolve()
        if key not in self.engines:
            self.engines[key] = EngineProcess(ref.run_dir, ref.db_path)
        return self.engines[key]

    def tokenizer(self, model_path: str) -> Any:
        """The run's tokenizer (loaded once, in a worker thread: it imports transformers)."""
        if model_path not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_path] = AutoTokenizer.from_pretrained(model_path)
        return self._tokenizers[model_path]

    def action_help(self) -> None:
        from ssd_tui.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))


def run_app(
    runs_dir: Path,
    open_db: Path | None = None,
    review: list[Path] | None = None,
    start_config: Path | None = None,
    open_sweep: Path | None = None,
) -> None:
    """Open the app on `runs_dir`; `open_sweep` overlays a sweep folder's runs; `open_db` attaches to one run (live or finished);
    `review` opens exported/finished run DBs read-only (two: compared round by round)."""
    opened = []
    if review:
        # Exports may be gzipped (.db.gz): review a decompressed temporary copy, removed
        # when the app ends (ssd_tui.export.open_export).
        from ssd_tui.export import open_export

        opened = [open_export(Path(p)) for p in review]
        review = [s.path for s in opened]
    try:
        SSDApp(
            Path(runs_dir),
            open_db=open_db,
            review=review,
            start_config=start_config,
            open_sweep=open_sweep,
        ).run()
    finally:
        for store in opened:
            store.close()
