"""Helpers that build tiny SSD projects (problem files, configs) and read run DBs back."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

EVAL = [
    (
        "add",
        'def add(a, b):\n    """Return a plus b."""\n',
        "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "easy",
    ),
    (
        "neg",
        'def neg(x):\n    """Return minus x."""\n',
        "def check(candidate):\n    assert candidate(4) == -4\n",
        "medium",
    ),
    (
        "first",
        'def first(xs):\n    """Return the first item."""\n',
        "def check(candidate):\n    assert candidate([7, 8]) == 7\n",
        "hard",
    ),
]


def write_problems(folder: Path, n_train: int = 12) -> None:
    with open(folder / "eval.jsonl", "w") as f:
        for name, prompt, tests, diff in EVAL:
            f.write(
                json.dumps(
                    {
                        "id": name,
                        "prompt": prompt,
                        "tests": tests,
                        "entry_point": name,
                        "difficulty": diff,
                    }
                )
                + "\n"
            )
    with open(folder / "train.jsonl", "w") as f:
        for i in range(n_train):
            prompt = f'def task_{i}(x):\n    """Return x times {i}."""\n'
            f.write(
                json.dumps(
                    {"id": f"t{i}", "prompt": prompt, "entry_point": f"task_{i}", "split": "train"}
                )
                + "\n"
            )


def write_config(folder: Path, model: Path, rounds: int = 1, **over: str) -> Path:
    sections = {
        "run": {"name": "t", "dir": "run", "seed": 3, "rounds": rounds, "threads": 1},
        "model": {"path": str(model)},
        "data": {"train_prompts": "train.jsonl", "benchmark": "eval.jsonl"},
        "sampling": {
            "temperature": 1.0,
            "top_k": 50,
            "samples_per_prompt": 2,
            "max_new_tokens": 12,
            "batch_size": 2,
            "stop": ["\ndef "],
        },
        "eval": {
            "temperature": 1.0,
            "samples_per_problem": 2,
            "k": [1, 2],
            "max_new_tokens": 12,
            "batch_size": 1,
            "timeout_s": 3.0,
            "workers": 2,
            "stop": ["\ndef "],
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "learning_rate": 5e-3,
            "epochs": 2,
            "batch_size": 1,
            "max_length": 64,
            "min_completion_lines": 0,
        },
    }
    for key, value in over.items():
        s, k = key.split("__")
        sections.setdefault(s, {})[k] = value
    return write_toml(folder / "run.toml", sections)


def write_toml(path: Path, sections: dict[str, dict]) -> Path:
    """``sections`` (section -> key -> value) as a TOML file at ``path``."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_stage(db: Path, stage: str, rnd: int, timeout: float = 120) -> bool:
    """Poll the run DB read-only until ``stage`` of round ``rnd`` is running with some work
    done (True), or has finished or the time is up (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            row = c.execute(
                "SELECT status, done FROM stages WHERE round=? AND stage=?", (rnd, stage)
            ).fetchone()
            c.close()
        except sqlite3.Error:
            row = None
        if row and row[0] == "running" and row[1] > 0:
            return True
        if row and row[0] == "done":
            return False
        time.sleep(0.005)
    return False


def snapshot(db: Path) -> dict:
    """Everything a resumed run must reproduce exactly: samples (with their ids, which the
    warnings' evidence cites), token stats, verdicts, metrics, warnings, the probe, the
    training log and the adapters' weights."""
    c = sqlite3.connect(db)
    samples = c.execute(
        "SELECT s.round, s.purpose, p.name, s.sample_idx, s.temperature, s.id, s.completion, "
        "s.n_tokens, t.token_ids, t.logprobs, t.entropies, t.tail_mass, v.status, v.suspect "
        "FROM samples s JOIN problems p ON p.id = s.problem_id "
        "JOIN token_stats t ON t.sample_id = s.id LEFT JOIN verdicts v ON v.sample_id = s.id ORDER BY 1, 2, 3, 4, 5"
    ).fetchall()
    metrics = c.execute(
        "SELECT round, purpose, temperature, name, scope, round(value, 9) FROM metrics ORDER BY 1, 2, 3, 4, 5"
    ).fetchall()
    stages = c.execute(
        "SELECT round, stage, status FROM stages ORDER BY round, position"
    ).fetchall()
    warnings = c.execute(
        "SELECT round, rule, message, evidence FROM warnings ORDER BY round, rule"
    ).fetchall()
    probe = c.execute(
        "SELECT round, sample_id, token_ids, entropies, tail_mass, top1 FROM probe_stats "
        "ORDER BY round, sample_id"
    ).fetchall()
    train_log = c.execute(
        "SELECT round, step, round(loss, 6), lr FROM train_log ORDER BY round, step"
    ).fetchall()
    # The weights, not the stored folder hash: peft writes target_modules, a set, into
    # adapter_config.json in the order of the process's string hash seed.
    adapters = [
        (rnd, hashlib.sha256((Path(path) / "adapter_model.safetensors").read_bytes()).hexdigest())
        for rnd, path in c.execute(
            "SELECT round, adapter_path FROM rounds WHERE adapter_path IS NOT NULL ORDER BY round"
        )
    ]
    c.close()
    return {
        "samples": samples,
        "metrics": metrics,
        "stages": stages,
        "warnings": warnings,
        "probe": probe,
        "train_log": train_log,
        "adapters": adapters,
    }


FAKE_RUN = Path(__file__).resolve().parent / "fixtures" / "fake_run.py"


def fake_project(folder: Path, model: Path, n_train: int = 12, **over) -> Path:
    """Problems and a config (``write_config``) for the fake engine; ``model`` is a folder
    from ``fake_engine.write_model`` (conftest's ``fake_model_dir``)."""
    write_problems(folder, n_train=n_train)
    return write_config(folder, model, **over)


def finished_project(folder: Path, model: Path) -> Path:
    """The shared finished run's project (conftest ``finished_run``): 24 training prompts,
    one round, a temperature-only baseline at T = 0.5, so every stage kind runs; a
    length-drift threshold of 1 % so that round 1 raises a warning, whose rows are compared
    too."""
    return fake_project(
        folder,
        model,
        n_train=24,
        eval__baseline_temperatures=[0.5],
        analysis__max_length_drift=0.01,
    )


def run_fake(config: Path, *extra: str, wait: bool = True, env: dict | None = None):
    """``ssd-tui run CONFIG ...`` with the fake engine (fixtures/fake_run.py), as ``run_cli``."""
    cmd = [sys.executable, str(FAKE_RUN), str(config), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_cli(config: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "ssd_tui", "run", str(config), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
