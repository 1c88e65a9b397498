"""Export a round or a whole run to a self-contained file, and open exports for review.

Two formats (see docs/export.md, whose schema section is generated from this module):

* **SQLite** (``.db``, or ``.db.gz`` with ``compress``): the run database's own schema,
  so ``RunStore.open(path, readonly=True)`` and every UI screen read it unchanged; plus
  a ``descriptions`` table (what each table and column means), ``export_*`` keys in
  ``meta``, and a Datasette ``<name>.metadata.json`` written beside the file.
* **JSONL** (``.jsonl`` / ``.jsonl.gz``): one JSON object per sample, flat, plain JSON
  types, readable with ``datasets.load_dataset("json", data_files=...)``; the run's
  reproducibility record and config history go beside it in ``<name>.record.json``.

Consistency with a run that is still being written: a SQLite export first copies the
source with SQLite's online backup API in a single step, which reads one committed
snapshot (a batch the engine has half written is never seen), then works on that copy
only. A JSONL export reads the source in one read transaction, which SQLite also
serves from one snapshot. Every file is written under a temporary name beside its destination and
renamed into place when complete.

Column descriptions live in ``TABLES``, ``JSONL_FIELDS`` and ``META_KEYS`` below and
nowhere else: the ``descriptions`` table, metadata.json and docs/export.md (regenerate it
with ``python -m ssd_tui.outputs.export docs/export.md``) are all produced from them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_tui import __version__
from ssd_tui.errors import SSDError
from ssd_tui.evaluation.suspect import REASONS
from ssd_tui.runs.record import LINEAGE_KEYS, RECORD_KEYS, lineage, run_record
from ssd_tui.store import export_db
from ssd_tui.store.export_db import DESCRIPTIONS_TABLE
from ssd_tui.store.flat_samples import FLAT_SAMPLE_SQL, flat_samples
from ssd_tui.store.review import open_export
from ssd_tui.store.run_store import RunStore

# ---- the one place where the export format is described ---------------------------------

#: table → (what a row is, {column: description}), in the order the docs list them.
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "meta": (
        "Key/value facts about the file: schema version, creation time, the run's "
        "reproducibility record (versions, platform, model and problem hashes, prompt) and, "
        "in an export, what was exported from where (the export_* keys).",
        {
            "key": "Name of the fact (schema_version, created_at, export_kind, ...).",
            "value": "Its value, as text.",
        },
    ),
    "runs": (
        "The run and its configuration (one row, id 1).",
        {
            "id": "Always 1: a database holds one run.",
            "name": "The run's name (config [run] name).",
            "model": "The base model: a Hugging Face id or a local folder.",
            "config_toml": "The run configuration as the user wrote it (TOML).",
            "config_json": "The validated configuration with every default filled in (JSON).",
            "base_dir": "The folder the config's relative paths resolve against (the config "
            "file's folder), as of the engine's last start.",
            "created_at": "When the run was created (Unix time, seconds).",
        },
    ),
    "rounds": (
        "One row per SSD round. Round 0 evaluates the base model; round k >= 1 samples "
        "from model k-1, trains LoRA adapter k on those samples and evaluates model k.",
        {
            "round": "Round number (0 = the base model).",
            "status": "pending | running | done.",
            "adapter_path": "Folder of the round's LoRA adapter (PEFT layout), as written by "
            "the engine; NULL for round 0. The adapter files are not part of an export.",
            "adapter_sha256": "SHA-256 over the adapter folder's file names and contents "
            "(adapter_config.json in canonical form: sorted keys, and target_modules sorted, "
            "which peft writes in no fixed order), to check a copy of the adapter against "
            "this run; the same adapter gives the same hash in every run.",
            "started_at": "When the round's first stage started (Unix time).",
            "finished_at": "When the round's last stage finished (Unix time).",
            "base_path": "The weights the round's adapter goes on: NULL for the run's model "
            "(config [model] path), a folder relative to the run folder for a merged copy "
            '([rounds] adapter = "merge": merged/round-K/), an absolute path for a branch\'s '
            "round 0 on its parent's weights (schema 5; docs/rounds.md).",
            "source_round": "The round whose model drew this round's training samples: "
            "round - 1, or the best round after a [control] rollback; NULL for round 0 and in "
            "older files (schema 5).",
        },
    ),
    "stages": (
        "The fixed list of stages of each round (sample, train, evaluate, analyse, ...).",
        {
            "round": "Round the stage belongs to.",
            "stage": "Stage name: sample | train | evaluate | baseline | analyse.",
            "position": "Order of the stage within its round (0 first).",
            "status": "pending | running | stopped | failed | done.",
            "detail": "Short progress or failure text shown in the app.",
            "done": "Units of work done (samples, steps or tests, depending on the stage).",
            "total": "Units of work in the stage.",
            "started_at": "When the stage last started or resumed (Unix time).",
            "finished_at": "When the stage last ended (Unix time).",
            "seconds": "Time spent in the stage, summed over resumes (seconds).",
            "sandbox": "Isolation that ran the stage's test programs (evaluate, baseline): "
            "root+cgroup-v1 or root+cgroup-v2 (strict, the default), or a weaker one the "
            "config opted into (root, userns, none, each +cgroup-vN where cgroups worked); "
            '"a, b" when resumed under another; NULL for stages that run no programs '
            "(docs/sandbox.md).",
            "engine": 'Sampler engine that drew the stage\'s samples: "hf" or "vllm on cpu" / '
            '"vllm on cuda" ([run] engine, auto resolved); "a, b" when resumed on another; '
            "NULL for stages that sample nothing (train, analyse) and in older files.",
            "reused_from": "JSON naming the run and round whose evaluation this stage took "
            "instead of computing it (run folder, name, run_uid, round): a sweep's shared "
            "round 0, a branch's parent's round K; NULL when computed here (schema 5).",
        },
    ),
    "problems": (
        "Programming problems: training prompts and held-out evaluation problems. An "
        "export of one round holds only the problems its samples refer to.",
        {
            "id": "Row id; samples.problem_id refers to it.",
            "purpose": "train (prompts to sample and train on) | eval (held-out, with tests).",
            "name": "The problem's id in its source (e.g. HumanEval/0).",
            "prompt": "The problem text given to the model, before prompt rendering.",
            "tests": "Unit-test code run against a sample's program (eval problems).",
            "entry_point": "Name of the function the tests call.",
            "difficulty": "easy | medium | hard, or NULL when the source has none.",
            "source": "Where the problem comes from (humaneval, a JSONL file, leetcode, demo).",
        },
    ),
    "samples": (
        "Every sampled completion. Training samples of round k come from model k-1 (at the "
        "training temperature); evaluation samples of round k come from model k.",
        {
            "id": "Row id; token_stats.sample_id and verdicts.sample_id refer to it.",
            "round": "Round the sample belongs to.",
            "purpose": "train (SSD training data) | eval (held-out evaluation).",
            "problem_id": "The problem (problems.id).",
            "sample_idx": "Index of the sample among those drawn for the problem (0-based).",
            "temperature": "Sampling temperature.",
            "top_k": "Top-k truncation (0 = off).",
            "top_p": "Top-p (nucleus) truncation (1.0 = off).",
            "min_p": "Min-p truncation (0.0 = off).",
            "completion": "The generated text, as sampled (after stop strings).",
            "code": "The program that was tested: prompt and completion joined and "
            "extracted (eval samples; NULL for training samples).",
            "n_tokens": "Number of generated tokens.",
            "logprob_sum": "Sum over tokens of log p(token) at T = 1 without truncation "
            "(nats); NULL when the engine gave no token statistics.",
            "mean_entropy": "Mean over tokens of the entropy of the full next-token "
            "distribution (nats); NULL without token statistics.",
            "mean_tail_mass": "Mean over tokens of the probability mass (at T = 1) cut by "
            "top-k/top-p/min-p; NULL without token statistics.",
            "finish_reason": "stop (a stop string or end of sequence) | length (token limit).",
            "created_at": "When the sample was written (Unix time).",
        },
    ),
    "token_stats": (
        "Per-token statistics of each sample, as packed little-endian arrays (decode with "
        "numpy.frombuffer(blob, '<i4') for ids and '<f4' for the others); one entry per "
        "generated token.",
        {
            "sample_id": "The sample (samples.id).",
            "token_ids": "Token ids (int32 little-endian).",
            "logprobs": "log p(token) at T = 1, untruncated (float32 little-endian, nats).",
            "entropies": "Entropy of the full next-token distribution (float32, nats).",
            "tail_mass": "Probability mass outside the sampling truncation set at T = 1 "
            "(float32; 0 when nothing is truncated).",
            "top1": "Top-1 probability of the next-token distribution at T = 1 (float32); "
            "recorded for the round-0 evaluation samples the fork/lock probe may take, "
            "NULL otherwise (and before schema 7).",
            "train_tail_mass": "Probability mass at T = 1 outside the training truncation "
            "set ([sampling]: T_train, top-k, top-p, min-p; float32), where top1 is "
            "recorded; 1 minus it is the paper's KeptMass.",
        },
    ),
    "verdicts": (
        "Result of running each evaluation sample's program against its problem's tests.",
        {
            "sample_id": "The sample (samples.id).",
            "status": "passed | failed | error | timeout.",
            "message": "Last line of the failure or error, if any, then the test line it "
            "stopped at, e.g. 'AssertionError (test line 3: assert candidate(2) == 4)'.",
            "duration_s": "Wall time of the test run (seconds).",
            "suspect": "Why the program looks like it games the tests, read from its source "
            "(ssd_tui/evaluation/suspect.py): comma-separated reasons among "
            + ", ".join(REASONS)
            + " (docs/analysis.md says what each means); NULL when nothing looks like it, "
            "and in files from before schema 3. A flag only: the status is the tests'.",
        },
    ),
    "metrics": (
        "Metrics computed from samples and verdicts (pass@k, diversity, token statistics).",
        {
            "round": "Round the metric describes.",
            "purpose": "eval | train: which samples it was computed from.",
            "temperature": "Sampling temperature of those samples.",
            "name": "Metric name: pass@1, pass@5, distinct_2, ...",
            "scope": "all, or a difficulty (easy | medium | hard) the metric is restricted to.",
            "value": "The value (NULL when undefined, e.g. no problems in the scope).",
        },
    ),
    "train_log": (
        "Training loss and learning rate per optimiser step of each round's LoRA training.",
        {
            "round": "Round whose adapter was trained.",
            "step": "Optimiser step (1-based).",
            "loss": "Training loss (mean cross-entropy on completion tokens).",
            "lr": "Learning rate at that step.",
        },
    ),
    "events": (
        "The run's log: stage starts, ends, stops and errors. A round's export holds the "
        "events of that round only (not run-wide events, whose round is NULL).",
        {
            "id": "Row id, in the order events happened.",
            "ts": "When it happened (Unix time).",
            "round": "Round it concerns (NULL for run-wide events).",
            "stage": "Stage it concerns, if any.",
            "level": "info | warning | error.",
            "message": "What happened.",
        },
    ),
    "warnings": (
        "Warnings raised by the analysis (e.g. signs of mode collapse), one per rule and round.",
        {
            "id": "Row id.",
            "round": "Round the warning is about.",
            "rule": "Name of the rule that fired.",
            "message": "The warning as shown in the app.",
            "evidence": "The numbers behind it (JSON object).",
            "created_at": "When it was raised (Unix time).",
        },
    ),
    "probe_stats": (
        "The fork/lock probe: round 0's evaluation samples at T_eval re-scored under each "
        "round's model, one row per round and sample, as packed little-endian arrays with one "
        "entry per token (docs/analysis.md). Empty in a run analysed without a model. An "
        "export of one round keeps the rows of the samples it holds: every round's rows in "
        "round 0's export, none in a later round's.",
        {
            "round": "Round whose model scored the sample.",
            "sample_id": "The round-0 evaluation sample scored (samples.id).",
            "token_ids": "The completion's tokens as the probe tokenised it (int32).",
            "offsets": "Character start of each token in the completion (int32; -1 unknown).",
            "logprobs": "log p(token) at T = 1 under this round's model (float32, nats).",
            "entropies": "Entropy of the full next-token distribution (float32, nats).",
            "tail_mass": "Probability mass at T = 1 outside T_eval's truncation set (float32).",
            "top1": "Top-1 probability at T = 1 (float32).",
            "train_tail_mass": "Probability mass at T = 1 outside T_train's truncation set "
            "(float32; 1 - the paper's KeptMass); NULL in probes written before it existed.",
        },
    ),
    "decisions": (
        "What [control] decided after a round (docs/rounds.md): go on, stop the run, or roll "
        "the next round back to the best round so far; one row per round after which a "
        "decision was made (none when no [control] rule is on). Schema 5.",
        {
            "round": "The round just finished; the decision is about the next one.",
            "action": "continue | stop | rollback.",
            "rule": "on_collapse | stop_after_no_gain, the rule that decided; NULL when none "
            "fired.",
            "next_source": "The round the next round samples from (NULL after a stop).",
            "message": "The decision in words, with its numbers (also in the event log).",
            "evidence": "The numbers it was made on (JSON): pass@1 per round, each round's "
            "comparison with the best so far (difference, paired standard error, gain), the "
            "best round, rounds without gain, the round's warnings, the [control] settings.",
            "created_at": "When it was made (Unix time).",
        },
    ),
    "train_sets": (
        "Which samples each round's adapter trained on ([rounds] data: its own, rounds "
        "1..k's, or anchored with round 1's), one row per round and sample. Schema 5.",
        {
            "round": "The round whose adapter trained on the sample.",
            "sample_id": "The training sample (samples.id; its own round is samples.round).",
        },
    ),
    "behaviours": (
        "Behavioural diversity: each evaluation sample's behaviour class, what its program "
        "does on its problem's tests (outputs or exception types of every call the tests "
        "make, recorded in the sandbox; docs/analysis.md). Schema 6.",
        {
            "sample_id": "The evaluation sample (samples.id).",
            "program": "SHA-256 of the sample's normalised program: samples of one problem "
            "with the same key share one run.",
            "class": "rec:<hash of the call log> (same hash: same behaviour), or timeout, "
            "crash, no output.",
            "detail": "What the class does: its first calls' results, shortened.",
            "recorder": "Version of the recording program (classes of two versions never compare).",
            "ran": "1: this sample's program ran; 0: it took the class of an identical program "
            "of the same problem run earlier.",
            "duration_s": "Wall time of the run that gave the class.",
        },
    ),
    "config_history": (
        "Every start and resume of the run, oldest first, with the config and the environment "
        "of that process (the runs table holds the latest config; the first row here the one "
        "the run started with).",
        {
            "id": "Row id (order of the starts and resumes).",
            "ts": "When the engine started or resumed (Unix time).",
            "event": "start | resume.",
            "config_toml": "The config file's text as given.",
            "config_json": "The validated config (every key, defaults filled in).",
            "environment": "Versions, git commit, platform, CPU and GPUs of that process "
            "(JSON; the same keys as the environment keys of meta).",
        },
    ),
    # Notes and tags: what a user wrote on the run or a round.
    "notes": (
        "Notes a user wrote on the run or on one round (`ssd-tui note`, the app). A round's "
        "export holds that round's notes and the run's.",
        {
            "id": "Row id, in the order the notes were written.",
            "round": "Round the note is about; NULL for a note on the whole run.",
            "text": "The note.",
            "created_at": "When it was written (Unix time).",
        },
    ),
    "tags": (
        "Tags on the run or on one round (`ssd-tui tag`, the app): short labels to find and "
        "group runs by. A round's export holds that round's tags and the run's.",
        {
            "tag": "The tag.",
            "round": "Round it is on; NULL for a tag on the whole run.",
            "created_at": "When it was set (Unix time).",
        },
    ),
    "descriptions": (
        "What each table and column of this file means (written by the export; the same "
        "text as docs/export.md and the Datasette metadata.json).",
        {
            "table_name": "A table of this file.",
            "column_name": "One of its columns, or '' for the row describing the table itself.",
            "description": "What it means.",
        },
    ),
}

#: Fields of each JSONL line, in order. Values are plain JSON: strings, numbers, null.
JSONL_FIELDS: dict[str, str] = {
    "run": "Name of the run the sample comes from.",
    "sample_id": "The sample's id in the run database (samples.id).",
    "round": "Round the sample belongs to (training samples of round k come from model k-1).",
    "purpose": "train | eval.",
    "problem_id": "The problem's id in the run database (problems.id).",
    "problem": "The problem's name in its source (e.g. HumanEval/0).",
    "difficulty": "easy | medium | hard, or null.",
    "problem_source": "Where the problem comes from (humaneval, a JSONL file, leetcode, demo).",
    "prompt": "The problem text given to the model, before prompt rendering.",
    "completion": "The generated text.",
    "code": "The program that was tested (eval samples), or null.",
    "sample_idx": "Index of the sample among those drawn for the problem (0-based).",
    "temperature": "Sampling temperature.",
    "top_k": "Top-k truncation (0 = off).",
    "top_p": "Top-p truncation (1.0 = off).",
    "min_p": "Min-p truncation (0.0 = off).",
    "n_tokens": "Number of generated tokens.",
    "logprob_sum": "Sum of log p(token) at T = 1 (nats), or null.",
    "mean_entropy": "Mean entropy of the next-token distribution (nats), or null.",
    "mean_tail_mass": "Mean probability mass cut by truncation, or null.",
    "finish_reason": "stop | length.",
    "verdict": "passed | failed | error | timeout, or null (training samples, or not yet tested).",
    "verdict_message": "Last line of the failure or error and the test line it stopped at, "
    "or null.",
    "verdict_duration_s": "Wall time of the test run (seconds), or null.",
    "verdict_suspect": "Why the program looks like it games the tests (verdicts.suspect: "
    'comma-separated reasons such as "frames,trace"), or null when nothing does.',
}

#: Keys of the meta table. schema_version, created_at and the record come from the source run.
META_KEYS: dict[str, str] = {
    "schema_version": "Version of the run-database schema (the same numbering as ssd-tui's "
    "store.schema.SCHEMA_VERSION); a reader refuses files from a newer version.",
    "created_at": "When the run database was created (Unix time).",
    # The reproducibility record, written when the run starts (ssd_tui/runs/record.py).
    **RECORD_KEYS,
    # A branch's lineage (ssd_tui/runs/record.py, runs/branch.py).
    **LINEAGE_KEYS,
    "export_kind": "round (one round of a run) | run (the whole run).",
    "export_round": "The exported round (empty for a whole-run export).",
    "export_source": "Absolute path of the run database it was exported from.",
    "exported_at": "When the export was made (Unix time).",
    "export_ssd_tui_version": "Version of ssd-tui that wrote the export.",
}

_SQLITE_MAGIC = b"SQLite format 3\x00"

_GZIP_LEVEL_DB = 1  # token arrays are near-incompressible floats: level 6 is 2x slower, 9% smaller
_GZIP_LEVEL_TEXT = 6
# SQLite errors that concern the file being written (disk full, ...), not the source.
_WRITE_ERRORS = ("SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY")


@dataclass(frozen=True)
class ExportInfo:
    """What an export file says about itself (its export_* meta keys)."""

    kind: str  # "round" | "run"
    round: int | None
    source: str
    exported_at: float
    ssd_tui_version: str


# ---- public API ------------------------------------------------------------------------------


def default_out_name(
    run_name: str, round: int | None = None, jsonl: bool = False, compress: bool = False
) -> str:
    """``<run>-round-K.db`` or ``<run>-all.db`` (``.jsonl`` for JSONL, ``.gz`` when compressed).

    The run name is reduced to letters, digits, ``.``, ``_`` and ``-`` so it is a safe
    file name everywhere.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.") or "run"
    part = "all" if round is None else f"round-{round}"
    return f"{safe}-{part}{'.jsonl' if jsonl else '.db'}{'.gz' if compress else ''}"


def export_run(
    db: str | Path,
    out: str | Path | None = None,
    round: int | None = None,
    jsonl: bool = False,
    compress: bool = False,
) -> Path:
    """Export one round (``round=K``) or the whole run (``round=None``) of run database ``db``.

    ``out`` is the file to write; an existing folder means "the default name in that
    folder"; None means the default name (`default_out_name`) in the current directory.
    With ``compress`` the file is gzipped and ``.gz`` is appended to ``out`` if missing.
    A SQLite export also gets a Datasette ``<name>.metadata.json`` beside it. Safe to run
    while the engine writes ``db``. Returns the path written. Raises `SSDError`.
    """
    src = Path(db)
    with _opened(src) as store:
        info = store.run_info() or {}
        if round is not None:
            _check_round(store, src, round)
        final = _out_path(src, out, info.get("name") or src.stem, round, jsonl, compress)
        try:
            if jsonl:
                _write_jsonl(store, final, round, compress, info.get("name") or "")
            else:
                _write_db(store, src, final, round, compress)
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "").startswith(_WRITE_ERRORS):
                raise SSDError(f"cannot write {final}: {e}") from None
            raise SSDError(
                f"{src}: cannot read the database ({e}); the file may be truncated or damaged"
            ) from None
        except OSError as e:
            raise SSDError(f"cannot write {final}: {e.strerror or e}") from None
    return final


def export_info(store: RunStore) -> ExportInfo | None:
    """The export facts of an opened file, or None when it is a run database, not an export."""
    kind = store.meta("export_kind")
    if kind is None:
        return None
    rnd = store.meta("export_round")
    return ExportInfo(
        kind=kind,
        round=int(rnd) if rnd else None,
        source=store.meta("export_source") or "",
        exported_at=float(store.meta("exported_at") or 0.0),
        ssd_tui_version=store.meta("export_ssd_tui_version") or "",
    )


def datasette_metadata(
    db_name: str, title: str, description: str, tables: list[str] | None = None
) -> dict[str, Any]:
    """Datasette metadata for one database: title, description, per-table descriptions and
    column descriptions (https://docs.datasette.io/en/stable/metadata.html)."""
    names = [t for t in TABLES if tables is None or t in tables]
    return {
        "title": title,
        "description": description,
        "databases": {
            db_name: {
                "title": title,
                "description": description,
                "tables": {
                    t: {"description": TABLES[t][0], "columns": dict(TABLES[t][1])} for t in names
                },
            }
        },
    }


def docs_markdown() -> str:
    """The generated part of docs/export.md: every table, column, meta key and JSONL field."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["### Tables", ""]
    for table, (what, columns) in TABLES.items():
        out += [f"#### `{table}`", "", what, "", "| column | meaning |", "|---|---|"]
        out += [f"| `{c}` | {cell(d)} |" for c, d in columns.items()]
        out.append("")
    out += ["### Keys of `meta`", "", "| key | meaning |", "|---|---|"]
    out += [f"| `{k}` | {cell(d)} |" for k, d in META_KEYS.items()]
    out += ["", "### JSONL fields", "", "| field | meaning |", "|---|---|"]
    out += [f"| `{k}` | {cell(d)} |" for k, d in JSONL_FIELDS.items()]
    return "\n".join(out) + "\n"


DOCS_BEGIN = (
    "<!-- BEGIN GENERATED by `python -m ssd_tui.outputs.export docs/export.md`; do not edit -->"
)
DOCS_END = "<!-- END GENERATED -->"


def update_docs(path: Path) -> bool:
    """Rewrite the generated section of ``path`` (docs/export.md); True if it changed."""
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition(DOCS_BEGIN)
    _, sep2, tail = rest.partition(DOCS_END)
    if not sep or not sep2:
        raise SSDError(f"{path}: no {DOCS_BEGIN!r} … {DOCS_END!r} section")
    new = f"{head}{DOCS_BEGIN}\n\n{docs_markdown()}\n{DOCS_END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


# ---- opening ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(src: Path) -> Iterator[RunStore]:
    store = open_export(src)
    try:
        yield store
    finally:
        store.close()


def _check_round(store: RunStore, src: Path, rnd: int) -> None:
    have = [r["round"] for r in store.rounds()]
    if rnd not in have:
        if not have:
            raise SSDError(f"{src} has no rounds yet; nothing to export for round {rnd}")
        listed = ", ".join(map(str, have))
        raise SSDError(f"{src} has no round {rnd} (its rounds: {listed})")


def _out_path(
    src: Path, out: str | Path | None, run_name: str, rnd: int | None, jsonl: bool, compress: bool
) -> Path:
    name = default_out_name(run_name, rnd, jsonl, compress)
    if out is None:
        final = Path.cwd() / name
    elif Path(out).is_dir():
        final = Path(out) / name
    else:
        final = Path(out)
        if compress and not final.name.endswith(".gz"):
            final = final.with_name(final.name + ".gz")
    if final.exists() and final.resolve() == src.resolve():
        raise SSDError(f"refusing to overwrite the source {src} with its export")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSDError(f"cannot create {final.parent}: {e.strerror or e}") from None
    return final


@contextlib.contextmanager
def _temp_beside(final: Path, tag: str) -> Iterator[Path]:
    """A new empty file in final's folder (same file system: the rename is atomic).

    Created with mode 0666 less the umask, like any file the user writes (mkstemp's 0600
    would make a file meant for sharing private).
    """
    while True:
        name = str(final.parent / f".{final.name}.{secrets.token_hex(4)}.{tag}")
        try:
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            continue
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        for p in (tmp, Path(name + "-journal"), Path(name + "-wal"), Path(name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _gzip_file(src: Path, dst: Path, inner_name: str) -> None:
    with open(src, "rb") as f_in, open(dst, "wb") as raw:
        with gzip.GzipFile(
            filename=inner_name, mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL_DB
        ) as gz:
            shutil.copyfileobj(f_in, gz, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())


def _fsync(p: Path) -> None:
    with open(p, "rb") as f:
        os.fsync(f.fileno())


# ---- SQLite export ---------------------------------------------------------------------------


def _write_db(store: RunStore, src: Path, final: Path, rnd: int | None, compress: bool) -> None:
    facts = _export_facts(src, rnd)
    with _temp_beside(final, "snapshot") as snap:
        with export_db.open_copy(snap) as conn:
            damage = export_db.snapshot(store, conn)  # the source is not read after this
            if damage:
                raise SSDError(
                    f"{src}: the database is damaged ({damage}); the file may be truncated or "
                    "damaged"
                )
            if rnd is None:
                about = export_db.stamp_export(conn, facts, TABLES)
        if rnd is None:
            _place(snap, final, compress)
        else:
            with _temp_beside(final, "round") as part:
                with export_db.open_copy(part) as conn:
                    export_db.copy_round(conn, snap, rnd)
                    about = export_db.stamp_export(conn, facts, TABLES)
                _place(part, final, compress)
    _write_metadata_json(final, {**facts, **about})


def _export_facts(src: Path, rnd: int | None) -> dict[str, str]:
    """The export_* keys of ``meta``: what was exported, from where, when, by which ssd-tui."""
    return {
        "export_kind": "run" if rnd is None else "round",
        "export_round": "" if rnd is None else str(rnd),
        "export_source": str(src.resolve()),
        "exported_at": repr(time.time()),
        "export_ssd_tui_version": __version__,
    }


def _place(built: Path, final: Path, compress: bool) -> None:
    """Move a finished database to ``final`` (gzipping it first when asked), atomically."""
    if compress:
        with _temp_beside(final, "gz") as gz:
            _gzip_file(built, gz, final.name[:-3] if final.name.endswith(".gz") else final.name)
            os.replace(gz, final)
    else:
        _fsync(built)
        os.replace(built, final)


def _write_metadata_json(final: Path, facts: dict[str, Any]) -> Path:
    """Write ``<name>.metadata.json`` beside ``final`` for ``datasette <name>.db --metadata``."""
    db_file = final.name[:-3] if final.name.endswith(".gz") else final.name
    db_name = Path(db_file).stem
    meta_path = final.with_name(db_name + ".metadata.json")
    rnd = facts["export_round"]
    what = f"round {rnd}" if rnd else "the whole run"
    title = f"ssd-tui: {facts['run']}, {what}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(facts["exported_at"])))
    description = (
        f"SSD run '{facts['run']}' (model {facts['model']}): {what}, exported by ssd-tui "
        f"{facts['export_ssd_tui_version']} from {facts['export_source']} at {stamp}. "
        f"Schema version {facts['schema_version']}; every column is described in the "
        f"{DESCRIPTIONS_TABLE} table and in ssd-tui's docs/export.md."
    )
    data = datasette_metadata(db_name, title, description, facts["tables"])
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)
    return meta_path


# ---- JSONL export ----------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """JSON has no NaN or infinity: write those as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_jsonl(
    store: RunStore, final: Path, rnd: int | None, compress: bool, run_name: str
) -> None:
    assert ["run", *FLAT_SAMPLE_SQL] == list(JSONL_FIELDS), "JSONL_FIELDS and the store disagree"
    names = list(FLAT_SAMPLE_SQL)
    # One read transaction: the witness lookup, the rows and the record share one snapshot.
    with store.read_snapshot():
        rows = flat_samples(store, rnd)
        with _temp_beside(final, "jsonl") as tmp:
            with open(tmp, "wb") as raw:
                sink: Any = (
                    gzip.GzipFile(
                        filename=final.name[:-3],
                        mode="wb",
                        fileobj=raw,
                        compresslevel=_GZIP_LEVEL_TEXT,
                    )
                    if compress
                    else raw
                )
                try:
                    buf: list[str] = []
                    for row in rows:
                        obj = {"run": run_name}
                        obj.update(zip(names, map(_plain, row), strict=True))
                        buf.append(json.dumps(obj, ensure_ascii=False))
                        if len(buf) >= 1000:
                            sink.write(("\n".join(buf) + "\n").encode("utf-8"))
                            buf.clear()
                    if buf:
                        sink.write(("\n".join(buf) + "\n").encode("utf-8"))
                finally:
                    if sink is not raw:
                        sink.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, final)
        _write_record_json(store, final)


def _write_record_json(store: RunStore, final: Path) -> Path:
    """``<name>.record.json`` beside a JSONL export: the run's reproducibility record (meta),
    its config and every start and resume. A JSONL file holds samples only (one flat object a
    line, so dataset loaders read it), so the record travels beside it."""

    stem = final.name.removesuffix(".gz").removesuffix(".jsonl")
    info = store.run_info() or {}
    doc = {
        "run": info.get("name"),
        "schema_version": store.meta("schema_version"),
        "record": run_record(store),
        # where the run comes from: a branch's parent and round ({} for other runs)
        "lineage": lineage(store),
        "config_toml": info.get("config_toml"),
        "config_history": store.config_history(),
    }
    path = final.with_name(stem + ".record.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---- docs ------------------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ssd_tui.outputs.export docs/export.md", file=sys.stderr)
        return 2
    changed = update_docs(Path(argv[0]))
    print(f"{argv[0]}: {'updated' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
