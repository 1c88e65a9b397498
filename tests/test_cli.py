"""Bad input at the command line: one line on stderr, exit 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runkit import write_config, write_problems

from ssd_tui.store.run_store import RunStore
from ssd_tui.store.schema import SCHEMA_VERSION


def ssd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssd_tui", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    write_problems(tmp_path)
    return tmp_path, write_config(tmp_path, tiny_model_dir)


def test_help_teaches():
    r = ssd("--help")
    assert r.returncode == 0
    for word in ("T_train", "pass@k", "ssd-tui demo", "ssd-tui run", "resume"):
        assert word in r.stdout
    r = ssd("options")
    assert "[sampling]" in r.stdout and "temperature" in r.stdout and "T_train" in r.stdout
    # Every subcommand's --help says what it does and shows a call.
    for command in (
        "run",
        "demo",
        "check",
        "options",
        "open",
        "review",
        "export",
        "report",
        "models",
    ):
        r = ssd(command, "--help")
        assert r.returncode == 0, command
        assert "examples:\n  ssd-tui " in r.stdout, command
        assert len(r.stdout.split("examples:")[0].splitlines()) > 6, command


def test_missing_config(tmp_path):
    assert_one_line_error(ssd("run", str(tmp_path / "nope.toml")), "config file not found")


def test_toml_syntax_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[run]\nname = \n")
    assert_one_line_error(ssd("run", str(f)), "c.toml", "TOML syntax error", "line 2")


def test_unknown_key_and_out_of_range(project):
    folder, config = project
    text = config.read_text()
    config.write_text(text.replace("[lora]", "[lora]\nrank = 4"))
    assert_one_line_error(ssd("run", str(config)), "[lora] rank: unknown key", "run.toml:")
    config.write_text(text.replace("top_k = 50", "top_k = -2"))
    assert_one_line_error(ssd("run", str(config)), "[sampling] top_k must be ≥ 0")


def test_model_path_that_does_not_exist(tmp_path):
    write_problems(tmp_path)
    config = write_config(tmp_path, tmp_path / "no-such-model")
    assert_one_line_error(ssd("run", str(config)), "model path does not exist", "no-such-model")
    assert_one_line_error(ssd("check", str(config)), "model path does not exist")


def test_prompt_file_with_a_broken_line(project):
    folder, config = project
    lines = (folder / "train.jsonl").read_text().splitlines()
    lines[4] = lines[4][:-3]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert_one_line_error(ssd("run", str(config)), "train.jsonl:5")


def test_eval_problem_without_tests(project):
    folder, config = project
    rows = [json.loads(x) for x in (folder / "eval.jsonl").read_text().splitlines()]
    del rows[1]["tests"]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_one_line_error(ssd("run", str(config)), "neg")


def test_db_from_a_newer_schema(project):
    folder, config = project
    from ssd_tui.config import load_config

    db = load_config(config).db_path
    s = RunStore.open(db, create=True)
    s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    s.close()
    assert_one_line_error(ssd("run", str(config)), "newer ssd-tui")


def test_a_count_below_its_least_is_an_error_not_done(project, capsys, monkeypatch):
    from ssd_tui import cli

    folder, config = project
    monkeypatch.setattr(cli, "DEMO_CONFIG", config)
    for args, flag in (
        (["run", str(config), "--rounds", "-1"], "--rounds must be ≥ 0 (got -1)"),
        (["run", str(config), "--stages", "0"], "--stages must be ≥ 1 (got 0)"),
        (["run", str(config), "--threads", "-2"], "--threads must be ≥ 0 (got -2)"),
        (["demo", "--fresh", "--rounds", "-1"], "--rounds must be ≥ 0"),
    ):
        capsys.readouterr()
        assert cli.main(args) == 2, args
        out = capsys.readouterr()
        assert out.err.startswith(f"error: {flag}") and len(out.err.splitlines()) == 1
        assert "done" not in out.out + out.err
    assert not (folder / "run").exists()  # nothing ran, nothing was set aside


def test_check_reports_what_a_run_would_use(project):
    folder, config = project
    r = ssd("check", str(config))
    assert r.returncode == 0, r.stderr
    assert "12 training prompts" in r.stdout and "3 eval problems" in r.stdout


def test_check_says_when_vllm_would_refuse_the_temperature(project, tiny_model_dir):
    """vLLM stops at T = 2; check says so before anything runs."""
    folder, _ = project
    config = write_config(folder, tiny_model_dir, run__engine="vllm", eval__temperature=2.5)
    r = ssd("check", str(config))
    assert_one_line_error(r, "[eval] temperature = 2.5 is above 2, the most vLLM accepts")


def test_demo_fresh_sets_the_old_run_aside(project, monkeypatch, capsys):
    # The demo, pointed at a tiny config: one stage, then its config changes (as a newer
    # checkout's demo.toml would): the error names the way out; --fresh keeps the old run.
    from ssd_tui import cli
    from ssd_tui.runs.runner import RunLock

    folder, config = project
    monkeypatch.setattr(cli, "DEMO_CONFIG", config)
    assert cli.main(["demo", "--stages", "1", "--threads", "1"]) == 0
    run_dir = folder / "run"
    samples = RunStore.open(run_dir / "run.db").conn.execute("SELECT COUNT(*) FROM samples")
    n_samples = samples.fetchone()[0]
    assert n_samples > 0
    config.write_text(config.read_text().replace("temperature = 1.0", "temperature = 0.9", 1))
    capsys.readouterr()
    assert cli.main(["demo", "--stages", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the config differs") and "ssd-tui demo --fresh" in err
    lock = RunLock(run_dir / "run.db")  # an engine on the old run: --fresh must not move it
    lock.acquire()
    try:
        assert cli.main(["demo", "--fresh", "--stages", "1", "--threads", "1"]) == 2
        assert "stop it first" in capsys.readouterr().err
    finally:
        lock.release()
    assert cli.main(["demo", "--fresh", "--stages", "1", "--threads", "1"]) == 0
    kept = [p for p in folder.iterdir() if p.name.startswith("run.") and p.is_dir()]
    assert len(kept) == 1 and f"kept in {kept[0]}" in capsys.readouterr().out
    old = RunStore.open(kept[0] / "run.db", readonly=True)
    assert old.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == n_samples
    assert old.run_info()["name"] == kept[0].name  # listed apart from the new run
    assert (run_dir / "run.db").exists()  # the new run started in the old one's place


def test_the_run_folders_config_runs_from_there(tmp_path, tiny_model_dir, capsys):
    # A checkout-like layout, as the demo's: cfgs/run.toml names everything relative to
    # cfgs/, and the run lands in runs/t/. The copy the run keeps in runs/t/config.toml
    # must mean the same from there: check it, resume from it, then from the original.
    import os

    from ssd_tui import cli

    (tmp_path / "cfgs").mkdir()
    (tmp_path / "data").mkdir()
    write_problems(tmp_path / "data")
    (tmp_path / "models").mkdir()
    os.symlink(tiny_model_dir, tmp_path / "models" / "tiny")
    config = write_config(tmp_path / "cfgs", tmp_path / "models" / "tiny")
    text = config.read_text()
    for old, new in (
        (f'"{tmp_path}/models/tiny"', '"../models/tiny"  # the model'),
        ('"train.jsonl"', '"../data/train.jsonl"'),
        ('"eval.jsonl"', '"../data/eval.jsonl"'),
        ('dir = "run"', 'dir = "../runs/t"'),
    ):
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)

    assert cli.main(["run", str(config), "--stages", "1", "--threads", "1"]) == 0
    saved = tmp_path / "runs" / "t" / "config.toml"
    copy = saved.read_text()

    capsys.readouterr()
    assert cli.main(["check", str(saved)]) == 0, capsys.readouterr().err
    assert "12 training prompts" in capsys.readouterr().out
    db = tmp_path / "runs" / "t" / "run.db"

    def stages_done() -> int:
        store = RunStore.open(db, readonly=True)
        try:
            return store.conn.execute("SELECT COUNT(*) FROM stages WHERE status='done'").fetchone()[
                0
            ]
        finally:
            store.close()

    assert stages_done() == 1
    assert cli.main(["run", str(saved), "--stages", "1", "--threads", "1"]) == 0, (
        capsys.readouterr().err
    )
    assert stages_done() == 2  # the same run went on: no "config differs", no new run
    assert cli.main(["run", str(config), "--stages", "1", "--threads", "1"]) == 0, (
        capsys.readouterr().err
    )
    assert stages_done() == 3
    assert saved.read_text() == copy  # a copy already there is kept as it is
    # Relative paths stay relative (the checkout may move as a whole), now to the run folder.
    assert 'dir = "."' in copy and '"../../models/tiny"  # the model' in copy
    from ssd_tui.config import PATH_KEYS, load_config, path_of

    original, moved = load_config(config), load_config(saved)
    for section, key in PATH_KEYS:
        assert path_of(original, section, key) == path_of(moved, section, key), key


def _with_closed_stdout(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    """`ssd-tui ARGS | head` when head has already gone: our stdout is a pipe nobody reads."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "ssd_tui", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, "TMPDIR": str(tmp)},  # where a crash log would land
        )
    finally:
        os.close(write)


def assert_quiet_end(r: subprocess.CompletedProcess, tmp: Path) -> None:
    """Ended as a program whose reader went away: status 141 (128 + SIGPIPE), nothing said."""
    assert r.stderr == "" and r.returncode == 141, (r.returncode, r.stderr)
    assert not list(tmp.glob("ssd-tui-crash-*"))  # no crash log either


def test_a_closed_pipe_ends_quietly(tmp_path):
    assert_quiet_end(_with_closed_stdout("options", tmp=tmp_path), tmp_path)


def test_every_command_that_takes_a_run_db_takes_its_folder(tmp_path, monkeypatch, capsys):
    # `open runs/demo` was refused ("is a folder, not a run database") while `diff runs/demo`
    # took it: one rule for every command, a run folder is its run.db.
    from fixtures.synthetic import build_run

    from ssd_tui import cli
    from ssd_tui.tui import app

    folder = tmp_path / "demo"
    build_run(folder, running_round=False)
    opened: list[dict] = []
    monkeypatch.setattr(app, "run_app", lambda **kw: opened.append(kw))
    monkeypatch.chdir(tmp_path)
    for args in (
        ["open", "demo"],
        ["review", "demo"],
        ["report", "demo"],
        ["notes", "demo"],
        ["note", "demo", "a note"],
        ["tag", "demo", "good"],
        ["search", "demo", "return"],
        ["export", "demo", "--round", "1", "--out", "r1.db"],
        ["export", "demo", "--tensorboard", "tb"],
        ["diff", "demo", "demo/run.db"],
    ):
        assert cli.main(args) == 0, (args, capsys.readouterr().err)
    assert opened[0]["open_db"].resolve() == folder / "run.db"
    assert opened[0]["runs_dir"] == tmp_path
    assert [p.resolve() for p in opened[1]["review"]] == [folder / "run.db"]
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    for command in ("open", "report", "notes", "diff"):
        args = [command, "empty"] + (["demo"] if command == "diff" else [])
        assert cli.main(args) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: empty is a folder without a run database (run.db)")
        assert err.count("\n") == 1


def test_a_run_refused_before_it_started_leaves_nothing_behind(tmp_path, tiny_model_dir):
    # `model path does not exist` left runs/x/ holding an empty run.db.lock.
    write_problems(tmp_path)
    config = write_config(tmp_path, tmp_path / "no-such-model")
    config.write_text(config.read_text().replace('dir = "run"', 'dir = "runs/x"'))
    assert_one_line_error(ssd("run", str(config)), "model path does not exist")
    assert not (tmp_path / "runs").exists()  # nor the runs/ folder it made for it
    # A folder that was there before is never removed, nor is anything in it.
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "mine.txt").write_text("keep me")
    assert_one_line_error(ssd("run", str(config)), "model path does not exist")
    assert (tmp_path / "runs" / "x" / "mine.txt").read_text() == "keep me"
    # Refused later, by the problem files, after the run DB was opened: nothing either.
    other = tmp_path / "other"
    other.mkdir()
    write_problems(other)
    (other / "eval.jsonl").write_text("")
    config = write_config(other, tiny_model_dir)
    assert_one_line_error(ssd("run", str(config)), "no problems (the file is empty)")
    assert not (other / "run").exists()


def test_a_rerun_says_only_what_it_shows(tmp_path, tiny_model_dir, capsys):
    # `ssd-tui demo` again after `run … --rounds 5` re-showed rounds 0-3 (the demo config's
    # rounds) while its verdict cited "best round 5". A rerun shows every round the run
    # holds; `--rounds K` shows rounds 0..K, and its verdict speaks of those alone.
    import re

    from ssd_tui import cli
    from ssd_tui.config import load_config

    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=1, eval__baseline_temperatures=[0.5])
    assert cli.main(["run", str(config), "--rounds", "2", "--threads", "1"]) == 0
    store = RunStore.open(tmp_path / "run" / "run.db")
    t_eval = load_config(config).eval.temperature
    store.set_metrics(1, "eval", t_eval, {"all": {"pass@1": 0.9}})
    store.set_metrics(2, "eval", t_eval, {"all": {"pass@1": 1.0}})  # the best round: the last
    store.close()

    def rerun(*extra: str) -> tuple[list[str], str]:
        capsys.readouterr()
        assert cli.main(["run", str(config), "--threads", "1", *extra]) == 0
        text = capsys.readouterr().err
        tables = re.findall(r"^\s*round (\d+)\s*$", text, re.MULTILINE)  # round_end's titles
        return tables, text

    shown, text = rerun()
    assert shown == ["0", "1", "2"] and "best round 2 pass@1 1.000" in text, text
    shown, text = rerun("--rounds", "1")
    assert shown == ["0", "1"] and "best round 1 pass@1 0.900" in text, text


def test_run_and_check_say_which_sandbox_runs_the_programs(project, capsys):
    # The app and the report showed the sandbox mode; `run`, `demo` and `check` never did.
    from ssd_tui import cli

    folder, config = project
    assert cli.main(["run", str(config), "--stages", "1", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    store = RunStore.open(folder / "run" / "run.db", readonly=True)
    [label] = store.sandbox_labels()
    store.close()
    lines = [ln for ln in err.splitlines() if ln.startswith("sandbox: ")]
    assert lines == [f"sandbox: {label} (strict)"], err
    assert err.index("sandbox: ") < err.index("round 0")  # in the header, before any work
    assert cli.main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"ok: sandbox: {label} (strict)" in out.splitlines(), out


def test_a_run_of_round_0_alone_needs_no_training_prompts(tmp_path, tiny_model_dir, monkeypatch):
    # `rounds = 0` demanded the LeetCode data for training prompts it never uses.
    monkeypatch.setenv("SSD_TUI_LEETCODE", str(tmp_path / "no-leetcode-here"))
    write_problems(tmp_path)
    config = write_config(tmp_path, tiny_model_dir, rounds=0, data__train_prompts="leetcode:train")
    r = ssd("check", str(config))
    assert r.returncode == 0 and "no training prompts needed (rounds = 0)" in r.stdout, r.stderr
    r = ssd("run", str(config), "--stages", "1", "--threads", "1")
    assert r.returncode == 0, r.stderr
    store = RunStore.open(tmp_path / "run" / "run.db", readonly=True)
    assert list(json.loads(store.meta("problems"))) == ["eval"]  # the record: no train set
    store.close()
    # A run taken past round 0 needs them, and says so.
    r = ssd("run", str(config), "--rounds", "1", "--threads", "1")
    assert_one_line_error(r, "no-leetcode-here")


def _in_a_terminal(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with a terminal (a pty) as its stdout and stderr, as a user does:
    progress bars are live then. Returns its exit status and all it showed."""
    import os
    import re
    import threading

    main, side = os.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=side, stderr=side)
    os.close(side)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the last holder of the terminal is gone
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    code = proc.wait(timeout=300)
    reader.join(timeout=30)
    os.close(main)
    shown = b"".join(chunks).decode(errors="replace")
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours and cursor moves


_NOISY_ENGINE = """
import logging, os, subprocess, sys, warnings
from ssd_tui import cli
from ssd_tui.engine import choose

real = choose.choose_engine

def noisy(*args, **kwargs):  # what starting vLLM prints, in every way it prints it
    print("noise: print to stdout")
    print("noise: print to stderr", file=sys.stderr)
    warnings.warn("noise: a FutureWarning", FutureWarning)
    logging.getLogger("vllm").warning("noise: a logged WARNING")
    os.write(2, b"noise: written to fd 2 (a C library, Triton)\\n")
    subprocess.run([sys.executable, "-c", "import sys; print('noise: the engine core process', file=sys.stderr)"])
    return real(*args, **kwargs)

from ssd_tui.runs import pipeline

real_check = pipeline.check_samples

def noisy_stage(*args, **kwargs):  # vLLM starts, and configures its logger, mid-stage
    late = logging.getLogger("late")
    late.addHandler(logging.StreamHandler(sys.stdout))
    late.warning("noise: a logger set up while a progress bar shows")
    print("noise: a print while a progress bar shows", file=sys.stderr)
    return real_check(*args, **kwargs)

choose.choose_engine = noisy
pipeline.check_samples = noisy_stage
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_the_engines_own_output_goes_to_the_run_folder(project, verbose):
    # A vLLM run flooded the terminal with vLLM's warnings, Triton's notices and
    # FutureWarnings before the first progress bar.
    folder, config = project
    args = ["run", str(config), "--stages", "1", "--threads", "1"] + ["--verbose"] * verbose
    code, terminal = _in_a_terminal([sys.executable, "-c", _NOISY_ENGINE, *args])
    assert code == 0, terminal
    assert "round 0 evaluate: done" in terminal and "sandbox: " in terminal
    log = (folder / "run" / "engine.log").read_text() if not verbose else ""
    noises = ("to stdout", "to stderr", "a FutureWarning", "a logged", "fd 2", "engine core")
    for noise in (*noises, "a logger set up while", "a print while"):
        assert noise in (terminal if verbose else log), (noise, terminal, log)
    if not verbose:
        assert "noise" not in terminal, terminal
    if not verbose:  # said once, at the end, where to find it
        assert "the engine's own output is in " in terminal and "engine.log" in terminal
