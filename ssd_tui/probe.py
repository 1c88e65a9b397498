"""Teacher-forced re-scoring of fixed completions under a model (the fork/lock probe).

``score_completions`` runs one forward pass over prompt + completion and returns,
for each completion token, the statistics of the model's next-token distribution at
that position. It is a pure function of (model, tokenizer, texts, params): the
analysis calls it once per round on the same round-0 samples, so the numbers are
comparable position by position across rounds.

Conventions (the same as the samplers' ``Completion`` statistics):
- entropy, top-1 probability and the sampled token's log-probability are measured
  on the full distribution at T = 1;
- the truncation set is what a sampler with ``params`` would keep: temperature, then
  top-k, then top-p, then min-p, on the tempered distribution (vLLM's order);
- ``tail_mass`` is the T = 1 probability outside that set (0 when nothing is cut).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssd_tui.engine.base import SamplingParams

# Positions scored at once: bounds the (positions × vocab) float32 temporaries
# (several per chunk; with a 150k vocab, 64 positions ≈ 40 MB each).
_CHUNK = 64

# Temperatures below this decode greedily (the same cut as the transformers sampler).
GREEDY_EPS = 1e-5

STAT_KEYS = ("token_ids", "offsets", "logprobs", "entropies", "tail_mass", "top1")


@dataclass
class _Encoded:
    prompt: list[int]
    completion: list[int]
    offsets: list[int]  # character start of each completion token (-1 if unknown)


def truncation_mask(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Boolean mask (same shape as ``logits``, last dim = vocab) of the tokens a sampler keeps."""
    z = logits.float()
    if params.temperature < GREEDY_EPS:  # greedy: only the arg-max survives
        return torch.zeros_like(z, dtype=torch.bool).scatter(-1, z.argmax(-1, keepdim=True), True)
    zt = z / params.temperature
    keep = torch.ones_like(zt, dtype=torch.bool)
    vocab = zt.shape[-1]
    if 0 < params.top_k < vocab:
        # Exactly k tokens (torch.topk), as the project's sampler and vLLM keep.
        idx = zt.topk(params.top_k, dim=-1).indices
        keep = torch.zeros_like(keep).scatter(-1, idx, True)
    if params.top_p < 1.0:
        probs = torch.softmax(zt.masked_fill(~keep, float("-inf")), dim=-1)
        sp, si = probs.sort(dim=-1, descending=True)
        # Keep a token while the mass ranked strictly above it is < top_p (the first always).
        kept_sorted = (sp.cumsum(dim=-1) - sp) < params.top_p
        kept_sorted[..., 0] = True
        keep &= torch.zeros_like(keep).scatter(-1, si, kept_sorted)
    if params.min_p > 0.0:
        # Relative to the top token, so renormalising after top-k/top-p changes nothing.
        probs = torch.softmax(zt.masked_fill(~keep, float("-inf")), dim=-1)
        keep &= probs >= params.min_p * probs.max(dim=-1, keepdim=True).values
    return keep


def position_stats(
    logits: torch.Tensor, targets: torch.Tensor, params: SamplingParams
) -> dict[str, np.ndarray]:
    """Per-position statistics of next-token logits (positions × vocab) and the tokens that followed."""
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("logprobs", "entropies", "tail_mass", "top1")
    }
    for a in range(0, logits.shape[0], _CHUNK):
        z = logits[a : a + _CHUNK].float()
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        tail = p.masked_fill(truncation_mask(z, params), 0.0).sum(dim=-1).clamp(0.0, 1.0)
        parts["logprobs"].append(logp.gather(-1, targets[a : a + _CHUNK, None])[:, 0].cpu().numpy())
        parts["entropies"].append(torch.special.entr(p).sum(dim=-1).cpu().numpy())
        parts["tail_mass"].append(tail.cpu().numpy())
        parts["top1"].append(p.max(dim=-1).values.cpu().numpy())
    return {
        k: (np.concatenate(v) if v else np.zeros(0)).astype(np.float32) for k, v in parts.items()
    }


def score_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    params: SamplingParams,
    batch_size: int = 8,
) -> list[dict[str, np.ndarray]]:
    """Score each completion given its prompt with one teacher-forced forward pass.

    Returns one dict per completion with arrays of equal length (its tokens):
    ``token_ids`` (int32), ``offsets`` (int32 character start in the completion, -1 if
    the tokenizer cannot say), ``logprobs``, ``entropies``, ``tail_mass``, ``top1``
    (float32). Batches are right-padded here whatever the tokenizer's padding side,
    so positions are 0.. for every row without passing position ids.
    """
    if len(prompts) != len(completions):
        raise ValueError("prompts and completions must have the same length")
    encoded = [_encode(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    # Longest first: rows of similar length share a batch, so little padding is computed.
    order = sorted(range(len(encoded)), key=lambda i: -_length(encoded[i]))
    results: list[dict[str, np.ndarray] | None] = [None] * len(encoded)
    was_training = bool(getattr(model, "training", False))
    model.eval()  # dropout off: scores must be deterministic
    try:
        with torch.inference_mode():
            for b in range(0, len(order), max(1, batch_size)):
                idx = order[b : b + max(1, batch_size)]
                for i, stats in zip(
                    idx, _score_batch(model, [encoded[i] for i in idx], params), strict=True
                ):
                    results[i] = stats
    finally:
        if was_training:
            model.train()
    return [r for r in results if r is not None]


def _length(e: _Encoded) -> int:
    return len(e.prompt) + len(e.completion)


def _encode(tokenizer, prompt: str, completion: str) -> _Encoded:
    """Prompt ids as a sampler would feed them; completion ids tokenised on their own."""
    bos = getattr(tokenizer, "bos_token", None)
    # A rendered chat prompt may already carry the BOS text; don't add a second one.
    add_special = not (bos and prompt.startswith(bos))
    p_ids = list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
    if not p_ids:  # the first completion token needs a position to be predicted from
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        p_ids = [int(start if start is not None else 0)]
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=fast)
    c_ids = list(enc["input_ids"])
    offsets = [int(s) for s, _ in enc["offset_mapping"]] if fast else [-1] * len(c_ids)
    return _Encoded(p_ids, c_ids, offsets)


def _accepts_logits_to_keep(model) -> bool:
    # PEFT wrappers forward **kwargs to the base model: look at the real forward.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _device(model) -> torch.device:
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def _score_batch(
    model, batch: list[_Encoded], params: SamplingParams
) -> list[dict[str, np.ndarray]]:
    width = max(_length(e) for e in batch)
    ids = torch.zeros(
        (len(batch), width), dtype=torch.long
    )  # pad id is irrelevant: masked, and after
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, e in enumerate(batch):
        seq = e.prompt + e.completion
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
    # Logit at position t predicts token t+1: the first needed is the last prompt token's.
    first = min(len(e.prompt) for e in batch) - 1
    kwargs = {"logits_to_keep": width - first} if _accepts_logits_to_keep(model) else {}
    shift = first if kwargs else 0
    dev = _device(model)
    logits = model(
        input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, **kwargs
    ).logits
    out = []
    for r, e in enumerate(batch):
        a = len(e.prompt) - 1 - shift
        targets = torch.tensor(e.completion, dtype=torch.long, device=logits.device)
        stats = position_stats(logits[r, a : a + len(e.completion)], targets, params)
        stats["token_ids"] = np.asarray(e.completion, dtype=np.int32)
        stats["offsets"] = np.asarray(e.offsets, dtype=np.int32)
        out.append(stats)
    return out
