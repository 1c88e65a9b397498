"""The whole SSD loop on a tiny model made in the test: records, resume, kill -9, Ctrl-C, locks."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from runkit import run_cli, snapshot, write_config, write_problems

from ssd_tui.config import load_config
from ssd_tui.runs.pipeline import Pipeline, derive_seed, filter_examples
from ssd_tui.runs.runner import RunLock
from ssd_tui.store.run_store import RunStore


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    write_problems(tmp_path)
    return tmp_path, write_config(tmp_path, tiny_model_dir)


def test_full_loop_records_everything_and_rerun_is_a_no_op(project):
    folder, config = project
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    assert pipe.run() == "done"
    pipe.release_sampler()

    stages = store.stages()
    assert [(s["round"], s["stage"]) for s in stages] == [
        (0, "evaluate"),
        (0, "analyse"),
        (1, "sample"),
        (1, "train"),
        (1, "evaluate"),
        (1, "analyse"),
    ]
    assert all(s["status"] == "done" for s in stages)
    assert store.count_samples(1, "train") == 12 * 2
    for rnd in (0, 1):
        assert store.count_samples(rnd, "eval") == 3 * 2
        assert store.unjudged(rnd, 1.0) == []
        assert store.metric(rnd, "pass@1") is not None
        assert store.metric(rnd, "pass@2") is not None
        assert store.metric(rnd, "samples") == 6
    # every sample keeps per-token statistics as long as its tokens
    for s in store.samples():
        stats = store.token_stats(s["id"])
        assert (
            len(stats["logprobs"])
            == len(stats["entropies"])
            == len(stats["tail_mass"])
            == s["n_tokens"]
        )
    # round 1's adapter: standard PEFT layout, hashed, with a training log
    rnd1 = store.rounds()[1]
    adapter = Path(rnd1["adapter_path"])
    assert (adapter / "adapter_config.json").exists() and (
        adapter / "adapter_model.safetensors"
    ).exists()
    assert len(rnd1["adapter_sha256"]) == 64
    assert store.conn.execute("SELECT COUNT(*) FROM train_log WHERE round=1").fetchone()[0] > 0
    # round 1 samples from a different model than round 0 (the adapter moved it)
    r0 = [s["completion"] for s in store.samples(0, "eval")]
    r1 = [s["completion"] for s in store.samples(1, "eval")]
    assert r0 != r1

    before = snapshot(cfg.db_path)
    finished = [s["finished_at"] for s in store.stages()]
    pipe2 = Pipeline(cfg, store)
    pipe2.prepare()
    assert pipe2.run() == "done"
    assert snapshot(cfg.db_path) == before
    assert [s["finished_at"] for s in store.stages()] == finished  # no finished stage is redone

    # the closing line of `ssd-tui run`: SSD's best round against the base model's
    from ssd_tui.cli import _verdict

    line = _verdict(store, cfg)[0]
    base, ssd = store.metric(0, "pass@1"), store.metric(1, "pass@1")
    assert f"round 1 pass@1 {ssd:.3f}" in line and f"T_eval=1 {base:.3f}" in line
    assert ("does not beat" in line) == (ssd <= base)

    # A run folder set aside (`ssd-tui demo --fresh`) or moved takes its adapters along:
    # resumed there, round 2 must continue round 1's adapter from that folder, not the
    # stored path (where a new run's adapter may now be).
    store.close()
    moved_dir = folder / "run.moved"
    cfg.run_dir.rename(moved_dir)
    config.write_text(config.read_text().replace('dir = "run"', 'dir = "run.moved"'))
    moved = load_config(config)
    assert moved.run_dir == moved_dir
    store = RunStore.open(moved.db_path)
    assert Pipeline(moved, store).adapter_of(1) == str(moved_dir / "adapters" / adapter.name)
    store.close()


def test_stepping_by_stages_and_extending_rounds(project):
    folder, config = project
    r = run_cli(config, "--stages", "1")
    assert r.returncode == 0, r.stderr
    snap = snapshot(load_config(config).db_path)
    assert [s[2] for s in snap["stages"]] == ["done", "pending"]
    r = run_cli(config, "--rounds", "0")
    assert r.returncode == 0, r.stderr
    assert [s[2] for s in snapshot(load_config(config).db_path)["stages"]] == ["done", "done"]


def _wait_for(db: Path, stage: str, rnd: int, timeout: float = 120) -> bool:
    """Poll the run DB read-only until `stage` of `rnd` is running with some work done."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            row = c.execute(
                "SELECT status, done FROM stages WHERE round=? AND stage=?", (rnd, stage)
            ).fetchone()
            c.close()
        except sqlite3.Error:
            row = None
        if row and row[0] == "running" and row[1] > 0:
            return True
        if row and row[0] == "done":
            return False
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """An uninterrupted run, run once, that every interrupted run must equal."""
    folder = tmp_path_factory.mktemp("ref")
    write_problems(folder, n_train=24)
    config = write_config(folder, tiny_model_dir)
    r = run_cli(config)
    assert r.returncode == 0, r.stderr
    return snapshot(load_config(config).db_path)


@pytest.mark.parametrize(
    "stage, rnd", [("evaluate", 0), ("sample", 1), ("train", 1), ("evaluate", 1)]
)
def test_kill_9_in_a_stage_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_model_dir, reference, stage, rnd
):
    # A stage of the tiny model can finish between two polls on a busy machine: try again
    # in a fresh folder until the kill lands inside the stage (the property must hold each time).
    for attempt in range(4):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        write_problems(folder, n_train=24)
        config = write_config(folder, tiny_model_dir)
        db = load_config(config).db_path
        proc = run_cli(config, wait=False)
        caught = _wait_for(db, stage, rnd)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = run_cli(config)
        assert r.returncode == 0, r.stderr
        assert snapshot(db) == reference  # 0 lost, 0 duplicated, same numbers
        if caught:
            break
    assert caught, f"never caught {stage} of round {rnd} running with work done"


def test_ctrl_c_stops_between_batches_and_resumes(tmp_path, tiny_model_dir, reference):
    write_problems(tmp_path, n_train=24)
    config = write_config(tmp_path, tiny_model_dir)
    db = load_config(config).db_path
    proc = run_cli(config, wait=False)
    assert _wait_for(db, "sample", 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume" in out + err
    assert "Traceback" not in err
    c = sqlite3.connect(db)
    assert (
        c.execute("SELECT status FROM stages WHERE round=1 AND stage='sample'").fetchone()[0]
        == "stopped"
    )
    c.close()
    r = run_cli(config)
    assert r.returncode == 0, r.stderr
    assert snapshot(db) == reference


def test_second_engine_on_the_same_run_is_refused(project):
    folder, config = project
    cfg = load_config(config)
    lock = RunLock(cfg.db_path)
    lock.acquire()
    try:
        r = run_cli(config)
    finally:
        lock.release()
    assert r.returncode == 2
    assert f"another engine (pid {os.getpid()})" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_changed_config_is_refused_on_resume(project):
    folder, config = project
    assert run_cli(config, "--stages", "1").returncode == 0
    config.write_text(config.read_text().replace("temperature = 1.0", "temperature = 1.3", 1))
    r = run_cli(config)
    assert r.returncode == 2
    assert "sampling.temperature" in r.stderr and "Traceback" not in r.stderr


def test_batch_seeds_depend_on_identity_only():
    assert derive_seed(0, 1, "train", 1.0, 3) == derive_seed(0, 1, "train", 1.0, 3)
    assert derive_seed(0, 1, "train", 1.0, 3) != derive_seed(0, 1, "train", 1.0, 4)
    assert derive_seed(0, 1, "train", 1.0, 3) != derive_seed(1, 1, "train", 1.0, 3)


def test_greedy_evaluation_t_eval_0(tmp_path, tiny_model_dir):
    """Issue 16: T_eval = 0 is greedy decoding, the way published pass@1 figures are taken.
    The config accepts it (T_train = 0 stays refused: SSD needs samples), every sample of a
    problem is the arg-max answer, so pass@k = pass@1, and the engine is on record."""
    from ssd_tui.errors import SSDError

    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=0, eval__temperature=0.0)
    cfg = load_config(config)
    assert cfg.eval.temperature == 0.0
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    assert pipe.run() == "done"
    pipe.release_sampler()
    by_problem: dict[int, set[str]] = {}
    for s in store.samples():
        by_problem.setdefault(s["problem_id"], set()).add(s["completion"])
        assert max(store.token_stats(s["id"])["tail_mass"], default=0.0) < 1.0
    assert len(by_problem) == 3 and all(len(v) == 1 for v in by_problem.values())
    assert store.metric(0, "pass@1") == store.metric(0, "pass@2")
    assert store.engine_labels() == ["hf"]  # auto without vLLM, or a model this small
    with pytest.raises(SSDError, match=r"\[sampling\] temperature must be in \(0"):
        load_config(write_config(tmp_path, tiny_model_dir, sampling__temperature=0.0))


def test_filter_examples() -> None:
    ex = [
        ("p", ""),
        ("p", "   \n"),
        ("p", "return 1"),
        ("p", "x = 1\n\nreturn x"),
        ("p", "a\nb\nc"),
    ]
    assert filter_examples(ex) == [ex[3], ex[4]]
    assert filter_examples(ex, min_lines=3) == [ex[4]]
