"""A newcomer's path, end to end: `ssd-tui demo`, `ssd-tui open runs/demo/run.db`,
`r` for one more round (the real app starting the real engine process from the run folder's
config), `ssd-tui report --out r.html`.

The demo is the real one (assets/demo-model, examples/demo.toml) made smaller: fewer
prompts, problems and samples, one SSD round; every other key is the shipped file's. It
runs in a checkout-like folder (examples/, assets/ beside runs/) so that the demo's
relative paths are exercised exactly as in a clone. README's install line is not testable
in process; `.ci/run` installs that way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import test_tui_support as support
from test_tui_support import SIZE, screen_name, until

from ssd_tui.store.run_store import RunStore

anyio_backend = support.anyio_backend
# The engine tier: the demo model trained twice (once by `demo`, once by the engine the app
# starts), ~12 s on 2 cores. The fast tier keeps one real engine started by the app
# (test_tui_engine.py) and runs every step's own checks (test_cli, test_tui, test_report).
pytestmark = [pytest.mark.anyio, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[1]

# The shipped demo's lines and what this test runs instead (each must be in the file).
SMALLER = {
    "rounds = 3": "rounds = 1",
    "max_train_prompts = 256": "max_train_prompts = 16",
    "max_eval_problems = 60": "max_eval_problems = 3",
    "baseline_temperatures = [0.2, 0.4, 0.6, 1.0]": "baseline_temperatures = [0.2]",
    "samples_per_problem = 5": "samples_per_problem = 2",
    "k = [1, 5]": "k = [1, 2]",
    "max_new_tokens = 96": "max_new_tokens = 48",
}


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (ROOT / "assets" / "demo-model" / "model.safetensors").exists():
        pytest.skip("assets/demo-model not built yet")
    from ssd_tui import cli

    text = (ROOT / "examples" / "demo.toml").read_text(encoding="utf-8")
    for old, new in SMALLER.items():
        assert old in text, f"examples/demo.toml changed: {old!r} is gone"
        text = text.replace(old, new)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "demo.toml").write_text(text, encoding="utf-8")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    monkeypatch.setattr(cli, "DEMO_CONFIG", tmp_path / "examples" / "demo.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _rounds_done(db: Path) -> list[int]:
    store = RunStore.open(db, readonly=True)
    try:
        return [r["round"] for r in store.rounds() if r["status"] == "done"]
    finally:
        store.close()


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the report's charts need matplotlib"
)
async def test_demo_then_one_more_round_from_the_app_then_a_report(
    checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ssd_tui import cli
    from ssd_tui.tui import app as app_module

    # 1. `ssd-tui demo`
    assert cli.main(["demo", "--threads", "1"]) == 0, capsys.readouterr().err
    db = Path("runs/demo/run.db")
    assert _rounds_done(db) == [0, 1]
    assert "done." in capsys.readouterr().err

    # 2. `ssd-tui open runs/demo/run.db`: the app exactly as the command starts it
    opened: dict = {}
    monkeypatch.setattr(app_module, "run_app", lambda **kw: opened.update(kw))
    assert cli.main(["open", str(db)]) == 0
    app = app_module.SSDApp(Path(opened.pop("runs_dir")), poll_interval=0.2, **opened)

    # 3. `r`: the engine runs from the run folder's own config, one more round
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", timeout=30)
        dash = app.screen
        await until(pilot, lambda: dash.check_action("next_round", ()) is True, what="r enabled")
        await pilot.press("r")
        command = dash.engine.command
        assert command[4] == str((checkout / "runs" / "demo" / "config.toml").resolve())
        assert command[command.index("--rounds") + 1] == "2"

        def ended() -> str:
            for n in app._notifications:
                if (n.title or "").startswith("Engine") and (
                    "finished" in n.message or "failed" in (n.title or "") + n.message
                ):
                    return n.message
            return ""

        await until(pilot, ended, timeout=400, what="the engine to exit")
        log = (checkout / "runs" / "demo" / "engine.log").read_text()
        assert "finished" in ended(), log[-3000:]
    assert _rounds_done(db) == [0, 1, 2]

    # 4. `ssd-tui report runs/demo/run.db --out r.html`
    capsys.readouterr()
    assert cli.main(["report", str(db), "--out", "r.html"]) == 0
    assert "wrote r.html" in capsys.readouterr().out
    html = (checkout / "r.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "SSD run report: demo" in html
