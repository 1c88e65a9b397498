"""The runner: the engine's command line, the run lock and its pid, the stage loop, set_aside.

Nothing is trained here. The engines are stand-ins (a Python one-liner holding the lock,
a recorded call), except in the stage loop's own test: round 0 with the fake engine
(fixtures/fake_engine.py), one `ssd-tui run --stages 1` process after another.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures.fake_run import engine_command as fake_engine_command
from runkit import fake_project

from ssd_tui.config import ISOLATION_ENV, ISOLATION_POLICIES, load_config
from ssd_tui.errors import SSDError
from ssd_tui.runs import runner

ROOT = Path(__file__).resolve().parent.parent

# Takes the run's lock through the runner, says so, and holds it until stdin closes.
HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from ssd_tui.runs.runner import RunLock\n"
    "RunLock(Path(sys.argv[1])).acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def _holder(db: Path) -> subprocess.Popen:
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_engine_command_line():
    base = [sys.executable, "-m", "ssd_tui", "run", "cfg.toml"]
    assert runner.engine_command("cfg.toml") == base
    assert runner.engine_command(Path("cfg.toml"), rounds=0, stages=1) == base + [
        "--rounds",
        "0",
        "--stages",
        "1",
    ]
    full = runner.engine_command("cfg.toml", rounds=3, stages=2, threads=4, sandbox="auto")
    assert full == base + ["--rounds", "3", "--stages", "2", "--threads", "4", "--sandbox", "auto"]
    # 0 threads and no sandbox are the engine's defaults: not spelled out
    assert runner.engine_command("cfg.toml", threads=0, sandbox=None) == base


def test_the_command_line_parses_as_the_cli_reads_it():
    from ssd_tui import cli

    cmd = runner.engine_command("c.toml", rounds=3, stages=1, threads=2, sandbox="userns")
    args = cli.build_parser().parse_args(cmd[3:])
    assert (args.func, args.config, args.rounds, args.stages, args.threads, args.sandbox) == (
        cli.cmd_run,
        "c.toml",
        3,
        1,
        2,
        "userns",
    )


def test_the_lock_refuses_a_second_engine_and_names_the_first(tmp_path):
    db = tmp_path / "run" / "run.db"
    assert runner.engine_pid(db) is None  # no lock file at all
    holder = _holder(db)
    try:
        assert runner.engine_pid(db) == holder.pid
        assert runner.engine_started_at(db) == pytest.approx(time.time(), abs=60)
        with pytest.raises(SSDError, match=f"another engine \\(pid {holder.pid}\\)"):
            runner.RunLock(db).acquire()
    finally:
        holder.kill()  # kill -9: the kernel drops the flock, the stale pid must not count
        holder.wait()
    assert runner.engine_pid(db) is None and runner.engine_started_at(db) is None
    lock = runner.RunLock(db)
    lock.acquire()
    try:
        assert runner.engine_pid(db) == os.getpid()
    finally:
        lock.release()
    assert runner.engine_pid(db) is None


def test_a_stage_process_runs_under_its_parents_lock(tmp_path, monkeypatch):
    db = tmp_path / "run.db"
    monkeypatch.setenv(runner.LOCK_HELD_ENV, str(os.getppid()))
    with runner.holding_run(db) as held_by_parent:
        assert held_by_parent and runner.engine_pid(db) is None
    monkeypatch.setenv(runner.LOCK_HELD_ENV, "1")  # someone else's pid: not our parent
    with runner.holding_run(db) as held_by_parent:
        assert not held_by_parent and runner.engine_pid(db) == os.getpid()
    assert runner.engine_pid(db) is None


def test_the_stage_loop_runs_one_stage_per_process_until_the_rounds_are_done(tmp_path, monkeypatch):
    calls: list[tuple[list[str], dict[str, str]]] = []
    done = iter([1, 2, 3])  # rounds done after each child: 0, then 1, then 2 (the last)
    monkeypatch.setattr(runner, "run_engine", lambda cmd, env=None: calls.append((cmd, env)) or 0)
    monkeypatch.setattr(runner, "run_finished", lambda db, last: next(done) >= last + 1)
    cfg = SimpleNamespace(run=SimpleNamespace(rounds=2), db_path=tmp_path / "run.db")
    assert (
        runner.run_stage_per_process(cfg, "c.toml", rounds=None, stages=None, sandbox="auto") == 0
    )
    assert len(calls) == 3
    cmd, env = calls[0]
    assert cmd == runner.engine_command("c.toml", stages=1, sandbox="auto")
    assert env[runner.LOCK_HELD_ENV] == str(os.getpid())

    calls.clear()
    monkeypatch.setattr(runner, "run_finished", lambda db, last: False)
    assert runner.run_stage_per_process(cfg, "c.toml", rounds=5, stages=2, threads=3) == 0
    assert [c for c, _ in calls] == [
        runner.engine_command("c.toml", rounds=5, stages=1, threads=3)
    ] * 2

    monkeypatch.setattr(runner, "run_engine", lambda cmd, env=None: 130)  # a child stopped
    assert runner.run_stage_per_process(cfg, "c.toml", rounds=None, stages=None) == 130


def test_start_engine_runs_in_the_run_folder_and_logs(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "run" / "engine.log"
    cmd = [sys.executable, "-c", "import os; print(os.getcwd())"]
    proc = runner.start_engine(cmd, run_dir, log)
    assert proc.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    assert lines[-2] == "$ " + " ".join(cmd) and lines[-1] == str(run_dir)


def test_signals_reach_a_live_engine_only():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert runner.stop_engine(sleeper.pid)
        assert sleeper.wait(timeout=30) == -signal.SIGINT
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not runner.pause_engine(sleeper.pid)  # gone (and reaped)
    assert not runner.stop_engine(None) and not runner.pause_engine(-1)


def test_the_sandbox_choice_is_passed_not_put_in_our_environment(monkeypatch):
    from ssd_tui import cli

    assert cli.SANDBOX_CHOICES == ISOLATION_POLICIES  # the parser's copy of the list
    monkeypatch.delenv(ISOLATION_ENV, raising=False)
    assert runner.sandbox_choice(None) is None
    assert runner.sandbox_choice("auto") == "auto"
    assert ISOLATION_ENV not in os.environ
    monkeypatch.setenv(ISOLATION_ENV, "userns")  # how the app's engines receive it
    assert runner.sandbox_choice(None) == "userns" and runner.sandbox_choice("none") == "none"
    monkeypatch.setenv(ISOLATION_ENV, "loose")
    with pytest.raises(SSDError, match="SSD_TUI_SANDBOX='loose'"):
        runner.sandbox_choice(None)


def test_set_aside_names_the_folder_by_date_and_never_overwrites(tmp_path, monkeypatch):
    assert runner.set_aside(tmp_path / "demo") is None  # nothing to move
    monkeypatch.setattr(runner.time, "strftime", lambda fmt: "20261207-120000")
    names = []
    for _ in range(3):
        (tmp_path / "demo").mkdir()
        (tmp_path / "demo" / "keep.txt").write_text("x")
        moved = runner.set_aside(tmp_path / "demo")
        assert moved is not None and (moved / "keep.txt").read_text() == "x"
        names.append(moved.name)
    assert names == ["demo.20261207-120000", "demo.20261207-120000-2", "demo.20261207-120000-3"]
    assert not (tmp_path / "demo").exists()


def test_set_aside_is_refused_while_an_engine_runs(tmp_path):
    run_dir = tmp_path / "demo"
    lock = runner.RunLock(run_dir / "run.db")
    lock.acquire()
    try:
        with pytest.raises(SSDError, match=f"an engine \\(pid {os.getpid()}\\) is running"):
            runner.set_aside(run_dir)
    finally:
        lock.release()
    assert run_dir.exists()


def test_the_runner_loads_no_engine_code():
    """The app imports the runner, and the app never runs engine code in its own process."""
    code = (  # engine.base is the config's vocabulary (dataclasses, no torch): allowed
        "import sys, ssd_tui.runs.runner;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'textual')"
        " or m.startswith(('ssd_tui.runs.pipeline', 'ssd_tui.engine.', 'ssd_tui.cli'))"
        " and m != 'ssd_tui.engine.base');"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # dead, waiting for whoever adopted it to reap it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_engine_run_by_a_sweep_dies_with_it(tmp_path):
    """kill -9 of the sweep takes its engine down, so no engine is left holding a run."""
    sweep = (
        "import sys\n"
        "from ssd_tui.runs import runner\n"
        "engine = 'import os, time; print(os.getpid(), flush=True); time.sleep(60)'\n"
        "runner.run_engine([sys.executable, '-c', engine], die_with_parent=True)\n"
    )
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    parent = subprocess.Popen(
        [sys.executable, "-c", sweep], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        engine = int(parent.stdout.readline())
        assert not _gone(engine)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 30
    while not _gone(engine) and time.time() < deadline:
        time.sleep(0.05)
    assert _gone(engine)


def test_stage_processes_run_under_the_lock_their_parent_holds(
    tmp_path, fake_model_dir, monkeypatch
):
    """The stage loop for real (vLLM on a GPU uses it): each child, `ssd-tui run --stages 1`
    with the fake engine, runs one stage without taking the lock its parent holds, until
    the last round is done."""
    monkeypatch.setattr(runner, "engine_command", fake_engine_command)
    config = fake_project(tmp_path, fake_model_dir, rounds=0)
    cfg = load_config(config)
    with runner.holding_run(cfg.db_path) as held_by_parent:
        assert not held_by_parent
        assert runner.run_stage_per_process(cfg, config, rounds=None, stages=None) == 0
    with sqlite3.connect(cfg.db_path) as c:
        stages = c.execute("SELECT round, stage, status FROM stages ORDER BY position").fetchall()
    assert stages == [(0, "evaluate", "done"), (0, "analyse", "done")]
