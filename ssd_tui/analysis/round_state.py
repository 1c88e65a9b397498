"""Where a run stands: each round's state from its stages, and the round to run next."""

from __future__ import annotations

from collections.abc import Sequence

from ssd_tui.store.reads import RoundRow, StageRow


def round_state(round_status: str, stages: list[StageRow], engine_alive: bool) -> tuple[str, str]:
    """(status, stage) of one round for the rounds table."""
    for st in stages:
        if st.status == "running":
            # 'running' in the DB but no engine holds the lock: the engine died mid-stage.
            return ("running" if engine_alive else "interrupted"), st.stage
    for bad in ("failed", "stopped"):
        for st in stages:
            if st.status == bad:
                return bad, st.stage
    if stages and all(st.status == "done" for st in stages):
        return "done", stages[-1].stage
    nxt = next((st for st in stages if st.status != "done"), None)
    if nxt is not None and any(st.status == "done" for st in stages):
        return "paused", nxt.stage
    return round_status if round_status != "running" else "pending", nxt.stage if nxt else ""


def next_round_target(rounds: Sequence[RoundRow]) -> int:
    """`--rounds` value that finishes the next unfinished round (0 for a fresh run)."""
    for r in rounds:
        if r.status != "done":
            return r.round
    return (rounds[-1].round + 1) if rounds else 0
