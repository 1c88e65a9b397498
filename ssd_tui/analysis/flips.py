"""Where a round's gains and losses are: problems × rounds, flips, McNemar's test.

A problem is **solved** in a round when at least half of its evaluation samples at T_eval
pass (with one sample a problem: when it passes). A **flip** is a problem whose solved state
differs between two rounds. McNemar's exact test asks whether the flips one way (b: unsolved
→ solved) and the other (c: solved → unsolved) are more lopsided than a fair coin would make
them: two-sided p = min(1, 2 · P(X ≤ min(b, c))) for X ~ Binomial(b + c, ½); 1 without flips.
It pairs the same problems across two rounds, which the pass@1 difference alone ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ssd_tui.store.run_store import RunStore

PassCounts = Sequence[tuple[str, str | None, int, int]]  # (problem, difficulty, n, passed)


def solved(n: int, passed: int) -> bool:
    """At least half the samples pass (ties count as solved: 1 of 2, 0.5 of the votes)."""
    return n > 0 and 2 * passed >= n


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class McNemar:
    a: int  # the earlier round
    b_round: int  # the later round
    gained: int  # problems unsolved in a, solved in b
    lost: int  # problems solved in a, unsolved in b
    pairs: int  # problems in both rounds
    p: float


def compare(a: int, b: int, counts_a: PassCounts, counts_b: PassCounts) -> McNemar:
    """McNemar's test between two rounds' per-problem pass counts (problems in both)."""
    sa = {name: solved(n, c) for name, _, n, c in counts_a if n}
    sb = {name: solved(n, c) for name, _, n, c in counts_b if n}
    both = sa.keys() & sb.keys()
    gained = sum(1 for name in both if sb[name] and not sa[name])
    lost = sum(1 for name in both if sa[name] and not sb[name])
    return McNemar(a, b, gained, lost, len(both), mcnemar_p(gained, lost))


@dataclass
class GridRow:
    """One problem across rounds: its pass share per round and where it flipped."""

    problem: str
    difficulty: str | None
    shares: dict[int, float] = field(default_factory=dict)  # round → passed / n
    counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # round → (n, passed)

    def solved(self, rnd: int) -> bool | None:
        nc = self.counts.get(rnd)
        return None if nc is None else solved(*nc)

    def flip(self, rnd: int) -> int:
        """+1 when the problem became solved at ``rnd`` (vs the round before it that has
        it), −1 when it stopped being solved, 0 otherwise."""
        earlier = [r for r in self.counts if r < rnd]
        now = self.solved(rnd)
        if not earlier or now is None:
            return 0
        before = self.solved(max(earlier))
        return 0 if before == now else (1 if now else -1)

    @property
    def flips(self) -> int:
        return sum(1 for r in self.counts if self.flip(r))


def grid(by_round: dict[int, PassCounts]) -> list[GridRow]:
    """Problems × rounds from each round's per-problem pass counts, in problem order."""
    rows: dict[str, GridRow] = {}
    for rnd in sorted(by_round):
        for name, difficulty, n, c in by_round[rnd]:
            if not n:
                continue
            row = rows.setdefault(name, GridRow(name, difficulty))
            row.shares[rnd] = c / n
            row.counts[rnd] = (n, c)
    return list(rows.values())


def round_pass_counts(store: RunStore, temperature: float) -> dict[int, PassCounts]:
    """Each round's per-problem pass counts at one temperature (rounds with verdicts)."""
    out = {}
    for r in sorted({row["round"] for row in store.rounds()} | store.metric_rounds()):
        counts = store.pass_counts(r, temperature)
        if counts:
            out[r] = counts
    return out


def mcnemar_table(by_round: dict[int, PassCounts]) -> list[McNemar]:
    """McNemar's test for every pair of rounds (earlier, later)."""
    rounds = sorted(by_round)
    return [
        compare(a, b, by_round[a], by_round[b])
        for i, a in enumerate(rounds)
        for b in rounds[i + 1 :]
    ]
