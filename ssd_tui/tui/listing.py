"""The runs folder as the start screen lists it: each run's files (`ssd_tui.store.reads`)
and whether an engine holds it (`ssd_tui.tui.process`). No textual, no analysis: the
runs list is what the app shows first.
"""

from __future__ import annotations

from pathlib import Path

from ssd_tui.runs.runner import engine_pid
from ssd_tui.store.reads import RunListing, run_listing


def read_listing(run_dir: Path) -> RunListing:
    """One run of the runs folder; a run an engine holds is 'running' (also while the
    database it is creating cannot be read yet)."""
    pid = engine_pid(run_dir / "run.db") if (run_dir / "run.db").exists() else None
    item = run_listing(run_dir)
    if pid is not None and item.state != "new":
        item.engine_pid, item.state, item.error = pid, "running", ""
    return item


def list_runs(runs_dir: Path) -> list[RunListing]:
    """Every subfolder of `runs_dir` with a run.db (or a config.toml not yet started)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if (d / "run.db").exists() or (d / "config.toml").exists():
            out.append(read_listing(d))
    return out
