"""The transformers engine: a batched sampler with per-token statistics, and a LoRA trainer.

Sampler: our own decoding loop over a KV cache (not ``model.generate``) because every
generated token needs statistics of the *untempered, untruncated* distribution (log-prob,
entropy) and of the truncation the sampler applied (tail mass = 1 - KeptMass), which the
SSD method says is the quantity to watch. Computing them in the loop costs one
``log_softmax`` per step, and nothing needs to be recomputed afterwards.

Trainer: a plain PyTorch loop (AdamW, warmup + linear/cosine decay, gradient accumulation)
over a peft LoRA model; cross-entropy on completion tokens only.

See docs/engine.md for the exact conventions (truncation order, stop strings, seeds).
"""

from __future__ import annotations

import copy
import gc
import inspect
import math
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ssd_tui.engine.base import (
    Completion,
    Example,
    LoraSettings,
    Progress,
    SamplingParams,
    TrainSettings,
    encode_prompt,
)
from ssd_tui.engine.decoding import SCHEDULES, Decoder, Job, pick_tokens
from ssd_tui.engine.truncation import is_greedy
from ssd_tui.errors import SSDError

# transformers (~0.9 s on top of torch, measured) and peft (~3.3 s) are imported in the
# functions that load a model: the decoding and loss helpers here need neither.

__all__ = [
    "HFSampler",
    "pick_tokens",
    "HFTrainer",
    "load_model",
    "load_tokenizer",
    "resolve_device",
]

_DTYPES: dict[str, Any] = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# "gpt2", "Qwen/Qwen2.5-Coder-0.5B": what a Hugging Face model id looks like.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# --------------------------------------------------------------------------- loading


def _resolve(model_path: str) -> tuple[str, bool]:
    """Return (what to pass to from_pretrained, is_local_folder); SSDError if hopeless."""
    path = Path(model_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SSDError(f"model path {model_path!r} is a file, not a model folder")
        return str(path), True
    if _HUB_ID.match(model_path) and not model_path.startswith("."):
        return model_path, False
    raise SSDError(f"model folder not found: {model_path}")


def _load_failed(model_path: str, is_local: bool, what: str, exc: Exception) -> SSDError:
    if not is_local:
        return SSDError(
            f"model {model_path!r} not found: not a local folder and not in the Hugging Face cache"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SSDError(f"cannot load {what} from {model_path}: {first}")


def load_tokenizer(model_path: str) -> Any:
    """Load the tokenizer of a local model folder or a cached Hub id (never downloads).

    Sets ``pad_token`` to the EOS token when the tokenizer has none (padding is masked
    everywhere, so its id only has to be valid).
    """
    from transformers import AutoTokenizer

    name, is_local = _resolve(model_path)
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_failed(model_path, is_local, "tokenizer", exc) from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise SSDError(f"tokenizer of {model_path} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def _torch_dtype(dtype: str) -> Any:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise SSDError(
            f"unknown dtype {dtype!r}; choose one of: {', '.join(sorted(_DTYPES))}"
        ) from None


def resolve_device(device: str) -> torch.device:
    """The device inputs go to; "auto" is the first GPU (where device_map="auto" puts the
    embeddings), or the CPU when there is none."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(model_path: str, dtype: str = "float32", device: str = "cpu") -> Any:
    """Load a causal LM from a local folder or a cached Hub id (never downloads).

    ``device="auto"`` shards the layers over every visible GPU (accelerate's
    ``device_map="auto"``, then CPU memory if they are full): a model too big for one GPU
    can then be LoRA-trained, one GPU working at a time (docs/gpu.md).
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype)
    name, is_local = _resolve(model_path)
    sharded = {"device_map": "auto"} if device == "auto" else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, local_files_only=True, **sharded
        )
    except (OSError, ValueError, KeyError) as exc:
        raise _load_failed(model_path, is_local, "model", exc) from None
    return model if sharded else model.to(device)


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    # No space clean-up: generated code must come back byte for byte.
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """EOS ids from the tokenizer and the generation config (chat models often add one)."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- sampling


def _check_params(params: SamplingParams) -> None:
    if params.n < 1:
        raise SSDError(f"n must be at least 1, got {params.n}")
    if params.max_new_tokens < 1:
        raise SSDError(f"max_new_tokens must be at least 1, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise SSDError(f"temperature must be >= 0, got {params.temperature}")
    if params.top_k < 0:
        raise SSDError(f"top_k must be >= 0 (0 = off), got {params.top_k}")
    if not 0.0 < params.top_p <= 1.0:
        raise SSDError(f"top_p must be in (0, 1], got {params.top_p}")
    if not 0.0 <= params.min_p <= 1.0:
        raise SSDError(f"min_p must be in [0, 1], got {params.min_p}")
    if any(s == "" for s in params.stop):
        raise SSDError("stop strings must not be empty")


class HFSampler:
    """Batched sampling with transformers, a KV cache and per-token statistics.

    ``batch_size`` rows (a prompt's n samples are n rows) decode together. ``schedule``
    (engine/decoding.py): ``"batch"`` (the default) decodes each batch on its own, exactly
    reproducible from its seed; ``"refill"`` hands the slot of a row that ends to the next
    row waiting, of the same batch or the next ones (``generate_batches``), so the rows in
    flight stay at ``batch_size`` until the queue runs dry.
    """

    def __init__(
        self,
        model_path: str,
        adapter: Path | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 8,
        schedule: str = "batch",
    ) -> None:
        if batch_size < 1:
            raise SSDError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = model_path
        self.adapter = adapter
        # One device: the decoding loop's KV-cache row selection needs every layer on it.
        self.device = resolve_device(device)
        self.batch_size = batch_size
        if schedule not in SCHEDULES:
            raise SSDError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        self.tokenizer = load_tokenizer(model_path)
        model = load_model(model_path, dtype, str(self.device))
        if adapter is not None:
            model = _merge_adapter(model, Path(adapter))
        model.eval()
        self.model: Any = model
        self.eos_ids = _eos_ids(self.tokenizer, model)
        self.pad_id = int(self.tokenizer.pad_token_id)
        fwd = inspect.signature(model.forward).parameters
        # transformers 5.x renamed past_key_values -> cache; support both spellings.
        self._cache_kw = "cache" if "cache" in fwd else "past_key_values"
        self._has_logits_to_keep = "logits_to_keep" in fwd
        self.last_decoder: Decoder | None = None  # the latest call's (its forward_rows)

    # -- public API ------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """Return ``params.n`` completions for each prompt, in prompt order.

        Reproducible for the same prompts, params (``seed``) and batch size: one generator
        seeded with ``params.seed`` draws every row (the batch schedule); under refill every
        sample draws from its own stream, seeded from ``params.seed`` and its place.
        """
        [(_, result)] = list(self._stream([(prompts, params)], progress))
        return result

    def generate_batches(
        self, batches: Sequence[tuple[Sequence[str], SamplingParams]]
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        """``(i, completions of batch i)`` as each batch is done. A batch's samples are those
        it gets alone: exactly (the batch schedule), or up to float rounding under refill,
        where rows of later batches fill the slots of rows that ended (engine/decoding.py)."""
        yield from self._stream(batches, None)

    def close(self) -> None:
        """Drop the model so its memory can go to a trainer."""
        self.model = None
        _free_memory()

    def __enter__(self) -> HFSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _jobs(
        self, batches: Sequence[tuple[Sequence[str], SamplingParams]]
    ) -> tuple[list[Job], list[tuple[int, int, int]]]:
        """Every row of every batch, checked before anything decodes; and per batch
        (prompts, n, rows decoded): greedy rows are decoded once and copied n times."""
        jobs: list[Job] = []
        shapes: list[tuple[int, int, int]] = []
        for b, (prompts, params) in enumerate(batches):
            _check_params(params)
            encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
            for i, ids in enumerate(encoded):
                if not ids:
                    raise SSDError(f"prompt {i} is empty after tokenisation")
            n_decode = 1 if is_greedy(params) else params.n  # greedy: the same n times (as vLLM)
            rows = [(i, j) for i in range(len(prompts)) for j in range(n_decode)]
            # Rows of similar prompt length side by side waste less compute on padding.
            rows.sort(key=lambda r: len(encoded[r[0]]))
            jobs += [Job(b, i, j, encoded[i], params) for i, j in rows]
            shapes.append((len(prompts), params.n, n_decode))
        return jobs, shapes

    def _stream(
        self,
        batches: Sequence[tuple[Sequence[str], SamplingParams]],
        progress: Progress | None,
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        if self.model is None:
            raise SSDError("the sampler was closed")
        jobs, shapes = self._jobs(batches)
        out: dict[int, list[list[Any]]] = {}  # per batch, per prompt: its samples by index
        left: dict[int, int] = {}
        for b, (n_prompts, _, n_decode) in enumerate(shapes):
            if n_prompts == 0:
                yield b, []
                continue
            out[b] = [[None] * n_decode for _ in range(n_prompts)]
            left[b] = n_prompts * n_decode
        decoder = Decoder(
            self._forward, partial(_decode, self.tokenizer), self.eos_ids, self.pad_id, self.device
        )
        self.last_decoder = decoder
        done = 0
        for job, comp in decoder.decode(jobs, self.batch_size, self.schedule):
            out[job.batch][job.prompt][job.sample] = comp
            done += 1
            if progress is not None:
                progress(done, len(jobs))
            left[job.batch] -= 1
            if left[job.batch] == 0:
                yield job.batch, self._batch_done(out.pop(job.batch), shapes[job.batch], progress)

    @staticmethod
    def _batch_done(
        per_prompt: list[list[Completion]], shape: tuple[int, int, int], progress: Progress | None
    ) -> list[list[Completion]]:
        n_prompts, n, n_decode = shape
        if n_decode < n:  # greedy: copies of the one decoded sample
            for per in per_prompt:
                per += [copy.deepcopy(per[0]) for _ in range(n - 1)]
            if progress is not None:
                progress(n_prompts * n, n_prompts * n)
        return per_prompt

    def _forward(self, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        cache = kwargs.pop("cache", None)
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1  # only the last position's logits are needed
        out = self.model(use_cache=True, **kwargs)
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = out.past_key_values
        return out.logits[:, -1, :], new_cache


def _merge_adapter(model: Any, adapter: Path) -> Any:
    from peft import PeftModel

    if not (adapter / "adapter_config.json").is_file():
        raise SSDError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise SSDError(f"cannot load adapter {adapter}: {str(exc).splitlines()[0]}") from None
    # Merged weights decode as fast as the base model.
    return peft_model.merge_and_unload()


# --------------------------------------------------------------------------- training


def completion_loss_sum(
    model: Any,
    input_ids: torch.Tensor,
    attn: torch.Tensor,
    labels: torch.Tensor,
    cut_prompt_logits: bool = True,
) -> torch.Tensor:
    """Summed cross-entropy over the label tokens (labels -100 elsewhere), one forward pass.

    With ``cut_prompt_logits`` the model computes logits only from the position before the
    earliest completion token on (``logits_to_keep``): the prompt's vocabulary-wide logits
    are never scored (for Qwen's 152k vocabulary and a 486-token chat prompt, 0.83 GB of a
    9.2 GB step: benchmarks/README.md). Same loss and gradients either way (a test checks it).
    """
    start = 0
    if cut_prompt_logits:
        first = (labels != -100).int().argmax(dim=1)  # every row has a completion token
        start = max(0, int(first.min()) - 1)
    kw = {"logits_to_keep": input_ids.shape[1] - start} if start else {}
    logits = model(input_ids=input_ids, attention_mask=attn, **kw).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, start + 1 :].flatten(),
        ignore_index=-100,
        reduction="sum",
    )


Feature = tuple[list[int], int]  # (input ids, prompt length)


def plan_passes(features: Sequence[Feature], batch_size: int, group: bool) -> list[list[Feature]]:
    """Split one optimiser step's examples into forward passes of at most ``batch_size`` rows.

    Ungrouped: consecutive chunks in the (seeded) order. Grouped: the same number of
    chunks of the same sizes, taken longest first, so rows of similar length share a pass
    and little is padded. Either way the step sees the same examples and its loss is
    normalised by the step's tokens, so the update is the same (a test checks it).
    Grouping never adds a pass: on a tiny model each pass's fixed cost outweighs padding.
    With ``grad_accum = 1`` a step is one pass and grouping changes nothing. Sorting is
    stable, so equal lengths keep the seeded order.
    """
    if group:
        features = sorted(features, key=lambda f: -len(f[0]))
    return [list(features[k : k + batch_size]) for k in range(0, len(features), batch_size)]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bf16 matmuls are faster than fp32 ones."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def train_autocast(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training forward pass, or None for none.

    ``auto`` is bf16 on a CPU with native bf16 matmuls and nothing elsewhere: on a CPU
    without them bf16 is emulated and slower than fp32, and on a GPU ``[model] dtype``
    already chooses the precision.
    """
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    raise SSDError(f"unknown train autocast {setting!r}; choose auto, off or bf16")


def _dist_world(device: torch.device) -> tuple[int, int]:
    """(rank, world size) when started by ``accelerate launch`` / torchrun, else (0, 1).

    accelerate's PartialState joins the process group the launcher set up: gloo on CPU,
    NCCL on GPUs. On a machine without GPUs it must be told ``cpu=True``: otherwise
    (accelerate 1.15, torch 2.13) it reports one process of rank 0 in *every* process,
    which would train the whole data on each rank and save the adapter twice at once.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes != world:
        raise SSDError(
            f"launched as {world} processes but accelerate sees {state.num_processes} "
            f"({state.distributed_type}); launch with torchrun or accelerate launch --multi_gpu"
        )
    return state.process_index, state.num_processes


def _all_reduce_grads(params: list[torch.nn.Parameter], total: torch.Tensor) -> None:
    """Sum the LoRA gradients and the loss over the ranks, in one flat message each.

    A rank with no pass this step contributes zeros. Summing (not DDP's averaging) keeps
    the step's token normalisation: the result is the single-process gradient.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    torch.distributed.all_reduce(total)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


class HFTrainer:
    """LoRA fine-tuning with plain cross-entropy on completion tokens.

    After ``train``: ``history`` holds one dict per optimiser step (step, loss, lr), where
    loss is the mean cross-entropy over that step's completion tokens; ``skipped`` counts
    examples with no completion token left after truncation to ``max_length``.
    """

    def __init__(
        self,
        model_path: str,
        lora: LoraSettings,
        train: TrainSettings,
        dtype: str = "float32",
        device: str = "cpu",
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if schedule not in ("constant", "linear", "cosine"):
            raise SSDError(f"unknown schedule {schedule!r}; choose constant, linear or cosine")
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(train, name) < 1:
                raise SSDError(f"train.{name} must be at least 1, got {getattr(train, name)}")
        _torch_dtype(dtype)
        self.device = resolve_device(device)
        self.autocast = train_autocast(train.autocast, self.device)
        self.model_path = model_path
        self.lora = lora
        self.settings = train
        self.dtype = dtype
        self.device_map = device  # "auto": the model is sharded over the GPUs
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.max_grad_norm = max_grad_norm
        self.history: list[dict[str, float]] = []
        self.skipped = 0

    # -- data ------------------------------------------------------------------------

    def _encode(self, tokenizer: Any, examples: Sequence[Example]) -> list[Feature]:
        """(input ids, prompt length) per example; prompt and completion tokenised apart.

        Separate tokenisation keeps the prompt tokens exactly those the sampler
        conditioned on. Sequences are cut on the right to ``max_length``.
        """
        eos = tokenizer.eos_token_id
        if eos is None:
            raise SSDError(f"tokenizer of {self.model_path} has no EOS token")
        max_len = self.settings.max_length
        features = []
        self.skipped = 0
        for example in examples:
            prompt, completion = example[0], example[1]
            # A sample cut at max_new_tokens did not end: teaching EOS after it would teach
            # the model to stop mid-program, so it gets no EOS target.
            finished = example[2] if len(example) > 2 else True
            p = encode_prompt(tokenizer, prompt)
            c = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
            if finished:
                c.append(eos)
            ids = (p + c)[:max_len]
            if len(ids) <= len(p):  # nothing of the completion survives truncation
                self.skipped += 1
                continue
            features.append((ids, len(p)))
        return features

    @staticmethod
    def _collate(
        features: list[Feature], pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids, _ in features)
        input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for r, (ids, n_prompt) in enumerate(features):
            t = torch.tensor(ids, dtype=torch.long)
            input_ids[r, : len(ids)] = t
            attn[r, : len(ids)] = 1
            labels[r, n_prompt : len(ids)] = t[n_prompt:]  # loss on completion (+EOS) only
        return input_ids, attn, labels

    def _lr_factor(self, step: int, total: int, warmup: int) -> float:
        """Multiplier of the peak learning rate for 0-based optimiser ``step``."""
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if self.schedule == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay

    # -- model -----------------------------------------------------------------------

    def _peft_model(self, init_adapter: Path | None) -> Any:
        from peft import LoraConfig, PeftModel, get_peft_model

        base = load_model(self.model_path, self.dtype, self.device_map)
        if init_adapter is not None:
            init_adapter = Path(init_adapter)
            if not (init_adapter / "adapter_config.json").is_file():
                raise SSDError(
                    f"not a LoRA adapter folder (no adapter_config.json): {init_adapter}"
                )
            # Continue the previous round's adapter (architecture decision 4); its own
            # LoRA config (r, alpha, targets) wins over self.lora.
            return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
        targets = list(self.lora.target_modules)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=self.lora.r,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            # peft wants the string "all-linear", not a list holding it.
            target_modules="all-linear" if targets == ["all-linear"] else targets,
        )
        return get_peft_model(base, config)

    @staticmethod
    def _checkpoint_activations(model: Any) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them.

        Non-reentrant checkpointing works with frozen inputs (LoRA) without
        ``enable_input_require_grads``. transformers 5 renamed the method.
        """
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # -- public API ------------------------------------------------------------------

    def train(
        self,
        examples: Sequence[Example],
        out_dir: Path,
        init_adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """LoRA SFT on (prompt, completion) pairs; write a PEFT adapter folder to ``out_dir``."""
        out_dir = Path(out_dir)
        s = self.settings
        tokenizer = load_tokenizer(self.model_path)
        features = self._encode(tokenizer, examples)
        if not features:
            raise SSDError(
                f"no training examples: {len(examples)} given, {self.skipped} with no "
                f"completion token within max_length={s.max_length}"
            )
        per_step = s.batch_size * s.grad_accum  # examples per optimiser step
        steps_per_epoch = math.ceil(len(features) / per_step)
        total_steps = s.epochs * steps_per_epoch
        warmup = int(round(s.warmup_ratio * total_steps))
        self.history = []
        rank, world = _dist_world(self.device)

        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        if self.device_map == "auto" and devices:
            devices = list(range(torch.cuda.device_count()))
        # Seed LoRA init and dropout without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s.seed)
            model = self._peft_model(init_adapter)
            if s.gradient_checkpointing:
                self._checkpoint_activations(model)
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optim = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
            shuffle = torch.Generator().manual_seed(s.seed)
            step = 0
            for _epoch in range(s.epochs):
                order = torch.randperm(len(features), generator=shuffle).tolist()
                for k in range(0, len(order), per_step):
                    lr = s.learning_rate * self._lr_factor(step, total_steps, warmup)
                    for group in optim.param_groups:
                        group["lr"] = lr
                    batch = [features[i] for i in order[k : k + per_step]]
                    passes = plan_passes(batch, s.batch_size, s.group_by_length)
                    loss = self._optimiser_step(
                        model, optim, params, passes, tokenizer.pad_token_id, rank, world
                    )
                    step += 1
                    self.history.append({"step": step, "loss": loss, "lr": lr})
                    if progress is not None:
                        progress(step, total_steps)
            if rank == 0:
                self._save(model, out_dir)
            if world > 1:
                torch.distributed.barrier()  # the adapter exists before any rank returns
        del model, optim, params
        _free_memory()
        return out_dir

    def _optimiser_step(
        self,
        model: Any,
        optim: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        passes: list[list[Feature]],
        pad_id: int,
        rank: int = 0,
        world: int = 1,
    ) -> float:
        """One optimiser step over the forward ``passes``; returns the mean token loss.

        With ``world`` > 1 processes each takes every world-th pass, and the summed
        gradients and loss are all-reduced: every rank then takes the same step, the
        single-process one (a slow test checks it).
        """
        total, n_tokens = self.accumulate(model, passes[rank::world], passes, pad_id)
        if world > 1:
            _all_reduce_grads(params, total)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        optim.step()
        optim.zero_grad(set_to_none=True)
        return float(total) / n_tokens

    def accumulate(
        self, model: Any, mine: list[list[Feature]], step: list[list[Feature]], pad_id: int
    ) -> tuple[torch.Tensor, int]:
        """Forward and backward over the passes ``mine`` of the optimiser step ``step``.

        Adds to the parameters' ``.grad``; returns (summed loss of ``mine``, completion
        tokens of ``step``). The loss is normalised by the tokens of the whole step, so
        gradient accumulation, any split into passes, or a share per process gives the
        same update as one big batch.
        """
        # Tokens that are predicted: labels shifted by one, so the first label never counts.
        # Every rank knows every pass, so the normaliser needs no communication.
        n_tokens = sum(len(ids) - max(n_prompt, 1) for p in step for ids, n_prompt in p)
        base = getattr(model, "get_base_model", lambda: model)()
        can_cut = "logits_to_keep" in inspect.signature(base.forward).parameters
        total = torch.zeros((), dtype=torch.float64)
        for mb in mine:
            input_ids, attn, labels = self._collate(mb, pad_id)
            cast = self.autocast
            with torch.autocast(self.device.type, dtype=cast or torch.bfloat16, enabled=bool(cast)):
                loss_sum = completion_loss_sum(
                    model,
                    input_ids.to(self.device),
                    attn.to(self.device),
                    labels.to(self.device),
                    cut_prompt_logits=can_cut,
                )
            (loss_sum / n_tokens).backward()
            total += float(loss_sum.detach())
        return total, n_tokens

    @staticmethod
    def _save(model: Any, out_dir: Path) -> None:
        """Write the adapter to a sibling .tmp folder, then rename it into place."""
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left over by a crashed run
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(tmp))
        if out_dir.exists():
            old = out_dir.with_name(out_dir.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)


# --------------------------------------------------------------------------- merging
def merge_into_copy(base: str, adapter: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write base ⊕ ``adapter`` with the adapter merged into a copy of the weights, as a
    transformers model folder (safetensors, config, generation config, tokenizer) at
    ``out_dir``; ``base`` is only read. A new LoRA adapter trains on top of the copy
    (``[rounds] adapter = "merge"``), and the copy with that adapter loads in transformers
    and serves in vLLM like any base model with a ``LoRARequest``.

    Merged on the CPU, in ``dtype`` (one copy of the weights in memory and on disk), into a
    sibling ``.tmp`` folder renamed into place when whole: a kill leaves no half copy, and
    the same inputs write the same tensors.
    """
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left over by a killed merge
    merged = _merge_adapter(load_model(base, dtype, "cpu"), Path(adapter))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    load_tokenizer(base).save_pretrained(str(tmp))
    del merged
    _free_memory()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
