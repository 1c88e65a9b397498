"""The whole SSD loop on a tiny model made in the test; resume after kill -9 anywhere, Ctrl-C,
stepping and refusals on the fake engine (fixtures/fake_engine.py)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from pathlib import Path

import pytest
from fixtures.fake_engine import DELAY_ENV
from fixtures.fake_run import KILL_ENV
from runkit import (
    fake_project,
    finished_project,
    run_cli,
    run_fake,
    snapshot,
    wait_for_stage,
    write_config,
    write_problems,
)

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


# ---- resume, stop, step, refuse: properties of how batches and stages are written --------
# Run by ``ssd-tui run``'s own code path with the fake engine (fixtures/fake_run.py: the
# CLI's parser, lock, sandbox, Pipeline, store and signal handlers; no torch, no model),
# a fraction of a second per process. What only a real model can break (its sampler
# redrawing a lost batch exactly) is the one real kill -9 below, in the engine tier.

# Every stage of a 2-round run with a temperature-only baseline.
STAGES = ["0:evaluate", "0:baseline", "0:analyse", "1:sample", "1:train", "1:evaluate", "1:analyse"]
# A kill's point is drawn at random; SSD_KILL_SEED replays a failing draw.
KILL_SEED = int(os.environ.get("SSD_KILL_SEED") or random.SystemRandom().randrange(10**6))


@pytest.fixture(scope="module")
def fake_reference(finished_run) -> tuple[dict, dict[str, int]]:
    """The shared uninterrupted run (conftest ``finished_run``), and how many SQL statements
    each of its stages ran."""
    counts = finished_run.statements
    assert sorted(counts) == sorted(STAGES) and min(counts.values()) > 3, counts
    snap = snapshot(finished_run.db)
    assert snap["warnings"] and snap["probe"] and snap["train_log"]  # there is all to compare
    return snap, counts


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_anywhere_in_a_stage_then_resume_equals_an_uninterrupted_run(
    tmp_path, fake_model_dir, fake_reference, stage
):
    """kill -9 before a random SQL statement of the stage (any state a kill can leave),
    rerun: no sample, verdict, metric, warning, probe row or step lost or duplicated."""
    reference, counts = fake_reference
    point = random.Random(f"{KILL_SEED}:{stage}").randint(1, counts[stage])
    where = (
        f"kill -9 at statement {point} of {counts[stage]} in {stage} (SSD_KILL_SEED={KILL_SEED})"
    )
    config = finished_project(tmp_path, fake_model_dir)
    killed = run_fake(config, env={KILL_ENV: f"{stage}:{point}"})
    assert killed.returncode == -signal.SIGKILL, f"{where}: {killed.stderr[-2000:]}"
    r = run_fake(config)
    assert r.returncode == 0, f"{where}: {r.stderr[-2000:]}"
    assert snapshot(load_config(config).db_path) == reference, where


def test_ctrl_c_stops_between_batches_and_resumes(tmp_path, fake_model_dir, fake_reference):
    config = finished_project(tmp_path, fake_model_dir)
    db = load_config(config).db_path
    proc = run_fake(config, wait=False, env={DELAY_ENV: "0.1"})  # a sampled batch: 0.1 s
    assert wait_for_stage(db, "sample", 1)
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
    (n,) = c.execute("SELECT COUNT(*) FROM samples WHERE round=1 AND purpose='train'").fetchone()
    c.close()
    assert 0 < n < 24 * 2 and n % (2 * 2) == 0  # whole batches of 2 prompts × 2 samples
    r = run_fake(config)
    assert r.returncode == 0, r.stderr
    assert snapshot(db) == fake_reference[0]


def test_stepping_by_stages_and_extending_rounds(tmp_path, fake_model_dir):
    config = fake_project(tmp_path, fake_model_dir)
    r = run_fake(config, "--stages", "1")
    assert r.returncode == 0, r.stderr
    snap = snapshot(load_config(config).db_path)
    assert [s[2] for s in snap["stages"]] == ["done", "pending"]
    r = run_fake(config, "--rounds", "0")
    assert r.returncode == 0, r.stderr
    assert [s[2] for s in snapshot(load_config(config).db_path)["stages"]] == ["done", "done"]


def test_second_engine_on_the_same_run_is_refused(tmp_path, fake_model_dir):
    config = fake_project(tmp_path, fake_model_dir)
    cfg = load_config(config)
    lock = RunLock(cfg.db_path)
    lock.acquire()
    try:
        r = run_fake(config)
    finally:
        lock.release()
    assert r.returncode == 2
    assert f"another engine (pid {os.getpid()})" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_changed_config_is_refused_on_resume(tmp_path, fake_model_dir):
    config = fake_project(tmp_path, fake_model_dir)
    assert run_fake(config, "--stages", "1").returncode == 0
    config.write_text(config.read_text().replace("temperature = 1.0", "temperature = 1.3", 1))
    r = run_fake(config)
    assert r.returncode == 2
    assert "sampling.temperature" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.engine
def test_kill_9_while_the_real_model_samples_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_model_dir
):
    """The one property the fake cannot show: the real sampler, restarted, redraws a lost
    batch exactly (its seed is the batch's), and the real trainer and evaluation go on from
    there to the same numbers as a run that was never killed."""
    ref = tmp_path / "ref"
    ref.mkdir()
    write_problems(ref, n_train=24)
    r = run_cli(write_config(ref, tiny_model_dir))
    assert r.returncode == 0, r.stderr
    reference = snapshot(ref / "run" / "run.db")
    # The stage can finish between two polls on a busy machine: try again in a fresh folder
    # until the kill lands inside it (the property must hold each time).
    for attempt in range(4):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        write_problems(folder, n_train=24)
        config = write_config(folder, tiny_model_dir)
        db = load_config(config).db_path
        proc = run_cli(config, wait=False)
        caught = wait_for_stage(db, "sample", 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = run_cli(config)
        assert r.returncode == 0, r.stderr
        assert snapshot(db) == reference  # 0 lost, 0 duplicated, same numbers
        if caught:
            break
    assert caught, "never caught round 1's sample stage running with work done"


def test_batch_seeds_depend_on_identity_only():
    assert derive_seed(0, 1, "train", 1.0, 3) == derive_seed(0, 1, "train", 1.0, 3)
    assert derive_seed(0, 1, "train", 1.0, 3) != derive_seed(0, 1, "train", 1.0, 4)
    assert derive_seed(0, 1, "train", 1.0, 3) != derive_seed(1, 1, "train", 1.0, 3)


def test_greedy_evaluation_t_eval_0(tmp_path, tiny_model_dir):
    """T_eval = 0 is greedy decoding, the way published pass@1 figures are taken.
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
