"""The one truncation rule: which tokens a sampler keeps at one position.

Every engine and the probe use this module, so one config means one distribution
everywhere. The rule is vLLM V1's (``vllm/v1/sample/sampler.py``): on the logits,

1. temperature: divide by T (below ``GREEDY_EPS`` decoding is greedy: the arg-max only);
2. min-p (an arg-max-invariant logits processor): drop tokens whose tempered probability
   is below ``min_p`` times the top token's;
3. top-k (``ops/topk_topp_sampler.py``): drop tokens whose tempered logit is below the
   k-th largest, so every token tied with the k-th stays (more than k may survive);
4. top-p, renormalised over what is left: sort ascending, drop the tokens whose ascending
   cumulative probability is ≤ 1 − top_p, always keeping the top token.

``truncate_logits`` is the rule on a tensor (the transformers sampler and the probe);
``tail_mass_from_top`` reconstructs the same kept set from the top-N log-probs vLLM returns
(the vLLM engine), and says None when those N numbers cannot determine it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ssd_tui.engine.base import SamplingParams

# vLLM's _SAMPLING_EPS: temperatures below this decode greedily, on every engine.
GREEDY_EPS = 1e-5
# vLLM's SamplingParams raises 0 < T < 0.01 to 0.01 (the vLLM engine's reconstruction uses it).
VLLM_MIN_TEMPERATURE = 0.01

# Relative margin around a truncation boundary inside which we call the kept set
# undetermined: vLLM's float32 kernels and our sums of float32 log-probs may round either
# way there.
_MARGIN = 1e-4
# Log-probs this close may be the same float32 logit, which vLLM's top-k keeps together.
_TIE = 1e-6


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_EPS


def truncates(params: SamplingParams, vocab_size: int | None) -> bool:
    """Whether any truncation (top-k, top-p, min-p) is on for a vocabulary of this size."""
    top_k_on = params.top_k > 0 and (vocab_size is None or params.top_k < vocab_size)
    return top_k_on or params.top_p < 1.0 or params.min_p > 0.0


# --------------------------------------------------------------------------- on logits


def truncate_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Tempered float32 logits (rows × vocab) with ``-inf`` outside the kept set.

    Softmax of the result is the distribution a sampler with ``params`` draws from.
    Greedy decoding keeps exactly the arg-max token (its logit is left untempered).
    """
    z = logits.float()
    if is_greedy(params):
        keep = torch.zeros_like(z, dtype=torch.bool).scatter(-1, z.argmax(-1, keepdim=True), True)
        return z.masked_fill(~keep, -math.inf)
    z = z / params.temperature  # a new tensor: the caller's logits are never changed
    if params.min_p > 0.0:
        probs = torch.softmax(z, dim=-1)
        threshold = probs.amax(dim=-1, keepdim=True) * params.min_p
        z = z.masked_fill(probs < threshold, -math.inf)
    vocab = z.shape[-1]
    top_k = params.top_k if 0 < params.top_k < vocab else 0
    if top_k:
        # Below the k-th largest value is cut; ties with it stay (vLLM: logits < kth).
        kth = z.topk(top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, -math.inf)
    if params.top_p < 1.0:
        # Sort only the candidates min-p and top-k left (the rest are -inf and carry no
        # mass): with top-k 20 that is 20 values, not the whole vocabulary, every step.
        n = int(torch.isfinite(z).sum(dim=-1).max())
        z_sort, idx = z.topk(max(n, 1), dim=-1)
        z_sort, idx = z_sort.flip(-1), idx.flip(-1)  # ascending, as vLLM sorts
        cum = torch.softmax(z_sort, dim=-1).cumsum(dim=-1)
        cut = cum <= 1.0 - params.top_p
        cut[..., -1] = False  # the top token always stays
        z = z.scatter(-1, idx, z_sort.masked_fill(cut, -math.inf))
    return z


def truncation_mask(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Boolean mask (same shape as ``logits``) of the tokens a sampler with ``params`` keeps."""
    return torch.isfinite(truncate_logits(logits, params)) & torch.isfinite(logits.float())


def tail_mass(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """T = 1 probability outside the kept set, per row (0 when nothing is cut)."""
    p = torch.softmax(logits.float(), dim=-1)
    return p.masked_fill(truncation_mask(logits, params), 0.0).sum(dim=-1).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- from top-N log-probs


def _rest_bounds(r: float, m: float, a: float, count: int | None) -> tuple[float, float]:
    """Bounds on Σ p_j^a over the tokens outside the top N.

    Their T = 1 mass is ``r`` and each has p_j ≤ ``m``; ``count`` of them (None: unknown).
    For a > 1 the sum is largest when the mass sits in as few tokens as possible and
    smallest when spread evenly; for a < 1 the other way round.
    """
    if r <= 0.0:
        return 0.0, 0.0
    if abs(a - 1.0) < 1e-12:
        return r, r
    packed = r * m ** (a - 1.0)
    spread = r**a * count ** (1.0 - a) if count else None
    if a > 1.0:
        return (spread or 0.0), packed
    return packed, (spread if spread is not None else math.inf)


def kept_prefix(
    top: Sequence[float], params: SamplingParams, vocab_size: int | None = None
) -> int | None:
    """How many of the top tokens vLLM's truncation keeps, if the top-N log-probs show it.

    ``top`` holds the T = 1 log-probs of ranks 1..N, descending. vLLM V1 truncates in this
    order: temperature, then min-p (a ratio test against the top token), then top-k, then
    top-p renormalised over what is left. Every step keeps a prefix of the ranking, so the
    kept set is the first L tokens. Returns L when it is certain that L ≤ N, else None.
    A caller handles greedy decoding and "no truncation" first.
    """
    n = len(top)
    if n == 0:
        return None
    p = [math.exp(x) for x in top]
    t = max(params.temperature, VLLM_MIN_TEMPERATURE)
    rest = _Rest.of(p, vocab_size)
    # limit: the visible tokens still kept; rest_cut: every token outside the top N is cut.
    limit, rest_cut = n, rest.count == 0
    if params.min_p > 0.0:
        step = _min_p_step(p, params.min_p**t, rest.biggest)
        if step is None:
            return None
        limit, rest_cut = step[0], rest_cut or step[1]
    k = params.top_k
    if 0 < k and (vocab_size is None or k < vocab_size):
        step = _top_k_step(top, k, limit, rest_cut)
        if step is None:
            return None
        limit, rest_cut = step
    if params.top_p >= 1.0:
        return limit if rest_cut else None
    return _top_p_step(p, 1.0 / t, params, limit, rest_cut, rest)


@dataclass(slots=True)
class _Rest:
    """What the top N log-probs say about the tokens outside them."""

    lo: float  # their T = 1 mass, as an interval: float32 log-probs sum with some error
    hi: float
    biggest: float  # no token outside the top N is likelier than this
    smallest_top: float  # the N-th token's probability
    count: int | None  # how many there are (None: the vocabulary size is unknown)

    @staticmethod
    def of(p: list[float], vocab_size: int | None) -> _Rest:
        n = len(p)
        count = None if vocab_size is None else max(0, vocab_size - n)
        rest = 1.0 - sum(p)
        slack = 1e-6 + 1e-7 * n
        lo, hi = max(0.0, rest - slack), max(0.0, rest + slack)
        if count == 0:
            lo = hi = 0.0
        return _Rest(lo, hi, min(p[-1], hi), p[-1], count)


def _min_p_step(p: list[float], ratio: float, biggest_rest: float) -> tuple[int, bool] | None:
    """(tokens min-p keeps, whether it cuts every token outside the top N); None on the
    boundary. q_i / q_1 = (p_i / p_1)^a >= min_p  <=>  p_i >= p_1 * min_p^T = p_1 * ratio."""
    thr = p[0] * ratio
    limit = 0
    for x in p:
        if x >= thr * (1 + _MARGIN):
            limit += 1
        elif x < thr * (1 - _MARGIN):
            break
        else:
            return None  # on the boundary
    return limit, limit < len(p) or biggest_rest < thr * (1 - _MARGIN)


def _top_k_step(
    top: Sequence[float], k: int, limit: int, rest_cut: bool
) -> tuple[int, bool] | None:
    """(tokens kept after top-k, whether every token outside the top N is cut); None when
    the top-k set is not determined by the visible tokens."""
    if k < limit:  # top-k cuts inside the visible tokens (so k < n)
        if top[k - 1] - top[k] <= _TIE:
            return None  # a tie at the k-th token: vLLM keeps every tied token
        return k, True
    if rest_cut:
        return limit, True  # min-p already cut at or before the k-th token
    if k == len(top):
        return limit, True  # exactly the visible tokens (a tie beyond them is not visible)
    return None  # the top-k set reaches beyond the tokens we can see


def _top_p_step(
    p: list[float], a: float, params: SamplingParams, limit: int, rest_cut: bool, rest: _Rest
) -> int | None:
    """Tokens kept after top-p, renormalised over the ``limit`` tokens (and, unless cut,
    the unseen rest) left by min-p and top-k, at tempered weights p^a."""
    w = [x**a for x in p[:limit]]
    known = sum(w)
    if rest_cut:
        z_lo = z_hi = known
    else:
        # Both bounds grow with the mass, so the interval's ends give the outer bounds.
        lo = _rest_bounds(rest.lo, min(rest.smallest_top, rest.lo), a, rest.count)[0]
        hi = _rest_bounds(rest.hi, rest.biggest, a, rest.count)[1]
        if params.min_p > 0.0:
            lo = 0.0  # min-p may have cut any of them
        z_lo, z_hi = known + lo, known + hi
    # Keep token i while the (renormalised) mass ranked strictly above it is < top_p.
    above = 0.0
    for i, wi in enumerate(w):
        if i > 0:
            if above >= params.top_p * z_hi * (1 + _MARGIN):
                return i
            if above >= params.top_p * z_lo * (1 - _MARGIN):
                return None
        above += wi
    if rest_cut:
        return limit
    # Every visible token is kept; the rest are cut only if the visible mass already
    # reaches top_p of the largest possible total.
    return limit if above >= params.top_p * z_hi * (1 + _MARGIN) else None


def tail_mass_from_top(
    top: Sequence[float],
    params: SamplingParams,
    vocab_size: int | None = None,
    sampled_rank: int | None = None,
) -> float | None:
    """T = 1 mass outside vLLM's kept set at one position, or None if ``top`` cannot tell.

    ``top``: T = 1 log-probs of ranks 1..N (descending); ``sampled_rank``: the sampled
    token's rank (1 = most likely), used as a consistency check: a sampled token outside
    the computed kept set means the reconstruction is wrong, so None.
    """
    if is_greedy(params):
        if not top or (sampled_rank is not None and sampled_rank != 1):
            return None
        return max(0.0, 1.0 - math.exp(top[0]))
    if not truncates(params, vocab_size):
        return 0.0
    kept = kept_prefix(top, params, vocab_size)
    if kept is None or (sampled_rank is not None and sampled_rank > kept):
        return None
    return max(0.0, 1.0 - sum(math.exp(x) for x in top[:kept]))
