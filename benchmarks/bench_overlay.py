"""A sweep of 12 runs in the app: how long until its overlay is on screen, and how long a
redraw of 12 curves holds the UI thread (i.e. blocks input).

    python benchmarks/bench_overlay.py [--settings 6] [--seeds 2] [--rounds 5] [--trials 5]

The sweep is synthetic (`ssd_tui.tui.synthetic_sweep.build_sweep`: real run DBs with the
metrics rows and training logs the overlay reads). Measured with the real app
(`App.run_test`, 140×45):

1. open: from creating the app with `open_sweep` to the overlay screen showing the data
   (runs read in a thread worker, tables filled, chart drawn);
2. reading alone: `load_overlay` (what the worker does), median;
3. redraw: pressing `m` (mean ± sd per setting ↔ every run: 6 means + 12 runs + bands):
   until the key is handled (the UI thread is free for the next key), and until the new
   picture is on screen (plotext builds it in a thread worker); and the chart's
   `render_line` calls on the UI thread, which hand out the built picture's lines.
Numbers are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_tui.tui.app import SSDApp  # noqa: E402
from ssd_tui.tui.synthetic_sweep import build_sweep  # noqa: E402
from ssd_tui.tui.workbench import load_overlay, sweep_runs  # noqa: E402


async def one_open(folder: Path) -> tuple[float, float, list[float], list[float], list[float]]:
    t0 = time.perf_counter()
    app = SSDApp(folder.parent, open_sweep=folder, poll_interval=3600)
    async with app.run_test(size=(140, 45)) as pilot:
        while not (type(app.screen).__name__ == "OverlayScreen" and app.screen.data):
            await pilot.pause(0.005)
        await pilot.pause()
        opened = time.perf_counter() - t0
        plot = app.screen.query_one("OverlayPlot")
        while plot.drawn_state != plot.state:
            await pilot.pause(0.005)
        drawn = time.perf_counter() - t0
        presses, pictures, renders = [], [], []
        for _ in range(20):
            t1 = time.perf_counter()
            await pilot.press("m")
            presses.append(time.perf_counter() - t1)  # handled: the UI is free again
            while plot.drawn_state != plot.state:
                await pilot.pause(0.002)
            pictures.append(time.perf_counter() - t1)  # the new picture is on screen
            t2 = time.perf_counter()
            for y in range(plot.size.height):
                plot.render_line(y)
            renders.append(time.perf_counter() - t2)
    return opened, drawn, presses, pictures, renders


async def bare_start(folder: Path) -> float:
    """The peer: the same app started on the sweep's parent folder, to its runs list."""
    t0 = time.perf_counter()
    app = SSDApp(folder.parent, poll_interval=3600)
    async with app.run_test(size=(140, 45)) as pilot:
        while not (type(app.screen).__name__ == "StartScreen" and app.screen.sweeps):
            await pilot.pause(0.005)
        await pilot.pause()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settings", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    temps = tuple(round(0.4 + 0.2 * i, 1) for i in range(args.settings))
    folder = build_sweep(
        Path(tempfile.mkdtemp(prefix="bench-overlay-")) / "sweep", temps, args.seeds, args.rounds
    )
    n = args.settings * args.seeds
    print(
        f"sweep: {args.settings} settings × {args.seeds} seeds = {n} runs, rounds 0–{args.rounds}"
    )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    title, runs = sweep_runs(folder)
    reads = []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        load_overlay(runs, title)
        reads.append(time.perf_counter() - t0)
    opens, draws, presses, pictures, renders, bare = [], [], [], [], [], []
    for _ in range(args.trials):
        bare.append(asyncio.run(bare_start(folder)))
        o, d, p, pic, r = asyncio.run(one_open(folder))
        opens.append(o)
        draws.append(d)
        presses += p
        pictures += pic
        renders += r
    ms = lambda xs: f"median {1e3 * statistics.median(xs):.0f} ms, max {1e3 * max(xs):.0f} ms"  # noqa: E731
    print(f"peer: app start to the runs list on screen:    {ms(bare)} over {args.trials} starts")
    print(f"app start to the overlay's tables on screen:   {ms(opens)} over {args.trials} starts")
    print(f"app start to the chart drawn too:              {ms(draws)}")
    print(f"reading the {n} runs (load_overlay, a worker): {ms(reads)}")
    print(
        f"press m: key handled, UI free again:           {ms(presses)} over {len(presses)} presses"
    )
    print(f"press m: new picture of every curve on screen: {ms(pictures)} (built in a worker)")
    print(f"chart's lines on the UI thread (render_line):      {ms(renders)}")


if __name__ == "__main__":
    main()
