"""The one truncation rule (engine/truncation.py) against vLLM V1's, on both engines."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ssd_tui.analysis.probe import position_stats
from ssd_tui.engine.base import SamplingParams
from ssd_tui.engine.hf import pick_tokens
from ssd_tui.engine.truncation import kept_prefix, tail_mass_from_top, truncation_mask
from tests.vllm_reference import apply_top_k_top_p, vllm_kept, vllm_processed_logits

GRID = [
    SamplingParams(temperature=1.0, top_k=20),
    SamplingParams(temperature=1.6, top_k=20, top_p=0.8),  # the paper's Qwen3 setting
    SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=1.1, top_k=40, top_p=0.95, min_p=0.05),
    SamplingParams(temperature=1.0, top_p=0.9),
    SamplingParams(temperature=1.2, min_p=0.1),
    SamplingParams(temperature=1.1, min_p=0.1, top_p=0.8),  # min-p + top-p: the order matters
    SamplingParams(temperature=0.8, min_p=0.1, top_k=20, top_p=0.8),  # README's "+ min-p" row
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=1.0),
]


def _ids(p: SamplingParams) -> str:
    return f"T{p.temperature}k{p.top_k}p{p.top_p}m{p.min_p}"


def _ref(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    return vllm_kept(logits, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p)


def _logits(rows: int = 96, vocab: int = 400, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 8.0, rows)[:, None]  # flat to peaked rows
    return torch.randn(rows, vocab, generator=gen) * scale


@pytest.mark.parametrize("params", GRID, ids=_ids)
def test_kept_set_is_vllms(params: SamplingParams) -> None:
    logits = _logits()
    assert torch.equal(truncation_mask(logits, params), _ref(logits, params))


def test_top_k_keeps_every_token_tied_with_the_kth() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 2.0, 2.0, 1.0]])
    params = SamplingParams(temperature=1.0, top_k=3)
    kept = truncation_mask(logits, params)
    assert kept[0].tolist() == [True, True, True, True, True, False]  # 5 tokens, not 3
    assert torch.equal(kept, _ref(logits, params))


def test_min_p_comes_before_top_k_and_top_p() -> None:
    """min-p is measured on the full tempered distribution, before top-p renormalises."""
    p = torch.tensor([[0.40, 0.30, 0.12, 0.10, 0.08]])
    params = SamplingParams(temperature=1.0, top_p=0.75, min_p=0.3)
    # vLLM: min-p keeps p ≥ 0.12 (3 tokens); top-p over .40/.30/.12 renormalised keeps
    # tokens while the mass above them is < 0.75: .49 and .85 → the first 2.
    assert truncation_mask(p.log(), params)[0].tolist() == [True, True, False, False, False]
    # Where the order matters: .35 .20 .15 and fifteen tokens of .02.
    q = torch.tensor([[0.35, 0.20, 0.15] + [0.02] * 15])
    params = SamplingParams(temperature=1.0, top_p=0.6, min_p=0.1)
    # vLLM: min-p (p ≥ .035) leaves 3, renormalised .50 .29 .21; top-p 0.6 cuts the third
    # (.79 above it). min-p last would keep 3: top-p on the full distribution sees .55 above it.
    assert truncation_mask(q.log(), params)[0].tolist() == [True, True] + [False] * 16
    assert torch.equal(truncation_mask(q.log(), params), _ref(q.log(), params))


@pytest.mark.parametrize("params", [g for g in GRID if g.temperature > 0], ids=_ids)
def test_the_transformers_sampler_draws_from_vllms_set(params: SamplingParams) -> None:
    logits = _logits(seed=1)
    kept = _ref(logits, params)
    tokens, _, _, tail = pick_tokens(logits, params, torch.Generator().manual_seed(0))
    assert kept.gather(-1, tokens[:, None]).all()
    p1 = logits.softmax(-1)
    torch.testing.assert_close(tail, 1 - (p1 * kept).sum(-1), atol=1e-5, rtol=0)
    # The probe measures the same set.
    stats = position_stats(logits, tokens, params)
    torch.testing.assert_close(torch.from_numpy(stats["tail_mass"]), tail, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.1, min_p=0.1, top_p=0.8),
        SamplingParams(temperature=0.8, min_p=0.1, top_k=20, top_p=0.8),
    ],
    ids=_ids,
)
def test_min_p_and_top_p_keep_the_same_tokens_on_both_engines(params: SamplingParams) -> None:
    """transformers engine (the kept mask) and vLLM engine (the set read back from top-N)."""
    logits = _logits(rows=200, vocab=300, seed=2)
    hf_kept = truncation_mask(logits, params)
    logp = torch.log_softmax(logits.double(), -1)
    determined = 0
    for row in range(len(logits)):
        top = logp[row].float().topk(64).values.tolist()
        n = kept_prefix(top, params, vocab_size=300)
        if n is None:
            continue
        determined += 1
        assert n == int(hf_kept[row].sum())
        want = float(1 - logp[row].exp()[hf_kept[row]].sum())
        assert tail_mass_from_top(top, params, 300) == pytest.approx(want, abs=1e-5)
    assert determined >= 100


def test_the_real_vllm_functions_agree_where_vllm_is_installed() -> None:
    ops = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")
    real = getattr(ops, "apply_top_k_top_p_pytorch", None) or ops.apply_top_k_top_p
    logits = _logits()
    for params in GRID:
        kw = {
            k: v
            for k, v in dataclasses.asdict(params).items()
            if k in ("temperature", "top_k", "top_p", "min_p")
        }
        ours = truncation_mask(logits, params)
        theirs = torch.isfinite(vllm_processed_logits(logits, **kw, apply_top_k_top_p=real))
        assert torch.equal(ours, theirs), params


def test_the_transcription_is_not_trivially_ours() -> None:
    """The oracle differs from the old (min-p last) rule, so the tests above can fail."""
    logits = _logits()
    params = SamplingParams(temperature=1.1, min_p=0.1, top_p=0.8)
    x = logits / params.temperature
    old = torch.isfinite(apply_top_k_top_p(x.clone(), None, torch.full((len(x),), 0.8)))
    probs = x.masked_fill(~old, -float("inf")).softmax(-1)
    old &= probs >= 0.1 * probs.amax(-1, keepdim=True)
    assert not torch.equal(old, _ref(logits, params))
