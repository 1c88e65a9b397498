"""benchmarks/round_flops.py: the arithmetic bench_round.py divides by, checked against the
model it describes and against sums done by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rf() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "round_flops", ROOT / "benchmarks" / "round_flops.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["round_flops"] = mod  # its dataclass looks the module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_the_shape_counts_the_models_linear_weights(
    rf: ModuleType, tiny_model_dir: Path, which: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = tiny_model_dir if which == "tiny" else ROOT / "assets" / "demo-model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    head = model.get_output_embeddings()
    linear = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )
    shape = rf.Shape.from_config(folder)
    assert shape.body_params == linear
    assert shape.head_params == head.weight.numel()


def test_forward_sampling_and_training_by_hand(rf: ModuleType) -> None:
    s = rf.Shape(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, ffn=16, vocab=10)
    body = 2 * (2 * 8 * 8 + 2 * 8 * 4 + 3 * 8 * 16)  # q+o, k+v, gate+up+down; 2 layers
    assert s.body_params == body
    attn_per_pair = 4 * 2 * 4 * 2  # heads x head size x layers, score + value products
    # positions 1..3, logits at the last one: each position t attends to t positions
    assert s.forward(0, 3, 1) == 2 * body * 3 + 2 * 80 + attn_per_pair * (1 + 2 + 3)
    # positions 4..5 with the first 3 cached
    assert s.forward(3, 5, 2) == 2 * body * 2 + 2 * 80 * 2 + attn_per_pair * (4 + 5)
    # a prompt of 3 tokens, samples of 3 and 1 tokens: one prefill, then 2 and 0 tokens fed back
    assert rf.sampling_flops(s, {7: (3, [3, 1])}) == s.forward(0, 3, 1) + s.forward(3, 5, 2)
    assert rf.teacher_forced_flops(s, [(3, 2)]) == s.forward(0, 5, 2)
    assert rf.train_flops(s, [(5, 2)], epochs=2, ckpt=False) == 4 * s.forward(0, 5, 2)
    assert rf.train_flops(s, [(5, 2)], epochs=1, ckpt=True) == 3 * s.forward(0, 5, 2)


def test_matmul_rate_is_measured(rf: ModuleType) -> None:
    rate = rf.matmul_rate("float32", n=64, reps=1)
    assert rate is not None and rate > 0
