"""Strict sandbox isolation by default: a run refuses to evaluate with a weaker
sandbox unless its config opts in, and the isolation that ran is on record: in the run DB
(per stage), the app's status line, the report, and exports.

Weaker machines are made with the sandbox's test hook (``SSD_TUI_SANDBOX_DENY``): the
engine, an ``ssd-tui run`` subprocess, then finds no root mode or no cgroups. The engine is
the fake one (fixtures/fake_engine.py): the sandbox's choice, its refusal, the opt-in and
the record are the command's and the pipeline's, whatever computes the samples.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from rich.text import Text
from runkit import fake_project, run_fake
from test_tui_support import SIZE, screen_name, text_of, until

from ssd_tui.evaluation import sandbox
from ssd_tui.outputs.export import export_run
from ssd_tui.outputs.report import collect
from ssd_tui.store.run_store import RunStore
from ssd_tui.tui.app import SSDApp

pytestmark = pytest.mark.skipif(
    isinstance(sandbox._probe("root"), str), reason="needs the root mode to force weaker ones"
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _stage_sandbox(db: Path) -> dict[tuple[int, str], str | None]:
    with sqlite3.connect(db) as c:
        return {(r, s): m for r, s, m in c.execute("SELECT round, stage, sandbox FROM stages")}


def test_a_weaker_sandbox_stops_the_run_with_one_line(tmp_path, fake_model_dir, monkeypatch):
    # No root mode (a container without CAP_SYS_ADMIN): the sandbox would fall back to
    # userns or none. Every other forced case: tests/test_sandbox.py, in-process.
    config = fake_project(tmp_path, fake_model_dir, rounds=0)
    monkeypatch.setenv(sandbox.DENY_ENV, "root")
    r = run_fake(config)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: sandbox: strict isolation is not available (")
    assert "root mode disabled by SSD_TUI_SANDBOX_DENY (a test hook)" in lines[0]
    assert '[sandbox] isolation = "auto"' in lines[0]
    db = tmp_path / "run" / "run.db"
    if db.exists():  # nothing was evaluated
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT COUNT(*) FROM verdicts").fetchone() == (0,)


def test_the_cli_opt_in_runs_without_editing_the_config(tmp_path, fake_model_dir, monkeypatch):
    """A user who is not root cannot edit the demo's packaged config: `--sandbox auto`
    (or SSD_TUI_SANDBOX, which it sets for the engines started after it) opts in."""
    config = fake_project(tmp_path, fake_model_dir, rounds=0)
    monkeypatch.setenv(sandbox.DENY_ENV, "root")
    refused = run_fake(config)
    assert refused.returncode == 2 and "pass --sandbox auto" in refused.stderr
    bad = run_fake(config, "--sandbox", "loose")
    assert bad.returncode == 2 and "invalid choice: 'loose'" in bad.stderr
    r = run_fake(config, "--sandbox", "auto")
    assert r.returncode == 0, r.stderr
    db = tmp_path / "run" / "run.db"
    assert _stage_sandbox(db)[(0, "evaluate")].startswith(("userns", "none"))
    with sqlite3.connect(db) as c:  # the opt-in is on record in the stored config
        (cfg,) = c.execute("SELECT config_json FROM runs").fetchone()
        assert '"isolation": "auto"' in cfg
    monkeypatch.setenv("SSD_TUI_SANDBOX", "auto")  # the app's engines inherit this
    assert run_fake(config).returncode == 0


@pytest.mark.anyio
async def test_an_opted_in_run_shows_its_sandbox_in_db_app_report_and_export(
    tmp_path, fake_model_dir, monkeypatch
) -> None:
    config = fake_project(tmp_path, fake_model_dir, rounds=0)
    monkeypatch.setenv(sandbox.DENY_ENV, "cgroup")  # root mode, but no cgroup per program
    refused = run_fake(config)
    assert refused.returncode == 2
    assert "(no cgroup per program: cgroups disabled by SSD_TUI_SANDBOX_DENY" in refused.stderr
    config.write_text(config.read_text() + '\n[sandbox]\nisolation = "auto"\n')
    r = run_fake(config)
    assert r.returncode == 0, r.stderr
    db = tmp_path / "run" / "run.db"

    stages = _stage_sandbox(db)
    assert stages[(0, "evaluate")] == "root+seccomp"  # what ran: namespaces, no cgroup
    # the analyse stage runs the programs again for their behaviours, in the same sandbox
    assert stages[(0, "analyse")] == "root+seccomp"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] > 0

    store = RunStore.open(db, readonly=True)
    try:
        facts = dict(collect(store).facts)
    finally:
        store.close()
    assert facts["sandbox isolation"] == "root+seccomp (weaker than strict: see docs/sandbox.md)"

    exported = export_run(db, tmp_path / "export.db")
    assert _stage_sandbox(exported)[(0, "evaluate")] == "root+seccomp"

    app = SSDApp(tmp_path / "run", open_db=db, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen")
        head = app.screen.query_one("#run-head")
        shown = lambda: Text.from_markup(text_of(head)).plain  # noqa: E731
        await until(pilot, lambda: "sandbox root" in shown(), what="the sandbox shown")
        assert " · T_eval 1 · fake · sandbox root+seccomp · " in shown()  # engine, sandbox


def test_a_stage_resumed_under_another_sandbox_keeps_both(tmp_path) -> None:
    store = RunStore.open(tmp_path / "run.db", create=True)
    try:
        store.plan_round(0, ["evaluate", "analyse"])
        for label in ("root+cgroup-v1", "root+cgroup-v1", "none"):
            store.note_sandbox(0, "evaluate", label)
        assert store.stage(0, "evaluate")["sandbox"] == "root+cgroup-v1, none"
        assert store.stage(0, "analyse")["sandbox"] is None
        assert store.sandbox_labels() == ["root+cgroup-v1", "none"]
    finally:
        store.close()
