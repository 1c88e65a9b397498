"""`ssd-tui export RUN.db --tensorboard DIR`: a run's numbers as TensorBoard event files.

Written with tensorboardX (the optional extra ``ssd-tui[tensorboard]``; no TensorFlow),
read by `tensorboard --logdir DIR`. One TensorBoard run per ssd-tui run
(``DIR/<run name>/``), so exporting every run of a sweep into one DIR overlays them.
Everything comes from the run DB, like the app and the report:

* ``eval/pass_at_K`` (pass@K; step = round, at T_eval) and ``eval/pass_at_K/<difficulty>``
  (TensorBoard tags allow no '@' or '=');
* ``baseline/pass_at_K/T_<t>`` (round 0 at each baseline T_eval, one point) and
  ``baseline/best_pass_at_1`` drawn at every round, the line SSD has to beat;
* ``eval/<diversity metric>``, ``train_samples/<metric>`` (the round's training samples) and
  ``probe/<fork/lock metric>``, step = round;
* ``train/loss`` and ``train/lr`` per optimiser step over the whole run (rounds one after
  another), and ``train/round-K/loss`` with the round's own steps;
* notes and tags (when the DB has them) as text.

A re-export replaces the run's event files (never appends a second copy of every point).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ssd_tui.analysis import rounds as an
from ssd_tui.errors import SSDError
from ssd_tui.store.reads import run_config
from ssd_tui.store.run_store import RunStore

EVENTS_PREFIX = "events.out.tfevents."


def _writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise SSDError(
            "TensorBoard export needs tensorboardX: pip install 'ssd-tui[tensorboard]'"
        ) from None
    return SummaryWriter


def _tag(name: str) -> str:
    """TensorBoard tags keep only [A-Za-z0-9_./-] (tensorboardX would turn '@' into '_')."""
    return name.replace("@", "_at_")


def scalars(store: RunStore) -> list[tuple[str, float, int]]:
    """(tag, value, step) for every scalar the export writes, in a stable order."""
    cfg = run_config(store)
    t_eval = cfg.eval.temperature
    out: list[tuple[str, float, int]] = []
    rows = sorted(
        (m for m in store.metrics() if m["value"] is not None),
        key=lambda m: (m["purpose"], m["name"], m["scope"], m["temperature"], m["round"]),
    )
    for m in rows:
        rnd, purpose, t, raw_name = m["round"], m["purpose"], m["temperature"], m["name"]
        scope, value = m["scope"], m["value"]
        name = _tag(raw_name)
        suffix = "" if scope == "all" else f"/{scope}"
        at_t_eval = abs(t - t_eval) < 1e-6
        if purpose == "eval" and at_t_eval:
            out.append((f"eval/{name}{suffix}", value, rnd))
        elif purpose == "eval" and rnd == 0 and raw_name.startswith("pass@"):
            out.append((f"baseline/{name}/T_{t:g}{suffix}", value, 0))
        elif purpose == "train":
            out.append((f"train_samples/{name}{suffix}", value, rnd))
        elif purpose == "probe":
            out.append((f"probe/{name}{suffix}", value, rnd))
    base = [p["pass@1"] for p in an.baseline_curve(store) if "pass@1" in p]
    rounds = sorted({m["round"] for m in rows})
    if base:
        out += [("baseline/best_pass_at_1", max(base), rnd) for rnd in rounds]
    out += _train_log(store)
    return out


def _train_log(store: RunStore) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    offset, last_round, last_step = 0, None, -1
    for rnd, step, loss, lr in store.train_log():
        if rnd != last_round:
            offset += last_step + 1 if last_round is not None else 0
            last_round = rnd
        last_step = step
        if loss is not None:
            out.append(("train/loss", loss, offset + step))
            out.append((f"train/round-{rnd}/loss", loss, step))
        if lr is not None:
            out.append(("train/lr", lr, offset + step))
    return out


def _texts(store: RunStore) -> list[tuple[str, str, int]]:
    """Notes and tags, where the DB has them (files from before schema 2 lack them)."""
    out: list[tuple[str, str, int]] = []
    for note in store.notes():
        rnd = note["round"]
        out.append(("notes/run" if rnd is None else f"notes/round-{rnd}", note["text"], rnd or 0))
    tags = [t["tag"] for t in store.tag_rows()]
    if tags:
        out.append(("tags", ", ".join(tags), 0))
    return out


def export_tensorboard(db: Path, out_dir: Path, name: str | None = None) -> tuple[Path, int]:
    """Write the run's scalars under ``out_dir/<name>``; return (that folder, scalars written)."""
    writer_cls = _writer_class()
    store = RunStore.open(db, readonly=True)
    try:
        info = store.run_info() or {}
        name = name or info.get("name") or Path(db).parent.name
        points = scalars(store)
        texts = _texts(store)
    finally:
        store.close()
    target = Path(out_dir) / name
    if target.exists() and any(not p.name.startswith(EVENTS_PREFIX) for p in target.iterdir()):
        raise SSDError(f"{target} holds other files than event files; choose another DIR")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        w = writer_cls(logdir=str(tmp), flush_secs=3600)
        for tag, value, step in points:
            w.add_scalar(tag, float(value), global_step=int(step))
        for tag, text, step in texts:
            w.add_text(tag, text, global_step=int(step))
        w.close()
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, len(points)
