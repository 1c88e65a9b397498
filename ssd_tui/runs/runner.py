"""Starting, locking, stepping and signalling runs: the one place the CLI, a sweep and the
app launch an engine.

An engine is `python -m ssd_tui run CONFIG [--rounds N] [--stages N] [--threads N]
[--sandbox MODE]` (`engine_command`). One engine per run: it holds an exclusive flock on
RUN_DIR/run.db.lock with its pid written in it (`RunLock`); readers ask `engine_pid`. The
kernel drops the flock when the engine dies, even by kill -9, so a stale pid never counts.

Signals (the engine's contract, see `pipeline.install_signal_handlers`): SIGINT stops
between batches (the stage is 'stopped' and resumes when rerun); SIGUSR1 finishes the
current stage, then stops.

No pipeline and no engine code here: the app imports this module, and the app never runs
engine code in its own process.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import ssd_tui
from ssd_tui.config import ISOLATION_ENV, ISOLATION_POLICIES, RunConfig, config_for_run_folder
from ssd_tui.errors import SSDError
from ssd_tui.store.run_store import RunStore

#: An engine that runs each stage in a process of its own (vLLM on a GPU) holds the run's
#: lock for all of them and sets this to its pid in their environment: a stage process whose
#: parent holds the lock must not try to take it again.
LOCK_HELD_ENV = "SSD_TUI_LOCK_HELD_BY"


# ---- the lock and the pid of the engine holding it -------------------------------------------
def lock_path(db_path: Path) -> Path:
    """The run's lock file, beside its database (RUN_DIR/run.db.lock)."""
    return db_path.with_name(db_path.name + ".lock")


class RunLock:
    """One engine per run: an exclusive flock on RUN_DIR/run.db.lock holding the engine's pid."""

    def __init__(self, db_path: Path):
        self.path = lock_path(db_path)
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SSDError(
                f"another engine (pid {other}) is already running on {self.path.parent}; "
                "stop it first, or open the run read-only"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextmanager
def holding_run(db_path: Path) -> Iterator[bool]:
    """The run's lock for the body of a `with`. Yields True when this is a stage process
    whose parent engine holds the lock (it is not taken again then)."""
    held_by_parent = os.environ.get(LOCK_HELD_ENV) == str(os.getppid())
    lock = RunLock(db_path)
    if not held_by_parent:
        lock.acquire()
    try:
        yield held_by_parent
    finally:
        lock.release()


def engine_pid(db_path: Path) -> int | None:
    """The pid of the engine holding the run's lock, or None when no engine runs (-1 when
    one runs but its pid cannot be read).

    A shared, non-blocking flock that fails means a live engine holds the exclusive one.
    """
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY)
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


def engine_started_at(db_path: Path) -> float | None:
    """When the live engine took the run's lock (its lock file was written then), or None
    when no engine runs."""
    if engine_pid(db_path) is None:
        return None
    try:
        return lock_path(db_path).stat().st_mtime
    except OSError:
        return None


# ---- signals -------------------------------------------------------------------------------
def signal_engine(pid: int | None, sig: int) -> bool:
    """Send ``sig`` to the engine ``pid``; False when there is none or it is gone."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pause_engine(pid: int | None) -> bool:
    """Finish the current stage, then stop (SIGUSR1)."""
    return signal_engine(pid, signal.SIGUSR1)


def stop_engine(pid: int | None) -> bool:
    """Stop between batches (SIGINT); the stage is resumable."""
    return signal_engine(pid, signal.SIGINT)


# ---- the engine's own output ----------------------------------------------------------------------
#: The run folder's log of what an engine's libraries print (and, for an engine the app
#: started, all of its output): RUN_DIR/engine.log.
ENGINE_LOG = "engine.log"


@contextmanager
def engine_output(log_path: Path, verbose: bool = False) -> Iterator[TextIO]:
    """Everything printed in the body of a `with` but our own progress goes to
    ``log_path`` (appended): vLLM's log, Triton's notices, FutureWarnings, what C
    libraries and child processes (vLLM's engine core) write. Yields the stream for our
    own progress and summaries: the terminal.

    Done on the file descriptors, since the engine core is a process of its own and its
    libraries write below Python. With ``verbose``, or when our output already goes to
    that log (an engine the app started), nothing is moved. A run that ends well says
    once where the log is, when anything was written to it.
    """
    if verbose or _writes_to(2, log_path):
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    # Our own stream: the terminal's descriptor, or sys.stderr itself where it is not fd 2.
    terminal = os.fdopen(os.dup(2), "w", buffering=1) if _writes_to(2) else sys.stderr
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(log, f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} engine pid {os.getpid()}\n".encode())
    start = os.lseek(log, 0, os.SEEK_END)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    ok = False
    try:
        yield terminal
        ok = True
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        if terminal is not sys.stderr:
            terminal.close()
    if ok and log_path.stat().st_size > start:
        print(
            f"the engine's own output is in {log_path} (--verbose shows it here)", file=sys.stderr
        )


def _writes_to(fd: int, path: Path | None = None) -> bool:
    """Whether ``sys.stderr`` writes to descriptor ``fd`` (with ``path``: whether ``fd`` is
    that file)."""
    try:
        if path is None:
            return sys.stderr.fileno() == fd
        here, there = os.fstat(fd), os.stat(path)
    except (AttributeError, OSError, ValueError):
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# ---- the engine's command line and process -----------------------------------------------------
def engine_command(
    config: str | Path,
    *,
    rounds: int | None = None,
    stages: int | None = None,
    threads: int = 0,
    sandbox: str | None = None,
    branch_from: str | Path | None = None,
    branch_round: int | None = None,
    round0_from: str | Path | None = None,
    verbose: bool = False,
) -> list[str]:
    """`python -m ssd_tui run CONFIG ...` with this interpreter. CONFIG is passed as given:
    a caller that starts the engine in another folder passes an absolute path.
    ``branch_from``/``branch_round``: a branch (--from RUN_DIR --round K);
    ``round0_from``: a run whose round 0 this one may reuse (a sweep's)."""
    cmd = [sys.executable, "-m", "ssd_tui", "run", str(config)]
    if branch_from is not None:
        cmd += ["--from", str(branch_from), "--round", str(branch_round)]
    if round0_from is not None:
        cmd += ["--round0-from", str(round0_from)]
    if rounds is not None:
        cmd += ["--rounds", str(rounds)]
    if stages is not None:
        cmd += ["--stages", str(stages)]
    if threads:
        cmd += ["--threads", str(threads)]
    if sandbox:
        cmd += ["--sandbox", sandbox]
    if verbose:
        cmd += ["--verbose"]
    return cmd


def _background_env() -> dict[str, str]:
    """This process's environment, plus what an engine writing to a log file needs:
    unbuffered output, no colours, a fixed width, and the package importable even from a
    source checkout that is not installed."""
    root = str(Path(ssd_tui.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TERM": "dumb",
        "COLUMNS": "120",
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
    }


def start_engine(command: list[str], run_dir: Path, log_path: Path) -> subprocess.Popen:
    """An engine in the background: in its own session (whoever started it may quit and
    leave it running), in the run folder, its output appended to ``log_path`` after a line
    naming its command. Raises OSError if it cannot be started."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("\n$ " + " ".join(command) + "\n").encode())
        log.flush()
        return subprocess.Popen(
            command,
            cwd=str(run_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_background_env(),
        )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The engine dies with the process that started it (kill -9 included), so a rerun
    finds no engine still holding the run's lock. Linux only; elsewhere the engine
    finishes its run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_engine(
    command: list[str], *, env: dict[str, str] | None = None, die_with_parent: bool = False
) -> int:
    """An engine in the foreground, its output on ours; returns its exit status."""
    preexec = _die_with_parent if die_with_parent else None
    return subprocess.run(command, env=env, preexec_fn=preexec).returncode


def run_stage_per_process(
    cfg: RunConfig,
    config: str | Path,
    *,
    rounds: int | None,
    stages: int | None,
    threads: int = 0,
    sandbox: str | None = None,
    verbose: bool = False,
    **lineage: Any,
) -> int:
    """Each stage in a fresh process, so that a GPU sampler's memory is free for training
    (vLLM on a GPU; on a CPU one engine serves the whole run: EngineChoice.per_stage_processes).

    The stages are resumable, so this is a loop over `run --stages 1`. The caller holds
    the run's lock for the whole loop; its children are told so (LOCK_HELD_ENV). Returns
    the first failing child's exit status, else 0.
    """
    env = {**os.environ, LOCK_HELD_ENV: str(os.getpid())}
    command = engine_command(
        config,
        rounds=rounds,
        stages=1,
        threads=threads,
        sandbox=sandbox,
        verbose=verbose,
        **lineage,
    )
    last = cfg.run.rounds if rounds is None else rounds
    budget = stages
    while budget is None or budget > 0:
        code = run_engine(command, env=env)
        if code != 0:
            return code
        if run_finished(cfg.db_path, last):
            return 0
        budget = None if budget is None else budget - 1
    return 0


def rounds_to_run(cfg: RunConfig, asked: int | None) -> int:
    """The round a `run` goes to: ``--rounds`` when given; else the config's rounds, or the
    last round the run already holds when it was extended past them (`--rounds 5`, the
    app's `r`). So a rerun shows the whole run, and what it says about it (the verdict)
    speaks of the rounds it shows."""
    if asked is not None:
        return asked
    if not cfg.db_path.exists():
        return cfg.run.rounds
    store = RunStore.open(cfg.db_path, readonly=True)
    try:
        held = [r["round"] for r in store.rounds()] if store.run_info() else []
    finally:
        store.close()
    return max([cfg.run.rounds, *held])


def run_finished(db_path: Path, last: int) -> bool:
    """Whether a run has nothing left to do up to round ``last``: those rounds are done,
    or [control] stopped it (a rerun would stop again: docs/rounds.md)."""
    store = RunStore.open(db_path, readonly=True)
    try:
        done = {r["round"] for r in store.rounds() if r["status"] == "done"}
        stopped = any(d["action"] == "stop" for d in store.decisions())
        return stopped or all(r in done for r in range(last + 1))
    finally:
        store.close()


# ---- the sandbox asked for ---------------------------------------------------------------------
def sandbox_choice(flag: str | None) -> str | None:
    """The sandbox isolation asked for in place of the config's: ``--sandbox MODE``, else
    SSD_TUI_SANDBOX (how the engines the app starts receive it, docs/sandbox.md), else None."""
    mode = flag or os.environ.get(ISOLATION_ENV)
    if mode and mode not in ISOLATION_POLICIES:
        raise SSDError(
            f"{ISOLATION_ENV}={mode!r}: the sandbox isolation must be one of "
            f"{', '.join(ISOLATION_POLICIES)}"
        )
    return mode or None


def with_sandbox(cfg: RunConfig, mode: str | None) -> RunConfig:
    """``cfg`` with ``[sandbox] isolation = mode`` (unchanged for None). The run DB records
    it: the stored config and, per stage, the mode that ran."""
    if not mode:
        return cfg
    return replace(cfg, sandbox=replace(cfg.sandbox, isolation=mode))


# ---- the run folder ---------------------------------------------------------------------------
@contextmanager
def new_run_folder(run_dir: Path) -> Iterator[None]:
    """The run folder (and any folder above it that is missing) for the body of a `with`
    that starts or resumes a run. When the body ends before a run started in it (refused by
    its checks, interrupted), what this made is removed again: a refused run leaves
    nothing behind. A folder that was there before is never removed."""
    run_dir = Path(run_dir).absolute()
    made = run_dir
    while not made.parent.exists():
        made = made.parent
    made = None if run_dir.exists() else made
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        if made is not None and not _run_started(run_dir / "run.db"):
            shutil.rmtree(made, ignore_errors=True)


def _run_started(db_path: Path) -> bool:
    """Whether a run started in this database (its run row is written once its checks
    passed). A database that cannot be read counts as started: it is never removed."""
    if not db_path.exists():
        return False
    try:
        store = RunStore.open(db_path, readonly=True)
    except SSDError:
        return db_path.stat().st_size > 0
    try:
        return store.run_info() is not None
    except Exception:  # noqa: BLE001 - e.g. an empty database: no tables, no run
        return False
    finally:
        store.close()


def save_run_config(cfg: RunConfig, config: str | Path, text: str) -> Path:
    """Keep the run's config in its folder (RUN_DIR/config.toml, what the app and a later
    `ssd-tui run RUN_DIR/config.toml` use), rewritten so that it works from there
    (`config_for_run_folder`). A copy already there is kept (it may hold a changed
    `rounds`), unless it is a verbatim copy of ``config`` made before copies were rewritten,
    whose relative paths name nothing from the run folder."""
    saved = cfg.run_dir / "config.toml"
    if saved.exists():
        if saved.resolve() == Path(config).resolve() or cfg.base_dir == cfg.run_dir:
            return saved  # the config is the run folder's own: it means what it says
        if saved.read_text(encoding="utf-8") != text:
            return saved
    tmp = saved.with_name(".config.toml.tmp")
    tmp.write_text(config_for_run_folder(text, cfg), encoding="utf-8")
    os.replace(tmp, saved)
    return saved


def set_aside(run_dir: Path) -> Path | None:
    """Rename a run folder to ``<name>.<date-time>`` so a new run can start in its place.

    Nothing is deleted. Refused while an engine is running on it. Returns the new path,
    or None when there was nothing to move.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    pid = engine_pid(run_dir / "run.db")
    if pid is not None:
        raise SSDError(f"an engine (pid {pid}) is running on {run_dir}; stop it first")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}")
    run_dir.rename(target)
    _rename_run(target)
    return target


def _rename_run(run_dir: Path) -> None:
    """Give a set-aside run its folder's name in its DB: the app lists runs by that name,
    and two runs both called `demo` could not be told apart."""
    db = run_dir / "run.db"
    if not db.exists():
        return
    try:
        store = RunStore.open(db)
    except SSDError:
        return  # a damaged or newer DB: it keeps its name, and is set aside all the same
    try:
        if store.run_info() is not None:
            store.rename(run_dir.name)
    finally:
        store.close()
