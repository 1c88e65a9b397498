"""The two engine protocols: a sampler and a trainer.

Everything engine-specific (transformers, vLLM) hides behind these. The pipeline
renders prompts to final strings (chat template applied) before it calls either,
so the sampler and the trainer see exactly the same prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# progress(done, total): called after each batch / optimiser step.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; truncated by engine/truncation.py (vLLM: temperature, min-p, top-k, top-p)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0.0 = off
    max_new_tokens: int = 256
    n: int = 1  # samples per prompt
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Completion:
    """One sampled continuation with its per-token statistics.

    ``logprobs[i]`` is log p(token_i) under the model's untempered, untruncated
    distribution (T = 1), ``entropies[i]`` the entropy of that full distribution
    (nats), and ``tail_mass[i]`` the probability mass (at T = 1) outside the set
    kept by the sampling truncation at that position (0 when nothing is truncated).
    ``finish_reason`` is "stop" (a stop string or EOS) or "length".
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    tail_mass: list[float] = field(default_factory=list)
    finish_reason: str = "stop"


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)


@dataclass(frozen=True)
class TrainSettings:
    learning_rate: float = 2e-4
    epochs: int = 1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    # issue 16: compute choices; none changes which examples an optimiser step sees.
    group_by_length: bool = True
    autocast: str = "auto"
    gradient_checkpointing: bool = False


class Sampler(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """Return ``params.n`` completions for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Free the model (and GPU memory) so a trainer can take the device."""
        ...


def generate_batches(
    sampler: Sampler, batches: Sequence[tuple[Sequence[str], SamplingParams]]
) -> Iterator[tuple[int, list[list[Completion]]]]:
    """``(i, completions of batch i)`` for each batch, as each is done.

    An engine with its own scheduler (vLLM) decodes many batches at once and yields them in
    the order they finish; any other sampler decodes them one after the other.
    """
    own = getattr(sampler, "generate_batches", None)
    if own is not None:
        yield from own(batches)
        return
    for i, (prompts, params) in enumerate(batches):
        yield i, sampler.generate(prompts, params)


class Trainer(Protocol):
    def train(
        self,
        examples: Sequence[tuple[str, str] | tuple[str, str, bool]],
        out_dir: Path,
        init_adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """LoRA SFT on (prompt, completion) pairs, loss on completion tokens only.

        A finished completion is followed by an EOS target; an example given as
        (prompt, completion, False) was cut at max_new_tokens and gets none.

        ``init_adapter`` is the previous round's adapter to continue from (None in
        round 1). Writes a standard PEFT adapter folder to ``out_dir`` and returns it.
        """
        ...
