"""benchmarks/gpu_check.py in its CPU dry run, so the GPU check cannot rot before a GPU is lent.

The dry run executes every step the GPU run does (transformers sampling and one LoRA step,
vLLM with the adapter where vLLM is installed, one `ssd-tui run` round) on the demo model;
a comparison made to fail must fail the script.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SMALL = ["--dry-run", "--prompts", "2", "--max-new-tokens", "8"]

pytestmark = pytest.mark.timeout(600)


def _module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", mod)  # its dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.engine  # the whole check on the demo model: the engine tier (CI runs it)
def test_the_dry_run_prints_the_table_and_passes(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, "--run-problems", "2", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("\nstage ") :]
    assert "seconds  tokens/s  peak GiB  free GiB  check" in table
    rows = {line[:34].strip(): line[34:].split() for line in table.splitlines()[2:] if line}
    assert rows["transformers: sample"][4] == "pass"
    assert rows["transformers: train one LoRA step"][4] == "pass"
    assert rows["one round, 2 problems"][4] == "pass"
    assert "6 of 6 stages done" in table
    assert rows["vLLM: sample with the adapter"][4] in ("pass", "skipped")
    assert rows["memory handed back"][4] == "skipped"  # no GPU here
    assert "all checks passed" in r.stdout
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("broken", ["loss", "stats"])
def test_a_failed_comparison_exits_non_zero(
    broken: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each comparison, fed a wrong number, marks its row FAIL and the script exits 1."""
    mod = _module(monkeypatch)
    if broken == "loss":
        real = mod.manual_loss
        monkeypatch.setattr(mod, "manual_loss", lambda *a: (real(*a)[0] + 0.5, real(*a)[1]))
        row = "transformers: train one LoRA step"
    else:
        import ssd_tui.analysis.probe as probe

        real = probe.score_token_ids

        def off(*a, **kw):  # the teacher-forced pass, one log-prob off by 0.01
            out = real(*a, **kw)
            out[0]["logprobs"] = out[0]["logprobs"].copy()
            out[0]["logprobs"][0] += 0.01
            return out

        monkeypatch.setattr(probe, "score_token_ids", off)
        row = "transformers: sample"
    assert mod.main([*SMALL, "--run-problems", "0"]) == 1
    out = capsys.readouterr().out
    table = out[out.index("\nstage ") :]
    [line] = [x for x in table.splitlines() if x.startswith(row)]
    assert "FAIL" in line.split()
    assert out.rstrip().endswith("FAILED")
