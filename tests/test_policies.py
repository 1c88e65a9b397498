"""Rounds you can steer (docs/rounds.md): the data and adapter policies, [control]'s stop,
rollback and no-gain decisions, each shown to act (a test that fails when the policy is
ignored), and a kill -9 in the middle of a round under each policy resuming to exactly the
uninterrupted run.

Real runs of the tiny model (tests/conftest.py) throughout, except where a test needs
rounds whose pass@1 differ on purpose (a best round to roll back to, a collapse on cue):
the tiny random model passes no test, so there a scripted sampler answers by the adapter
it is given; the trainer, the sandbox, the analysis and the store stay real.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from pathlib import Path

import pytest
import torch
from runkit import run_cli, snapshot, wait_for_stage, write_config, write_problems

from ssd_tui.analysis import control
from ssd_tui.config import RoundsSection, load_config, loads_config
from ssd_tui.engine.base import Completion
from ssd_tui.errors import SSDError
from ssd_tui.models import adapter_sha256, file_sha256
from ssd_tui.runs import policies
from ssd_tui.runs.pipeline import Pipeline
from ssd_tui.store.run_store import RunStore


def _run(folder: Path, model: Path, rounds: int, make_sampler=None, **over):
    """A finished in-process run of ``write_config``'s tiny project."""
    write_problems(folder)
    config = write_config(folder, model, rounds=rounds, **over)
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store, make_sampler=make_sampler, config_toml=config.read_text())
    pipe.prepare()
    status = pipe.run()
    pipe.release_sampler()
    return cfg, store, pipe, status


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _retrain(pipe: Pipeline, rnd: int, base: str, init: str | None, out: Path):
    """Round ``rnd``'s training set trained again on ``base`` from ``init``."""
    from ssd_tui.engine.hf import HFTrainer

    cfg = pipe.cfg
    kept, _ = pipe.train_examples(rnd)
    trainer = HFTrainer(base, cfg.lora_settings(), cfg.train_settings())
    trainer.train(kept, out, init_adapter=Path(init) if init else None)
    return _weights(out)


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---- the choices on their own ---------------------------------------------------------------
def test_training_set_policies() -> None:
    kept = {1: [f"a{i}" for i in range(8)], 2: [f"b{i}" for i in range(6)], 3: ["c0", "c1"]}
    pick = kept.__getitem__
    latest = RoundsSection()
    assert policies.training_set(latest, 3, [3, 2, 1], pick, 7) == ["c0", "c1"]
    epochs = RoundsSection(data="accumulate", accumulate_budget="epochs")
    assert policies.training_set(epochs, 3, [3, 2, 1], pick, 7) == kept[1] + kept[2] + kept[3]
    # a rollback to round 1 left round 2 off the line: its samples are not accumulated
    assert policies.training_set(epochs, 3, [3, 1], pick, 7) == kept[1] + kept[3]
    steps = RoundsSection(data="accumulate")  # the default budget: round 3's own count
    drawn = policies.training_set(steps, 2, [2, 1], pick, 7)
    assert len(drawn) == 6 and set(drawn) <= set(kept[1] + kept[2])
    assert {x[0] for x in drawn} == {"a", "b"}  # from both rounds
    assert drawn == policies.training_set(steps, 2, [2, 1], pick, 7)  # seeded: the same again
    assert drawn != policies.training_set(steps, 2, [2, 1], pick, 8)
    anchor = RoundsSection(data="anchor", anchor_share=0.5)
    mixed = policies.training_set(anchor, 2, [2, 1], pick, 7)
    assert len(mixed) == 6 and sum(x[0] == "a" for x in mixed) == 3
    assert policies.training_set(anchor, 1, [1], pick, 7) == kept[1]  # round 1 is the anchor


def _score(rnd: int, passed: list[int], n: int = 4) -> control.RoundScore:
    return control.RoundScore(rnd, {f"p{i}": c / n for i, c in enumerate(passed)})


def test_the_best_round_and_rounds_without_gain() -> None:
    r0 = _score(0, [1, 1, 2, 2, 0, 1])
    up = _score(1, [3, 3, 4, 3, 2, 3])  # +0.5 everywhere but noise: a clear gain
    near = _score(2, [4, 4, 4, 2, 2, 3])  # +0.042 over round 1, se 0.077: no gain
    w = control.walk([r0, up, near])
    assert (w.best, w.without_gain) == (1, 1)
    assert w.steps[1]["diff"] == pytest.approx(near.pass1 - up.pass1, abs=1e-6)
    assert w.steps[1]["se"] > w.steps[1]["diff"] > 0  # higher, yet the earlier round stays best
    warn = [{"rule": "unique_share_low", "message": "m"}]
    d = control.decide(2, [r0, up, near], warn, "rollback", 0)
    assert (d.action, d.rule, d.next_source) == ("rollback", "on_collapse", 1)
    assert "samples from round 1" in d.message and d.evidence["best_round"] == 1
    assert control.decide(2, [r0, up, near], [], "rollback", 0).action == "continue"
    assert control.decide(2, [r0, up, near], warn, "warn", 0).action == "continue"
    stop = control.decide(2, [r0, up, near], warn, "stop", 0)
    assert (stop.action, stop.rule, stop.next_source) == ("stop", "on_collapse", None)
    no_gain = control.decide(2, [r0, up, near], [], "warn", 1)
    assert (no_gain.action, no_gain.rule) == ("stop", "stop_after_no_gain")
    assert control.decide(2, [r0, up, near], [], "warn", 2).action == "continue"
    # round 2 collapses but is the best so far: nothing to roll back to
    best_now = control.decide(1, [r0, up], warn, "rollback", 0)
    assert (best_now.action, best_now.next_source) == ("continue", 1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('data = "all"', "[rounds] data must be one of 'latest', 'accumulate', 'anchor'"),
        ("anchor_share = 1.5", "[rounds] anchor_share must be in [0.0, 1.0]"),
        ('accumulate_budget = "tokens"', "[rounds] accumulate_budget must be one of"),
        ('adapter = "merged"', "[rounds] adapter must be one of 'continue', 'fresh', 'merge'"),
    ],
)
def test_bad_rounds_keys_are_one_line_naming_file_line_key(line: str, message: str) -> None:
    text = f'[model]\npath = "m"\n[data]\nbenchmark = "b"\n[run]\nrounds = 0\n[rounds]\n{line}\n'
    with pytest.raises(SSDError) as e:
        loads_config(text, source="x.toml")
    assert str(e.value).startswith("x.toml:8: ") and message in str(e.value)
    bad = '[model]\npath = "m"\n[data]\nbenchmark = "b"\n[control]\nstop_after_no_gain = -1\n'
    with pytest.raises(SSDError, match=r"^x.toml:6: \[control\] stop_after_no_gain must be ≥ 0"):
        loads_config(bad, source="x.toml")


# ---- the data and adapter policies in real runs -------------------------------------------------
def test_fresh_adapters_and_an_anchored_training_set(tmp_path, tiny_model_dir) -> None:
    """adapter = "fresh": round 2's weights are what training from the base model on
    round 2's set gives, whatever round 1's adapter was (from round 1's adapter they are
    not). data = "anchor": half of round 2's set is round 1's samples."""
    cfg, store, pipe, _ = _run(
        tmp_path,
        tiny_model_dir,
        2,
        rounds__adapter="fresh",
        rounds__data="anchor",
        rounds__anchor_share=0.5,
        train__epochs=1,
    )
    assert store.rounds()[2]["base_path"] is None  # on the run's own model
    stored = _weights(Path(pipe.adapter_of(2)))
    fresh = _retrain(pipe, 2, pipe.model_path, None, tmp_path / "fresh")
    continued = _retrain(pipe, 2, pipe.model_path, pipe.adapter_of(1), tmp_path / "continued")
    assert _gap(fresh, stored) < 1e-5 < _gap(continued, stored) / 100
    own = len(pipe._kept(2)[0])
    by_round = {}
    for rnd in store.train_set(2).values():
        by_round[rnd] = by_round.get(rnd, 0) + 1
    assert by_round == {1: round(0.5 * own), 2: own - round(0.5 * own)}
    assert store.metric(2, "trained_samples", "train") == own
    assert set(store.train_set(1).values()) == {1}
    store.close()


def test_accumulated_data_on_merged_weights(tmp_path, tiny_model_dir) -> None:
    """data = "accumulate" (budget "epochs"): round 3's set holds every kept sample of
    rounds 1-3. adapter = "merge": round k's adapter trains fresh on a copy of round k-1's
    model with its adapter merged in (merged/round-K-1/), the base folder untouched, and
    round k's model (copy ⊕ adapter) is what the pipeline sampled and evaluated."""
    before = {p.name: file_sha256(p) for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    cfg, store, pipe, _ = _run(
        tmp_path,
        tiny_model_dir,
        3,
        rounds__adapter="merge",
        rounds__data="accumulate",
        rounds__accumulate_budget="epochs",
        train__epochs=1,
    )
    after = {p.name: file_sha256(p) for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    assert after == before  # the base weights are never written
    want = {sid for r in (1, 2, 3) for sid, _ in pipe._kept(r)[0]}
    assert set(store.train_set(3)) == want and set(store.train_set(3).values()) == {1, 2, 3}
    rows = store.rounds()
    assert [r["base_path"] for r in rows] == [None, None, "merged/round-001", "merged/round-002"]
    merged1 = tmp_path / "run" / "merged" / "round-001"
    # The copy is base ⊕ adapter 1, merged: peft's own merge of the same gives the same tensors.
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref = PeftModel.from_pretrained(base, pipe.adapter_of(1)).merge_and_unload().state_dict()
    copy = load_file(str(merged1 / "model.safetensors"))
    assert max(float((ref[k] - copy[k]).abs().max()) for k in copy) < 1e-6
    # Round 2's adapter: a new one on the copy (round 1's adapter not continued).
    stored = _weights(Path(pipe.adapter_of(2)))
    again = _retrain(pipe, 2, str(merged1), None, tmp_path / "again")
    on_base = _retrain(pipe, 2, pipe.model_path, pipe.adapter_of(1), tmp_path / "on-base")
    assert _gap(again, stored) < 1e-5 < _gap(on_base, stored) / 100
    # Round 2's model, as stored (base folder + adapter folder), evaluates as the stage did.
    model = pipe.model_of(2)
    assert (model.base, Path(model.adapter).name) == (str(merged1), "round-002")
    assert _first_eval_batch(pipe, 2, model) == _stored_eval_batch(store, cfg, 2)
    assert _first_eval_batch(pipe, 2, pipe.model_of(1)) != _stored_eval_batch(store, cfg, 2)
    pipe.release_sampler()
    store.close()


def _first_eval_batch(pipe: Pipeline, rnd: int, model) -> list[str]:
    from dataclasses import replace

    from ssd_tui.engine.hf import HFSampler
    from ssd_tui.runs.pipeline import derive_seed

    cfg = pipe.cfg
    params = cfg.eval_sampling(cfg.run.seed)
    seed = derive_seed(cfg.run.seed, rnd, "eval", params.temperature, 0)
    size = cfg.engine_settings().batch_size  # the pipeline's: another one draws otherwise
    with HFSampler(model.base, adapter=Path(model.adapter), batch_size=size) as sampler:
        prompts = [pipe.render(p) for p in pipe.eval_problems[: cfg.eval.batch_size]]
        outs = sampler.generate(prompts, replace(params, seed=seed))
    return [c.text for comps in outs for c in comps]


def _stored_eval_batch(store: RunStore, cfg, rnd: int) -> list[str]:
    n = cfg.eval.batch_size * cfg.eval.samples_per_problem
    return [s["completion"] for s in store.samples(rnd, "eval", cfg.eval.temperature)][:n]


# ---- [control] ------------------------------------------------------------------------------------
def test_no_gain_stops_the_run_and_a_rerun_decides_the_same(tmp_path, tiny_model_dir) -> None:
    """The tiny random model passes nothing: round 1 is no gain over round 0, so with
    stop_after_no_gain = 1 the run ends before round 2's sampling, on stored numbers."""
    cfg, store, pipe, status = _run(
        tmp_path, tiny_model_dir, 3, control__stop_after_no_gain=1, train__epochs=1
    )
    assert status == "stopped"
    assert [r["round"] for r in store.rounds()] == [0, 1]  # round 2 was never planned
    [d] = store.decisions()
    assert (d["round"], d["action"], d["rule"], d["next_source"]) == (
        1,
        "stop",
        "stop_after_no_gain",
        None,
    )
    ev = d["evidence"]
    assert ev["pass@1"] == {"0": store.metric(0, "pass@1"), "1": store.metric(1, "pass@1")}
    assert ev["steps"][0]["gain"] is False and ev["rounds_without_gain"] == 1
    assert "1 round(s) without a pass@1 gain" in d["message"]
    events = [e for e in store.events() if e["stage"] == "control"]
    assert [e["message"] for e in events] == [d["message"]]  # the decision is in the log
    before = snapshot(cfg.db_path)
    pipe2 = Pipeline(cfg, store)
    pipe2.prepare()
    assert pipe2.run() == "stopped"  # the same command again: the same decision, once
    assert snapshot(cfg.db_path) == before and store.decisions() == [d]
    store.close()
    r = run_cli(tmp_path / "run.toml")  # and `ssd-tui run` says so, exit 0
    assert r.returncode == 0 and "stopped by [control]" in r.stderr, r.stderr
    assert "stop_after_no_gain = 1: the run ends" in r.stderr
    assert snapshot(cfg.db_path) == before


ANSWERS = {
    "add": ("    return a + b\n", "    return b + a\n"),
    "neg": ("    return -x\n", "    return 0 - x\n"),
    "first": ("    return xs[0]\n", "    return list(xs)[0]\n"),
}
WRONG = ("    return None\n", "    return 0\n")


class ScriptedSampler:
    """Answers by the adapter it is built with: round 1's model solves the evaluation
    problems, round 2's gives one wrong answer per problem (a collapse the unique-share
    rule sees), any other model two different wrong ones. Training prompts get distinct
    programs that name the adapter they were sampled from by its hash."""

    def __init__(self, adapter: str | None) -> None:
        self.name = Path(adapter).name if adapter else "base"
        self.sha = adapter_sha256(Path(adapter)) if adapter else "base"

    def generate(self, prompts, params, progress=None) -> list[list[Completion]]:
        return [[self._answer(p, j) for j in range(params.n)] for p in prompts]

    def _answer(self, prompt: str, j: int) -> Completion:
        entry = next((e for e in ANSWERS if f"def {e}(" in prompt), None)
        if entry is None:
            task = re.search(r"def task_(\d+)", prompt)
            text = f"    y = x * {task[1] if task else 0} + {j}\n    return y  # {self.sha[:12]}\n"
        elif self.name == "round-001":
            text = ANSWERS[entry][j % 2]
        else:
            text = WRONG[0] if self.name == "round-002" else WRONG[j % 2]
        return Completion(text, [5, 6, 7], [-0.5] * 3, [1.0] * 3, [0.0] * 3)

    def close(self) -> None:
        pass


def test_rollback_samples_from_the_best_rounds_adapter(tmp_path, tiny_model_dir) -> None:
    """Round 1 solves everything, round 2 collapses (one answer per problem): with
    on_collapse = "rollback" round 3 samples from round 1's model, checked by the adapter
    hash each of its samples carries, and continues training round 1's adapter."""
    cfg, store, pipe, status = _run(
        tmp_path,
        tiny_model_dir,
        3,
        make_sampler=ScriptedSampler,
        control__on_collapse="rollback",
        analysis__max_unique_share_drop=0.4,
        train__epochs=1,
    )
    assert status == "done"
    assert [store.metric(r, "pass@1") for r in range(4)] == [0.0, 1.0, 0.0, 0.0]
    assert "unique_share_low" in {w["rule"] for w in store.warnings(2)}
    d = store.decision(2)
    assert (d["action"], d["rule"], d["next_source"]) == ("rollback", "on_collapse", 1)
    assert d["evidence"]["best_round"] == 1 and d["evidence"]["pass@1"]["1"] == 1.0
    rows = store.rounds()
    assert [r["source_round"] for r in rows] == [None, 0, 1, 1]
    sha1 = rows[1]["adapter_sha256"]
    marks = {s["completion"].rsplit("# ", 1)[1].strip() for s in store.samples(3, "train")}
    assert marks == {sha1[:12]} and sha1 != rows[2]["adapter_sha256"]
    assert pipe.line_of(3) == [3, 1]  # round 2's samples are off the line now
    stored = _weights(Path(pipe.adapter_of(3)))
    from_best = _retrain(pipe, 3, pipe.model_path, pipe.adapter_of(1), tmp_path / "best")
    from_last = _retrain(pipe, 3, pipe.model_path, pipe.adapter_of(2), tmp_path / "last")
    assert _gap(from_best, stored) < 1e-5 < _gap(from_last, stored) / 100
    store.close()


def test_collapse_stops_the_run_before_the_next_sampling(tmp_path, tiny_model_dir) -> None:
    cfg, store, pipe, status = _run(
        tmp_path,
        tiny_model_dir,
        3,
        make_sampler=ScriptedSampler,
        control__on_collapse="stop",
        analysis__max_unique_share_drop=0.4,
        train__epochs=1,
    )
    assert status == "stopped" and [r["round"] for r in store.rounds()] == [0, 1, 2]
    d = store.decision(2)
    assert (d["action"], d["rule"]) == ("stop", "on_collapse")
    assert "unique_share_low" in d["message"] and "before round 3's sampling" in d["message"]
    assert {w["rule"] for w in store.warnings(2)} <= {w["rule"] for w in d["evidence"]["warnings"]}
    store.close()


# ---- kill -9 in the middle of a round, under each policy ------------------------------------------
POLICIES = {
    "accumulate+merge": {"rounds__data": "accumulate", "rounds__adapter": "merge"},
    "anchor+fresh": {
        "rounds__data": "anchor",
        "rounds__anchor_share": 0.5,
        "rounds__adapter": "fresh",
    },
    # Every length change counts as drift, and a stop at "e" makes eval lengths vary: round
    # 1's rules fire, and the base model (round 0, no worse than a tiny random model's
    # round 1) is the best round to go back to.
    "rollback": {
        "control__on_collapse": "rollback",
        "analysis__max_length_drift": 0.0,
        "eval__stop": ["e", "\ndef "],
    },
}


def full_snapshot(db: Path) -> dict:
    """runkit's snapshot plus what the policies write: decisions, training sets, and what
    each round's model is."""
    snap = snapshot(db)
    c = sqlite3.connect(db)
    snap["decisions"] = c.execute(
        "SELECT round, action, rule, next_source, message, evidence FROM decisions ORDER BY round"
    ).fetchall()
    snap["train_sets"] = c.execute(
        "SELECT t.round, s.round, p.name, s.sample_idx FROM train_sets t JOIN samples s "
        "ON s.id = t.sample_id JOIN problems p ON p.id = s.problem_id ORDER BY 1, 2, 3, 4"
    ).fetchall()
    snap["rounds"] = c.execute(
        "SELECT round, status, base_path, source_round FROM rounds ORDER BY round"
    ).fetchall()
    c.close()
    return snap


def _policy_project(folder: Path, model: Path, policy: str) -> Path:
    write_problems(folder, n_train=24)
    return write_config(folder, model, rounds=2, eval__max_new_tokens=24, **POLICIES[policy])


@pytest.mark.engine  # real runs on the tiny model, killed and resumed: the engine tier
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("policy", "stage"),
    [("accumulate+merge", "train"), ("anchor+fresh", "train"), ("rollback", "sample")],
)
def test_kill_9_in_round_2_resumes_to_the_uninterrupted_run(
    tmp_path, tiny_model_dir, policy, stage
):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    config = _policy_project(ref_dir, tiny_model_dir, policy)
    r = run_cli(config)
    assert r.returncode == 0, r.stderr
    reference = full_snapshot(load_config(config).db_path)
    if policy == "rollback":  # the policy acted: round 2 samples from the base model
        assert [d[:4] for d in reference["decisions"]] == [(1, "rollback", "on_collapse", 0)]
        assert reference["rounds"][2][3] == 0
    else:
        assert {row[1] for row in reference["train_sets"] if row[0] == 2} == {1, 2}
    for attempt in range(4):  # until the kill lands inside the stage (see test_pipeline)
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        config = _policy_project(folder, tiny_model_dir, policy)
        db = load_config(config).db_path
        proc = run_cli(config, wait=False)
        caught = wait_for_stage(db, stage, 2, timeout=180)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = run_cli(config)
        assert r.returncode == 0, r.stderr
        assert full_snapshot(db) == reference
        if caught:
            break
    assert caught, f"never caught {stage} of round 2 running under {policy}"
    if policy == "accumulate+merge":
        assert (db.parent / "merged" / "round-001" / "config.json").is_file()
        assert not (db.parent / "merged" / "round-001.tmp").exists()


def test_decision_evidence_is_json(tmp_path) -> None:
    """The decisions table holds plain JSON any SQLite client can read."""
    store = RunStore.open(tmp_path / "run.db", create=True)
    store.plan_round(1, [])
    store.add_decision(1, "stop", "stop_after_no_gain", None, "m", {"pass@1": {"0": 0.5}})
    raw = store.conn.execute("SELECT evidence FROM decisions").fetchone()[0]
    assert json.loads(raw) == {"pass@1": {"0": 0.5}}
    store.close()
