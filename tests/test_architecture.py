"""Import contracts between the packages (checked on the source, with `ast`).

1. Imports point down only: each package imports only from the layers below it
   (``LAYERS``, docs/architecture.md), and no module imports itself back through others
   (no cycle). Imports inside functions and under ``if TYPE_CHECKING:`` count: they are
   the real graph.
2. Only `ssd_tui/tui/` imports textual (Harlequin-style): the engine, the CLI and the
   libraries load without it, and `ssd-tui run` never pays for a UI.
3. The UI never runs engine code in its own process: `ssd_tui/tui/` does not import
   the pipeline, the engines, the sandbox or the evaluator. It reads the store and
   starts `ssd-tui run` as a separate process.
3. The engine imports nothing above it (it reads `EngineSettings`, never the config), and
   the pipeline none of its internals (it gets its engines from `engine.choose.Engines`).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ssd_tui"
UI_FORBIDDEN = (
    "ssd_tui.runs.pipeline",
    "ssd_tui.engine",
    "ssd_tui.evaluation.sandbox",
    "ssd_tui.evaluation.sandbox_server",
    "ssd_tui.evaluation.check",
)
#: The layers, bottom to top: a module may import its own layer and the ones below.
LAYERS = (
    ("ssd_tui", "ssd_tui.errors"),  # the package's face (__version__) and the one error
    ("ssd_tui.engine",),  # computes: samplers, the trainer, truncation
    ("ssd_tui.models",),  # real models, prepared offline
    ("ssd_tui.problems",),  # feeds: problem sets, prompts, answer -> program
    ("ssd_tui.config",),
    ("ssd_tui.store",),  # owns every SQL line
    ("ssd_tui.evaluation",),  # judges: the sandbox, verdicts, pass@k, suspect samples
    ("ssd_tui.demo",),  # the demo's problem family and model
    ("ssd_tui.analysis",),  # reads rounds
    ("ssd_tui.runs",),  # drives: the runner, the pipeline, sweeps, the record, diffs
    ("ssd_tui.outputs",),  # leaves: reports, exports, TensorBoard
    ("ssd_tui.tui",),  # shows
    ("ssd_tui.cli", "ssd_tui.__main__"),  # parses and dispatches
)


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


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in _files(PKG)}


def _graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (a name resolved to its longest module)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in modules:
                return ".".join(parts[:n])
        return None

    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        targets = {owner(n) for n in imports_of(path, mod) if _is(n, "ssd_tui")}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph


def _layer(mod: str) -> int:
    best = -1, -1  # (prefix length, layer)
    for i, tops in enumerate(LAYERS):
        for top in tops:
            if _is(mod, top) and len(top) > best[0]:
                best = len(top), i
    assert best[1] >= 0, f"{mod} is in no layer of LAYERS: add it"
    return best[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    found = cycles(_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_point_down_the_layers():
    offenders = [
        f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
        for mod, deps in sorted(_graph().items())
        for dep in sorted(deps)
        if _layer(dep) > _layer(mod)
    ]
    assert not offenders, "imports that point up:\n" + "\n".join(offenders)


def test_the_engine_imports_only_itself_and_errors():
    offenders = [
        f"{mod} imports {dep}"
        for mod, deps in sorted(_graph().items())
        if _is(mod, "ssd_tui.engine")
        for dep in sorted(deps)
        if not (_is(dep, "ssd_tui.engine") or dep in ("ssd_tui", "ssd_tui.errors"))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_tui_never_imports_the_cli():
    offenders = [
        f"{mod} imports {dep}"
        for mod, deps in sorted(_graph().items())
        if _is(mod, "ssd_tui.tui")
        for dep in deps
        if _is(dep, "ssd_tui.cli")
    ]
    assert not offenders, "\n".join(offenders)


def test_the_graph_checks_would_catch_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert _layer("ssd_tui.store.run_store") < _layer("ssd_tui.analysis.rounds")
    assert _layer("ssd_tui.engine.vllm") < _layer("ssd_tui.config")


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
    assert "ssd_tui.pipeline" in names and "textual.app" in names and "ssd_tui.tui.data" in names


def test_cli_and_store_load_without_textual():
    """Importing the CLI (and what `ssd-tui run` imports first) loads no textual module."""
    code = (
        "import sys, ssd_tui.cli, ssd_tui.store.run_store, ssd_tui.store.reads, ssd_tui.config, ssd_tui.tui.data, ssd_tui.tui.process;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- SQL lives in ssd_tui/store/ only ---------------------------------------------------------

#: A string that starts (after whitespace) like an SQL statement: a keyword with the word
#: that makes it SQL rather than prose ("SELECT … FROM", "INSERT INTO", "PRAGMA name", …),
#: or like a clause kept apart to be pasted into one (upper case only: prose has "from").
SQL_START = re.compile(
    r"""\s*(?:
        SELECT\b.*?(?:\bFROM\b|\{\})
      | (?-i:FROM\s+\w+(?:\s+\w+)?\s+(?:JOIN|LEFT|WHERE|ORDER|GROUP)\b)
      | (?-i:WHERE\s+[\w.]+\s*(?:=|<|>|!=|IN\b|IS\b|LIKE\b))
      | (?-i:ORDER\s+BY\s+[\w.]+)
      | (?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\b
      | UPDATE\s+\w+\s+SET\b
      | DELETE\s+FROM\b
      | CREATE\s+(?:UNIQUE\s+|TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b
      | (?:ALTER|DROP)\s+(?:TABLE|INDEX|VIEW|TRIGGER)\b
      | PRAGMA\s+[\w.]+
      | WITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^)]*\)\s*)?AS\s*\(
      | (?:ATTACH|DETACH)\s+DATABASE\b
      # upper case only: "rollback" alone is also a word ([control] on_collapse's value)
      | (?-i:(?:BEGIN(?:\s+(?:IMMEDIATE|DEFERRED|EXCLUSIVE))?|COMMIT|ROLLBACK|VACUUM)\s*$)
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)

#: Modules whose SQL is on its way into the store, by another change of the same re-layout:
#: the app's RunReader and its queries move from tui/data.py to store/reads.py, and the
#: workbench's training-log query becomes `RunStore.train_log()`.


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string in a module that looks like an SQL statement. Docstrings
    and other bare string statements are prose and skipped; an f-string is read with ``{}``
    for each replacement field."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip:
                continue
            text = node.value
        else:
            continue
        if SQL_START.match(text):
            found.append((node.lineno, text.strip().splitlines()[0][:60]))
    return sorted(found)


def test_sql_lives_only_in_the_store():
    store = PKG / "store"
    offenders = [
        f"{p.relative_to(PKG.parent)}:{line}: {text}"
        for p in _files(PKG)
        if store not in p.parents
        for line, text in sql_strings(p)
    ]
    assert not offenders, "SQL outside ssd_tui/store/:\n" + "\n".join(offenders)


def test_the_sql_checker_catches_a_planted_statement(tmp_path):
    """The rule would catch SQL in plain, implicitly joined, f- and lower-case strings, and
    leaves docstrings and prose alone (so the test above cannot pass by seeing nothing)."""
    fake = tmp_path / "planted.py"
    fake.write_text(
        '"""Select the rows from a run; delete from the list what you like."""\n'
        "def rows(conn, table):\n"
        '    """SELECT * FROM a docstring is prose."""\n'
        '    conn.execute("SELECT name "\n'
        '                 "FROM runs WHERE id = 1")\n'
        '    conn.execute(f"INSERT INTO {table} VALUES (?)", (1,))\n'
        '    conn.execute(f"SELECT {table}.id {FROM} WHERE x = 1")\n'
        '    FROM = "FROM samples s JOIN problems p ON p.id = s.problem_id"\n'
        '    conn.execute("  pragma table_info(samples)")\n'
        '    conn.execute("""\n        update stages SET done = 1""")\n'
        '    return "Update the settings, then select a model from the list"\n'
    )
    assert [line for line, _ in sql_strings(fake)] == [4, 6, 7, 8, 9, 10]
