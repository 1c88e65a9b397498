"""Data-parallel LoRA training: ``HFTrainer`` in every process of an ``accelerate launch``.

    accelerate launch --multi_gpu --num_processes 2 -m ssd_tui.engine.train_launch SPEC.json
    torchrun --nproc_per_node 2 -m ssd_tui.engine.train_launch SPEC.json      (the same)

(``accelerate launch --cpu --num_processes 2`` starts one process, not two: its CPU
launcher spreads over processes only with an MPI hostfile. ``--multi_gpu`` is torchrun,
and works without GPUs; ``[model] device = "cpu"`` then makes the group gloo.)

SPEC is a JSON file (``write_spec`` writes one): the model path, ``LoraSettings`` and
``TrainSettings`` fields, dtype, device, the examples and the output folder. Every process
loads the model and the same examples; ``HFTrainer`` sees ``WORLD_SIZE`` > 1 and gives each
rank every world-th forward pass of each optimiser step, sums the LoRA gradients over the
ranks (gloo on CPU, NCCL on GPUs) and saves the adapter on rank 0, which also writes the
per-step history, the world size and the backend to ``<out>.history.json``. The update is the single-process one
(tests/test_train_distributed.py). ``ssd-tui run`` does not launch this yet: docs/gpu.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ssd_tui.engine.base import LoraSettings, TrainSettings


def write_spec(
    path: Path,
    model_path: str,
    lora: LoraSettings,
    train: TrainSettings,
    examples: Sequence[Sequence[object]],
    out_dir: Path,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write a SPEC file for ``main``; returns ``path``."""
    spec = {
        "model": model_path,
        "lora": dataclasses.asdict(lora),
        "train": dataclasses.asdict(train),
        "dtype": dtype,
        "device": device,
        "examples": [list(e) for e in examples],
        "out": str(out_dir),
    }
    Path(path).write_text(json.dumps(spec), encoding="utf-8")
    return Path(path)


def history_path(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".history.json")


def main(argv: Sequence[str] | None = None) -> int:
    # Here, not at the top: the tests write specs without loading torch (~1 s).
    from ssd_tui.engine.hf import HFTrainer, _dist_world

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m ssd_tui.engine.train_launch SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    lora = spec["lora"]
    lora["target_modules"] = tuple(lora["target_modules"])
    trainer = HFTrainer(
        spec["model"],
        LoraSettings(**lora),
        TrainSettings(**spec["train"]),
        spec["dtype"],
        spec["device"],
    )
    examples = [tuple(e) for e in spec["examples"]]
    out = trainer.train(examples, Path(spec["out"]))
    rank, world = _dist_world(trainer.device)
    if rank == 0:
        import torch.distributed as dist

        backend = dist.get_backend() if dist.is_initialized() else None
        record = {"world_size": world, "backend": backend, "history": trainer.history}
        history_path(out).write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
