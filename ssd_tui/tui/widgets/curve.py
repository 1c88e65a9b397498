"""Charts across rounds (textual-plotext): pass@1 / pass@k with per-difficulty series and
the temperature-only baseline, or the fork/lock probe statistics.

What keeps them readable in a small terminal:

* the legend is the widget's bottom border, outside the data, in the series' colours;
* series can be toggled (`hidden`); per-difficulty series start hidden, so their dots
  never cover the pass@1 / pass@k lines;
* the y-axis fits the data shown (with a margin), not a fixed 0-100;
* a single round is drawn as points labelled with their values (a line needs two);
* probe statistics keep their units apart: entropies (nats) on the left axis,
  probabilities and masses on the right axis, each fitted to its own data.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual_plotext import PlotextPlot

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


def is_scope_series(name: str) -> bool:
    """A per-difficulty series ("pass@1 easy", "A pass@1 hard"): hidden by default."""
    if name[:2] in ("A ", "B "):
        name = name[2:]
    return name.startswith("pass@") and " " in name


def probe_axis(name: str) -> str | None:
    """Which y-axis a probe statistic belongs on: entropies in nats on the left,
    probabilities and masses on the right; counts are not charted (None)."""
    if name.startswith("n_"):
        return None
    return "left" if "entropy" in name else "right"


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
        self.hidden: set[str] = set()
        self._seen: set[str] = set()  # series named before: their toggle state is the user's

    def on_mount(self) -> None:
        super().on_mount()
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

    def set_view(self, view: str) -> None:
        self.view = view
        self.replot()

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
        if self.view == "probe":
            self.border_subtitle = self._plot_probe()
        else:
            self.border_subtitle = self._plot_pass()
            plt.xlabel("round")
        self.refresh()

    def _x_axis(self, rounds: set[int], fig: Any = None) -> None:
        fig = fig or self.plt
        if not rounds:
            return
        lo, hi = min(rounds), max(rounds)
        fig.xticks(list(range(lo, hi + 1)))
        if hi > lo:
            fig.xlim(lo - 0.2, hi + 0.2)
        else:  # one round: points in the middle, with room for their labels
            fig.xlim(lo - 1, lo + 1)

    def _draw(
        self, xs: list[int], ys: list[float], color: str, marker: str, label: str, fig: Any = None
    ) -> None:
        """A line, or (one point) a marker labelled with its value: a line needs two."""
        fig = fig or self.plt
        if len(xs) == 1:
            fig.scatter(xs, ys, color=rgb(color), marker="●")
            fig.text(
                label,
                xs[0] + 0.12,
                ys[0],
                color=rgb(color),
                background=self._canvas(),
                alignment="left",
            )
        else:
            fig.plot(xs, ys, color=rgb(color), marker=marker)

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
        for name, pts in shown:
            xs = [p[0] for p in pts]
            ys = [100.0 * p[1] for p in pts]
            values += ys
            color = self._color(name)
            scope = is_scope_series(name)
            marker = "dot" if scope else "hd"
            self._draw(xs, ys, color, marker, f"{ys[0]:.1f}%")
        # The legend lists the headline series first; a difficulty by its name alone.
        for name, _pts in sorted(shown, key=lambda item: is_scope_series(item[0])):
            scope = is_scope_series(name)
            short = name.rsplit(" ", 1)[-1] if scope and name[:2] not in ("A ", "B ") else name
            legend.append(self._legend_item(short, self._color(name), "•" if scope else "━"))
        if self.provisional is not None:
            rnd, v = self.provisional
            values.append(100.0 * v)
            self.plt.scatter([rnd], [100.0 * v], color=rgb("cyan"), marker="x")
            legend.append(self._legend_item("pass@1 so far", "cyan", "x"))
        legend += base_legend
        self._x_axis(rounds)
        # Up to 102 %: a series at 100 % drawn on the frame's top row would be hidden.
        lo, hi = fitted_range(values, 0.0, 102.0, pad=5.0)
        self.plt.ylim(lo, hi)
        self.plt.ylabel("%")
        hidden = [n for n in self.names() if n in self.hidden]
        return self._legend(legend, hidden)

    def _plot_probe(self) -> str:
        """One small panel per statistic, each with its own fitted y-axis: a lock tail
        mass of 0.01 next to a kept mass of 0.95 (same unit) would be flat at 0 on one."""
        self.border_title = "fork / lock probe by round (each panel its own y-axis)"
        plt = self.plt
        rounds: set[int] = {x for pts in self.probe.values() for x, _ in pts}
        panels = [
            (name, pts)
            for name, pts in self.probe.items()
            if pts and probe_axis(name) and name not in self.hidden
        ]
        if not panels:
            plt.title("no fork/lock probe yet (each round's analyse stage writes it)")
            self._x_axis(rounds)
            return self._legend([], [n for n in self.names() if n in self.hidden])
        cols = 1 if len(panels) == 1 else 2
        rows = (len(panels) + cols - 1) // cols
        plt.subplots(rows, cols)
        legend = []
        for i, (name, pts) in enumerate(panels):
            fig = plt.subplot(i // cols + 1, i % cols + 1)
            unit = "nats" if probe_axis(name) == "left" else "p"
            color = PROBE_COLORS[self.names().index(name) % len(PROBE_COLORS)]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            fig.title(f"{name} ({unit})")
            self._draw(xs, ys, color, "hd", f"{ys[0]:.3g}", fig)
            self._x_axis(rounds, fig)
            span = max(ys) - min(ys)
            pad = max(0.05 * max(abs(v) for v in ys), 1e-4) if span == 0 else 0.0
            lo, hi = fitted_range(ys, 0.0, float("inf") if unit == "nats" else 1.0, pad=pad)
            fig.ylim(lo, hi)
            legend.append(self._legend_item(f"{name} ({unit})", color, "━"))
        for j in range(len(panels), rows * cols):  # an empty slot of the grid: no frame
            empty = plt.subplot(j // cols + 1, j % cols + 1)
            empty.frame(False)
            empty.xaxes(False, False)
            empty.yaxes(False, False)
        return self._legend(legend, [n for n in self.names() if n in self.hidden])

    @staticmethod
    def _legend_item(name: str, color: str, mark: str) -> str:
        return f"[{RGB.get(color, RGB['white'])}]{mark} {escape(name)}[/]"

    @staticmethod
    def _legend(items: list[str], hidden: list[str]) -> str:
        text = " ".join(items)
        if hidden:
            text += f"  [dim]· {len(hidden)} hidden[/]"
        return text
