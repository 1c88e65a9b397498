"""What a round trains on (``[rounds] data``) and on which weights (``[rounds] adapter``);
docs/rounds.md.

Pure choices over the rounds' kept samples (after the stub filter and ``[train]``'s own
rules): the pipeline hands each round's list in, with the rounds its model descends from,
and writes the chosen set down (``train_sets``) before training on it. A draw is seeded by
the round's identity, so a rerun trains on exactly the same set.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from ssd_tui.config import RoundsSection

T = TypeVar("T")

#: The round whose samples anchor every later round (``data = "anchor"``): the first,
#: drawn from round 0's model, the base model's own distribution.
ANCHOR_ROUND = 1


def _draw(items: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` of ``items`` without replacement, kept in their order."""
    if n >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]


def training_set(
    policy: RoundsSection,
    rnd: int,
    line: Sequence[int],
    kept: Callable[[int], list[T]],
    seed: int,
) -> list[T]:
    """Round ``rnd``'s training set.

    ``line``: the rounds whose samples made this round's model and its own, newest first
    (``rnd``, the round it sampled from, that round's, … down to round 1; a rollback
    leaves the rounds it skipped out). ``kept(r)``: round r's kept samples, in order.

    - latest: round ``rnd``'s own;
    - accumulate: the samples of every round on the line; with ``accumulate_budget =
      "steps"`` an even draw of as many as round ``rnd`` has (the same optimiser steps
      as latest), with ``"epochs"`` all of them;
    - anchor: as many as round ``rnd`` has, ``anchor_share`` of them drawn from round 1's
      samples and the rest from its own (round 1 itself trains on its own).
    """
    own = kept(rnd)
    if policy.data == "accumulate":
        pool = [x for r in sorted(line) for x in kept(r)]
        return pool if policy.accumulate_budget == "epochs" else _draw(pool, len(own), seed)
    if policy.data == "anchor" and rnd != ANCHOR_ROUND:
        anchor = kept(ANCHOR_ROUND)
        n_anchor = min(len(anchor), round(policy.anchor_share * len(own)))
        return _draw(anchor, n_anchor, seed) + _draw(own, len(own) - n_anchor, seed + 1)
    return own
