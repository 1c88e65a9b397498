"""Charts across rounds (textual-plotext): pass@1 / pass@k with per-difficulty series and
the temperature-only baseline, or the fork/lock probe statistics.

What keeps them readable in a small terminal:

* the legend is the widget's bottom border, outside the data, in the series' colours;
* series can be toggled (`hidden`); per-difficulty series start hidden, so their dots
  never cover the pass@1 / pass@k lines;
* the y-axis fits the data shown (with a margin), not a fixed 0-100;
* a single round is drawn as points labelled with their values (a line needs two);
* lines are drawn in braille (2 x 4 dots a cell: a straight line between two rounds is
  a line, not a staircase of half blocks), with a marker on every measured round;
* probe statistics get a panel each, with its own fitted y-axis labelled in its unit
  (entropies and log-probabilities in nats, masses as probabilities), as many panels a
  page as leave each one readable rows; `f` steps through the pages.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from ssd_tui.tui.widgets.plot_marks import Mark, Panel, marked

# Plotext colour names; pass@1 first and brightest.
SERIES_COLORS = {
    "pass@1": "cyan",
    "easy": "green",
    "medium": "yellow",
    "hard": "red",
}
# Each colour name as RGB: the plot and its legend (Rich) then show the same colour
# (plotext's named colours go through the terminal theme's ANSI palette, Rich's do not).
RGB = {
    "cyan": "#00d7ff",
    "blue": "#5f87ff",
    "green": "#5fd75f",
    "yellow": "#ffd75f",
    "red": "#ff5f5f",
    "magenta": "#d75fff",
    "orange": "#ff8700",
    "gray": "#8a8a8a",
    "white": "#e4e4e4",
}


def rgb(name: str) -> tuple[int, int, int]:
    h = RGB.get(name, RGB["white"])
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


PROBE_COLORS = ("magenta", "green", "yellow", "orange", "blue", "red")
BASELINE = "baseline"  # the toggle name of the temperature-only baseline line
LINE = "braille"  # plotext's marker for lines: 2 x 4 dots a cell
# A probe panel's least size (cells), title, frame, tick labels and unit included: room
# for 4 rows of data (16 braille dots, 3 y tick labels) and the labels of a few rounds.
PANEL_ROWS, PANEL_COLS = 9, 28


def is_scope_series(name: str) -> bool:
    """A per-difficulty series ("pass@1 easy", "A pass@1 hard"): hidden by default."""
    if name[:2] in ("A ", "B "):
        name = name[2:]
    return name.startswith("pass@") and " " in name


def probe_axis(name: str) -> str | None:
    """Which y-axis a probe statistic belongs on: entropies and log-probabilities (nats)
    on the left, probabilities and masses on the right; counts are not charted (None)."""
    if name.startswith("n_"):
        return None
    return "left" if "entropy" in name or "logprob" in name else "right"


def probe_unit(name: str) -> tuple[str, float, float]:
    """A charted probe statistic's unit and the range its values can take."""
    if "logprob" in name:
        return "log-prob, nats", float("-inf"), 0.0
    if "entropy" in name:
        return "nats", 0.0, float("inf")
    return "probability", 0.0, 1.0


def series_mark(name: str) -> str:
    """The marker on a series' measured rounds: pass@1 ●, pass@k ◆, a difficulty •
    (run B of a comparison: ▲, ■)."""
    if is_scope_series(name):
        return "•"
    if name.startswith("B "):  # review: the second run's marks differ in shape too
        return "▲" if name.endswith("pass@1") else "■"
    return "●" if name.endswith("pass@1") else "◆"


def fitted_range(values: list[float], lo: float, hi: float, pad: float) -> tuple[float, float]:
    """(low, high) around `values` with a margin, clipped to [lo, hi]; never empty."""
    if not values:
        return lo, hi
    vmin, vmax = min(values), max(values)
    margin = max(pad, 0.15 * (vmax - vmin))
    return max(lo, vmin - margin), min(hi, vmax + margin)


class PassCurve(PlotextPlot):
    """Series name → [(round, value 0..1)]; `set_data` replots (attributes down).

    `view` is "pass" (pass rates, in %) or "probe" (fork/lock statistics);
    `hidden` holds the names of series toggled off (`toggle`, `set_hidden`).
    """

    DEFAULT_CSS = """
    PassCurve {
        height: 1fr; min-height: 10;
        border: round $panel-lighten-2; border-title-color: $text-muted;
        border-subtitle-align: left;
    }
    """

    def __init__(self, title: str = "pass rate by round (%)", **kw) -> None:
        super().__init__(**kw)
        self.title = title
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.probe: dict[str, list[tuple[int, float]]] = {}
        self.baseline: tuple[float, float] | None = None
        self.provisional: tuple[int, float] | None = None
        self.view = "pass"
        self.probe_page = 0  # the probe view's page of panels
        self.hidden: set[str] = set()
        self._seen: set[str] = set()  # series named before: their toggle state is the user's
        self._panels: list[Panel] = []  # the markers on measured rounds, one list a plot

    def on_mount(self) -> None:
        super().on_mount()
        self.replot()

    def render(self) -> RenderResult:
        picture = super().render()  # sized and themed for the widget
        if not isinstance(picture, Text):
            return picture
        return marked(picture, self._panels, self.plt.build)

    def on_resize(self) -> None:
        if self.view == "probe":  # how many panels fit a page depends on the size
            self.replot()

    def points(self, name: str = "pass@1") -> list[tuple[int, float]]:
        return list(self.series.get(name, []))

    def set_data(
        self,
        series: dict[str, list[tuple[int, float]]],
        baseline: tuple[float, float] | None = None,
        provisional: tuple[int, float] | None = None,
        probe: dict[str, list[tuple[int, float]]] | None = None,
    ) -> None:
        probe = probe or {}
        if (series, baseline, provisional, probe) == (
            self.series,
            self.baseline,
            self.provisional,
            self.probe,
        ):
            return
        self.series = {k: list(v) for k, v in series.items()}
        self.probe = {k: list(v) for k, v in probe.items()}
        self.baseline = baseline
        self.provisional = provisional
        for name in self.series:
            if name not in self._seen and is_scope_series(name):
                self.hidden.add(name)
        self._seen |= set(self.series)
        self.replot()

    # ---- toggles ------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The toggleable series of the current view, in drawing order."""
        if self.view == "probe":
            return [n for n in self.probe if probe_axis(n)]
        out = list(self.series)
        if self.baseline is not None:
            out.append(BASELINE)
        return out

    def set_hidden(self, hidden: set[str]) -> None:
        self.hidden = set(hidden)
        self.replot()

    def toggle(self, name: str) -> None:
        self.hidden ^= {name}
        self.replot()

    def set_view(self, view: str, page: int = 0) -> None:
        self.view, self.probe_page = view, page
        self.replot()

    def next_view(self) -> None:
        """pass rates → each page of the probe → pass rates."""
        if self.view == "pass":
            self.set_view("probe")
        elif self.probe_page + 1 < self.probe_layout()[2]:
            self.set_view("probe", self.probe_page + 1)
        else:
            self.set_view("pass")

    def _probe_panels(self) -> list[tuple[str, list[tuple[int, float]]]]:
        return [
            (name, pts)
            for name, pts in self.probe.items()
            if pts and probe_axis(name) and name not in self.hidden
        ]

    def probe_layout(self) -> tuple[int, int, int]:
        """(rows, columns) of panels a page, and the number of pages, at the widget's size:
        as many panels as leave each PANEL_ROWS x PANEL_COLS cells, at least one."""
        n = len(self._probe_panels())
        width, height = self.size.width or 80, self.size.height or 20
        cols = max(1, min(n, width // PANEL_COLS))
        rows = max(1, min((n + cols - 1) // cols, height // PANEL_ROWS))
        return rows, cols, max(1, -(-n // (rows * cols)))

    def _color(self, name: str) -> str:
        if name[:2] in ("A ", "B "):  # review: two runs compared
            main = name.endswith("pass@1")
            return (
                ("cyan" if main else "blue")
                if name[0] == "A"
                else ("orange" if main else "magenta")
            )
        if name in SERIES_COLORS:
            return SERIES_COLORS[name]
        for key, color in SERIES_COLORS.items():
            if name.endswith(" " + key):
                return color
        return "blue" if name.startswith("pass@") else "white"

    # ---- drawing -------------------------------------------------------------------------
    def replot(self) -> None:
        plt = self.plt
        plt.clear_figure()  # also drops the probe view's panels
        self._panels = []
        if self.view == "probe":
            self.border_subtitle = self._plot_probe()
        else:
            self.border_subtitle = self._plot_pass()
            plt.xlabel("round")
        self.refresh()

    def _x_axis(self, rounds: set[int], fig: Any = None) -> tuple[tuple[float, float], list[float]]:
        """Ticks on the rounds; returns the x-limits and the ticks set."""
        fig = fig or self.plt
        if not rounds:
            return (0.0, 1.0), []
        lo, hi = min(rounds), max(rounds)
        ticks: list[float] = list(range(lo, hi + 1))
        fig.xticks(ticks)
        # One round: its points in the middle, with room for their labels.
        lim = (lo - 0.2, hi + 0.2) if hi > lo else (lo - 1.0, lo + 1.0)
        fig.xlim(*lim)
        return lim, ticks

    def _draw(
        self,
        xs: list[int],
        ys: list[float],
        color: str,
        marker: str,
        label: str,
        fig: Any = None,
        marks: list[Mark] | None = None,
    ) -> None:
        """A braille line with `marker` on each point (added to `marks`, put in place when
        the picture is rendered), or (one point) the marker labelled with its value: a line
        needs two."""
        fig = fig or self.plt
        if len(xs) == 1:
            fig.scatter(xs, ys, color=rgb(color), marker=marker)
            fig.text(
                label,
                xs[0] + 0.12,
                ys[0],
                color=rgb(color),
                background=self._canvas(),
                alignment="left",
            )
        else:
            fig.plot(xs, ys, color=rgb(color), marker=LINE)
            if marks is not None:
                marks += [
                    Mark(x, y, marker, RGB.get(color, RGB["white"]))
                    for x, y in zip(xs, ys, strict=True)
                ]

    def _canvas(self) -> tuple[int, int, int] | None:
        """The plot's background (a text label's own would be white)."""
        from textual.color import Color

        try:
            return Color.parse(self.app.theme_variables["surface"]).rgb
        except Exception:  # noqa: BLE001 - not mounted (yet): plotext's default
            return None

    def _plot_pass(self) -> str:
        self.border_title = self.title
        shown = [(n, p) for n, p in self.series.items() if p and n not in self.hidden]
        rounds: set[int] = {x for _n, pts in self.series.items() for x, _ in pts}
        if self.provisional is not None:
            rounds.add(self.provisional[0])
        values: list[float] = []
        legend: list[str] = []
        base_legend: list[str] = []
        if self.baseline is not None and rounds and BASELINE not in self.hidden:
            # The temperature-only baseline (the base model's best pass@1 over T_eval values),
            # drawn first: under the series.
            t, v = self.baseline
            lo, hi = min(rounds), max(rounds)
            xs = [lo - 1, lo + 1] if hi == lo else [lo, hi]
            self.plt.plot(xs, [100.0 * v] * 2, color=rgb("gray"), marker="dot")
            values.append(100.0 * v)
            base_legend.append(self._legend_item(f"base (T {t:g}) {100 * v:.1f}%", "gray", "┄"))
        # Drawn last = drawn on top: the difficulty dots first, pass@1 last.
        shown.sort(key=lambda item: (not is_scope_series(item[0]), item[0].endswith("pass@1")))
        marks: list[Mark] = []
        for name, pts in shown:
            xs = [p[0] for p in pts]
            ys = [100.0 * p[1] for p in pts]
            values += ys
            self._draw(xs, ys, self._color(name), series_mark(name), f"{ys[0]:.1f}%", None, marks)
        # The legend lists the headline series first; a difficulty by its name alone.
        for name, _pts in sorted(shown, key=lambda item: is_scope_series(item[0])):
            scope = is_scope_series(name)
            short = name.rsplit(" ", 1)[-1] if scope and name[:2] not in ("A ", "B ") else name
            legend.append(self._legend_item(short, self._color(name), series_mark(name)))
        if self.provisional is not None:
            rnd, v = self.provisional
            values.append(100.0 * v)
            self.plt.scatter([rnd], [100.0 * v], color=rgb("cyan"), marker="x")
            legend.append(self._legend_item("pass@1 so far", "cyan", "x"))
        legend += base_legend
        xlim, ticks = self._x_axis(rounds)
        # Up to 102 %: a series at 100 % drawn on the frame's top row would be hidden.
        lo, hi = fitted_range(values, 0.0, 102.0, pad=5.0)
        self.plt.ylim(lo, hi)
        self._panels = [Panel(xlim, (lo, hi), marks, ticks, self.plt)]
        self.plt.ylabel("%")
        hidden = [n for n in self.names() if n in self.hidden]
        return self._legend(legend, hidden)

    def _plot_probe(self) -> str:
        """One panel per statistic, each with its own fitted y-axis in its unit: a lock
        tail mass of 0.01 next to a kept mass of 0.95 (same unit) would be flat at 0 on one.
        A page holds the panels that fit with readable rows; the rest are on later pages."""
        plt = self.plt
        rounds: set[int] = {x for pts in self.probe.values() for x, _ in pts}
        panels = self._probe_panels()
        hidden = [n for n in self.names() if n in self.hidden]
        if not panels:
            self.border_title = "fork / lock probe by round"
            plt.title("no fork/lock probe yet (each round's analyse stage writes it)")
            self._x_axis(rounds)
            return self._legend([], hidden)
        rows, cols, pages = self.probe_layout()
        self.probe_page = min(self.probe_page, pages - 1)
        first = self.probe_page * rows * cols
        page = panels[first : first + rows * cols]
        rows = -(-len(page) // cols)
        at = f"{self.probe_page + 1}/{pages}" if pages > 1 else ""
        title = "fork / lock probe by round" + (f", page {at}" if at else "")
        # Narrow (a 120-column dashboard): the short forms, never a cut one.
        narrow = len(title) + 6 > (self.size.width or 80)
        self.border_title = f"probe {at}".strip() if narrow else title
        plt.subplots(rows, cols)
        room = (self.size.width or 80) // cols - 9  # a title wider than its panel is dropped
        for i, (name, pts) in enumerate(page):
            fig = plt.subplot(i // cols + 1, i % cols + 1)
            self._probe_panel(fig, name, pts, rounds, room)
        for j in range(len(page), rows * cols):  # an empty slot of the grid: no frame
            empty = plt.subplot(j // cols + 1, j % cols + 1)
            empty.frame(False)
            empty.xaxes(False, False)
            empty.yaxes(False, False)
        last = self.probe_page + 1 == pages
        shown = f"{first + 1}" + (f"–{first + len(page)}" if len(page) > 1 else "")
        more = (
            ("f: pass rates" if last else "f: next page")
            if not narrow
            else "f: " + ("back" if last else "next")
        )
        return self._legend([f"[dim]{shown} of {len(panels)} · {more}[/]"], hidden)

    def _probe_panel(
        self, fig: Any, name: str, pts: list[tuple[int, float]], rounds: set[int], room: int
    ) -> None:
        """One statistic's panel: its name (and unit, where it fits) as the title, the unit
        under the y-axis."""
        unit, lo, hi = probe_unit(name)
        color = PROBE_COLORS[self.names().index(name) % len(PROBE_COLORS)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        title = f"{name} ({unit})"
        if len(title) > room:
            title = name if len(name) <= room else name[: max(1, room - 1)] + "…"
        fig.title(title)
        marks: list[Mark] = []
        self._draw(xs, ys, color, "●", f"{ys[0]:.3g}", fig, marks)
        xlim, ticks = self._x_axis(rounds, fig)
        span = max(ys) - min(ys)
        pad = max(0.05 * max(abs(v) for v in ys), 1e-4) if span == 0 else 0.0
        ylim = fitted_range(ys, lo, hi, pad=pad)
        fig.ylim(*ylim)
        fig.ylabel(unit.replace(", nats", " (nats)"))
        self._panels.append(Panel(xlim, ylim, marks, ticks, fig))

    @staticmethod
    def _legend_item(name: str, color: str, mark: str) -> str:
        return f"[{RGB.get(color, RGB['white'])}]{mark} {escape(name)}[/]"

    @staticmethod
    def _legend(items: list[str], hidden: list[str]) -> str:
        text = " ".join(items)
        if hidden:
            text += f"  [dim]· {len(hidden)} hidden[/]"
        return text
