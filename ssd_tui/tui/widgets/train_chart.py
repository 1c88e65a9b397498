"""Training loss (left axis) and learning rate (right axis) per optimiser step, round after
round on one step axis, from the run's train_log. Legend outside the plot.

Lines in braille (2 x 4 dots a cell); the logged steps of each round's loss are marked
where the marks stay apart (a step every 4 cells or more), else each round's first and last
step (the legend's first → last loss)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ssd_tui.tui.widgets.plot_marks import Mark, Panel, marked
from ssd_tui.tui.workbench import PALETTE, rgb

TrainLog = dict[int, list[tuple[int, float | None, float | None]]]
LR_COLOR = (170, 170, 170)
LINE = "braille"  # plotext's marker for lines: 2 x 4 dots a cell
MARK_EVERY = 4  # cells between marked steps, at least


def global_steps(log: TrainLog) -> dict[int, list[tuple[int, float | None, float | None]]]:
    """The rounds' steps placed one after another on one axis (round k starts after k-1)."""
    out, offset = {}, 0
    for rnd in sorted(log):
        rows = log[rnd]
        out[rnd] = [(offset + s, loss, lr) for s, loss, lr in rows]
        offset += (max(s for s, _, _ in rows) + 1) if rows else 0
    return out


class TrainPlot(PlotextPlot):
    DEFAULT_CSS = """
    TrainPlot { width: 1fr; height: 1fr; min-height: 10; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.steps_log: TrainLog = {}
        self.shown_round: int | None = None  # None: every round
        self._panels: list[Panel] = []

    def on_mount(self) -> None:
        super().on_mount()
        self.replot()

    def on_resize(self) -> None:
        self.replot()  # whether every step's mark fits depends on the width

    def render(self) -> RenderResult:
        picture = super().render()
        return (
            marked(picture, self._panels, self.plt.build) if isinstance(picture, Text) else picture
        )

    def set_data(self, log: TrainLog, shown_round: int | None = None) -> None:
        if (log, shown_round) == (self.steps_log, self.shown_round):
            return
        self.steps_log, self.shown_round = log, shown_round
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        one = self.shown_round
        plt.title(
            "training loss (left) and learning rate (right) per step"
            + (f", round {one}" if one is not None else "")
        )
        log = (
            {one: self.steps_log.get(one, [])} if one is not None else global_steps(self.steps_log)
        )
        losses = {
            rnd: [(s, loss) for s, loss, _ in rows if loss is not None] for rnd, rows in log.items()
        }
        every = sum(len(p) for p in losses.values()) * MARK_EVERY <= max(1, self.size.width - 12)
        marks: list[Mark] = []
        for i, (rnd, rows) in enumerate(sorted(log.items())):
            pts, color = losses[rnd], PALETTE[i % len(PALETTE)]
            lrs = [(s, lr) for s, _, lr in rows if lr is not None]
            if len(pts) == 1:
                plt.scatter([pts[0][0]], [pts[0][1]], color=color, marker="●")
            elif pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=LINE)
                marked = pts if every else [pts[0], pts[-1]]
                marks += [Mark(x, y, "●", rgb(color)) for x, y in marked]
            if lrs:
                plt.plot(
                    [p[0] for p in lrs],
                    [p[1] for p in lrs],
                    color=LR_COLOR,
                    marker=LINE,
                    yside="right",
                )
        self._panels = [self._limits(losses, marks)]
        plt.xlabel("optimiser step" + (" (rounds one after another)" if one is None else ""))
        plt.ylabel("loss", yside="left")
        plt.ylabel("lr", yside="right")
        self.refresh()

    def _limits(self, losses: dict[int, list[tuple[int, float]]], marks: list[Mark]) -> Panel:
        """Set the step axis and the loss axis (plotext's own fit puts the extremes on the
        frame) and return them with the marks, to put the marks in place."""
        steps = [s for pts in losses.values() for s, _ in pts]
        values = [v for pts in losses.values() for _, v in pts]
        if not values:
            return Panel((0.0, 1.0), (0.0, 1.0))
        xlim = (min(steps), max(steps)) if max(steps) > min(steps) else (steps[0] - 1, steps[0] + 1)
        pad = 0.05 * (max(values) - min(values)) or 0.05 * abs(values[0]) or 0.05
        ylim = (min(values) - pad, max(values) + pad)
        self.plt.xlim(*xlim)
        self.plt.ylim(*ylim, yside="left")
        return Panel(xlim, ylim, marks)


def legend(log: TrainLog, shown_round: int | None) -> Text:
    out = Text()
    rounds = sorted(log) if shown_round is None else [shown_round]
    for i, rnd in enumerate(rounds):
        rows = log.get(rnd, [])
        losses = [loss for _, loss, _ in rows if loss is not None]
        out.append("─●─ ", style=rgb(PALETTE[i % len(PALETTE)]))
        out.append(f"round {rnd} loss")
        if losses:
            out.append(f"  {losses[0]:.3f} → {losses[-1]:.3f}, {len(rows)} steps", style="dim")
        out.append("\n")
    out.append("─── ", style=rgb(LR_COLOR))
    out.append("learning rate (right axis)")
    return out


class TrainChart(Horizontal):
    DEFAULT_CSS = """
    TrainChart { height: 1fr; min-height: 12; }
    TrainChart > #train-legend { width: 44; height: 1fr; padding: 1 1; border-left: solid $panel-lighten-2; }
    """

    def compose(self) -> ComposeResult:
        yield TrainPlot(id="train-plot")
        yield Static("", id="train-legend")

    def set_data(self, log: TrainLog, shown_round: int | None = None) -> None:
        self.query_one(TrainPlot).set_data(log, shown_round)
        self.query_one("#train-legend", Static).update(
            legend(log, shown_round) if log else Text("no training steps yet", style="dim")
        )
