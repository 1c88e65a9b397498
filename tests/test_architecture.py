"""Import contracts between the packages (checked on the source, with `ast`).

1. Only `ssd_tui/tui/` imports textual (Harlequin-style): the engine, the CLI and the
   libraries load without it, and `ssd-tui run` never pays for a UI.
2. The UI never runs engine code in its own process: `ssd_tui/tui/` does not import
   the pipeline, the engines, the sandbox or the evaluator. It reads the store and
   starts `ssd-tui run` as a separate process.
3. The engine imports nothing above it (it reads `EngineSettings`, never the config), and
   the pipeline none of its internals (it gets its engines from `engine.choose.Engines`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ssd_tui"
UI_FORBIDDEN = ("ssd_tui.runs.pipeline", "ssd_tui.engine", "ssd_tui.evaluation.sandbox", "ssd_tui.evaluation.check")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every module a file imports (relative imports resolved to absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{a.name}" for a in node.names)
    return out


def _is(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def _files(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_the_tui_package_imports_textual():
    ui = PKG / "tui"
    offenders = [
        f"{p.relative_to(PKG.parent)} imports {name}"
        for p in _files(PKG)
        if ui not in p.parents
        for name in sorted(imports_of(p))
        if _is(name, "textual") or _is(name, "textual_plotext")
    ]
    assert not offenders, "textual outside ssd_tui/tui/:\n" + "\n".join(offenders)


def test_the_tui_does_not_import_engine_code():
    offenders = [
        f"{p.relative_to(PKG.parent)} imports {name}"
        for p in _files(PKG / "tui")
        for name in sorted(imports_of(p))
        if any(_is(name, bad) for bad in UI_FORBIDDEN)
    ]
    assert not offenders, "the UI imports engine code:\n" + "\n".join(offenders)


def test_the_engine_imports_nothing_above_it():
    offenders = [
        f"{p.relative_to(PKG.parent)} imports {name}"
        for p in _files(PKG / "engine")
        for name in sorted(imports_of(p))
        if _is(name, "ssd_tui") and not (_is(name, "ssd_tui.engine") or _is(name, "ssd_tui.errors"))
    ]
    assert not offenders, "the engine imports from above it:\n" + "\n".join(offenders)


def test_the_pipeline_imports_no_engine_internals():
    names = imports_of(PKG / "runs" / "pipeline.py")
    internal = ("ssd_tui.engine.hf", "ssd_tui.engine.vllm", "ssd_tui.engine.truncation")
    assert not sorted(n for n in names if any(_is(n, m) for m in internal))


def test_the_checker_sees_relative_and_aliased_imports(tmp_path):
    """The rules would catch `from ..pipeline import X` and `import textual.app as t`."""
    fake = tmp_path / "probe.py"
    fake.write_text(
        "from ..pipeline import Pipeline\nimport textual.app as t\nfrom . import data\n"
    )
    names = imports_of(fake, module="ssd_tui.tui.probe")
    assert "ssd_tui.runs.pipeline" in names and "textual.app" in names and "ssd_tui.tui.data" in names


def test_cli_and_store_load_without_textual():
    """Importing the CLI (and what `ssd-tui run` imports first) loads no textual module."""
    code = (
        "import sys, ssd_tui.cli, ssd_tui.store.run_store, ssd_tui.config, ssd_tui.tui.data, ssd_tui.tui.process;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
