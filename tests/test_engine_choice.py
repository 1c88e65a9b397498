"""`[run] engine = "auto"`: which sampler runs, and why."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fake_vllm
import pytest
from runkit import run_cli, write_config, write_problems

from ssd_tui.config import load_config
from ssd_tui.engine.base import Completion, EngineSettings, SamplingParams
from ssd_tui.engine.choose import (
    MIN_VLLM_PARAMS,
    EngineChoice,
    Engines,
    choose_engine,
    count_parameters,
)
from ssd_tui.runs.pipeline import Pipeline
from ssd_tui.store.run_store import RunStore

DEMO_MODEL = Path(__file__).resolve().parent.parent / "assets" / "demo-model"


def test_parameters_are_counted_from_the_safetensors_headers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    stored = {n: p.numel() for n, p in model.state_dict().items()}
    got = count_parameters(tiny_model_dir)
    # the headers list what is stored: every tensor once (tied weights are one tensor)
    assert got is not None and got <= sum(stored.values())
    assert got >= model.num_parameters()
    assert count_parameters(DEMO_MODEL) == 1_392_640


def test_without_weights_the_count_is_estimated_from_the_config(tmp_path):
    conf = {"hidden_size": 896, "num_hidden_layers": 24, "vocab_size": 151936}
    (tmp_path / "config.json").write_text(json.dumps(conf))
    est = count_parameters(tmp_path)
    assert est is not None and 400e6 < est < 600e6  # Qwen2.5-0.5B has 494M
    assert count_parameters(tmp_path / "missing") is None


def test_auto_without_vllm_is_transformers_and_says_why(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    write_problems(tmp_path)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, run__engine="auto"))
    choice = choose_engine(cfg.engine_settings(), str(tiny_model_dir))
    assert (choice.name, choice.reason) == ("hf", "auto: vLLM is not installed")
    assert not choice.per_stage_processes
    hf = load_config(write_config(tmp_path, tiny_model_dir, run__engine="hf"))
    assert choose_engine(hf.engine_settings(), str(tiny_model_dir)).reason.startswith(
        "set in the config"
    )


def test_auto_default_and_the_engine_is_not_a_config_change(tmp_path, tiny_model_dir):
    """auto is the default; a run started as "hf" resumes under auto (each stage records
    the engine that drew its samples)."""
    from ssd_tui.config import config_diff

    write_problems(tmp_path)
    auto = load_config(write_config(tmp_path, tiny_model_dir))
    assert auto.run.engine == "auto"
    hf = load_config(write_config(tmp_path, tiny_model_dir, run__engine="hf"))
    assert config_diff(hf, auto) == []


def test_auto_with_vllm_on_a_gpu_uses_it_stage_by_stage(tmp_path, tiny_model_dir, monkeypatch):
    """NAMED FAKE (tests/fake_vllm.py) for the GPU case, which this machine cannot run:
    auto picks vLLM for any model on a GPU, and a GPU engine runs each stage in its own
    process; a temperature vLLM refuses keeps transformers."""
    fake_vllm.install(monkeypatch)
    write_problems(tmp_path)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, run__engine="auto"))
    choice = choose_engine(cfg.engine_settings(), str(tiny_model_dir))
    assert choice.name == "vllm" and choice.per_stage_processes
    hot = load_config(
        write_config(tmp_path, tiny_model_dir, run__engine="auto", eval__temperature=2.5)
    )
    assert "above 2" in choose_engine(hot.engine_settings(), str(tiny_model_dir)).reason


def test_check_prints_the_choice(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from ssd_tui import cli

    monkeypatch.setitem(sys.modules, "vllm", None)
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir)
    assert cli.main(["check", str(config)]) == 0
    assert "engine: hf (auto: vLLM is not installed)" in capsys.readouterr().out


def test_the_threshold_separates_the_demo_from_real_models():
    assert count_parameters(DEMO_MODEL) < MIN_VLLM_PARAMS < 494_000_000


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed"
)
def test_engine_vllm_without_vllm_is_one_line(tmp_path, tiny_model_dir):
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, run__engine="vllm")
    proc = run_cli(config)
    assert proc.returncode == 2 and "vllm" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr


# ---- Engines: the sampler, trainer and scoring model a run's stages use ---------------------


class FakeSampler:
    """A sampler without a model: what a test injects through ``make_sampler``."""

    def __init__(self, adapter: str | None) -> None:
        self.adapter = adapter
        self.closed = False

    def generate(self, prompts, params: SamplingParams, progress=None):
        one = Completion("    return x\n", [5, 6], [-0.5, -0.1], [1.0, 0.2], [0.0, 0.0])
        return [[one] * params.n for _ in prompts]

    def close(self) -> None:
        self.closed = True


class FakeVLLM(FakeSampler):
    """…with vLLM's adapter switch and engine-start counters."""

    engine_starts = 1
    last_start_s = 21.6

    def set_adapter(self, adapter: str | None) -> None:
        self.adapter = adapter


def _engines(model: Path, choice: EngineChoice, cls: type = FakeSampler):
    made: list[FakeSampler] = []

    def make(adapter: str | None) -> FakeSampler:
        made.append(cls(adapter))
        return made[-1]

    return Engines(EngineSettings(), str(model), choice, make), made


def test_engines_keep_a_sampler_per_adapter_and_hand_the_device_to_the_trainer(tiny_model_dir):
    engines, made = _engines(tiny_model_dir, EngineChoice("hf", "test"))
    base = engines.sampler(None)
    assert engines.sampler(None) is base and engines.holds_sampler(None)
    assert not engines.holds_sampler("a1") and engines.engine_starts() == (0, "")
    one = engines.sampler("a1")
    assert base.closed and one.adapter == "a1" and len(made) == 2
    trainer = engines.trainer()
    assert one.closed and not engines.holds_sampler("a1") and trainer.history == []
    # The sampler has no model to score with: a transformers one is loaded beside it, kept
    # for the same adapter, and freed on request.
    scoring = engines.scoring_model(None)
    assert engines.scoring_model(None).model is scoring.model and engines._scoring
    assert scoring.tokenizer is not None and engines.tokenizer() is engines.tokenizer()
    engines.release_scoring_model()
    assert engines._scoring is None


def test_one_vllm_engine_on_a_cpu_serves_every_adapter_and_the_trainer(tiny_model_dir):
    engines, made = _engines(tiny_model_dir, EngineChoice("vllm", "test", "cpu"), FakeVLLM)
    base = engines.sampler(None)
    assert engines.sampler("a1") is base and base.adapter == "a1" and len(made) == 1
    assert engines.engine_starts() == (1, "vLLM engine started in 22s")
    engines.trainer()
    assert not base.closed and engines.holds_sampler("a1")
    gpu, made = _engines(tiny_model_dir, EngineChoice("vllm", "test", "cuda"), FakeVLLM)
    first = gpu.sampler(None)
    assert gpu.sampler("a1") is not first and first.closed  # a GPU stage is its own process


def test_the_pipeline_samples_through_make_sampler(tmp_path, tiny_model_dir):
    write_problems(tmp_path)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, rounds=0, run__engine="hf"))
    store = RunStore.open(cfg.db_path, create=True)
    made: list[FakeSampler] = []
    pipe = Pipeline(cfg, store, make_sampler=lambda a: made.append(FakeSampler(a)) or made[-1])
    pipe.prepare()
    params = cfg.eval_sampling(seed=cfg.run.seed)
    pipe._generate(0, "evaluate", "eval", pipe.eval_problems, params, None, cfg.eval.batch_size)
    assert [f.adapter for f in made] == [None]
    assert store.count_samples(0, "eval") == len(pipe.eval_problems) * params.n
    assert {s["completion"] for s in store.samples(0, "eval")} == {"    return x\n"}
    pipe.release_sampler()
    assert made[0].closed
    store.close()
