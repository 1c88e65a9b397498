"""Two runs side by side: config, environment, problem sets, record and per-round metrics.

The one comparison behind ``ssd-tui diff RUN_A RUN_B`` (exit 0 when identical, 1 when not)
and the app's compare view. Reads run DBs (or exports) read-only; a run from before the
reproducibility record simply has empty entries there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_tui.analysis.rounds import round_summary
from ssd_tui.config import config_from_json
from ssd_tui.errors import SSDError
from ssd_tui.runs.record import ENV_KEYS, lineage, run_record
from ssd_tui.store.review import open_export
from ssd_tui.store.run_store import RunStore

# Record keys compared besides the environment (model_files is only a cache stamp; the
# problem sets are compared by content, not by where their files lay).
_RECORD_KEYS = (
    "model_sha256",
    "prompt_template",
    "system_prompt",
    "prompt_example",
    "extraction_rule",
    "trainer",
)


@dataclass
class RunDiff:
    """Differences as (section, key, A, B); ``metrics`` holds every round's row of both."""

    differences: list[tuple[str, str, str, str]] = field(default_factory=list)
    metrics: list[tuple[int, str, float | None, float | None]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def resolve_db(path: str | Path) -> Path:
    """A run folder (holding run.db) or a database file."""
    p = Path(path)
    if p.is_dir():
        p = p / "run.db"
    if not p.exists():
        raise SSDError(f"{path}: no run database there (expected a run folder or a .db file)")
    return p


def _config(store: RunStore) -> dict[str, Any]:
    info = store.run_info()
    if info is None:
        return {}
    flat = {}
    for section, values in json.loads(info["config_json"]).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _problem_sets(record: dict[str, str]) -> dict[str, str]:
    sets = json.loads(record["problems"]) if record["problems"] else {}
    return {
        purpose: f"{s['spec']} · {s['count']} problems · sha256 {s['sha256'][:12]}"
        for purpose, s in sets.items()
    }


def _metrics(store: RunStore) -> dict[tuple[int, str], float | None]:
    """Round → headline metric at T_eval: pass@k, the probe's KeptMass, diversity."""
    info = store.run_info()
    if info is None:
        return {}
    cfg = config_from_json(info["config_json"], Path(info["base_dir"] or "."))
    out = {}
    for row in round_summary(store, cfg):
        for name, value in row.items():
            if name != "round" and (value is not None or name.startswith("pass@")):
                out[(row["round"], name)] = value
    return out


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else text[: n - 1] + "…"


def diff_runs(a: RunStore, b: RunStore) -> RunDiff:
    out = RunDiff()
    ca, cb = _config(a), _config(b)
    for key in sorted(set(ca) | set(cb)):
        if ca.get(key) != cb.get(key):
            out.differences.append(("config", key, _short(ca.get(key)), _short(cb.get(key))))
    ra, rb = run_record(a), run_record(b)
    for key in ENV_KEYS:
        if ra[key] != rb[key]:
            out.differences.append(("environment", key, _short(ra[key]), _short(rb[key])))
    pa, pb = _problem_sets(ra), _problem_sets(rb)
    for purpose in sorted(set(pa) | set(pb)):
        if pa.get(purpose) != pb.get(purpose):
            out.differences.append(("problems", purpose, pa.get(purpose, ""), pb.get(purpose, "")))
    for key in _RECORD_KEYS:
        if ra[key] != rb[key]:
            out.differences.append(("record", key, _short(ra[key]), _short(rb[key])))
    out.differences += lineage_differences(a, b)
    ma, mb = _metrics(a), _metrics(b)
    for rnd, name in sorted(set(ma) | set(mb)):
        x, y = ma.get((rnd, name)), mb.get((rnd, name))
        out.metrics.append((rnd, name, x, y))
        if not _same(x, y):
            out.differences.append(("metrics", f"round {rnd} {name}", _num(x), _num(y)))
    return out


def lineage_differences(a: RunStore, b: RunStore) -> list[tuple[str, str, str, str]]:
    """Where two runs come from, where it differs: a branch's parent run and round, the
    adapter it started from (``record.LINEAGE_KEYS``; '–' for a run that is no branch)."""
    la, lb = lineage(a), lineage(b)
    keys = ("parent_name", "parent_run", "parent_round", "parent_adapter_sha256", "parent_model")
    return [
        ("lineage", k, _short(la.get(k) or "–"), _short(lb.get(k) or "–"))
        for k in keys
        if la.get(k, "") != lb.get(k, "")
    ]


def _same(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def format_diff(d: RunDiff, a: str, b: str) -> list[str]:
    """Plain lines: the differences by section, then pass@k per round side by side."""
    lines = [f"A: {a}", f"B: {b}", ""]
    if d.identical:
        lines.append("identical: config, environment, problem sets, record, lineage and metrics")
    sections = ("config", "environment", "problems", "record", "lineage", "metrics")
    for section in sections:
        rows = [r for r in d.differences if r[0] == section]
        if not rows:
            continue
        lines.append(f"{section} ({len(rows)} different):")
        width = max(len(r[1]) for r in rows)
        lines += [f"  {key:<{width}}  A {va}  |  B {vb}" for _, key, va, vb in rows]
        lines.append("")
    passk = [m for m in d.metrics if m[1].startswith("pass@")]
    if passk:
        lines.append("pass@k by round (A | B):")
        lines += [f"  round {r} {name:<8} {_num(x):>8} | {_num(y):<8}" for r, name, x, y in passk]
    return lines


def diff_paths(a: str | Path, b: str | Path) -> tuple[RunDiff, list[str]]:
    """Compare two run folders, run DBs or exports (.db.gz too), read-only."""
    pa, pb = resolve_db(a), resolve_db(b)
    sa = open_export(pa)
    try:
        sb = open_export(pb)
        try:
            d = diff_runs(sa, sb)
        finally:
            sb.close()
    finally:
        sa.close()
    return d, format_diff(d, str(pa), str(pb))


def setting_lines(d: RunDiff, limit: int = 14) -> list[str]:
    """The differences other than metrics, one line each (the app's compare view)."""
    rows = [r for r in d.differences if r[0] != "metrics"]
    if not rows:
        return ["same config, environment, problem sets and record"]
    out = [f"{section} {key}: A {va} | B {vb}" for section, key, va, vb in rows[:limit]]
    if len(rows) > limit:
        out.append(f"… and {len(rows) - limit} more (ssd-tui diff A B lists all)")
    return out
