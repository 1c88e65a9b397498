"""Two SSD rounds on a tiny model made in the test: each round's model really is the one
sampled and evaluated (the adapter chain), the temperature-only baseline stage, the
fork/lock probe as the pipeline wires it (the paper's KeptMass under the *training*
truncation), truncated samples in training, and the run's reproducibility record."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from runkit import run_fake, write_config, write_problems

from ssd_tui.analysis import rounds as analysis
from ssd_tui.config import load_config
from ssd_tui.errors import SSDError
from ssd_tui.models import file_sha256
from ssd_tui.runs import record
from ssd_tui.runs.pipeline import Pipeline, derive_seed
from ssd_tui.store.run_store import RunStore


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, tiny_model_dir):
    """A finished 2-round run (baseline stage on, top-p in training so KeptMass < 1)."""
    folder = tmp_path_factory.mktemp("two-rounds")
    write_problems(folder, n_train=4)
    config = write_config(
        folder,
        tiny_model_dir,
        rounds=2,
        sampling__top_p=0.9,
        eval__top_p=1.0,
        eval__baseline_temperatures=[0.5],
        train__epochs=1,
    )
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store, config_toml=config.read_text())
    pipe.prepare()
    assert pipe.run() == "done"
    pipe.release_sampler()
    yield folder, config, cfg, store
    store.close()


def _regenerate(pipe: Pipeline, rnd: int, purpose: str, adapter: str | None) -> list[str]:
    """The first batch of a generate stage, drawn again with the model named by `adapter`."""
    cfg = pipe.cfg
    if purpose == "train":
        params, problems, size = (
            cfg.train_sampling(cfg.run.seed),
            pipe.train_problems,
            cfg.sampling.batch_size,
        )
    else:
        params, problems, size = (
            cfg.eval_sampling(cfg.run.seed),
            pipe.eval_problems,
            cfg.eval.batch_size,
        )
    seed = derive_seed(cfg.run.seed, rnd, purpose, params.temperature, 0)
    sampler = pipe.engines.sampler(adapter)
    outs = sampler.generate([pipe.render(p) for p in problems[:size]], replace(params, seed=seed))
    return [c.text for comps in outs for c in comps]


def _stored(store: RunStore, rnd: int, purpose: str, t: float, count: int) -> list[str]:
    return [s["completion"] for s in store.samples(rnd, purpose, t)][:count]


def test_each_round_samples_from_the_previous_rounds_adapter(two_rounds):
    """Fails when round 2 samples from the base model (or ignores the adapters)."""
    _, _, cfg, store = two_rounds
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    a1, a2 = pipe.adapter_of(1), pipe.adapter_of(2)
    assert a1 != a2 and Path(a1).is_dir() and Path(a2).is_dir()
    try:
        n = cfg.sampling.batch_size * cfg.sampling.samples_per_prompt
        stored = _stored(store, 2, "train", cfg.sampling.temperature, n)
        assert _regenerate(pipe, 2, "train", a1) == stored  # round 2 samples from model 1
        assert _regenerate(pipe, 2, "train", None) != stored  # …which is not the base model
        m = cfg.eval.batch_size * cfg.eval.samples_per_problem
        evals = _stored(store, 2, "eval", cfg.eval.temperature, m)
        assert _regenerate(pipe, 2, "eval", a2) == evals  # round 2 is evaluated as model 2
        assert _regenerate(pipe, 2, "eval", a1) != evals
    finally:
        pipe.release_sampler()


def _lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_round_2_trains_on_from_round_1s_adapter(two_rounds, tmp_path):
    """Training round 2 again from round 1's adapter gives the stored adapter; from the base
    model (round 1's adapter ignored) it does not."""
    from ssd_tui.engine.hf import HFTrainer

    _, _, cfg, store = two_rounds
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    kept, _ = pipe.train_examples(2)
    stored = _lora_weights(Path(pipe.adapter_of(2)))

    def train(init: str | None, out: Path) -> dict[str, torch.Tensor]:
        trainer = HFTrainer(pipe.model_path, cfg.lora_settings(), cfg.train_settings())
        trainer.train(kept, out, init_adapter=Path(init) if init else None)
        return _lora_weights(out)

    again = train(pipe.adapter_of(1), tmp_path / "again")
    fresh = train(None, tmp_path / "fresh")
    gap = max(float((again[k] - stored[k]).abs().max()) for k in stored)
    fresh_gap = max(float((fresh[k] - stored[k]).abs().max()) for k in stored)
    assert gap < 1e-5 < fresh_gap / 100


def test_baseline_stage_and_the_wired_probe(two_rounds):
    _, _, cfg, store = two_rounds
    stages = [(s["round"], s["stage"], s["status"]) for s in store.stages()]
    assert (0, "baseline", "done") in stages
    assert store.count_samples(0, "eval", 0.5) == 3 * 2  # the temperature-only baseline
    assert store.metric(0, "pass@1", "eval", 0.5) is not None
    assert [p["temperature"] for p in analysis.baseline_curve(store)] == [0.5, 1.0]
    for rnd in (0, 1, 2):
        scored = store.probe_stats(rnd)
        assert scored, f"round {rnd} has no probe"
        train_kept = np.concatenate([1.0 - s["train_tail_mass"] for s in scored.values()])
        eval_kept = np.concatenate([1.0 - s["tail_mass"] for s in scored.values()])
        # Eval: T 1.0, no truncation → nothing cut. Training: top-k 50 + top-p 0.9 → cut.
        assert np.allclose(eval_kept, 1.0)
        assert (train_kept < 1.0 - 1e-6).mean() > 0.5
        got = store.metric(rnd, "train_kept_mass", "probe", cfg.eval.temperature)
        assert got == pytest.approx(float(train_kept.mean()), abs=1e-6)
        assert store.metric(rnd, "kept_mass", "probe", cfg.eval.temperature) == pytest.approx(1.0)
    row = analysis.round_summary(store, cfg)[2]
    assert row["probe train_kept_mass"] < 1.0 and row["probe kept_mass"] == pytest.approx(1.0)


def test_length_cut_samples_are_counted_and_trained_without_eos(two_rounds):
    _, _, cfg, store = two_rounds
    for rnd in (1, 2):
        rows = store.samples(rnd, "train")
        cut = sum(r["finish_reason"] == "length" for r in rows)
        assert cut > 0  # 12 new tokens: most samples hit the cap
        t = cfg.sampling.temperature
        assert store.metric(rnd, "truncated_samples", "train", t) == cut
        assert store.metric(rnd, "trained_truncated", "train", t) == cut  # default: keep
    msgs = [e["message"] for e in store.events(limit=10_000)]
    assert any("cut at max_new_tokens kept without EOS" in m for m in msgs)


def test_the_record(two_rounds):
    folder, config, cfg, store = two_rounds
    meta = dict(store.conn.execute("SELECT key, value FROM meta").fetchall())
    for key in record.RECORD_KEYS:
        assert key in meta, key
    import torch
    import transformers

    assert meta["torch"] == torch.__version__.split("+")[0] or meta["torch"] == torch.__version__
    assert meta["transformers"] == transformers.__version__
    assert len(meta["model_sha256"]) == 64 and meta["platform"] and meta["cpu"]
    sets = json.loads(meta["problems"])
    eval_file = str(folder / "eval.jsonl")
    assert sets["eval"]["files"] == {eval_file: file_sha256(Path(eval_file))}
    assert sets["eval"]["count"] == 3 and sets["train"]["count"] == 4
    trainer = json.loads(meta["trainer"])
    assert trainer["schedule"] == "cosine" and trainer["max_grad_norm"] == 1.0
    assert meta["prompt_example"].startswith("def add(a, b):")  # completion style: the prompt
    assert "prompt + completion" in meta["extraction_rule"]
    history = store.config_history()
    assert history[0]["event"] == "start" and history[0]["config_toml"] == config.read_text()
    assert json.loads(history[0]["environment"])["python"] == meta["python"]


def test_resume_appends_history_and_refuses_an_edited_problem_file(tmp_path, tiny_model_dir):
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=0)
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    for _ in range(2):  # a start, then a resume: the history grows, nothing is overwritten
        Pipeline(cfg, store, config_toml=config.read_text()).prepare()
    assert [h["event"] for h in store.config_history()] == ["start", "resume"]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(eval_file.read_text().replace("Return a plus b.", "Add them."))
    with pytest.raises(SSDError, match="eval.jsonl changed since this run started"):
        Pipeline(cfg, store).prepare()
    assert len(store.config_history()) == 2  # a refused resume records nothing
    store.close()
    r = run_fake(config)  # `ssd-tui run`'s path; refused before any engine is built
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(eval_file) in lines[0] and "start a new run folder" in lines[0]


def test_an_analysis_failure_fails_the_stage(two_rounds, monkeypatch):
    """An analysis that cannot even be imported is an error, never a silent skip.
    (Last in this file: it leaves round 0's analyse stage marked failed.)"""
    _, _, cfg, store = two_rounds
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    import ssd_tui.analysis

    monkeypatch.setitem(sys.modules, "ssd_tui.analysis.rounds", None)  # import fails…
    monkeypatch.delattr(
        ssd_tui.analysis, "rounds"
    )  # …also for `from ssd_tui.analysis import rounds`
    with pytest.raises(ImportError):
        pipe._run_stage(0, "analyse")
    assert store.stage(0, "analyse")["status"] == "failed"
    msgs = [e["message"] for e in store.events(limit=10_000)]
    # ModuleNotFoundError, an ImportError
    assert any("analyse failed:" in m and "ssd_tui.analysis.rounds" in m for m in msgs), msgs[-3:]


def test_a_training_set_first_loaded_on_a_resume_is_recorded_and_checked(tmp_path, tiny_model_dir):
    # A run started with rounds = 0 loads no training prompts; taken past round 0 later,
    # its training set enters the record then, and a later resume checks it.
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=0)
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    Pipeline(cfg, store, config_toml=config.read_text()).prepare()
    assert list(json.loads(store.meta("problems"))) == ["eval"]
    Pipeline(cfg, store).prepare(rounds=1)
    assert list(json.loads(store.meta("problems"))) == ["eval", "train"]
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text().replace("times 3", "plus 3"))
    with pytest.raises(SSDError, match="train.jsonl changed since this run started"):
        Pipeline(cfg, store).prepare(rounds=1)
    store.close()
