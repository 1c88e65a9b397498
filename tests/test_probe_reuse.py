"""Round 0's fork/lock probe reads what was stored when its samples were scored.

The sampler (transformers) and the exact-statistics pass (vLLM's samples) record, beside a
sample's own statistics, the probe's extras: the top-1 probability and the training
truncation's tail per token. Round 0's probe then reads a sample's statistics from the
store wherever the sample's tokens begin with the probe's tokenisation of its text, instead
of scoring it again. What the probe computes does not change: these tests compare it with
re-scoring (``Pipeline.reuse_stored = False``, the probe as it was).

Tolerance: float32, |Δ| ≤ 1e-4 per token statistic (measured ≤ 6e-6 on the demo model).
Stored statistics come from the sampler's step-by-step KV-cached passes over batches of
other rows (left-padded), the probe's from one teacher-forced pass: the same logits summed
in another order, so float32 rounding apart; 1e-4 is the bound the exact-statistics pass
is held to against the sampler already (tests/test_stats_pass.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runkit import write_config, write_problems

from ssd_tui.analysis.probe import ReusingScorer, score_completions, score_token_ids
from ssd_tui.config import load_config
from ssd_tui.engine.base import Completion, SamplingParams, encode_prompt
from ssd_tui.engine.hf import HFSampler
from ssd_tui.runs.pipeline import Pipeline
from ssd_tui.store.run_store import RunStore

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "assets" / "demo-model"
ATOL = 1e-4
FLOATS = ("logprobs", "entropies", "tail_mass", "top1", "train_tail_mass")
EVAL = SamplingParams(temperature=0.9, top_k=30, top_p=0.9, max_new_tokens=24, n=3, seed=5)
TRAIN = SamplingParams(temperature=1.3, top_k=20, top_p=0.8)


# ---- the sampler records the extras as re-scoring computes them --------------------------------


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir: Path) -> HFSampler:
    return HFSampler(str(tiny_model_dir), batch_size=4)


PROMPTS = ["def add(a, b):\n", "class Box:\n    def size(self):\n", "import os\n"]


@pytest.mark.parametrize("schedule", ["batch", "refill"])
def test_the_sampler_records_the_extras_of_the_first_samples(tiny_hf, schedule) -> None:
    tiny_hf.schedule = schedule
    plain = tiny_hf.generate(PROMPTS, EVAL)
    asked = tiny_hf.generate(PROMPTS, _extra(EVAL, samples=2))
    tiny_hf.schedule = "batch"
    for per_plain, per_asked in zip(plain, asked, strict=True):
        for j, (a, b) in enumerate(zip(per_plain, per_asked, strict=True)):
            # nothing drawn changes: the same tokens, text and statistics
            assert (a.token_ids, a.text, a.logprobs, a.entropies, a.tail_mass) == (
                b.token_ids,
                b.text,
                b.logprobs,
                b.entropies,
                b.tail_mass,
            )
            assert a.top1 == a.extra_tail_mass == []
            if j < 2:
                assert len(b.top1) == len(b.extra_tail_mass) == len(b.token_ids) > 0
            else:
                assert b.top1 == b.extra_tail_mass == []  # only the first 2 of each prompt
    _assert_like_rescoring(tiny_hf, [c for per in asked for c in per[:2]], asked)


def _extra(params: SamplingParams, samples: int | None) -> SamplingParams:
    from dataclasses import replace

    return replace(params, extra_truncation=TRAIN, extra_samples=samples)


def _assert_like_rescoring(hf: HFSampler, done: list[Completion], asked) -> None:
    """The extras equal a teacher-forced pass over the same tokens (score_token_ids)."""
    prompt_of = {id(c): p for p, per in zip(PROMPTS, asked, strict=True) for c in per}
    ids = [encode_prompt(hf.tokenizer, prompt_of[id(c)]) for c in done]
    ref = score_token_ids(hf.model, ids, [c.token_ids for c in done], EVAL, train_params=TRAIN)
    for c, r in zip(done, ref, strict=True):
        np.testing.assert_allclose(c.top1, r["top1"], atol=ATOL)
        np.testing.assert_allclose(c.extra_tail_mass, r["train_tail_mass"], atol=ATOL)
        np.testing.assert_allclose(c.tail_mass, r["tail_mass"], atol=ATOL)
    assert max(max(c.extra_tail_mass) for c in done) > 0  # the training truncation cuts


# ---- the probe's scorer: stored where the tokens are the probe's, scored elsewhere --------------

TEXTS = [
    ("def add(a, b):\n", "    return a + b\n"),
    ("def f(xs):\n", "    total = 0\n    for x in xs:\n        total += x\n    return total\n"),
    ("x = ", ""),
]


def test_reusing_scorer_equals_score_completions_on_the_tiny_model(tiny_hf) -> None:
    """Stored as the exact-statistics pass stores them (teacher-forced over the sample's
    tokens, an EOS after the text: what a finished sample holds), read back by the scorer:
    equal to scoring the texts, and no model is loaded."""
    model, tok = tiny_hf.model, tiny_hf.tokenizer
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    want = score_completions(model, tok, prompts, completions, EVAL, train_params=TRAIN)
    stored = {}
    for p, c in TEXTS:
        ids = list(tok(c, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
        [st] = score_token_ids(model, [encode_prompt(tok, p)], [ids], EVAL, train_params=TRAIN)
        stored[(p, c)] = [{"token_ids": np.asarray(ids, np.int32), **st}]

    def no_model():
        raise AssertionError("every sample was stored: no model should be loaded")

    scorer = ReusingScorer(tok, no_model, EVAL, TRAIN, stored)
    got = scorer(prompts, completions)
    assert (scorer.reused, scorer.scored) == (3, 0)
    _assert_same_probe(got, want)

    # a sample drawn as another tokenisation of its text, or without extras: scored
    p, c = TEXTS[0]
    canon = list(tok(c, add_special_tokens=False)["input_ids"])
    other = {(p, c): [{**stored[(p, c)][0], "token_ids": np.asarray(canon[::-1], np.int32)}]}
    scorer = ReusingScorer(tok, lambda: model, EVAL, TRAIN, other)
    _assert_same_probe(scorer([p], [c]), want[:1])
    assert (scorer.reused, scorer.scored) == (0, 1)


def _assert_same_probe(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        np.testing.assert_array_equal(g["token_ids"], w["token_ids"])
        np.testing.assert_array_equal(g["offsets"], w["offsets"])
        for k in FLOATS:
            assert g[k].dtype == np.float32
            np.testing.assert_allclose(g[k], w[k], atol=ATOL, rtol=0, err_msg=k)


# ---- a real round 0: the probe from stored statistics equals the probe re-scored -----------------


def _demo_round0(folder: Path, **over) -> Path:
    """Round 0 of the demo model on the demo's own problems (8, 4 samples each)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_problems(folder)
    demo = ROOT / "assets" / "demo"
    return write_config(
        folder,
        DEMO_MODEL,
        rounds=0,
        data__benchmark=str(demo / "eval.jsonl"),
        data__max_eval_problems=8,
        eval__samples_per_problem=4,
        eval__k=[1],
        eval__temperature=0.8,
        eval__top_p=0.95,
        eval__max_new_tokens=96,
        eval__stop=["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"],
        eval__batch_size=8,
        sampling__temperature=0.8,
        sampling__top_k=20,
        sampling__top_p=0.8,
        analysis__probe_samples=12,  # 8 problems: samples 0 and 1 of each may be probed
        **over,
    )


class _LikeVllm:
    """The transformers sampler's tokens without any statistic, as vLLM's stage stores them:
    the pipeline's exact-statistics pass scores them (and records the probe's extras)."""

    def __init__(self, hf: HFSampler) -> None:
        self.hf, self.model, self.tokenizer = hf, hf.model, hf.tokenizer

    def generate(self, prompts, params, progress=None):
        out = self.hf.generate(prompts, params)
        return [
            [Completion(c.text, c.token_ids, finish_reason=c.finish_reason) for c in per]
            for per in out
        ]

    def close(self) -> None:
        self.hf.close()


def _probe(store: RunStore) -> tuple[dict, dict]:
    rows = store.probe_stats(0)
    metrics = {m["name"]: m["value"] for m in store.metrics() if m["purpose"] == "probe"}
    return rows, metrics


@pytest.mark.parametrize("engine", ["transformers", "vllm-like"])
def test_round0_probe_from_stored_statistics_equals_rescoring(tmp_path, engine) -> None:
    cfg = load_config(_demo_round0(tmp_path))
    store = RunStore.open(cfg.db_path, create=True)
    make = None
    if engine == "vllm-like":
        make = lambda adapter: _LikeVllm(HFSampler(str(DEMO_MODEL), batch_size=8))  # noqa: E731
    pipe = Pipeline(cfg, store, make_sampler=make)
    pipe.prepare()
    assert pipe.run() == "done"
    # Only the samples the probe can take recorded the extras: 0 and 1 of each problem.
    ready = store.probe_ready_samples(0, "eval", 0.8)
    assert sorted({r["id"] for r in ready}) == sorted(
        s["id"] for s in store.samples(0, "eval") if s["sample_idx"] < 2
    )
    line = [e["message"] for e in store.events() if "fork/lock probe" in e["message"]][-1]
    reused = int(line.split("samples: ")[1].split(" read")[0])
    assert line.startswith("round 0: fork/lock probe of 12 samples") and reused >= 9, line
    stored, m_stored = _probe(store)

    pipe.reuse_stored = False  # the probe as it was: every sample scored again
    pipe.stage_analyse(0)
    again = [e["message"] for e in store.events() if "fork/lock probe" in e["message"]][-1]
    assert "12 samples: 0 read as stored when they were drawn, 12 scored" in again
    rescored, m_rescored = _probe(store)
    assert stored.keys() == rescored.keys() and len(stored) == 12
    _assert_same_probe([stored[k] for k in sorted(stored)], [rescored[k] for k in sorted(stored)])
    assert m_stored.keys() == m_rescored.keys()
    for name, value in m_rescored.items():
        assert m_stored[name] == pytest.approx(value, abs=ATOL), name
    pipe.release_sampler()
    store.close()


def test_borrowed_round0_samples_are_scored_not_read(tmp_path) -> None:
    """A sweep's shared round 0 lends samples drawn under another run's config: their
    extras were recorded under that run's training truncation, so they are not copied."""
    src = load_config(_demo_round0(tmp_path / "a"))
    store = RunStore.open(src.db_path, create=True)
    pipe = Pipeline(src, store)
    pipe.prepare()
    pipe.run()
    pipe.release_sampler()
    rows = store.eval_rows(0, 0.8)
    store.close()
    dst = RunStore.open(tmp_path / "b.db", create=True)
    dst.init_run("b", "m", json.dumps({}), "", ".")
    ids = dst.add_problems("eval", pipe.eval_problems)
    dst.plan_round(0, ["evaluate"])
    assert dst.import_eval_rows(0, "evaluate", rows, ids, {"run": "a"}) == len(rows) == 32
    assert dst.probe_ready_samples(0, "eval", 0.8) == []
    dst.close()
