"""The reproducibility record of a run: what is needed to repeat it, kept in its run DB.

Written by the pipeline when a run starts (``meta`` keys, see ``RECORD_KEYS``) and on every
start or resume (a ``config_history`` row with the config and the environment of that
process). Read by ``ssd-tui diff`` and the app's compare view (``run_record``), and
carried by exports (they copy ``meta`` and ``config_history`` whole).

- environment: ssd-tui's version and, when it runs from a git checkout, the commit (with
  ``-dirty`` when the tree has uncommitted changes); Python, torch, transformers, peft,
  vLLM versions; the platform, CPU model, GPU names and driver;
- the model: a sha256 over its weight and config files (cached by file size and mtime, so
  a resume does not re-read gigabytes);
- the problem sets: per set (eval, train) the source file(s) with their sha256 and a hash
  of the problems as loaded; a resume whose problems differ is refused (``check_problems``);
- the prompt: the chat template, the system prompt, one rendered prompt, the rule that
  turns an answer into the tested program;
- the trainer settings that are not config keys (schedule, gradient clipping, optimiser).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssd_tui import __version__
from ssd_tui.errors import SSDError
from ssd_tui.models import file_sha256
from ssd_tui.problems.sets import Problem
from ssd_tui.store.run_store import RunStore

#: meta keys of the record → what each holds (export.META_KEYS documents them from here).
RECORD_KEYS: dict[str, str] = {
    "ssd_tui_version": "Version of ssd-tui that started the run.",
    "git_commit": "Git commit of the ssd-tui checkout that started the run ('-dirty' if it had "
    "uncommitted changes); empty when installed from a package.",
    "python": "Python version.",
    "torch": "torch version (empty if not installed).",
    "transformers": "transformers version.",
    "peft": "peft version.",
    "vllm": "vLLM version (empty if not installed).",
    "platform": "Operating system and machine (platform.platform()).",
    "cpu": "CPU model and logical core count.",
    "gpus": "GPU names (JSON list; empty list without CUDA).",
    "gpu_driver": "NVIDIA driver and CUDA runtime versions, when there is a GPU.",
    "model_sha256": "sha256 over the model folder's weight, config and tokenizer files.",
    "model_files": "Those files with size and mtime (JSON), to reuse the hash on resume.",
    "problems": "Per problem set (eval, train): its config value, source files with their "
    "sha256, and a sha256 of the problems as loaded (JSON). Checked on every resume.",
    "prompt_template": "The tokenizer's chat template (empty for completion-style prompts).",
    "system_prompt": "The system prompt of chat-style prompts.",
    "prompt_example": "The first evaluation problem's prompt exactly as the model saw it.",
    "extraction_rule": "How an answer becomes the program that is tested.",
    "trainer": "Trainer settings that are not config keys (JSON): schedule, clipping, optimiser.",
}

#: meta keys of a run's lineage: written when a branch starts (`ssd-tui run CONFIG --from
#: RUN_DIR --round K`: its round 0 is round K's model of that run), empty for other runs.
#: ``run_uid`` names every run, so a branch finds its parent (and a parent its branches)
#: after a folder is moved or set aside.
LINEAGE_KEYS: dict[str, str] = {
    "run_uid": "A random id of this run, given when it starts (a branch names its parent by it).",
    "parent_run": "A branch's parent: the run folder it was branched from (absolute path).",
    "parent_run_uid": "The parent's run_uid ('' for a parent from before run ids).",
    "parent_name": "The parent's name when the branch started.",
    "parent_round": "The parent's round whose model is this run's round 0.",
    "parent_adapter_sha256": "sha256 of that round's adapter (copied to adapters/round-000/; "
    "'' for round 0, the base model).",
    "parent_model": "The weights that adapter goes on: the base model, or the parent's merged "
    'copy ([rounds] adapter = "merge").',
}

#: What `diff` compares as the environment (the rest of the record is compared on its own).
ENV_KEYS = (
    "ssd_tui_version",
    "git_commit",
    "python",
    "torch",
    "transformers",
    "peft",
    "vllm",
    "platform",
    "cpu",
    "gpus",
    "gpu_driver",
)

_MODEL_FILES = (".safetensors", ".bin", ".gguf", ".json", ".model", ".txt", ".tiktoken")

# ---- environment ------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def git_commit(folder: Path | None = None) -> str:
    """The commit of the git checkout holding ssd-tui's code, '' when it is not one."""
    where = folder or Path(__file__).resolve().parents[2]  # ssd_tui/runs/record.py
    if not (where / ".git").exists():
        return ""
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count() or '?'} logical cores)"


def _gpus() -> tuple[list[str], str]:
    # The GPUs torch sees, where this process loaded torch: every real engine does before
    # its run starts; one that never loads it (the tests' fake engine) uses none.
    torch = sys.modules.get("torch")
    if torch is None:
        return [], ""
    if not torch.cuda.is_available():
        return [], ""
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    driver = ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return names, f"driver {driver or '?'}, CUDA {torch.version.cuda or '?'}"


def environment() -> dict[str, str]:
    """The ENV_KEYS of this process, as strings."""
    gpus, driver = _gpus()
    return {
        "ssd_tui_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "vllm": _version("vllm"),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "gpus": json.dumps(gpus),
        "gpu_driver": driver,
    }


# ---- model, problems, prompt, trainer ------------------------------------------------------------


def _model_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in _MODEL_FILES and ".cache" not in p.parts
    )


def model_hash(model_path: str, cached: dict[str, Any] | None = None) -> tuple[str, str]:
    """(sha256, files JSON) of a local model folder; reuses ``cached`` when no file changed.

    A hub id is resolved in the local cache; '' when the folder cannot be found.
    """
    folder = Path(model_path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_path, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache: nothing to hash
            return "", "{}"
    files = {
        str(p.relative_to(folder)): [p.stat().st_size, int(p.stat().st_mtime)]
        for p in _model_files(folder)
    }
    stamp = json.dumps(files, sort_keys=True)
    if cached and cached.get("files") == stamp and cached.get("sha256"):
        return cached["sha256"], stamp
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + file_sha256(folder / name).encode())
    return h.hexdigest(), stamp


def problems_hash(problems: Sequence[Problem]) -> str:
    """sha256 of the problems as loaded (every field but where they were read from)."""
    rows = [{k: v for k, v in dataclasses.asdict(p).items() if k != "source"} for p in problems]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def problem_set_record(spec: str, problems: Sequence[Problem]) -> dict[str, Any]:
    files = sorted({p.source for p in problems if p.source and Path(p.source).is_file()})
    return {
        "spec": spec,
        "count": len(problems),
        "sha256": problems_hash(problems),
        "files": {f: file_sha256(Path(f)) for f in files},
    }


def check_problems(stored: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume whose problem sets differ from those the run started with."""
    for purpose, old in stored.items():
        new = now.get(purpose)
        if new is None or new["sha256"] == old["sha256"]:
            continue
        changed = [f for f, h in old.get("files", {}).items() if new["files"].get(f) != h]
        what = changed[0] if changed else f"the {purpose} problem set {old['spec']!r}"
        raise SSDError(
            f"{what} changed since this run started ({purpose} problems sha256 "
            f"{old['sha256'][:12]} → {new['sha256'][:12]}); restore the file, or start a new "
            "run folder to use the edited problems"
        )


def _meta_json(store: RunStore, key: str) -> Any:
    raw = store.meta(key)
    return json.loads(raw) if raw else None


# ---- writing -------------------------------------------------------------------------------------


def record_start(
    store: RunStore,
    *,
    event: str,
    config_json: str,
    config_toml: str,
    model_path: str,
    problem_sets: dict[str, dict[str, Any]],
    prompt: dict[str, str],
    trainer: dict[str, Any],
) -> None:
    """Write the record of a run's start (first time) or append a resume to its history.

    The meta keys are written once, when the run starts; a resume only appends a
    config_history row (its config and environment) and refreshes the model hash cache.
    ``prompt`` and ``trainer`` (``Engines.trainer_settings``) are read only at the start.
    """
    env = environment()
    cached = {"sha256": store.meta("model_sha256"), "files": store.meta("model_files")}
    sha, files = model_hash(model_path, cached)
    meta: dict[str, str] = {}
    if event == "start" or store.meta("ssd_tui_version") is None:
        meta = {
            **env,
            "problems": json.dumps(problem_sets, sort_keys=True),
            "trainer": json.dumps(trainer, sort_keys=True, default=str),
            **prompt,
        }
    elif (stored := stored_problem_sets(store)) is not None and set(problem_sets) - set(stored):
        # A set first loaded on a resume (a run started with rounds = 0, taken further):
        # recorded now, so that every later resume checks it too.
        meta["problems"] = json.dumps({**problem_sets, **stored}, sort_keys=True)
    if store.meta("run_uid") is None:  # every run gets one; older ones on their next start
        meta["run_uid"] = uuid.uuid4().hex
    original = store.meta("model_sha256")
    changed = bool(sha and original and sha != original)
    if not changed:  # keep the hash the run started with; refresh the stat cache
        meta |= {"model_sha256": sha, "model_files": files}
    store.add_config_history(event, config_toml, config_json, json.dumps(env, sort_keys=True), meta)
    if changed:
        store.log(
            f"model files changed since the run started (sha256 {original[:12]} → {sha[:12]})",
            "warning",
        )


def stored_problem_sets(store: RunStore) -> dict[str, Any] | None:
    return _meta_json(store, "problems")


# ---- reading -------------------------------------------------------------------------------------


def run_record(store: RunStore) -> dict[str, str]:
    """The record's meta keys (missing ones as '')."""
    return {k: store.meta(k) or "" for k in RECORD_KEYS}


def lineage(store: RunStore) -> dict[str, str]:
    """A run's lineage meta keys (``LINEAGE_KEYS`` but ``run_uid``), {} for a run that is
    not a branch."""
    if not store.meta("parent_run"):
        return {}
    return {k: store.meta(k) or "" for k in LINEAGE_KEYS if k != "run_uid"}


def record_lineage(store: RunStore, values: dict[str, str]) -> None:
    """Write a branch's lineage (``LINEAGE_KEYS``) once, in one transaction."""
    unknown = set(values) - set(LINEAGE_KEYS)
    assert not unknown, unknown
    store.add_meta(values)
