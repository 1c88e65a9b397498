"""Run config: valid files load; every bad value is one line naming file, line and key."""

from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_tui.config import (
    RunConfig,
    VllmSection,
    config_diff,
    config_from_json,
    load_config,
    loads_config,
)
from ssd_tui.engine.base import EngineSettings, LoraSettings, VllmSettings
from ssd_tui.errors import SSDError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MINIMAL = """
[model]
path = "m"
[data]
train_prompts = "t.jsonl"
benchmark = "e.jsonl"
"""


def test_examples_load():
    for path in EXAMPLES.glob("*.toml"):
        cfg = load_config(path)
        assert cfg.run.name
        assert cfg.base_dir == EXAMPLES


def test_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "c.toml"
    f.write_text(MINIMAL + '[run]\ndir = "../runs/x"\n')
    cfg = load_config(f)
    assert cfg.run_dir == (tmp_path / "runs" / "x").resolve()
    assert cfg.db_path == cfg.run_dir / "run.db"
    assert cfg.resolve("m") == (tmp_path / "sub" / "m").resolve()


def test_sampling_params_follow_the_config():
    cfg = loads_config(
        MINIMAL + "[sampling]\ntemperature = 1.6\ntop_k = 20\ntop_p = 0.8\nsamples_per_prompt = 3\n"
    )
    p = cfg.train_sampling(seed=7)
    assert (p.temperature, p.top_k, p.top_p, p.n, p.seed) == (1.6, 20, 0.8, 3, 7)
    e = cfg.eval_sampling(seed=1, temperature=0.3)
    assert e.temperature == 0.3 and e.n == cfg.eval.samples_per_problem


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("[run]\nfoo = 1\n", "c.toml:8: [run] foo: unknown key"),
        (
            "[sampling]\ntemperature = -1\n",
            "c.toml:8: [sampling] temperature must be in (0.0, 5.0]",
        ),
        ("[sampling]\ntop_p = 1.5\n", "[sampling] top_p must be in (0.0, 1.0]"),
        ("[sampling]\ntop_k = 2.5\n", "[sampling] top_k must be an integer"),
        ("[lora]\nr = 0\n", "[lora] r must be ≥ 1"),
        ("[eval]\nk = [1, 50]\n", "[eval] k value 50 must be between 1 and samples_per_problem"),
        ("[bogus]\nx = 1\n", "c.toml:7: [bogus]: unknown section"),
        ("[run]\nengine = 'tpu'\n", "[run] engine must be one of 'auto', 'hf', 'vllm'"),
        ("[sampling]\nstop = 'x'\n", "[sampling] stop must be a list"),
        (
            "[analysis]\nmin_unique_share = 0.3\n",
            "c.toml:8: [analysis] min_unique_share: replaced by max_unique_share_drop",
        ),
    ],
)
def test_bad_values_name_file_line_and_key(extra, expected):
    with pytest.raises(SSDError) as e:
        loads_config(MINIMAL + extra, source="c.toml")
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg


def test_syntax_error_and_missing_fields():
    with pytest.raises(SSDError, match=r"c.toml: TOML syntax error: .*line 2"):
        loads_config("[run]\nname = \n", source="c.toml")
    with pytest.raises(SSDError, match=r"\[model\] path: missing"):
        loads_config("[data]\nbenchmark='b'\ntrain_prompts='t'\n", source="c.toml")
    with pytest.raises(SSDError, match="config file not found"):
        load_config("/nonexistent/c.toml")


def test_a_run_stored_with_keys_a_later_version_replaced_still_reads(tmp_path):
    """A run DB keeps its whole config as JSON: one written before the collapse rules were
    judged against round 0 holds min_unique_share, max_loop_share and max_duplicate_share."""
    import json

    data = json.loads(loads_config(MINIMAL, base_dir=tmp_path).to_json())
    data["analysis"].update(min_unique_share=0.3, max_loop_share=0.1, max_duplicate_share=0.25)
    cfg = config_from_json(json.dumps(data), tmp_path)
    assert cfg.analysis.max_unique_share_drop == 0.75 and cfg.analysis.max_loop_share_rise == 0.1


def test_config_roundtrips_through_json_and_diffs_by_key(tmp_path):
    cfg = loads_config(MINIMAL + "[sampling]\ntemperature = 1.4\n", base_dir=tmp_path)
    back = config_from_json(cfg.to_json(), tmp_path)
    assert back == cfg
    other = loads_config(
        MINIMAL + "[sampling]\ntemperature = 1.5\n[run]\nrounds = 9\n", base_dir=tmp_path
    )
    assert config_diff(cfg, other) == ["sampling.temperature"]  # rounds may change on resume


def test_engine_capacity_may_change_on_resume_but_logprobs_may_not(tmp_path):
    cfg = loads_config(MINIMAL, base_dir=tmp_path)
    bigger = loads_config(
        MINIMAL + "[vllm]\ntensor_parallel_size = 4\ngpu_memory_utilization = 0.5\n"
        "max_num_seqs = 64\nenforce_eager = true\n",
        base_dir=tmp_path,
    )
    assert config_diff(cfg, bigger) == []
    fewer = loads_config(MINIMAL + "[vllm]\nlogprobs = 5\n", base_dir=tmp_path)
    assert config_diff(cfg, fewer) == ["vllm.logprobs"]  # it decides tail_mass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_one_ssd_error(text):
    try:
        loads_config(text, source="c.toml")
    except SSDError as e:
        assert "\n" not in str(e).strip() or "TOML syntax error" in str(e)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["run", "model", "data", "sampling", "eval", "lora", "train", "analysis"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    st.one_of(
        st.integers(-10, 10),
        st.floats(-10, 10, allow_nan=False),
        st.text(max_size=5),
        st.booleans(),
    ),
)
def test_any_key_value_gives_a_config_or_an_error_naming_the_key(section, key, value):
    import json

    v = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    text = (
        MINIMAL.replace(f"[{section}]", f"[{section}]\n{key} = {v}")
        if f"[{section}]" in MINIMAL
        else MINIMAL + f"[{section}]\n{key} = {v}\n"
    )
    try:
        loads_config(text, source="c.toml")
    except SSDError as e:
        assert f"[{section}]" in str(e) or "TOML syntax error" in str(e)


def test_chat_style_defaults_to_the_closing_fence_but_keeps_explicit_stops(tmp_path):
    from ssd_tui.config import CHAT_STOP, DEFAULT_STOP

    chat = MINIMAL.replace("[model]\n", '[model]\nprompt_style = "chat"\n')
    assert chat != MINIMAL
    cfg = loads_config(chat, base_dir=tmp_path)
    assert cfg.sampling.stop == CHAT_STOP and cfg.eval.stop == CHAT_STOP
    cfg = loads_config(chat + '[eval]\nstop = ["END"]\n', base_dir=tmp_path)
    assert cfg.sampling.stop == CHAT_STOP and cfg.eval.stop == ("END",)
    plain = loads_config(MINIMAL, base_dir=tmp_path)
    assert plain.sampling.stop == DEFAULT_STOP and plain.eval.stop == DEFAULT_STOP


def test_temperature_range_follows_the_engine(tmp_path):
    """vLLM refuses T > 2, so a vLLM run says so when the config is read."""
    hot = "[eval]\ntemperature = 2.5\n"
    assert loads_config(MINIMAL + hot).eval.temperature == 2.5  # the hf engine takes it
    vllm = MINIMAL + '[run]\nengine = "vllm"\n'
    for extra, key in (
        (hot, "c.toml:10: [eval] temperature = 2.5 is above 2, the most vLLM accepts"),
        ("[sampling]\ntemperature = 2.01\n", "[sampling] temperature = 2.01 is above 2"),
        ("[eval]\nbaseline_temperatures = [1.0, 3.0]\n", "[eval] baseline_temperatures = 3"),
    ):
        with pytest.raises(SSDError) as e:
            loads_config(vllm + extra, source="c.toml")
        assert key in str(e.value) and "\n" not in str(e.value)
    assert loads_config(vllm + "[eval]\ntemperature = 2.0\n").eval.temperature == 2.0


def test_engine_settings_carry_what_the_engines_read():
    """The engines read EngineSettings, never the config: its defaults are the config's, and
    the [vllm] section maps onto VllmSettings key for key."""
    assert RunConfig().engine_settings() == EngineSettings()
    assert [(f.name, f.default) for f in fields(VllmSection)] == [
        (f.name, f.default) for f in fields(VllmSettings)
    ]
    cfg = loads_config(
        MINIMAL
        + '[run]\nengine = "hf"\nrounds = 0\nseed = 7\nthreads = 2\n'
        + "[sampling]\ntemperature = 1.5\ntop_k = 20\nbatch_size = 4\n"
        + "[eval]\ntop_k = 5\nbatch_size = 32\nbaseline_temperatures = [0.2, 1.7]\n"
        + "[lora]\nr = 16\n[vllm]\nlogprobs = 40\nmax_num_seqs = 9\n"
    )
    s = cfg.engine_settings()
    assert (s.engine, s.seed, s.threads, s.serves_adapters) == ("hf", 7, 2, False)
    assert (s.max_temperature, s.top_ks, s.batch_size) == (1.7, (20, 5), 32)
    assert s.lora == LoraSettings(r=16) and s.train == cfg.train_settings()
    assert (s.vllm.logprobs, s.vllm.max_num_seqs) == (40, 9)
    assert s.schedule == "batch"  # exact on resume unless a config asks for refill


def test_refill_is_asked_for_and_may_not_change_on_resume(tmp_path):
    cfg = loads_config(MINIMAL, base_dir=tmp_path)
    refill = loads_config(MINIMAL + "[sampling]\nrefill = true\n", base_dir=tmp_path)
    assert (cfg.engine_settings().schedule, refill.engine_settings().schedule) == (
        "batch",
        "refill",
    )
    # it changes what a resumed stage draws for its unfinished batches
    assert config_diff(cfg, refill) == ["sampling.refill"]


def test_vllm_cpu_keys_are_unset_by_default_and_take_booleans():
    cfg = loads_config(MINIMAL)
    assert cfg.vllm.enforce_eager is None and cfg.vllm.enable_chunked_prefill is None
    assert cfg.vllm.cpu_kvcache_gib == 0.0
    cfg = loads_config(
        MINIMAL + "[vllm]\nenforce_eager = false\nenable_chunked_prefill = true\n"
        "cpu_kvcache_gib = 2\n"
    )
    assert (cfg.vllm.enforce_eager, cfg.vllm.enable_chunked_prefill) == (False, True)
    assert cfg.vllm.cpu_kvcache_gib == 2.0
    with pytest.raises(SSDError, match=r"\[vllm\] enforce_eager must be true or false"):
        loads_config(MINIMAL + "[vllm]\nenforce_eager = 'auto'\n")
    assert config_from_json(cfg.to_json(), Path(".")) == cfg


def test_a_config_rewritten_for_its_run_folder_means_the_same_there(tmp_path):
    from ssd_tui.config import PATH_KEYS, config_for_run_folder, path_of

    (tmp_path / "cfgs").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    text = (
        "# my run\n[model]\npath = '../m'   # local model\n"
        f'[data]\ntrain_prompts = "humaneval"\nbenchmark = "{tmp_path}/e.jsonl"\n'
        '[run]\nname = "x"\n'
    )
    cfg = loads_config(text, base_dir=tmp_path / "cfgs")
    assert cfg.run_dir == (tmp_path / "cfgs" / "runs" / "x").resolve()  # [run] dir's default
    copy = config_for_run_folder(text, cfg)
    assert copy.startswith("# my run\n")
    assert 'path = "../../../m"   # local model' in copy  # relative: to the run folder
    assert f'benchmark = "{tmp_path}/e.jsonl"' in copy and 'train_prompts = "humaneval"' in copy
    there = loads_config(copy, base_dir=cfg.run_dir)
    assert there.run.dir == "." and config_diff(cfg, there) == []
    for s, k in PATH_KEYS:
        assert path_of(cfg, s, k) == path_of(there, s, k)
    # A hub id stays an id; a form the line edit cannot change rewrites the whole file.
    hub = MINIMAL.replace('path = "m"', 'path = "org/model"').replace(
        "[data]", '[run]\ndir = """r"""\n[data]'
    )
    cfg = loads_config(hub, base_dir=tmp_path)
    there = loads_config(config_for_run_folder(hub, cfg), base_dir=cfg.run_dir)
    assert there.model.path == "org/model" and there.run.dir == "."
    assert there.data.benchmark == "../e.jsonl" and config_diff(cfg, there) == []


def test_paths_differ_only_when_they_name_another_file(tmp_path):
    (tmp_path / "a").mkdir()
    here = loads_config(MINIMAL, base_dir=tmp_path)
    same = loads_config(MINIMAL.replace('"m"', '"a/../m"'), base_dir=tmp_path)
    assert config_diff(here, same) == []
    other = loads_config(MINIMAL, base_dir=tmp_path / "a")  # same spelling, another folder
    assert config_diff(here, other) == []  # a checkout moved as a whole
    moved = loads_config(MINIMAL.replace('"m"', '"a/m"'), base_dir=tmp_path)
    assert config_diff(here, moved) == ["model.path"]
