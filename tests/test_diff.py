"""`ssd-tui diff` and the record carried by exports, on two finished runs (the fake engine
through `ssd-tui run`'s own path): the shared one (conftest ``finished_run``) and another
T_eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from runkit import finished_project, run_fake

from ssd_tui.config import load_config
from ssd_tui.models import file_sha256
from ssd_tui.outputs.export import export_run
from ssd_tui.runs.diff import diff_paths
from ssd_tui.runs.record import RECORD_KEYS
from ssd_tui.store.review import open_export
from ssd_tui.store.run_store import RunStore


@pytest.fixture(scope="module")
def runs(tmp_path_factory, finished_run, fake_model_dir):
    """The shared finished run, and one that differs from it in T_eval only."""
    folder = tmp_path_factory.mktemp("b")
    config = finished_project(folder, fake_model_dir)
    config.write_text(
        config.read_text().replace("[eval]\ntemperature = 1.0", "[eval]\ntemperature = 0.5")
    )
    r = run_fake(config)
    assert r.returncode == 0, r.stderr
    return finished_run.dir, load_config(config).run_dir


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", "diff", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_diff_names_the_changed_key_and_the_metrics(runs):
    a, b = runs
    r = _cli(a, b)
    assert r.returncode == 1, r.stderr
    config_lines = r.stdout.split("config (", 1)[1].split("\n\n", 1)[0]
    assert "eval.temperature" in config_lines and "A 1.0  |  B 0.5" in config_lines
    assert config_lines.count("\n  ") == 1  # the one key that differs
    assert "environment" not in r.stdout and "problems (" not in r.stdout  # same machine, files
    assert "round 0 pass@1" in r.stdout  # metrics side by side


def test_a_run_equals_itself_and_its_export(runs, tmp_path):
    a, _ = runs
    r = _cli(a, a / "run.db")
    assert r.returncode == 0 and "identical" in r.stdout, r.stdout
    out = export_run(a / "run.db", tmp_path / "a.db", compress=True)
    exported = open_export(out)
    meta = dict(exported.conn.execute("SELECT key, value FROM meta").fetchall())
    assert set(RECORD_KEYS) <= set(meta) and len(meta["model_sha256"]) == 64
    assert [h["event"] for h in exported.config_history()] == ["start"]
    exported.close()
    d, lines = diff_paths(a, out)
    assert d.identical, lines


def test_diff_of_a_missing_run_is_one_line(tmp_path):
    r = _cli(tmp_path / "nope", tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "run database not found" in r.stderr


def test_environment_differences_are_named(runs, tmp_path):
    """A run resumed elsewhere: the same DB with another torch version in its record."""
    a, _ = runs
    copy = tmp_path / "copy.db"
    src = RunStore.open(a / "run.db", readonly=True)
    src.conn.execute("VACUUM INTO ?", (str(copy),))
    src.close()
    store = RunStore.open(copy)
    store.set_meta("torch", "9.9.9")
    store.close()
    d, lines = diff_paths(a, copy)
    assert not d.identical
    assert [r[:2] for r in d.differences] == [("environment", "torch")]
    assert json.dumps(lines)  # printable


def test_diff_into_a_closed_pipe_ends_quietly(runs, tmp_path):
    from test_cli import _with_closed_stdout, assert_quiet_end

    a, b = runs
    assert_quiet_end(_with_closed_stdout("diff", str(a), str(b), tmp=tmp_path), tmp_path)


def _copy(db, to) -> RunStore:
    """A copy of a run DB, opened for writing (a test edits what a real run would have)."""
    src = RunStore.open(db, readonly=True)
    src.conn.execute("VACUUM INTO ?", (str(to),))
    src.close()
    return RunStore.open(to)


def _respell(store: RunStore, base_dir, **paths: str) -> None:
    """The stored config with other spellings of its paths, read from ``base_dir``."""
    info = store.run_info()
    config = json.loads(info["config_json"])
    for key, value in paths.items():
        config["data"][key] = value
    store.update_config(json.dumps(config, sort_keys=True), info["config_toml"], str(base_dir))


def test_a_path_is_compared_by_what_it_names_not_its_spelling(runs, tmp_path):
    a, _ = runs
    elsewhere = tmp_path / "deep" / "er"
    elsewhere.mkdir(parents=True)
    copy = _copy(a / "run.db", tmp_path / "copy.db")
    # The same files: one run says "eval.jsonl" from its folder, the other "../../.." to it.
    _respell(
        copy,
        elsewhere,
        benchmark=os.path.relpath(a.parent / "eval.jsonl", elsewhere),
        train_prompts=str(a.parent / "train.jsonl"),
    )
    problems = json.loads(copy.meta("problems"))
    problems["eval"]["spec"] = str(a.parent / "eval.jsonl")
    copy.set_meta("problems", json.dumps(problems))
    copy.close()
    d, lines = diff_paths(a, tmp_path / "copy.db")
    assert d.identical, lines

    # Same spelling, another file with other content: a difference, named by its file.
    copy = _copy(a / "run.db", tmp_path / "other.db")
    other = elsewhere / "eval.jsonl"
    other.write_text((a.parent / "eval.jsonl").read_text().splitlines()[0] + "\n")
    # "eval.jsonl" now read from elsewhere/ (and the training prompts, unused, the same file)
    _respell(copy, elsewhere, train_prompts=str(a.parent / "train.jsonl"))
    problems = json.loads(copy.meta("problems"))
    problems["eval"] |= {"sha256": "f" * 64, "files": {str(other): file_sha256(other)}}
    copy.set_meta("problems", json.dumps(problems))
    copy.close()
    d, lines = diff_paths(a, tmp_path / "other.db")
    assert [r[:2] for r in d.differences] == [
        ("config", "data.benchmark"),
        ("problems", "eval"),
    ], lines
    row = next(r for r in d.differences if r[1] == "data.benchmark")
    assert str(a.parent / "eval.jsonl") in row[2] and str(elsewhere / "eval.jsonl") in row[3]


def test_two_configs_and_a_config_against_a_run(runs, tmp_path):
    a, _ = runs
    config = a.parent / "run.toml"  # the config run A was started from
    r = _cli(config, a)
    assert r.returncode == 0 and "identical" in r.stdout, (r.stdout, r.stderr)
    # Another folder, every path spelled another way, one setting changed.
    other = tmp_path / "cfgs" / "b.toml"
    other.parent.mkdir()
    text = config.read_text().replace("temperature = 1.0", "temperature = 0.7", 1)
    for name in ("eval.jsonl", "train.jsonl"):
        text = text.replace(f'"{name}"', f'"{a.parent / name}"')
    text = text.replace('dir = "run"', f'dir = "{a}"')
    other.write_text(text)
    for x, y in ((config, other), (other, a)):
        r = _cli(x, y)
        assert r.returncode == 1, (r.stdout, r.stderr)
        section = r.stdout.split("config (", 1)[1].split("\n\n", 1)[0]
        assert section.startswith("1 different):") and "sampling.temperature" in section
        assert "not an SQLite database" not in r.stderr
    r = _cli(config, tmp_path / "nope.toml")
    assert r.returncode == 2 and r.stderr.startswith("error: config file not found")


def test_adapter_hashes_are_compared_round_by_round(tmp_path):
    from fixtures.synthetic import build_run

    db = build_run(tmp_path / "a", running_round=False)
    copy = _copy(db, tmp_path / "b.db")
    copy.set_adapter(2, "/elsewhere/adapters/round-002", "e" * 64)
    copy.close()
    d, lines = diff_paths(db, tmp_path / "b.db")
    assert [r[:2] for r in d.differences] == [("adapters", "round 2")], lines
    assert "round 2" in "\n".join(lines) and "eeeeeeeeeeee" in "\n".join(lines)


def test_every_environment_a_run_was_resumed_in_is_compared(runs, tmp_path):
    a, _ = runs
    copy = _copy(a / "run.db", tmp_path / "resumed.db")
    start = copy.config_history()[0]
    env = json.loads(start["environment"])
    later = {**env, "torch": "9.9.9", "transformers": "8.8.8"}
    copy.add_config_history(
        "resume", start["config_toml"], start["config_json"], json.dumps(later), {}
    )
    copy.close()
    r = _cli(a, tmp_path / "resumed.db")
    assert r.returncode == 1, r.stdout
    d, lines = diff_paths(a, tmp_path / "resumed.db")
    assert [r[:2] for r in d.differences] == [
        ("environment", "torch"),
        ("environment", "transformers"),
    ], lines
    torch = next(r for r in d.differences if r[1] == "torch")
    assert torch[2] == env["torch"] and torch[3] == f"{env['torch']}, resumed under 9.9.9"
