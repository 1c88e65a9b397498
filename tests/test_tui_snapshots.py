"""Screenshots of every screen (pytest-textual-snapshot), deterministic.

The synthetic run pins every timestamp and the app's clock (NOW_TS), paths are shown
relative to the workspace (the current directory), the dashboard polls once (a long
poll interval), and each screenshot waits for its data to be on screen.
Update after a deliberate change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
import test_tui_support as support
from test_tui_support import SIZE, fake_engine, make_app, screen_name, until

from ssd_tui.tui.refs import RunRef

ws, template_run = support.ws, support.template_run


def app_for(ws, **kw):
    kw.setdefault("poll_interval", 3600)
    return make_app(ws, **kw)


async def quiet(pilot) -> None:
    """No toasts, no blinking cursors: what remains is the screen itself."""
    from textual.widgets import Input

    await pilot.pause()
    pilot.app.clear_notifications()
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.pause()


async def open_dashboard(pilot):
    app = pilot.app
    await until(pilot, lambda: screen_name(app) == "DashboardScreen")
    await until(pilot, lambda: app.screen.snapshot is not None, what="snapshot")
    await pilot.pause()
    return app.screen


def test_snapshot_start(ws, snap_compare):
    app = app_for(ws)

    async def run_before(pilot):
        await until(pilot, lambda: screen_name(app) == "StartScreen" and len(app.screen.runs) == 2)
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_new_run_form(ws, snap_compare):
    app = app_for(ws)

    async def run_before(pilot):
        await until(pilot, lambda: screen_name(app) == "StartScreen")
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NewRunScreen")
        form = app.screen
        form.query_one("#sampling-top-p").value = "1.5"  # shows the CLI's message
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_dashboard_live(ws, snap_compare):
    run = ws / "runs" / "demo-run"
    app = app_for(ws, open_db=run / "run.db")

    async def run_before(pilot):
        dash = await open_dashboard(pilot)
        await until(pilot, lambda: len(dash.query("StageBar")) == 1, what="progress bar")
        await quiet(pilot)

    with fake_engine(run):
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_rounds_prompt(ws, snap_compare):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("u")
        await until(pilot, lambda: screen_name(app) == "RoundsPrompt")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_dashboard_warnings(ws, snap_compare):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("w")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_samples(ws, snap_compare):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("w", "j")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        view = browser.query_one("#sample")
        table = browser.query_one("#samples")
        await until(pilot, lambda: view.detail is not None, what="sample detail")
        await until(pilot, lambda: table.total == 3 and all(table.row(i) for i in range(3)))
        probs = browser.query_one("#problems")
        await until(pilot, lambda: probs.total == 15 and probs.row(14) is not None)
        await pilot.pause(0.3)  # past the problem list's debounce
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_samples_suspect(ws, snap_compare):
    """! in round 2: its two suspect samples, ⚑ beside their verdicts, the reasons under
    the highlighted one's verdict."""
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        dash = await open_dashboard(pilot)
        dash.action_browse(round=2)
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        table = browser.query_one("#samples")
        view = browser.query_one("#sample")
        await until(pilot, lambda: table.total == 32, what="round 2's samples")
        await pilot.press("exclamation_mark")
        await until(pilot, lambda: table.total == 2 and all(table.row(i) for i in range(2)))
        await pilot.press("down")
        await until(
            pilot,
            lambda: view.detail is not None and view.detail.row["id"] == table.row(1)["id"],
            what="the second suspect's detail",
        )
        probs = browser.query_one("#problems")
        await until(pilot, lambda: probs.total == 15 and probs.row(14) is not None)
        await pilot.pause(0.3)  # past the problem list's debounce
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("mode", ["split", "unified"])
def test_snapshot_diff(ws, snap_compare, mode):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        from ssd_tui.tui.screens.diff import DiffScreen

        app.push_screen(DiffScreen(RunRef(app.screen.ref.db_path), a_id=10, b_id=122))
        await until(pilot, lambda: screen_name(app) == "DiffScreen" and app.screen.b is not None)
        if mode == "unified":
            await pilot.press("s")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_tokens(ws, snap_compare):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        from ssd_tui.tui.screens.tokens import TokenScreen

        app.push_screen(TokenScreen(RunRef(app.screen.ref.db_path), 122))
        await until(pilot, lambda: screen_name(app) == "TokenScreen" and app.screen.rows)
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(ws, snap_compare):
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: screen_name(app) == "HelpScreen")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_review(ws, snap_compare):
    app = app_for(ws, review=[ws / "runs" / "demo-run" / "run.db"])

    async def run_before(pilot):
        await open_dashboard(pilot)
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_compare(ws, snap_compare):
    app = app_for(
        ws, review=[ws / "runs" / "demo-run" / "run.db", ws / "runs" / "other-run" / "run.db"]
    )

    async def run_before(pilot):
        await until(pilot, lambda: screen_name(app) == "CompareScreen")
        await until(pilot, lambda: app.screen.query_one("#cmp-table").row_count == 4)
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


CURVE_SIZE = (150, 42)  # the size the issue-18 curve report was made at


def test_snapshot_curve_one_round(ws, snap_compare):
    """A one-round run: its points are drawn with their values (a line needs two), the
    y-axis fits them, and the legend is in the border, outside the data."""
    from fixtures.synthetic import build_run

    run = build_run(
        ws / "runs" / "one", name="one", rounds_done=0, running_round=False, warnings=False
    )
    app = app_for(ws, open_db=run)

    async def run_before(pilot):
        await open_dashboard(pilot)
        await quiet(pilot)

    assert snap_compare(app, terminal_size=CURVE_SIZE, run_before=run_before)


def test_snapshot_probe_panels(ws, snap_compare):
    """f: the fork/lock probe, one panel per statistic with its own y-axis (entropies in
    nats apart from probabilities; the lock tail mass is not a flat line at 0)."""
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("f")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=CURVE_SIZE, run_before=run_before)


def test_snapshot_curve_with_difficulties_shown(ws, snap_compare):
    """The per-difficulty series switched on in the series list (c): the pass@1 and
    pass@k lines are drawn over their dots."""
    app = app_for(ws, open_db=ws / "runs" / "demo-run" / "run.db")

    async def run_before(pilot):
        await open_dashboard(pilot)
        await pilot.press("c")
        await until(pilot, lambda: screen_name(app) == "SeriesScreen")
        # pass@1, pass@4, easy, medium, hard, baseline: switch the three difficulties on
        await pilot.press("down", "down", "space", "down", "space", "down", "space", "enter")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=CURVE_SIZE, run_before=run_before)
