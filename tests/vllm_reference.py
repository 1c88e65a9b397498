"""vLLM V1's truncation, transcribed function by function (the test oracle).

Transcribed from vLLM's source (``vllm/v1/sample/sampler.py``: ``Sampler.sample`` applies
``apply_temperature``, then the arg-max-invariant logits processors (min-p,
``logits_processor/builtin.py: MinPLogitsProcessor.apply``), then
``ops/topk_topp_sampler.py: apply_top_k_top_p_pytorch`` / ``apply_top_k_only``). Kept
deliberately close to the original lines (batched tensors, per-row k and p), so a reader
can check it against vLLM side by side. ``ssd_tui/engine/truncation.py`` is the project's
implementation; tests compare the two, and against the real functions where vLLM is
installed.
"""

from __future__ import annotations

import torch

_SAMPLING_EPS = 1e-5


def apply_temperature(logits: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    # Sampler.apply_temperature (greedy rows use temperature 1.0 on the random path).
    return logits.div_(temp.unsqueeze(dim=1))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    # MinPLogitsProcessor.apply
    probability_values = torch.nn.functional.softmax(logits, dim=-1)
    max_probabilities = torch.amax(probability_values, dim=-1, keepdim=True)
    adjusted_min_p = max_probabilities.mul_(min_p.unsqueeze(1))
    invalid_token_mask = probability_values < adjusted_min_p
    logits[invalid_token_mask] = -float("inf")
    return logits


def apply_top_k_only(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    no_top_k_mask = k == logits.shape[1]
    k = k.masked_fill(no_top_k_mask, 1)
    max_top_k = k.max()
    k_index = k.sub_(1).unsqueeze(1)
    top_k_mask = logits.topk(int(max_top_k), dim=1).values.gather(1, k_index.long())
    top_k_mask.masked_fill_(no_top_k_mask.unsqueeze(1), -float("inf"))
    return logits.masked_fill_(logits < top_k_mask, -float("inf"))


def apply_top_k_top_p(
    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None
) -> torch.Tensor:
    # apply_top_k_top_p_pytorch (allow_cpu_sync=True, as on CPU)
    if p is None:
        if k is None:
            return logits
        return apply_top_k_only(logits, k)
    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        top_k_mask = logits_sort.size(1) - k.to(torch.long)
        top_k_mask = logits_sort.gather(1, top_k_mask.unsqueeze(dim=1))
        top_k_mask = logits_sort < top_k_mask
        logits_sort.masked_fill_(top_k_mask, -float("inf"))
    if p is not None:
        probs_sort = logits_sort.softmax(dim=-1)
        probs_sum = torch.cumsum(probs_sort, dim=-1, out=probs_sort)
        top_p_mask = probs_sum <= 1 - p.unsqueeze(dim=1)
        top_p_mask[:, -1] = False
        logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits.scatter_(dim=-1, index=logits_idx, src=logits_sort)


def vllm_processed_logits(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    apply_top_k_top_p=apply_top_k_top_p,
) -> torch.Tensor:
    """What ``Sampler.sample`` feeds the random sampler, for one setting on every row.

    vLLM's SamplingParams turn "off" into k = vocab / p = 1.0, and the input batch passes
    None for a tensor no row uses; the same here. ``apply_top_k_top_p`` may be vLLM's own.
    """
    rows, vocab = logits.shape
    x = logits.float().clone()
    if temperature < _SAMPLING_EPS:
        keep = torch.zeros_like(x, dtype=torch.bool).scatter(1, x.argmax(1, keepdim=True), True)
        return x.masked_fill(~keep, -float("inf"))
    x = apply_temperature(x, torch.full((rows,), temperature))
    if min_p > 0.0:
        x = apply_min_p(x, torch.full((rows,), min_p))
    k = torch.full((rows,), top_k, dtype=torch.int32) if 0 < top_k < vocab else None
    p = torch.full((rows,), top_p) if top_p < 1.0 else None
    return apply_top_k_top_p(x, k, p)


def vllm_kept(logits: torch.Tensor, **params) -> torch.Tensor:
    """The kept-token mask of vLLM V1 for ``SamplingParams``-style keywords."""
    return torch.isfinite(vllm_processed_logits(logits, **params))
