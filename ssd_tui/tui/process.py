"""The app's engine: starting and signalling `ssd-tui run` for one run (no textual).

The app never runs engine code in its own process: it starts the engine through the
runner (`runs/runner.py`: the command line, the lock, the signals) in its own session with
stdout/stderr going to RUN_DIR/engine.log, and then only reads the run DB. So an engine
crash (or kill -9) can never freeze or kill the UI, and quitting the app leaves a running
engine running (open the run again to follow it).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ssd_tui.runs import runner

ENGINE_LOG = "engine.log"


class EngineProcess:
    """One engine run started by the app (its thin wrapper over the runner)."""

    def __init__(self, run_dir: Path, db_path: Path):
        self.run_dir = Path(run_dir)
        self.db_path = Path(db_path)
        self.proc: subprocess.Popen | None = None
        self.command: list[str] = []
        self.started_at: float | None = None  # time.time() when the app started it

    @property
    def log_path(self) -> Path:
        return self.run_dir / ENGINE_LOG

    def start(
        self,
        config: Path,
        rounds: int | None = None,
        stages: int | None = None,
        branch: tuple[Path, int] | None = None,
    ) -> int:
        """Start the engine; return its pid. Raises OSError if it cannot be started.
        ``branch``: (the parent's run folder, its round) for a branch's first start."""
        # Absolute: the engine runs with the run folder as its current directory.
        self.command = runner.engine_command(
            Path(config).resolve(),
            rounds=rounds,
            stages=stages,
            branch_from=branch[0].resolve() if branch else None,
            branch_round=branch[1] if branch else None,
        )
        self.started_at = time.time()
        self.proc = runner.start_engine(self.command, self.run_dir, self.log_path)
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status of the engine the app started, once it has ended (reaps it)."""
        return None if self.proc is None else self.proc.poll()

    @property
    def ours_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int | None:
        """The live engine's pid: ours, or one started elsewhere (headless) on this run."""
        if self.ours_running:
            return self.proc.pid  # type: ignore[union-attr]
        return runner.engine_pid(self.db_path)

    def since(self) -> float | None:
        """When the live engine started: ours from our clock, one started elsewhere from
        its lock file. None when no engine runs."""
        if self.ours_running:
            return self.started_at
        return runner.engine_started_at(self.db_path)

    def pause(self) -> bool:
        """Finish the current stage, then stop."""
        return runner.pause_engine(self.pid())

    def stop(self) -> bool:
        """Stop between batches; the stage is resumable."""
        return runner.stop_engine(self.pid())

    def log_tail(self, lines: int = 12) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if ln.strip()][-lines:]
