"""Help: the keys of the screen you came from, and what the views show."""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

NOTES = """\
ssd-tui follows a run through its database (RUN_DIR/run.db). The engine is a separate
process (`ssd-tui run CONFIG`, started by the dashboard's keys with output in
RUN_DIR/engine.log); quitting the app leaves it running, and an engine crash never
takes the app down: the dashboard says the stage was left running and `s` resumes it.

Dashboard: s runs the next stage, r finishes the next round, u runs up to round N
(`ssd-tui run --rounds N`: round 0 is the base model, rounds 1..N are SSD rounds);
p pauses after the current stage (SIGUSR1), x stops between batches (SIGINT, resumable).
Rounds with a ⚠ badge have mode-collapse warnings: w shows them with their evidence,
j jumps to the samples behind the selected one. The ⚑ column counts a round's suspect
samples: programs whose source looks like it games the tests (a flag, not a verdict).
The p column is McNemar's exact test of each round against round 0 (m: against the
highlighted round): p of the problems that flipped between solved (at least half the
samples pass) and unsolved. g opens problems × rounds: each problem's pass share per
round, ↑/↓ where it became solved or stopped; d, f, o sort by difficulty, by flips, as
listed; b shows behaviours (distinct classes, their entropy); enter opens that problem's
samples of that round.
The chart: lines in braille, a marker on every measured round (● pass@1, ◆ pass@k);
c chooses its series (per-difficulty ones start hidden), f steps to the fork/lock probe
(one panel per statistic, each on its own y-axis in its unit: entropies and log-probs in
nats, masses as probabilities), a page of panels at a time, and back.

Samples: [ and ] change the round, v the verdict filter, ! shows suspect samples only
(⚑ beside the verdict, the reasons under it), o eval/train; the list starts on the run's
own evaluation samples at T_eval (round 0 also holds the temperature-only baseline's at
other temperatures): T shows every temperature, then each one; the T column says which.
m marks a sample as A, d diffs A with the highlighted one (no A marked: the same problem,
sample index, purpose and T one round earlier, or a line saying there is none);
t shows its tokens.

Tokens: colour = entropy of the full next-token distribution (nats). p(T=1) is the
token's probability in that distribution (T = 1, before truncation), not the one it was
sampled with. A fork is a position with entropy ≥ [analysis] fork_entropy; a lock one
whose sampled token had p(T=1) ≥ [analysis] lock_top1 (so it was the top-1 token, with
at least that mass).

Every key is also in the command palette (ctrl+p)."""


def help_title(screen: Screen) -> str:
    """A screen's name for people (its HELP_TITLE), never a class name."""
    title = getattr(screen, "HELP_TITLE", "")
    if title:
        return title
    words = re.findall(r"[A-Z][a-z]+", type(screen).__name__.removesuffix("Screen"))
    return " ".join(words).lower() or "this screen"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        table = Table(
            title=f"keys: {help_title(self.under)}",
            expand=True,
            show_edge=False,
            header_style="bold",
        )
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("action")
        table.add_column("what it does", style="dim")
        seen = set()
        for active in self.under.active_bindings.values():
            b = active.binding
            if not b.show or not b.description or b.action in seen:
                continue
            seen.add(b.action)
            table.add_row(self.app.get_key_display(b), b.description, b.tooltip)
        table.add_row("ctrl+p", "Command palette", "search every action of this screen")
        table.add_row("ctrl+q", "Quit", "the engine keeps running")
        with VerticalScroll(id="help"):
            yield Static(Group(table, Text(""), Text(NOTES)))

    def action_dismiss(self) -> None:
        self.dismiss(None)
