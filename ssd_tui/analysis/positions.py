"""Fork and lock positions: the one rule that classes a token position.

A fork is a position where the model hesitates (high entropy of the full next-token
distribution), a lock one where it is sure (a top-1 probability at or above a
threshold). The analysis classes round 0's probe positions with it, and the app's token
view classes a sample's tokens with it.
"""

from __future__ import annotations

import numpy as np

from ssd_tui.config import AnalysisSection

FORK, LOCK = 1, 2  # position classes; 0 = neither
KINDS = ("", "fork", "lock")  # a class's name, by class


def classify_positions(
    entropies: np.ndarray, top1: np.ndarray, acfg: AnalysisSection
) -> np.ndarray:
    """int8 per position: 2 = lock (top-1 ≥ lock_top1), 1 = fork (entropy ≥ fork_entropy), 0 = neither.

    Lock wins when both hold: a confident top token over a long flat tail of distractors
    can have high entropy, and that is exactly the paper's lock (a precision position).
    A NaN (a statistic not recorded) never qualifies.
    """
    classes = np.zeros(len(entropies), dtype=np.int8)
    classes[np.asarray(entropies) >= acfg.fork_entropy] = FORK
    classes[np.asarray(top1) >= acfg.lock_top1] = LOCK
    return classes
