"""The workbench screens, driven for real (App.run_test + Pilot): a sweep overlaid from the
start screen (and its screenshot), runs picked and overlaid, training curves, notes and
tags, and sample search opening the sample view and the diff."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_tui_support as support
from fixtures.synthetic_sweep import build_sweep
from test_tui_support import (
    SIZE,
    chart_lines,
    has_braille,
    make_app,
    marks_on_ticks,
    screen_name,
    text_of,
    until,
)

from ssd_tui.store.run_store import RunStore

pytestmark = pytest.mark.anyio
ws, template_run, anyio_backend = support.ws, support.template_run, support.anyio_backend


@pytest.fixture
def sweep_ws(ws: Path) -> Path:
    build_sweep(ws / "runs" / "sweep-demo", temperatures=(0.5, 0.8), seeds=2, rounds=3)
    return ws


async def test_sweep_overlay_from_the_start_screen(sweep_ws):
    app = make_app(sweep_ws)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "StartScreen" and app.screen.sweeps)
        assert [p.name for p in app.screen.sweeps] == ["sweep-demo"]
        await pilot.press("enter")  # the sweep is the first row
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        screen = app.screen
        from ssd_tui.tui.widgets.overlay_chart import OverlayChart

        state = screen.query_one(OverlayChart).state
        # the setting's keys as the config names them, section included
        labels = ["sampling.temperature=0.5", "sampling.temperature=0.8"]
        assert [s.label for s in state.series] == labels
        s0 = state.series[0]
        assert s0.n == 2 and [p[0] for p in s0.points] == [0, 1, 2, 3]
        assert s0.points[1][2] is not None and s0.points[1][2] > 0  # a ± sd band
        assert state.baseline == pytest.approx(0.5025)  # T=0.6: 0.5 and 0.505 over the seeds
        legend = text_of(screen.query_one("#ov-legend"))
        assert "temperature=0.5" in legend and "2 seeds" in legend
        # The summary table: the setting's mean ± sd per round, as `ssd-tui sweep` prints it.
        summary = screen.query_one("#ov-summary")
        assert summary.row_count == 2
        assert "±" in str(summary.get_row_at(0)[2])
        # Hide a setting (the highlighted run's), show every run, then jump into a run.
        await pilot.press("space")
        assert screen.query_one(OverlayChart).state.series[0].hidden
        await pilot.press("space", "m")
        state = screen.query_one(OverlayChart).state
        assert not state.series[0].hidden and len(state.extra) == 4 and not state.bands
        plot = screen.query_one("OverlayPlot")
        await until(pilot, lambda: plot.drawn_state == state, what="the redrawn picture")
        await pilot.press("down", "enter")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        assert app.screen.ref.db_path.parent.name == "temperature-0.5_seed-1"


async def test_marked_runs_are_overlaid(sweep_ws):
    app = make_app(sweep_ws)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "StartScreen" and len(app.screen.runs) == 2)
        await pilot.press("down", "space")  # mark demo-run (row 1: after the sweep row)
        assert len(app.screen.marked) == 1
        await pilot.press("c")
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        state = app.screen.query_one("OverlayChart").state
        assert [s.label for s in state.series] == ["demo-run"]
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "StartScreen")
        await pilot.press("up", "space")  # unmark it: nothing marked overlays every run listed
        assert not app.screen.marked
        await pilot.press("c")
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        assert sorted(r.label for r in app.screen.runs) == ["demo-run", "other-run"]


async def test_sweep_opened_directly(sweep_ws):
    """`ssd-tui open SWEEP_DIR`: the overlay alone, its chart built once at its final size
    (the tables' rows are there before the runs are read), a footer that is not rebuilt on a
    focus change that shows the same keys; esc makes the runs list."""
    app = make_app(sweep_ws, poll_interval=3600, open_sweep=sweep_ws / "runs" / "sweep-demo")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        assert [type(s).__name__ for s in app.screen_stack[1:]] == ["OverlayScreen"]
        plot = app.screen.query_one("OverlayPlot")
        await until(pilot, lambda: plot.drawn_state == plot.state, what="the picture")
        await pilot.pause()
        assert plot.builds == 1
        footer = app.screen.query_one("Footer")
        keys = list(footer.query("FooterKey"))
        assert {k.description for k in keys} >= {"Open run", "Show/hide", "Back"}
        await pilot.press("tab")  # the summary table: the same keys
        assert app.screen.focused.id == "ov-summary"
        await pilot.pause()
        assert list(footer.query("FooterKey")) == keys
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "StartScreen" and app.screen.sweeps)
        assert [p.name for p in app.screen.sweeps] == ["sweep-demo"]


def test_snapshot_sweep_overlay(sweep_ws, snap_compare):
    app = make_app(sweep_ws, poll_interval=3600, open_sweep=sweep_ws / "runs" / "sweep-demo")

    async def run_before(pilot):
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        plot = app.screen.query_one("OverlayPlot")  # drawn in a worker: wait for the picture
        await until(pilot, lambda: plot.drawn_state == plot.state and plot.state.series)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_overlay_lines_are_braille_with_a_marker_on_each_measured_round(sweep_ws):
    """At 160x45 the overlay drew a straight line between two measured rounds as a
    staircase of half blocks, nothing marking the measured rounds."""
    app = make_app(sweep_ws, open_sweep=sweep_ws / "runs" / "sweep-demo")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: screen_name(app) == "OverlayScreen" and app.screen.data)
        plot = app.screen.query_one("OverlayPlot")
        await until(pilot, lambda: plot.picture_is_current and plot.state.series, what="picture")
        lines = chart_lines(plot)
        assert has_braille(lines)
        assert not any(ch in line for line in lines for ch in "▀▄▖▗▘▝▚▞")
        # Two settings, rounds 0-3: a ● in every round's column (one where both start at
        # round 0's same pass@1), and 2 a round after.
        marks = marks_on_ticks(lines, "●")
        assert [n for _c, n in marks][1:] == [2, 2, 2] and marks[0][1] >= 1
        assert "─●─ sampling.temperature=0.5" in text_of(app.screen.query_one("#ov-legend"))


async def test_training_curves_from_the_dashboard(sweep_ws):
    db = sweep_ws / "runs" / "sweep-demo" / "temperature-0.5_seed-0" / "run.db"
    app = make_app(sweep_ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await pilot.press("t")
        await until(pilot, lambda: screen_name(app) == "TrainCurvesScreen" and app.screen.train_log)
        from ssd_tui.tui.widgets.train_chart import TrainPlot, global_steps

        plot = app.screen.query_one(TrainPlot)
        assert sorted(plot.steps_log) == [1, 2, 3] and len(plot.steps_log[1]) == 6
        # Rounds one after another on one step axis.
        steps = global_steps(plot.steps_log)
        assert [s for s, _, _ in steps[2]] == list(range(6, 12))
        legend = text_of(app.screen.query_one("#train-legend"))
        assert "round 1 loss  1.067 → " in legend and "learning rate" in legend
        # Braille lines; 18 steps fit their marks apart: one ● on every logged step.
        await pilot.pause()
        lines = chart_lines(plot)
        assert has_braille(lines) and not any("▄" in line or "▀" in line for line in lines)
        assert sum(line.count("●") for line in lines) == 18
        assert "─●─ round 1 loss" in legend
        await pilot.press("right_square_bracket")
        assert plot.shown_round == 1
        assert "round 1" in text_of(app.screen.query_one("#train-head"))


def shown(app, widget) -> bool:
    """The widget is on screen: what the terminal shows at its centre is the widget (or a
    part of it)."""
    region = widget.region
    if not region.area or not app.screen.region.contains_region(region):
        return False
    hit = app.get_widget_at(*region.center)[0]
    return hit is widget or widget in hit.ancestors


@pytest.mark.parametrize("size", [(120, 35), (160, 45), (200, 60)])
async def test_the_note_box_is_shown_labelled_and_on_the_run(ws, size):
    """The note box used to be laid out past the right edge (the round field, unlabelled
    and prefilled with the dashboard's highlighted round 0, took the whole row): typed text
    was invisible and a note meant for the run landed on round 0."""
    db = ws / "runs" / "other-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NotesScreen")
        screen = app.screen
        await pilot.pause()
        note = screen.query_one("#note-text")
        assert shown(app, note) and app.focused is note
        target = screen.query_one("#note-target")
        assert shown(app, target)
        assert (
            screen.target is None and text_of(target.query_one("SelectCurrent #label")) == "the run"
        )
        labels = [text_of(w) for w in screen.query(".note-label")]
        assert labels[:2] == ["note on", "note"]
        await pilot.press(*"a run note")
        assert note.value == "a run note" and shown(app, note)
        await pilot.press("enter")
        status = screen.query_one("#notes-status")
        await until(pilot, lambda: "saved" in text_of(status), what="saved")
        assert text_of(status).strip() == "saved note on the run: a run note"
        table = screen.query_one("#notes-table")
        await until(pilot, lambda: table.row_count == 1, what="listed")
        assert table.get_row_at(table.cursor_row)[2:] == ["run", "a run note"]
    store = RunStore.open(db, readonly=True)
    assert [(n["round"], n["text"]) for n in store.notes()] == [(None, "a run note")]
    store.close()


async def test_notes_and_tags_in_the_app(ws):
    db = ws / "runs" / "other-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NotesScreen")
        screen = app.screen
        target = screen.query_one("#note-target")
        # The target offers every round of the run by name, once they are read.
        await until(pilot, lambda: len(target._options) == 3, what="the rounds")
        await pilot.press("ctrl+o", "enter", "down", "down", "enter")  # the run → round 1
        await until(pilot, lambda: screen.target == 1, what="round 1 chosen")
        assert screen.query_one("#note-text").placeholder == "a note on round 1 (enter saves)"
        await pilot.press("ctrl+n", *"too few steps", "enter")
        await until(pilot, lambda: screen.query_one("#notes-table").row_count == 1, what="note")
        assert "saved note on round 1: too few steps" in text_of(screen.query_one("#notes-status"))
        await pilot.press("ctrl+t", *"good-lr flaky", "enter")
        await until(pilot, lambda: "good-lr" in text_of(screen.query_one("#tags-line")))
        assert "round 1: flaky good-lr" in text_of(screen.query_one("#tags-line"))
        await pilot.press(*"-flaky", "enter")
        await until(pilot, lambda: "flaky" not in text_of(screen.query_one("#tags-line")))
        # An empty note is one line, nothing written.
        await pilot.press("ctrl+n", "space", "enter")
        await until(pilot, lambda: "empty" in text_of(screen.query_one("#notes-status")))
    store = RunStore.open(db, readonly=True)
    notes = store.notes()
    assert [(n["round"], n["text"]) for n in notes] == [(1, "too few steps")]
    assert store.tags(1) == ["good-lr"] and store.tags() == []
    store.close()


async def test_notes_opened_on_a_round_start_on_it(ws):
    """An opener that is about one round (OpenNotes with its round) presets that round,
    kept when the run's rounds are read."""
    from ssd_tui.tui.messages import OpenNotes
    from ssd_tui.tui.refs import RunRef

    db = ws / "runs" / "other-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        app.post_message(OpenNotes(RunRef(db.resolve()), 1))
        await until(pilot, lambda: screen_name(app) == "NotesScreen")
        screen = app.screen
        target = screen.query_one("#note-target")
        await until(pilot, lambda: len(target._options) == 3, what="the rounds")
        assert screen.target == 1
        assert screen.query_one("#note-text").placeholder == "a note on round 1 (enter saves)"


async def test_notes_are_read_only_in_review(ws):
    db = ws / "runs" / "other-run" / "run.db"
    store = RunStore.open(db)
    store.add_note("from the CLI")
    store.close()
    app = make_app(ws, review=[db])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NotesScreen")
        await until(pilot, lambda: app.screen.query_one("#notes-table").row_count == 1)
        assert not app.screen.query("Input")


async def test_search_opens_the_sample_view_and_the_diff(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await pilot.press("slash")
        await until(pilot, lambda: screen_name(app) == "SearchScreen")
        screen = app.screen
        await pilot.press(*"total += 1", "enter")
        await until(pilot, lambda: screen.hits, what="hits")
        status = text_of(screen.query_one("#search-status"))
        store = RunStore.open(db, readonly=True)
        want = store.conn.execute(
            "SELECT COUNT(*) FROM samples WHERE instr(completion, 'total += 1') > 0"
        ).fetchone()[0]
        store.close()
        assert want > 0 and status.startswith(f"{want} sample(s) hold 'total += 1'")
        assert all(h.status in (None, "error") for h in screen.hits)  # synthetic: 'total' errors
        first = screen.hits[0]
        await pilot.press("enter")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        assert first.sample_id in app.screen.filter.sample_ids
        assert "search 'total += 1'" in app.screen.note
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "SearchScreen")
        await pilot.press("d")
        await until(pilot, lambda: screen_name(app) == "DiffScreen")
        assert app.screen.b_id == first.sample_id
        await pilot.press("escape")
        # An FTS5 query with a syntax error: one line, in red, no hits.
        await pilot.press("slash", "ctrl+a", "ctrl+k", *'fts:total AND ("', "enter")
        await until(
            pilot, lambda: "not a valid FTS5 query" in text_of(screen.query_one("#search-status"))
        )
        assert screen.hits == []
