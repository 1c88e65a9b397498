"""Sweeps: planning and its errors, the summary's arithmetic, and the CLI on a tiny demo
sweep killed with -9 in the middle and rerun (nothing lost, nothing redone); its runs use
the fake engine (fixtures/fake_engine.py), the sweep is the real command."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.fake_engine import DELAY_ENV
from runkit import FAKE_RUN

from ssd_tui.config import load_config
from ssd_tui.errors import SSDError
from ssd_tui.runs import runner
from ssd_tui.runs import sweep as sw
from ssd_tui.store.run_store import RunStore

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.toml"


def tiny_demo(folder: Path) -> Path:
    """examples/demo.toml cut down to seconds per run: 4 training prompts, 3 eval problems
    × 2 samples, one baseline temperature, short completions, one round."""
    text = DEMO.read_text(encoding="utf-8")
    for key, value in {
        "rounds": "1",
        "max_train_prompts": "4",
        "max_eval_problems": "3",
        "samples_per_problem": "2",
        "k": "[1, 2]",
        "baseline_temperatures": "[0.4]",
        "max_new_tokens": "40",
    }.items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    text = text.replace('"../', f'"{ROOT}/')
    text = re.sub(r"(?m)^dir = .*$", 'dir = "runs/demo"', text)
    text = text.replace("[run]\n", "[run]\nthreads = 1\n")
    path = folder / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sweep_cli(*args: str, wait: bool = True):
    """`ssd-tui sweep ARGS` whose runs are `ssd-tui run` with the fake engine (fake_run.py):
    the sweep's planning, skipping, resuming and tables are the real command's. A sampled
    batch takes 0.1 s, so the sweep can be killed while its second run works."""
    cmd = [sys.executable, str(FAKE_RUN), "sweep", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", DELAY_ENV: "0.1"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def rows(db: Path) -> list[tuple]:
    c = sqlite3.connect(db)
    out = c.execute(
        "SELECT id, round, purpose, temperature, problem_id, sample_idx, created_at, completion "
        "FROM samples ORDER BY id"
    ).fetchall()
    c.close()
    return out


# ---- planning ---------------------------------------------------------------------------------------
def test_plan_is_the_grid_times_the_seeds(tmp_path: Path) -> None:
    cfg = tiny_demo(tmp_path)
    plan = sw.plan(
        cfg,
        ["sampling.temperature=0.5,0.8", "sampling.top_p=0.8,0.95"],
        seeds=3,
        out=tmp_path / "sw",
    )
    assert len(plan.runs) == 12 and plan.seeds == [0, 1, 2]
    assert plan.runs[0].label == "temperature-0.5_top_p-0.8_seed-0"
    assert plan.runs[0].setting == {"sampling.temperature": 0.5, "sampling.top_p": 0.8}
    sw.prepare(plan)
    # Each run folder holds an ordinary config: its own seed and grid point, paths absolute.
    run = plan.runs[-1]
    rc = load_config(plan.run_dir(run) / "config.toml")
    assert (rc.sampling.temperature, rc.sampling.top_p, rc.run.seed) == (0.8, 0.95, 2)
    assert rc.run_dir == plan.run_dir(run).resolve()
    assert Path(rc.model.path).is_absolute() and Path(rc.data.benchmark).is_file()
    assert sw.load(plan.folder).runs == plan.runs


def test_the_new_keys_sweep_and_round_0_is_shared_per_round_0_input(tmp_path: Path) -> None:
    """[rounds] and [control] keys are sweepable, and act after round 0: runs differing
    only in them (or in T_train) share a round 0; a seed or T_eval is a round-0 input."""
    cfg = tiny_demo(tmp_path)
    sets = ["rounds.data=latest,accumulate", "control.on_collapse=warn,rollback"]
    plan = sw.prepare(sw.plan(cfg, sets, 2, out=tmp_path / "sw"))
    assert len(plan.runs) == 8
    rc = load_config(plan.run_dir(plan.runs[-1]) / "config.toml")
    assert (rc.rounds.data, rc.control.on_collapse) == ("accumulate", "rollback")
    leaders = sw.round0_leaders(plan)
    assert {leaders[r.label].label for r in plan.runs} == {
        "data-latest_on_collapse-warn_seed-0",
        "data-latest_on_collapse-warn_seed-1",
    }
    assert all(leaders[r.label].seed == r.seed for r in plan.runs)
    other = sw.prepare(sw.plan(cfg, ["eval.temperature=0.6,0.8"], 1, out=tmp_path / "sw2"))
    assert [leaders.label for leaders in sw.round0_leaders(other).values()] == [
        r.label for r in other.runs
    ]  # T_eval is a round-0 input: each run computes its own


def test_each_run_is_an_engine_started_through_the_runner(tmp_path: Path, monkeypatch) -> None:
    """The command line and how it is started, without training: the engine is a stand-in."""
    cfg = tiny_demo(tmp_path)
    plan = sw.prepare(sw.plan(cfg, ["sampling.temperature=0.5,0.8"], 1, tmp_path / "sw", rounds=2))
    calls = []
    monkeypatch.setattr(runner, "run_engine", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert sw.run_sweep(plan, threads=3, say=lambda text: None) == 0
    first = plan.run_dir(plan.runs[0]).resolve()
    assert calls == [
        (
            runner.engine_command(
                plan.run_dir(r) / "config.toml",
                rounds=2,
                threads=3,
                # T_train acts after round 0: the second run takes the first one's round 0
                round0_from=None if i == 0 else first,
            ),
            {"die_with_parent": True},  # a killed sweep leaves no engine holding a run
        )
        for i, r in enumerate(plan.runs)
    ]
    monkeypatch.setattr(runner, "run_engine", lambda cmd, **kw: 130)
    assert sw.run_sweep(plan, say=lambda text: None) == 130  # interrupted: rerun to resume


def test_a_run_killed_before_its_first_write_is_started_again(tmp_path: Path, monkeypatch) -> None:
    """SQLite makes run.db on connect and writes the schema after: a run killed between
    leaves an empty file, which the sweep starts over instead of failing on it."""
    cfg = tiny_demo(tmp_path)
    plan = sw.prepare(sw.plan(cfg, ["sampling.temperature=0.5,0.8"], 1, tmp_path / "sw", rounds=2))
    plan.db_path(plan.runs[0]).touch()
    assert sw.run_state(plan, plan.runs[0]) == ("pending", 0)
    started = []
    monkeypatch.setattr(runner, "run_engine", lambda cmd, **kw: started.append(cmd) or 0)
    assert sw.run_sweep(plan, say=lambda text: None) == 0
    assert len(started) == 2


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.temperature=0.5", "unknown key 'temperature' in [train]"),
        ("sampling.temperature=9", "[sampling] temperature must be in (0.0, 5.0] (got 9.0)"),
        ("run.seed=1,2", "the sweep sets run.seed itself (use --seeds for seeds)"),
        ("sampling.top_p", "expected section.key=value"),
        ("sampling.top_k=20,20", "a value is given twice"),
    ],
)
def test_bad_assignments_are_one_precise_line(
    tmp_path: Path, assignment: str, message: str
) -> None:
    cfg = tiny_demo(tmp_path)
    r = sweep_cli(str(cfg), "--set", assignment, "--out", str(tmp_path / "sw"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "sw").exists()


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    cfg = tiny_demo(tmp_path)
    sw.prepare(sw.plan(cfg, ["sampling.temperature=0.5"], 1, out=tmp_path / "sw"))
    with pytest.raises(SSDError, match="holds a different sweep"):
        sw.prepare(sw.plan(cfg, ["sampling.temperature=0.6"], 1, out=tmp_path / "sw"))


# ---- the summary ------------------------------------------------------------------------------------
def _fake_run(db: Path, t_eval: float, pass1: dict[int, float], base: dict[float, float]) -> None:
    """A run DB holding only metrics rows, as the evaluate stage writes them."""
    from ssd_tui.config import RunConfig

    store = RunStore.open(db, create=True)
    store.init_run("r", "m", RunConfig().to_json(), "", str(db.parent))
    for rnd, v in pass1.items():
        store.set_metrics(rnd, "eval", t_eval, {"all": {"pass@1": v, "pass@5": v + 0.1}})
    for t, v in base.items():
        store.set_metrics(0, "eval", t, {"all": {"pass@1": v}})
    store.close()


def test_summary_is_mean_and_sd_over_seeds(tmp_path: Path) -> None:
    # RunConfig() has T_eval 0.8 and k = (1, 5).
    curves = []
    for seed, (r0, r1) in enumerate([(0.5, 0.6), (0.5, 0.8)]):
        db = tmp_path / f"s{seed}" / "run.db"
        _fake_run(db, 0.8, {0: r0, 1: r1}, {0.4: 0.55 + 0.1 * seed})
        curves.append(sw.read_curve(db, seed=seed))
    s = sw.summarize_curves(curves, {"sampling.temperature": 0.5})
    m, sd, n = s.rounds[1]["pass@1"]
    assert (round(m, 6), round(sd, 6), n) == (0.7, round(2**0.5 * 0.1, 6), 2)
    assert s.rounds[1]["pass@5"][0] == pytest.approx(0.8)
    assert s.baseline[0.4][0] == pytest.approx(0.6)
    assert s.best_baseline() == (0.4, pytest.approx(0.6))
    assert s.best_ssd() == (1, pytest.approx(0.7))
    assert sw.fmt_mean_sd(s.rounds[1]["pass@1"]) == "0.700 ± 0.141"


# ---- the CLI: kill -9 mid-sweep, rerun ------------------------------------------------------------
def test_sweep_survives_kill_9_and_redoes_nothing(tmp_path: Path) -> None:
    cfg = tiny_demo(tmp_path)
    out = tmp_path / "sw"
    args = (str(cfg), "--set", "sampling.temperature=0.5,0.8", "--seeds", "1", "--out", str(out))
    first, second = out / "temperature-0.5_seed-0", out / "temperature-0.8_seed-0"
    proc = sweep_cli(*args, wait=False)
    # Wait until the second run's engine has written some samples, then kill the sweep.
    deadline = time.time() + 400
    while time.time() < deadline:
        if (second / "run.db").exists():
            try:
                if rows(second / "run.db"):
                    break
            except sqlite3.OperationalError:
                pass
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the second run never started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # The run's engine dies with the sweep: nothing still holds the second run's lock.
    deadline = time.time() + 30
    while runner.engine_pid(second / "run.db") is not None and time.time() < deadline:
        time.sleep(0.1)
    assert runner.engine_pid(second / "run.db") is None
    done_rows, partial_rows = rows(first / "run.db"), rows(second / "run.db")
    assert done_rows and partial_rows

    r = sweep_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "temperature-0.5_seed-0: done, skipped" in r.stdout
    assert "temperature-0.8_seed-0: resuming" in r.stdout
    assert rows(first / "run.db") == done_rows  # the finished run: untouched
    after = rows(second / "run.db")
    assert after[: len(partial_rows)] == partial_rows  # the partial one: kept, then continued
    assert len(after) > len(partial_rows)
    keys = [row[1:6] for row in after]
    assert len(set(keys)) == len(keys)
    # The table: one row per setting, both rounds.
    assert re.search(r"temperature=0\.5 .* round 0|round 0", r.stdout)
    for label in ("temperature=0.5", "temperature=0.8"):
        line = next(ln for ln in r.stdout.splitlines() if label in ln)
        assert len(re.findall(r"\d\.\d{3}", line)) >= 3, line  # round 0, round 1, pass@2
    assert "temperature-only baseline" in r.stdout and "T=0.4" in r.stdout
    for run_dir in (first, second):
        store = RunStore.open(run_dir / "run.db", readonly=True)
        assert [x["status"] for x in store.rounds()] == ["done", "done"]
        store.close()

    # A third call runs nothing.
    again = sweep_cli(*args)
    assert again.returncode == 0
    assert again.stdout.count("done, skipped") == 2
    assert rows(second / "run.db") == after
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in manifest["runs"]] == [first.name, second.name]


# ---- round 0 computed once per distinct round-0 input --------------------------------------------
@pytest.mark.timeout(1800)
def test_a_sweep_over_t_train_computes_round_0_once(tmp_path: Path, tiny_model_dir) -> None:
    """Four T_train points share one round 0 (evaluate and the temperature-only baseline
    computed by the first run, reused by the other three, each saying where from), and
    every run ends with the numbers it has alone."""
    from runkit import run_fake, snapshot, write_config, write_problems

    write_problems(tmp_path, n_train=4)
    common = {"eval__baseline_temperatures": [0.5], "train__epochs": 1}
    config = write_config(tmp_path, tiny_model_dir, rounds=1, **common)
    temps = [0.7, 1.0, 1.3, 1.6]
    out = tmp_path / "sw"
    axis = "sampling.temperature=" + ",".join(map(str, temps))
    r = sweep_cli(str(config), "--set", axis, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    plan = sw.load(out)
    first = plan.run_dir(plan.runs[0]).resolve()
    computed, reused = [], []
    for run in plan.runs:
        store = RunStore.open(plan.db_path(run), readonly=True)
        for st in store.stages(0):
            if st["stage"] in ("evaluate", "baseline"):
                where = json.loads(st["reused_from"]) if st["reused_from"] else None
                (reused if where else computed).append((run.label, st["stage"]))
                assert where is None or (where["run"], where["round"]) == (str(first), 0)
        store.close()
    assert computed == [(plan.runs[0].label, "evaluate"), (plan.runs[0].label, "baseline")]
    assert len(reused) == 6
    assert "(round 0 from temperature-0.7_seed-3)" in r.stdout
    assert "sampling.temperature=1.6" in r.stdout  # the table names the section
    for t, run in zip(temps, plan.runs, strict=True):
        alone = tmp_path / f"alone-{t}"
        alone.mkdir()
        write_problems(alone, n_train=4)
        cfg = write_config(alone, tiny_model_dir, rounds=1, sampling__temperature=t, **common)
        done = run_fake(cfg)  # as the sweep's runs: ssd-tui run with the fake engine
        assert done.returncode == 0, done.stderr[-2000:]
        assert snapshot(load_config(cfg).db_path) == snapshot(plan.db_path(run)), run.label
