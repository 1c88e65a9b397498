"""pass@1 of many runs on one chart: one line per group (a setting, or one run), with a
mean ± sd band where a group has several seeds, and the legend outside the plot.

A new widget beside `PassCurve` (the dashboard's chart); the conventions are the same:
attributes down through `set_data`, which replots only when the data changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.strip import Strip
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ssd_tui.tui.widgets.plot_marks import Mark, Panel, marked

Color = tuple[int, int, int]
LINE = "braille"  # plotext's marker for lines: 2 x 4 dots a cell, not a staircase of blocks


@dataclass(frozen=True)
class Series:
    """One line: (round, mean, sd or None) points, its colour, and whether it is shown."""

    label: str
    color: Color
    points: tuple[tuple[int, float, float | None], ...]
    n: int = 1  # runs averaged
    hidden: bool = False


@dataclass(frozen=True)
class OverlayState:
    series: tuple[Series, ...] = ()
    baseline: float | None = None  # best temperature-only baseline (mean over the runs)
    bands: bool = True
    extra: tuple[Series, ...] = field(default=())  # single runs drawn thin (the "every run" view)


class OverlayPlot(PlotextPlot):
    """Drawn off the UI thread: plotext builds the picture in a thread worker and `render`
    hands out the last one built, so a redraw of many curves never holds up input
    (benchmarks/bench_overlay.py). A resize asks for a new picture the same way."""

    DEFAULT_CSS = """
    OverlayPlot { width: 1fr; height: 1fr; min-height: 10; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.state = OverlayState()
        self._picture: list[Strip] = []  # one line each, built with the picture
        self._picture_key: tuple | None = None  # (state, width, height, theme) it was built for
        self._building: tuple | None = None
        self._fed = False  # no picture before the first state handed down
        self.builds = 0  # pictures built (benchmarks/bench_overlay.py prints it)

    def on_mount(self) -> None:
        super().on_mount()
        self.refresh()

    def set_state(self, state: OverlayState) -> None:
        if state == self.state and self._fed:
            return
        self.state, self._fed = state, True
        self._maybe_build()  # now, not at the next paint: the worker starts ~a frame sooner
        self.refresh()

    @property
    def drawn_state(self) -> OverlayState | None:
        """The state of the picture on screen (None before the first one)."""
        return self._picture_key[0] if self._picture_key else None

    @property
    def picture_is_current(self) -> bool:
        """The picture on screen is of the current state, at the current size."""
        key = self._picture_key
        return key is not None and key[:3] == (self.state, self.size.width, self.size.height)

    def render_line(self, y: int) -> Strip:
        """The built picture's line y (lines are made once per picture, in the worker; a
        plotext picture as one Text would be re-split into lines at every repaint)."""
        self._maybe_build()
        if y < len(self._picture):
            return self._picture[y]
        return Strip.blank(self.size.width, self.rich_style)

    def _maybe_build(self) -> None:
        key = (self.state, self.size.width, self.size.height, self.app.theme)
        # One build at a time, the latest wins: a key that changes while one is built
        # (the tables below fill, the layout settles) is built when that one is done
        # (`_built` repaints). Builds side by side would share one plotext figure, and
        # each costs 30-100 ms of CPU the first paint waits for. Nothing to draw before
        # the first data.
        if (
            key != self._picture_key
            and self._building is None
            and self.size.width > 0
            and self._fed
        ):
            self._building = key
            self._build(key)

    @work(thread=True, group="overlay-plot")
    def _build(self, key: tuple) -> None:
        state, width, height, theme = key
        plt = self.plt
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(self._get_plotext_theme_name(theme))
        panel = self.replot(state)
        console = self.app.console
        text = marked(Text.from_ansi(plt.build()), [panel], plt.build)
        picture = [
            Strip(list(line.render(console)), line.cell_len).adjust_cell_length(width)
            for line in text.split("\n", allow_blank=True)[:height]
        ]
        self.app.call_from_thread(self._built, key, picture)

    def _built(self, key: tuple, picture: list[Strip]) -> None:
        self._picture, self._picture_key = picture, key
        self.builds += 1
        self._building = None
        self.refresh()

    def replot(self, state: OverlayState | None = None) -> Panel:
        """Set up the plotext figure for `state` (in the build worker); returns the markers
        of the measured rounds (● a setting's mean, • a single run), to put in place on the
        built picture (`place_marks`)."""
        state = state or self.state
        plt = self.plt
        plt.clear_data()
        plt.title("pass@1 at T_eval by round (%)")
        shown = [s for s in state.series if not s.hidden and s.points]
        extra = [s for s in state.extra if not s.hidden and s.points]
        rounds = {p[0] for s in shown + extra for p in s.points}
        values: list[float] = []
        marks: list[Mark] = []
        if state.baseline is not None and rounds:  # first: the lines cross it, not under it
            lo, hi = min(rounds), max(rounds)
            values.append(100 * state.baseline)
            plt.plot([lo, max(hi, lo + 1)], [100 * state.baseline] * 2, color="gray", marker="-")
        for s in extra:  # every run, thin
            xs, ys = [p[0] for p in s.points], [100 * p[1] for p in s.points]
            values += ys
            plt.plot(xs, ys, color=s.color, marker=LINE)
            marks += _marks(xs, ys, "•", s.color)
        if state.bands:  # bands first: the means are drawn over them
            for s in shown:
                if any(p[2] for p in s.points):
                    xs = [p[0] for p in s.points]
                    for sign in (-1, 1):
                        ys = [100 * (p[1] + sign * (p[2] or 0)) for p in s.points]
                        values += ys
                        plt.plot(xs, ys, color=s.color, marker="⋅")
        for s in shown:
            xs, ys = [p[0] for p in s.points], [100 * p[1] for p in s.points]
            values += ys
            if len(xs) == 1:  # one round: a point, not an invisible line
                plt.scatter(xs, ys, color=s.color, marker="●")
            else:
                plt.plot(xs, ys, color=s.color, marker=LINE)
                marks += _marks(xs, ys, "●", s.color)
        xlim, ticks = (0.0, 1.0), []
        if rounds:
            lo, hi = min(rounds), max(rounds)
            ticks = list(range(lo, hi + 1))
            plt.xticks(ticks)
            xlim = (lo - 0.2, hi + 0.2 if hi > lo else lo + 1)
            plt.xlim(*xlim)
        ylim = fit_range(values)
        plt.ylim(*ylim)
        plt.xlabel("round")
        return Panel(xlim, ylim, marks, ticks, plt)


def _marks(xs: list[int], ys: list[float], glyph: str, color: Color) -> list[Mark]:
    style = "rgb({},{},{})".format(*color)
    return [Mark(x, y, glyph, style) for x, y in zip(xs, ys, strict=True)]


def fit_range(values: list[float], pad: float = 0.1, least: float = 5.0) -> tuple[float, float]:
    """A y-range (percent) around the data, at least `least` points tall, within 0..100."""
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    span = max(hi - lo, least)
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2 - pad * span, mid + span / 2 + pad * span
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 100:
        lo, hi = max(0.0, lo - (hi - 100)), 100.0
    return lo, hi


def legend_text(state: OverlayState) -> Text:
    """The legend, drawn beside the plot (never over the data)."""
    out = Text()
    for i, s in enumerate(state.series):
        mark = "   " if s.hidden else "─●─"  # the line and its marker on measured rounds
        out.append(f"{mark} ", style="rgb({},{},{})".format(*s.color))
        out.append(s.label, style="dim strike" if s.hidden else "")
        if s.n > 1:
            out.append(f" ({s.n} seeds" + (", ⋅ ±sd)" if state.bands else ")"), style="dim")
        if i < len(state.series) - 1:
            out.append("\n")
    if state.baseline is not None:
        out.append("\n── ", style="gray50")
        out.append(f"best T-only baseline {100 * state.baseline:.1f}%", style="dim")
    return out


class OverlayChart(Horizontal):
    """The plot and its legend side by side."""

    DEFAULT_CSS = """
    OverlayChart { height: 1fr; min-height: 12; }
    OverlayChart > #ov-legend { width: 40; height: 1fr; padding: 1 1; border-left: solid $panel-lighten-2; }
    """

    def compose(self) -> ComposeResult:
        yield OverlayPlot(id="ov-plot")
        yield Static("", id="ov-legend")

    def set_state(self, state: OverlayState) -> None:
        self.query_one(OverlayPlot).set_state(state)
        self.query_one("#ov-legend", Static).update(legend_text(state))

    @property
    def state(self) -> OverlayState:
        return self.query_one(OverlayPlot).state
