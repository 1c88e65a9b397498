"""The app, driven for real: `App.run_test()` + Pilot on run DBs built with RunStore."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_tui_support as support
from fixtures.synthetic import NOW_TS, build_run
from test_tui_support import (
    SIZE,
    chart_lines,
    fake_engine,
    has_braille,
    make_app,
    marks_on_ticks,
    screen_name,
    text_of,
    until,
)

from ssd_tui.analysis.evidence import evidence_targets
from ssd_tui.analysis.positions import KINDS, classify_positions
from ssd_tui.analysis.round_state import next_round_target
from ssd_tui.config import AnalysisSection, load_config
from ssd_tui.errors import SSDError
from ssd_tui.store.reads import SampleFilter
from ssd_tui.store.run_store import RunStore
from ssd_tui.tui.commands import ScreenCommands
from ssd_tui.tui.new_run_form import build_run_config, check_new_run

pytestmark = pytest.mark.anyio
# The shared fixtures (a workspace with two runs and an example config; the anyio backend).
ws, template_run, anyio_backend = support.ws, support.template_run, support.anyio_backend


# ---- start screen and new-run form ---------------------------------------------------------------
async def test_start_screen_lists_runs(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.screen.runs) == 2, what="runs listed")
        table = app.screen.query_one("#runs")
        assert table.row_count == 2
        demo = next(r for r in app.screen.runs if r.name == "demo-run")
        assert (demo.rounds_done, demo.rounds_planned, demo.model) == (2, 3, "/models/tiny-coder")
        assert demo.best_pass1 == pytest.approx(0.7917, abs=1e-3)
        row = [str(c) for c in table.get_row(str(demo.run_dir))]
        assert row[2] == "2/3" and row[3] == "79.2%" and row[5] == "idle"
        await pilot.press("enter")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")


async def test_empty_runs_folder_says_what_to_do(ws):
    for run in (ws / "runs").iterdir():
        shutil.rmtree(run)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "StartScreen")
        hint = app.screen.query_one("#run-error")
        await until(pilot, lambda: "ssd-tui demo" in text_of(hint), what="the hint")
        assert "create a run from an example config" in text_of(hint)


def test_listing_of_extended_archived_and_starting_runs(ws):
    """A run extended past its plan counts against the extended plan (not "4/3"); a folder
    named apart from its run shows both names; a run.db an engine is still creating is
    "running", not "unreadable"."""
    from ssd_tui.tui.listing import list_runs, read_listing

    build_run(ws / "runs" / "long", name="long", rounds_done=4, running_round=False)
    build_run(ws / "runs" / "demo-run.20260101-120000", rounds_done=1, running_round=False)
    listed = {r.run_dir.name: r for r in list_runs(ws / "runs")}
    assert (listed["long"].rounds_done, listed["long"].rounds_planned) == (4, 4)
    assert listed["demo-run.20260101-120000"].name == "demo-run"

    new = ws / "runs" / "new"
    new.mkdir()
    (new / "run.db").write_bytes(b"")  # the engine has just created the file
    assert read_listing(new).state == "unreadable"
    with fake_engine(new):
        item = read_listing(new)
    assert (item.state, item.error) == ("running", "")
    assert (new / "run.db").read_bytes() == b""


async def test_new_run_form_validates_like_the_cli_and_creates_the_config(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NewRunScreen", what="form")
        form = app.screen
        assert form.query_one("#name").value == "demo"
        assert form.query_one("#model-path").value == "examples/models/tiny"
        assert form.error is None

        # An invalid value: the message is the CLI's, for the file that would be written.
        temp = form.query_one("#sampling-temperature")
        temp.value = "abc"
        await pilot.pause()
        assert form.error is not None
        target = Path("runs") / "demo" / "config.toml"
        target.parent.mkdir()
        target.write_text(form.text)
        with pytest.raises(SSDError) as cli:
            load_config(target)
        shutil.rmtree(target.parent)
        assert form.error == str(cli.value)
        assert "[sampling] temperature must be a number (got 'abc')" in form.error
        assert "-invalid" in temp.classes
        assert str(cli.value) in text_of(form.query_one("#form-error"))
        await pilot.press("ctrl+s")  # refused
        assert screen_name(app) == "NewRunScreen" and not target.exists()

        temp.value = "9"
        await pilot.pause()
        assert "[sampling] temperature must be in (0.0, 5.0] (got 9.0)" in form.error
        temp.value = "1.2"
        form.query_one("#lora-r").value = "4"
        await pilot.pause()
        assert form.error is None
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="dashboard")

    cfg = load_config(target)
    assert cfg.run.name == "demo" and cfg.run.dir == "."
    assert cfg.run_dir == (ws / "runs" / "demo").resolve()
    assert cfg.sampling.temperature == 1.2 and cfg.sampling.top_k == 20 and cfg.lora.r == 4
    assert cfg.model.path == str((ws / "examples" / "models" / "tiny").resolve())
    assert cfg.data.benchmark == str((ws / "examples" / "data" / "bench.jsonl").resolve())
    # The written file means the same from any current directory.
    os.chdir("/")
    assert load_config(ws / target).run_dir == (ws / "runs" / "demo").resolve()


def test_paths_in_a_new_config(tmp_path):
    """Example paths resolve against the example's folder, typed ones against the current
    directory; named problem sets and hub ids stay as they are."""
    from ssd_tui.tui.new_run_form import resolve_path_value as r

    (tmp_path / "m").mkdir()
    assert r("m", tmp_path, "path") == str(tmp_path / "m")
    assert r("../x/model", tmp_path / "ex", "path") == str((tmp_path / "x" / "model").resolve())
    assert r("Qwen/Qwen2.5-Coder-0.5B", tmp_path, "path") == "Qwen/Qwen2.5-Coder-0.5B"
    assert r("humaneval", tmp_path, "benchmark") == "humaneval"
    assert r("leetcode:train:hard", tmp_path, "train_prompts") == "leetcode:train:hard"
    assert r("data/p.jsonl", tmp_path, "benchmark") == str(tmp_path / "data" / "p.jsonl")
    assert r("/abs/model", tmp_path, "path") == "/abs/model"


def test_new_run_name_checks(ws):
    text = build_run_config({}, ws, "x", {}, ws / "runs" / "x" / "config.toml")
    with pytest.raises(SSDError, match="run name"):
        check_new_run(Path("runs"), "bad/name", text)
    with pytest.raises(SSDError, match="already holds a run"):
        check_new_run(Path("runs"), "demo-run", text)
    with pytest.raises(SSDError, match=r"\[model\] path: missing"):
        check_new_run(Path("runs"), "fresh", text)


@pytest.mark.parametrize(
    "example",
    sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml")),
    ids=lambda p: p.name,
)
async def test_every_repo_example_loads_into_the_form(ws, example):
    """Each example in examples/ fills the form and validates (or shows one CLI message)."""
    app = make_app(ws, examples_dir=example.parent)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await until(pilot, lambda: screen_name(app) == "NewRunScreen", what="form")
        app.screen.load_example(example)
        await pilot.pause()
        assert app.screen.error is None or "\n" not in app.screen.error


# ---- dashboard ---------------------------------------------------------------------------------------------
async def test_dashboard_curve_gains_a_point_while_the_app_runs(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        curve = dash.query_one("#curve")
        await until(pilot, lambda: len(curve.points("pass@1")) == 3, what="3 points")
        table = dash.query_one("#rounds")
        assert table.row_count == 4
        assert str(table.get_cell("2", "⚠")) == "⚠ 1"  # the warning badge
        assert str(table.get_cell("3", "status")) == "interrupted"  # no engine holds the lock
        # The engine (another connection) commits round 3's metrics: the poll picks them up.
        store = RunStore.open(db)
        store.set_metrics(3, "eval", 0.8, {"all": {"pass@1": 0.875, "pass@4": 1.0}})
        store.log("round 3: evaluate done", rnd=3, stage="evaluate")
        store.close()
        await until(pilot, lambda: len(curve.points("pass@1")) == 4, what="a 4th point")
        assert curve.points("pass@1")[-1] == (3, 0.875)
        assert str(table.get_cell("3", "pass@1")) == "87.5%"
        log = dash.query_one("#events")
        await until(
            pilot,
            lambda: any("round 3: evaluate done" in str(s.text) for s in log.lines),
            what="new event",
        )


async def test_curve_series_toggles_fitted_axis_and_probe_axes(ws):
    """Difficulty series start hidden (they covered the pass@1
    and pass@k lines), c toggles series, the y-axis fits the data, and f shows the probe
    statistics each on its own axis (nats apart from probabilities)."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=(160, 42)) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        curve = dash.query_one("#curve")
        await until(pilot, lambda: len(curve.points("pass@1")) == 3, what="3 points")
        difficulties = {"pass@1 easy", "pass@1 medium", "pass@1 hard"}
        assert difficulties <= set(curve.series) and curve.hidden == difficulties
        assert "pass@1" in curve.border_subtitle and "3 hidden" in curve.border_subtitle
        # The y-axis fits the pass rates shown (54 % .. 100 %), not 0-100.
        ylim = curve.plt.monitor.ylim[0]
        assert 40 < ylim[0] < 54.2 and 100 <= ylim[1] <= 102

        await pilot.press("c")
        await until(pilot, lambda: screen_name(app) == "SeriesScreen")
        assert app.screen.query_one("#series-list").option_count == 6  # 5 series + baseline
        await pilot.press("down", "down", "space", "enter")  # "pass@1 easy" on
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        assert curve.hidden == difficulties - {"pass@1 easy"}
        # New data keep the user's choice.
        store = RunStore.open(ws / "runs" / "demo-run" / "run.db")
        store.set_metrics(3, "eval", 0.8, {"all": {"pass@1": 0.5}, "easy": {"pass@1": 0.6}})
        store.close()
        await until(pilot, lambda: len(curve.points("pass@1")) == 4, what="a 4th point")
        assert curve.hidden == difficulties - {"pass@1 easy"}

        await pilot.press("f")
        assert curve.view == "probe"
        assert curve.names() == ["fork_entropy", "lock_tail_mass", "kept_mass"]  # no counts
        lock = curve.plt.subplot(1, 2).monitor.ylim[0]
        # The lock tail mass (0.006 .. 0.012) on its own axis: fitted, not 0..1.
        assert 0 <= lock[0] < 0.006 and 0.012 < lock[1] < 0.02
        fork = curve.plt.subplot(1, 1).monitor.ylim[0]
        assert 1.3 < fork[1] < 2.5  # nats
        await pilot.press("f")
        assert curve.view == "pass"


async def test_curve_is_drawn_in_braille_with_a_marker_on_each_measured_round(ws):
    """The lines were staircases of half blocks with nothing marking the measured rounds:
    braille lines (2 x 4 dots a cell), ● on each round's pass@1, ◆ on its pass@k, in the
    column of the round's tick."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        curve = app.screen.query_one("#curve")
        await until(pilot, lambda: len(curve.points("pass@1")) == 3, what="3 rounds")
        await pilot.pause()
        lines = chart_lines(curve)
        assert has_braille(lines)
        assert not any(ch in line for line in lines for ch in "▀▄▖▗▘▝▚▞")  # no half blocks
        for glyph in "●◆":  # pass@1, pass@4: rounds 0, 1, 2, each on its tick
            assert marks_on_ticks(lines, glyph) == [(c, 1) for c, _ in marks_on_ticks(lines, glyph)]
            assert len(marks_on_ticks(lines, glyph)) == 3
        assert "● pass@1" in text_of_markup(curve.border_subtitle)


def test_marks_sit_on_the_braille_line_and_ticks_under_them():
    """plotext rounds a braille dot (2 x 4 a cell) and a one-cell marker or tick (1 x 1)
    differently: scattered markers sat up to a row off the line through them, ticks a
    column beside their points. Each mark replaces a dot of the line itself, in the
    column of its tick."""
    from plotext._figure import _figure_class
    from rich.text import Text

    from ssd_tui.tui.widgets.plot_marks import Mark, Panel, marked

    xs, ys = [0, 1, 2, 3], [0.98604, 0.98561, 0.98431, 0.98387]  # close values: the hard case
    for width, height in ((32, 9), (40, 12), (64, 20)):
        fig = _figure_class()
        fig.plotsize(width, height)
        fig.theme("clear")
        fig.plot(xs, ys, marker="braille")
        fig.xticks(xs)
        fig.xlim(-0.2, 3.2)
        fig.ylim(0.9835, 0.9865)
        panel = Panel(
            (-0.2, 3.2),
            (0.9835, 0.9865),
            [Mark(x, y, "●", "red") for x, y in zip(xs, ys, strict=True)],
            xs,
            fig,
        )
        picture = marked(Text.from_ansi(fig.build()), [panel], fig.build)
        lines, plain = picture.plain.split("\n"), Text.from_ansi(fig.build()).plain.split("\n")
        at = [(r, c) for r, line in enumerate(lines) for c, ch in enumerate(line) if ch == "●"]
        assert len(at) == 4
        assert all(0x2801 <= ord(plain[r][c]) < 0x2900 for r, c in at)  # a dot of the line
        assert sorted(c for _r, c in at) == [c for c, _n in marks_on_ticks(lines, "●")]


def text_of_markup(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


PROBE_8 = {  # what the demo's analyse stage writes (n_fork, n_lock are not charted)
    "fork_entropy": (1.81, 1.72, 1.53),
    "lock_tail_mass": (0.009, 0.0087, 0.0081),
    "lock_top1": (0.9911, 0.9918, 0.9920),
    "kept_mass": (0.986, 0.9856, 0.9843),
    "train_kept_mass": (0.963, 0.966, 0.971),
    "lock_train_kept_mass": (0.9909, 0.9919, 0.9921),
    "fork_train_kept_mass": (0.808, 0.814, 0.839),
    "mean_logprob": (-0.2, -0.19, -0.25),
}


async def test_probe_chart_is_readable_at_160_by_45(ws):
    """8 statistics used to share the chart as 8 panels of 1-2 rows, one y label each, the
    legend cut, and mean_logprob (0 to -0.125) labelled as a probability."""
    db = ws / "runs" / "demo-run" / "run.db"
    store = RunStore.open(db)
    for rnd in range(3):
        store.set_metrics(rnd, "probe", 0.8, {"all": {k: v[rnd] for k, v in PROBE_8.items()}})
    store.close()
    app = make_app(ws, open_db=db)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        curve = app.screen.query_one("#curve")
        await until(pilot, lambda: len(curve.probe.get("mean_logprob", [])) == 3)
        pages: list[str] = []
        for _ in range(4):
            await pilot.press("f")
            await pilot.pause()
            if curve.view == "pass":
                break
            lines = chart_lines(curve)
            text = "\n".join(lines)
            axes = [r for r, line in enumerate(lines) if "└" in line]
            frames = [r for r, line in enumerate(lines) if "┌" in line]
            assert axes and len(axes) == len(frames)
            for top, bottom in zip(frames, axes, strict=True):
                assert bottom - top - 1 >= 5  # data rows a panel
                ticks = [line.count("┤") for line in lines[top + 1 : bottom]]
                assert sum(ticks) >= 3 * lines[top].count("┌")  # y labels, each panel
            assert has_braille(lines) and "●" in text
            legend = text_of_markup(curve.border_subtitle)
            assert len(legend) + 6 <= curve.outer_size.width  # the legend is not cut
            pages.append(text)
        assert curve.view == "pass" and len(pages) >= 2
        shown = "\n".join(pages)
        assert "(p)" not in shown
        assert "log-prob (nats)" in shown  # mean_logprob's y-axis
        for name in PROBE_8:
            assert name in shown  # every statistic on some page, each titled
        # Each panel's unit: in its title where it fits, else on its y-axis label.
        assert "fork_entropy" in shown and "(nats)" in shown and "probability" in shown


async def test_pass_at_k_column_is_empty_when_only_pass_at_1_is_measured(ws):
    # One sample per problem (k = [1], the CPU Qwen example): no duplicate pass@1 column.
    db = ws / "runs" / "demo-run" / "run.db"
    store = RunStore.open(db)
    cfg = json.loads(store.run_info()["config_json"])
    assert cfg["eval"]["k"] == [1, 4]
    cfg["eval"]["k"] = [1]
    with store.conn:
        store.conn.execute("UPDATE runs SET config_json = ?", (json.dumps(cfg),))
    store.close()
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        table = app.screen.query_one("#rounds")
        await until(pilot, lambda: table.row_count == 4, what="4 rounds")
        assert str(table.get_cell("1", "pass@1")).endswith("%")
        assert str(table.columns["pass@k"].label) == "pass@k"
        assert all(str(table.get_cell(str(r), "pass@k")) == "–" for r in range(3))
        series = app.screen.query_one("#curve").series
        assert "pass@1" in series and all(name.startswith("pass@1") for name in series)


async def test_dashboard_progress_rate_and_eta_of_a_running_stage(ws):
    """The rate counts only work the app saw being done: the stage already had 4 of 8
    done when the app first saw it (a resumed stage), so dividing 4 by the time since
    the stage started would be wrong ("240/s · ETA 1s")."""
    run = ws / "runs" / "demo-run"
    now = [NOW_TS]
    with fake_engine(run):
        app = make_app(ws, open_db=run / "run.db", clock=lambda: now[0])
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: screen_name(app) == "DashboardScreen")
            dash = app.screen
            await until(pilot, lambda: dash.engine_pid == 4242, what="engine seen")
            await until(pilot, lambda: len(dash.query("StageBar")) == 1, what="progress bar")
            await pilot.pause()
            rate = text_of(dash.query_one(".stage-rate"))
            assert "4/8" in rate and "/s" not in rate and "ETA" not in rate
            assert dash.query_one("StageBar ProgressBar").percentage == 0.5
            # The engine does 2 more in the next 20 s.
            store = RunStore.open(run / "run.db")
            store.progress(3, "sample", 6, 8)
            store.close()
            now[0] += 20
            await until(pilot, lambda: "6/8" in text_of(dash.query_one(".stage-rate")))
            rate = text_of(dash.query_one(".stage-rate"))
            assert "0.10/s" in rate and "stage ETA 20s" in rate, rate
            assert dash.query_one("StageBar ProgressBar").percentage == 0.75
            assert str(dash.query_one("#rounds").get_cell("3", "status")) == "running"
            # An engine runs: start actions are disabled, pause and stop enabled.
            assert dash.check_action("next_stage", ()) is None
            assert dash.check_action("pause", ()) is True


def test_stage_fraction_never_goes_back_across_temperatures_and_phases():
    """The bar went 53 % → 43 % → 0 % as the baseline restarted its
    done/total for each temperature and for testing after generating."""
    from ssd_tui.store.reads import StageRow

    steps = [("loading model · generating", 0)]  # as the engine writes them, in order
    steps += [(phase, done) for phase in ("generating", "testing") for done in (0, 5, 10)]
    seen = [
        StageRow(
            0, "baseline", "running", done, 10, f"{phase} T=0.{i} ({i}/3)", 1.0, 0.0
        ).fraction()
        for i in (1, 2, 3)
        for phase, done in steps
    ]
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0
    evaluate = [
        StageRow(1, "evaluate", "running", d, 10, phase, 1.0, 0.0).fraction()
        for phase in ("generating", "testing")
        for d in (0, 10)
    ]
    assert evaluate == [0.0, 0.5, 0.5, 1.0]
    assert StageRow(1, "train", "running", 0, 0, "loading model", 1.0, 0.0).fraction() is None


async def test_a_starting_engine_says_so_not_between_stages(ws):
    """ "between stages" showed for seconds while a new engine imported
    its libraries and loaded the model; no stage has started since it did."""
    run = ws / "runs" / "other-run"
    with fake_engine(run):
        app = make_app(ws, open_db=run / "run.db")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: screen_name(app) == "DashboardScreen")
            dash = app.screen
            await until(pilot, lambda: dash.engine_pid == 4242, what="engine seen")
            idle = dash.query_one("#progress .idle")
            await until(pilot, lambda: "engine starting (pid 4242)" in text_of(idle))


async def test_stepping_keys_start_the_engine_with_the_right_targets(ws, monkeypatch):
    """s / r / u map to `ssd-tui run --stages 1`, `--rounds K`, `--rounds K+N-1`
    (K = the first round not done: 3 here)."""
    from ssd_tui.tui.process import EngineProcess

    calls = []

    def fake_start(self, config, rounds=None, stages=None):
        calls.append((Path(config).name, rounds, stages))
        return 99999

    monkeypatch.setattr(EngineProcess, "start", fake_start)
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        for n, key in enumerate(("s", "r"), 1):
            # (the fake engine holds no lock: the next poll sees none, and keys work again)
            await until(pilot, lambda: dash.check_action("next_stage", ()) is True)
            await pilot.press(key)
            await until(pilot, lambda n=n: len(calls) == n)
        await pilot.press("u")
        await until(pilot, lambda: screen_name(app) == "RoundsPrompt")
        # The prompt asks for the last round, as `--rounds N` counts: the plan's 3 by default.
        prompt = app.screen
        assert prompt.query_one("#n-rounds").value == "3"
        await pilot.press("end", "backspace", "2", "enter")  # round 2 is done: refused
        await pilot.pause()
        assert screen_name(app) == "RoundsPrompt"
        assert "a round number ≥ 3" in text_of(prompt.query_one("#n-error"))
        await pilot.press("end", "backspace", "4", "enter")
        await until(pilot, lambda: len(calls) == 3, what="third start")
    assert calls == [("config.toml", 3, 1), ("config.toml", 3, None), ("config.toml", 4, None)]


async def test_engine_keys_wait_for_the_first_read_of_the_run(ws, monkeypatch):
    """CI caught it: `r` pressed before the dashboard's first poll started `--rounds 0` on a
    run whose rounds 0-2 are done (the target came from no rounds at all). Until the run has
    been read the engine keys are disabled; once read, `r` targets round 3."""
    import threading

    from ssd_tui.tui import views
    from ssd_tui.tui.process import EngineProcess

    calls = []
    monkeypatch.setattr(
        EngineProcess, "start", lambda self, c, rounds=None, stages=None: calls.append(rounds) or 9
    )
    release = threading.Event()
    real_snapshot = views.snapshot

    def held_snapshot(self, after, now):
        release.wait(20)  # the first read is slow (a big DB, a busy disk)
        return real_snapshot(self, after, now)

    monkeypatch.setattr(views, "snapshot", held_snapshot)
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        assert dash.check_action("next_round", ()) is None
        await pilot.press("r")
        await pilot.pause(0.3)
        assert calls == []
        release.set()
        await until(pilot, lambda: dash.check_action("next_round", ()) is True, what="r enabled")
        await pilot.press("r")
        await until(pilot, lambda: calls, what="the engine start")
    assert calls == [3]


async def test_demo_tui_starts_the_engine_and_shows_the_verdict(ws, monkeypatch):
    """`ssd-tui demo --tui` (autostart_rounds) starts the engine up to the
    plan's last round on a new run, leaves a run alone whose rounds are done, and the
    dashboard shows the CLI's baseline verdict line."""
    from ssd_tui.analysis.verdict import baseline_verdict
    from ssd_tui.tui.process import EngineProcess

    calls = []

    def fake_start(self, config, rounds=None, stages=None):
        calls.append((Path(config).name, rounds, stages))
        return 99999

    monkeypatch.setattr(EngineProcess, "start", fake_start)
    fresh = ws / "runs" / "fresh"
    fresh.mkdir()
    (fresh / "config.toml").write_text(
        (ws / "examples" / "demo.toml").read_text().replace('"models/', '"../../examples/models/')
    )
    app = make_app(ws, open_db=fresh / "run.db", autostart_rounds=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: calls, what="the engine started")
    assert calls == [("config.toml", 3, None)]

    calls.clear()
    db = ws / "runs" / "demo-run" / "run.db"
    app = make_app(ws, open_db=db, autostart_rounds=2)  # rounds 0..2 are done
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        await pilot.pause(0.3)
        assert calls == []
        store = RunStore.open(db, readonly=True)
        want = baseline_verdict(store, load_config(db.parent / "config.toml"))
        store.close()
        assert want and want.startswith("SSD ")
        # round 3 of the plan's 3 is not done: the verdict so far
        assert text_of(dash.query_one("#verdict")).strip() == f"so far: {want}"


def test_demo_tui_hands_the_plan_to_the_app(monkeypatch, tmp_path):
    """`ssd-tui demo --tui` asks the app to start the demo's engine up to its plan's last
    round (or --rounds). The terminal UI is replaced by a recorder here (it needs a
    terminal); the app's side is tested above. The demo's run folder is a fresh one here:
    a checkout's own runs/demo may hold more rounds than the plan (they would be shown)."""
    from ssd_tui import cli
    from ssd_tui.config import load_config

    demo = tmp_path / "demo.toml"
    text = cli.DEMO_CONFIG.read_text()
    assert 'dir = "../runs/demo"' in text
    demo.write_text(text.replace('dir = "../runs/demo"', f'dir = "{tmp_path / "demo"}"'))
    monkeypatch.setattr(cli, "DEMO_CONFIG", demo)
    calls = []
    monkeypatch.setattr("ssd_tui.tui.app.run_app", lambda **kw: calls.append(kw))
    assert cli.main(["demo", "--tui"]) == 0
    assert cli.main(["demo", "--tui", "--rounds", "5"]) == 0
    plan = load_config(cli.DEMO_CONFIG).run.rounds
    assert [c["autostart_rounds"] for c in calls] == [plan, 5]
    assert calls[0]["open_db"] == load_config(cli.DEMO_CONFIG).db_path


async def test_warning_panel_and_jump_to_samples(ws):
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        await pilot.press("w")
        panel = dash.query_one("#warnings")
        assert dash.query_one("#bottom").active == "tab-warnings"
        assert panel.current["rule"] == "unique_share"
        body = text_of(panel.query_one("#evidence-body"))
        assert "unique_share" in body and "count_vowels" in body
        await pilot.press("j")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen", what="browser")
        browser = app.screen
        ids = tuple(panel.current["evidence"]["sample_ids"])
        assert browser.filter.round == 2 and browser.filter.sample_ids == ids
        table = browser.query_one("#samples")
        await until(pilot, lambda: table.total == 3 and table.current is not None, what="3 samples")
        assert {table.row(i)["problem"] for i in range(3)} == {"count_vowels"}
        assert "warning [unique_share]" in text_of(browser.query_one("#browse-head"))


async def test_tab_keys_switch_tabs_after_the_warnings_table_had_focus(ws):
    """After w, e and l used to do nothing (focus stayed in the warnings
    pane, which made itself active again) until Tab moved the focus."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        tabs = dash.query_one("#bottom")
        for key, tab, focused in (
            ("w", "tab-warnings", "warnings-table"),
            ("e", "tab-events", "events"),
            ("w", "tab-warnings", "warnings-table"),
            ("l", "tab-log", "engine-log"),
            ("e", "tab-events", "events"),
        ):
            await pilot.press(key)
            await pilot.pause()
            assert (tabs.active, app.focused.id) == (tab, focused), key


async def test_jump_without_warnings_says_so(ws):
    """j on a run with no warnings used to do nothing and say nothing."""
    app = make_app(ws, open_db=ws / "runs" / "other-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        assert not app.screen.snapshot.warnings
        await pilot.press("j")
        await until(pilot, lambda: app._notifications, what="a notification")
        (note,) = list(app._notifications)
        assert note.message.startswith("no collapse warnings in this run")
        assert screen_name(app) == "DashboardScreen"


async def test_engine_log_tab_says_why_it_is_empty(ws):
    """A run started from the shell has no RUN_DIR/engine.log: the tab used to be blank."""
    run = ws / "runs" / "demo-run"
    assert not (run / "engine.log").exists()
    app = make_app(ws, open_db=run / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        await pilot.press("l")
        log = app.screen.query_one("#engine-log")
        await until(pilot, lambda: log.lines, what="a line in the Engine log tab")
        text = " ".join(str(s.text) for s in log.lines)
        assert "no engine log (runs/demo-run/engine.log)" in text
        assert "writes to the terminal that started it" in text
        assert "Events tab (e)" in text
        # Once the app's own engine writes the log, the log replaces the hint.
        (run / "engine.log").write_text("$ ssd-tui run config.toml\nround 3: sample\n")
        await until(pilot, lambda: "round 3: sample" in " ".join(str(s.text) for s in log.lines))
        assert "no engine log" not in " ".join(str(s.text) for s in log.lines)


async def test_engine_crash_is_reported_and_the_app_keeps_working(ws):
    """Start the real engine CLI on a config whose model does not exist: it exits with an
    error; the app notifies, shows the log, and stays usable."""
    app = make_app(ws, open_db=ws / "runs" / "other-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        await pilot.press("s")
        engine = dash.engine
        assert engine.command[1:4] == ["-m", "ssd_tui", "run"] and "--stages" in engine.command
        await until(
            pilot,
            lambda: any("Engine failed" in (n.title or "") for n in app._notifications),
            timeout=60,
            what="engine failure notice",
        )
        assert (ws / "runs" / "other-run" / "engine.log").exists()
        assert dash.engine_pid is None and dash.check_action("next_stage", ()) is True
        await pilot.press("b")
        await until(
            pilot, lambda: screen_name(app) == "SampleBrowserScreen", what="still responsive"
        )


# ---- samples, diff, tokens ------------------------------------------------------------------------------------
async def test_diff_between_two_samples(ws):
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        await pilot.press("b")  # round 0 is highlighted
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        table = browser.query_one("#samples")
        await until(pilot, lambda: table.current is not None, what="first sample")
        await until(pilot, lambda: browser.query_one("#sample").detail is not None, what="detail")
        await pilot.press("m", "down")
        await until(
            pilot, lambda: table.current is not None and table.current["id"] != browser.marked["id"]
        )
        a_id, b_id = browser.marked["id"], table.current["id"]
        await pilot.press("d")
        await until(pilot, lambda: screen_name(app) == "DiffScreen", what="diff screen")
        diff = app.screen
        await until(pilot, lambda: diff.a is not None, what="diff loaded")
        assert (diff.a.row["id"], diff.b.row["id"]) == (a_id, b_id)
        view = diff.query_one("#diff")
        assert view.mode == "split" and view.a != view.b
        await pilot.press("s")
        assert view.mode == "unified"
        body = text_of(view.query_one("#diff-body"))
        assert "--- A #" in body and "+++ B #" in body
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: diff.b.row["id"] != b_id, what="next B")


async def test_default_diff_is_against_the_previous_round(ws):
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        app.screen.action_browse(round=2)
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        table = browser.query_one("#samples")
        await until(pilot, lambda: table.current is not None)
        await pilot.press("d")
        await until(pilot, lambda: screen_name(app) == "DiffScreen" and app.screen.a is not None)
        a, b = app.screen.a.row, app.screen.b.row
        assert (a["round"], b["round"]) == (1, 2)
        assert (a["problem"], a["sample_idx"]) == (b["problem"], b["sample_idx"])


async def open_round(app, pilot, rnd: int):
    """The dashboard's sample browser on round `rnd`, its first sample loaded."""
    await until(pilot, lambda: screen_name(app) == "DashboardScreen")
    await until(pilot, lambda: app.screen.snapshot is not None)
    app.screen.action_browse(round=rnd)
    await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
    browser = app.screen
    table = browser.query_one("#samples")
    await until(pilot, lambda: table.current is not None, what="first sample")
    return browser, table


async def test_default_diff_compares_like_with_like(ws):
    """d on round 1's sample at T_eval 0.8 used to open round 0's sample at T 0.6, a
    temperature-only baseline sample (the first of round 0 with the same sample index)."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        browser, table = await open_round(app, pilot, 1)
        await pilot.press("down", "down", "down", "down", "down")  # sample index 1
        await until(pilot, lambda: table.current is not None and table.cursor_row == 5)
        b_row = table.current
        await pilot.press("d")
        await until(pilot, lambda: screen_name(app) == "DiffScreen" and app.screen.a is not None)
        diff = app.screen
        a, b = diff.a.row, diff.b.row
        assert b["id"] == b_row["id"] and (b["round"], b["temperature"]) == (1, 0.8)
        key = ("problem", "sample_idx", "purpose", "temperature")
        assert a["round"] == 0 and [a[k] for k in key] == [b[k] for k in key]
        head = text_of(diff.query_one("#diff-head"))
        assert "same problem, sample index, purpose and T" in head
        # [ ] step B through like samples only: the same problem, purpose and temperature.
        assert {(c["purpose"], c["temperature"]) for c in diff.candidates} == {("eval", 0.8)}


async def test_diff_says_when_there_is_no_like_sample(ws):
    """Round 1's training samples have no counterpart in round 0 (which trains nothing):
    the diff says so rather than compare with an evaluation sample."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        browser, table = await open_round(app, pilot, 1)
        await pilot.press("o", "o")  # training samples only
        await until(pilot, lambda: table.total == 8 and table.current is not None)
        b_id = table.current["id"]
        await pilot.press("d")
        await until(pilot, lambda: screen_name(app) == "DiffScreen" and app.screen.b is not None)
        diff = app.screen
        assert diff.a is None and diff.b.row["id"] == b_id
        head = text_of(diff.query_one("#diff-head"))
        assert "round 0 has no train sample of train_00 #0 at T 1.6" in head
        assert "m marks a sample as A" in head


async def test_sample_list_shows_t_eval_first_and_filters_by_temperature(ws):
    """Round 0's list used to start with the baseline's samples at T 0.6; it starts on the
    run's own T_eval, and T steps through every temperature."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        browser, table = await open_round(app, pilot, 0)
        await until(pilot, lambda: table.total == 24 and table.row(23) is not None)
        assert {table.row(i)["temperature"] for i in range(24)} == {0.8}
        head = text_of(browser.query_one("#browse-head"))
        assert "eval at T 0.8 (T_eval)" in head and "T: other temperatures" in head
        seen = []
        for _ in range(4):
            await pilot.press("T")
            await until(pilot, lambda: table.total is not None and table.current is not None)
            seen.append((browser.filter.eval_temperature, table.total))
        assert seen == [(None, 72), (0.6, 24), (1.0, 24), (0.8, 24)]
        # The T column says where each sample came from.
        assert any(c.label == "T" for c in table.columns)


async def test_sample_filters_and_token_view(ws):
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        app.screen.action_browse(round=1)
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        table = browser.query_one("#samples")
        await until(pilot, lambda: table.total == 32, what="round 1: 24 eval + 8 train")
        # The mouse: a click on the third row moves the cursor there.
        await pilot.click("#samples", offset=(5, 3))
        await until(pilot, lambda: table.cursor_row == 2 and table.current is not None)
        await pilot.press("o")  # eval only
        await until(pilot, lambda: table.total == 24)
        await pilot.press("v")  # passed only
        await until(pilot, lambda: table.total is not None and table.current is not None)
        assert all(table.row(i)["status"] == "passed" for i in range(table.total))
        await pilot.press("right_square_bracket")  # round 2
        await until(pilot, lambda: browser.filter.round == 2 and table.current is not None)
        sid = table.current["id"]
        await pilot.press("t")
        await until(
            pilot, lambda: screen_name(app) == "TokenScreen" and app.screen.rows, what="tokens"
        )
        tok = app.screen
        store = RunStore.open(ws / "runs" / "demo-run" / "run.db", readonly=True)
        stats = store.token_stats(sid)
        store.close()
        assert len(tok.rows) == len(stats["token_ids"])
        entropies = np.array([float(h) for h in stats["entropies"]])
        top1 = np.array([float(pow(2.718281828459045, lp)) for lp in stats["logprobs"]])
        kinds = [KINDS[c] for c in classify_positions(entropies, top1, AnalysisSection())]
        assert [r.kind for r in tok.rows] == kinds
        if "fork" in kinds:
            await pilot.press("f")
            table = tok.query_one("#tok-table")
            await until(pilot, lambda: tok.rows[table.cursor_row].kind == "fork", what="a fork")
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")


async def test_suspect_samples_are_counted_filtered_and_explained(ws):
    """The synthetic run flags one sample in round 1 and two in round 2 (synthetic.CHEATS):
    the rounds table counts them, ! lists only them, ⚑ marks them, the detail says why."""
    from ssd_tui.evaluation.suspect import REASONS
    from ssd_tui.tui.screens.samples import _verdict
    from ssd_tui.tui.widgets.rounds_table import RoundsTable

    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        assert {r.round: r.suspect for r in app.screen.snapshot.rounds} == {0: 0, 1: 1, 2: 2, 3: 0}
        rounds = app.screen.query_one(RoundsTable)
        await until(pilot, lambda: rounds.row_count == 4)
        assert [str(rounds.get_cell(str(r), "⚑")) for r in range(4)] == ["", "1", "2", ""]
        app.screen.action_browse(round=2)
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        browser = app.screen
        table = browser.query_one("#samples")
        await until(pilot, lambda: table.total == 32, what="round 2: 24 eval + 8 train")
        shown = {b.binding.action for b in browser.active_bindings.values() if b.binding.show}
        assert "suspect" in shown  # in the footer
        await pilot.press("exclamation_mark")
        await until(pilot, lambda: table.total == 2 and table.row(1) is not None)
        assert [table.row(i)["suspect"] for i in range(2)] == ["frames", "gc,trace"]
        assert all(str(_verdict(table.row(i))).endswith(" ⚑") for i in range(2))
        assert "round 2, eval at T 0.8 (T_eval), suspect" in text_of(
            browser.query_one("#browse-head")
        )
        view = browser.query_one("#sample")
        await pilot.press("down")
        await until(
            pilot,
            lambda: view.detail is not None and view.detail.row["id"] == table.row(1)["id"],
            what="the second suspect's detail",
        )
        head = text_of(view.query_one("#sample-head"))
        assert "suspect: looks like it games the tests" in head
        assert f"gc: {REASONS['gc']}" in head and f"trace: {REASONS['trace']}" in head
        assert "sys.settrace(None)" in view.detail.row["code"]
        await pilot.press("left_square_bracket")  # round 1: its one suspect
        await until(pilot, lambda: browser.filter.round == 1 and table.total == 1)
        await pilot.press("exclamation_mark")  # and back to every sample
        await until(pilot, lambda: table.total == 32 and not browser.filter.suspect)
        assert str(_verdict({"status": "passed", "suspect": None})) == "passed"


async def test_token_view_says_p_is_the_t1_distribution(ws):
    """p(token) is the token's probability in the full next-token distribution at T = 1
    (engine/hf.py pick_tokens), not the probability it was sampled with: the header said
    neither."""
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        from ssd_tui.tui.refs import RunRef
        from ssd_tui.tui.screens.tokens import TokenScreen

        app.push_screen(TokenScreen(RunRef(app.screen.ref.db_path), 122))
        await until(pilot, lambda: screen_name(app) == "TokenScreen" and app.screen.rows)
        tok = app.screen
        head = text_of(tok.query_one("#tok-head"))
        assert "p(T=1): the token's probability in the full distribution at T = 1" in head
        assert "untruncated, not the one it was sampled with (T 0.8, truncated)" in head
        labels = [c.label for c in tok.query_one("#tok-table").columns]
        assert "p(T=1)" in labels and "p(token)" not in labels


async def test_token_view_probe_rounds_use_exact_top1(ws):
    """When analysis re-scored a round-0 sample with later models (probe_stats), the token
    view can show each round's view of it, classified with the exact top-1."""
    import numpy as np

    from ssd_tui.store.run_store import pack

    db = ws / "runs" / "demo-run" / "run.db"
    store = RunStore.open(db)  # the schema has the probe_stats table
    ids = [7, 8, 9]
    # position 0: confident (lock), 1: flat (fork), 2: high entropy but a dominant top-1 (lock wins)
    ent, top1 = [0.1, 2.0, 1.5], [0.95, 0.2, 0.93]
    with store.transaction() as c:
        for rnd in (1, 2):
            c.execute(
                "INSERT INTO probe_stats VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    rnd,
                    1,
                    pack(ids, "<i4"),
                    pack([0, 1, 2], "<i4"),
                    pack(np.log([0.9, 0.1, 0.5])),
                    pack(ent),
                    pack([0.0, 0.3, 0.1]),
                    pack(top1),
                    # the paper's KeptMass (training truncation); NULL as in an older probe
                    pack([0.1, 0.4, 0.2]) if rnd == 1 else None,
                ),
            )
    store.close()
    from ssd_tui.tui.refs import RunRef
    from ssd_tui.tui.screens.tokens import TokenScreen

    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        app.push_screen(TokenScreen(RunRef(db), 1))
        await until(pilot, lambda: screen_name(app) == "TokenScreen" and app.screen.rows)
        tok = app.screen
        assert tok.views == [None, 1, 2] and tok.check_action("view", ()) is True
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: tok.view == 1 and [r.token_id for r in tok.rows] == ids)
        assert [r.kind for r in tok.rows] == ["lock", "fork", "lock"]
        assert "re-scored by round 1" in text_of(tok.query_one("#tok-head"))
        # 1 - train tail: .9 .6 .8 → mean .767; at the locks (0 and 2) .85
        assert "KeptMass (T_train set) 0.767, at locks 0.850" in text_of(tok.query_one("#tok-head"))
        await pilot.press("right_square_bracket")
        head = tok.query_one("#tok-head")
        await until(pilot, lambda: tok.view == 2 and "re-scored by round 2" in text_of(head))
        assert "KeptMass" not in text_of(tok.query_one("#tok-head"))  # not measured then


async def test_token_view_decodes_with_the_run_tokenizer(ws, tiny_model_dir):
    """With a loadable tokenizer, token ids are decoded (in a worker)."""
    db = ws / "runs" / "tok-run" / "run.db"
    build_run(
        db.parent,
        name="tok-run",
        model=str(tiny_model_dir),
        rounds_done=0,
        running_round=False,
        warnings=False,
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        from ssd_tui.tui.refs import RunRef
        from ssd_tui.tui.screens.tokens import TokenScreen

        app.push_screen(TokenScreen(RunRef(db), 1))
        await until(
            pilot, lambda: screen_name(app) == "TokenScreen" and app.screen.rows, timeout=60
        )
        row = app.screen.rows[0]
        assert row.text == tok.decode([row.token_id])
        assert "decoded with the tokenizer" in text_of(app.screen.query_one("#tok-head"))
        # The fast path (tokenizer.json through `tokenizers`, not transformers) decodes
        # every token as transformers does, for this model and the demo model.
        for model in (
            tiny_model_dir,
            Path(__file__).resolve().parent.parent / "assets" / "demo-model",
        ):
            fast, slow = app.tokenizer(str(model)), AutoTokenizer.from_pretrained(model)
            assert type(fast).__name__ == "_FastTokenizer"
            ids = list(range(min(slow.vocab_size, 400)))
            for i in ids:
                assert fast.decode([i]) == slow.decode(
                    [i], skip_special_tokens=False, clean_up_tokenization_spaces=False
                ), i


# ---- keyboard: palette, help ------------------------------------------------------------------------------
async def test_every_footer_binding_is_a_palette_command(ws):
    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        titles = [t for t, _h, _c in ScreenCommands(app.screen)._commands()]
        for want in ("Next stage", "Next round", "N rounds", "Samples", "Warnings", "Jump", "Help"):
            assert want in titles
        shown = {
            b.binding.description
            for b in app.screen.active_bindings.values()
            if b.binding.show and b.enabled
        }
        assert shown <= set(titles)
        # Run one through the palette.
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"samples")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(
            pilot, lambda: screen_name(app) == "SampleBrowserScreen", what="palette command"
        )


async def test_screenshot_is_saved_in_the_run_folder_and_said_where(ws, monkeypatch):
    """The palette's Screenshot failed (Textual saves to ~/Downloads,
    which often does not exist). Now it goes to the run's folder and says so."""
    monkeypatch.setenv("HOME", str(ws / "home-without-downloads"))
    run = ws / "runs" / "demo-run"
    app = make_app(ws, open_db=run / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        app.clear_notifications()
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"screenshot")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app._notifications, what="a notice")
        (note,) = list(app._notifications)
        shots = list(run.glob("*.svg"))
        assert len(shots) == 1 and note.title == "Screenshot", note.message
        assert note.message == f"saved to {shots[0].relative_to(ws)}"


async def test_help_title_names_the_screen_for_people(ws):
    from ssd_tui.tui.screens.help import help_title
    from ssd_tui.tui.screens.samples import SampleBrowserScreen

    app = make_app(ws, open_db=ws / "runs" / "demo-run" / "run.db")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)  # `b` waits for the rounds
        await pilot.press("b")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        assert isinstance(app.screen, SampleBrowserScreen)
        assert help_title(app.screen) == "sample browser"
        await pilot.press("question_mark")
        await until(pilot, lambda: screen_name(app) == "HelpScreen")
        shown = text_of(app.screen.query_one("#help Static"))
        assert "keys: sample browser" in shown and "SampleBrowser" not in shown


async def test_help_screen(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await until(pilot, lambda: screen_name(app) == "HelpScreen")
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "StartScreen")


# ---- review -------------------------------------------------------------------------------------------------------
async def test_review_mode_offers_no_engine_actions(ws):
    db = ws / "runs" / "demo-run" / "run.db"
    app = make_app(ws, review=[db])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        actions = {b.binding.action for b in dash.active_bindings.values()}
        assert not actions & {"next_stage", "next_round", "run_rounds", "pause", "stop"}
        titles = [t for t, _h, _c in ScreenCommands(dash)._commands()]
        assert not {"Next stage", "Next round", "N rounds", "Pause", "Stop"} & set(titles)
        await pilot.press("s", "r", "x")
        await pilot.pause()
        assert dash.engine.proc is None and not (db.parent / "engine.log").exists()
        assert "review" in text_of(dash.query_one("#run-head"))
        # Browsing still works, read-only.
        await pilot.press("b")
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")


async def test_review_of_an_export_says_engine_keys_are_read_only_and_writes_nothing(ws):
    """On an export, s (and the other engine keys) say that a review is
    read-only instead of doing nothing, and the file stays byte-identical."""
    from ssd_tui.outputs.export import export_run

    export = export_run(ws / "runs" / "demo-run" / "run.db", ws / "r2.db", round=2)
    before = export.read_bytes()
    app = make_app(ws, review=[export])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        dash = app.screen
        await until(pilot, lambda: dash.snapshot is not None)
        shown = {b.binding.action for b in dash.active_bindings.values() if b.binding.show}
        assert not shown & {"next_stage", "next_round", "run_rounds", "pause", "stop"}
        for key in ("s", "u", "x"):
            app.clear_notifications()
            await pilot.press(key)
            await until(pilot, lambda: app._notifications, what=f"a notice for {key}")
            (note,) = list(app._notifications)
            assert note.message.startswith("review is read-only"), note.message
        assert screen_name(app) == "DashboardScreen" and dash.engine.proc is None
    assert export.read_bytes() == before
    assert not [p.name for p in ws.iterdir() if p.name.startswith("r2.db-")]  # no -wal / -shm


async def test_a_disabled_engine_key_says_why(ws):
    """With an engine running, s is disabled (greyed in the footer): pressing it says so."""
    run = ws / "runs" / "demo-run"
    with fake_engine(run):
        app = make_app(ws, open_db=run / "run.db")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: screen_name(app) == "DashboardScreen")
            dash = app.screen
            await until(pilot, lambda: dash.engine_pid == 4242, what="engine seen")
            app.clear_notifications()
            await pilot.press("s")
            await until(pilot, lambda: app._notifications, what="a notice")
            assert "already running (pid 4242)" in list(app._notifications)[0].message
            assert dash.engine.proc is None


def test_open_leaves_rejected_files_and_exports_untouched(ws, monkeypatch):
    """`ssd-tui open` checked files by opening them writable, which
    switched them to WAL (a 0-byte file became a 4 KB database). Now: rejected with one
    line and unchanged; an export opens in review mode, byte-identical."""
    import sqlite3
    import subprocess
    import sys

    from ssd_tui import cli
    from ssd_tui.outputs.export import export_run

    empty = ws / "empty.db"
    empty.write_bytes(b"")
    other = ws / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    other_bytes = other.read_bytes()
    for f in (empty, other):
        r = subprocess.run(
            [sys.executable, "-m", "ssd_tui", "open", str(f)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "not an ssd-tui run database" in lines[0]
    assert empty.read_bytes() == b"" and other.read_bytes() == other_bytes
    assert sorted(p.name for p in ws.iterdir() if p.is_file()) == ["empty.db", "other.sqlite"]

    # An export: reviewed (read-only), not attached as a run. The terminal UI itself is
    # replaced by a recorder here (it needs a terminal); the review is tested above.
    export = export_run(ws / "runs" / "demo-run" / "run.db", ws / "r2.db", round=2)
    before = export.read_bytes()
    calls = []
    monkeypatch.setattr("ssd_tui.tui.app.run_app", lambda **kw: calls.append(kw))
    assert cli.main(["open", str(export)]) == 0
    assert calls[0]["review"] == [export] and "open_db" not in calls[0]
    assert export.read_bytes() == before
    # A run DB is attached (engine keys available).
    assert cli.main(["open", str(ws / "runs" / "demo-run" / "run.db")]) == 0
    assert calls[1]["open_db"] == ws / "runs" / "demo-run" / "run.db"


async def test_review_two_files_compares_round_by_round(ws):
    a = ws / "runs" / "demo-run" / "run.db"
    b = ws / "runs" / "other-run" / "run.db"
    app = make_app(ws, review=[a, b])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "CompareScreen")
        cmp = app.screen
        table = cmp.query_one("#cmp-table")
        await until(pilot, lambda: table.row_count == 4, what="rounds 0..3")
        assert str(table.get_cell_at((2, 1))) == "79.2%"
        # The settings that differ, as `ssd-tui diff` finds them.
        diff = cmp.query_one("#cmp-diff")
        await until(pilot, lambda: "run.name" in text_of(diff), what="config differences")
        assert "A demo-run | B other-run" in text_of(diff)
        curve = cmp.query_one("#cmp-curve")
        assert set(curve.series) >= {"A pass@1", "B pass@1"}
        assert not {b.binding.action for b in cmp.active_bindings.values()} & {
            "next_stage",
            "pause",
        }
        await pilot.press("2")
        await until(pilot, lambda: screen_name(app) == "DashboardScreen" and app.screen.ref.review)


# ---- data layer ---------------------------------------------------------------------------------------------------
def test_paging_is_stable_and_complete(ws):
    from ssd_tui.store.reads import RunReader

    r = RunReader(ws / "runs" / "demo-run" / "run.db")
    f = SampleFilter()
    n = r.count_samples(f)
    pages = [row["id"] for off in range(0, n, 7) for row in r.sample_page(f, off, 7)]
    store = RunStore.open(ws / "runs" / "demo-run" / "run.db", readonly=True)
    assert pages == [s["id"] for s in store.samples()]
    store.close()
    r.close()


def test_a_run_from_before_schema_3_reads_as_without_suspects(tmp_path):
    """Opened read-only (the app, a review), a schema-2 file has no verdicts.suspect: no
    counts, an empty suspect filter, rows without reasons."""
    import sqlite3

    from ssd_tui.store.reads import RunReader
    from ssd_tui.tui.views import snapshot

    if sqlite3.sqlite_version_info < (3, 35):
        pytest.skip("ALTER TABLE DROP COLUMN needs SQLite 3.35")
    db = build_run(tmp_path / "old", name="old")
    c = sqlite3.connect(db)
    c.execute("DROP INDEX verdicts_suspect")
    c.execute("ALTER TABLE verdicts DROP COLUMN suspect")
    c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    r = RunReader(db)
    snap = snapshot(r, 0, NOW_TS)
    assert snap is not None and {row.suspect for row in snap.rounds} == {0}
    assert r.count_samples(SampleFilter(suspect=True)) == 0
    assert r.sample_page(SampleFilter(suspect=True), 0, 10) == []
    page = r.sample_page(SampleFilter(round=2), 0, 40)
    assert page and {row["suspect"] for row in page} == {None}
    detail = r.sample(page[0]["id"])
    assert detail is not None and detail.row["suspect"] is None
    r.close()


def test_evidence_targets_and_next_round():
    probs, ids = evidence_targets(
        {
            "problem": "p1",
            "examples": [{"sample_id": 4, "problem": "p2"}],
            "sample_ids": [5, 6],
            "share": 0.2,
            "n": 3,
        }
    )
    assert probs == ["p1", "p2"] and ids == [4, 5, 6]
    assert next_round_target([]) == 0


async def test_big_run_scrolls_without_blocking(ws):
    """Jump to the end of a 20k-sample list: the count and the last page arrive from workers."""
    from fixtures.synthetic import build_large

    db = build_large(ws / "big" / "run.db", 20_000, n_problems=100, batch=20_000)
    app = make_app(ws, open_db=db)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        await until(pilot, lambda: app.screen.snapshot is not None)
        app.screen.action_browse(round=None)
        await until(pilot, lambda: screen_name(app) == "SampleBrowserScreen")
        table = app.screen.query_one("#samples")
        app.screen.filter = SampleFilter()
        table.reload()
        await until(pilot, lambda: table.total == 20_000, what="count")
        await pilot.press("end")
        await until(pilot, lambda: table.current is not None, what="last page")
        assert table.cursor_row == 19_999 and table.current["round"] == 5
        await pilot.press("pageup", "pageup", "up")
        await until(pilot, lambda: table.current is not None)
