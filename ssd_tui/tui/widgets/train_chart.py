"""Training loss (left axis) and learning rate (right axis) per optimiser step, round after
round on one step axis, from the run's train_log. Legend outside the plot."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ssd_tui.tui.workbench import PALETTE, rgb

TrainLog = dict[int, list[tuple[int, float | None, float | None]]]
LR_COLOR = (170, 170, 170)


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

    def on_mount(self) -> None:
        super().on_mount()
        self.replot()

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
        for i, (_rnd, rows) in enumerate(sorted(log.items())):
            pts = [(s, loss) for s, loss, _ in rows if loss is not None]
            lrs = [(s, lr) for s, _, lr in rows if lr is not None]
            color = PALETTE[i % len(PALETTE)]
            if len(pts) == 1:
                plt.scatter([pts[0][0]], [pts[0][1]], color=color, marker="●")
            elif pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker="hd")
            if lrs:
                plt.plot(
                    [p[0] for p in lrs],
                    [p[1] for p in lrs],
                    color=LR_COLOR,
                    marker="dot",
                    yside="right",
                )
        plt.xlabel("optimiser step" + (" (rounds one after another)" if one is None else ""))
        plt.ylabel("loss", yside="left")
        plt.ylabel("lr", yside="right")
        self.refresh()


def legend(log: TrainLog, shown_round: int | None) -> Text:
    out = Text()
    rounds = sorted(log) if shown_round is None else [shown_round]
    for i, rnd in enumerate(rounds):
        rows = log.get(rnd, [])
        losses = [loss for _, loss, _ in rows if loss is not None]
        out.append("━━ ", style=rgb(PALETTE[i % len(PALETTE)]))
        out.append(f"round {rnd} loss")
        if losses:
            out.append(f"  {losses[0]:.3f} → {losses[-1]:.3f}, {len(rows)} steps", style="dim")
        out.append("\n")
    out.append("⋅⋅ ", style=rgb(LR_COLOR))
    out.append("learning rate (right axis)")
    return out


class TrainChart(Horizontal):
    DEFAULT_CSS = """
    TrainChart { height: 1fr; min-height: 12; }
    TrainChart > #train-legend { width: 40; height: 1fr; padding: 1 1; border-left: solid $panel-lighten-2; }
    """

    def compose(self) -> ComposeResult:
        yield TrainPlot(id="train-plot")
        yield Static("", id="train-legend")

    def set_data(self, log: TrainLog, shown_round: int | None = None) -> None:
        self.query_one(TrainPlot).set_data(log, shown_round)
        self.query_one("#train-legend", Static).update(
            legend(log, shown_round) if log else Text("no training steps yet", style="dim")
        )
