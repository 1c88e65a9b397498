"""The demo problem family: small Python function tasks, generated from keys.

A task is identified by its **key**: ``(template, *parameters)``, e.g.
``("list", "sum", "even", "mul:3")`` is "Return the sum of 3 times each of the even
numbers in nums." Four templates:

- ``list``   (a list of ints): filter, map, aggregate (sum, count, list, max, min, product)
- ``range``  (an int n): the same over the numbers 1..n
- ``digits`` (a positive int): the same over its decimal digits
- ``string`` (a str): count / keep / remove / mask / find the first or last matching char

Every task can be solved in several styles, which give the model **fork positions**
(a for loop vs a comprehension vs a builtin; ``while`` vs ``for``; ``x * 3`` vs
``3 * x``; variable names), while syntax and the statement leave one right token at
most other places (**lock positions**: colons, brackets, ``return``, the parameter
name, the constants copied from the statement, indentation). Each task also has
slightly wrong variants (``>=`` for ``>``, a constant off by one, a return inside
the loop, ``range(1, n)`` for ``range(1, n + 1)``...): the pretraining corpus mixes a
share of them in, so the model learns a distractor tail at lock positions, and the
unit tests are chosen so that they catch them.

Splits are by key, and by meaning: keys whose canonical solutions agree on a fixed
input bank (e.g. "max of the absolute values of the positives" and "max of the
positives") form one group, and a group lies wholly in one split. The held-out
evaluation set, the SSD training prompts and the pretraining corpus are disjoint
sets of groups, so no evaluation task appears, even reworded, in what the model saw.

Everything is deterministic from the seed (``random.Random`` seeded with strings,
never ``hash()``), so the shipped files can be regenerated and compared:
``python -m ssd_tui.demo.tasks --out assets/demo --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = ("list", "range", "digits", "string")
DIFFICULTIES = ("easy", "medium", "hard")
DEFAULT_SEED = 0

# Held-out evaluation problems per template and difficulty (50 per difficulty, 150 in all).
EVAL_QUOTA: dict[str, dict[str, int]] = {
    "list": {"easy": 25, "medium": 25, "hard": 25},
    "range": {"easy": 10, "medium": 10, "hard": 10},
    "digits": {"easy": 8, "medium": 8, "hard": 8},
    "string": {"easy": 7, "medium": 7, "hard": 7},
}
# SSD training prompts per template (3000 in all); the rest of each template is pretraining data.
TRAIN_QUOTA: dict[str, int] = {"list": 2000, "range": 600, "digits": 300, "string": 100}

Key = tuple[str, ...]


# --------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Piece:
    """A filter or a map: equivalent spellings (forks) and slightly wrong ones (distractors).

    Code is written over the placeholder ``{v}`` (the loop variable); ``code[0]`` is the
    canonical spelling.
    """

    code: tuple[str, ...]
    wrong: tuple[str, ...]
    words: str  # the phrase in the statement
    tag: str  # the fragment in the function name
    prefix: bool = False  # an adjective before the noun ("the even numbers")


def _k(spec: str) -> int:
    return int(spec.partition(":")[2] or 0)


def _num_tag(k: int) -> str:
    return f"neg{-k}" if k < 0 else str(k)


def filter_piece(spec: str) -> Piece:
    """The number filter named by ``spec`` ("even", "gt:3", "div:4", ...)."""
    kind, k = spec.partition(":")[0], _k(spec)
    if kind == "even":
        return Piece(("{v} % 2 == 0",), ("{v} % 2 == 1", "{v} // 2 == 0"), "even", "even", True)
    if kind == "odd":
        return Piece(
            ("{v} % 2 == 1", "{v} % 2 != 0"), ("{v} % 2 == 0", "{v} // 2 == 1"), "odd", "odd", True
        )
    if kind == "pos":
        return Piece(("{v} > 0", "0 < {v}"), ("{v} >= 0", "{v} > 1"), "positive", "positive", True)
    if kind == "neg":
        return Piece(("{v} < 0", "0 > {v}"), ("{v} <= 0", "{v} < -1"), "negative", "negative", True)
    if kind == "nonzero":
        return Piece(("{v} != 0",), ("{v} > 0", "{v} == 0"), "nonzero", "nonzero", True)
    if kind == "div":
        return Piece(
            (f"{{v}} % {k} == 0",),
            (f"{{v}} % {k} == 1", f"{{v}} % {k + 1} == 0", f"{{v}} // {k} == 0"),
            f"divisible by {k}",
            f"multiples_of_{k}",
        )
    if kind == "ndiv":
        return Piece(
            (f"{{v}} % {k} != 0",),
            (f"{{v}} % {k} == 0", f"{{v}} % {k} == 1", f"{{v}} % {k + 1} != 0"),
            f"not divisible by {k}",
            f"non_multiples_of_{k}",
        )
    if kind == "gt":
        return Piece(
            (f"{{v}} > {k}", f"{k} < {{v}}"),
            (f"{{v}} >= {k}", f"{{v}} > {k + 1}", f"{{v}} < {k}"),
            f"greater than {k}",
            f"above_{_num_tag(k)}",
        )
    if kind == "lt":
        return Piece(
            (f"{{v}} < {k}", f"{k} > {{v}}"),
            (f"{{v}} <= {k}", f"{{v}} < {k - 1}", f"{{v}} > {k}"),
            f"less than {k}",
            f"below_{_num_tag(k)}",
        )
    if kind == "eq":
        return Piece(
            (f"{{v}} == {k}",),
            (f"{{v}} != {k}", f"{{v}} == {k + 1}"),
            f"equal to {k}",
            f"equal_to_{k}",
        )
    raise ValueError(f"unknown filter {spec!r}")


def map_piece(spec: str) -> Piece:
    """The number map named by ``spec`` ("sq", "mul:3", "mod:4", ...)."""
    kind, k = spec.partition(":")[0], _k(spec)
    if kind == "sq":
        return Piece(
            ("{v} * {v}", "{v} ** 2"),
            ("{v} * 2", "{v} ** 3", "{v} + {v}"),
            "the squares of",
            "squares",
        )
    if kind == "abs":
        return Piece(("abs({v})",), ("{v}", "-{v}"), "the absolute values of", "abs")
    if kind == "neg":
        return Piece(("-{v}", "0 - {v}"), ("{v}", "{v} - 1"), "the negatives of", "negated")
    if kind == "mul":
        return Piece(
            (f"{{v}} * {k}", f"{k} * {{v}}"),
            (f"{{v}} + {k}", f"{{v}} * {k + 1}", f"{{v}} ** {k}"),
            f"{k} times each of",
            f"times{k}",
        )
    if kind == "add":
        return Piece(
            (f"{{v}} + {k}", f"{k} + {{v}}"),
            (f"{{v}} * {k}", f"{{v}} - {k}", f"{{v}} + {k + 1}"),
            f"{k} more than each of",
            f"plus{k}",
        )
    if kind == "sub":
        return Piece(
            (f"{{v}} - {k}",),
            (f"{k} - {{v}}", f"{{v}} + {k}", f"{{v}} - {k + 1}"),
            f"{k} less than each of",
            f"minus{k}",
        )
    if kind == "mod":
        return Piece(
            (f"{{v}} % {k}",),
            (f"{{v}} // {k}", f"{{v}} % {k + 1}"),
            f"the remainders modulo {k} of",
            f"mod{k}",
        )
    if kind == "fdiv":
        return Piece(
            (f"{{v}} // {k}",),
            (f"{{v}} % {k}", f"{{v}} / {k}", f"{{v}} // {k + 1}"),
            f"the floor quotients by {k} of",
            f"div{k}",
        )
    raise ValueError(f"unknown map {spec!r}")


# Plural noun tags for the prefix filters, used in function names ("sum_of_evens").
_PLURAL_TAG = {
    "even": "evens",
    "odd": "odds",
    "positive": "positives",
    "negative": "negatives",
    "nonzero": "nonzeros",
}

_CMP_KS = [*range(-5, 0), *range(1, 10)]
LIST_FILTERS = (
    ["", "even", "odd", "pos", "neg", "nonzero"]
    + [f"div:{k}" for k in range(3, 10)]
    + [f"ndiv:{k}" for k in range(3, 10)]
    + [f"gt:{k}" for k in _CMP_KS]
    + [f"lt:{k}" for k in _CMP_KS]
)
LIST_MAPS = (
    ["", "sq", "abs", "neg"]
    + [f"mul:{k}" for k in range(2, 10)]
    + [f"add:{k}" for k in range(1, 10)]
    + [f"sub:{k}" for k in range(1, 10)]
    + [f"mod:{k}" for k in range(2, 10)]
    + [f"fdiv:{k}" for k in range(2, 10)]
)
LIST_AGGS = ("sum", "count", "list", "max", "min", "prod")
# 1..n is never negative: no "positive" / "negative" filters, no abs.
RANGE_FILTERS = (
    ["", "even", "odd"]
    + [f"div:{k}" for k in range(3, 10)]
    + [f"ndiv:{k}" for k in range(3, 10)]
    + [f"gt:{k}" for k in range(1, 10)]
    + [f"lt:{k}" for k in range(2, 10)]
)
RANGE_MAPS = [m for m in LIST_MAPS if m != "abs"]
RANGE_AGGS = ("sum", "count", "list", "prod")
DIGIT_FILTERS = (
    ["", "even", "odd"]
    + [f"gt:{k}" for k in range(1, 9)]
    + [f"lt:{k}" for k in range(1, 9)]
    + [f"eq:{k}" for k in range(0, 10)]
)
DIGIT_MAPS = ["", "sq"] + [f"mul:{k}" for k in range(2, 6)] + [f"add:{k}" for k in range(1, 6)]
DIGIT_AGGS = ("sum", "count", "prod", "max", "min")
CHAR_PREDS = ["vowel", "upper", "lower", "digit", "space", "alpha"] + [
    f"eq:{c}" for c in "abcdefghijklmnopqrstuvwxyz"
]
STRING_OPS = ("count", "keep", "remove", "mask", "first", "last")

_AGG_NAME = {
    "sum": "sum",
    "count": "count",
    "list": "list",
    "max": "max",
    "min": "min",
    "prod": "product",
}


@dataclass(frozen=True)
class CharPred:
    """A character predicate: its spellings and its distractors."""

    code: tuple[str, ...]
    wrong: tuple[str, ...]
    one: str  # "lowercase vowel"
    many: str  # "lowercase vowels"
    tag_one: str  # "vowel"
    tag_many: str  # "vowels"
    literal: str = ""  # the single character, for str methods (count, replace, find)


def char_pred(spec: str) -> CharPred:
    """The character predicate named by ``spec`` ("vowel", "upper", "eq:a", ...)."""
    if spec == "vowel":
        return CharPred(
            ('{v} in "aeiou"', "{v} in 'aeiou'"),
            ('{v} in "aeio"', '{v} in "aeiouy"', '{v} in "AEIOU"'),
            "lowercase vowel",
            "lowercase vowels",
            "vowel",
            "vowels",
        )
    if spec in ("upper", "lower"):
        other = "lower" if spec == "upper" else "upper"
        return CharPred(
            (f"{{v}}.is{spec}()",),
            (f"{{v}}.is{other}()", "{v}.isalpha()"),
            f"{spec}case letter",
            f"{spec}case letters",
            spec,
            spec + "s",
        )
    if spec == "digit":
        return CharPred(
            ("{v}.isdigit()",),
            ("{v}.isalpha()", "{v}.isalnum()"),
            # Not "digits": the digits template already has count_digits(n).
            "digit",
            "digits",
            "digit_char",
            "digit_chars",
        )
    if spec == "space":
        return CharPred(
            ('{v} == " "', "{v}.isspace()"),
            ('{v} == ""', "{v}.isalpha()"),
            "space",
            "spaces",
            "space",
            "spaces",
            " ",
        )
    if spec == "alpha":
        return CharPred(
            ("{v}.isalpha()",),
            ("{v}.isalnum()", "{v}.islower()"),
            "letter",
            "letters",
            "letter",
            "letters",
        )
    if spec.startswith("eq:"):
        c = spec[3:]
        nxt = chr(ord(c) + 1) if c != "z" else "y"
        return CharPred(
            (f'{{v}} == "{c}"', f"{{v}} == '{c}'"),
            (f'{{v}} == "{nxt}"', f'{{v}} == "{c.upper()}"'),
            f'letter "{c}"',
            f'copies of the letter "{c}"',
            f"letter_{c}",
            f"letter_{c}",
            c,
        )
    raise ValueError(f"unknown character predicate {spec!r}")


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One problem of the family. ``key`` is its identity; everything else derives from it."""

    key: Key
    entry_point: str
    param: str  # the argument's name in the shipped prompt
    statement: str
    difficulty: str

    @property
    def template(self) -> str:
        return self.key[0]

    def prompt(self, param: str | None = None) -> str:
        """The code prefix the model continues: signature and docstring."""
        p = param or self.param
        statement = self.statement.replace("{p}", p)
        return f'def {self.entry_point}({p}):\n    """{statement}"""\n'


def all_keys(template: str) -> list[Key]:
    """Every key of a template, in a fixed order."""
    keys: list[Key] = []
    if template in ("list", "range", "digits"):
        filters, maps, aggs = {
            "list": (LIST_FILTERS, LIST_MAPS, LIST_AGGS),
            "range": (RANGE_FILTERS, RANGE_MAPS, RANGE_AGGS),
            "digits": (DIGIT_FILTERS, DIGIT_MAPS, DIGIT_AGGS),
        }[template]
        for agg in aggs:
            for f in filters:
                for m in maps:
                    if agg == "count" and m:
                        continue  # counting ignores the map
                    if template == "list" and agg == "list" and not f and not m:
                        continue  # the identity
                    if template == "range" and agg == "count" and not f:
                        continue  # "how many numbers from 1 to n": just n
                    keys.append((template, agg, f, m))
    elif template == "string":
        keys = [("string", op, pred) for op in STRING_OPS for pred in CHAR_PREDS]
    else:
        raise ValueError(f"unknown template {template!r}")
    return keys


def _difficulty(key: Key) -> str:
    # Difficulty grows with the number of parts the solution must get right: each of
    # filter and map is one, and max / min / product add the empty case or a
    # non-zero start. Strings: counting < building a string < indices.
    if key[0] == "string":
        return {"count": "easy", "keep": "medium", "remove": "medium", "mask": "medium"}.get(
            key[1], "hard"
        )
    _, agg, f, m = key
    score = bool(f) + bool(m) + (agg in ("max", "min", "prod"))
    return DIFFICULTIES[min(max(score - 1, 0), 2)]


_PARAMS = {
    "list": ("nums", "values", "xs", "numbers", "data", "items", "arr", "lst"),
    "range": ("n", "m", "limit", "top"),
    "digits": ("n", "num", "number", "value"),
    "string": ("s", "text", "word", "line"),
}


@cache
def make_task(key: Key) -> Task:
    """The task for ``key``. The statement holds ``{p}`` where the parameter name goes."""
    template = key[0]
    param = random.Random("param:" + "/".join(key)).choice(_PARAMS[template])
    if template == "string":
        _, op, spec = key
        cp = char_pred(spec)
        statement, name = {
            "count": (f"Return the number of {cp.many} in {{p}}.", f"count_{cp.tag_many}"),
            "keep": (
                f"Return a string of only the {cp.many} in {{p}}, in order.",
                f"keep_{cp.tag_many}",
            ),
            "remove": (f"Return {{p}} with every {cp.one} removed.", f"remove_{cp.tag_many}"),
            "mask": (f'Return {{p}} with every {cp.one} replaced by "*".', f"mask_{cp.tag_many}"),
            "first": (
                f"Return the index of the first {cp.one} in {{p}}, or -1 if there is none.",
                f"first_{cp.tag_one}_index",
            ),
            "last": (
                f"Return the index of the last {cp.one} in {{p}}, or -1 if there is none.",
                f"last_{cp.tag_one}_index",
            ),
        }[op]
        return Task(key, name, param, statement, _difficulty(key))

    _, agg, f, m = key
    fp = filter_piece(f) if f else None
    mp = map_piece(m) if m else None
    noun, where = {
        "list": ("numbers", "in {p}"),
        "range": ("numbers", "from 1 to {p}"),
        "digits": ("digits", "of {p}"),
    }[template]
    if fp is None:
        src = f"the {noun} {where}"
    elif fp.prefix:
        src = f"the {fp.words} {noun} {where}"
    else:
        src = f"the {noun} {where} that are {fp.words}"
    items = f"{mp.words} {src}" if mp else src
    statement = {
        "sum": f"Return the sum of {items}.",
        "count": f"Return the count of {src}.",
        "list": f"Return a list of {items}, in order.",
        "max": f"Return the largest of {items}, or None if there are none.",
        "min": f"Return the smallest of {items}, or None if there are none.",
        "prod": f"Return the product of {items}, or 1 if there are none.",
    }[agg]

    parts = [_AGG_NAME[agg]]
    if mp:
        parts.append(mp.tag)
    if template == "digits":
        if fp is None:
            ftag = "digits"
        elif fp.prefix:
            ftag = f"{fp.tag}_digits"
        else:
            ftag = f"digits_{fp.tag}"
        parts += [ftag] if agg == "count" else ["of", ftag]
    elif fp:
        ftag = _PLURAL_TAG.get(fp.tag, fp.tag)
        parts += [ftag] if agg == "count" else ["of", ftag]
    elif not mp:
        parts.append("all")
    if template == "range":
        parts.append("upto")
    return Task(key, "_".join(parts), param, statement, _difficulty(key))


# --------------------------------------------------------------------------- solutions


@dataclass(frozen=True)
class Variant:
    """How to write one solution: a style, variable names, spellings, and an optional bug.

    ``bug`` is None for a correct solution; else ("pred" | "map", index into the
    piece's distractors) or (structural mutation, 0).
    """

    style: str
    names: tuple[tuple[str, str], ...]
    pred_alt: int = 0
    map_alt: int = 0
    aug: bool = True  # "total += y" rather than "total = total + y"
    bug: tuple[str, int] | None = None


def styles(key: Key) -> list[str]:
    """The solution styles of a task; the first is the canonical one."""
    template = key[0]
    if template == "string":
        op, spec = key[1], key[2]
        lit = spec.startswith("eq:") or spec == "space"
        out = {
            "count": ["loop", "gen", "len", "while"] + (["method"] if lit else []),
            "keep": ["loop", "join", "joinlist"],
            "remove": ["loop", "join", "joinlist"] + (["method"] if lit else []),
            "mask": ["loop", "join"] + (["method"] if lit else []),
            "first": ["index", "enumerate", "while"] + (["method"] if lit else []),
            "last": ["reverse", "enumerate"] + (["method"] if lit else []),
        }[op]
        return out
    _, agg, f, m = key
    loops = {
        "list": ["for", "index", "while"],
        "range": ["for", "while"],
        "digits": ["while", "for"],
    }[template]
    loops = ["loop-" + s for s in loops]
    comps = {
        "sum": ["gen", "listcomp"],
        "count": ["gen1", "len"],
        "list": ["comp"],
        "max": ["vals-if", "vals-guard", "default"],
        "min": ["vals-if", "vals-guard", "default"],
        "prod": [],
    }[agg]
    builtin: list[str] = []
    if not f and not m:
        builtin = {
            ("list", "sum"): ["builtin"],
            ("list", "count"): ["builtin"],
            ("list", "max"): ["builtin", "builtin2"],
            ("list", "min"): ["builtin", "builtin2"],
            ("range", "sum"): ["builtin", "builtin2"],
            ("range", "list"): ["builtin"],
            ("digits", "sum"): ["builtin"],
            ("digits", "count"): ["builtin"],
        }.get((template, agg), [])
    return loops + comps + builtin


def mutations(key: Key, style: str) -> list[str]:
    """The structural bugs that make sense for a style (each is a plausible slip)."""
    template = key[0]
    out: list[str] = []
    if template == "string":
        op = key[1]
        if op == "count" and style in ("loop", "while"):
            out += ["init", "early"]
        if op in ("keep", "remove") and style != "method":
            out.append("flip")
        if op == "mask" and style != "method":
            out.append("swap")
        if op in ("first", "last") and style != "method":
            out += ["off", "default"]
        return out
    agg = key[1]
    if style.startswith("loop-"):
        out.append("early")
        if agg != "list":
            out.append("init")
        if agg == "count":
            out.append("count_x")
    if agg in ("max", "min") and style != "builtin2":
        out.append("cmp")
    if template == "range" and style != "builtin2":
        out.append("bound")
    if template == "digits" and style == "loop-while":
        out.append("bound")
    return out


# Variable-name choices per role; a name is never reused for two roles.
_ROLE_NAMES = {
    "x": {
        "list": ("x", "v", "num", "n", "value", "item"),
        "range": ("i", "k", "j", "x"),
        "digits": ("d", "digit"),
    },
    "i": ("i", "j", "idx"),
    "y": ("y", "val", "cur"),
    "ch": ("ch", "c"),
    "c": ("ch", "c", "char"),
    "sum": ("total", "result", "acc", "s"),
    "count": ("count", "total", "cnt", "n"),
    "list": ("result", "out", "res", "kept"),
    "max": ("best", "largest", "result", "m"),
    "min": ("best", "smallest", "result", "m"),
    "prod": ("product", "result", "prod", "acc"),
    "str": ("result", "out", "res"),
    "vals": ("vals", "values", "found"),
    "digits": ("digits", "ds"),
}


def _pick_names(key: Key, param: str, rng: random.Random | None) -> dict[str, str]:
    """Names for every role a solution may need; the first choice when rng is None."""
    template = key[0]
    roles = ["x", "i", "y", "vals", "digits", "ch"]
    if template == "string":
        roles = ["c", "i", "str", "count"]
    else:
        roles.append(key[1])
    taken = {param}
    names = {"p": param}
    for role in roles:
        opts = _ROLE_NAMES[role]
        if isinstance(opts, dict):
            opts = opts[template]
        free = [o for o in opts if o not in taken]
        name = free[0] if rng is None else rng.choice(free)
        names[role] = name
        taken.add(name)
    if template != "string":
        names["acc"] = names[key[1]]
    return names


def canonical_variant(key: Key) -> Variant:
    """The canonical solution's variant: first style, first names, first spellings."""
    task = make_task(key)
    return Variant(styles(key)[0], tuple(sorted(_pick_names(key, task.param, None).items())))


def random_variant(key: Key, param: str, rng: random.Random, bug_rate: float = 0.0) -> Variant:
    """A random correct solution (or, with probability ``bug_rate``, a slightly wrong one)."""
    style = rng.choice(styles(key))
    names = tuple(sorted(_pick_names(key, param, rng).items()))
    bug = None
    if rng.random() < bug_rate:
        options = bug_options(key, style)
        if options:
            bug = rng.choice(options)
    return Variant(style, names, rng.randrange(8), rng.randrange(8), rng.random() < 0.7, bug)


def bug_options(key: Key, style: str) -> list[tuple[str, int]]:
    """Every slightly-wrong change that applies to a solution in ``style``."""
    out: list[tuple[str, int]] = []
    if key[0] == "string":
        # The str-method styles spell the character as a literal, not as a predicate.
        if style != "method":
            out += [("pred", j) for j in range(len(char_pred(key[2]).wrong))]
    else:
        _, _, f, m = key
        if f:
            out += [("pred", j) for j in range(len(filter_piece(f).wrong))]
        if m:
            out += [("map", j) for j in range(len(map_piece(m).wrong))]
    out += [(mut, 0) for mut in mutations(key, style)]
    return out


def render(key: Key, variant: Variant) -> str:
    """The function body (the completion after the prompt) for ``variant``."""
    names = dict(variant.names)
    if key[0] == "string":
        lines = _render_string(key, variant, names)
    else:
        lines = _render_numeric(key, variant, names)
    return "".join("    " * depth + text + "\n" for depth, text in lines)


def _spell(
    piece_code: Sequence[str],
    wrong: Sequence[str],
    alt: int,
    bug: tuple[str, int] | None,
    slot: str,
) -> str:
    if bug is not None and bug[0] == slot:
        return wrong[bug[1]]
    return piece_code[alt % len(piece_code)]


Lines = list[tuple[int, str]]


def _render_numeric(key: Key, var: Variant, nm: dict[str, str]) -> Lines:
    template, agg, f, m = key
    bug = var.bug[0] if var.bug else None
    x, p, acc, y = nm["x"], nm["p"], nm["acc"], nm["y"]
    fp = filter_piece(f) if f else None
    mp = map_piece(m) if m else None
    pred = (
        _spell(fp.code, fp.wrong, var.pred_alt, var.bug, "pred").replace("{v}", x) if fp else None
    )
    mapped = _spell(mp.code, mp.wrong, var.map_alt, var.bug, "map").replace("{v}", x) if mp else x
    style = var.style
    hi = f"{p}" if bug == "bound" else f"{p} + 1"  # range(1, n) is the classic slip
    cmp_max = (agg == "max") != (bug == "cmp")  # the comparison a max (or a buggy min) needs
    fn = "max" if cmp_max else "min"
    parts = _Numeric(template, agg, var, nm, bug, x, p, acc, y, pred, mp is not None, mapped,
                     hi, cmp_max, fn)  # fmt: skip
    if style.startswith("loop-"):
        return _numeric_loop(parts, style[5:])
    return _numeric_expression(parts, style, key)


@dataclass(frozen=True)
class _Numeric:
    """What both spellings of a numeric task share: its key, variant, names and pieces."""

    template: str
    agg: str
    var: Variant
    nm: dict[str, str]
    bug: str | None
    x: str
    p: str
    acc: str
    y: str
    pred: str | None
    has_map: bool
    mapped: str
    hi: str
    cmp_max: bool
    fn: str


def _numeric_loop(n: _Numeric, kind: str) -> Lines:
    """A loop that accumulates (kind: for, index, while)."""
    template, agg, var, nm, bug = n.template, n.agg, n.var, n.nm, n.bug
    x, p, acc, y, pred, mapped, hi, cmp_max = (
        n.x,
        n.p,
        n.acc,
        n.y,
        n.pred,
        n.mapped,
        n.hi,
        n.cmp_max,
    )
    mp = n.has_map
    out: Lines = []
    init = {"sum": "0", "count": "0", "list": "[]", "prod": "1", "max": "None", "min": "None"}[agg]
    if bug == "init":
        init = {"sum": "1", "count": "1", "prod": "0", "max": "0", "min": "0"}[agg]
    out.append((1, f"{acc} = {init}"))
    tail: Lines = []
    if template == "list":
        if kind == "for":
            out.append((1, f"for {x} in {p}:"))
        elif kind == "index":
            out += [(1, f"for {nm['i']} in range(len({p})):"), (2, f"{x} = {p}[{nm['i']}]")]
        else:
            i = nm["i"]
            out += [(1, f"{i} = 0"), (1, f"while {i} < len({p}):"), (2, f"{x} = {p}[{i}]")]
            tail = [(2, f"{i} += 1")]
    elif template == "range":
        if kind == "for":
            out.append((1, f"for {x} in range(1, {hi}):"))
        else:
            op = "<" if bug == "bound" else "<="
            out += [(1, f"{x} = 1"), (1, f"while {x} {op} {p}:")]
            tail = [(2, f"{x} += 1")]
    else:  # digits
        if kind == "while":
            lo = "9" if bug == "bound" else "0"  # drops the leading digit
            out += [(1, f"while {p} > {lo}:"), (2, f"{x} = {p} % 10")]
            tail = [(2, f"{p} //= 10")]
        else:
            out += [(1, f"for {nm['ch']} in str({p}):"), (2, f"{x} = int({nm['ch']})")]
    d = 2
    if pred:
        out.append((2, f"if {pred}:"))
        d = 3
    if agg in ("max", "min"):
        val = x
        if mp:
            out.append((d, f"{y} = {mapped}"))
            val = y
        op = ">" if cmp_max else "<"
        init_none = init == "None"
        cond = f"{acc} is None or {val} {op} {acc}" if init_none else f"{val} {op} {acc}"
        out += [(d, f"if {cond}:"), (d + 1, f"{acc} = {val}")]
    elif agg == "list":
        out.append((d, f"{acc}.append({mapped})"))
    else:
        amount = {"sum": mapped, "count": "1", "prod": mapped}[agg]
        if bug == "count_x":
            amount = x
        sym = "*" if agg == "prod" else "+"
        if var.aug:
            out.append((d, f"{acc} {sym}= {amount}"))
        else:
            # Parenthesize a compound right side: total = total + (x * 3) reads right.
            rhs = f"({amount})" if " " in amount else amount
            out.append((d, f"{acc} = {acc} {sym} {rhs}"))
    if bug == "early":
        out.append((2, f"return {acc}"))  # one indent too deep: returns after one item
    out += tail
    if bug != "early":
        out.append((1, f"return {acc}"))
    return out


def _numeric_expression(n: _Numeric, style: str, key: Key) -> Lines:
    """A comprehension, a generator or a builtin."""
    template, agg, var, nm = n.template, n.agg, n.var, n.nm
    x, p, pred, mapped, hi, fn = n.x, n.p, n.pred, n.mapped, n.hi, n.fn
    pre: Lines = []
    if template == "list":
        source = f"for {x} in {p}"
        seq = p
    elif template == "range":
        source = f"for {x} in range(1, {hi})"
        seq = f"range(1, {hi})"
    else:
        # Two spellings of "the digits of n" (a fork), chosen by the variant's map_alt.
        if var.map_alt % 2:
            pre = [(1, f"{nm['digits']} = [int({nm['ch']}) for {nm['ch']} in str({p})]")]
            source = f"for {x} in {nm['digits']}"
            seq = nm["digits"]
        else:
            source = f"for {x} in map(int, str({p}))"
            seq = f"map(int, str({p}))"
    cond = f" if {pred}" if pred else ""
    gen = f"{mapped} {source}{cond}"
    if style == "gen":
        return pre + [(1, f"return sum({gen})")]
    if style == "listcomp":
        return pre + [(1, f"return sum([{gen}])")]
    if style == "gen1":
        return pre + [(1, f"return sum(1 {source}{cond})")]
    if style == "len":
        return pre + [(1, f"return len([{x} {source}{cond}])")]
    if style == "comp":
        return pre + [(1, f"return [{gen}]")]
    if style in ("vals-if", "vals-guard", "default"):
        vals = nm["vals"]
        if style == "default":
            return pre + [(1, f"return {fn}(({gen}), default=None)")]
        out = pre + [(1, f"{vals} = [{gen}]")]
        if style == "vals-if":
            return out + [(1, f"return {fn}({vals}) if {vals} else None")]
        return out + [(1, f"if not {vals}:"), (2, "return None"), (1, f"return {fn}({vals})")]
    if style == "builtin":
        if agg == "sum":
            return [(1, f"return sum({seq})")]
        if agg == "count":
            return [(1, f"return len(str({p}))" if template == "digits" else f"return len({p})")]
        if agg == "list":
            return [(1, f"return list({seq})")]
        return [(1, f"return {fn}({p}) if {p} else None")]
    if style == "builtin2":
        if template == "range":
            return [(1, f"return {p} * ({p} + 1) // 2")]
        return [(1, f"return {fn}({p}, default=None)")]
    raise ValueError(f"unknown style {style!r} for {key}")


def _negate(expr: str) -> str:
    """The negation of a character test, spelled the way a person would write it."""
    if expr.startswith("not "):
        return expr[4:]
    if " == " in expr:
        return expr.replace(" == ", " != ")
    if " in " in expr:
        return expr.replace(" in ", " not in ")
    return "not " + expr


def _render_string(key: Key, var: Variant, nm: dict[str, str]) -> Lines:
    _, op, spec = key
    cp = char_pred(spec)
    bug = var.bug[0] if var.bug else None

    def pos(v: str) -> str:
        return _spell(cp.code, cp.wrong, var.pred_alt, var.bug, "pred").replace("{v}", v)

    def neg(v: str) -> str:
        return _negate(pos(v))

    lit = json.dumps(cp.literal)
    t = _Strings(nm, bug, var.style, lit, pos, neg)
    if op == "count":
        return _string_count(t)
    if op in ("keep", "remove"):
        return _string_filter(t, keep=(op == "keep") != (bug == "flip"))
    if op == "mask":
        return _string_mask(t)
    return _string_find(t, op)


@dataclass(frozen=True)
class _Strings:
    """What every spelling of a string task uses: names, bug, style, the test of a char."""

    nm: dict[str, str]
    bug: str | None
    style: str
    lit: str  # the character class as a literal, for str methods
    pos: Callable[[str], str]  # the test of a character, as code
    neg: Callable[[str], str]  # its negation


def _string_count(t: _Strings) -> Lines:
    """How many characters pass the test."""
    bug, style, lit, pos = t.bug, t.style, t.lit, t.pos
    nm = t.nm
    c, p, i, cnt = nm["c"], nm["p"], nm["i"], nm["count"]
    if style == "method":
        return [(1, f"return {p}.count({lit})")]
    if style == "gen":
        return [(1, f"return sum(1 for {c} in {p} if {pos(c)})")]
    if style == "len":
        return [(1, f"return len([{c} for {c} in {p} if {pos(c)}])")]
    out: Lines = [(1, f"{cnt} = {1 if bug == 'init' else 0}")]
    if style == "loop":
        out += [(1, f"for {c} in {p}:"), (2, f"if {pos(c)}:"), (3, f"{cnt} += 1")]
        tail: Lines = []
    else:
        out += [
            (1, f"{i} = 0"),
            (1, f"while {i} < len({p}):"),
            (2, f"if {pos(f'{p}[{i}]')}:"),
            (3, f"{cnt} += 1"),
        ]
        tail = [(2, f"{i} += 1")]
    if bug == "early":
        return out + [(2, f"return {cnt}")] + tail
    return out + tail + [(1, f"return {cnt}")]


def _string_filter(t: _Strings, keep: bool) -> Lines:
    """The string with the characters that pass the test kept (or removed)."""
    style, lit, pos, neg = t.style, t.lit, t.pos, t.neg
    nm = t.nm
    c, p, res = nm["c"], nm["p"], nm["str"]
    if style == "method":
        return [(1, f'return {p}.replace({lit}, "")')]
    test = pos(c) if keep else neg(c)
    if style == "join":
        return [(1, f'return "".join({c} for {c} in {p} if {test})')]
    if style == "joinlist":
        return [(1, f'return "".join([{c} for {c} in {p} if {test}])')]
    return [
        (1, f'{res} = ""'),
        (1, f"for {c} in {p}:"),
        (2, f"if {test}:"),
        (3, f"{res} += {c}"),
        (1, f"return {res}"),
    ]


def _string_mask(t: _Strings) -> Lines:
    """The string with the characters that pass the test masked."""
    bug, style, lit, pos = t.bug, t.style, t.lit, t.pos
    nm = t.nm
    c, p, res = nm["c"], nm["p"], nm["str"]
    star, keep_c = ('"*"', c) if bug != "swap" else (c, '"*"')
    if style == "method":
        return [(1, f'return {p}.replace({lit}, "*")')]
    if style == "join":
        return [(1, f'return "".join({star} if {pos(c)} else {keep_c} for {c} in {p})')]
    return [
        (1, f'{res} = ""'),
        (1, f"for {c} in {p}:"),
        (2, f"if {pos(c)}:"),
        (3, f"{res} += {star}"),
        (2, "else:"),
        (3, f"{res} += {keep_c}"),
        (1, f"return {res}"),
    ]


def _string_find(t: _Strings, op: str) -> Lines:
    """Where the first (or last) character that passes the test is."""
    bug, style, lit, pos = t.bug, t.style, t.lit, t.pos
    nm = t.nm
    c, p, i, res = nm["c"], nm["p"], nm["i"], nm["str"]
    found = f"{i} + 1" if bug == "off" else i
    missing = "0" if bug == "default" else "-1"
    if style == "method":
        return [(1, f"return {p}.{'find' if op == 'first' else 'rfind'}({lit})")]
    if op == "first":
        if style == "index":
            return [
                (1, f"for {i} in range(len({p})):"),
                (2, f"if {pos(f'{p}[{i}]')}:"),
                (3, f"return {found}"),
                (1, f"return {missing}"),
            ]
        if style == "enumerate":
            return [
                (1, f"for {i}, {c} in enumerate({p}):"),
                (2, f"if {pos(c)}:"),
                (3, f"return {found}"),
                (1, f"return {missing}"),
            ]
        return [
            (1, f"{i} = 0"),
            (1, f"while {i} < len({p}):"),
            (2, f"if {pos(f'{p}[{i}]')}:"),
            (3, f"return {found}"),
            (2, f"{i} += 1"),
            (1, f"return {missing}"),
        ]
    # last
    if style == "reverse":
        return [
            (1, f"for {i} in range(len({p}) - 1, -1, -1):"),
            (2, f"if {pos(f'{p}[{i}]')}:"),
            (3, f"return {found}"),
            (1, f"return {missing}"),
        ]
    return [
        (1, f"{res} = {missing}"),
        (1, f"for {i}, {c} in enumerate({p}):"),
        (2, f"if {pos(c)}:"),
        (3, f"{res} = {found}"),
        (1, f"return {res}"),
    ]


def canonical_solution(key: Key) -> str:
    """The canonical completion of the task's shipped prompt."""
    return render(key, canonical_variant(key))


def wrong_solutions(key: Key) -> list[str]:
    """Slightly wrong completions (canonical style, one bug each) that the tests catch."""
    return [render(key, v) for v in _killed_bugs(key)]


# --------------------------------------------------------------------------- tests


def _compile(task: Task, body: str) -> Callable[..., Any]:
    ns: dict[str, Any] = {}
    exec(task.prompt() + body, ns)  # our own generated code, never a model's
    return ns[task.entry_point]


_MISSING = object()


def _call(fn: Callable[..., Any], arg: Any) -> Any:
    try:
        return fn(list(arg) if isinstance(arg, list) else arg)
    except Exception:  # a wrong variant may raise (None > 3): that is a failure, not a crash
        return _MISSING


def _constants(key: Key) -> list[int]:
    out = []
    for part in key[2:]:
        if ":" in part and part.split(":")[1].lstrip("-").isdigit():
            out.append(_k(part))
    return out


def _input_pool(key: Key) -> list[Any]:
    """Candidate test inputs: edge cases first, then random ones near the task's constants."""
    rng = random.Random("inputs:" + "/".join(key))
    template = key[0]
    ks = _constants(key)
    near = sorted({v for k in ks for v in (k - 1, k, k + 1, -k)} | {0, 1, -1, 2})
    if template == "list":
        pool: list[Any] = [[], [rng.choice(near)], [-3, -8, -1]]
        for _ in range(40):
            n = rng.randint(2, 7)
            pool.append(
                [rng.choice(near) if rng.random() < 0.35 else rng.randint(-9, 12) for _ in range(n)]
            )
        return pool
    if template == "range":
        fixed = [0, 1, 2, 5, 7, 10, 12]
        extra = [k for k in near if 0 <= k <= 13]
        order = fixed[:2] + rng.sample(fixed[2:] + extra, len(fixed[2:] + extra))
        return list(dict.fromkeys(order))
    if template == "digits":
        digits = [d for d in near if 0 <= d <= 9] or [5]
        pool = [7, 10]
        for _ in range(40):
            n = rng.randint(1, 7)
            ds = [rng.choice(digits) if rng.random() < 0.4 else rng.randint(0, 9) for _ in range(n)]
            ds[0] = ds[0] or rng.randint(1, 9)  # positive, no leading zero
            pool.append(int("".join(map(str, ds))))
        return pool
    # string
    cp = char_pred(key[2])
    alphabet = "abcdeiouxyzAEBXY 019" + (cp.literal * 3 if cp.literal else "")
    pool = ["", "xyz"]
    for _ in range(40):
        n = rng.randint(1, 12)
        pool.append("".join(rng.choice(alphabet) for _ in range(n)))
    return pool


@cache
def _tests_and_bugs(key: Key) -> tuple[tuple[Any, ...], tuple[Variant, ...]]:
    """The test inputs for a task and the canonical-style bugs they catch.

    Greedy: the two edge cases, then for each bug still alive the first input that
    kills it, then random inputs up to five. A bug no input in the pool can catch is
    equivalent on this input space and is dropped.
    """
    task = make_task(key)
    canon = canonical_variant(key)
    good = _compile(task, render(key, canon))
    pool = _input_pool(key)
    want = [_call(good, a) for a in pool]
    chosen = [0, 1]
    killed: list[Variant] = []
    for bug in bug_options(key, canon.style):
        variant = Variant(canon.style, canon.names, bug=bug)
        bad = _compile(task, render(key, variant))
        got = [_call(bad, a) for a in pool]
        fails = [j for j in range(len(pool)) if got[j] is _MISSING or got[j] != want[j]]
        if not fails:
            continue
        if not any(j in chosen for j in fails):
            chosen.append(fails[0])
        killed.append(variant)
    rng = random.Random("pad:" + "/".join(key))
    rest = [j for j in range(len(pool)) if j not in chosen]
    rng.shuffle(rest)
    chosen += rest[: max(0, 5 - len(chosen))]
    return tuple(pool[j] for j in chosen), tuple(killed)


def _killed_bugs(key: Key) -> tuple[Variant, ...]:
    return _tests_and_bugs(key)[1]


def tests_for(key: Key) -> str:
    """HumanEval-style tests: ``def check(candidate):`` and one assert per input."""
    task = make_task(key)
    inputs, _ = _tests_and_bugs(key)
    fn = _compile(task, canonical_solution(key))
    lines = ["def check(candidate):"]
    for arg in inputs:
        want = fn(list(arg) if isinstance(arg, list) else arg)
        if want is None:
            lines.append(f"    assert candidate({arg!r}) is None")
        else:
            lines.append(f"    assert candidate({arg!r}) == {want!r}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- splits

# Fixed inputs on which two keys with the same outputs count as the same task.
_FINGERPRINT_BANK: dict[str, list[Any]] = {
    "list": [
        [],
        [0],
        [5],
        [-3],
        [1, 2, 3, 4, 5, 6],
        [-4, -1, 0, 7, 9, 12],
        [10, -10, 3, 8],
        [2, 2, 9, -7, 6, 0, 1],
        [-5, -2, 11, 4],
        [-9, -6, 5, 8, 3],
        [7, 14, 21, 28, -7],
    ],
    "range": list(range(0, 14)),
    "digits": [7, 10, 305, 4444, 9876543, 1234567, 2020, 5, 88, 13579, 24680, 907],
    "string": [
        "",
        "a",
        "Hello World 42",
        "the quick brown fox jumps over the lazy dog",
        "ABC abc 123 xyz",
        "mississippi",
        "AEIOU aeiou",
        "v w",
        "Zebra 9 qu",
    ],
}


def fingerprint(key: Key) -> tuple[str, ...]:
    """The canonical solution's outputs on the template's fixed input bank."""
    task = make_task(key)
    fn = _compile(task, canonical_solution(key))
    return (key[0], *(repr(_call(fn, a)) for a in _FINGERPRINT_BANK[key[0]]))


@dataclass(frozen=True)
class Splits:
    """Disjoint key sets: held-out evaluation, SSD training prompts, pretraining corpus."""

    eval: tuple[Key, ...]
    train: tuple[Key, ...]
    pretrain: tuple[Key, ...]


@cache
def make_splits(seed: int = DEFAULT_SEED) -> Splits:
    """Split every key of the family into eval / train / pretrain, by meaning-group.

    Eval takes ``EVAL_QUOTA`` groups per (template, difficulty) first, one key per
    group; the groups of those keys are then closed to the other splits. Train takes
    ``TRAIN_QUOTA`` keys per template; pretraining gets the rest.
    """
    ev: list[Key] = []
    tr: list[Key] = []
    pt: list[Key] = []
    for template in TEMPLATES:
        keys = all_keys(template)
        group = {k: fingerprint(k) for k in keys}
        rng = random.Random(f"split:{seed}:{template}")
        rng.shuffle(keys)
        need = dict(EVAL_QUOTA[template])
        eval_groups: set[tuple[str, ...]] = set()
        for k in keys:
            d = make_task(k).difficulty
            if need[d] > 0 and group[k] not in eval_groups:
                ev.append(k)
                eval_groups.add(group[k])
                need[d] -= 1
        if any(need.values()):
            raise RuntimeError(f"not enough {template} tasks for the eval quota: {need}")
        where: dict[tuple[str, ...], str] = {}
        n_train = 0
        for k in keys:
            g = group[k]
            if g in eval_groups:
                continue
            if g not in where:
                where[g] = "train" if n_train < TRAIN_QUOTA[template] else "pretrain"
            if where[g] == "train":
                if n_train < TRAIN_QUOTA[template]:
                    tr.append(k)
                    n_train += 1
                # A group's extra keys past the quota are dropped, not leaked into pretrain.
            else:
                pt.append(k)
    return Splits(tuple(ev), tuple(tr), tuple(pt))


# --------------------------------------------------------------------------- files


def _interleave(keys: Sequence[Key], seed: int) -> list[Key]:
    """Order eval keys easy, medium, hard, easy, ...: any prefix covers all three."""
    by: dict[str, list[Key]] = {d: [] for d in DIFFICULTIES}
    for k in keys:
        by[make_task(k).difficulty].append(k)
    rng = random.Random(f"order:{seed}")
    for d in DIFFICULTIES:
        rng.shuffle(by[d])
    out: list[Key] = []
    for j in range(max(len(v) for v in by.values())):
        out += [by[d][j] for d in DIFFICULTIES if j < len(by[d])]
    return out


def problem_record(key: Key, split: str, index: int, with_tests: bool = True) -> dict[str, Any]:
    """One JSONL object in the project's problem format."""
    task = make_task(key)
    rec: dict[str, Any] = {
        "id": f"demo-{split}-{index:04d}",
        "split": split,
        "difficulty": task.difficulty,
        "entry_point": task.entry_point,
        "prompt": task.prompt(),
        "statement": task.statement.replace("{p}", task.param),
        "canonical_solution": canonical_solution(key),
    }
    if with_tests:
        rec["tests"] = tests_for(key)
    return rec


def build_problems(seed: int = DEFAULT_SEED) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training prompt records, evaluation records), in file order."""
    splits = make_splits(seed)
    train_keys = list(splits.train)
    random.Random(f"train-order:{seed}").shuffle(train_keys)
    # Training prompts carry no tests: SSD never looks at correctness.
    train = [problem_record(k, "train", i + 1, with_tests=False) for i, k in enumerate(train_keys)]
    ev = [problem_record(k, "eval", i + 1) for i, k in enumerate(_interleave(splits.eval, seed))]
    return train, ev


def to_jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_problem_files(out_dir: Path, seed: int = DEFAULT_SEED) -> tuple[Path, Path]:
    """Write ``train_prompts.jsonl`` and ``eval.jsonl`` into ``out_dir``."""
    train, ev = build_problems(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tp, ep = out_dir / "train_prompts.jsonl", out_dir / "eval.jsonl"
    tp.write_text(to_jsonl(train), encoding="utf-8")
    ep.write_text(to_jsonl(ev), encoding="utf-8")
    return tp, ep


# --------------------------------------------------------------------------- corpus

# Pretraining documents per template: the small templates are repeated more, so every
# template gets a fair share of the model's attention.
CORPUS_DOCS: dict[str, int] = {"list": 14000, "range": 6000, "digits": 4000, "string": 4000}
DEFAULT_BUG_RATE = 0.5


def shape(key: Key) -> tuple[str, ...]:
    """A task's structure without its constants: (template, agg, has filter, has map), or
    (template, op, literal char or class) for strings."""
    if key[0] == "string":
        return ("string", key[1], "eq" if key[2].startswith("eq:") else "class")
    return (key[0], key[1], str(bool(key[2])), str(bool(key[3])))


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, rounded so the parts sum to total."""
    s = sum(weights)
    bounds = [round(total * sum(weights[: i + 1]) / s) for i in range(len(weights))]
    return [hi - lo for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True)]


def pretraining_documents(
    seed: int = DEFAULT_SEED,
    bug_rate: float = DEFAULT_BUG_RATE,
    docs: dict[str, int] | None = None,
) -> Iterator[tuple[Key, str]]:
    """(key, prompt + body) pretraining documents, from pretraining keys only.

    Each document is a task from the pretraining split written in a random style with
    random names and a random parameter name; with probability ``bug_rate`` it carries
    one slight bug. That mix (right in several styles, a share wrong) is what gives the
    model forks and a distractor tail at lock positions.

    Within a template, documents go to shapes (see ``shape``) in proportion to the
    square root of their key counts, not to the key counts: "filter + map + sum" has
    ~2000 keys and "count with a filter" ~50, and sampling keys uniformly would leave
    the simple shapes almost unseen (and the "easy" tasks the hardest for the model).
    """
    splits = make_splits(seed)
    counts = docs or CORPUS_DOCS
    by_shape: dict[tuple[str, ...], list[Key]] = {}
    for k in splits.pretrain:
        by_shape.setdefault(shape(k), []).append(k)
    rng = random.Random(f"corpus:{seed}")
    plan: list[Key] = []
    for t in TEMPLATES:
        shapes = sorted(sh for sh in by_shape if sh[0] == t)
        sizes = _allocate(counts.get(t, 0), [len(by_shape[sh]) ** 0.5 for sh in shapes])
        for sh, n in zip(shapes, sizes, strict=True):
            keys = by_shape[sh]
            for j in range(n):
                if j % len(keys) == 0:
                    rng.shuffle(keys)
                plan.append(keys[j % len(keys)])
    rng.shuffle(plan)
    for key in plan:
        param = rng.choice(_PARAMS[key[0]])
        variant = random_variant(key, param, rng, bug_rate)
        yield key, make_task(key).prompt(param) + render(key, variant)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the demo problem files.")
    ap.add_argument("--out", type=Path, default=Path("assets/demo"))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    tp, ep = write_problem_files(args.out, args.seed)
    print(f"wrote {tp} and {ep}")


if __name__ == "__main__":
    main()
