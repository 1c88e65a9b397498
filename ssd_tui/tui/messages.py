"""How a screen asks the app to show another: the app owns navigation.

A screen posts one of these; it bubbles up to `SSDApp`, which builds the screen asked
for and pushes it (or switches to it). So screens never import each other, and only the
app knows which module each screen lives in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

from ssd_tui.tui.refs import RunRef

if TYPE_CHECKING:
    from ssd_tui.tui.workbench import OverlayRun


class OpenDashboard(Message):
    """A run's dashboard, pushed; with `replace`, in place of the asking screen."""

    def __init__(self, ref: RunRef, replace: bool = False) -> None:
        super().__init__()
        self.ref, self.replace = ref, replace


class OpenSamples(Message):
    """The sample browser on a run, filtered to a round, a problem or given samples, and
    to evaluation samples at `eval_temperature` (None: every temperature)."""

    def __init__(
        self,
        ref: RunRef,
        round: int | None = None,
        problem: str | None = None,
        sample_ids: tuple[int, ...] | None = None,
        note: str = "",
        eval_temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.ref, self.round, self.problem = ref, round, problem
        self.sample_ids, self.note = sample_ids, note
        self.eval_temperature = eval_temperature


class OpenGrid(Message):
    """A run's problems × rounds grid: solved share per round, flips, McNemar's test."""

    def __init__(self, ref: RunRef) -> None:
        super().__init__()
        self.ref = ref


class OpenDiff(Message):
    """Two samples side by side; A chosen by the diff screen when `a_id` is None."""

    def __init__(self, ref: RunRef, a_id: int | None, b_id: int) -> None:
        super().__init__()
        self.ref, self.a_id, self.b_id = ref, a_id, b_id


class OpenTokens(Message):
    """One sample's tokens with their fork and lock positions."""

    def __init__(self, ref: RunRef, sample_id: int) -> None:
        super().__init__()
        self.ref, self.sample_id = ref, sample_id


class OpenSearch(Message):
    """Text search over run DBs, each with the label its hits show."""

    def __init__(self, dbs: list[tuple[Path, str]]) -> None:
        super().__init__()
        self.dbs = dbs


class OpenOverlay(Message):
    """Several runs on one chart."""

    def __init__(self, runs: list[OverlayRun], title: str) -> None:
        super().__init__()
        self.runs, self.title = runs, title


class OpenNewRun(Message):
    """The new-run form."""


class OpenTrainCurves(Message):
    """A run's training loss and learning rate per step."""

    def __init__(self, ref: RunRef) -> None:
        super().__init__()
        self.ref = ref


class OpenNotes(Message):
    """A run's notes and tags; a new note is on round `round` unless changed (None: the run)."""

    def __init__(self, ref: RunRef, round: int | None) -> None:
        super().__init__()
        self.ref, self.round = ref, round


class ChooseSeries(Message):
    """The toggle list over a chart's series; `done` gets the hidden names (None: cancelled)."""

    def __init__(
        self, names: list[str], hidden: set[str], done: Callable[[set[str] | None], None]
    ) -> None:
        super().__init__()
        self.names, self.hidden, self.done = names, hidden, done


class GoBack(Message):
    """Leave the asking screen: for the one under it, else the runs list (made now), or
    quit when the app only reviews files."""
