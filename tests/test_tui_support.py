"""Shared fixtures and helpers of the app's tests (test_tui.py, test_tui_snapshots.py)."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fixtures.synthetic import NOW_TS, build_run

from ssd_tui.tui.app import SSDApp

SIZE = (140, 45)


@pytest.fixture
def anyio_backend():
    return "asyncio"


EXAMPLE = """\
# an example config, as in examples/
[run]
name = "demo"
rounds = 3

[model]
path = "models/tiny"

[data]
train_prompts = "data/train.jsonl"
benchmark = "data/bench.jsonl"

[sampling]
temperature = 1.6
top_k = 20
top_p = 0.8

[eval]
samples_per_problem = 4
k = [1, 4]
"""


@pytest.fixture(scope="session")
def template_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template")
    build_run(root / "runs" / "demo-run")
    build_run(
        root / "runs" / "other-run",
        name="other-run",
        rounds_done=1,
        running_round=False,
        warnings=False,
    )
    return root / "runs"


@pytest.fixture
def ws(tmp_path, template_run, monkeypatch) -> Path:
    """A workspace (the current directory): runs/ with two runs, examples/, a model folder."""
    shutil.copytree(template_run, tmp_path / "runs")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "demo.toml").write_text(EXAMPLE)
    (tmp_path / "examples" / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "examples" / "data").mkdir()
    for f in ("train.jsonl", "bench.jsonl"):
        (tmp_path / "examples" / "data" / f).write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_app(ws: Path, **kw) -> SSDApp:
    kw.setdefault("clock", lambda: NOW_TS)
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("examples_dir", ws / "examples")
    return SSDApp(Path("runs"), **kw)


async def until(pilot, cond, timeout: float = 10.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


@contextmanager
def fake_engine(run_dir: Path, pid: int = 4242):
    """Hold the run's lock as a live engine would (flock + pid), without running one."""
    fd = os.open(run_dir / "run.db.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(pid).encode(), 0)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def text_of(widget) -> str:
    """The plain text a Static shows (str, rich Text or any rich renderable)."""
    from rich.console import Console

    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=300, record=True, file=open(os.devnull, "w"))
    console.print(content)
    return console.export_text()


def screen_name(app) -> str:
    """The current screen's class name, once it is composed and mounted."""
    screen = app.screen
    from textual.screen import ModalScreen

    if not screen.is_mounted or not (screen.query("Footer") or isinstance(screen, ModalScreen)):
        return "(mounting)"
    return type(screen).__name__


BRAILLE = range(0x2801, 0x2900)  # the braille cells with at least one dot


def chart_lines(widget) -> list[str]:
    """What a chart shows, as plain lines: a plotext widget's picture as rendered (the
    overlay's, built in its worker)."""
    picture = getattr(widget, "_picture", None)
    if picture is not None:
        return ["".join(seg.text for seg in strip) for strip in picture]
    return widget.render().plain.split("\n")


def marks_on_ticks(lines: list[str], glyph: str) -> list[tuple[int, int]]:
    """For each x tick (┬) of each plot's axis line: the number of `glyph` marks in the
    tick's column of that plot's data area, as (column, marks)."""
    out = []
    for r, line in enumerate(lines):
        if "└" not in line or "┬" not in line:
            continue
        top = r - 1
        left = line.index("└")
        while top > 0 and lines[top][left : left + 1] != "┌":
            top -= 1
        for c, ch in enumerate(line):
            if ch == "┬":
                out.append((c, sum(lines[y][c : c + 1] == glyph for y in range(top + 1, r))))
    return out


def has_braille(lines: list[str]) -> bool:
    return any(ord(ch) in BRAILLE for line in lines for ch in line)
