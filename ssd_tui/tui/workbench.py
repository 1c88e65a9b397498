"""Reads for the workbench screens (overlay of many runs, notes and tags, the runs list's tags).

No textual here: everything runs in thread workers. Runs are read through
`ssd_tui.runs.sweep` (the same numbers as `ssd-tui sweep`'s table) and `RunStore`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_tui.errors import SSDError
from ssd_tui.runs import sweep as sw
from ssd_tui.store.run_store import RunStore

# 12 distinct colours (RGB, for plotext and rich alike): the overlay's series, in order.
PALETTE: list[tuple[int, int, int]] = [
    (86, 180, 233),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (240, 228, 66),
    (213, 94, 0),
    (0, 114, 178),
    (170, 170, 170),
    (148, 103, 189),
    (140, 86, 75),
    (188, 189, 34),
    (23, 190, 207),
]


def rgb(color: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*color)


@dataclass
class OverlayRun:
    """One run of an overlay: its DB, its name, and the group its seeds are averaged in."""

    db: Path
    label: str
    group: str
    seed: int = 0


@dataclass
class OverlayData:
    runs: list[OverlayRun]
    curves: dict[str, sw.RunCurve]  # run label → curve (runs without a readable DB: absent)
    groups: list[sw.SettingSummary]
    errors: dict[str, str] = field(default_factory=dict)
    title: str = ""


def sweep_runs(folder: Path) -> tuple[str, list[OverlayRun]]:
    """A sweep folder's runs, grouped by setting (started runs only)."""
    plan = sw.load(folder)
    runs = [
        OverlayRun(plan.db_path(r), r.label, sw.setting_label(r.setting), r.seed)
        for r in plan.runs
        if plan.db_path(r).exists()
    ]
    title = (
        f"sweep {folder.name}: {len(plan.settings())} setting(s) × {len(plan.seeds)} seed(s), "
        f"{len(runs)}/{len(plan.runs)} runs started"
    )
    return title, runs


def _config_key(store: RunStore) -> tuple[str, int]:
    """A run's config without what differs between seeds of one setting (name, dir, seed)."""
    info = store.run_info() or {}
    try:
        cfg = json.loads(info.get("config_json") or "{}")
    except ValueError:
        cfg = {}
    run = cfg.get("run", {})
    seed = int(run.pop("seed", 0) or 0)
    for k in ("name", "dir", "threads", "rounds"):
        run.pop(k, None)
    return json.dumps(cfg, sort_keys=True), seed


def picked_runs(dbs: list[Path]) -> list[OverlayRun]:
    """Runs picked on the start screen: runs whose configs differ only in seed form a group
    (averaged, with a band); the group is named after its first run."""
    out: list[OverlayRun] = []
    names: dict[str, str] = {}
    for db in dbs:
        label = db.parent.name
        try:
            store = RunStore.open(db, readonly=True)
            try:
                key, seed = _config_key(store)
            finally:
                store.close()
        except SSDError:
            key, seed = label, 0
        group = names.setdefault(key, label)
        out.append(OverlayRun(db, label, group, seed))
    counts = {g: sum(r.group == g for r in out) for g in names.values()}
    for r in out:
        if counts[r.group] > 1:
            r.group = f"{r.group} ×{counts[r.group]}"
    return out


def load_overlay(runs: list[OverlayRun], title: str = "") -> OverlayData:
    curves: dict[str, sw.RunCurve] = {}
    errors: dict[str, str] = {}
    for r in runs:
        try:
            curves[r.label] = sw.read_curve(r.db, r.label, r.seed, {"group": r.group})
        except SSDError as e:
            errors[r.label] = str(e)
    groups = []
    for g in dict.fromkeys(r.group for r in runs):
        members = [curves[r.label] for r in runs if r.group == g and r.label in curves]
        summary = sw.summarize_curves(members, {})
        summary.label = g
        groups.append(summary)
    return OverlayData(runs, curves, groups, errors, title)


# ---- notes and tags -------------------------------------------------------------------------
@dataclass
class NotesData:
    notes: list[dict[str, Any]]
    run_tags: list[str]
    round_tags: dict[int, list[str]]
    rounds: list[int]


def read_notes(db: Path) -> NotesData:
    store = RunStore.open(db, readonly=True)
    try:
        rounds = [r["round"] for r in store.rounds()]
        return NotesData(
            store.notes(),
            store.tags(),
            {r: t for r in rounds if (t := store.tags(r))},
            rounds,
        )
    finally:
        store.close()


def write_note(db: Path, text: str, rnd: int | None) -> int:
    """A note on the run (rnd None) or a round; returns the note's id."""
    store = RunStore.open(db)
    try:
        return store.add_note(text, rnd)
    finally:
        store.close()


def write_tags(db: Path, words: list[str], rnd: int | None) -> None:
    """'tag' adds, '-tag' removes."""
    store = RunStore.open(db)
    try:
        for w in words:
            if w.startswith("-") and len(w) > 1:
                store.remove_tag(w[1:], rnd)
            elif w:
                store.add_tag(w, rnd)
    finally:
        store.close()


def run_tags(runs: list[Any]) -> dict[Path, list[str]]:
    """Each listed run's tags (run folder → tags); unreadable runs have none."""
    out: dict[Path, list[str]] = {}
    for r in runs:
        if not r.db_path.exists():
            continue
        try:
            store = RunStore.open(r.db_path, readonly=True)
        except SSDError:
            continue
        try:
            if tags := store.tags():
                out[r.run_dir] = tags
        except Exception:  # noqa: BLE001 - a damaged DB is reported by the listing itself
            pass
        finally:
            store.close()
    return out


def sweep_folders(runs_dir: Path) -> list[Path]:
    """Sweep folders directly under the runs folder."""
    try:
        return sorted(p for p in Path(runs_dir).iterdir() if sw.is_sweep(p))
    except OSError:
        return []
