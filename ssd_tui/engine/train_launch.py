"""Data-parallel LoRA training: ``HFTrainer`` in every process of a ``torchrun`` launch.

``LaunchedTrainer`` is the ``Trainer`` a run's train stage gets with ``[train] processes``
> 1 (or ``nodes`` > 1): it writes a SPEC file, starts

    python -m torch.distributed.run --standalone --nproc_per_node N -m ssd_tui.engine.train_launch SPEC.json

(``--nnodes M --node_rank 0 --master_addr HOST --master_port PORT`` for several machines)
and follows it: rank 0 appends one JSON line per optimiser step (step, total, loss, lr) to
``<out>.progress.jsonl``, which becomes the caller's ``progress(step, total)``, and writes
the per-step history, the world size and the backend to ``<out>.history.json`` at the end.
The launcher's output goes to ``<out>.launch.log``.

Every process loads the model and the same examples; ``HFTrainer`` sees ``WORLD_SIZE`` > 1
and gives each rank every world-th forward pass of each optimiser step, sums the LoRA
gradients over the ranks (gloo on CPU, NCCL on GPUs, one GPU per process) and saves the
adapter on rank 0. The update is the single-process one (tests/test_train_distributed.py).

Nothing outlives the stage: the launcher runs in a session of its own (a terminal's Ctrl-C
reaches the run, which stops it) and gets SIGTERM when the process that started it dies,
kill -9 included; each rank gets SIGKILL when its launcher dies, and also ends itself once
the run's process is gone (``OWNER_ENV``). torchrun ends every rank when one fails
(``--max_restarts 0``), so a rank killed mid-step fails the stage instead of leaving the
others waiting in an all-reduce; the rerun trains again from the start.

The same entry point runs by hand, as the tests and the docs do:

    accelerate launch --multi_gpu --num_processes 2 -m ssd_tui.engine.train_launch SPEC.json

(``accelerate launch --cpu --num_processes 2`` starts one process, not two: its CPU
launcher spreads over processes only with an MPI hostfile. ``--multi_gpu`` is torchrun,
and works without GPUs; ``[model] device = "cpu"`` then makes the group gloo.)
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssd_tui.engine.base import (
    Example,
    LaunchSettings,
    LoraSettings,
    Progress,
    TrainSettings,
)
from ssd_tui.errors import SSDError

#: The pid of the process that launched the training (the run's): a rank whose owner is
#: gone ends itself, whatever happened to the launcher in between.
OWNER_ENV = "SSD_TUI_TRAIN_OWNER"
#: How long the launcher may take to end its ranks after SIGTERM before it is killed.
STOP_GRACE_S = 30.0
#: How often the caller's ``progress`` is called while no step ends (so it can stop us).
PROGRESS_EVERY_S = 1.0
_POLL_S = 0.1
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def write_spec(
    path: Path,
    model_path: str,
    lora: LoraSettings,
    train: TrainSettings,
    examples: Sequence[Sequence[object]],
    out_dir: Path,
    dtype: str = "float32",
    device: str = "cpu",
    init_adapter: Path | None = None,
) -> Path:
    """Write a SPEC file for ``main``; returns ``path``."""
    out_dir = Path(out_dir)
    spec = {
        "model": model_path,
        "lora": dataclasses.asdict(lora),
        "train": dataclasses.asdict(train),
        "dtype": dtype,
        "device": device,
        "examples": [list(e) for e in examples],
        "out": str(out_dir),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "progress": str(progress_path(out_dir)),
    }
    Path(path).write_text(json.dumps(spec), encoding="utf-8")
    return Path(path)


def _beside(out_dir: Path, suffix: str) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + suffix)


def history_path(out_dir: Path) -> Path:
    return _beside(out_dir, ".history.json")


def progress_path(out_dir: Path) -> Path:
    return _beside(out_dir, ".progress.jsonl")


def spec_path(out_dir: Path) -> Path:
    return _beside(out_dir, ".launch.json")


def log_path(out_dir: Path) -> Path:
    return _beside(out_dir, ".launch.log")


def launcher_command(spec: Path, launch: LaunchSettings, node_rank: int = 0) -> list[str]:
    """torchrun's command line for ``spec``: one machine (a free port of its own), or node
    ``node_rank`` of ``launch.nodes`` meeting at ``launch.rendezvous``."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--nproc_per_node", str(launch.processes)]
    if launch.nodes > 1:
        host, _, port = launch.rendezvous.rpartition(":")
        cmd += ["--nnodes", str(launch.nodes), "--node_rank", str(node_rank)]
        cmd += ["--master_addr", host, "--master_port", port]
    else:
        cmd += ["--standalone"]  # c10d on localhost, a free port: runs side by side never clash
    # One failed rank ends them all: a restart would train from the start anyway, and the
    # rerun of the stage does that.
    cmd += ["--max_restarts", "0", "-m", "ssd_tui.engine.train_launch", str(spec)]
    return cmd


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A function that makes the calling process get ``sig`` when its parent dies (Linux;
    elsewhere nothing): for ``preexec_fn``, or a rank's first line."""

    def arm() -> None:  # pragma: no cover - in a child before exec, or in a rank
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return arm


class LaunchedTrainer:
    """A ``Trainer`` whose training runs under torchrun in ``launch.processes`` processes.

    ``history`` (one dict per optimiser step) comes from rank 0 when the launch ends; the
    caller's ``progress(step, total)`` is called after every step, and at least once a
    second before the first one (as ``progress(0, 0)``) so that it can stop the training
    by raising: the launcher and its ranks are then ended before the exception goes on.
    """

    def __init__(
        self,
        model_path: str,
        lora: LoraSettings,
        train: TrainSettings,
        dtype: str = "float32",
        device: str = "cpu",
        launch: LaunchSettings | None = None,
        threads: int = 0,
    ) -> None:
        self.model_path = model_path
        self.lora = lora
        self.settings = train
        self.dtype = dtype
        self.device = device
        self.launch = launch or LaunchSettings(processes=2)
        self.threads = threads
        self.history: list[dict[str, float]] = []
        self.command: list[str] = []
        self.backend: str | None = None

    def describe(self) -> str:
        """The launch in words, for the run's log."""
        where = f" × {self.launch.nodes} machines" if self.launch.nodes > 1 else ""
        return f"torchrun, {self.launch.processes} processes{where}"

    def train(
        self,
        examples: Sequence[Example],
        out_dir: Path,
        init_adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Train under torchrun; write the adapter to ``out_dir`` (rank 0) and return it."""
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in (progress_path(out_dir), history_path(out_dir)):
            stale.unlink(missing_ok=True)
        spec = write_spec(
            spec_path(out_dir),
            self.model_path,
            self.lora,
            self.settings,
            examples,
            out_dir,
            self.dtype,
            self.device,
            init_adapter,
        )
        self.command = launcher_command(spec, self.launch)
        log = log_path(out_dir)
        with open(log, "ab") as f:
            f.write(("\n$ " + " ".join(self.command) + "\n").encode())
            f.flush()
            proc = subprocess.Popen(
                self.command,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        try:
            _follow(proc, progress_path(out_dir), progress)
        finally:
            if proc.poll() is None:
                _end(proc)
        if proc.returncode != 0:
            raise SSDError(f"training failed: {failure_line(proc.returncode, log)} (see {log})")
        record = json.loads(history_path(out_dir).read_text(encoding="utf-8"))
        self.history, self.backend = record["history"], record.get("backend")
        for done in (spec, progress_path(out_dir), history_path(out_dir)):
            done.unlink(missing_ok=True)
        return out_dir

    def _env(self) -> dict[str, str]:
        """Ours, plus: this package importable in every rank (a source checkout too), the
        owner's pid, and the CPU threads shared out between the processes."""
        path = os.environ.get("PYTHONPATH", "")
        threads = self.threads or os.cpu_count() or 1
        return {
            **os.environ,
            "PYTHONPATH": str(_PACKAGE_ROOT) + (os.pathsep + path if path else ""),
            "PYTHONUNBUFFERED": "1",
            OWNER_ENV: str(os.getpid()),
            "OMP_NUM_THREADS": str(max(1, threads // self.launch.processes)),
        }


def _follow(proc: subprocess.Popen, progress_file: Path, progress: Progress | None) -> None:
    """Until the launcher ends: rank 0's steps to ``progress``, which may raise to stop."""
    offset, step, total = 0, 0, 0
    last_call = time.monotonic()
    while True:
        ended = proc.poll() is not None  # read the file once more after the end
        records, offset = _new_records(progress_file, offset)
        for rec in records:
            step, total = int(rec["step"]), int(rec["total"])
            if progress is not None:
                progress(step, total)
                last_call = time.monotonic()
        if ended:
            return
        if progress is not None and time.monotonic() - last_call >= PROGRESS_EVERY_S:
            progress(step, total)
            last_call = time.monotonic()
        time.sleep(_POLL_S)


def _new_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The whole lines appended to ``path`` after ``offset``, and the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line being written is read next time
    lines = data[:end].decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()], offset + end


def _end(proc: subprocess.Popen) -> None:
    """End the launcher: SIGTERM (torchrun then ends its ranks), SIGKILL after a grace
    period (its ranks then get SIGKILL from their death signal)."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def failure_line(returncode: int, log: Path) -> str:
    """Why a launch failed, in one line: the failed rank's exit code or signal from
    torchrun's report, else the launcher's own status."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")[-20000:]
    except OSError:
        text = ""
    # torchrun's report: "Root Cause (first observed failure):" then rank, exitcode lines.
    cause = text[text.rfind("Root Cause") :] if "Root Cause" in text else text
    found = re.search(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)", cause)
    if found:
        rank, code = found.groups()
        why = f"signal {-int(code)}" if int(code) < 0 else f"exit code {code}"
        return f"rank {rank} ended with {why}; torchrun ended the others"
    if returncode < 0:
        return f"the launcher ended with signal {-returncode}"
    errors = [ln.strip() for ln in text.splitlines() if "Error" in ln]
    return errors[-1] if errors else f"the launcher exited with status {returncode}"


# ---- in each rank ------------------------------------------------------------------------


def _watch_owner() -> None:
    """End this rank once the run that launched it is gone (a daemon thread polls it)."""
    owner = os.environ.get(OWNER_ENV, "")
    if not owner.isdigit():
        return  # started by hand (another node, a test): torchrun alone ends it

    def watch() -> None:  # pragma: no cover - runs in a rank
        while True:
            try:
                os.kill(int(owner), 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="owner-watch").start()


def rank_device(device: str) -> str:
    """This rank's device: its own GPU (``LOCAL_RANK``) where the config says cuda or auto
    and there is one; the CPU otherwise. ``auto`` does not shard the model here: each
    process holds all of it."""
    if device not in ("cuda", "auto"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu" if device == "auto" else device


def _step_writer(path: str, trainer: Any) -> Progress:
    """Rank 0's ``progress``: one JSON line per optimiser step, flushed as it ends."""
    f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole training

    def write(step: int, total: int) -> None:
        last = trainer.history[-1] if trainer.history else {}
        rec = {"step": step, "total": total, "loss": last.get("loss"), "lr": last.get("lr")}
        f.write(json.dumps(rec) + "\n")
        f.flush()

    return write


def main(argv: Sequence[str] | None = None) -> int:
    _die_with_parent(signal.SIGKILL)()  # a rank never outlives its launcher
    _watch_owner()
    # Here, not at the top: the tests write specs without loading torch (~1 s).
    from ssd_tui.engine.hf import HFTrainer, _dist_world

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m ssd_tui.engine.train_launch SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    lora = spec["lora"]
    lora["target_modules"] = tuple(lora["target_modules"])
    trainer = HFTrainer(
        spec["model"],
        LoraSettings(**lora),
        TrainSettings(**spec["train"]),
        spec["dtype"],
        rank_device(spec["device"]),
    )
    first = int(os.environ.get("RANK", "0")) == 0
    progress = _step_writer(spec["progress"], trainer) if first and spec.get("progress") else None
    examples = [tuple(e) for e in spec["examples"]]
    init = spec.get("init_adapter")
    out = trainer.train(
        examples, Path(spec["out"]), init_adapter=Path(init) if init else None, progress=progress
    )
    rank, world = _dist_world(trainer.device)
    if rank == 0:
        import torch.distributed as dist

        backend = dist.get_backend() if dist.is_initialized() else None
        record = {"world_size": world, "backend": backend, "history": trainer.history}
        history_path(out).write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
