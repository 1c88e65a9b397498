"""`ssd-tui export RUN.db --tensorboard DIR`: the real CLI writes event files; tensorboard's
own reader (EventAccumulator, what `tensorboard --logdir` uses) reads the values back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.synthetic import build_run

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", "export", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_export_reads_back(tmp_path: Path) -> None:
    db = build_run(tmp_path / "run", name="demo-run", rounds_done=2, running_round=False)
    r = export(str(db), "--tensorboard", str(tmp_path / "tb"))
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "tb" / "demo-run"
    got = read_scalars(folder)

    c = sqlite3.connect(db)
    t_eval = 0.8  # synthetic.CONFIG_TEMPLATE's T_eval
    want_p1 = c.execute(
        "SELECT round, value FROM metrics WHERE purpose='eval' AND name='pass@1' AND scope='all' "
        "AND temperature=? ORDER BY round",
        (t_eval,),
    ).fetchall()
    assert [(s, round(v, 5)) for s, v in got["eval/pass_at_1"]] == [
        (r, round(v, 5)) for r, v in want_p1
    ]
    # by difficulty, the baseline points and the best-baseline line, diversity
    assert {"eval/pass_at_1/easy", "eval/pass_at_1/hard", "eval/distinct_2"} <= set(got)
    base = c.execute(
        "SELECT temperature, value FROM metrics WHERE round=0 AND name='pass@1' AND scope='all' "
        "AND temperature != ?",
        (t_eval,),
    ).fetchall()
    for t, v in base:
        assert got[f"baseline/pass_at_1/T_{t:g}"][0][1] == pytest.approx(v, abs=1e-6)
    best = max(v for _, v in base + [(t_eval, want_p1[0][1])])
    assert [s for s, _ in got["baseline/best_pass_at_1"]] == [0, 1, 2]
    assert got["baseline/best_pass_at_1"][0][1] == pytest.approx(best, abs=1e-6)
    # training loss and lr per step: rounds one after another on one axis
    log = c.execute("SELECT round, step, loss, lr FROM train_log ORDER BY round, step").fetchall()
    assert len(got["train/loss"]) == len(log) == 8
    assert [s for s, _ in got["train/loss"]] == list(range(8))
    assert [v for _, v in got["train/loss"]] == pytest.approx([row[2] for row in log])
    assert [v for _, v in got["train/round-2/loss"]] == pytest.approx([row[2] for row in log[4:]])
    assert got["train/lr"][0][1] == pytest.approx(2e-4)
    c.close()

    # A second export replaces the events: every point still once.
    r = export(str(db), "--tensorboard", str(tmp_path / "tb"))
    assert r.returncode == 0, r.stderr
    assert len(read_scalars(folder)["train/loss"]) == 8
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1


def test_tensorboard_export_bad_input(tmp_path: Path) -> None:
    db = build_run(tmp_path / "run", rounds_done=1, running_round=False)
    r = export(str(db), "--tensorboard", str(tmp_path / "tb"), "--round", "1")
    assert r.returncode == 2 and "without other options" in r.stderr
    r = export(str(tmp_path / "nope.db"), "--tensorboard", str(tmp_path / "tb"))
    assert (
        r.returncode == 2
        and r.stderr.strip() == f"error: run database not found: {tmp_path / 'nope.db'}"
    )
