"""Exact token statistics for samples stored without them: the teacher-forced pass.

The pass (``Pipeline.fill_token_stats`` → ``probe.score_token_ids``) must give the numbers the
transformers sampler records while decoding, write each batch whole, and resume after kill -9
without redoing a sample.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runkit import write_config, write_problems

from ssd_tui.analysis.probe import batches_by_tokens, score_token_ids
from ssd_tui.config import load_config
from ssd_tui.engine.base import SamplingParams, encode_prompt
from ssd_tui.engine.hf import HFSampler
from ssd_tui.runs.pipeline import Pipeline
from ssd_tui.store.run_store import RunStore, unpack

PROMPTS = ["def add(a, b):\n", "import os\n\nclass Box:\n", "for i in range("]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path):
    with HFSampler(str(tiny_model_dir), batch_size=3) as s:
        yield s


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(0.7, 20, 0.9, 0.05),  # every truncation at once
        SamplingParams(1.2, 0, 0.95),  # top-p only: where vLLM's top-N tail was undetermined
        SamplingParams(1.0, 8, 1.0),
        SamplingParams(1.0),  # nothing truncated: tail 0
        SamplingParams(0.0),  # greedy: the tail is everything but the arg-max
    ],
    ids=["all", "top-p", "top-k", "none", "greedy"],
)
def test_pass_equals_the_transformers_samplers_own_stats(hf: HFSampler, params) -> None:
    params = SamplingParams(
        params.temperature,
        params.top_k,
        params.top_p,
        params.min_p,
        max_new_tokens=16,
        n=2,
        stop=("\n\n",),
        seed=4,
    )
    outs = hf.generate(PROMPTS, params)
    comps = [c for per in outs for c in per]
    prompt_ids = [encode_prompt(hf.tokenizer, p) for p in PROMPTS for _ in range(2)]
    got = score_token_ids(hf.model, prompt_ids, [c.token_ids for c in comps], params, 4)
    assert len(got) == len(comps) == 6
    for c, g in zip(comps, got, strict=True):
        assert list(g["token_ids"]) == c.token_ids
        np.testing.assert_allclose(g["logprobs"], c.logprobs, atol=1e-4)
        np.testing.assert_allclose(g["entropies"], c.entropies, atol=1e-4)
        np.testing.assert_allclose(g["tail_mass"], c.tail_mass, atol=1e-4)
    if params.temperature > 0 and params.top_k == 0 and params.top_p == 1.0:
        assert all(not g["tail_mass"].any() for g in got)
    else:
        assert any(g["tail_mass"].max() > 1e-3 for g in got)  # the truncation did cut


def test_token_batches_keep_the_budget() -> None:
    assert batches_by_tokens([3, 3, 3, 5, 9], 10) == [[0, 1, 2], [3], [4]]
    assert batches_by_tokens([20], 10) == [[0]]  # one row alone may exceed it
    assert batches_by_tokens([], 10) == []


# ---- the pass in a run: vLLM-like samples (tokens, no entropies) filled in ----------------------

N_EVAL = 8  # samples per problem: 24 samples, one per batch below


def _blank(db: Path) -> dict[int, tuple]:
    """Store the samples as the vLLM engine does (no entropies); return the HF engine's stats."""
    c = sqlite3.connect(db)
    want = {
        r[0]: r[1:]
        for r in c.execute(
            "SELECT s.id, s.logprob_sum, s.mean_entropy, s.mean_tail_mass, t.logprobs, "
            "t.entropies, t.tail_mass FROM samples s JOIN token_stats t ON t.sample_id = s.id"
        )
    }
    c.execute("UPDATE samples SET mean_entropy = NULL, mean_tail_mass = NULL")
    c.execute("UPDATE token_stats SET entropies = x'', tail_mass = x''")
    c.commit()
    c.close()
    return want


def _filled(db: Path) -> dict[int, tuple]:
    c = sqlite3.connect(db)
    rows = c.execute(
        "SELECT s.id, s.logprob_sum, s.mean_entropy, s.mean_tail_mass, t.logprobs, t.entropies, "
        "t.tail_mass FROM samples s JOIN token_stats t ON t.sample_id = s.id "
        "WHERE s.mean_entropy IS NOT NULL"
    ).fetchall()
    c.close()
    return {r[0]: r[1:] for r in rows}


# Runs the pass one sample per batch, slowed after each commit so the test can kill it inside.
SLOW_PASS = """
import sys, time
from ssd_tui.runs import pipeline
from ssd_tui.config import load_config
from ssd_tui.store.run_store import RunStore

real = RunStore.set_token_stats
def slow(self, stats):
    n = real(self, stats)
    time.sleep(0.3)
    return n
RunStore.set_token_stats = slow
pipeline.STATS_BATCH_TOKENS = 1
cfg = load_config(sys.argv[1])
pipe = pipeline.Pipeline(cfg, RunStore.open(cfg.db_path))
pipe.prepare()
print("scoring", flush=True)
pipe.fill_token_stats(0, "evaluate", "eval", cfg.eval.temperature, None, pipe.eval_problems)
"""


# The engine tier: the pass's own kill -9, in a process that loads torch, transformers and
# the tiny model (~5 s on 2 cores). The fast tier checks the pass's numbers (above).
@pytest.mark.engine
def test_pass_fills_every_sample_and_resumes_after_kill_9(tmp_path: Path, tiny_model_dir) -> None:
    write_problems(tmp_path)
    config = write_config(
        tmp_path,
        tiny_model_dir,
        rounds=0,
        eval__samples_per_problem=N_EVAL,
        eval__k=[1],
        eval__top_p=0.9,
        eval__batch_size=3,
    )
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    params = cfg.eval_sampling(seed=cfg.run.seed)  # round 0's eval samples, HF engine
    pipe._generate(0, "evaluate", "eval", pipe.eval_problems, params, None, 3)
    pipe.release_sampler()
    want = _blank(cfg.db_path)
    total = len(want)
    assert total == 3 * N_EVAL and not _filled(cfg.db_path)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PASS, str(config)], env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while len(_filled(cfg.db_path)) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the pass ended before it was killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _filled(cfg.db_path)
    assert 2 <= len(before) < total  # killed inside the pass, with work done

    scored = pipe.fill_token_stats(
        0, "evaluate", "eval", cfg.eval.temperature, None, pipe.eval_problems
    )
    assert scored == total - len(before)  # nothing redone
    after = _filled(cfg.db_path)
    assert set(after) == set(want)  # every sample, no new rows
    assert store.count_samples(0, "eval") == total
    assert {k: after[k] for k in before} == before  # written once, byte for byte
    for sid, (lp_sum, h, tail, lps, hs, tails) in after.items():
        w = want[sid]
        assert lp_sum == pytest.approx(w[0], abs=1e-3)
        assert h == pytest.approx(w[1], abs=1e-4) and tail == pytest.approx(w[2], abs=1e-4)
        for got, ref in ((lps, w[3]), (hs, w[4]), (tails, w[5])):
            np.testing.assert_allclose(unpack(got), unpack(ref), atol=1e-4)
    assert pipe.fill_token_stats(0, "evaluate", "eval", 1.0, None, pipe.eval_problems) == 0
    assert pipe.engines._scoring is None  # the transformers sampler was the scoring model
    store.close()
