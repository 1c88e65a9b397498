"""The vLLM sampler, without vLLM: pure functions, plus a FAKE ``vllm`` (tests/fake_vllm.py).

Real vLLM needs CUDA and cannot be installed on the machines these tests run on, so
nothing here shows that the real engine behaves like the fake; docs/gpu.md says so.
What is shown: our parameter mapping, adapter ids, rank check, output conversion and
the GPU hand-off, against an independent implementation of vLLM V1's documented
semantics, and that the sampler's numbers equal the transformers engine's where they
should.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import fake_vllm
import pytest
import torch
from runkit import write_config, write_problems

from ssd_tui.config import load_config, loads_config
from ssd_tui.engine.base import SamplingParams
from ssd_tui.engine.vllm import (
    MISSING_VLLM,
    LoraIds,
    VLLMSampler,
    adapter_rank,
    auto_max_lora_rank,
    check_engine_kwargs,
    check_lora_rank,
    engine_kwargs,
    import_vllm,
    kept_prefix,
    prompt_seeds,
    sampling_kwargs,
    tail_mass_from_top,
    top_logprobs_wanted,
    trim_to_text,
)
from ssd_tui.errors import SSDError

BASE = """
[model]
path = "m"
[data]
train_prompts = "t.jsonl"
benchmark = "e.jsonl"
"""
PROMPTS = ["def add(a, b):\n", "import os\n\nclass Config:\n", "for i in range("]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model is too small for two threads: on a busy 2-core machine their
    spin-waiting made these tests 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    return fake_vllm.install(monkeypatch)


def _cfg(extra: str = "", base_dir: Path | None = None):
    return loads_config(BASE + extra, base_dir=base_dir)


def _lone_line(exc: pytest.ExceptionInfo[SSDError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- import


def test_missing_vllm_is_a_one_line_error(monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(SSDError) as e:
        import_vllm()
    assert _lone_line(e) == MISSING_VLLM
    with pytest.raises(SSDError, match="pip install 'ssd-tui\\[vllm\\]' on a CUDA machine"):
        VLLMSampler(str(tiny_model_dir), cfg=_cfg())


# ----------------------------------------------------------------------------- parameters


def test_sampling_kwargs_map_every_setting(fake) -> None:
    p = SamplingParams(1.6, 0, 0.8, 0.05, max_new_tokens=300, n=4, stop=("\ndef ",), seed=9)
    kw = sampling_kwargs(p, n=4, n_logprobs=20, seed=123)
    assert kw == {
        "n": 4,
        "temperature": 1.6,
        "top_k": -1,  # off: the value every vLLM version accepts
        "top_p": 0.8,
        "min_p": 0.05,
        "seed": 123,
        "stop": ["\ndef "],
        "max_tokens": 300,  # vLLM's default is 16: always set
        "logprobs": 20,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }
    assert sampling_kwargs(SamplingParams(top_k=20), 1, 21, 0)["top_k"] == 20
    fake.SamplingParams(**kw)  # the fake refuses what vLLM V1 refuses; this passes


def test_logprobs_requested_cover_top_k() -> None:
    assert top_logprobs_wanted(20, 0) == 20
    assert top_logprobs_wanted(20, 50) == 51  # top-k set plus one, to see ties
    assert top_logprobs_wanted(20, 5) == 20
    assert top_logprobs_wanted(0, 50) == 0  # 0: the sampled token's log-prob only
    assert top_logprobs_wanted(20, 1000) == 20  # too many to ask for: tail unknown


def test_prompt_seeds_are_distinct_and_stable() -> None:
    a = prompt_seeds(7, 50)
    assert a == prompt_seeds(7, 50) and len(set(a)) == 50
    assert all(0 <= s < 2**30 for s in a)
    assert prompt_seeds(8, 50) != a


def test_engine_kwargs_and_unknown_options(fake) -> None:
    cfg = _cfg("[vllm]\ntensor_parallel_size = 4\nmax_model_len = 4096\nenforce_eager = true\n")
    kw = engine_kwargs(cfg, "/m", enable_lora=False, max_lora_rank=16, max_logprobs=21)
    assert kw["logprobs_mode"] == "raw_logprobs"
    assert kw["tensor_parallel_size"] == 4 and kw["max_model_len"] == 4096
    assert kw["max_logprobs"] == 21 and kw["enforce_eager"] is True
    assert "max_num_seqs" not in kw and "enable_lora" not in kw  # 0 = vLLM's default
    lora = engine_kwargs(cfg, "/m", enable_lora=True, max_lora_rank=32, max_logprobs=0)
    assert (lora["enable_lora"], lora["max_lora_rank"], lora["max_loras"]) == (True, 32, 1)
    fields = {f for f in fake.EngineArgs.__dataclass_fields__}
    check_engine_kwargs(lora, fields, "x")  # every option exists in vLLM's EngineArgs
    with pytest.raises(SSDError) as e:
        check_engine_kwargs(lora, fields - {"logprobs_mode"}, "0.9.2")
    assert "vLLM 0.9.2 has no engine option logprobs_mode" in _lone_line(e)


def test_bad_sampling_settings_are_one_line_errors(fake, tiny_model_dir: Path) -> None:
    s = VLLMSampler(str(tiny_model_dir), cfg=_cfg())
    with pytest.raises(SSDError) as e:
        s.generate(["x"], SamplingParams(temperature=2.5))
    assert "vLLM refused the sampling settings: temperature must be in [0, 2]" in _lone_line(e)
    with pytest.raises(SSDError, match="stop strings must not be empty"):
        s.generate(["x"], SamplingParams(stop=("",)))
    assert not fake.EVENTS  # nothing started the engine


def test_request_refused_by_the_engine_is_one_line(fake, tiny_model_dir: Path) -> None:
    s = VLLMSampler(str(tiny_model_dir), cfg=_cfg("[vllm]\nmax_model_len = 4\n"))
    with pytest.raises(SSDError) as e:
        s.generate([PROMPTS[1]], SamplingParams(max_new_tokens=2))
    assert _lone_line(e).startswith("vLLM refused a request: The decoder prompt (length")
    s.close()


# ----------------------------------------------------------------------------- LoRA


def _adapter(folder: Path, r: int = 4, **extra) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, **extra}))
    (folder / "adapter_model.safetensors").write_bytes(b"w" * r)
    return folder


def test_rank_check_names_both_numbers(tmp_path: Path) -> None:
    assert [auto_max_lora_rank(r) for r in (1, 8, 9, 64, 65, 512)] == [8, 8, 16, 64, 128, 512]
    with pytest.raises(SSDError, match="larger than any max_lora_rank"):
        auto_max_lora_rank(513)
    check_lora_rank(16, 16)
    with pytest.raises(SSDError) as e:
        check_lora_rank(16, 32)
    assert _lone_line(e).startswith("[lora] r = 32 is larger than [vllm] max_lora_rank = 16")
    a = _adapter(tmp_path / "a", r=8, rank_pattern={"q_proj": 64})
    assert adapter_rank(a) == 64
    with pytest.raises(SSDError) as e:
        check_lora_rank(16, 8, a)
    assert "has LoRA rank 64, larger than [vllm] max_lora_rank = 16" in _lone_line(e)
    with pytest.raises(SSDError, match="no adapter_config.json"):
        adapter_rank(tmp_path)


def test_rank_checked_when_the_sampler_is_built(fake, tiny_model_dir: Path) -> None:
    cfg = _cfg("[lora]\nr = 32\n[vllm]\nmax_lora_rank = 16\n")
    with pytest.raises(SSDError, match="r = 32 is larger than \\[vllm\\] max_lora_rank = 16"):
        VLLMSampler(str(tiny_model_dir), cfg=cfg)
    assert not fake.EVENTS  # before any GPU work
    auto = VLLMSampler(str(tiny_model_dir), cfg=_cfg("[lora]\nr = 32\n"))
    assert auto.max_lora_rank == 32


def test_lora_ids_are_fresh_per_adapter_version(tmp_path: Path) -> None:
    ids = LoraIds()
    a, b = _adapter(tmp_path / "round-001"), _adapter(tmp_path / "round-002")
    assert (ids.id_for(a), ids.id_for(b), ids.id_for(a)) == (1, 2, 1)
    (a / "adapter_model.safetensors").write_bytes(b"retrained weights")
    assert ids.id_for(a) == 3  # same folder, new weights: vLLM must not reuse its cache


# ----------------------------------------------------------------------------- tail mass


def _v1_kept(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    return fake_vllm.LLM._kept(logits, fake_vllm.SamplingParams(**sampling_kwargs(p, 1, 0, 0)))


GRID = [
    SamplingParams(temperature=1.0, top_k=20),
    SamplingParams(temperature=1.6, top_k=20, top_p=0.8),  # the paper's Qwen3 setting
    SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=1.0, top_p=0.9),
    SamplingParams(temperature=0.8, top_p=0.95),
    SamplingParams(temperature=1.5, top_p=0.7),
    SamplingParams(temperature=1.2, min_p=0.1),
    SamplingParams(temperature=1.1, min_p=0.02, top_p=0.9),
]


@pytest.mark.parametrize(
    "params", GRID, ids=lambda p: f"T{p.temperature}k{p.top_k}p{p.top_p}m{p.min_p}"
)
def test_tail_from_top_n_is_exact_or_absent(params: SamplingParams) -> None:
    """Against V1's truncation on random logits: a number is always the exact one."""
    gen = torch.Generator().manual_seed(0)
    vocab, n_top = 300, top_logprobs_wanted(20, params.top_k)
    known = 0
    for i in range(300):
        logits = torch.randn(vocab, generator=gen) * (0.5 + 8.0 * (i % 7) / 6)  # flat to peaked
        logp = torch.log_softmax(logits.double(), -1)
        keep = _v1_kept(logits, params)
        exact = float(1.0 - logp.exp()[keep].sum())
        top = logp.float().topk(n_top).values.tolist()  # vLLM returns float32
        got = tail_mass_from_top(top, params, vocab)
        if got is not None:
            known += 1
            assert got == pytest.approx(exact, abs=1e-5)
            assert kept_prefix(top, params, vocab) == int(keep.sum())
    if params.top_k and params.top_p == 1.0:
        assert known == 300  # top-k inside the returned top N: always determined
    elif params.top_k:
        assert known >= 295  # but for a top-p cut within 0.01 % of its threshold
    else:
        assert known >= 50  # the bounds decide a fair share of top-p/min-p positions


def test_tail_special_cases() -> None:
    top = [math.log(0.6), math.log(0.3), math.log(0.05)]
    assert tail_mass_from_top(top, SamplingParams(temperature=0.0)) == pytest.approx(0.4)
    assert tail_mass_from_top(top, SamplingParams(temperature=0.0), sampled_rank=2) is None
    assert tail_mass_from_top([], SamplingParams(temperature=1.0)) == 0.0  # nothing cut
    k2 = SamplingParams(temperature=1.0, top_k=2)
    assert tail_mass_from_top(top, k2) == pytest.approx(0.1)
    assert tail_mass_from_top(top, k2, sampled_rank=3) is None  # inconsistent: not guessed
    tie = [math.log(0.4), math.log(0.3), math.log(0.3)]
    assert tail_mass_from_top(tie, k2) is None  # vLLM keeps both tied tokens
    assert tail_mass_from_top(top, SamplingParams(top_k=5)) is None  # top-k beyond top N


def test_trim_to_text_keeps_tokens_starting_before_the_cut() -> None:
    pieces = ["ab", "c\n", "de", "f"]  # decode(ids) = concatenation of pieces

    def decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids)

    # text "abc" (stop "\nd"): "c\n" straddles the cut and stays, "de" is dropped
    assert trim_to_text([0, 1, 2], 3, decode) == 2
    assert trim_to_text([0, 1, 2, 3], 7, decode) == 4
    assert trim_to_text([2], 0, decode) == 0


# ----------------------------------------------------------------------------- sampler


@pytest.fixture
def sampler(fake, tiny_model_dir: Path):
    s = VLLMSampler(str(tiny_model_dir), cfg=_cfg())
    yield s
    s.close()


def test_engine_starts_lazily_with_raw_logprobs(fake, sampler: VLLMSampler) -> None:
    assert not fake.EVENTS and not hasattr(sampler, "model")  # the probe finds no model
    sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
    (start,) = [e for e in fake.EVENTS if e[0] == "start"]
    kw = start[2]
    assert kw["logprobs_mode"] == "raw_logprobs" and "enable_lora" not in kw
    assert kw["max_logprobs"] == 20  # config tops: sampling top_k 0, eval top_k 0


def test_greedy_equals_the_transformers_engine(sampler: VLLMSampler, tiny_model_dir: Path) -> None:
    from ssd_tui.engine.hf import HFSampler

    params = SamplingParams(temperature=0.0, max_new_tokens=16, n=2, stop=("\n",))
    ours = sampler.generate(PROMPTS, params)
    with HFSampler(str(tiny_model_dir), batch_size=4) as hf:
        ref = hf.generate(PROMPTS, params)
    for got, want in zip(ours, ref, strict=True):
        assert len(got) == 2
        for g, w in zip(got, want, strict=True):
            assert (g.text, g.token_ids, g.finish_reason) == (w.text, w.token_ids, w.finish_reason)
            assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
            assert g.tail_mass == pytest.approx(w.tail_mass, abs=1e-4)
            assert g.entropies == []  # not available from vLLM: left empty
    assert any(c.finish_reason == "stop" for per in ours for c in per)


def test_sampled_statistics_are_vllms_raw_numbers(sampler: VLLMSampler) -> None:
    params = SamplingParams(1.3, 8, 0.9, 0.02, max_new_tokens=12, n=3, stop=("\n\n",), seed=4)
    outs = sampler.generate(PROMPTS, params)
    raw = sampler._llm.last_outputs
    with_tail = 0
    for per, req in zip(outs, raw, strict=True):
        for c, o in zip(per, req.outputs, strict=True):
            n = len(c.token_ids)
            assert c.token_ids == o.token_ids[:n] and c.text == o.text
            assert c.logprobs == [o.logprobs[i][t].logprob for i, t in enumerate(c.token_ids)]
            if c.tail_mass:  # empty only when a top-p cut lies within 0.01 % of a boundary
                with_tail += 1
                assert c.tail_mass == pytest.approx(o.fake_exact_tail[:n], abs=1e-6)
    assert with_tail >= 7  # of 9 (here one sample has such a position)
    again = sampler.generate(PROMPTS, params)
    assert [[c.text for c in per] for per in again] == [[c.text for c in per] for per in outs]
    assert len({c.text for c in outs[0]}) > 1  # n samples of a prompt differ


def _real_adapter(tiny_model_dir: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) LoRA adapter for the tiny model, saved in the PEFT layout."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        conf = LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(base, conf).save_pretrained(out)
    return out


def test_adapter_swaps_get_fresh_ids_and_reset_the_prefix_cache(
    fake, sampler: VLLMSampler, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from ssd_tui.engine.hf import HFSampler

    a1 = _real_adapter(tiny_model_dir, tmp_path / "adapters" / "round-001", 1)
    a2 = _real_adapter(tiny_model_dir, tmp_path / "adapters" / "round-002", 2)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    base = sampler.generate(PROMPTS, greedy)
    sampler.set_adapter(a1)  # the engine had no LoRA: restarted (lazily) with it
    assert sampler._llm is None
    with_a1 = sampler.generate(PROMPTS, greedy)
    starts = [e for e in fake.EVENTS if e[0] == "start"]
    assert starts[-1][2]["enable_lora"] is True and starts[-1][2]["max_lora_rank"] == 8
    assert sampler.lora_request.lora_int_id == 1
    assert sampler.lora_request.lora_path == str(a1)
    with HFSampler(str(tiny_model_dir), adapter=a1) as hf:
        assert [c[0].token_ids for c in with_a1] == [
            c[0].token_ids for c in hf.generate(PROMPTS, greedy)
        ]
    assert [c[0].text for c in with_a1] != [c[0].text for c in base]

    fake.EVENTS.clear()
    sampler.set_adapter(a2)
    assert sampler.lora_request.lora_int_id == 2
    assert fake.EVENTS == [("reset_prefix_cache", sampler._llm.id)]
    sampler.set_adapter(a2)  # same adapter: nothing to reset
    assert len(fake.EVENTS) == 1
    sampler.generate(PROMPTS, greedy)
    assert sampler._llm.calls[-1]["lora"].lora_int_id == 2


def test_close_hands_the_device_back(fake, sampler: VLLMSampler) -> None:
    sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
    assert len(fake.LIVE) == 1
    sampler.close()
    assert len(fake.LIVE) == 0 and ("cleanup",) in fake.EVENTS
    sampler.close()  # twice is fine


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_runs_a_round_on_the_fake(
    fake, monkeypatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Round 0 and round 1 with engine = "vllm": same bookkeeping as the HF engine."""
    from ssd_tui.engine import hf
    from ssd_tui.pipeline import Pipeline
    from ssd_tui.store import RunStore, unpack

    write_problems(tmp_path, n_train=4)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, rounds=1, run__engine="vllm"))
    engines_at_train = []
    real_train = hf.HFTrainer.train

    def train(self, *a, **kw):
        engines_at_train.append(len(fake.LIVE))  # the sampler must have let go of the GPU
        return real_train(self, *a, **kw)

    monkeypatch.setattr(hf.HFTrainer, "train", train)
    store = RunStore.open(cfg.db_path, create=True)
    pipe = Pipeline(cfg, store)
    pipe.prepare()
    assert pipe.run() == "done"
    pipe.release_sampler()

    assert engines_at_train == [0]
    assert [s["status"] for r in (0, 1) for s in store.stages(r)] == ["done"] * 6
    assert store.count_samples(1, "train") == 4 * 2
    assert store.count_samples(1, "eval", 1.0) == 3 * 2
    adapter = cfg.run_dir / "adapters" / "round-001"
    lora_starts = [e[2] for e in fake.EVENTS if e[0] == "start" and e[2].get("enable_lora")]
    assert len(lora_starts) == 1 and lora_starts[0]["max_lora_rank"] == 8  # auto from r = 4
    served = {e[2:] for e in fake.EVENTS if e[0] == "generate"}
    assert served == {(1, str(adapter))}  # round 1's evaluate: base ⊕ round 1's adapter
    train_rows = store.conn.execute(
        "SELECT t.token_ids, t.logprobs, t.entropies, t.tail_mass, s.n_tokens, s.mean_entropy "
        "FROM samples s JOIN token_stats t ON t.sample_id = s.id WHERE s.purpose = 'train'"
    ).fetchall()
    for ids, lps, ents, tails, n, mean_h in train_rows:
        assert len(unpack(ids, "<i4")) == n == len(unpack(lps)) == len(unpack(tails))
        assert len(unpack(ents)) == 0 and mean_h is None  # entropies: absent, not guessed
    assert adapter.is_dir() and (adapter / "adapter_config.json").is_file()
    store.close()


# ----------------------------------------------------------------------------- multi-GPU training


def test_device_auto_trains_like_one_device(tiny_model_dir: Path, tmp_path: Path) -> None:
    """[model] device = "auto" shards the trainer's model (device_map="auto").

    Here there is no GPU, so accelerate maps every layer to the CPU: this checks the
    plumbing (same losses and weights as device="cpu"), not sharding across GPUs.
    """
    from safetensors.torch import load_file

    from ssd_tui.engine.base import LoraSettings, TrainSettings
    from ssd_tui.engine.hf import HFSampler, HFTrainer, resolve_device

    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    examples = [("def f(x):\n", "    y = x + 1\n    return y\n")] * 4
    lora, train = LoraSettings(r=4, alpha=8, dropout=0.0), TrainSettings(batch_size=2, epochs=1)
    runs = {}
    for device in ("cpu", "auto"):
        t = HFTrainer(str(tiny_model_dir), lora, train, device=device)
        out = t.train(examples, tmp_path / device)
        runs[device] = (t.history, load_file(out / "adapter_model.safetensors"))
    (h_cpu, w_cpu), (h_auto, w_auto) = runs["cpu"], runs["auto"]
    assert [h["loss"] for h in h_auto] == pytest.approx([h["loss"] for h in h_cpu], abs=1e-6)
    assert all(torch.allclose(w_auto[k], w_cpu[k], atol=1e-6) for k in w_cpu)
    with HFSampler(str(tiny_model_dir), device="auto") as s:  # one device, not sharded
        assert s.device == resolve_device("auto")
