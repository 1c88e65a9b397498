"""Teacher-forced probe scoring: equals a manual forward pass; truncation as a sampler does it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssd_tui.analysis import rounds as an
from ssd_tui.analysis.probe import position_stats, score_completions
from ssd_tui.config import AnalysisSection, EvalSection, RunConfig
from ssd_tui.engine.base import SamplingParams
from ssd_tui.engine.truncation import truncation_mask
from ssd_tui.store.run_store import RunStore, SampleRow

PROMPTS = [
    "def add(a, b):\n",
    "import os\n\nclass Box:\n    def size(self):\n",
    "x",
    "def f(xs):\n    '''Sum.'''\n",
]
COMPLETIONS = [
    "    return a + b\n",
    "        return len(self.items)",
    "",
    "    total = 0\n    for x in xs:\n        total += x\n    return total\n",
]
PARAMS = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, tok


def _manual_mask(z: np.ndarray, p: SamplingParams) -> np.ndarray:
    """vLLM's truncation written out with numpy: temperature, min-p, top-k (ties kept), top-p."""
    zt = z.astype(np.float64) / p.temperature
    keep = np.ones_like(zt, dtype=bool)
    if p.min_p:
        probs = np.exp(zt - zt.max())
        keep &= probs / probs.sum() >= p.min_p * probs.max() / probs.sum()
    if p.top_k:
        keep &= zt >= np.sort(np.where(keep, zt, -np.inf))[::-1][p.top_k - 1]
    if p.top_p < 1:
        probs = np.where(keep, np.exp(zt - zt.max()), 0.0)
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]
        ok = np.zeros_like(keep)
        ok[order] = before < p.top_p  # the mass ranked above a kept token is < top_p
        ok[order[0]] = True
        keep &= ok
    return keep


def _manual_scores(
    model, tok, prompt: str, completion: str, p: SamplingParams
) -> dict[str, np.ndarray]:
    """One unbatched, unpadded forward pass; statistics computed with numpy in float64."""
    p_ids = tok(prompt)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + c_ids])).logits[0].double().numpy()
    out = {k: [] for k in ("logprobs", "entropies", "tail_mass", "top1")}
    for j, target in enumerate(c_ids):
        z = logits[len(p_ids) - 1 + j]
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        prob = np.exp(logp)
        out["logprobs"].append(logp[target])
        out["entropies"].append(-(prob * logp).sum())
        out["top1"].append(prob.max())
        out["tail_mass"].append(prob[~_manual_mask(z, p)].sum())
    return {"token_ids": np.array(c_ids), **{k: np.array(v) for k, v in out.items()}}


def test_truncation_mask_by_hand():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    mask = lambda **kw: truncation_mask(z, SamplingParams(**kw))[0].tolist()  # noqa: E731
    assert mask() == [True] * 4
    assert mask(top_k=3) == [True, True, True, False]
    assert mask(top_p=0.8) == [True, True, False, False]  # mass above the third is exactly 0.8
    assert mask(top_p=0.81) == [True, True, True, False]
    assert mask(top_p=0.01) == [True, False, False, False]  # the top token always survives
    assert mask(min_p=0.4) == [True, True, False, False]  # p ≥ 0.2
    # Temperature first: at T = 2, probs ∝ sqrt(p) = .71 .55 .39 .22 → (.38 .29 .21 .12)
    assert mask(temperature=2.0, top_p=0.8) == [True, True, True, False]
    assert mask(temperature=0.0) == [True, False, False, False]


@pytest.mark.parametrize(
    "params", [PARAMS, SamplingParams(temperature=1.0), SamplingParams(temperature=1.3, top_k=5)]
)
def test_scores_equal_a_manual_forward_pass(tiny, params):
    model, tok = tiny
    got = score_completions(model, tok, PROMPTS, COMPLETIONS, params, batch_size=3)
    assert len(got) == len(PROMPTS)
    for prompt, completion, g in zip(PROMPTS, COMPLETIONS, got, strict=True):
        want = _manual_scores(model, tok, prompt, completion, params)
        assert set(g) >= {"token_ids", "logprobs", "entropies", "tail_mass", "top1", "offsets"}
        np.testing.assert_array_equal(g["token_ids"], want["token_ids"])
        for k in ("logprobs", "entropies", "tail_mass", "top1"):
            np.testing.assert_allclose(g[k], want[k], atol=2e-4, err_msg=k)
            assert g[k].dtype == np.float32
        assert len(g["offsets"]) == len(g["token_ids"])


def test_padding_side_and_batch_size_do_not_matter(tiny):
    model, tok = tiny
    runs = []
    for side, bs in (("left", 4), ("right", 2), ("left", 1)):
        tok.padding_side = side
        runs.append(score_completions(model, tok, PROMPTS, COMPLETIONS, PARAMS, batch_size=bs))
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_offsets_point_into_the_completion(tiny):
    model, tok = tiny
    [g] = score_completions(model, tok, [PROMPTS[0]], [COMPLETIONS[0]], PARAMS)
    starts = list(g["offsets"]) + [len(COMPLETIONS[0])]
    pieces = [COMPLETIONS[0][a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert "".join(pieces) == COMPLETIONS[0]
    assert [tok.decode([t]) for t in g["token_ids"]] == pieces


def test_empty_completion_and_training_mode_restored(tiny):
    model, tok = tiny
    model.train()
    try:
        [g] = score_completions(model, tok, ["def f():"], [""], PARAMS)
        assert model.training
    finally:
        model.eval()
    assert all(len(v) == 0 for v in g.values())


def test_mismatched_lengths_are_an_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError):
        score_completions(model, tok, ["a"], [], PARAMS)


# ---- the probe through analyse_round with a real model --------------------------------------------------


def _run_with_eval_samples(tmp_path: Path) -> RunStore:
    store = RunStore.open(tmp_path / "run.db", create=True)
    probs = [
        SimpleNamespace(
            id=f"p{i}", prompt=p, tests=None, entry_point=None, difficulty=None, source="t"
        )
        for i, p in enumerate(PROMPTS)
    ]
    ids = store.add_problems("eval", probs)
    rows = [
        SampleRow(0, "eval", ids[f"p{i}"], j, 0.8, 0, 0.95, 0.0, c, PROMPTS[i] + c, "stop", [1], [0.0], [1.0], [0.0])
        for i, c in enumerate(COMPLETIONS)
        for j in range(2)
    ]  # fmt: skip
    store.add_samples(rows)
    return store


def test_analyse_round_with_a_real_scorer(tiny, tmp_path):
    model, tok = tiny
    store = _run_with_eval_samples(tmp_path)
    cfg = RunConfig(
        eval=EvalSection(temperature=0.8), analysis=AnalysisSection(fork_entropy=3.0, lock_top1=0.5)
    )
    params = cfg.eval_sampling(seed=0)

    def scorer(prompts, completions):
        return score_completions(model, tok, prompts, completions, params)

    an.analyse_round(store, 0, cfg, scorer)
    an.analyse_round(store, 1, cfg, scorer)  # same model: round 1 must reproduce round 0 exactly
    base, again = store.probe_stats(0), store.probe_stats(1)
    assert len(base) == len(PROMPTS) * 2 and set(base) == set(again)
    for sid in base:
        for k in base[sid]:
            np.testing.assert_allclose(base[sid][k], again[sid][k], atol=1e-5)
    m0 = {r["name"]: r["value"] for r in store.metrics("probe") if r["round"] == 0}
    m1 = {r["name"]: r["value"] for r in store.metrics("probe") if r["round"] == 1}
    assert m0 == pytest.approx(m1)
    expected_positions = (
        sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in COMPLETIONS) * 2
    )
    assert m0["n_positions"] == expected_positions
    assert m0["n_fork"] + m0["n_lock"] > 0
    assert 0.0 <= m0["kept_mass"] <= 1.0
    assert store.warnings() == []


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        SamplingParams(1.2, 0, 0.95),
        SamplingParams(0.9, 20, 1.0),
        SamplingParams(1.0, 0, 1.0, 0.1),
    ],
)
def test_tail_mass_matches_the_transformers_sampler(params):
    """The probe's truncation set is the one the project's sampler keeps while generating."""
    pick_tokens = pytest.importorskip("ssd_tui.engine.hf").pick_tokens
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 300, generator=gen) * 3
    _, _, entropy, tail = pick_tokens(logits, params, torch.Generator().manual_seed(1))
    stats = position_stats(logits, torch.zeros(len(logits), dtype=torch.long), params)
    np.testing.assert_allclose(stats["tail_mass"], tail.numpy(), atol=1e-5)
    np.testing.assert_allclose(stats["entropies"], entropy.numpy(), atol=1e-5)
