"""Notes and tags on runs and rounds: the real CLI writes them into the run DB, lists them,
refuses bad input in one line, and exports (whole run and one round) carry them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from fixtures.synthetic import build_run

from ssd_tui.outputs.export import export_run
from ssd_tui.store.run_store import RunStore


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )


def test_notes_and_tags_through_the_cli_and_exports(tmp_path: Path) -> None:
    db = build_run(tmp_path / "run", rounds_done=2, running_round=False)
    assert cli("note", str(db), "lr", "1e-3", "looks", "high").returncode == 0
    r = cli("note", str(db), "--round", "2", "loops", "start here")
    assert r.returncode == 0 and "note #2 added" in r.stdout
    assert cli("tag", str(db), "good-lr", "baseline").stdout.split() == ["baseline", "good-lr"]
    assert cli("tag", str(db), "--round", "2", "collapse").returncode == 0
    assert cli("tag", str(db), "baseline", "--remove").stdout.split() == ["good-lr"]

    listed = cli("notes", str(db)).stdout.splitlines()
    assert listed[:2] == ["tags: good-lr", "round 2 tags: collapse"]
    assert [ln.split(" ", 3)[-1] for ln in listed[2:]] == [
        "run: lr 1e-3 looks high",
        "round 2: loops start here",
    ]
    store = RunStore.open(db, readonly=True)
    assert [(n["round"], n["text"]) for n in store.notes()] == [
        (None, "lr 1e-3 looks high"),
        (2, "loops start here"),
    ]
    assert store.tags() == ["good-lr"] and store.tags(2) == ["collapse"]
    store.close()

    # Exports carry them: the whole run, and a round (its own and the run's, not others').
    whole = export_run(db, tmp_path / "all.db")
    one = export_run(db, tmp_path / "r1.db", round=1)
    two = export_run(db, tmp_path / "r2.db", round=2)
    for path, notes, tags in (
        (whole, ["lr 1e-3 looks high", "loops start here"], {"good-lr", "collapse"}),
        (one, ["lr 1e-3 looks high"], {"good-lr"}),
        (two, ["lr 1e-3 looks high", "loops start here"], {"good-lr", "collapse"}),
    ):
        c = sqlite3.connect(path)
        assert [r[0] for r in c.execute("SELECT text FROM notes ORDER BY id")] == notes
        assert {r[0] for r in c.execute("SELECT tag FROM tags")} == tags
        described = {r[0] for r in c.execute("SELECT table_name FROM descriptions")}
        assert {"notes", "tags"} <= described
        c.close()
    # An export is read-only review material.
    r = cli("note", str(whole), "x")
    assert r.returncode == 2 and "is an export" in r.stderr


def test_bad_note_and_tag_input(tmp_path: Path) -> None:
    db = build_run(tmp_path / "run", rounds_done=1, running_round=False)
    for args, message in (
        (("note", str(db), "--round", "7", "x"), "round 7: this run has rounds 0–1"),
        (("note", str(db), "  "), "the note is empty"),
        (("tag", str(db), "two words"), "tag 'two words': 1–64 characters, no spaces or commas"),
    ):
        r = cli(*args)
        assert r.returncode == 2, args
        assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1


def test_a_file_made_before_the_tables_gets_them_on_first_write(tmp_path: Path) -> None:
    """Files that reached schema 2 before notes and tags were part of it lack the tables."""
    db = build_run(tmp_path / "run", rounds_done=0, running_round=False)
    c = sqlite3.connect(db)
    c.executescript(
        "DROP TABLE notes; DROP TABLE tags; "
        "UPDATE meta SET value = '3' WHERE key = 'schema_version';"
    )
    c.close()
    store = RunStore.open(db, readonly=True)
    assert store.notes() == [] and store.tags() == []  # a reader copes
    store.close()
    assert cli("note", str(db), "hello").returncode == 0
    assert cli("tag", str(db), "t1").returncode == 0
    store = RunStore.open(db, readonly=True)
    assert [n["text"] for n in store.notes()] == ["hello"] and store.tags() == ["t1"]
    store.close()


def test_the_app_and_the_cli_share_one_rule(tmp_path: Path) -> None:
    """The app's note and tag writers go through the same checks as the CLI's (they used to
    accept a tag with a space or on a round the run lacks, and wrote into exports)."""
    import pytest

    from ssd_tui.errors import SSDError
    from ssd_tui.tui.workbench import write_note, write_tags

    db = build_run(tmp_path / "run", rounds_done=1, running_round=False)
    for write, message in (
        (lambda: write_tags(db, ["a b"], None), "no spaces or commas"),
        (lambda: write_tags(db, ["x"], 9), "round 9: this run has rounds 0–1"),
        (lambda: write_note(db, "   ", None), "the note is empty"),
    ):
        with pytest.raises(SSDError, match=message):
            write()
    whole = export_run(db, tmp_path / "export.db")
    with pytest.raises(SSDError, match="is an export"):
        write_note(whole, "x", None)
    with pytest.raises(SSDError, match="is an export"):
        write_tags(whole, ["x"], None)
    store = RunStore.open(db, readonly=True)
    assert store.notes() == [] and store.tags() == [] and store.tags(9) == []
    store.close()
