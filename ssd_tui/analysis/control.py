"""What ``[control]`` decides between two rounds (docs/rounds.md): the best round so far,
the rounds without a gain, and what a round's mode-collapse warnings lead to.

Pure functions of the rounds' per-problem pass rates at T_eval and the round's warnings,
so a rerun of the same run makes the same decisions; the pipeline stores each one
(``decisions`` table, with an event) before the next round starts.

**Standard error.** Rounds are evaluated on the same problems, so two rounds are compared
by problem: the standard error of "round b's pass@1 minus round a's" is the sample
standard deviation of the per-problem differences of pass rates over √(problems). A round
is a *gain* over the best round so far when its pass@1 is higher by more than that; a
difference within one standard error goes to the earlier round.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoundScore:
    """A round's pass rate per problem at T_eval (passed / samples)."""

    round: int
    rates: dict[str, float]

    @property
    def pass1(self) -> float:
        return statistics.fmean(self.rates.values()) if self.rates else 0.0


def score(rnd: int, pass_counts: list[tuple[str, str | None, int, int]]) -> RoundScore | None:
    """A round's score from ``RunStore.pass_counts`` rows; None when nothing was judged."""
    rates = {name: passed / n for name, _d, n, passed in pass_counts if n}
    return RoundScore(rnd, rates) if rates else None


def paired_se(a: RoundScore, b: RoundScore) -> float:
    """Standard error of b's pass@1 − a's, paired by problem (0 with fewer than 2 problems)."""
    common = sorted(set(a.rates) & set(b.rates))
    if len(common) < 2:
        return 0.0
    diffs = [b.rates[p] - a.rates[p] for p in common]
    return statistics.stdev(diffs) / math.sqrt(len(diffs))


@dataclass
class Walk:
    """The rounds in order: the best so far after each, and the rounds since the last gain."""

    best: int = 0
    without_gain: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)


def walk(scores: list[RoundScore]) -> Walk:
    """Go through ``scores`` (rounds 0, 1, … in order): a round becomes the best only when
    it beats the best so far by more than one standard error, so a difference within one
    goes to the earlier round; each round that does not counts as a round without gain."""
    out = Walk(best=scores[0].round if scores else 0)
    by_round = {s.round: s for s in scores}
    for s in scores[1:]:
        best = by_round[out.best]
        diff, se = s.pass1 - best.pass1, paired_se(best, s)
        gain = diff > se
        out.steps.append(
            {
                "round": s.round,
                "pass@1": round(s.pass1, 6),
                "best_before": out.best,
                "best_pass@1": round(best.pass1, 6),
                "diff": round(diff, 6),
                "se": round(se, 6),
                "gain": gain,
            }
        )
        if gain:
            out.best, out.without_gain = s.round, 0
        else:
            out.without_gain += 1
    return out


@dataclass(frozen=True)
class Decision:
    action: str  # continue | stop | rollback
    rule: str | None  # on_collapse | stop_after_no_gain | None
    next_source: int | None  # the round the next round samples from (None: stopped)
    message: str
    evidence: dict[str, Any]


def decide(
    rnd: int,
    scores: list[RoundScore],
    warnings: list[dict[str, Any]],
    on_collapse: str,
    stop_after_no_gain: int,
) -> Decision:
    """What follows round ``rnd``: stop (collapse under ``on_collapse = "stop"``, or
    ``stop_after_no_gain`` rounds without gain), roll back to the best round (collapse
    under ``"rollback"``, when the best is an earlier round), or continue from ``rnd``."""
    w = walk(scores)
    by_round = {s.round: s for s in scores}
    fired = sorted({x["rule"] for x in warnings})
    evidence: dict[str, Any] = {
        "pass@1": {str(s.round): round(s.pass1, 6) for s in scores},
        "best_round": w.best,
        "rounds_without_gain": w.without_gain,
        "steps": w.steps,
        "warnings": [{"rule": x["rule"], "message": x["message"]} for x in warnings],
        "on_collapse": on_collapse,
        "stop_after_no_gain": stop_after_no_gain,
    }
    best = by_round.get(w.best)
    here = by_round.get(rnd)
    best_text = f"round {w.best} pass@1 {best.pass1:.3f}" if best else f"round {w.best}"
    now_text = f"round {rnd} pass@1 {here.pass1:.3f}" if here else f"round {rnd}"
    rules = ", ".join(fired)
    if fired and on_collapse == "stop":
        msg = (
            f"round {rnd}: collapse rules fired ({rules}); on_collapse = stop: the run ends "
            f"before round {rnd + 1}'s sampling ({now_text}; best {best_text})"
        )
        return Decision("stop", "on_collapse", None, msg, evidence)
    if stop_after_no_gain and w.without_gain >= stop_after_no_gain:
        last = w.steps[-1] if w.steps else {}
        msg = (
            f"round {rnd}: {w.without_gain} round(s) without a pass@1 gain beyond one standard "
            f"error over {best_text} ({now_text}, difference {last.get('diff', 0):+.3f}, "
            f"se {last.get('se', 0):.3f}); stop_after_no_gain = {stop_after_no_gain}: the run "
            f"ends before round {rnd + 1}'s sampling"
        )
        return Decision("stop", "stop_after_no_gain", None, msg, evidence)
    if fired and on_collapse == "rollback":
        if w.best != rnd:
            msg = (
                f"round {rnd}: collapse rules fired ({rules}); on_collapse = rollback: round "
                f"{rnd + 1} samples from round {w.best}, the best so far ({best_text}; {now_text})"
            )
            return Decision("rollback", "on_collapse", w.best, msg, evidence)
        msg = (
            f"round {rnd}: collapse rules fired ({rules}); on_collapse = rollback, but round "
            f"{rnd} is the best so far ({now_text}): round {rnd + 1} samples from it"
        )
        return Decision("continue", "on_collapse", rnd, msg, evidence)
    fired_text = f"; collapse rules fired ({rules}), on_collapse = warn" if fired else ""
    msg = (
        f"round {rnd}: continue ({now_text}; best {best_text}; {w.without_gain} round(s) "
        f"without gain{fired_text})"
    )
    return Decision("continue", None, rnd, msg, evidence)
