"""Problems × rounds: solved shares, flips and McNemar's exact test (analysis/flips.py)."""

from __future__ import annotations

import math

import pytest

from ssd_tui.analysis import flips


def test_mcnemar_exact_p_values():
    assert flips.mcnemar_p(0, 0) == 1.0
    assert flips.mcnemar_p(5, 5) == 1.0  # balanced flips: no evidence either way
    # 6 gained, 0 lost: 2 * (1/2)^6
    assert flips.mcnemar_p(6, 0) == pytest.approx(2 / 64)
    assert flips.mcnemar_p(0, 6) == flips.mcnemar_p(6, 0)  # two-sided
    # the README's Qwen figure: 15 problems flipped to passed, 17 to failed, p = 0.86
    assert flips.mcnemar_p(15, 17) == pytest.approx(0.86, abs=0.005)
    b, c = 10, 2
    tail = sum(math.comb(12, i) for i in range(3)) / 2**12
    assert flips.mcnemar_p(b, c) == pytest.approx(2 * tail)


def test_solved_is_at_least_half_the_samples():
    assert flips.solved(1, 1) and not flips.solved(1, 0)
    assert flips.solved(5, 3) and not flips.solved(5, 2)
    assert flips.solved(2, 1) and not flips.solved(0, 0)


ROUND0 = [("a", "easy", 5, 5), ("b", "hard", 5, 0), ("c", "hard", 5, 1), ("d", "medium", 5, 4)]
ROUND1 = [("a", "easy", 5, 4), ("b", "hard", 5, 3), ("c", "hard", 5, 4), ("d", "medium", 5, 1)]
ROUND2 = [("a", "easy", 5, 5), ("b", "hard", 5, 5), ("c", "hard", 5, 0), ("d", "medium", 5, 2)]


def test_compare_pairs_problems_between_two_rounds():
    m = flips.compare(0, 1, ROUND0, ROUND1)
    assert (m.gained, m.lost, m.pairs) == (2, 1, 4)  # b and c became solved, d stopped
    assert m.p == pytest.approx(flips.mcnemar_p(2, 1))
    # a problem missing from one round is not paired
    m = flips.compare(0, 1, ROUND0, ROUND1[:2])
    assert (m.gained, m.lost, m.pairs) == (1, 0, 2)


def test_grid_marks_flips_against_the_round_before():
    rows = {r.problem: r for r in flips.grid({0: ROUND0, 1: ROUND1, 2: ROUND2})}
    assert rows["a"].shares == {0: 1.0, 1: 0.8, 2: 1.0} and rows["a"].flips == 0
    assert [rows["b"].flip(r) for r in (0, 1, 2)] == [0, 1, 0]
    assert [rows["c"].flip(r) for r in (0, 1, 2)] == [0, 1, -1] and rows["c"].flips == 2
    assert [rows["d"].flip(r) for r in (0, 1, 2)] == [0, -1, 0]
    assert rows["b"].difficulty == "hard"


def test_mcnemar_table_has_every_pair_of_rounds():
    table = flips.mcnemar_table({0: ROUND0, 1: ROUND1, 2: ROUND2})
    assert [(m.a, m.b_round) for m in table] == [(0, 1), (0, 2), (1, 2)]
    assert (table[1].gained, table[1].lost) == (1, 1)  # b gained, d lost; c unsolved in both
