"""The runs folder as the start screen lists it: each run's files (`ssd_tui.store.reads`)
and whether an engine holds it (`ssd_tui.tui.process`). No textual, no analysis: the
runs list is what the app shows first.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from ssd_tui.runs.runner import engine_pid
from ssd_tui.store.reads import RunListing, is_parent_of, run_listing


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


def tree_order(runs: list[RunListing]) -> list[tuple[RunListing, int]]:
    """The runs as a tree of branches: each run, then its branches (by the round they
    start from), indented one level deeper; a run whose parent is not listed is a root.
    Runs without branches keep their order."""
    children: dict[int, list[RunListing]] = {}
    roots = []
    for r in runs:
        parent = next((p for p in runs if p is not r and is_parent_of(p, r)), None)
        if parent is None:
            roots.append(r)
        else:
            children.setdefault(id(parent), []).append(r)
    out: list[tuple[RunListing, int]] = []

    def visit(r: RunListing, depth: int) -> None:
        if any(x is r for x, _ in out):  # a cycle (folders copied by hand): once only
            return
        out.append((r, depth))
        for c in sorted(children.get(id(r), []), key=lambda c: (c.parent_round or 0, c.name)):
            visit(c, depth + 1)

    for r in roots:
        visit(r, 0)
    return out


def family(run_dir: Path) -> tuple[RunListing | None, RunListing | None, list[RunListing]]:
    """(this run, its parent, its branches) as the runs beside it say: a parent moved
    elsewhere is read from the folder the branch names."""
    runs = list_runs(run_dir.parent)
    me = next((r for r in runs if r.run_dir.resolve() == run_dir.resolve()), None)
    if me is None:
        return None, None, []
    parent = next((p for p in runs if p is not me and is_parent_of(p, me)), None)
    if parent is None and me.parent_dir and (Path(me.parent_dir) / "run.db").exists():
        parent = read_listing(Path(me.parent_dir))
    kids = sorted(
        (r for r in runs if r is not me and is_parent_of(me, r)),
        key=lambda c: (c.parent_round or 0, c.name),
    )
    return me, parent, kids


def lineage_text(run_dir: Path) -> str:
    """The dashboard's lineage line (rich markup; '' for a run with no parent, no branch
    and no [control] stop): where it comes from, what branches from it, why it stopped."""
    me, parent, kids = family(run_dir)
    if me is None:
        return ""
    parts = []
    if me.parent_dir:
        name = escape(parent.name if parent else me.parent_name or Path(me.parent_dir).name)
        gone = "" if parent else " [dim](not found)[/]"
        parts.append(f"branch of [b]{name}[/b]{gone} at its round {me.parent_round}")
    if kids:
        listed = ", ".join(f"{escape(k.name)} (from round {k.parent_round})" for k in kids)
        parts.append(f"branches: {listed}")
    if me.stopped:
        parts.append(f"[b yellow]stopped[/]: {escape(me.stopped)}")
    return " · ".join(parts)
