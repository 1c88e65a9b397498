"""A FAKE ``vllm`` module, for tests only: what vLLM's CPU build cannot show.

Real vLLM runs in ``tests/test_vllm_real.py`` (vLLM's CPU build, the same Python API and
engine core as the GPU build). This fake stays for the GPU side only: the engine settings
on a CUDA platform (CUDA graphs, ``gpu_memory_utilization``) and that a run lets go of the
engine before the trainer needs the GPU's memory. ``vllm_platform`` reports it as
"unknown", i.e. not the CPU backend.

It imitates the part of vLLM's offline API that ``ssd_tui.engine.vllm`` calls, with the
semantics of vLLM V1 as its source and docs describe them (not with ours, so that the
tests compare two independent implementations):

- ``LLM(**kwargs)`` validates its kwargs against ``EngineArgs`` and records them;
  ``generate(prompts, sampling_params, use_tqdm=..., lora_request=...)`` decodes with a
  real (tiny) transformers model, one full forward per token (no KV cache);
  ``llm_engine.add_request / step / abort_request`` queue the same work, and each
  ``step`` finishes the oldest queued request (V1 returns only finished ones for
  ``RequestOutputKind.FINAL_ONLY``, with the caller's request id);
- truncation in V1's order: temperature, min-p, top-k (ties with the k-th kept), top-p
  (transcribed from V1's ascending-cumsum code); a per-request ``torch.Generator`` seeded
  with ``seed + j`` for the j-th of n samples (V1's ``ParentRequest``);
- ``logprobs=N``: raw (T = 1) log-probs of the top N tokens plus the sampled one, with ranks;
- stop strings cut from the text while ``token_ids`` keep the tokens that completed them;
  EOS stays in ``token_ids``; ``finish_reason`` "stop"/"length", ``stop_reason`` str/None;
- LoRA adapters merged with peft and cached *by lora_int_id*, as vLLM caches them;
- ``SamplingParams`` refuses what V1 refuses (n > 1 with greedy, temperature > 2, ...).

Not imitated: batching, paged KV cache, CUDA graphs, tensor parallelism, GPU memory.
Each ``CompletionOutput`` also carries ``fake_exact_tail``: the exact T = 1 mass outside
the kept set, which real vLLM does not return; tests use it as ground truth.

Install with ``install(monkeypatch)``; ``EVENTS`` records engine starts, stops, cache
resets and cleanups in order; ``LIVE`` holds the engines not yet garbage-collected.
"""

from __future__ import annotations

import enum
import sys
import types
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

__version__ = "0.32.0+fake"  # the API it imitates (V1, with logprobs_mode)

EVENTS: list[tuple[Any, ...]] = []
LIVE: weakref.WeakSet[LLM] = weakref.WeakSet()
_counter = [0]


@dataclass
class EngineArgs:
    model: str = ""
    dtype: str = "auto"
    seed: int | None = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    logprobs_mode: str = "raw_logprobs"
    max_logprobs: int = 20
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    enable_lora: bool = False
    max_lora_rank: int = 16
    max_loras: int = 1
    enable_sleep_mode: bool = False


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    fake_exact_tail: list[float] = field(default_factory=list)  # FAKE only


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


class SamplingParams:
    def __init__(
        self,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        max_tokens: int | None = 16,
        logprobs: int | None = None,
        skip_special_tokens: bool = True,
        include_stop_str_in_output: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}.")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {temperature}.")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        if top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}.")
        if temperature < 1e-5:  # greedy: V1 turns the truncation off and wants n == 1
            if n > 1:
                raise ValueError(f"n must be 1 when using greedy sampling, got {n}.")
            top_p, top_k, min_p = 1.0, 0, 0.0
        elif temperature < 1e-2:
            temperature = 1e-2
        self.n, self.temperature, self.top_p, self.top_k, self.min_p = (
            n,
            temperature,
            top_p,
            top_k,
            min_p,
        )
        self.seed, self.stop, self.max_tokens, self.logprobs = (
            seed,
            stop or [],
            max_tokens,
            logprobs,
        )
        self.skip_special_tokens = skip_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output
        self.output_kind = RequestOutputKind.CUMULATIVE


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")


def cleanup_dist_env_and_memory() -> None:
    EVENTS.append(("cleanup",))


class LLM:
    def __init__(self, **kwargs: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = EngineArgs(**kwargs)  # TypeError for an unknown option, as vLLM
        if self.args.logprobs_mode != "raw_logprobs":
            raise ValueError("the fake implements raw_logprobs only")
        _counter[0] += 1
        self.id = _counter[0]
        self.kwargs = kwargs
        self.base = AutoModelForCausalLM.from_pretrained(self.args.model).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.args.model)
        self.loras: dict[int, Any] = {}  # lora_int_id -> merged model (vLLM's cache by id)
        self.calls: list[dict[str, Any]] = []
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(self.base.generation_config, "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.eos_ids = {e for e in eos if e is not None}
        self.llm_engine = _Engine(self)
        EVENTS.append(("start", self.id, dict(kwargs)))
        LIVE.add(self)

    def __del__(self) -> None:
        if EVENTS is not None:  # None while the interpreter shuts down
            EVENTS.append(("stop", getattr(self, "id", None)))

    def reset_prefix_cache(self) -> bool:
        EVENTS.append(("reset_prefix_cache", self.id))
        return True

    def _model(self, lora: LoRARequest | None) -> Any:
        if lora is None:
            return self.base
        if not self.args.enable_lora:
            raise ValueError("LoRA is not enabled!")
        if lora.lora_int_id not in self.loras:
            import copy
            import json
            from pathlib import Path

            from peft import PeftModel

            rank = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())["r"]
            if rank > self.args.max_lora_rank:
                raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank")
            merged = PeftModel.from_pretrained(copy.deepcopy(self.base), lora.lora_path)
            self.loras[lora.lora_int_id] = merged.merge_and_unload().eval()
        return self.loras[lora.lora_int_id]

    def generate(
        self,
        prompts: list[dict[str, list[int]]],
        sampling_params: SamplingParams | list[SamplingParams],
        *,
        use_tqdm: bool = True,
        lora_request: LoRARequest | None = None,
    ) -> list[RequestOutput]:
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(prompts)
        assert len(sampling_params) == len(prompts)
        model = self._model(lora_request)
        self.calls.append({"n_prompts": len(prompts), "lora": lora_request})
        if lora_request is not None:
            EVENTS.append(("generate", self.id, lora_request.lora_int_id, lora_request.lora_path))
        out = [
            self._request(str(i), prompt, sp, model)
            for i, (prompt, sp) in enumerate(zip(prompts, sampling_params, strict=True))
        ]
        self.last_outputs = out
        return out

    def _check(self, prompt: dict[str, list[int]], sp: SamplingParams) -> None:
        if sp.logprobs is not None and sp.logprobs > self.args.max_logprobs:
            raise ValueError(
                f"Requested sample logprobs of {sp.logprobs}, which is greater than max allowed: {self.args.max_logprobs}"
            )
        n = len(prompt["prompt_token_ids"])
        if self.args.max_model_len and n >= self.args.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {n}) is longer than the maximum "
                f"model length of {self.args.max_model_len}."
            )

    def _request(
        self, rid: str, prompt: dict[str, list[int]], sp: SamplingParams, model: Any
    ) -> RequestOutput:
        self._check(prompt, sp)
        ids = list(prompt["prompt_token_ids"])
        comps = [self._sample(model, ids, sp, j) for j in range(sp.n)]
        return RequestOutput(rid, None, ids, comps)

    @torch.inference_mode()
    def _sample(
        self, model: Any, prompt: list[int], sp: SamplingParams, index: int
    ) -> CompletionOutput:
        gen = None
        if sp.seed is not None:
            gen = torch.Generator().manual_seed(sp.seed + index)
        seq = list(prompt)
        out: list[int] = []
        entries: list[dict[int, Logprob]] = []
        tails: list[float] = []
        finish, stop_reason, text = "length", None, None
        for _ in range(sp.max_tokens or 16):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            keep = self._kept(logits, sp)
            if sp.temperature < 1e-5:
                tok = int(logits.argmax())
            else:
                z = (logits / sp.temperature).masked_fill(~keep, float("-inf"))
                tok = int(torch.multinomial(torch.softmax(z, -1), 1, generator=gen))
            tails.append(float(1.0 - logp.exp()[keep].sum()))
            if sp.logprobs is not None:
                entry: dict[int, Logprob] = {}
                if sp.logprobs > 0:
                    vals, idx = logp.topk(sp.logprobs)
                    for r, (v, t) in enumerate(zip(vals.tolist(), idx.tolist(), strict=True)):
                        entry[t] = Logprob(v, r + 1)
                if tok not in entry:
                    entry[tok] = Logprob(float(logp[tok]), int((logp > logp[tok]).sum()) + 1)
                entries.append(entry)
            seq.append(tok)
            out.append(tok)
            if tok in self.eos_ids:
                finish = "stop"
                break
            decoded = self._decode(out)
            hits = [(decoded.find(s), s) for s in sp.stop if s in decoded]
            if hits:
                cut, stop_reason = min(hits)
                text, finish = decoded[:cut], "stop"
                break
        if text is None:
            text = self._decode([t for t in out if t not in self.eos_ids])
        return CompletionOutput(
            index,
            text,
            out,
            None,
            entries if sp.logprobs is not None else None,
            finish,
            stop_reason,
            tails,
        )

    def _decode(self, ids: list[int]) -> str:
        # vLLM's incremental detokenizer does no "clean-up" of spaces.
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    @staticmethod
    def _kept(logits: torch.Tensor, sp: SamplingParams) -> torch.Tensor:
        """V1: temperature, min-p, top-k (ties kept), top-p (ascending cumsum <= 1 - p)."""
        if sp.temperature < 1e-5:
            return torch.zeros_like(logits, dtype=torch.bool).scatter(
                0, logits.argmax()[None], True
            )
        z = logits / sp.temperature
        if sp.min_p > 0:
            q = torch.softmax(z, -1)
            z = z.masked_fill(q < sp.min_p * q.max(), float("-inf"))
        if 0 < sp.top_k < z.numel():
            kth = z.topk(sp.top_k).values[-1]
            z = z.masked_fill(z < kth, float("-inf"))
        if sp.top_p < 1.0:
            zs, zi = z.sort(descending=False)
            cum = torch.softmax(zs, -1).cumsum(-1)
            drop = cum <= 1 - sp.top_p
            drop[-1] = False
            zs = zs.masked_fill(drop, float("-inf"))
            z = torch.empty_like(z).scatter(0, zi, zs)
        return torch.isfinite(z)


class _Engine:
    """``LLM.llm_engine``: the request queue (V1's ``LLMEngine`` calls, FINAL_ONLY outputs)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.queue: list[tuple[str, str, dict[str, list[int]], SamplingParams, Any]] = []
        self.aborted: list[str] = []

    def add_request(
        self,
        request_id: str,
        prompt: dict[str, list[int]],
        params: SamplingParams,
        lora_request: LoRARequest | None = None,
    ) -> str:
        if params.output_kind is not RequestOutputKind.FINAL_ONLY:
            raise NotImplementedError("the fake returns finished outputs only (FINAL_ONLY)")
        self.llm._check(prompt, params)
        self.llm._model(lora_request)  # "LoRA is not enabled!" at once, as V1's processor
        self.llm.calls.append({"n_prompts": 1, "lora": lora_request})
        if lora_request is not None:
            EVENTS.append(
                ("generate", self.llm.id, lora_request.lora_int_id, lora_request.lora_path)
            )
        internal = f"{request_id}-fake"
        self.queue.append((request_id, internal, prompt, params, lora_request))
        return internal

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)

    def step(self) -> list[RequestOutput]:
        if not self.queue:
            return []
        rid, _, prompt, params, lora = self.queue.pop(0)
        return [self.llm._request(rid, prompt, params, self.llm._model(lora))]

    def abort_request(self, request_ids: list[str], internal: bool = False) -> None:
        key = 1 if internal else 0
        self.aborted += request_ids
        self.queue = [q for q in self.queue if q[key] not in set(request_ids)]


def install(monkeypatch: Any) -> types.ModuleType:
    """Make ``import vllm`` (and the submodules ssd_tui uses) give this fake; returns it."""
    me = sys.modules[__name__]
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = LoRARequest
    lora.request = lora_request
    dist = types.ModuleType("vllm.distributed")
    parallel_state = types.ModuleType("vllm.distributed.parallel_state")
    parallel_state.cleanup_dist_env_and_memory = cleanup_dist_env_and_memory
    dist.parallel_state = parallel_state
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.RequestOutputKind = RequestOutputKind
    sampling_params.SamplingParams = SamplingParams
    for name, mod in {
        "vllm.sampling_params": sampling_params,
        "vllm": me,
        "vllm.lora": lora,
        "vllm.lora.request": lora_request,
        "vllm.distributed": dist,
        "vllm.distributed.parallel_state": parallel_state,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    EVENTS.clear()
    return me
