"""The rounds-policy table of the README: a finished `ssd-tui sweep` folder, per setting and
round, as mean ± sd over its seeds: pass@1, pass@5, behavioural diversity (behaviours per
problem and their entropy), and which collapse rules fired in how many of the seeds.

    ssd-tui sweep examples/demo.toml --set 'rounds.data="latest","accumulate"' \\
        --set 'rounds.adapter="continue","fresh"' --seeds 3 --rounds 5 --out runs/policies
    python benchmarks/policy_table.py runs/policies

It only reads the runs' databases (read-only), so it can be run while the sweep goes on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

from ssd_tui.errors import SSDError
from ssd_tui.runs import sweep as sw
from ssd_tui.store.reads import run_config
from ssd_tui.store.run_store import RunStore

COLUMNS = ("pass@1", "pass@5", "behaviours", "behaviour_entropy")


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def read_run(db: Path) -> dict[int, dict[str, object]]:
    """Round → the columns' values and the rules that fired, of one run."""
    store = RunStore.open(db, readonly=True)
    try:
        t_eval = run_config(store).eval.temperature
        out: dict[int, dict[str, object]] = {}
        for r in store.rounds():
            rnd = r["round"]
            values = {name: store.metric_at(rnd, name, "eval", t_eval) for name in COLUMNS}
            if values["pass@1"] is None:
                continue  # a round not evaluated yet
            rules = sorted({w["rule"] for w in store.warnings(rnd)})
            out[rnd] = {**values, "rules": rules}
        return out
    finally:
        store.close()


def table(folder: Path) -> str:
    plan = sw.load(folder)
    lines = [
        "| setting | round | seeds | " + " | ".join(COLUMNS) + " | rules fired (seeds) |",
        "|---|---:|---:|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for setting in plan.settings():
        runs = [r for r in plan.runs if r.setting == setting]
        per_run = []
        for r in runs:
            try:
                per_run.append(read_run(plan.db_path(r)))
            except SSDError:  # not started yet, or its database is being made
                continue
        rounds = sorted({rnd for run in per_run for rnd in run})
        for rnd in rounds:
            at = [run[rnd] for run in per_run if rnd in run]
            cells = [_cell([v[c] for v in at if v[c] is not None]) for c in COLUMNS]
            fired = Counter(rule for v in at for rule in v["rules"])
            rules = ", ".join(f"{k} ({n})" for k, n in sorted(fired.items())) or "–"
            label = sw.setting_label(setting) if rnd == rounds[0] else ""
            lines.append(f"| {label} | {rnd} | {len(at)} | " + " | ".join(cells) + f" | {rules} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a sweep folder (ssd-tui sweep --out)")
    args = ap.parse_args(argv)
    print(table(args.sweep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
