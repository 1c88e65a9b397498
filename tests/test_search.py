"""Sample search by text: the real CLI over a real run DB; the sidecar index follows samples
added after a search (as the engine adds them) and never duplicates one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from ssd_tui.config import RunConfig
from ssd_tui.store.run_store import RunStore, SampleRow
from ssd_tui.store.search import index_path, search


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", "search", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )


def _row(rnd: int, pid: int, idx: int, text: str, purpose: str = "eval") -> SampleRow:
    return SampleRow(rnd, purpose, pid, idx, 0.8, 0, 1.0, 0.0, text, text, "stop", [], [], [], [])


def make_run(path: Path) -> Path:
    store = RunStore.open(path, create=True)
    store.init_run("s", "m", RunConfig().to_json(), "", str(path.parent))
    ids = store.add_problems(
        "eval",
        [
            SimpleNamespace(
                id="loop",
                prompt="def loop():\n",
                tests="",
                entry_point="loop",
                difficulty="easy",
                source="t",
            )
        ],
    )
    pid = ids["loop"]
    store.add_samples(
        [
            _row(0, pid, 0, "    while True:\n        break\n"),
            _row(0, pid, 1, "    while true_value:\n        pass\n"),
            _row(1, pid, 0, "    x = 1\n    while  True:  # two spaces\n"),
            _row(1, pid, 1, "    return 1\n"),
        ]
    )
    rows = store.conn.execute("SELECT id FROM samples ORDER BY id").fetchall()
    store.add_verdicts([(rows[0][0], "passed", "", 0.1), (rows[1][0], "failed", "", 0.1)])
    store.close()
    return path


def test_search_cli_finds_exact_text_with_verdicts(tmp_path: Path) -> None:
    db = make_run(tmp_path / "run" / "run.db")
    r = cli(str(db), "while True")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "loop[" in ln]
    # The exact text only: not "while true_value", not "while  True" (two spaces).
    assert len(lines) == 1 and "passed" in lines[0] and "while True:" in lines[0]
    assert r.stdout.strip().endswith("1 sample(s) match")
    # An FTS5 query as it is (round 1: "while  True", no break).
    r = cli(str(db), "--fts", "while NOT break", "--round", "1")
    assert r.returncode == 0 and "1 sample(s) match" in r.stdout and "untested" not in r.stdout
    r = cli(str(db), "while", "--status", "failed")
    assert "1 sample(s) match" in r.stdout and "while true_value:" in r.stdout


def test_index_follows_new_samples_without_duplicates(tmp_path: Path) -> None:
    db = make_run(tmp_path / "run" / "run.db")
    hits, total = search(db, "while True")
    assert total == 1
    # The engine adds more samples after the first search (a live run).
    store = RunStore.open(db)
    pid = store.problems("eval")[0]["id"]
    store.add_samples([_row(2, pid, 0, "while True:\n    yield 1\n")])
    store.close()
    hits, total = search(db, "while True")
    assert total == 2 and [h.round for h in hits] == [0, 2]
    assert hits[1].status is None and hits[1].line == "while True:"
    idx = sqlite3.connect(index_path(db))
    assert idx.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM samples").fetchone() == (5, 5)
    assert idx.execute("SELECT COUNT(*) FROM samples_fts").fetchone() == (5,)
    idx.close()


def test_a_replaced_run_db_gets_a_fresh_index(tmp_path: Path) -> None:
    db = make_run(tmp_path / "run" / "run.db")
    assert search(db, "while True")[1] == 1
    for p in db.parent.glob("run.db*"):
        p.unlink()
    store = RunStore.open(db, create=True)
    store.set_meta("created_at", "1")  # a different DB at the same path
    store.init_run("s", "m", RunConfig().to_json(), "", str(db.parent))
    store.close()
    assert search(db, "while True")[1] == 0


def test_bad_queries_are_one_line(tmp_path: Path) -> None:
    db = make_run(tmp_path / "run" / "run.db")
    for args, message in (
        ((str(db), "--fts", 'while AND ("'), "not a valid FTS5 query"),
        ((str(db), "+="), "give at least one word or number"),
        ((str(tmp_path / "nope.db"), "x"), "run database not found"),
    ):
        r = cli(*args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
