"""The engine protocols (a sampler, a trainer), their settings, and the engine limits.

Everything engine-specific (transformers, vLLM) hides behind these. The pipeline
renders prompts to final strings (chat template applied) before it calls either,
so the sampler and the trainer see exactly the same prompt text, and ``encode_prompt``
turns that text into the same tokens for both.

Nothing here imports torch or vLLM, and nothing above the engine: the run config builds
an ``EngineSettings`` (``RunConfig.engine_settings``) and the engines read only that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# progress(done, total): called after each batch / optimiser step.
Progress = Callable[[int, int], None]

# A training example: (prompt, completion) or (prompt, completion, finished). An unfinished
# one (cut at max_new_tokens) is trained on without an EOS target after it.
Example = tuple[str, str] | tuple[str, str, bool]

#: What ``[run] engine`` takes (engine/choose.py resolves "auto").
ENGINES = ("auto", "hf", "vllm")

#: vLLM refuses temperatures above this (its ``SamplingParams``); the config follows it.
VLLM_MAX_TEMPERATURE = 2.0

#: The KV cache on vLLM's CPU backend when ``[vllm] cpu_kvcache_gib = 0``: a quarter of the
#: free RAM, within these bounds (GiB).
CPU_KVCACHE_GIB = (1, 8)


def cpu_kvcache_gib(configured: float, free_gib: float | None) -> float:
    """``[vllm] cpu_kvcache_gib``; 0 = a quarter of the free RAM, within ``CPU_KVCACHE_GIB``."""
    if configured > 0:
        return configured
    lo, hi = CPU_KVCACHE_GIB
    if free_gib is None:
        return lo
    return float(max(lo, min(hi, int(free_gib / 4))))


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, as the samplers, the trainer and the scoring model see it.

    Special tokens (e.g. BOS) are added unless the text already starts with the BOS
    string, which is the case when a chat template rendered it; otherwise Llama-style
    models would see two BOS tokens.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


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
    # Statistics of a second truncation, recorded beside the sample's own for the first
    # ``extra_samples`` samples of each prompt (None: all): the top-1 probability and the
    # T = 1 mass outside ``extra_truncation``'s kept set (its temperature, top-k, top-p,
    # min-p), per token. The fork/lock probe reads round 0's from the store instead of
    # scoring those samples again (analysis/probe.py). They change nothing that is drawn.
    extra_truncation: SamplingParams | None = None
    extra_samples: int | None = None

    def wants_extra(self, sample: int) -> bool:
        """Whether sample ``sample`` (0-based, of its prompt) records the extra statistics."""
        if self.extra_truncation is None:
            return False
        return self.extra_samples is None or sample < self.extra_samples


@dataclass
class Completion:
    """One sampled continuation with its per-token statistics.

    ``logprobs[i]`` is log p(token_i) under the model's untempered, untruncated
    distribution (T = 1), ``entropies[i]`` the entropy of that full distribution
    (nats), and ``tail_mass[i]`` the probability mass (at T = 1) outside the set
    kept by the sampling truncation at that position (0 when nothing is truncated).
    ``finish_reason`` is "stop" (a stop string or EOS) or "length". ``top1[i]`` (the
    top-1 probability at T = 1) and ``extra_tail_mass[i]`` (the T = 1 mass outside
    ``SamplingParams.extra_truncation``'s kept set) are there when the params asked for
    them (``SamplingParams.wants_extra``), empty otherwise.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    tail_mass: list[float] = field(default_factory=list)
    finish_reason: str = "stop"
    top1: list[float] = field(default_factory=list)
    extra_tail_mass: list[float] = field(default_factory=list)


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
    # How a step is computed; none of these changes which examples an optimiser step sees.
    group_by_length: bool = True
    autocast: str = "auto"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class LaunchSettings:
    """How the trainer is launched: ``processes`` data-parallel processes on this machine
    (1: in the caller's process; more: ``torchrun``, engine/train_launch.py), ``nodes``
    machines in all, meeting at ``rendezvous`` ("HOST:PORT" of node 0) when more than one."""

    processes: int = 1
    nodes: int = 1
    rendezvous: str = ""

    @property
    def launched(self) -> bool:
        """Whether training runs in processes of its own (a launcher's)."""
        return self.processes > 1 or self.nodes > 1


@dataclass(frozen=True)
class VllmSettings:
    """The vLLM engine's settings: the config's ``[vllm]`` section, key for key (the config
    holds each key's help and range; docs/gpu.md explains them)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 0  # 0 = the model's own
    max_num_seqs: int = 0  # 0 = vLLM's own limit (and our default queue depth)
    max_lora_rank: int = 0  # 0 = the smallest rank vLLM accepts that holds the LoRA rank
    logprobs: int = 20  # top-N log-probs per token
    enforce_eager: bool | None = None  # None: true on vLLM's CPU backend, false on GPUs
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool | None = None  # None: false on the CPU backend, else vLLM's
    cpu_kvcache_gib: float = 0.0  # 0 = ``cpu_kvcache_gib``'s share of the free RAM


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engines, and the choice between them, read from a run's config.

    Built by ``RunConfig.engine_settings``; the defaults are the config's defaults.
    """

    engine: str = "auto"  # one of ENGINES
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    threads: int = 0  # CPU threads; 0 = all this process may use
    # The run trains adapters ([run] rounds > 0), so a sampler will serve them: vLLM starts
    # with LoRA on and checks the LoRA rank before the first stage.
    serves_adapters: bool = True
    max_temperature: float = 1.0  # the highest temperature any stage samples at
    top_ks: tuple[int, ...] = (0, 0)  # every stage's top-k ([sampling], [eval])
    batch_size: int = 16  # prompts per transformers decoding batch
    schedule: str = "batch"  # the transformers sampler's: "batch" (exact) or "refill"
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    vllm: VllmSettings = field(default_factory=VllmSettings)


@dataclass(frozen=True)
class ScoringModel:
    """A transformers model and its tokenizer, for teacher-forced passes over samples
    (the exact-statistics pass and the fork/lock probe, analysis/probe.py)."""

    model: Any
    tokenizer: Any


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

    An engine with its own scheduler (vLLM, the transformers sampler) decodes rows of many
    batches at once and yields each batch as it finishes; any other sampler (a test's fake)
    decodes them one after the other.
    """
    own = getattr(sampler, "generate_batches", None)
    if own is not None:
        yield from own(batches)
        return
    for i, (prompts, params) in enumerate(batches):
        yield i, sampler.generate(prompts, params)


class Trainer(Protocol):
    #: After ``train``: one dict per optimiser step (step, loss, lr).
    history: list[dict[str, float]]

    def train(
        self,
        examples: Sequence[Example],
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
