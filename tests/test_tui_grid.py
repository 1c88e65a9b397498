"""The problems × rounds grid and McNemar's column, driven for real with Pilot on the
synthetic demo run (tests/fixtures/synthetic.py)."""

from __future__ import annotations

import pytest
import test_tui_support as support
from test_tui_support import SIZE, make_app, screen_name, text_of, until

from ssd_tui.analysis import flips
from ssd_tui.analysis.behaviour import RECORDER_VERSION
from ssd_tui.store.run_store import RunStore

pytestmark = pytest.mark.anyio
ws, template_run, anyio_backend = support.ws, support.template_run, support.anyio_backend
T_EVAL = 0.8


def _expected(db) -> tuple[dict[int, flips.PassCounts], list[flips.GridRow]]:
    store = RunStore.open(db, readonly=True)
    try:
        by_round = flips.round_pass_counts(store, T_EVAL)
    finally:
        store.close()
    return by_round, flips.grid(by_round)


def _cells(table, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


async def _open_grid(app, pilot):
    await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")
    await until(pilot, lambda: app.screen.snapshot is not None, what="first poll")
    await pilot.press("g")
    await until(pilot, lambda: screen_name(app) == "ProblemGridScreen", what="grid")
    await until(pilot, lambda: app.screen.grid is not None, what="grid loaded")
    return app.screen


async def test_the_grid_shows_each_problems_share_and_flips_and_sorts(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    by_round, rows = _expected(db)
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_grid(app, pilot)
        table = screen.query_one("#grid")
        assert [str(c.label) for c in table.columns.values()] == [
            "problem", "diff", "flips", *[f"r{r}" for r in sorted(by_round)]
        ]  # fmt: skip
        assert table.row_count == len(rows)
        for row in rows:
            cells = _cells(table, row.problem)
            assert cells[1] == (row.difficulty or "")
            for i, rnd in enumerate(sorted(by_round)):
                share = row.shares[rnd]
                mark = {1: "↑", -1: "↓", 0: " "}[row.flip(rnd)]
                assert cells[3 + i] == f"{mark}{share:.2f}", (row.problem, rnd)
        head = text_of(screen.query_one("#grid-head"))
        for a, b in zip(sorted(by_round), sorted(by_round)[1:], strict=False):
            m = flips.compare(a, b, by_round[a], by_round[b])
            assert f"r{a}→r{b} +{m.gained} −{m.lost}" in head

        table.move_cursor(row=1, column=3)
        highlighted = str(table.get_row_at(1)[0])
        await pilot.press("f")  # most flips first
        await pilot.pause()
        # the highlighted problem stays highlighted, wherever it sorts to
        assert str(table.get_row_at(table.cursor_row)[0]) == highlighted
        assert table.cursor_column == 3
        order = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        want = [r.problem for r in sorted(rows, key=lambda r: -r.flips)]
        assert [rows_by(rows)[p].flips for p in order] == [rows_by(rows)[p].flips for p in want]
        assert "sorted by flips" in text_of(screen.query_one("#grid-head"))
        await pilot.press("d")  # easy, medium, hard
        await pilot.pause()
        diffs = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        rank = {"easy": 0, "medium": 1, "hard": 2}
        assert diffs == sorted(diffs, key=rank.__getitem__) and diffs[0] == "easy"


def rows_by(rows: list[flips.GridRow]) -> dict[str, flips.GridRow]:
    return {r.problem: r for r in rows}


async def test_enter_on_a_cell_opens_that_problems_samples_of_that_round(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_grid(app, pilot)
        table = screen.query_one("#grid")
        table.move_cursor(row=2, column=4)  # the third problem, round 1
        problem = str(table.get_row_at(2)[0])
        await pilot.press("enter")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen", what="samples")
        browser = app.screen
        await until(pilot, lambda: browser.filter.problem_id is not None, what="problem filter")
        assert browser.filter.round == 1 and browser.filter.eval_temperature == T_EVAL
        names = {p["id"]: p["name"] for p in browser.problems}
        assert names[browser.filter.problem_id] == problem
        shown = browser.reader.sample_page(browser.filter, 0, 50)
        assert shown and {(r["problem"], r["round"]) for r in shown} == {(problem, 1)}


async def test_b_shows_each_cells_behaviours(ws):
    """Cells show distinct behaviour classes and their entropy where the analysis stored
    classes; '–' where a round was judged without them."""
    db = ws / "runs" / "demo-run" / "run.db"
    store = RunStore.open(db)
    rows = store.samples(1, "eval", T_EVAL)
    store.add_behaviours(
        (r["id"], f"prog{r['sample_idx']}", "rec:a" if r["sample_idx"] < 2 else "rec:b", "", RECORDER_VERSION, 1, 0.0)
        for r in rows
    )  # fmt: skip
    problem = rows[0]["problem"]
    store.close()
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_grid(app, pilot)
        await pilot.press("b")
        await pilot.pause()
        cells = _cells(screen.query_one("#grid"), problem)
        assert cells[3] == "–" and cells[4] == "2 0.69"  # r0: none stored; r1: 2 of 4, ln 2
        assert "behaviours per round" in text_of(screen.query_one("#grid-head"))


async def test_the_rounds_table_has_mcnemars_p_against_any_round(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    by_round, _ = _expected(db)
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")
        table = app.screen.query_one("#rounds")
        await until(pilot, lambda: table.row_count >= 3, what="rounds")
        assert str(table.columns["p"].label) == "p·r0"
        assert _cells(table, "0")[-1] == "ref"
        m = flips.compare(0, 2, by_round[0], by_round[2])
        assert _cells(table, "2")[-1] == (f"{m.p:.3f}".lstrip("0") if m.p < 1 else "1")
        table.move_cursor(row=1)
        await pilot.press("m")  # round 1 is the reference now
        await pilot.pause()
        assert str(table.columns["p"].label) == "p·r1" and _cells(table, "1")[-1] == "ref"
        m = flips.compare(1, 2, by_round[1], by_round[2])
        assert _cells(table, "2")[-1] == (f"{m.p:.3f}".lstrip("0") if m.p < 1 else "1")
