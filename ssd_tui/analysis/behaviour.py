"""Behavioural diversity: what a round's programs *do* on their problem's tests.

Two samples of a problem behave the same when, run against the problem's test inputs, every
call the tests make to the candidate returns the same result (or raises the same exception
type) and leaves its arguments the same. No canonical solution is needed (LeetCode problems
have none): each distinct program runs once in the sandbox, with the problem's own tests,
and the function the tests receive as ``candidate`` is wrapped by a recorder that logs each
call. The tests' ``assert`` statements are turned into records (pass or fail, by line) and
each statement of ``check`` runs on after another one raised, so a wrong program is still
called on every input: its behaviour is its outputs on all of them, not just up to its first
wrong answer. The log is emitted in a ``finally``; a timeout, a crash (a signal, the memory
limit) and a program that ends without emitting ("no output") are classes of their own.

What counts as the same output (``canon`` below, inside the recorded program):

- numbers by value, as ``==`` sees them: ``1``, ``1.0`` and ``True`` are one output; floats
  are compared to 10 significant digits (``0.1 + 0.2`` and ``0.3`` are the same answer),
  ``-0.0`` is ``0``, every NaN is one value;
- sets and mappings by content, whatever their order (``dict`` and ``Counter`` with the same
  items are one output); sequences in order, and a list is not a tuple (``==`` says so);
- objects whose class keeps the default ``repr`` (``<Node object at 0x…>``) by class name
  and attributes, recursively (a LeetCode ``ListNode`` chain is compared node by node), never
  by address; other reprs with the address removed;
- generators and iterators by type only: consuming one would change what the tests see.

Strings hash differently in each sandbox server (``python -I``), so a program that returns
``list(set(words))`` may be seen as two behaviours across servers; ``random`` is seeded (0)
before the program runs so that seeded-looking programs behave the same every time.

A class is ``rec:`` + the first 16 hex digits of the SHA-256 of the whole log (the log can be
long; the hash is computed inside the sandbox), or ``timeout``, ``crash``, ``no output``.
Results are cached in the store (table ``behaviours``): a program already seen in any round
of the run, with the same text for the same problem, is not run again.
"""

from __future__ import annotations

import ast
import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ssd_tui.store.run_store import RunStore

if TYPE_CHECKING:  # running programs is recording.py's: the app reads classes without it
    from ssd_tui.evaluation.sandbox import ExecResult

#: Bump when the recorded program changes what it records: cached classes of another
#: version are not reused (they would not compare with new ones).
RECORDER_VERSION = 1
TIMEOUT, CRASH, NO_OUTPUT = "timeout", "crash", "no output"
DETAIL_CHARS = 160  # of the first calls' results, kept to show what a class does

BEHAVIOUR_METRICS = ("behaviours", "behaviour_entropy", "behaviour_share", "behaviour_programs")

# The recorder, run in the sandbox. It is plain text (no import of ours reaches the
# sandbox), and everything of it lives in one function's locals, so the candidate's globals
# see no new names. Placeholders: the candidate's code, the (rewritten) tests, the entry
# point, the nonce of this run.
_RECORDER = r"""
def __ssd_record(code, tests, entry, nonce):
    import hashlib, io, math, os, random, re, sys, types
    write, real_out = os.write, sys.stdout
    digest, first, state = hashlib.sha256(), [], {"calls": 0}
    addr = re.compile(r" at 0x[0-9a-fA-F]+")

    def canon(v, depth=0, seen=()):
        if depth > 200:
            return "…"
        if v is None:
            return "None"
        if isinstance(v, (bool, int)):
            try:
                return "n" + repr(int(v))
            except ValueError:  # an int too long for repr
                return "n" + hex(v)
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            if v.is_integer() and abs(v) < 2 ** 53:
                return "n" + repr(int(v))
            return "n" + format(v, ".10g")
        if isinstance(v, complex):
            return "c(" + canon(v.real) + "," + canon(v.imag) + ")"
        if isinstance(v, (str, bytes)):
            return repr(v)
        if id(v) in seen:
            return "<cycle>"
        seen = seen + (id(v),)
        if isinstance(v, dict):
            items = sorted(canon(k, depth + 1, seen) + ":" + canon(x, depth + 1, seen) for k, x in v.items())
            return "{" + ",".join(items) + "}"
        if isinstance(v, (set, frozenset)):
            return "set{" + ",".join(sorted(canon(x, depth + 1, seen) for x in v)) + "}"
        if isinstance(v, list):
            return "[" + ",".join(canon(x, depth + 1, seen) for x in v) + "]"
        if isinstance(v, tuple):
            return "(" + ",".join(canon(x, depth + 1, seen) for x in v) + ")"
        if isinstance(v, (types.GeneratorType, map, filter, zip, range, enumerate, reversed)) or (
            hasattr(v, "__next__") and hasattr(v, "__iter__")
        ):
            return "<" + type(v).__name__ + ">"
        if type(v).__repr__ is object.__repr__ and hasattr(v, "__dict__"):
            attrs = sorted(k + "=" + canon(x, depth + 1, seen) for k, x in vars(v).items())
            return type(v).__name__ + "(" + ",".join(attrs) + ")"
        try:
            return addr.sub("", repr(v))
        except BaseException as e:
            return "<" + type(v).__name__ + " repr raised " + type(e).__name__ + ">"

    def log(entry, shown=None):
        digest.update(entry.encode("utf-8", "backslashreplace") + b"\n")
        if len(first) < 8:
            first.append((entry if shown is None else shown)[:80])

    def recorded(fn):
        def call(*args, **kwargs):
            state["calls"] += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                shown = "raise " + type(e).__name__
                log(shown + " " + canon((args, kwargs)), shown)
                raise
            shown = canon(result)
            log(shown + " " + canon((args, kwargs)), shown)  # arguments too: in-place results
            return result
        return call

    def assertion(ok, line):
        if not ok:
            log("assert-failed " + str(line))

    def stmt_raised(e, line):
        log("test-raised " + type(e).__name__ + " " + str(line))

    class Sink(io.TextIOBase):
        def write(self, s):
            return len(s)

    random.seed(0)
    g = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    end = "end ok"
    try:
        sys.stdout = Sink()  # the candidate's prints neither flood the output nor mix in
        try:
            exec(compile(code, "<candidate>", "exec"), g)
        except BaseException as e:
            end = "load-raised " + type(e).__name__
        else:
            g["__ssd_assert"], g["__ssd_raised"] = assertion, stmt_raised
            exec(compile(tests, "<tests>", "exec"), g)
            if entry not in g:
                end = "no entry point"
            else:
                g["check"](recorded(g[entry]))
    except BaseException as e:
        end = "raised " + type(e).__name__
    finally:
        sys.stdout = real_out
        log(end)
        line = "\n" + " ".join([nonce, digest.hexdigest(), str(state["calls"]), repr(first)]) + "\n"
        write(1, line.encode("utf-8", "backslashreplace"))
"""


@dataclass(frozen=True)
class Behaviour:
    """One program's behaviour on its problem's tests."""

    cls: str  # rec:<hash> | timeout | crash | no output
    detail: str  # what it does, shortened (the first calls' results), or why it has no log
    duration_s: float


# ---- the recorded program ---------------------------------------------------------------------


class _Rewrite(ast.NodeTransformer):
    """``assert X`` → ``__ssd_assert(X, line)``; each statement of ``check``'s body in a
    ``try`` that records an exception and goes on with the next statement."""

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        call = ast.Call(
            ast.Name("__ssd_assert", ast.Load()),
            [node.test, ast.Constant(node.lineno)],
            [],
        )
        return ast.copy_location(ast.Expr(call), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        if node.name == "check":
            node.body = [_guarded(stmt) for stmt in node.body]
        return node


def _guarded(stmt: ast.stmt) -> ast.stmt:
    # A statement that binds no name for later ones can fail alone; others too: a later
    # statement that needs the name fails in turn, the same way for every program.
    handler = ast.ExceptHandler(
        ast.Name("Exception", ast.Load()),
        "__ssd_e",
        [
            ast.Expr(
                ast.Call(
                    ast.Name("__ssd_raised", ast.Load()),
                    [ast.Name("__ssd_e", ast.Load()), ast.Constant(stmt.lineno)],
                    [],
                )
            )
        ],
    )
    return ast.copy_location(ast.Try([stmt], [handler], [], []), stmt)


def rewrite_tests(tests: str) -> str:
    """The tests with asserts recorded instead of raised; unparsable tests as they are."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return tests
    tree = _Rewrite().visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def recorder_program(code: str, tests: str, entry_point: str, nonce: str) -> str:
    """The program the sandbox runs for one (code, tests rewritten by ``rewrite_tests``):
    the recorder, then its call."""
    args = ", ".join(repr(a) for a in (code, tests, entry_point, nonce))
    return f"{_RECORDER}\n__ssd_record({args})\n"


def read_result(r: ExecResult, nonce: str) -> Behaviour:
    """The class of one run: its emitted log's hash, else timeout / crash / no output."""
    if r.status == "timeout":
        return Behaviour(TIMEOUT, r.message, r.duration_s)
    for line in reversed(r.stdout.splitlines()):
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == nonce:
            return Behaviour(f"rec:{parts[1][:16]}", _detail(parts[3]), r.duration_s)
    if r.returncode is not None and r.returncode < 0 or "memory limit" in r.message:
        return Behaviour(CRASH, r.message, r.duration_s)
    return Behaviour(NO_OUTPUT, r.message or "ended without a record", r.duration_s)


def _detail(first: str) -> str:
    try:
        entries = ast.literal_eval(first)
        text = " | ".join(str(e) for e in entries)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        text = first
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "backslashreplace")).hexdigest()


# ---- metrics ----------------------------------------------------------------------------------


def entropy(classes: Iterable[str]) -> float:
    """Shannon entropy (nats) of the class frequencies: 0 for one behaviour, ln n for n
    samples that all behave differently."""
    counts = Counter(classes)
    n = sum(counts.values())
    # 0.0 minus the sum: one behaviour is 0.0, not -0.0 (shown as '-0.00')
    return 0.0 - sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0


def problem_behaviours(classes: Sequence[str]) -> dict[str, float]:
    """One problem's numbers: distinct behaviours and their entropy."""
    return {"behaviours": float(len(set(classes))), "behaviour_entropy": entropy(classes)}


def behaviour_metrics(
    by_problem: dict[str, list[tuple[str, str]]],
) -> dict[str, float | None]:
    """A round's numbers from each problem's samples as (class, program text):

    - ``behaviours``: mean distinct behaviours per problem;
    - ``behaviour_entropy``: mean per-problem entropy (nats) of its behaviour classes;
    - ``behaviour_share``: distinct behaviours, summed, over samples (problems with ≥ 2
      samples; the behavioural twin of ``unique_share``);
    - ``behaviour_programs``: distinct program texts per distinct behaviour (how many ways of
      writing one behaviour the round has; 1 = every program text behaves differently).
    """
    groups = [g for g in by_problem.values() if g]
    if not groups:
        return dict.fromkeys(BEHAVIOUR_METRICS)
    per = [problem_behaviours([c for c, _ in g]) for g in groups]
    multi = [g for g in groups if len(g) >= 2]
    n_multi = sum(len(g) for g in multi)
    n_classes = sum(len({c for c, _ in g}) for g in groups)
    n_programs = sum(len({p for _, p in g}) for g in groups)
    return {
        "behaviours": sum(p["behaviours"] for p in per) / len(per),
        "behaviour_entropy": sum(p["behaviour_entropy"] for p in per) / len(per),
        "behaviour_share": (
            sum(len({c for c, _ in g}) for g in multi) / n_multi if n_multi else None
        ),
        "behaviour_programs": n_programs / n_classes if n_classes else None,
    }


def metrics_by_scope(
    rows: Sequence[dict[str, Any]], classes: dict[int, str]
) -> dict[str, dict[str, float | None]]:
    """``behaviour_metrics`` for scope 'all' and each difficulty, from sample rows (``id``,
    ``problem``, ``difficulty``, ``code``) and their classes (sample id → class)."""
    groups: dict[str | None, dict[str, list[tuple[str, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        cls = classes.get(r["id"])
        if cls is None:
            continue
        item = (cls, r.get("code") or "")
        groups["all"][r["problem"]].append(item)
        if r.get("difficulty"):
            groups[r["difficulty"]][r["problem"]].append(item)
    return {scope: behaviour_metrics(g) for scope, g in groups.items() if scope}


def round_metrics(
    store: RunStore, rnd: int, temperature: float
) -> dict[str, dict[str, float | None]]:
    """The round's behaviour metrics by scope, from the classes stored (empty: none)."""
    classes = {
        sid: b["class"] for sid, b in store.behaviours(rnd, temperature, RECORDER_VERSION).items()
    }
    if not classes:
        return {}
    return metrics_by_scope(store.samples(rnd, "eval", temperature), classes)
