"""`ssd-tui diff` and the record carried by exports, on two finished runs (the fake engine
through `ssd-tui run`'s own path): the shared one (conftest ``finished_run``) and another
T_eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from runkit import finished_project, run_fake

from ssd_tui.config import load_config
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
    config.write_text(config.read_text().replace("[eval]\ntemperature = 1.0", "[eval]\ntemperature = 0.5"))
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
    assert "no run database" in r.stderr


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
