"""A sweep of 12 runs in the app: how long until its overlay is on screen, and how long a
redraw of 12 curves holds the UI thread (i.e. blocks input).

    python benchmarks/bench_overlay.py [--settings 6] [--seeds 2] [--rounds 5] [--trials 5]

The sweep is synthetic (`fixtures.synthetic_sweep.build_sweep`: real run DBs with the
metrics rows and training logs the overlay reads). Measured with the real app
(`App.run_test`, 140×45):

1. open, in this process (modules imported): from creating the app with `open_sweep` to the overlay screen showing the data
   (runs read in a thread worker, tables filled), then to the chart's picture of it at its
   final size (built in a thread worker; how many pictures were built until then);
   And in a fresh process per start (`--cold`), as `ssd-tui open SWEEP_DIR` starts:
   interpreter, imports, app, to the chart drawn; the peer to the runs list. Besides wall
   time, the process's CPU time (all threads) until then: on a shared, busy machine the
   wall time is mostly waiting for a core, the CPU time is what an idle one would need
   (the workers overlap the UI thread only where they release the GIL);
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures

from fixtures.synthetic_sweep import build_sweep  # noqa: E402

from ssd_tui.tui.app import SSDApp  # noqa: E402
from ssd_tui.tui.workbench import load_overlay, sweep_runs  # noqa: E402


async def one_open(
    folder: Path, builds: list[int], cpu: list[float]
) -> tuple[float, float, list[float], list[float], list[float]]:
    t0, c0 = time.perf_counter(), time.process_time()
    app = SSDApp(folder.parent, open_sweep=folder, poll_interval=3600)
    async with app.run_test(size=(140, 45)) as pilot:
        while not (type(app.screen).__name__ == "OverlayScreen" and app.screen.data):
            await pilot.pause(0.005)
        await pilot.pause()
        opened = time.perf_counter() - t0
        plot = app.screen.query_one("OverlayPlot")
        while not plot.picture_is_current:  # of the data, at the chart's final size
            await pilot.pause(0.005)
        drawn = time.perf_counter() - t0
        cpu.append(time.process_time() - c0)  # every thread of the process
        builds.append(plot.builds)
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


async def bare_start(folder: Path, cpu: list[float]) -> float:
    """The peer: the same app started on the sweep's parent folder, to its runs list."""
    t0, c0 = time.perf_counter(), time.process_time()
    app = SSDApp(folder.parent, poll_interval=3600)
    async with app.run_test(size=(140, 45)) as pilot:
        while not (type(app.screen).__name__ == "StartScreen" and app.screen.sweeps):
            await pilot.pause(0.005)
        await pilot.pause()
        cpu.append(time.process_time() - c0)
        return time.perf_counter() - t0


async def first_picture(folder: Path, overlay: bool) -> None:
    """One start to the first full picture: the overlay's chart of the data at its size, or
    (the peer) the runs list."""
    app = SSDApp(folder.parent, open_sweep=folder if overlay else None, poll_interval=3600)
    async with app.run_test(size=(140, 45)) as pilot:
        if overlay:
            while not (type(app.screen).__name__ == "OverlayScreen" and app.screen.data):
                await pilot.pause(0.005)
            plot = app.screen.query_one("OverlayPlot")
            while not plot.picture_is_current:
                await pilot.pause(0.005)
        else:
            while not (type(app.screen).__name__ == "StartScreen" and app.screen.sweeps):
                await pilot.pause(0.005)
        await pilot.pause()


def cold_start(folder: Path, overlay: bool) -> tuple[float, float]:
    """A fresh Python process, as `ssd-tui open SWEEP_DIR` (or `ssd-tui`) starts: interpreter,
    imports and app, to the first full picture. Wall time from spawning it, and the CPU
    time of the process (all its threads) until then."""
    t0 = time.time()
    what = "overlay" if overlay else "runs"
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    end, cpu = out.split()[-2:]
    return float(end) - t0, float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settings", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--cold", type=int, default=3, help="fresh-process starts of each kind")
    ap.add_argument("--child", nargs=2, metavar=("overlay|runs", "SWEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # a cold start (see cold_start): print when the picture was complete
        asyncio.run(first_picture(Path(args.child[1]), args.child[0] == "overlay"))
        print(time.time(), time.process_time())
        return
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
    opens, draws, presses, pictures, renders, bare, builds = [], [], [], [], [], [], []
    cpu, cpu_bare = [], []
    for _ in range(args.trials):
        bare.append(asyncio.run(bare_start(folder, cpu_bare)))
        o, d, p, pic, r = asyncio.run(one_open(folder, builds, cpu))
        opens.append(o)
        draws.append(d)
        presses += p
        pictures += pic
        renders += r
    cold, cold_bare = [], []  # (wall, CPU) each
    for _ in range(args.cold):
        cold_bare.append(cold_start(folder, overlay=False))
        cold.append(cold_start(folder, overlay=True))
    ms = lambda xs: f"median {1e3 * statistics.median(xs):.0f} ms, max {1e3 * max(xs):.0f} ms"  # noqa: E731
    print(f"peer: app start to the runs list on screen:    {ms(bare)} over {args.trials} starts")
    print(f"app start to the overlay's tables on screen:   {ms(opens)} over {args.trials} starts")
    print(f"app start to the chart drawn too:              {ms(draws)}")
    print(f"  CPU time until then (all threads):           {ms(cpu)}; peer {ms(cpu_bare)}")
    print(f"chart pictures built until then (plotext):   {builds}")
    if args.cold:
        wall, cpus = zip(*cold_bare, strict=True)
        print(f"fresh process (imports too), peer: runs list:  {ms(wall)} over {args.cold}")
        print(f"  its CPU time:                                {ms(cpus)}")
        wall, cpus = zip(*cold, strict=True)
        print(f"fresh process (imports too): overlay drawn:    {ms(wall)} over {args.cold}")
        print(f"  its CPU time:                                {ms(cpus)}")
    print(f"reading the {n} runs (load_overlay, a worker): {ms(reads)}")
    print(
        f"press m: key handled, UI free again:           {ms(presses)} over {len(presses)} presses"
    )
    print(f"press m: new picture of every curve on screen: {ms(pictures)} (built in a worker)")
    print(f"chart's lines on the UI thread (render_line):      {ms(renders)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
