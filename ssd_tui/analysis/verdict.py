"""What a run says about itself in one line: SSD against tuning T_eval alone."""

from __future__ import annotations

from typing import Any

from ssd_tui.analysis.rounds import compare_baseline


def baseline_verdict(store: Any, cfg: Any, last_round: int | None = None) -> str | None:
    """SSD against tuning T_eval alone, in one line (None until both are measured), over
    the SSD rounds up to ``last_round`` (None: every round).

    The CLI prints it when a run ends, over the rounds it showed; the app's dashboard
    shows the same line over the whole run.
    """
    cmp = compare_baseline(store, cfg, last_round)
    if not cmp:
        return None
    verb = "beats" if cmp["gain"] > 0 else "does not beat"
    return (
        f"SSD {verb} the temperature-only baseline: best round {cmp['ssd_round']} pass@1 "
        f"{cmp['ssd_pass@1']:.3f} vs the base model at T_eval={cmp['baseline_temperature']:g} "
        f"{cmp['baseline_pass@1']:.3f} ({cmp['gain']:+.3f})"
    )
