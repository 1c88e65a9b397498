"""Branches (`ssd-tui run CONFIG --from RUN_DIR --round K`, docs/rounds.md): round 0 is the
parent's round-K model, its evaluation the parent's when it is the same one, the lineage is
in the record, `diff` and exports; wrong branches are one-line errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from runkit import run_cli, run_fake, snapshot, write_config, write_problems

from ssd_tui.config import load_config
from ssd_tui.runs.branch import branch_config
from ssd_tui.runs.pipeline import derive_seed
from ssd_tui.store.run_store import RunStore


def _parent(folder: Path, model: Path, run) -> Path:
    """A finished 2-round run: the parent (its run folder)."""
    write_problems(folder)
    config = write_config(folder, model, rounds=2, train__epochs=1)
    r = run(config)
    assert r.returncode == 0, r.stderr
    return load_config(config).run_dir


@pytest.fixture(scope="module")
def parent(tmp_path_factory, tiny_model_dir) -> Path:
    """The parent made by the real engine: its adapters are real ones."""
    return _parent(tmp_path_factory.mktemp("parent"), tiny_model_dir, run_cli)


@pytest.fixture(scope="module")
def fake_parent(tmp_path_factory, tiny_model_dir) -> Path:
    """The parent made by ssd-tui run's path with the fake engine (tests/fixtures)."""
    return _parent(tmp_path_factory.mktemp("fake-parent"), tiny_model_dir, run_fake)


def _eval_rows(db: Path, rnd: int) -> list[tuple]:
    c = sqlite3.connect(db)
    rows = c.execute(
        "SELECT p.name, s.sample_idx, s.temperature, s.completion, s.n_tokens, s.logprob_sum, "
        "t.token_ids, t.logprobs, v.status FROM samples s JOIN problems p ON p.id = s.problem_id "
        "JOIN token_stats t ON t.sample_id = s.id JOIN verdicts v ON v.sample_id = s.id "
        "WHERE s.round = ? AND s.purpose = 'eval' ORDER BY 1, 2, 3",
        (rnd,),
    ).fetchall()
    metrics = c.execute(
        "SELECT temperature, name, scope, value FROM metrics WHERE round = ? AND purpose = 'eval' "
        "AND name LIKE 'pass@%' ORDER BY 1, 2, 3",
        (rnd,),
    ).fetchall()
    c.close()
    return rows + metrics


@pytest.mark.engine  # a real sampler draws from the parent's real adapter
def test_a_branchs_round_0_is_the_parents_round_k(parent, tmp_path, tiny_model_dir) -> None:
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=1, train__epochs=1)
    r = run_cli(config, "--from", str(parent), "--round", "2")
    assert r.returncode == 0, r.stderr
    cfg = load_config(config)
    db = cfg.db_path
    pstore = RunStore.open(parent / "run.db", readonly=True)
    store = RunStore.open(db, readonly=True)
    # The same problems and seed: round 0 is the parent's round 2, sample for sample.
    assert _eval_rows(db, 0) == _eval_rows(parent / "run.db", 2)
    reused = json.loads(store.stage(0, "evaluate")["reused_from"])
    assert (reused["run"], reused["round"]) == (str(parent.resolve()), 2)
    assert reused["run_uid"] == pstore.meta("run_uid") != ""
    # Its model is the parent's round-2 model: the adapter copied in, hash checked.
    p2 = pstore.rounds()[2]
    r0 = store.rounds()[0]
    assert Path(r0["adapter_path"]).parent == cfg.run_dir / "adapters"
    assert r0["adapter_sha256"] == p2["adapter_sha256"] and r0["base_path"] is None
    lineage = {k: store.meta(k) for k in ("parent_run", "parent_round", "parent_adapter_sha256")}
    assert lineage == {
        "parent_run": str(parent.resolve()),
        "parent_round": "2",
        "parent_adapter_sha256": p2["adapter_sha256"],
    }
    assert store.meta("parent_name") == pstore.run_info()["name"]
    # Round 1 samples from that model: the parent's round-2 adapter draws its first batch.
    from ssd_tui.engine.hf import HFSampler

    params = cfg.train_sampling(cfg.run.seed)
    seed = derive_seed(cfg.run.seed, 1, "train", params.temperature, 0)
    stored = [s["completion"] for s in store.samples(1, "train")]
    prompts = [p["prompt"] for p in store.problems("train")][: cfg.sampling.batch_size]
    size = cfg.engine_settings().batch_size  # the pipeline's: another one draws otherwise
    with HFSampler(str(tiny_model_dir), Path(p2["adapter_path"]), batch_size=size) as sampler:
        outs = sampler.generate(prompts, replace(params, seed=seed))
    assert [c.text for comps in outs for c in comps] == stored[: len(prompts) * params.n]
    pstore.close()
    store.close()

    # `ssd-tui diff` says where each run comes from; exit 1 (they differ).
    d = subprocess.run(
        [sys.executable, "-m", "ssd_tui", "diff", str(parent), str(cfg.run_dir)],
        capture_output=True,
        text=True,
    )
    assert d.returncode == 1
    lines = d.stdout.splitlines()
    assert any(ln.startswith("lineage (") for ln in lines), d.stdout
    assert any(
        ln.split()[:1] == ["parent_run"] and ln.endswith(f"A –  |  B {parent.resolve()}")
        for ln in lines
    ), d.stdout
    assert any(ln.split()[:1] == ["parent_round"] and ln.endswith("B 2") for ln in lines)
    # An export carries the lineage (a round's and the run's).
    from ssd_tui.outputs.export import export_run

    out = export_run(db, tmp_path / "r0.db", round=0)
    exported = RunStore.open(out, readonly=True)
    assert exported.meta("parent_run") == str(parent.resolve())
    assert exported.meta("parent_round") == "2"
    exported.close()

    # The same command again, with or without --from: nothing changes.
    before = snapshot(db)
    assert run_cli(config).returncode == 0
    assert run_cli(config, "--from", str(parent), "--round", "2").returncode == 0
    assert snapshot(db) == before
    other = run_cli(config, "--from", str(parent), "--round", "1")
    assert other.returncode == 2 and "is a branch of" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_another_evaluation_is_computed_here(fake_parent, tmp_path, tiny_model_dir) -> None:
    """A branch whose T_eval differs from its parent's evaluates round 0 itself, and says
    why; its lineage is recorded all the same."""
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=0, eval__temperature=0.5)
    r = run_fake(config, "--from", str(fake_parent / "run.db"), "--round", "1")
    assert r.returncode == 0, r.stderr
    store = RunStore.open(load_config(config).db_path, readonly=True)
    assert store.stage(0, "evaluate")["reused_from"] is None
    why = [e["message"] for e in store.events() if "not taken from" in e["message"]]
    assert why and "its config differs in eval.temperature" in why[0]
    assert store.count_samples(0, "eval", 0.5) == 3 * 2 and store.meta("parent_round") == "1"
    store.close()


def test_wrong_branches_are_one_line_errors(fake_parent, tmp_path, tiny_model_dir) -> None:
    from conftest import build_tiny_model

    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=1)
    cases = [
        (["--from", str(fake_parent), "--round", "5"], "round 5 of"),
        (["--from", str(tmp_path / "none"), "--round", "1"], "no run database there"),
        (["--round", "1"], "--round K goes with --from"),
        (["--from", str(fake_parent)], "say which of its rounds"),
    ]
    for args, message in cases:
        r = run_fake(config, *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any run folder is made
    same = write_config(tmp_path, tiny_model_dir, run__dir=str(fake_parent))
    r = run_fake(same, "--from", str(fake_parent), "--round", "1")
    assert r.returncode == 2 and "a run folder of its own" in r.stderr
    other_model = build_tiny_model(tmp_path / "other-model", seed=1)
    config = write_config(tmp_path, other_model, rounds=1)
    r = run_fake(config, "--from", str(fake_parent), "--round", "1")
    assert r.returncode == 2 and "is not the model that run trained" in r.stderr, r.stderr


def test_the_app_writes_a_branch_config(fake_parent, tmp_path) -> None:
    """The app's branch action: the parent's own config, renamed, in a new folder, every
    path naming the same files from there."""
    runs = tmp_path / "runs"
    path = branch_config(fake_parent, "t-r1", runs)
    cfg, pcfg = load_config(path), load_config(fake_parent / "config.toml")
    assert (cfg.run.name, cfg.run_dir) == ("t-r1", (runs / "t-r1").resolve())
    assert cfg.resolve(cfg.data.benchmark) == pcfg.resolve(pcfg.data.benchmark)
    assert cfg.resolve(cfg.model.path) == pcfg.resolve(pcfg.model.path)
    assert cfg.sampling == pcfg.sampling and cfg.rounds == pcfg.rounds
    with pytest.raises(Exception, match="exists"):
        branch_config(fake_parent, "t-r1", runs)
