"""Branches: a run whose round 0 is round K's model of another run (``ssd-tui run CONFIG
--from RUN_DIR --round K``; docs/rounds.md).

The branch starts from the parent's round-K model as the parent stored it: that round's
adapter, copied into the branch's folder as ``adapters/round-000/`` (its hash checked
against the parent's record), on the weights it goes on (the base model, or the parent's
merged copy, referred to where it lies). The lineage goes into the branch's reproducibility
record (``record.LINEAGE_KEYS``) before anything else is written, so a rerun of the same
run, with or without ``--from``, continues the same branch. Round 0's evaluation is the
parent's round K's when it is the same evaluation (``runs/reuse.py``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ssd_tui.config import config_for_new_run
from ssd_tui.errors import SSDError
from ssd_tui.models import adapter_sha256
from ssd_tui.runs import record
from ssd_tui.store.run_store import RunStore


@dataclass(frozen=True)
class Branch:
    """What ``--from RUN_DIR --round K`` names: the parent's run DB and its round."""

    parent: Path
    round: int


def branch_of(path: str | Path, rnd: int | None) -> Branch:
    """``--from PATH --round K`` checked: PATH a run folder or its run.db."""
    if rnd is None:
        raise SSDError(f"--from {path}: say which of its rounds to branch from (--round K)")
    if rnd < 0:
        raise SSDError(f"--round {rnd}: must be ≥ 0")
    p = Path(path).expanduser()
    db = p / "run.db" if p.is_dir() else p
    if not db.is_file():
        raise SSDError(f"--from {path}: no run database there (a run folder holds run.db)")
    return Branch(db.resolve(), rnd)


@dataclass(frozen=True)
class ParentRound:
    """Round K of the parent as it stored it."""

    run_dir: Path
    name: str
    uid: str
    round: int
    base: str  # the weights the adapter goes on (the parent's model, or a merged copy)
    adapter: str | None
    adapter_sha256: str
    model_sha256: str
    model_files: str


def parent_round(branch: Branch) -> ParentRound:
    """The parent's round-K model; SSDError when that round is not done (or its adapter is
    gone)."""
    store = RunStore.open(branch.parent, readonly=True)
    try:
        info = store.run_info()
        if info is None:
            raise SSDError(f"--from {branch.parent.parent}: no run has started there")
        rows = {r["round"]: r for r in store.rounds()}
        row = rows.get(branch.round)
        if row is None or row["status"] != "done":
            done = [str(r) for r, x in rows.items() if x["status"] == "done"]
            raise SSDError(
                f"--round {branch.round}: round {branch.round} of {branch.parent.parent} is "
                f"not done (done: {', '.join(done) or 'none'})"
            )
        run_dir = branch.parent.parent
        base = row.get("base_path") or info["model"]
        if row.get("base_path") and not Path(base).is_absolute():
            base = str((run_dir / base).resolve())
        adapter = None
        if row["adapter_path"]:
            here = run_dir / "adapters" / Path(row["adapter_path"]).name
            adapter = str(here) if here.is_dir() else row["adapter_path"]
            if not Path(adapter).is_dir():
                raise SSDError(f"round {branch.round}'s adapter is gone: {adapter}")
        return ParentRound(
            run_dir,
            info["name"],
            store.meta("run_uid") or "",
            branch.round,
            base,
            adapter,
            row["adapter_sha256"] or "",
            store.meta("model_sha256") or "",
            store.meta("model_files") or "",
        )
    finally:
        store.close()


def check_model(parent: ParentRound, model_path: str, run_dir: Path) -> None:
    """A branch continues its parent's model: the config must name the same model, and
    another folder than the parent's."""
    if run_dir.resolve() == parent.run_dir.resolve():
        raise SSDError(
            f"--from {parent.run_dir}: the branch needs a run folder of its own ([run] dir)"
        )
    if not parent.model_sha256:
        return  # a parent from before the record: nothing to compare against
    cached = {"sha256": parent.model_sha256, "files": parent.model_files}
    sha, _ = record.model_hash(model_path, cached)
    if sha != parent.model_sha256:
        raise SSDError(
            f"--from {parent.run_dir}: this config's model ({model_path}) is not the model "
            f"that run trained (sha256 {sha[:12] or '?'} vs {parent.model_sha256[:12]}); "
            "a branch goes on from its parent's model"
        )


def lineage_values(parent: ParentRound) -> dict[str, str]:
    """The lineage meta keys of a branch of ``parent``."""
    return {
        "parent_run": str(parent.run_dir.resolve()),
        "parent_run_uid": parent.uid,
        "parent_name": parent.name,
        "parent_round": str(parent.round),
        "parent_adapter_sha256": parent.adapter_sha256,
        "parent_model": parent.base,
    }


def same_branch(stored: dict[str, str], branch: Branch) -> bool:
    return stored.get("parent_run") == str(branch.parent.parent) and stored.get(
        "parent_round"
    ) == str(branch.round)


def begin(store: RunStore, run_dir: Path, model_path: str, stored: dict[str, str]) -> None:
    """Make round 0 the parent's round-K model (idempotent): its adapter copied in, hash
    checked, and the weights it goes on recorded."""
    store.plan_round(0, [])
    row = next(r for r in store.rounds() if r["round"] == 0)
    base = stored["parent_model"]
    same_base = Path(base).resolve() == Path(model_path).resolve() if base else True
    store.set_round_base(0, None if same_base else base)
    want = stored.get("parent_adapter_sha256", "")
    if not want or row["adapter_path"]:
        return
    parent = parent_round(
        Branch(Path(stored["parent_run"]) / "run.db", int(stored["parent_round"]))
    )
    out = run_dir / "adapters" / "round-000"
    if not out.is_dir():
        tmp = out.with_name("round-000.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a killed copy
        shutil.copytree(parent.adapter or "", tmp)
        tmp.rename(out)
    sha = adapter_sha256(out)
    if sha != want:
        raise SSDError(
            f"round {parent.round}'s adapter in {parent.run_dir} does not match the sha256 that "
            f"run recorded ({sha[:12]} vs {want[:12]}): it changed after training"
        )
    store.set_adapter(0, str(out), sha)


def branch_config(parent_dir: Path, name: str, runs_dir: Path) -> Path:
    """Write ``runs_dir/name/config.toml`` for a branch of the run in ``parent_dir``: the
    parent's own config (RUN_DIR/config.toml), named ``name``, in that folder. Refused when
    the folder exists."""
    source = parent_dir / "config.toml"
    if not source.is_file():
        raise SSDError(f"{parent_dir} has no config.toml to branch from")
    folder = runs_dir / name
    if folder.exists():
        raise SSDError(f"{folder} exists; pick another name for the branch")
    text = config_for_new_run(source.read_text(encoding="utf-8"), parent_dir, name, folder)
    folder.mkdir(parents=True)
    out = folder / "config.toml"
    out.write_text(text, encoding="utf-8")
    return out
