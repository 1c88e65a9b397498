"""The pass@1 curve across rounds (textual-plotext), with pass@k and per-difficulty series."""

from __future__ import annotations

from textual_plotext import PlotextPlot

# Plotext colour names; pass@1 first and brightest.
SERIES_COLORS = {
    "pass@1": "cyan",
    "easy": "green",
    "medium": "yellow",
    "hard": "red",
}


class PassCurve(PlotextPlot):
    """Series name → [(round, value 0..1)]; `set_data` replots (attributes down)."""

    DEFAULT_CSS = """
    PassCurve { height: 1fr; min-height: 10; }
    """

    def __init__(self, title: str = "pass rate by round (%)", **kw) -> None:
        super().__init__(**kw)
        self.title = title
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.baseline: tuple[float, float] | None = None
        self.provisional: tuple[int, float] | None = None

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
    ) -> None:
        if (series, baseline, provisional) == (self.series, self.baseline, self.provisional):
            return
        self.series = {k: list(v) for k, v in series.items()}
        self.baseline = baseline
        self.provisional = provisional
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

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        rounds: set[int] = set()
        for name, pts in self.series.items():
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [100.0 * p[1] for p in pts]
            rounds.update(xs)
            main = name == "pass@1"
            plt.plot(
                xs,
                ys,
                label=name,
                color=self._color(name),
                marker="hd" if main or not name.startswith("pass@1 ") else "dot",
            )
        if self.provisional is not None:
            rnd, v = self.provisional
            rounds.add(rnd)
            plt.scatter([rnd], [100.0 * v], label="pass@1 so far", color="cyan", marker="x")
        if self.baseline is not None and rounds:
            # The temperature-only baseline: the base model's best pass@1 over T_eval values.
            t, v = self.baseline
            lo, hi = min(rounds), max(rounds)
            plt.plot(
                [lo, max(hi, lo + 1)],
                [100.0 * v] * 2,
                label=f"base, best T ({t:g})",
                color="gray",
                marker="dot",
            )
        if rounds:
            lo, hi = min(rounds), max(rounds)
            plt.xticks(list(range(lo, hi + 1)))
            plt.xlim(lo - 0.2, hi + 0.2 if hi > lo else lo + 1)
        plt.ylim(0, 100)
        plt.xlabel("round")
        self.refresh()
