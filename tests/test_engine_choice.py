"""`[run] engine = "auto"`: which sampler runs, and why (issue 16)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fake_vllm
import pytest
from runkit import run_cli, write_config, write_problems

from ssd_tui.config import load_config
from ssd_tui.engine.choose import MIN_VLLM_PARAMS, choose_engine, count_parameters

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
    choice = choose_engine(cfg, str(tiny_model_dir))
    assert (choice.name, choice.reason) == ("hf", "auto: vLLM is not installed")
    assert not choice.per_stage_processes
    hf = load_config(write_config(tmp_path, tiny_model_dir, run__engine="hf"))
    assert choose_engine(hf, str(tiny_model_dir)).reason.startswith("set in the config")


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
    choice = choose_engine(cfg, str(tiny_model_dir))
    assert choice.name == "vllm" and choice.per_stage_processes
    hot = load_config(
        write_config(tmp_path, tiny_model_dir, run__engine="auto", eval__temperature=2.5)
    )
    assert "above 2" in choose_engine(hot, str(tiny_model_dir)).reason


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
