"""Starting and signalling the engine process (`ssd-tui run`) from the app.

No textual here. The app never runs engine code in its own process: it starts
`python -m ssd_tui run CONFIG [--rounds N] [--stages N]` in its own session with
stdout/stderr going to RUN_DIR/engine.log, and then only reads the run DB. So an
engine crash (or kill -9) can never freeze or kill the UI, and quitting the app
leaves a running engine running (open the run again to follow it).

Signals (the engine CLI's contract): SIGINT stops between batches (stage status
'stopped', resumable by rerunning); SIGUSR1 finishes the current stage, then stops.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENGINE_LOG = "engine.log"


def engine_pid(db_path: Path) -> int | None:
    """The pid of the engine holding RUN_DIR/run.db.lock, or None when no engine runs.

    The engine holds an exclusive flock on the lock file while it runs and writes its
    pid in it; a shared, non-blocking flock that fails therefore means "alive" (a
    crashed engine's lock is released by the kernel, so a stale pid never counts).
    """
    lock = Path(str(db_path) + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def engine_command(config: Path, rounds: int | None = None, stages: int | None = None) -> list[str]:
    # Absolute: the engine runs with the run folder as its current directory.
    cmd = [sys.executable, "-m", "ssd_tui", "run", str(Path(config).resolve())]
    if rounds is not None:
        cmd += ["--rounds", str(rounds)]
    if stages is not None:
        cmd += ["--stages", str(stages)]
    return cmd


def _engine_env() -> dict[str, str]:
    """The app's environment, plus: unbuffered output for the log, no colours, and the
    package importable even from a source checkout that is not installed."""
    import ssd_tui

    root = str(Path(ssd_tui.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TERM": "dumb",
        "COLUMNS": "120",
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
    }


class EngineProcess:
    """One engine run started by the app (a thin wrapper over `subprocess.Popen`)."""

    def __init__(self, run_dir: Path, db_path: Path):
        self.run_dir = Path(run_dir)
        self.db_path = Path(db_path)
        self.proc: subprocess.Popen | None = None
        self.command: list[str] = []
        self.started_at: float | None = None  # time.time() when the app started it

    @property
    def log_path(self) -> Path:
        return self.run_dir / ENGINE_LOG

    def start(self, config: Path, rounds: int | None = None, stages: int | None = None) -> int:
        """Start the engine; return its pid. Raises OSError if it cannot be started."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.command = engine_command(config, rounds, stages)
        self.started_at = time.time()
        with open(self.log_path, "ab") as log:
            log.write(("\n$ " + " ".join(self.command) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                cwd=str(self.run_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_engine_env(),
            )
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
        return engine_pid(self.db_path)

    def since(self) -> float | None:
        """When the live engine started: ours from our clock, one started elsewhere from
        its lock file (written when it took the lock). None when no engine runs."""
        if self.ours_running:
            return self.started_at
        if engine_pid(self.db_path) is None:
            return None
        try:
            return Path(str(self.db_path) + ".lock").stat().st_mtime
        except OSError:
            return None

    def signal(self, sig: int) -> bool:
        pid = self.pid()
        if pid is None or pid <= 0:
            return False
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def pause(self) -> bool:
        """Finish the current stage, then stop (SIGUSR1)."""
        return self.signal(signal.SIGUSR1)

    def stop(self) -> bool:
        """Stop between batches (SIGINT); the stage is resumable."""
        return self.signal(signal.SIGINT)

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
