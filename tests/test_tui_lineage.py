"""The app and lineage (docs/rounds.md): branches drawn as a tree on the start screen, a
dashboard naming its parent, its branches and a [control] stop, and `B` starting a branch
from a finished round."""

from __future__ import annotations

import pytest
import test_tui_support as support
from fixtures.synthetic import build_run
from test_tui_support import SIZE, make_app, screen_name, text_of, until

from ssd_tui.config import load_config
from ssd_tui.store.run_store import RunStore
from ssd_tui.tui.process import EngineProcess

pytestmark = pytest.mark.anyio
ws, template_run, anyio_backend = support.ws, support.template_run, support.anyio_backend

STOP = "round 1: 1 round(s) without a pass@1 gain beyond one standard error over round 0"


def _family(ws):
    """demo-run is the parent; a-branch (listed first by name) its branch from round 2,
    which [control] stopped after its round 1."""
    runs = ws / "runs"
    build_run(runs / "a-branch", name="a-branch", rounds_done=1, running_round=False)
    parent = RunStore.open(runs / "demo-run" / "run.db")
    parent.add_meta({"run_uid": "uid-parent"})
    parent.close()
    child = RunStore.open(runs / "a-branch" / "run.db")
    child.add_meta(
        {
            "run_uid": "uid-child",
            "parent_run": str((runs / "demo-run").resolve()),
            "parent_run_uid": "uid-parent",
            "parent_name": "demo-run",
            "parent_round": "2",
            "parent_adapter_sha256": "ab" * 32,
            "parent_model": "/models/tiny-coder",
        }
    )
    child.add_decision(1, "stop", "stop_after_no_gain", None, STOP, {"best_round": 0})
    child.close()


async def test_the_runs_list_draws_branches_under_their_parent(ws):
    _family(ws)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.screen.runs) == 3, what="runs listed")
        names = [r.name for r in app.screen.runs]
        assert names == ["demo-run", "a-branch", "other-run"]  # the branch under its parent
        table = app.screen.query_one("#runs")
        cells = [str(table.get_row_at(i)[0]) for i in range(3)]
        assert cells[1] == "└ a-branch ⑂r2" and cells[0] == "demo-run"
        assert str(table.get_row_at(1)[5]) == "stopped"


@pytest.mark.parametrize(
    ("run", "says"),
    [
        ("a-branch", ["branch of demo-run at its round 2", f"stopped: {STOP}"]),
        ("demo-run", ["branches: a-branch (from round 2)"]),
        ("other-run", []),  # nothing to say: no line
    ],
)
async def test_a_dashboard_names_its_parent_its_branches_and_a_stop(ws, run, says):
    _family(ws)
    app = make_app(ws, open_db=ws / "runs" / run / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")
        await until(pilot, lambda: app.screen.snapshot is not None, what="snapshot")
        line = app.screen.query_one("#lineage")
        if says:
            await until(pilot, lambda: says[0] in text_of(line), what="the lineage line")
            assert all(s in text_of(line) for s in says) and line.display
        else:
            await pilot.pause(0.5)
            assert not line.display


async def test_b_branches_from_the_highlighted_finished_round(ws, monkeypatch):
    started = []

    def start(self, config, rounds=None, stages=None, branch=None):
        started.append((self.run_dir, config, branch))
        return 4242

    monkeypatch.setattr(EngineProcess, "start", start)
    parent = (ws / "runs" / "demo-run").resolve()
    app = make_app(ws, open_db=parent / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")
        await until(pilot, lambda: app.screen.snapshot is not None, what="snapshot")
        table = app.screen.query_one("#rounds")
        table.move_cursor(row=3)  # round 3: still running, no branch from it
        await pilot.press("B")
        await pilot.pause(0.2)
        assert screen_name(app) == "DashboardScreen" and not started
        table.move_cursor(row=2)
        await pilot.press("B")
        await until(pilot, lambda: screen_name(app) == "BranchPrompt", what="the prompt")
        assert app.screen.query_one("#branch-name").value == "demo-run-r2"
        await pilot.press("enter")
        await until(pilot, lambda: bool(started), what="the branch's engine")
        await until(
            pilot,
            lambda: (
                screen_name(app) == "DashboardScreen"
                and app.screen.ref.run_dir.name == "demo-run-r2"
            ),
            what="the branch's dashboard",
        )
    run_dir, config, branch = started[0]
    assert branch == (parent, 2) and run_dir == config.parent == parent.parent / "demo-run-r2"
    cfg = load_config(config)
    assert (cfg.run.name, cfg.run_dir) == ("demo-run-r2", run_dir)
    assert cfg.sampling == load_config(parent / "config.toml").sampling
