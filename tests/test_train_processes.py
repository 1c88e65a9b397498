"""`[train] processes = N`: the train stage of `ssd-tui run` under torchrun.

The fast tests check the launch's pieces (config, command line, the failure line, the
progress file). The slow ones (marked ``slow`` like tests/test_train_distributed.py: each
starts torchrun with 2 gloo processes on CPU, ~30 s a launch on 2 busy cores) run
`ssd-tui run` for real: a demo round whose adapter matches one process's, every
``[rounds] adapter`` policy, and a rank killed (or the run stopped or killed) mid-stage,
then rerun, ending like an uninterrupted run. ``pytest -m slow tests/test_train_processes.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runkit import run_cli, snapshot, write_config, write_problems, write_toml

from ssd_tui.config import RESUMABLE_KEYS, load_config, loads_config
from ssd_tui.engine.base import LaunchSettings, LoraSettings, TrainSettings
from ssd_tui.engine.choose import EngineChoice, Engines
from ssd_tui.engine.train_launch import (
    LaunchedTrainer,
    _new_records,
    failure_line,
    launcher_command,
    write_spec,
)
from ssd_tui.errors import SSDError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "assets" / "demo-model"
BASE = '[model]\npath = "m"\n[data]\nbenchmark = "b.jsonl"\ntrain_prompts = "t.jsonl"\n'


# ---- the pieces ------------------------------------------------------------------------------


def test_config_keys_default_to_one_process_and_check_the_rendezvous() -> None:
    cfg = loads_config(BASE)
    assert cfg.engine_settings().launch == LaunchSettings(1, 1, "")
    assert not cfg.engine_settings().launch.launched
    two = loads_config(BASE + "[train]\nprocesses = 2\n").engine_settings().launch
    assert two == LaunchSettings(2, 1, "") and two.launched
    with pytest.raises(SSDError, match=r"\[train\] processes must be ≥ 1"):
        loads_config(BASE + "[train]\nprocesses = 0\n")
    for bad in ('""', '"node0"', '"node0:port"', '":29500"'):
        with pytest.raises(SSDError, match=r"\[train\] rendezvous must be HOST:PORT"):
            loads_config(BASE + f"[train]\nnodes = 2\nrendezvous = {bad}\n")
    ok = loads_config(BASE + '[train]\nnodes = 2\nrendezvous = "10.0.0.1:29500"\n')
    assert ok.engine_settings().launch == LaunchSettings(1, 2, "10.0.0.1:29500")
    # Where a step is computed, not what: a resumed run may change them.
    assert {"train.processes", "train.nodes", "train.rendezvous"} <= set(RESUMABLE_KEYS)


def test_launcher_command_one_machine_and_several(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    one = launcher_command(spec, LaunchSettings(processes=3))
    assert one[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert one[3:] == [
        "--nproc_per_node",
        "3",
        "--standalone",  # a free port of its own: two runs side by side never clash
        "--max_restarts",
        "0",
        "-m",
        "ssd_tui.engine.train_launch",
        str(spec),
    ]
    many = launcher_command(spec, LaunchSettings(2, 4, "head.example:29400"), node_rank=3)
    flags = many[3 : many.index("-m", 3)]
    assert flags == [
        "--nproc_per_node",
        "2",
        "--nnodes",
        "4",
        "--node_rank",
        "3",
        "--master_addr",
        "head.example",
        "--master_port",
        "29400",
        "--max_restarts",
        "0",
    ]


def test_engines_give_a_launched_trainer_only_for_several_processes(tmp_path: Path) -> None:
    from ssd_tui.engine.base import EngineSettings

    hf = EngineChoice("hf", "test")
    one = Engines(EngineSettings(), str(tmp_path), hf).trainer()
    assert not isinstance(one, LaunchedTrainer)
    launch = LaunchSettings(processes=2)
    two = Engines(EngineSettings(launch=launch), str(tmp_path), hf).trainer()
    assert isinstance(two, LaunchedTrainer) and two.launch == launch
    assert two.describe() == "torchrun, 2 processes"


def test_spec_carries_the_initial_adapter(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.json",
        "m",
        LoraSettings(),
        TrainSettings(),
        [("p", "c", True)],
        tmp_path / "round-002",
        init_adapter=tmp_path / "round-001",
    )
    data = json.loads(spec.read_text())
    assert data["init_adapter"] == str(tmp_path / "round-001")
    assert data["progress"] == str(tmp_path / "round-002.progress.jsonl")


def test_progress_lines_are_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    assert _new_records(f, 0) == ([], 0)  # not written yet
    f.write_text('{"step": 1, "total": 4}\n{"step": 2, "to')  # rank 0 mid-write
    recs, off = _new_records(f, 0)
    assert [r["step"] for r in recs] == [1] and off == len('{"step": 1, "total": 4}\n')
    with open(f, "a") as out:
        out.write('tal": 4}\n')
    recs, off2 = _new_records(f, off)
    assert [r["step"] for r in recs] == [2] and off2 == f.stat().st_size


TORCHRUN_REPORT = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
======================================================
ssd_tui.engine.train_launch FAILED
------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 9922)  (SIGTERM)
------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 9923)  (SIGKILL)
======================================================
"""


def test_failure_line_names_the_rank_that_failed_first(tmp_path: Path) -> None:
    log = tmp_path / "l.log"
    log.write_text(TORCHRUN_REPORT)
    assert failure_line(1, log) == "rank 1 ended with signal 9; torchrun ended the others"
    log.write_text("Traceback ...\nRuntimeError: boom\n")
    assert failure_line(1, log) == "RuntimeError: boom"
    assert failure_line(-9, tmp_path / "none.log") == "the launcher ended with signal 9"


# ---- real launches (slow) ---------------------------------------------------------------------


def _demo_config(folder: Path, processes: int) -> Path:
    """The demo, cut to one small round: 32 training prompts, 8 eval problems, no baseline;
    two forward passes per optimiser step, so both ranks compute in every step."""
    data = tomllib.loads((ROOT / "examples" / "demo.toml").read_text())
    data["run"].update(dir="run", rounds=1, threads=2)
    data["model"]["path"] = str(DEMO_MODEL)
    demo = ROOT / "assets" / "demo"
    data["data"].update(
        train_prompts=str(demo / "train_prompts.jsonl"),
        benchmark=str(demo / "eval.jsonl"),
        max_train_prompts=32,
        max_eval_problems=8,
    )
    data["eval"].update(samples_per_problem=2, k=[1], baseline_temperatures=[])
    data["train"].update(batch_size=4, grad_accum=2, processes=processes)
    return write_toml(folder / "demo.toml", data)


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_adapters_close(got: dict, want: dict) -> None:
    import torch

    assert got.keys() == want.keys()
    for k in want:
        # Adam moves each weight by about lr per step whatever the gradient's size, so
        # 1e-4 is 1 % of one step at lr 1e-2 (10 % at the demo's 1e-3): far below what a
        # missing or doubled rank's share would change, far above the float rounding of
        # summing two ranks' gradients in another order (measured ~1e-7).
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-4, msg=k)


def _one_process(cfg, rnd: int) -> tuple[dict, list[dict]]:
    """Round ``rnd``'s adapter trained again in this process, on the same inputs."""
    from ssd_tui.engine.hf import HFTrainer
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore

    store = RunStore.open(cfg.db_path, readonly=True)
    pipe = Pipeline(cfg, store)
    pipe._load_problems(None)
    examples, _ = pipe.train_examples(rnd)
    base, init = pipe._train_start(rnd)
    s = cfg.engine_settings()
    trainer = HFTrainer(base, s.lora, s.train, s.dtype, s.device)
    out = cfg.run_dir.parent / f"one-{rnd}"
    trainer.train(examples, out, init_adapter=Path(init) if init else None)
    store.close()
    return _adapter(out), trainer.history


@pytest.mark.slow
def test_a_demo_round_with_two_processes_matches_one_process(tmp_path: Path) -> None:
    config = _demo_config(tmp_path, processes=2)
    r = run_cli(config)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = load_config(config)
    c = sqlite3.connect(cfg.db_path)
    assert {s for (s,) in c.execute("SELECT status FROM stages")} == {"done"}
    events = [m for (m,) in c.execute("SELECT message FROM events WHERE stage='train'")]
    assert "round 1: training with torchrun, 2 processes" in events
    log = c.execute("SELECT step, loss, lr FROM train_log WHERE round=1 ORDER BY step").fetchall()
    # the stage's progress as one process leaves it: every optimiser step done
    progress = c.execute("SELECT done, total FROM stages WHERE round=1 AND stage='train'")
    assert progress.fetchone() == (4, 4)
    c.close()

    want, history = _one_process(cfg, 1)
    _assert_adapters_close(_adapter(cfg.run_dir / "adapters" / "round-001"), want)
    assert [s for s, _, _ in log] == [h["step"] for h in history] == [1, 2, 3, 4]
    for (_, loss, lr), h in zip(log, history, strict=True):
        assert loss == pytest.approx(h["loss"], rel=1e-5) and lr == pytest.approx(h["lr"])
    # only the adapter and the launcher's log stay beside it
    names = sorted(p.name for p in (cfg.run_dir / "adapters").iterdir())
    assert names == ["round-001", "round-001.launch.log"]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["continue", "fresh", "merge"])
def test_every_adapter_policy_trains_under_torchrun(tmp_path, tiny_model_dir, policy) -> None:
    write_problems(tmp_path, n_train=8)
    config = write_config(
        tmp_path,
        tiny_model_dir,
        rounds=2,
        train__processes=2,
        train__grad_accum=2,
        rounds__adapter=policy,
    )
    r = run_cli(config)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = load_config(config)
    for rnd in (1, 2):
        want, _ = _one_process(cfg, rnd)
        _assert_adapters_close(_adapter(cfg.run_dir / "adapters" / f"round-{rnd:03d}"), want)
    if policy == "merge":  # round 2 trained on the merged copy of round 1's model
        assert (cfg.run_dir / "merged" / "round-001" / "config.json").is_file()


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process under it, from /proc (parents first)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += kids.get(p, [])
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_steps(db: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until round 1's train stage has finished a step (stage progress > 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            row = c.execute(
                "SELECT status, done FROM stages WHERE round=1 AND stage='train'"
            ).fetchone()
            c.close()
        except sqlite3.Error:
            row = None
        if row and row[0] == "running" and row[1] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the train stage never got a step done")


def _project(folder: Path, model: Path) -> Path:
    write_problems(folder, n_train=24)
    # 6 epochs of 12 steps: long enough to be caught between its first and last step.
    return write_config(folder, model, train__processes=2, train__grad_accum=2, train__epochs=6)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = _project(folder, tiny_model_dir)
    r = run_cli(config)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = load_config(config)
    return snapshot(cfg.db_path), _adapter(cfg.run_dir / "adapters" / "round-001")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["a rank", "the run (kill -9)", "the run (Ctrl-C)"])
def test_a_kill_mid_stage_then_rerun_ends_like_an_uninterrupted_run(
    tmp_path, tiny_model_dir, uninterrupted, target
) -> None:
    import torch

    config = _project(tmp_path, tiny_model_dir)
    db = load_config(config).db_path
    proc = run_cli(config, wait=False)
    _wait_for_steps(db, proc)
    tree = _descendants(proc.pid)
    ranks = [p for p in tree if "-m ssd_tui.engine.train_launch" in _cmdline(p)]
    ranks = [p for p in ranks if "torch.distributed.run" not in _cmdline(p)]
    assert len(ranks) == 2, [_cmdline(p) for p in tree]
    t0 = time.monotonic()
    if target == "a rank":
        os.kill(ranks[1], signal.SIGKILL)
    elif target == "the run (kill -9)":
        proc.send_signal(signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)  # nothing hangs
    expected = {"a rank": 2, "the run (kill -9)": -9, "the run (Ctrl-C)": 130}[target]
    assert proc.returncode == expected, err[-3000:]
    if target == "a rank":
        assert "training failed: rank " in err and "torchrun ended the others" in err
    # the launcher and the other rank end too, within seconds
    while any(_alive(p) for p in tree) and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    assert not [_cmdline(p) for p in tree if _alive(p)]
    status = {"a rank": "failed", "the run (kill -9)": "running", "the run (Ctrl-C)": "stopped"}
    c = sqlite3.connect(db)
    got = c.execute("SELECT status FROM stages WHERE round=1 AND stage='train'").fetchone()[0]
    c.close()
    assert got == status[target]

    r = run_cli(config)
    assert r.returncode == 0, r.stderr[-3000:]
    want_snapshot, want_adapter = uninterrupted
    assert snapshot(db) == want_snapshot  # the same samples, statistics, verdicts, metrics
    got_adapter = _adapter(db.parent / "adapters" / "round-001")
    assert all(torch.equal(got_adapter[k], want_adapter[k]) for k in want_adapter)
