"""The training step's compute choices: none may change the loss or the gradients.

Each test builds a peft LoRA model on the tests' tiny random Llama, gives LoRA's B matrices
random values (a fresh adapter has B = 0, which would make every A gradient zero and the
comparison blind to half the parameters), runs one optimiser step's forward and backward
passes both ways and compares the summed loss and every LoRA gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ssd_tui.engine.base import LoraSettings, TrainSettings
from ssd_tui.engine.hf import HFTrainer, load_tokenizer, plan_passes, train_autocast
from ssd_tui.errors import SSDError

LORA = LoraSettings(r=4, alpha=8, dropout=0.0)
# float32 unless a test asks for bf16: the exact comparisons hold to 1e-5, which bf16 autocast
# ("auto" takes it on CPUs with native bf16, such as AMD Zen 4) does not.
BASE = TrainSettings(
    learning_rate=1e-2, batch_size=4, grad_accum=2, max_length=96, seed=0, autocast="off"
)

# Lengths spread like SSD samples: short stubs to long programs, so padding matters.
EXAMPLES = [
    (f"def f{i}(x):\n", "    y = x\n" * (1 + (i * 7) % 13) + "    return y\n") for i in range(8)
]


def _settings(**kw: object) -> TrainSettings:
    return TrainSettings(**{**BASE.__dict__, **kw})


def _grads(
    model_dir: Path, settings: TrainSettings, passes_of: Callable[[list], list]
) -> tuple[float, dict[str, torch.Tensor]]:
    """(summed loss, LoRA gradients) of one optimiser step over EXAMPLES."""
    trainer = HFTrainer(str(model_dir), LORA, settings)
    tok = load_tokenizer(str(model_dir))
    features = trainer._encode(tok, EXAMPLES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = trainer._peft_model(None)
        if settings.gradient_checkpointing:
            trainer._checkpoint_activations(model)
            base = model.get_base_model()
            assert getattr(base, "is_activation_checkpointing", None) or getattr(
                base, "is_gradient_checkpointing", False
            )
        model.train()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    passes = passes_of(features)
    total, _ = trainer.accumulate(model, passes, passes, tok.pad_token_id)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert len(grads) > 0 and all(g.abs().sum() > 0 for g in grads.values())
    return float(total), grads


def _assert_same(a: tuple, b: tuple, rtol: float, atol: float) -> None:
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, rel=rtol)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=k)


def test_plan_passes_keeps_the_step_and_cuts_padding() -> None:
    lengths = [40, 7, 33, 9, 8, 41, 12, 30]
    feats = [(list(range(n)), 2) for n in lengths]
    plain = plan_passes(feats, 4, group=False)
    grouped = plan_passes(feats, 4, group=True)
    assert plain == [feats[:4], feats[4:]]  # the old chunks, in the seeded order

    def padded(passes: list) -> int:
        return sum(len(p) * max(len(ids) for ids, _ in p) for p in passes)

    # Same examples, each once; as many passes of as many rows as before.
    assert sorted(id(f) for p in grouped for f in p) == sorted(map(id, feats))
    assert [len(p) for p in grouped] == [len(p) for p in plain]
    assert padded(plain) == 4 * 40 + 4 * 41 and padded(grouped) == 4 * 41 + 4 * 12
    # Equal lengths keep their order (stable), so the plan is a function of the order.
    same = [(list(range(10)), i) for i in range(6)]
    assert plan_passes(same, 4, group=True) == [same[:4], same[4:]]


def test_grouping_by_length_changes_neither_loss_nor_gradients(tiny_model_dir: Path) -> None:
    s = _settings()
    plain = _grads(tiny_model_dir, s, lambda f: plan_passes(f, 4, group=False))
    grouped = _grads(tiny_model_dir, s, lambda f: plan_passes(f, 4, group=True))
    _assert_same(plain, grouped, rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_changes_neither_loss_nor_gradients(tiny_model_dir: Path) -> None:
    def passes(f: list) -> list:
        return plan_passes(f, 4, group=True)

    off = _grads(tiny_model_dir, _settings(), passes)
    on = _grads(tiny_model_dir, _settings(gradient_checkpointing=True), passes)
    _assert_same(off, on, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_keeps_loss_and_gradients_within_bf16_precision(
    tiny_model_dir: Path,
) -> None:
    def passes(f: list) -> list:
        return plan_passes(f, 4, group=True)

    fp32 = _grads(tiny_model_dir, _settings(autocast="off"), passes)
    bf16 = _grads(tiny_model_dir, _settings(autocast="bf16"), passes)
    # bf16 keeps 8 bits of mantissa (~0.4 % per rounding): the loss within 1 %; each
    # gradient tensor points the same way (cosine ≥ 0.99) and differs by at most 10 % of
    # its norm (the random tiny model's gradients are small differences of large terms).
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-2)
    for k, g in fp32[1].items():
        h = bf16[1][k]
        assert torch.nn.functional.cosine_similarity(h.flatten(), g.flatten(), dim=0) >= 0.99, k
        assert torch.linalg.norm(h - g) <= 0.1 * torch.linalg.norm(g), k


def test_autocast_setting() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert train_autocast("off", cpu) is None
    assert train_autocast("bf16", cpu) is torch.bfloat16
    assert train_autocast("auto", gpu) is None  # [model] dtype decides on GPUs
    with pytest.raises(SSDError, match="unknown train autocast 'fp8'"):
        train_autocast("fp8", cpu)
    with pytest.raises(SSDError, match="unknown train autocast"):
        HFTrainer("unused", LORA, _settings(autocast="fp8"))


def test_training_with_and_without_grouping_takes_the_same_steps(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Whole runs: the same seeded order and per-step loss; the adapters agree."""
    from safetensors.torch import load_file

    runs = []
    for group in (False, True):
        t = HFTrainer(str(tiny_model_dir), LORA, _settings(group_by_length=group, epochs=2))
        out = t.train(EXAMPLES, tmp_path / f"g{group}")
        runs.append((t.history, load_file(str(out / "adapter_model.safetensors"))))
    (h0, w0), (h1, w1) = runs
    assert [h["step"] for h in h0] == [h["step"] for h in h1] == [1, 2]
    for a, b in zip(h0, h1, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # Adam's steps are ~lr * sign(grad): float-noise components may flip, so 5 % of lr.
    assert all(torch.allclose(w0[k], w1[k], atol=5e-4) for k in w0)
