"""One stage, stepped from the app: `s` starts `python -m ssd_tui run CONFIG --stages 1` as a
separate process on a tiny random model (the engine tier; the fake engine in the fast tier);
the dashboard follows the run DB it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_tui_support as support
from fixtures.fake_run import engine_command as fake_engine_command
from test_tui_support import SIZE, make_app, screen_name, until

from ssd_tui.runs import runner

ws, template_run, anyio_backend = support.ws, support.template_run, support.anyio_backend

pytestmark = pytest.mark.anyio

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


def _first_lines(src: Path, n: int, dst: Path) -> Path:
    lines = src.read_text().splitlines()[:n]
    dst.write_text("\n".join(lines) + "\n")
    return dst


def _write_run(run_dir: Path, model: Path) -> Path:
    run_dir.mkdir(parents=True)
    if (DEMO / "eval.jsonl").exists():
        bench = _first_lines(DEMO / "eval.jsonl", 2, run_dir / "bench.jsonl")
        train = _first_lines(DEMO / "train_prompts.jsonl", 2, run_dir / "train.jsonl")
    else:  # a self-contained fallback in our JSONL format
        p = {
            "id": "add",
            "prompt": 'def add(a, b):\n    """Return a + b."""\n',
            "entry_point": "add",
            "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        }
        bench = run_dir / "bench.jsonl"
        bench.write_text(json.dumps(p) + "\n")
        train = run_dir / "train.jsonl"
        train.write_text(json.dumps({**p, "id": "t1", "split": "train"}) + "\n")
    cfg = run_dir / "config.toml"
    cfg.write_text(
        f"""[run]
name = "step"
dir = "."
rounds = 1
threads = 1

[model]
path = "{model}"

[data]
train_prompts = "{train.name}"
benchmark = "{bench.name}"

[sampling]
max_new_tokens = 8
batch_size = 4

[eval]
samples_per_problem = 2
k = [1, 2]
max_new_tokens = 8
batch_size = 4
timeout_s = 5.0
workers = 2
"""
    )
    return cfg


# The app's side (the command it starts, following the DB the engine writes, the end of the
# process) is the same whatever the engine computes: the fast tier starts `ssd-tui run` with
# the fake engine (fake_run.py), the engine tier the real one.
@pytest.mark.parametrize("engine", ["fake", pytest.param("real", marks=pytest.mark.engine)])
async def test_step_one_stage_through_the_engine_process(ws, tiny_model_dir, monkeypatch, engine):
    if engine == "fake":
        monkeypatch.setattr(runner, "engine_command", fake_engine_command)
    run_dir = ws / "runs" / "step"
    _write_run(run_dir, tiny_model_dir)
    app = make_app(ws, open_db=run_dir / "run.db", poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await pilot.pause(0.5)
        assert dash.snapshot is None  # not started: no run.db yet
        assert dash.check_action("next_stage", ()) is True
        await pilot.press("s")
        engine = dash.engine
        assert (
            "--stages" in engine.command
            and engine.command[engine.command.index("--stages") + 1] == "1"
        )

        def finished() -> bool:
            return any(
                (n.title or "").startswith("Engine") and "finished" in n.message
                for n in app._notifications
            )

        failed = lambda: any("failed" in (n.title or "") for n in app._notifications)  # noqa: E731
        await until(pilot, lambda: finished() or failed(), timeout=240, what="the engine to exit")
        log = (run_dir / "engine.log").read_text()
        assert not failed(), log[-3000:]
        # The dashboard followed the DB the engine wrote: round 0's first stage is done,
        # the next one waits (one stage only), and round 0's pass@1 is on the curve.
        await until(
            pilot, lambda: dash.snapshot is not None and dash.snapshot.rounds, what="snapshot"
        )
        table = dash.query_one("#rounds")
        await until(
            pilot, lambda: str(table.get_cell("0", "status")) == "paused", what="round 0 paused"
        )
        from ssd_tui.store.run_store import RunStore

        store = RunStore.open(run_dir / "run.db", readonly=True)
        stages = {s["stage"]: s["status"] for s in store.stages(0)}
        n_eval = store.count_samples(0, "eval")
        store.close()
        assert stages["evaluate"] == "done" and stages["analyse"] == "pending", stages
        assert n_eval == 4  # 2 problems x 2 samples
        await until(
            pilot, lambda: len(dash.query_one("#curve").points("pass@1")) == 1, what="curve"
        )
        assert dash.engine_pid is None and dash.check_action("next_stage", ()) is True


# The engine tier: two real engine processes (~9 s on 2 cores). The fast tier starts an
# engine from the app above, and tests the stop itself (Ctrl-C between batches) on the fake.
@pytest.mark.engine
async def test_dashboard_follows_a_second_engine_that_is_stopped(ws, tiny_model_dir):
    """s (one stage), s (the next), x (stop it): the dashboard shows the
    stopped stage and every event the engines wrote; the start screen lists the run."""
    from ssd_tui.store.run_store import RunStore

    run_dir = ws / "runs" / "step"
    cfg = _write_run(run_dir, tiny_model_dir)
    text = cfg.read_text().replace("k = [1, 2]", "k = [1, 2]\nbaseline_temperatures = [0.4]")
    cfg.write_text(text)
    db = run_dir / "run.db"
    app = make_app(ws, poll_interval=0.2, clock=__import__("time").time)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "StartScreen")
        await until(pilot, lambda: any(r.name == "step" for r in app.screen.runs))
        start = app.screen
        start.query_one("#runs").move_cursor(row=[r.name for r in start.runs].index("step"))
        await pilot.press("enter")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen

        def notes(word: str) -> int:
            return sum(word in n.message for n in app._notifications)

        await pilot.press("s")
        await until(pilot, lambda: notes("engine finished") == 1, timeout=240, what="stage 1")
        await until(pilot, lambda: dash.check_action("next_stage", ()) is True)
        await pilot.press("s")

        def baseline_status() -> str | None:
            if not db.exists():
                return None
            store = RunStore.open(db, readonly=True)
            try:
                row = store.stage(0, "baseline")
                return row["status"] if row else None
            finally:
                store.close()

        await until(pilot, lambda: baseline_status() == "running", timeout=240, what="stage 2")
        await pilot.press("x")
        await until(
            pilot,
            lambda: dash.engine.proc is None and dash.engine_pid is None,
            timeout=240,
            what="the engine to stop",
        )
        assert baseline_status() == "stopped", (run_dir / "engine.log").read_text()[-2000:]
        store = RunStore.open(db, readonly=True)
        n_events = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        store.close()
        table = dash.query_one("#rounds")
        await until(pilot, lambda: str(table.get_cell("0", "status")) == "stopped", what="stopped")
        assert str(table.get_cell("0", "stage")) == "baseline"
        assert dash.query_one("#events").count == n_events
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "StartScreen")
        await until(pilot, lambda: any(r.name == "step" for r in app.screen.runs))
        listed = next(r for r in app.screen.runs if r.name == "step")
        assert listed.state == "idle", listed.error
