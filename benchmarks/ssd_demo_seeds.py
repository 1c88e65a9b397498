"""What SSD does to the demo model: pass@k across rounds for several seeds, with the spread,
beside the best pass@1 the base model reaches by changing T_eval alone.

    python benchmarks/ssd_demo_seeds.py --seeds 0 1 2 --rounds 3 [--out /tmp/ssd-seeds]
    python benchmarks/ssd_demo_seeds.py --temps --out /tmp/sweep/t16-p80 \
        --set sampling.temperature=1.6 --set sampling.top_p=0.8

Each seed is a full `ssd-tui run` of examples/demo.toml (seed changed, run folder under --out,
--set overrides applied: `section.key=TOML value`); round 0 also evaluates the base
model at --temps (the temperature-only baseline; `--temps` alone skips it). The evaluation
set and T_eval are the demo's; override them only knowingly. Reruns resume: finished runs
are read back, not redone.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"


def override(text: str, assignment: str) -> str:
    """Set ``section.key=value`` (value a TOML literal) in the config text."""
    name, _, value = assignment.partition("=")
    section, _, key = name.strip().partition(".")
    head = re.search(rf"(?m)^\[{re.escape(section)}\][^\n]*\n", text)
    if not head or not key or not value:
        sys.exit(f"--set {assignment!r}: expected section.key=value with a [{section}] section")
    end = re.search(r"(?m)^\[", text[head.end() :])
    body_end = head.end() + (end.start() if end else len(text) - head.end())
    body = text[head.end() : body_end]
    line = f"{key} = {value.strip()}\n"
    body, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*\n", lambda _m: line, body)
    if not n:
        body = line + body
    return text[: head.end()] + body + text[body_end:]


def write_config(out: Path, seed: int, rounds: int, temps: list[float], sets: list[str]) -> Path:
    text = DEMO.read_text()
    for assignment in sets:
        text = override(text, assignment)
    text = re.sub(r"(?m)^dir = .*$", f'dir = "{out / f"seed-{seed}"}"', text)
    text = re.sub(r"(?m)^seed = .*$", f"seed = {seed}", text)
    text = re.sub(r"(?m)^rounds = .*$", f"rounds = {rounds}", text)
    text = re.sub(r'(?m)^path = "\.\./', f'path = "{ROOT}/', text)
    text = re.sub(
        r'(?m)^(train_prompts|benchmark) = "\.\./', lambda m: f'{m.group(1)} = "{ROOT}/', text
    )
    if temps:
        text = override(text, f"eval.baseline_temperatures={temps}")
    path = out / f"seed-{seed}.toml"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--temps", type=float, nargs="*", default=[0.2, 0.4, 0.6, 1.0, 1.2])
    ap.add_argument("--out", type=Path, default=Path("/tmp/ssd-seeds"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from ssd_tui.config import load_config
    from ssd_tui.store import RunStore

    curves: dict[int, dict[int, dict[str, float]]] = {}
    baseline: dict[float, list[float]] = {}
    for seed in args.seeds:
        cfg_path = write_config(args.out, seed, args.rounds, args.temps, args.sets)
        t0 = time.time()
        r = subprocess.run(
            [sys.executable, "-m", "ssd_tui", "run", str(cfg_path)], capture_output=True, text=True
        )
        if r.returncode != 0:
            sys.exit(f"seed {seed} failed: {r.stderr.strip().splitlines()[-1:]}")
        cfg = load_config(cfg_path)
        store = RunStore.open(cfg.db_path, readonly=True)
        t_eval = cfg.eval.temperature
        curves[seed] = {
            rnd: {
                name: store.metric(rnd, name, "eval", t_eval) or 0.0
                for name in ("pass@1", "pass@5")
            }
            | {
                d: store.metric(rnd, "pass@1", "eval", t_eval, scope=d) or 0.0
                for d in ("easy", "medium", "hard")
            }
            for rnd in range(args.rounds + 1)
        }
        seconds = sum(s["seconds"] for s in store.stages())
        print(
            f"seed {seed}: {seconds:.0f} s of stage time ({time.time() - t0:.0f} s wall this call)"
        )
        rows = store.conn.execute(
            "SELECT temperature, value FROM metrics WHERE round=0 AND purpose='eval' "
            "AND name='pass@1' AND scope='all' ORDER BY temperature"
        ).fetchall()
        for t, v in rows:
            baseline.setdefault(t, []).append(v)
        store.close()

    print(f"\nsettings: {' '.join(args.sets) or 'as examples/demo.toml'}")
    print(f"pass@1 / pass@5 at T_eval by round, {len(args.seeds)} seeds (mean ± sd, min–max)")
    print(
        f"{'round':>5} {'pass@1':>16} {'range':>13} {'pass@5':>16} {'easy':>6} {'medium':>7} {'hard':>6}"
    )
    for rnd in range(args.rounds + 1):
        p1 = [curves[s][rnd]["pass@1"] for s in args.seeds]
        p5 = [curves[s][rnd]["pass@5"] for s in args.seeds]
        sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        by = {
            d: statistics.mean(curves[s][rnd][d] for s in args.seeds)
            for d in ("easy", "medium", "hard")
        }
        print(
            f"{rnd:>5} {statistics.mean(p1):>8.3f} ± {sd(p1):.3f} {min(p1):>6.3f}–{max(p1):.3f} "
            f"{statistics.mean(p5):>8.3f} ± {sd(p5):.3f} {by['easy']:>6.3f} {by['medium']:>7.3f} {by['hard']:>6.3f}"
        )
    print("\ntemperature-only baseline (base model, round 0): T_eval → pass@1, mean over seeds")
    for t, vs in sorted(baseline.items()):
        print(
            f"  {t:.2f} → {statistics.mean(vs):.3f} ({len(vs)} seeds: {', '.join(f'{v:.3f}' for v in vs)})"
        )
    if len(baseline) > 1 and args.rounds > 0:
        best_t, best = max(
            ((t, statistics.mean(vs)) for t, vs in baseline.items()), key=lambda x: x[1]
        )
        ssd_best = max(
            statistics.mean(curves[s][r]["pass@1"] for s in args.seeds)
            for r in range(1, args.rounds + 1)
        )
        print(
            f"best base pass@1 by T_eval alone: {best:.3f} at T={best_t}; best SSD round (mean over seeds): {ssd_best:.3f}"
        )


if __name__ == "__main__":
    main()
