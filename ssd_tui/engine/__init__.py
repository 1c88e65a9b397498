"""Engines behind two protocols: a ``Sampler`` and a ``Trainer`` (see ``base``).

The protocols and their parameter types are importable from here without loading
torch. The transformers engine (``HFSampler``, ``HFTrainer``) is imported on first
use, so ``import ssd_tui.engine`` stays cheap for the CLI and the TUI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ssd_tui.engine.base import (
    Completion,
    LoraSettings,
    Progress,
    Sampler,
    SamplingParams,
    Trainer,
    TrainSettings,
)

if TYPE_CHECKING:
    from ssd_tui.engine.hf import HFSampler, HFTrainer

__all__ = [
    "Completion",
    "HFSampler",
    "HFTrainer",
    "LoraSettings",
    "Progress",
    "Sampler",
    "SamplingParams",
    "TrainSettings",
    "Trainer",
]

_LAZY = {"HFSampler", "HFTrainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ssd_tui.engine import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
