"""The app's queries on a big run: plans (EXPLAIN QUERY PLAN) and timings, then the real
app opening and scrolling it.

    python benchmarks/bench_tui_queries.py                 # 1M samples, DB cached in /tmp
    python benchmarks/bench_tui_queries.py --samples 200000 --db /tmp/b200k/run.db
    python benchmarks/bench_tui_queries.py --no-app        # queries only

The DB is built once (synthetic: 6 rounds, 500 eval problems, verdicts, token stats,
metrics) with `fixtures.synthetic.build_large` and reused while it exists.
Every query the app runs for the rounds table, the runs list and the sample browser
must use an index (no `SCAN samples` without one); the script fails if one does not.
Numbers are printed, not asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures

from fixtures.synthetic import build_large  # noqa: E402

from ssd_tui.store.reads import RunReader, SampleFilter, run_listing  # noqa: E402
from ssd_tui.store.run_store import RunStore  # noqa: E402
from ssd_tui.tui.listing import read_listing  # noqa: E402
from ssd_tui.tui.views import snapshot  # noqa: E402


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def plan(conn, sql: str, args=()) -> list[str]:
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


def traced(conn, call) -> list[str]:
    """The queries a call runs on ``conn``, as it runs them (arguments filled in by SQLite)."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [q for q in seen if q.lstrip().upper().startswith(("SELECT", "WITH"))]


# What the app asks of a big run, through the store's own functions: the plans checked are
# those of the queries the app really runs (typical arguments), not copies of them.
def _calls(db: Path, reader: RunReader) -> list[tuple[str, object]]:
    f_round, f_problem = SampleFilter(round=3), SampleFilter(problem_id=7)
    return [
        ("dashboard rows (rounds table, curve, events)", lambda: reader.dashboard_rows(0)),
        ("runs list entry", lambda: run_listing(db.parent)),
        ("browser: count, all", lambda: reader.count_samples(SampleFilter())),
        ("browser: count, one round", lambda: reader.count_samples(f_round)),
        ("browser: a page deep in, all", lambda: reader.sample_page(SampleFilter(), 500_000, 100)),
        ("browser: a page, one problem", lambda: reader.sample_page(f_problem, 0, 100)),
        ("browser: problems with pass counts", lambda: reader.problems(3)),
    ]


def check_plans(db: Path) -> bool:
    reader = RunReader(db)
    store = reader.store
    assert store is not None, f"cannot read {db}"
    ok = True
    print("\n== query plans ==")
    for name, call in _calls(db, reader):
        for sql in traced(store.conn, call):
            steps = plan(store.conn, sql)
            bad = [s for s in steps if s.startswith("SCAN s") and "USING" not in s]
            bad += [s for s in steps if s.startswith("SCAN samples") and "INDEX" not in s]
            bad = [s for s in bad if "COVERING INDEX" not in s and "COUNT" not in sql.upper()]
            mark = "ok " if not bad else "BAD"
            ok &= not bad
            print(f"[{mark}] {name}: {' '.join(sql.split())[:90]}")
            for step in steps:
                print(f"        {step}")
    reader.close()
    return ok


def bench_queries(db: Path) -> None:
    print("\n== timings (median of 3, warm cache) ==")
    n_rounds = 6
    r = RunReader(db)
    t, snap = timed(lambda: snapshot(RunReader(db), 0, time.time()), 1)
    print(f"dashboard snapshot, cold reader (rounds table, curve, events): {t * 1000:8.1f} ms")
    t, snap = timed(lambda: snapshot(r, 0, time.time()))
    print(f"dashboard snapshot, warm (done rounds' counts cached):         {t * 1000:8.1f} ms")
    assert snap is not None and len(snap.rounds) == n_rounds
    t, _ = timed(lambda: read_listing(db.parent), 1)
    print(f"runs list entry (start screen):                                {t * 1000:8.1f} ms")
    f = SampleFilter()
    t, n = timed(lambda: r.count_samples(f))
    print(f"count all samples ({n:,}):                                  {t * 1000:8.1f} ms")
    for off in (0, n // 2, n - 100):
        t, rows = timed(lambda off=off: r.sample_page(f, off, 100))
        print(f"page of 100 at offset {off:>9,} (app's two-step query):        {t * 1000:8.1f} ms")
    store = RunStore.open(db, readonly=True)
    for off in (0, n // 2):
        t, _ = timed(lambda off=off: store.samples(limit=100, offset=off), 1)
        print(f"  for comparison, RunStore.samples(limit=100, offset={off:,}):  {t * 1000:8.1f} ms")
    store.close()
    f3 = SampleFilter(round=3)
    t, n3 = timed(lambda: r.count_samples(f3))
    print(f"count round 3 ({n3:,}):                                       {t * 1000:8.1f} ms")
    fp = SampleFilter(problem_id=7)
    t, np_ = timed(lambda: r.count_samples(fp))
    print(f"count one problem ({np_:,}):                                   {t * 1000:8.1f} ms")
    t, _ = timed(lambda: r.sample_page(fp, 0, 100))
    print(f"page of one problem's samples:                                 {t * 1000:8.1f} ms")
    t, _ = timed(lambda: r.problems(3))
    print(f"problem list with round 3 pass counts:                         {t * 1000:8.1f} ms")
    t, _ = timed(lambda: r.sample(500_000 if n > 500_000 else 1))
    print(f"one sample's detail:                                           {t * 1000:8.1f} ms")
    t, _ = timed(lambda: r.data_version(), 20)
    print(f"poll (PRAGMA data_version):                                    {t * 1000:8.3f} ms")
    r.close()


async def bench_app(db: Path) -> None:
    """The real app: time to a rendered dashboard and sample list, End / PageUp / a jump to
    the middle, and for each step the longest stall of the UI thread (the worst lateness
    of a 10 ms timer: how long a key press could have waited)."""
    from ssd_tui.tui.app import SSDApp

    print("\n== the app (headless, 140x45) ==")
    app = SSDApp(db.parent.parent, open_db=db, poll_interval=0.5)
    gaps: list[float] = []
    t_start = time.perf_counter()

    async def wait(cond, timeout=120.0):
        t0 = time.perf_counter()
        while not cond():
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError
            await pilot.pause(0.01)
        return time.perf_counter() - t0

    def report(label: str, t0: float) -> None:
        stall = f"UI stall ≤ {max(gaps) * 1000:4.0f} ms" if gaps else "before the stall probe"
        print(f"{label:<52} {time.perf_counter() - t0:6.2f} s   ({stall})")
        gaps.clear()

    async with app.run_test(size=(140, 45)) as pilot:
        last = [time.perf_counter()]

        def tick():
            now = time.perf_counter()
            gaps.append(now - last[0] - 0.01)
            last[0] = now

        app.set_interval(0.01, tick)
        await wait(lambda: type(app.screen).__name__ == "DashboardScreen" and app.screen.snapshot)
        report("open the run: dashboard, rounds table, curve", t_start)

        from ssd_tui.tui.data import SampleFilter

        t0 = time.perf_counter()
        app.screen.action_browse(round=None)
        await wait(
            lambda: type(app.screen).__name__ == "SampleBrowserScreen" and app.screen.is_mounted
        )
        browser = app.screen
        table = browser.query_one("#samples")
        await wait(lambda: table.total is not None and table.current is not None)
        report(f"sample browser (round 0: {table.total:,} samples), first page", t0)
        t0 = time.perf_counter()
        browser.filter = SampleFilter()  # every round: the whole million
        table.reload()
        await wait(lambda: table.total is not None and table.current is not None)
        report(f"all rounds ({table.total:,} samples): count + first page", t0)
        t0 = time.perf_counter()
        await pilot.press("end")
        await wait(lambda: table.current is not None and table.cursor_row == table.total - 1)
        report("End: the last sample, loaded and rendered", t0)
        t0 = time.perf_counter()
        for _ in range(20):
            await pilot.press("pageup")
        await wait(lambda: table.current is not None)
        report("20 x PageUp (through ~280 rows), rendered", t0)
        t0 = time.perf_counter()
        for _ in range(50):
            await pilot.press("down")
        await wait(lambda: table.current is not None)
        report("50 x Down, rendered", t0)
        t0 = time.perf_counter()
        table.move_to(table.total // 2)
        await wait(lambda: table.current is not None)
        report(f"jump to the middle (row {table.total // 2:,}), rendered", t0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", default="/tmp/ssd-bench/big/run.db")
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--no-app", action="store_true", help="skip the app part")
    a = ap.parse_args()
    db = Path(a.db)
    if not db.exists():
        print(f"building {db} with {a.samples:,} samples (once)…")
        t0 = time.time()
        build_large(db, a.samples)
        print(f"built in {time.time() - t0:.0f}s, {db.stat().st_size / 1e6:.0f} MB")
    ok = check_plans(db)
    bench_queries(db)
    if not a.no_app:
        asyncio.run(bench_app(db))
    if not ok:
        print("\nsome query scans samples without an index", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
