"""Data-parallel LoRA training executed: 2 processes, accelerate, gloo, on CPU.

``accelerate launch --multi_gpu --num_processes 2 -m ssd_tui.engine.train_launch SPEC``
against the same training in one process, on the demo model: the loss of every step and
the saved adapter must agree within float tolerance (the ranks sum gradients in another
order). Slow (two launches, ~1 min on 2 cores): ``pytest -m slow tests/test_train_distributed.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssd_tui.engine.base import LoraSettings, TrainSettings
from ssd_tui.engine.hf import HFTrainer
from ssd_tui.engine.train_launch import history_path, write_spec

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo-model"

# 9 examples of spread lengths; 4 per step: the last step has one forward pass, so rank 1
# has nothing to compute there and must still take the same optimiser step.
EXAMPLES = [
    (f"def f{i}(x):\n", "    y = x + 1\n" * (1 + (i * 7) % 13) + "    return y\n", i % 3 != 0)
    for i in range(9)
]
LORA = LoraSettings(r=4, alpha=8, dropout=0.0)  # dropout would draw per-rank random masks
TRAIN = TrainSettings(learning_rate=1e-2, epochs=2, batch_size=2, grad_accum=2, max_length=96)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    single = HFTrainer(str(DEMO), LORA, TRAIN)
    one = single.train(EXAMPLES, tmp_path / "one")

    spec = write_spec(tmp_path / "spec.json", str(DEMO), LORA, TRAIN, EXAMPLES, tmp_path / "two")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    cmd += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_port", "29517"]
    cmd += ["-m", "ssd_tui.engine.train_launch", str(spec)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    record = json.loads(history_path(tmp_path / "two").read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    two = record["history"]
    assert [h["step"] for h in two] == [h["step"] for h in single.history] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(single.history, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["lr"] == a["lr"]
    assert single.history[-1]["loss"] < single.history[0]["loss"]  # it did learn

    w1 = load_file(str(one / "adapter_model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        # Adam moves each weight ~lr per step whatever the gradient's size: 1e-4 is 1 % of
        # one step, far below what a missing or doubled rank's share would change.
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-4, msg=k)
    assert not (tmp_path / "two.tmp").exists()
