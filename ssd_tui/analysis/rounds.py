"""Round analytics computed from the run database (docs/analysis.md).

Three parts, all written back to the store so the TUI, exports and reports read the
same numbers:

- diversity of each round's samples (``metrics`` rows, purpose 'train' / 'eval');
- fork / lock statistics: round 0's eval samples re-scored under each round's model
  (``probe_stats`` table and ``metrics`` rows with purpose 'probe');
- mode-collapse rules (``warnings`` rows, one per rule and round, with evidence).

``analyse_round`` is the pipeline's entry point; it is idempotent.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import textwrap
import time
import warnings as _warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssd_tui.analysis import behaviour as beh
from ssd_tui.analysis import control, recording
from ssd_tui.analysis.positions import FORK, LOCK, classify_positions
from ssd_tui.config import AnalysisSection, RunConfig
from ssd_tui.evaluation.passk import pass_at_k
from ssd_tui.problems.prompting import extract_code
from ssd_tui.store.run_store import RunStore

Scorer = Callable[[list[str], list[str]], list[dict[str, np.ndarray]]]
Render = Callable[[dict[str, Any]], str]

DIVERSITY_METRICS = (
    "n_samples",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "distinct_4",
    "pairwise_similarity",
    "unique_share",
    "duplicate_share",
    "mean_length",
    "mean_entropy",
    "loop_share",
    "truncated_share",
    "passing_programs",
)
PROBE_METRICS = (
    "fork_entropy",
    "lock_tail_mass",
    "lock_top1",
    "kept_mass",
    "train_kept_mass",
    "lock_train_kept_mass",
    "fork_train_kept_mass",
    "mean_logprob",
    "n_fork",
    "n_lock",
    "n_positions",
    "n_probe",
)
MAX_IDS = 20  # sample ids / problems listed in a warning's evidence
MAX_PERIOD = 64  # longest repeated unit (tokens) the loop detector looks for
EPS = 1e-9


# ---- text and programs ---------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def code_tokens(text: str) -> list[str]:
    """Words (identifiers, numbers, keywords) and single punctuation characters; whitespace dropped.

    Model-independent on purpose: diversity must compare across models and tokenizers.
    """
    return _TOKEN_RE.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(token_lists: Iterable[Sequence[str]], n: int) -> float | None:
    """Distinct n-grams / all n-grams over a set of completions (n-grams never cross two)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in token_lists:
        grams = _ngrams(tokens, n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def _shingles(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    return set(_ngrams(tokens, 2 if len(tokens) >= 2 else 1))


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def pairwise_similarity(groups: Iterable[Sequence[Sequence[str]]]) -> float | None:
    """Mean over problems of the mean token-bigram Jaccard similarity of its samples' pairs."""
    per_problem = []
    for token_lists in groups:
        if len(token_lists) < 2:
            continue
        sh = [_shingles(t) for t in token_lists]
        per_problem.append(
            float(np.mean([jaccard(a, b) for a, b in itertools.combinations(sh, 2)]))
        )
    return float(np.mean(per_problem)) if per_problem else None


def program_text(sample: dict[str, Any]) -> str:
    """The program a sample stands for: its tested code, else its completion's code.

    A fenced answer's code is picked by the evaluator's one rule (``prompting.extract_code``).
    """
    if sample.get("code"):
        return sample["code"]
    text = sample.get("completion") or ""
    return extract_code(text, sample.get("entry_point")) if "```" in text else text


def _parse(code: str) -> ast.Module | None:
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes in model output
        for candidate in (code, textwrap.dedent(code)):  # a bare function body is indented
            try:
                return ast.parse(candidate)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
    return None


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the program itself binds; everything else (builtins, modules) keeps its name."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
    return names


class _Renamer(ast.NodeTransformer):
    """Renames bound names to v0, v1, … in order of first appearance."""

    def __init__(self, bound: set[str]):
        self.bound = bound
        self.mapping: dict[str, str] = {}

    def _new(self, name: str | None) -> str | None:
        if name is None or name not in self.bound:
            return name
        return self.mapping.setdefault(name, f"v{len(self.mapping)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._new(node.id) or node.id
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._new(node.arg) or node.arg
        self.generic_visit(node)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        node.arg = self._new(node.arg)
        self.generic_visit(node)
        return node

    def _visit_named(self, node: Any) -> ast.AST:
        node.name = self._new(node.name)
        self.generic_visit(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_named
    visit_ExceptHandler = visit_MatchAs = visit_MatchStar = _visit_named

    def _visit_scope_decl(self, node: Any) -> ast.AST:
        node.names = [self._new(n) or n for n in node.names]
        return node

    visit_Global = visit_Nonlocal = _visit_scope_decl


def _strip_docstrings(tree: ast.AST) -> None:
    """Docstrings don't change behaviour; drop them (comments are gone already)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def normalize_program(code: str) -> str:
    """A key equal for programs that differ only in names, formatting, comments and docstrings.

    Parsable code: AST with bound names renamed canonically, dumped. Unparsable code:
    whitespace runs collapsed. The prefixes keep the two kinds from ever colliding.
    """
    tree = _parse(code)
    if tree is None:
        return "text:" + " ".join(code.split())
    _strip_docstrings(tree)
    _Renamer(_bound_names(tree)).visit(tree)
    return "ast:" + ast.dump(tree)


def find_loop(tokens: Sequence[str], min_repeats: int, min_tokens: int) -> tuple[int, int] | None:
    """(period, repeats) of the longest back-to-back repetition of a token n-gram, if it loops.

    A stretch where token[i] == token[i - period] throughout is ``period`` tokens
    repeated; it counts as a loop when it has ≥ ``min_repeats`` copies and covers
    ≥ ``min_tokens`` tokens (so ``[0, 0, 0]`` is not a loop but a runaway line is).
    """
    n = len(tokens)
    top = min(MAX_PERIOD, n // min_repeats)
    if n < min_tokens or top < 1:
        return None
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), dtype=np.int64, count=n)
    # All periods at once (one row each): eq[p-1, i] = token[i + p] == token[i].
    periods = np.arange(1, top + 1)
    ahead = np.arange(n)[None, :] + periods[:, None]
    eq = (ahead < n) & (ids[np.minimum(ahead, n - 1)] == ids[None, :])
    # Longest run of True per row: count since the last False.
    count = np.cumsum(eq, axis=1)
    run = count - np.maximum.accumulate(np.where(eq, 0, count), axis=1)
    span = run.max(axis=1) + periods
    ok = (span // periods >= min_repeats) & (span >= min_tokens)
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, span, -1)))  # the longest; ties → the shortest period
    return int(periods[best]), int(span[best] // periods[best])


# ---- per-sample features and diversity metrics ------------------------------------------------


@dataclass
class _Sample:
    id: int
    problem: str
    difficulty: str | None
    completion: str
    tokens: list[str]
    key: str  # normalised program
    loop: tuple[int, int] | None
    n_tokens: int
    mean_entropy: float | None
    finish_reason: str | None
    status: str | None


def _features(rows: Sequence[dict[str, Any]], acfg: AnalysisSection) -> list[_Sample]:
    out = []
    for i, r in enumerate(rows):
        tokens = code_tokens(r["completion"])
        out.append(
            _Sample(
                id=r.get("id", i),
                problem=r.get("problem", ""),
                difficulty=r.get("difficulty"),
                completion=r["completion"],
                tokens=tokens,
                key=normalize_program(program_text(r)),
                loop=find_loop(tokens, acfg.loop_min_repeats, acfg.loop_min_tokens),
                n_tokens=int(r.get("n_tokens") or 0),
                mean_entropy=r.get("mean_entropy"),
                finish_reason=r.get("finish_reason"),
                status=r.get("status"),
            )
        )
    return out


def _by_problem(samples: Sequence[_Sample]) -> dict[str, list[_Sample]]:
    groups: dict[str, list[_Sample]] = defaultdict(list)
    for s in samples:
        groups[s.problem].append(s)
    return groups


def _unique_share(samples: Sequence[_Sample]) -> float | None:
    """Distinct programs per problem, summed, over samples (problems with ≥ 2 samples only)."""
    groups = [g for g in _by_problem(samples).values() if len(g) >= 2]
    n = sum(len(g) for g in groups)
    return sum(len({s.key for s in g}) for g in groups) / n if n else None


def _duplicate_share(samples: Sequence[_Sample]) -> float | None:
    """Share of samples whose completion repeats an earlier one, across problems too."""
    if not samples:
        return None
    return 1.0 - len({s.completion.strip() for s in samples}) / len(samples)


def _mean_entropy(samples: Sequence[_Sample]) -> float | None:
    # Token-weighted: the mean over all tokens, not over samples.
    pairs = [(s.mean_entropy, s.n_tokens) for s in samples if s.mean_entropy is not None]
    weight = sum(n for _, n in pairs)
    return sum(e * n for e, n in pairs) / weight if weight else None


def _passing_programs(samples: Sequence[_Sample]) -> float | None:
    """Mean distinct normalised programs among a problem's passing samples (problems with a pass)."""
    counts = [
        len({s.key for s in g if s.status == "passed"})
        for g in _by_problem(samples).values()
        if any(s.status == "passed" for s in g)
    ]
    return float(np.mean(counts)) if counts else None


def diversity_metrics(
    rows: Sequence[dict[str, Any]], acfg: AnalysisSection | None = None
) -> dict[str, float | None]:
    """Every diversity metric of a set of sample rows (``store.samples`` dicts; only
    ``completion`` is required; ``problem``, ``code``, ``n_tokens``, ``mean_entropy``,
    ``finish_reason`` and ``status`` are used when present). See docs/analysis.md."""
    return _diversity(_features(rows, acfg or AnalysisSection()))


def _diversity(samples: Sequence[_Sample]) -> dict[str, float | None]:
    n = len(samples)
    tokens = [s.tokens for s in samples]
    m: dict[str, float | None] = {"n_samples": float(n)}
    for k in range(1, 5):
        m[f"distinct_{k}"] = distinct_n(tokens, k)
    m["pairwise_similarity"] = pairwise_similarity(
        [[s.tokens for s in g] for g in _by_problem(samples).values()]
    )
    m["unique_share"] = _unique_share(samples)
    m["duplicate_share"] = _duplicate_share(samples)
    m["mean_length"] = float(np.mean([s.n_tokens for s in samples])) if n else None
    m["mean_entropy"] = _mean_entropy(samples)
    m["loop_share"] = sum(s.loop is not None for s in samples) / n if n else None
    m["truncated_share"] = sum(s.finish_reason == "length" for s in samples) / n if n else None
    if any(s.status is not None for s in samples):
        m["passing_programs"] = _passing_programs(samples)
    return m


def _metrics_by_scope(samples: Sequence[_Sample]) -> dict[str, dict[str, float | None]]:
    """'all' plus one scope per problem difficulty, as the pass@k rows are split."""
    out = {"all": _diversity(samples)}
    for level in sorted({s.difficulty for s in samples if s.difficulty}):
        out[level] = _diversity([s for s in samples if s.difficulty == level])
    return out


# ---- pass@k --------------------------------------------------------------------------------------


def pass_rate(store: RunStore, rnd: int, temperature: float, k: int) -> float | None:
    """pass@k from the metrics rows the evaluate stage wrote, else from the verdicts."""
    v = store.metric_at(rnd, f"pass@{k}", "eval", temperature)
    if v is not None:
        return v
    counts = [(n, c) for _, _, n, c in store.pass_counts(rnd, temperature) if n >= k]
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts])) if counts else None


# ---- fork/lock classification and the probe -----------------------------------------------


def _probe_rows(store: RunStore, cfg: RunConfig) -> list[dict[str, Any]]:
    """The probe set: round 0's eval samples at T_eval, the first sample of each problem first."""
    rows = [
        r
        for r in store.samples(0, "eval")
        if math.isclose(r["temperature"], cfg.eval.temperature, abs_tol=1e-6)
    ]
    # One order whether the set is chosen or read back: the probe's float32 means depend on
    # it, and a round 0 analyse resumed after its rows were written must equal the first.
    rows.sort(key=lambda r: (r["sample_idx"], r["problem_id"]))
    fixed = store.probe_sample_ids(0)  # once classified, later rounds score exactly that set
    if fixed:
        return [r for r in rows if r["id"] in fixed]
    cap = cfg.analysis.probe_samples
    return rows[:cap] if cap else rows


def _run_probe(
    store: RunStore, rnd: int, cfg: RunConfig, scorer: Scorer, render: Render
) -> dict[int, dict[str, np.ndarray]]:
    rows = _probe_rows(store, cfg)
    if rnd > 0 and not store.probe_stats(0):
        return {}  # nothing to classify positions by: round 0 was analysed without a scorer
    problems = {p["id"]: p for p in store.problems("eval")}
    prompts = [render(problems[r["problem_id"]]) for r in rows]
    scored = scorer(prompts, [r["completion"] for r in rows]) if rows else []
    return {r["id"]: s for r, s in zip(rows, scored, strict=True)}


def _mean(values: list[np.ndarray]) -> float | None:
    flat = np.concatenate(values) if values else np.zeros(0)
    return float(flat.mean()) if flat.size else None


def probe_metrics(
    base: dict[int, dict[str, np.ndarray]],
    now: dict[int, dict[str, np.ndarray]],
    acfg: AnalysisSection,
) -> dict[str, float | None]:
    """Fork/lock numbers of one round (``now``) on the positions round 0 (``base``) classified."""
    fork_h, lock_tail, lock_top1, kept, logp = [], [], [], [], []
    # The paper's KeptMass: T = 1 mass inside the *training* truncation set.
    train_kept: dict[str, list[np.ndarray]] = {"all": [], "lock": [], "fork": []}
    n_fork = n_lock = n_pos = n_probe = 0
    for sid, b in base.items():
        s = now.get(sid)
        if s is None or len(s["entropies"]) != len(b["entropies"]):
            continue  # only identical positions are compared
        cls = classify_positions(b["entropies"], b["top1"], acfg)
        fork_h.append(s["entropies"][cls == FORK])
        lock_tail.append(s["tail_mass"][cls == LOCK])
        lock_top1.append(s["top1"][cls == LOCK])
        kept.append(1.0 - s["tail_mass"])
        if "train_tail_mass" in s and len(s["train_tail_mass"]) == len(cls):
            tk = 1.0 - s["train_tail_mass"]
            train_kept["all"].append(tk)
            train_kept["lock"].append(tk[cls == LOCK])
            train_kept["fork"].append(tk[cls == FORK])
        logp.append(s["logprobs"])
        n_fork += int((cls == FORK).sum())
        n_lock += int((cls == LOCK).sum())
        n_pos += len(cls)
        n_probe += 1
    return {
        "fork_entropy": _mean(fork_h),
        "lock_tail_mass": _mean(lock_tail),
        "lock_top1": _mean(lock_top1),
        "kept_mass": _mean(kept),
        "train_kept_mass": _mean(train_kept["all"]),
        "lock_train_kept_mass": _mean(train_kept["lock"]),
        "fork_train_kept_mass": _mean(train_kept["fork"]),
        "mean_logprob": _mean(logp),
        "n_fork": float(n_fork),
        "n_lock": float(n_lock),
        "n_positions": float(n_pos),
        "n_probe": float(n_probe),
    }


# ---- the run as the rules see it --------------------------------------------------------------


@dataclass
class _Context:
    store: RunStore
    rnd: int
    cfg: RunConfig
    _features: dict[tuple[int, str, float], list[_Sample]] = field(default_factory=dict)

    @property
    def acfg(self) -> AnalysisSection:
        return self.cfg.analysis

    def temperature(self, rnd: int, purpose: str) -> float | None:
        """The DB temperature of a round's samples at T_eval (eval) or T_train (train)."""
        want = self.cfg.eval.temperature if purpose == "eval" else self.cfg.sampling.temperature
        temps = self.store.sample_temperatures(rnd, purpose)
        close = [t for t in temps if math.isclose(t, want, abs_tol=1e-6)]
        if close:
            return close[0]
        # Training samples have a single temperature per round even if the config changed.
        return temps[0] if purpose == "train" and len(temps) == 1 else None

    def rounds_with(self, purpose: str) -> list[int]:
        """Rounds up to this one that have samples of a purpose at its main temperature."""
        rounds = self.store.rounds_with_samples(purpose, self.rnd)
        return [r for r in rounds if self.temperature(r, purpose) is not None]

    def samples(self, rnd: int, purpose: str) -> list[_Sample]:
        t = self.temperature(rnd, purpose)
        if t is None:
            return []
        key = (rnd, purpose, t)
        if key not in self._features:
            rows = self.store.samples(rnd, purpose, t)
            self._features[key] = _features(rows, self.acfg)
        return self._features[key]

    def metric(self, rnd: int, purpose: str, name: str) -> float | None:
        """A diversity metric: the stored row, else computed now (round never analysed)."""
        t = self.temperature(rnd, purpose)
        if t is None:
            return None
        v = self.store.metric_at(rnd, name, purpose, t)
        if v is None and name in DIVERSITY_METRICS:
            v = _diversity(self.samples(rnd, purpose)).get(name)
        return v

    def pass_at(self, rnd: int, k: int) -> float | None:
        t = self.temperature(rnd, "eval")
        return None if t is None else pass_rate(self.store, rnd, t, k)


def _warning(rnd: int, rule: str, message: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"round": rnd, "rule": rule, "message": message, "evidence": evidence}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def _ids_of(samples: Iterable[_Sample]) -> list[int]:
    return [s.id for s in samples][:MAX_IDS]


def _problems_of(samples: Iterable[_Sample]) -> list[str]:
    return list(dict.fromkeys(s.problem for s in samples))[:MAX_IDS]


# ---- the collapse rules --------------------------------------------------------------------------
# Each takes the context and returns one warning or None. Each judges the run against its
# own reference round, never an absolute floor, so none can fire on the base model itself:
# round 0 for eval samples, the first sampled round (drawn from round 0's model) for
# training samples. docs/analysis.md §3 says how each threshold was chosen.


def _coverage_fell(ctx: _Context, ref: int) -> dict[str, Any] | None:
    """pass@k (the largest k) of this round below ``ref``'s by more than ``passk_fall_se``
    standard errors of the difference, paired by problem (control.paired_se): the round
    solves fewer problems in k tries than the reference did. None when it held (or rose),
    or without data."""
    k = max(ctx.cfg.eval.k)
    t_ref, t_now = ctx.temperature(ref, "eval"), ctx.temperature(ctx.rnd, "eval")
    if k < 2 or t_ref is None or t_now is None:
        return None

    def per_problem(rnd: int, t: float) -> control.RoundScore:
        counts = ctx.store.pass_counts(rnd, t)
        return control.RoundScore(rnd, {p: pass_at_k(n, c, k) for p, _, n, c in counts if n >= k})

    a, b = per_problem(ref, t_ref), per_problem(ctx.rnd, t_now)
    if not a.rates or not b.rates:
        return None
    se = control.paired_se(a, b)
    if b.pass1 - a.pass1 >= -ctx.acfg.passk_fall_se * se:
        return None
    return {
        f"pass@{k}": [_r(a.pass1), _r(b.pass1)],
        "se": _r(se),
        "se_times": ctx.acfg.passk_fall_se,
    }


def rule_diversity_drop(ctx: _Context) -> dict[str, Any] | None:
    """Eval distinct-2 fell by more than the threshold since round 0, and pass@1 is not
    above round 0's."""
    rounds = ctx.rounds_with("eval")
    if not rounds or rounds[0] >= ctx.rnd:
        return None
    ref = rounds[0]
    ref_d, now_d = ctx.metric(ref, "eval", "distinct_2"), ctx.metric(ctx.rnd, "eval", "distinct_2")
    ref_p, now_p = ctx.pass_at(ref, 1), ctx.pass_at(ctx.rnd, 1)
    if not ref_d or now_d is None or ref_p is None or now_p is None:
        return None
    drop = (ref_d - now_d) / ref_d
    if drop <= ctx.acfg.max_diversity_drop or now_p > ref_p + EPS:
        return None
    worst = _problems_losing_diversity(ctx, ref)
    return _warning(
        ctx.rnd,
        "diversity_drop",
        f"eval distinct-2 fell {drop:.0%} since round {ref} ({ref_d:.3f} → {now_d:.3f}) "
        f"while pass@1 did not rise ({ref_p:.3f} → {now_p:.3f})",
        {
            "metric": "distinct_2",
            "purpose": "eval",
            "rounds": [ref, ctx.rnd],
            "values": [_r(ref_d), _r(now_d)],
            "drop": _r(drop),
            "pass@1": [_r(ref_p), _r(now_p)],
            "threshold": ctx.acfg.max_diversity_drop,
            "problems": _problems_of(worst),
            "sample_ids": _ids_of(worst),
        },
    )


def _problems_losing_diversity(ctx: _Context, ref: int) -> list[_Sample]:
    """This round's samples of the problems whose own distinct-2 fell most since ``ref``."""
    before, now = _by_problem(ctx.samples(ref, "eval")), _by_problem(ctx.samples(ctx.rnd, "eval"))
    drops = []
    for name, group in now.items():
        b = distinct_n([s.tokens for s in before.get(name, [])], 2)
        a = distinct_n([s.tokens for s in group], 2)
        if a is not None and b is not None and b > a:
            drops.append((b - a, name))
    drops.sort(reverse=True)
    return [s for _, name in drops for s in now[name]]


def rule_unique_share_low(ctx: _Context) -> dict[str, Any] | None:
    """Unique normalised programs per problem fell by more than the threshold since the
    reference round (eval; training samples when they have ≥ 2 a prompt)."""
    details, worst = {}, []
    for purpose in ("eval", "train"):
        rounds = [r for r in ctx.rounds_with(purpose) if ctx.metric(r, purpose, "unique_share")]
        v = ctx.metric(ctx.rnd, purpose, "unique_share")
        if not rounds or rounds[0] >= ctx.rnd or v is None:
            continue
        ref_v = ctx.metric(rounds[0], purpose, "unique_share") or 0.0
        drop = (ref_v - v) / ref_v
        if drop > ctx.acfg.max_unique_share_drop:
            details[purpose] = {
                "rounds": [rounds[0], ctx.rnd],
                "values": [_r(ref_v), _r(v)],
                "drop": _r(drop),
            }
            worst += _least_unique(ctx.samples(ctx.rnd, purpose))
    if not details:
        return None
    said = "; ".join(
        f"{p} {d['values'][0]:.2f} → {d['values'][1]:.2f} (−{d['drop']:.0%} since round {d['rounds'][0]})"
        for p, d in details.items()
    )
    return _warning(
        ctx.rnd,
        "unique_share_low",
        f"share of unique programs fell by more than {ctx.acfg.max_unique_share_drop:.0%}: {said}",
        {
            "metric": "unique_share",
            "rounds": sorted({r for d in details.values() for r in d["rounds"]}),
            "by_purpose": details,
            "threshold": ctx.acfg.max_unique_share_drop,
            "problems": _problems_of(worst),
            "sample_ids": _ids_of(worst),
        },
    )


def _least_unique(samples: Sequence[_Sample]) -> list[_Sample]:
    groups = sorted(
        (g for g in _by_problem(samples).values() if len(g) >= 2),
        key=lambda g: len({s.key for s in g}) / len(g),
    )
    return [s for g in groups for s in g]


def rule_passk_gap_closing(ctx: _Context) -> dict[str, Any] | None:
    """pass@k − pass@1 shrank below a share of round 0's gap (k = the largest configured)
    while pass@k fell below round 0's by more than ``passk_fall_se`` standard errors.

    A gap that closes with pass@k holding is single samples getting better (SSD as a
    temperature cut, as on the demo model); it is collapse when best-of-k loses problems too.
    """
    k = max(ctx.cfg.eval.k)
    rounds = ctx.rounds_with("eval")
    if k < 2 or not rounds or rounds[0] >= ctx.rnd:
        return None
    ref = rounds[0]
    p1 = [ctx.pass_at(ref, 1), ctx.pass_at(ctx.rnd, 1)]
    pk = [ctx.pass_at(ref, k), ctx.pass_at(ctx.rnd, k)]
    if None in p1 or None in pk:
        return None
    gap0, gap = pk[0] - p1[0], pk[1] - p1[1]
    ratio = gap / gap0 if gap0 > EPS else None
    if ratio is None or ratio >= ctx.acfg.min_passk_gap_ratio:
        return None
    fell = _coverage_fell(ctx, ref)
    if fell is None:
        return None
    settled = _settled_problems(ctx, ref)
    return _warning(
        ctx.rnd,
        "passk_gap_closing",
        f"pass@{k} − pass@1 gap closed to {ratio:.0%} of round {ref}'s ({gap0:.3f} → {gap:.3f}) "
        f"and pass@{k} fell ({pk[0]:.3f} → {pk[1]:.3f}; more than {fell['se_times']:g} standard "
        f"errors of {fell['se']:.3f})",
        {
            "metric": f"pass@{k} - pass@1",
            "rounds": [ref, ctx.rnd],
            "values": [_r(gap0), _r(gap)],
            "ratio": _r(ratio),
            "pass@1": [_r(v) for v in p1],
            f"pass@{k}": [_r(v) for v in pk],
            "se": fell["se"],
            "se_times": fell["se_times"],
            "threshold": ctx.acfg.min_passk_gap_ratio,
            "problems": _problems_of(settled),
            "sample_ids": _ids_of(settled),
        },
    )


def _settled_problems(ctx: _Context, ref: int) -> list[_Sample]:
    """This round's samples of problems that were mixed (some pass) in ``ref`` and now all agree."""

    def mixed(group: list[_Sample]) -> bool:
        return len({s.status == "passed" for s in group}) > 1

    before = _by_problem(ctx.samples(ref, "eval"))
    now = _by_problem(ctx.samples(ctx.rnd, "eval"))
    return [s for name, g in now.items() if mixed(before.get(name, [])) and not mixed(g) for s in g]


def rule_behaviour_collapse(ctx: _Context) -> dict[str, Any] | None:
    """The entropy of eval behaviours (what the programs do on the tests) fell by more than
    the threshold since round 0, while pass@k fell (``passk_fall_se`` standard errors)."""
    rounds = ctx.rounds_with("eval")
    if not rounds or rounds[0] >= ctx.rnd:
        return None
    ref = rounds[0]
    h0 = ctx.metric(ref, "eval", "behaviour_entropy")
    h = ctx.metric(ctx.rnd, "eval", "behaviour_entropy")
    if not h0 or h is None:
        return None
    drop = (h0 - h) / h0
    if drop <= ctx.acfg.max_behaviour_entropy_drop:
        return None
    fell = _coverage_fell(ctx, ref)
    if fell is None:
        return None
    n0, n = ctx.metric(ref, "eval", "behaviours"), ctx.metric(ctx.rnd, "eval", "behaviours")
    narrowed = _problems_narrowing(ctx, ref)
    ((k_name, pk),) = ((key, v) for key, v in fell.items() if key.startswith("pass@"))
    return _warning(
        ctx.rnd,
        "behaviour_collapse",
        f"entropy of eval behaviours fell {drop:.0%} since round {ref} ({h0:.3f} → {h:.3f} nats; "
        f"{n0 or 0:.2f} → {n or 0:.2f} behaviours a problem) while {k_name} fell "
        f"({pk[0]:.3f} → {pk[1]:.3f})",
        {
            "metric": "behaviour_entropy",
            "purpose": "eval",
            "rounds": [ref, ctx.rnd],
            "values": [_r(h0), _r(h)],
            "drop": _r(drop),
            "behaviours": [_r(n0), _r(n)],
            **fell,
            "threshold": ctx.acfg.max_behaviour_entropy_drop,
            "problems": _problems_of(narrowed),
            "sample_ids": _ids_of(narrowed),
        },
    )


def _problems_narrowing(ctx: _Context, ref: int) -> list[_Sample]:
    """This round's samples of the problems whose number of behaviours fell most since ``ref``."""
    t_ref, t_now = ctx.temperature(ref, "eval"), ctx.temperature(ctx.rnd, "eval")
    if t_ref is None or t_now is None:
        return []
    classes = {
        sid: b["class"]
        for t, r in ((t_ref, ref), (t_now, ctx.rnd))
        for sid, b in ctx.store.behaviours(r, t, beh.RECORDER_VERSION).items()
    }

    def count(group: Sequence[_Sample]) -> int:
        return len({classes[s.id] for s in group if s.id in classes})

    before = _by_problem(ctx.samples(ref, "eval"))
    now = _by_problem(ctx.samples(ctx.rnd, "eval"))
    drops = sorted(
        ((count(before.get(name, [])) - count(g), name) for name, g in now.items()), reverse=True
    )
    return [s for d, name in drops if d > 0 for s in now[name]]


def rule_fork_entropy_collapse(ctx: _Context) -> dict[str, Any] | None:
    """Entropy at round 0's fork positions fell by more than the threshold."""
    if ctx.rnd == 0:
        return None
    t = ctx.cfg.eval.temperature
    h0 = ctx.store.metric_at(0, "fork_entropy", "probe", t)
    h = ctx.store.metric_at(ctx.rnd, "fork_entropy", "probe", t)
    if not h0 or h is None:
        return None
    drop = (h0 - h) / h0
    if drop <= ctx.acfg.max_fork_entropy_drop:
        return None
    ids = _probe_samples_losing_entropy(ctx)
    names = ctx.store.problem_names(ids)[:MAX_IDS]
    return _warning(
        ctx.rnd,
        "fork_entropy_collapse",
        f"entropy at fork positions fell {drop:.0%} since round 0 ({h0:.3f} → {h:.3f} nats)",
        {
            "metric": "fork_entropy",
            "purpose": "probe",
            "rounds": [0, ctx.rnd],
            "values": [_r(h0), _r(h)],
            "drop": _r(drop),
            "n_fork": ctx.store.metric_at(ctx.rnd, "n_fork", "probe", t),
            "threshold": ctx.acfg.max_fork_entropy_drop,
            "problems": names,
            "sample_ids": ids,
        },
    )


def _probe_samples_losing_entropy(ctx: _Context) -> list[int]:
    base, now = ctx.store.probe_stats(0), ctx.store.probe_stats(ctx.rnd)
    drops = []
    for sid, b in base.items():
        s = now.get(sid)
        forks = classify_positions(b["entropies"], b["top1"], ctx.acfg) == FORK
        if s is not None and forks.any() and len(s["entropies"]) == len(forks):
            drops.append((float(b["entropies"][forks].mean() - s["entropies"][forks].mean()), sid))
    return [sid for _, sid in sorted(drops, reverse=True)][:MAX_IDS]


def rule_length_drift(ctx: _Context) -> dict[str, Any] | None:
    """Mean completion length moved by more than the threshold vs the first round with samples."""
    details, worst = {}, []
    for purpose in ("eval", "train"):
        rounds = ctx.rounds_with(purpose)
        if not rounds or rounds[0] >= ctx.rnd:
            continue
        ref = rounds[0]
        a, b = ctx.metric(ref, purpose, "mean_length"), ctx.metric(ctx.rnd, purpose, "mean_length")
        if not a or b is None or abs(b - a) / a <= ctx.acfg.max_length_drift:
            continue
        shorter = b < a
        details[purpose] = {
            "rounds": [ref, ctx.rnd],
            "values": [_r(a), _r(b)],
            "change": _r((b - a) / a),
            "direction": "shorter" if shorter else "longer",
        }
        ranked = sorted(
            ctx.samples(ctx.rnd, purpose), key=lambda s: s.n_tokens, reverse=not shorter
        )
        worst += ranked[: MAX_IDS // 2]
    if not details:
        return None
    said = "; ".join(
        f"{p} {d['values'][0]:.1f} → {d['values'][1]:.1f} tokens ({d['direction']}, round {d['rounds'][0]} → {d['rounds'][1]})"
        for p, d in details.items()
    )
    return _warning(
        ctx.rnd,
        "length_drift",
        f"mean completion length drifted: {said}",
        {
            "metric": "mean_length",
            "rounds": sorted({r for d in details.values() for r in d["rounds"]}),
            "by_purpose": details,
            "threshold": ctx.acfg.max_length_drift,
            "problems": _problems_of(worst),
            "sample_ids": _ids_of(worst),
        },
    )


def rule_looping(ctx: _Context) -> dict[str, Any] | None:
    """The share of samples that loop rose by at least the threshold over the reference
    round's (eval: round 0; training: the first sampled round, the base model's samples)."""
    values, loops = {}, []
    for purpose in ("eval", "train"):
        rounds = ctx.rounds_with(purpose)
        if not rounds or rounds[0] >= ctx.rnd:
            continue
        v = ctx.metric(ctx.rnd, purpose, "loop_share")
        ref_v = ctx.metric(rounds[0], purpose, "loop_share")
        if v is None or ref_v is None or v - ref_v < ctx.acfg.max_loop_share_rise - EPS:
            continue
        values[purpose] = {"rounds": [rounds[0], ctx.rnd], "values": [_r(ref_v), _r(v)]}
        loops += [s for s in ctx.samples(ctx.rnd, purpose) if s.loop is not None]
    if not values:
        return None
    said = ", ".join(
        f"{p} {d['values'][0]:.0%} → {d['values'][1]:.0%} since round {d['rounds'][0]}"
        for p, d in values.items()
    )
    examples = [
        {"sample_id": s.id, "problem": s.problem, "period": s.loop[0], "repeats": s.loop[1]}
        for s in loops[:5]
        if s.loop is not None
    ]
    return _warning(
        ctx.rnd,
        "looping",
        f"samples stuck in repeated-token loops: {said} "
        f"(threshold +{ctx.acfg.max_loop_share_rise:.0%})",
        {
            "metric": "loop_share",
            "rounds": sorted({r for d in values.values() for r in d["rounds"]}),
            "by_purpose": values,
            "threshold": ctx.acfg.max_loop_share_rise,
            "examples": examples,
            "problems": _problems_of(loops),
            "sample_ids": _ids_of(loops),
        },
    )


def rule_train_duplicates(ctx: _Context) -> dict[str, Any] | None:
    """The share of exact duplicates among this round's training samples exceeds the first
    sampled round's (the base model's samples) by more than the threshold."""
    rounds = ctx.rounds_with("train")
    if not rounds or rounds[0] >= ctx.rnd:
        return None
    ref = rounds[0]
    v, ref_v = (
        ctx.metric(ctx.rnd, "train", "duplicate_share"),
        ctx.metric(ref, "train", "duplicate_share"),
    )
    if v is None or ref_v is None or v - ref_v <= ctx.acfg.max_duplicate_share_rise:
        return None
    samples = ctx.samples(ctx.rnd, "train")
    groups: dict[str, list[_Sample]] = defaultdict(list)
    for s in samples:
        groups[s.completion.strip()].append(s)
    repeated = sorted((g for g in groups.values() if len(g) > 1), key=len, reverse=True)
    top = [
        {"count": len(g), "text": g[0].completion.strip()[:80], "sample_ids": _ids_of(g)}
        for g in repeated[:5]
    ]
    dupes = [s for g in repeated for s in g]
    return _warning(
        ctx.rnd,
        "train_duplicates",
        f"{v:.0%} of the training samples are exact duplicates, {ref_v:.0%} in round {ref} "
        f"(threshold +{ctx.acfg.max_duplicate_share_rise:.0%}); most repeated: {top[0]['count']}×",
        {
            "metric": "duplicate_share",
            "purpose": "train",
            "rounds": [ref, ctx.rnd],
            "values": [_r(ref_v), _r(v)],
            "threshold": ctx.acfg.max_duplicate_share_rise,
            "most_repeated": top,
            "problems": _problems_of(dupes),
            "sample_ids": _ids_of(dupes),
        },
    )


RULES: tuple[Callable[[_Context], dict[str, Any] | None], ...] = (
    rule_diversity_drop,
    rule_unique_share_low,
    rule_passk_gap_closing,
    rule_behaviour_collapse,
    rule_fork_entropy_collapse,
    rule_length_drift,
    rule_looping,
    rule_train_duplicates,
)


# ---- the entry point ---------------------------------------------------------------------------------


def _default_render(problem: dict[str, Any]) -> str:
    return problem["prompt"]


def _store_diversity(ctx: _Context) -> None:
    for purpose, t in ctx.store.sample_groups(ctx.rnd):
        if purpose not in ("train", "eval"):
            continue
        key = (ctx.rnd, purpose, t)
        if key not in ctx._features:
            ctx._features[key] = _features(ctx.store.samples(ctx.rnd, purpose, t), ctx.acfg)
        values = _metrics_by_scope(ctx._features[key])
        ctx.store.set_metrics(ctx.rnd, purpose, t, values)  # type: ignore[arg-type]


def _store_behaviours(ctx: _Context, sandbox: recording.SandboxSettings | None) -> None:
    """Behavioural diversity of the round's eval samples at T_eval: classes for the samples
    still without one when a sandbox is given, then the metrics from every stored class."""
    t = ctx.temperature(ctx.rnd, "eval")
    if t is None:
        return
    if sandbox is not None and ctx.acfg.behaviours:
        t0 = time.monotonic()
        ran, classed = recording.record_round(ctx.store, ctx.rnd, t, sandbox, key=normalize_program)
        if classed:
            # Its cost beside the evaluation's, in the event log (docs/analysis.md §1).
            ctx.store.log(
                f"round {ctx.rnd}: behaviours of {classed} eval samples: {ran} distinct "
                f"programs run in {time.monotonic() - t0:.1f}s",
                rnd=ctx.rnd,
                stage="analyse",
            )
    ctx.store.set_metrics(ctx.rnd, "eval", t, beh.round_metrics(ctx.store, ctx.rnd, t))  # type: ignore[arg-type]


def analyse_round(
    store: RunStore,
    rnd: int,
    cfg: RunConfig,
    scorer: Scorer | None = None,
    render: Render = _default_render,
    sandbox: recording.SandboxSettings | None = None,
) -> list[dict[str, Any]]:
    """Compute and store round ``rnd``'s analytics; return the warnings written.

    Idempotent: this round's diversity metrics and warnings are replaced; its probe
    rows and metrics are replaced when a scorer is given (kept as they are otherwise).
    ``sandbox``: where behaviour programs run (``[analysis] behaviours``); without one the
    behaviour metrics come from the classes already stored.
    """
    ctx = _Context(store, rnd, cfg)
    scored = _run_probe(store, rnd, cfg, scorer, render) if scorer else {}  # the slow part first
    store.clear_analysis(rnd, DIVERSITY_METRICS + beh.BEHAVIOUR_METRICS, probe_too=bool(scored))
    _store_diversity(ctx)
    _store_behaviours(ctx, sandbox)
    if scored:
        store.write_probe(rnd, scored)
        base = scored if rnd == 0 else store.probe_stats(0)
        metrics = probe_metrics(base, scored, cfg.analysis)
        store.set_metrics(rnd, "probe", cfg.eval.temperature, {"all": metrics})  # type: ignore[dict-item]
    elif scorer is not None and rnd > 0:
        store.log(
            f"round {rnd}: fork/lock probe skipped: round 0 has no probe to classify positions by "
            "(rerun round 0's analyse with a model)",
            "warning",
            rnd,
            "analyse",
        )
    found = [w for rule in RULES if (w := rule(ctx)) is not None]
    for w in found:
        store.add_warning(rnd, w["rule"], w["message"], w["evidence"])
    return found


# ---- temperature-only baseline ------------------------------------------------------------------------


def baseline_curve(store: RunStore) -> list[dict[str, float]]:
    """Round 0's pass@k at each evaluated temperature: [{'temperature': T, 'pass@1': …, 'pass@5': …}]."""
    curve: dict[float, dict[str, float]] = {}
    for t, name, value in store.baseline_pass_rows():
        if value is not None:
            curve.setdefault(t, {"temperature": t})[name] = value
    return [curve[t] for t in sorted(curve)]


def ssd_curve(store: RunStore, temperature: float | None = None) -> list[dict[str, float]]:
    """pass@k of every round at T_eval (any temperature when None): [{'round': r, 'pass@1': …}]."""
    out: dict[int, dict[str, float]] = {}
    for rnd, t, name, value in store.pass_rows():
        if value is None or (temperature is not None and abs(t - temperature) > 1e-6):
            continue
        out.setdefault(rnd, {"round": rnd, "temperature": t})[name] = value
    return [out[r] for r in sorted(out)]


def compare_baseline(
    store: RunStore, cfg: RunConfig | None = None, last_round: int | None = None
) -> dict[str, Any] | None:
    """Best temperature-only baseline pass@1 vs the best SSD round's (rounds 1 to
    ``last_round``, None: all) pass@1.

    None until both exist. ``gain`` is SSD minus baseline, in pass@1 units.
    """
    base = [p for p in baseline_curve(store) if "pass@1" in p]
    t_eval = cfg.eval.temperature if cfg else None
    last = float("inf") if last_round is None else last_round
    ssd = [p for p in ssd_curve(store, t_eval) if 1 <= p["round"] <= last and "pass@1" in p]
    if not base or not ssd:
        return None
    b = max(base, key=lambda p: p["pass@1"])
    s = max(ssd, key=lambda p: p["pass@1"])
    return {
        "baseline_temperature": b["temperature"],
        "baseline_pass@1": b["pass@1"],
        "ssd_round": s["round"],
        "ssd_pass@1": s["pass@1"],
        "gain": s["pass@1"] - b["pass@1"],
    }


def round_summary(store: RunStore, cfg: RunConfig) -> list[dict[str, Any]]:
    """One row per round with the headline numbers (what the report and the TUI tabulate)."""
    t_eval = cfg.eval.temperature
    ks = sorted(set(cfg.eval.k))
    rounds = sorted({r["round"] for r in store.rounds()} | store.metric_rounds())
    out = []
    for rnd in rounds:
        row: dict[str, Any] = {"round": rnd}
        for k in ks:
            row[f"pass@{k}"] = store.metric_at(rnd, f"pass@{k}", "eval", t_eval)
        for name in (
            "distinct_2",
            "unique_share",
            "pairwise_similarity",
            "mean_length",
            "loop_share",
            "mean_entropy",
        ):
            row[f"eval {name}"] = store.metric_at(rnd, name, "eval", t_eval)
        for name in (
            "n_samples",
            "distinct_2",
            "unique_share",
            "duplicate_share",
            "mean_length",
            "truncated_samples",  # cut at max_new_tokens (the train stage writes these two)
            "trained_samples",
        ):
            row[f"train {name}"] = store.metric_any_temperature(rnd, name, "train")
        for name in (
            "fork_entropy",
            "lock_tail_mass",
            "kept_mass",
            "train_kept_mass",
            "lock_train_kept_mass",
            "fork_train_kept_mass",
            "n_fork",
            "n_lock",
        ):
            row[f"probe {name}"] = store.metric_any_temperature(rnd, name, "probe")
        out.append(row)
    return out
