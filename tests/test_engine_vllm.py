"""The vLLM sampler's pure functions, plus a FAKE ``vllm`` (tests/fake_vllm.py) for the GPU.

Real vLLM runs in ``tests/test_vllm_real.py`` (its CPU build; marked ``vllm``): numbers,
LoRA, adapter switches, refusals, ``close()``, a full run. What stays here on the fake is
what the CPU build cannot show: the engine settings of the GPU platform (CUDA graphs,
``gpu_memory_utilization``) and the GPU hand-off before training. The pure functions
(parameter mapping, ranks, ids, tail mass, CPU defaults) need no engine at all.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import fake_vllm
import pytest
import torch
from runkit import write_config, write_problems

from ssd_tui.config import load_config, loads_config
from ssd_tui.engine.base import EngineSettings, SamplingParams, cpu_kvcache_gib
from ssd_tui.engine.truncation import kept_prefix, tail_mass_from_top
from ssd_tui.engine.vllm import (
    CPU_HEAD_DIMS,
    MIN_VLLM,
    MISSING_VLLM,
    LoraIds,
    VLLMSampler,
    adapter_rank,
    auto_max_lora_rank,
    check_engine_kwargs,
    check_head_dim,
    check_lora_rank,
    check_version,
    cpu_env,
    engine_kwargs,
    import_vllm,
    model_head_dim,
    prompt_seeds,
    refusal_message,
    refusal_types,
    sampling_kwargs,
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


def _settings(extra: str = "") -> EngineSettings:
    return loads_config(BASE + extra).engine_settings()


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
    assert "CUDA" not in MISSING_VLLM  # vLLM's CPU build runs it too (README)
    with pytest.raises(SSDError, match="pip install 'ssd-tui\\[vllm\\]' on a GPU machine"):
        VLLMSampler(str(tiny_model_dir), settings=_settings())


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
    settings = _settings(
        "[vllm]\ntensor_parallel_size = 4\nmax_model_len = 4096\nenforce_eager = true\n"
    )
    kw = engine_kwargs(settings, "/m", enable_lora=False, max_lora_rank=16, max_logprobs=21)
    assert kw["logprobs_mode"] == "raw_logprobs"
    assert kw["tensor_parallel_size"] == 4 and kw["max_model_len"] == 4096
    assert kw["max_logprobs"] == 21 and kw["enforce_eager"] is True
    assert "max_num_seqs" not in kw and "enable_lora" not in kw  # 0 = vLLM's default
    lora = engine_kwargs(settings, "/m", enable_lora=True, max_lora_rank=32, max_logprobs=0)
    assert (lora["enable_lora"], lora["max_lora_rank"], lora["max_loras"]) == (True, 32, 1)
    fields = {f for f in fake.EngineArgs.__dataclass_fields__}
    check_engine_kwargs(lora, fields, "x")  # every option exists in vLLM's EngineArgs
    with pytest.raises(SSDError) as e:
        check_engine_kwargs(lora, fields - {"logprobs_mode"}, "0.9.2")
    assert "vLLM 0.9.2 has no engine option logprobs_mode" in _lone_line(e)


# ----------------------------------------------------------------------------- CPU platform


def test_cpu_engine_settings_default_and_override() -> None:
    """Findings 3 and 5: eager, no chunked prefill and a KV cache in GiB on CPU only."""
    settings = _settings()
    gpu = engine_kwargs(settings, "/m", enable_lora=False, max_lora_rank=8, max_logprobs=20)
    assert gpu["enforce_eager"] is False and "enable_chunked_prefill" not in gpu
    assert "kv_cache_memory_bytes" not in gpu
    cpu = engine_kwargs(
        settings,
        "/m",
        enable_lora=False,
        max_lora_rank=8,
        max_logprobs=20,
        cpu=True,
        free_ram_gib=11,
    )
    assert cpu["enforce_eager"] is True and cpu["enable_chunked_prefill"] is False
    assert cpu["kv_cache_memory_bytes"] == 2 * 2**30  # a quarter of 11 GiB, floored
    mine = _settings(
        "[vllm]\nenforce_eager = false\nenable_chunked_prefill = true\ncpu_kvcache_gib = 3\n"
    )
    kw = engine_kwargs(
        mine, "/m", enable_lora=False, max_lora_rank=8, max_logprobs=20, cpu=True, free_ram_gib=64
    )
    assert (kw["enforce_eager"], kw["enable_chunked_prefill"]) == (False, True)
    assert kw["kv_cache_memory_bytes"] == 3 * 2**30
    assert [cpu_kvcache_gib(0, g) for g in (None, 2.0, 6.0, 13.0, 500.0)] == [1, 1, 1, 3, 8]


def test_cpu_env_uses_every_allowed_core() -> None:
    """Finding 5: vLLM reserves a core for its scheduler unless told; on 2 cores, half."""
    assert cpu_env(0, [0, 1]) == {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "0,1",
    }
    assert cpu_env(2, [5, 3, 9])["VLLM_CPU_OMP_THREADS_BIND"] == "3,5"  # [run] threads = 2


def test_apply_env_replaces_its_own_values_never_the_users(monkeypatch) -> None:
    """A second engine in one process (tensor_parallel_size 2 after 1) needs "0|1" where
    the first set "0,1"; a value the user exported stays."""
    from ssd_tui.engine.vllm import apply_env

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")  # the user's
    apply_env(cpu_env(0, [0, 1]))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    assert apply_env(cpu_env(0, [0, 1], ranks=2)) == {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"


def test_cpu_env_gives_each_tensor_parallel_rank_its_cores() -> None:
    """vLLM's CPU backend binds rank i to the i-th '|'-separated group."""
    assert cpu_env(0, [0, 1], ranks=2)["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert cpu_env(0, [0, 1, 2, 3, 4], ranks=2)["VLLM_CPU_OMP_THREADS_BIND"] == "0,1|2,3,4"
    with pytest.raises(SSDError, match=r"tensor_parallel_size = 3 needs a core per rank"):
        cpu_env(0, [0, 1], ranks=3)


def test_head_dim_is_checked_for_the_cpu_backend(tiny_model_dir: Path) -> None:
    """Finding 4: vLLM's CPU attention takes head sizes 32, 64, 80, …, not 16."""
    demo = Path(__file__).resolve().parent.parent / "assets" / "demo-model"
    assert model_head_dim(str(tiny_model_dir)) == 16 and model_head_dim(str(demo)) == 32
    check_head_dim(str(demo), CPU_HEAD_DIMS)
    with pytest.raises(SSDError) as e:
        check_head_dim(str(tiny_model_dir), CPU_HEAD_DIMS)
    assert "does not support the head size 16" in _lone_line(e)


def test_refusals_name_the_key() -> None:
    """Finding 1: vLLM's VLLMValidationError carries the parameter; the line names our key."""

    class Refusal(Exception):  # the shape of vllm.exceptions.VLLMValidationError
        def __init__(self, msg: str, parameter: str | None = None) -> None:
            super().__init__(msg)
            self.parameter = parameter

    assert refusal_types() == (ValueError, TypeError)  # no vLLM installed here: the old ones
    msg = refusal_message("a request", Refusal("Requested sample logprobs of 51\nmore", "logprobs"))
    assert msg == (
        "vLLM refused a request: Requested sample logprobs of 51 (set by [vllm] logprobs)"
    )
    long = Refusal("This model's maximum context length is 256 tokens.", "input_tokens")
    assert refusal_message("a request", long).endswith("(set by [vllm] max_model_len)")
    assert refusal_message("x", ValueError("odd")) == "vLLM refused x: odd"


def test_the_vllm_range_is_the_one_the_code_supports() -> None:
    """Finding 6: pyproject allowed vllm>=0.6, but the code needs logprobs_mode (0.10.0)."""
    from ssd_tui.config import tomllib

    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["vllm"] == [f"vllm>={MIN_VLLM}"]
    check_version(MIN_VLLM)
    check_version("0.32.0+cpu")
    with pytest.raises(SSDError) as e:
        check_version("0.9.2")
    assert "vLLM 0.9.2 is older than 0.10.0" in _lone_line(e)


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
    settings = _settings("[lora]\nr = 32\n[vllm]\nmax_lora_rank = 16\n")
    with pytest.raises(SSDError, match="r = 32 is larger than \\[vllm\\] max_lora_rank = 16"):
        VLLMSampler(str(tiny_model_dir), settings=settings)
    assert not fake.EVENTS  # before any GPU work
    auto = VLLMSampler(str(tiny_model_dir), settings=_settings("[lora]\nr = 32\n"))
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
    s = VLLMSampler(str(tiny_model_dir), settings=_settings())
    yield s
    s.close()


def test_engine_starts_lazily_with_raw_logprobs(fake, sampler: VLLMSampler) -> None:
    assert not fake.EVENTS and not hasattr(sampler, "model")  # the probe finds no model
    sampler.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
    (start,) = [e for e in fake.EVENTS if e[0] == "start"]
    kw = start[2]
    assert kw["logprobs_mode"] == "raw_logprobs"
    assert kw["max_logprobs"] == 20  # config tops: sampling top_k 0, eval top_k 0
    # A run with SSD rounds will serve adapters: LoRA is on from the first engine, so the
    # base model and every adapter after it share one engine
    assert kw["enable_lora"] is True and kw["max_loras"] == 1


def test_a_run_without_rounds_starts_without_lora(
    fake, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """…and an adapter given to such an engine later stops it, to restart with LoRA."""
    with VLLMSampler(str(tiny_model_dir), settings=_settings("[run]\nrounds = 0\n")) as s:
        s.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
        (start,) = [e for e in fake.EVENTS if e[0] == "start"]
        assert "enable_lora" not in start[2] and fake.LIVE
        s.set_adapter(_adapter(tmp_path / "round-001"))
        assert not fake.LIVE and s.engine_kwargs()["enable_lora"] is True


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
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore, unpack

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
    # GPU semantics (the fake): released for training, so one engine before and one after,
    # each with LoRA on (a run with rounds serves adapters) at rank 8 (auto from r = 4)
    starts = [e[2] for e in fake.EVENTS if e[0] == "start"]
    assert len(starts) == 2 and all(s.get("enable_lora") for s in starts)
    assert {s["max_lora_rank"] for s in starts} == {8}
    served = {e[2:] for e in fake.EVENTS if e[0] == "generate"}
    assert served == {(1, str(adapter))}  # round 1's evaluate: base ⊕ round 1's adapter
    rows = store.conn.execute(
        "SELECT t.token_ids, t.logprobs, t.entropies, t.tail_mass, s.n_tokens, s.mean_entropy "
        "FROM samples s JOIN token_stats t ON t.sample_id = s.id"
    ).fetchall()
    assert len(rows) == 4 * 2 + 3 * 2 * 2
    for ids, lps, ents, tails, n, mean_h in rows:  # the exact-statistics pass
        assert len(unpack(ids, "<i4")) == n == len(unpack(lps)) == len(unpack(tails))
        assert len(unpack(ents)) == n and mean_h == pytest.approx(unpack(ents).mean(), abs=1e-5)
    probe = {(r["round"], r["name"]) for r in store.metrics("probe")}  # fork/lock, both rounds
    assert {(0, "n_fork"), (0, "n_lock"), (1, "fork_entropy"), (1, "lock_tail_mass")} <= probe
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
