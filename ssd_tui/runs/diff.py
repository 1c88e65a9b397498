"""Two runs, two configs, or a config and a run, side by side.

The one comparison behind ``ssd-tui diff A B`` (exit 0 when identical, 1 when not) and the
app's compare view. A run (a run folder, its run DB or an export, read read-only) brings
its config, every environment it was started and resumed in, its problem sets, record,
adapters and per-round metrics; a config file (``.toml``) brings its settings only, so a
config is compared with the other side's settings. A run from before the reproducibility
record simply has empty entries there.

A path is compared by what it names, never by its spelling: by the hash of its content
where both sides know it (recorded by a run: the problem files' sha256, the model's; a
problem file is hashed now where no run recorded it), else by the path resolved against its
own config's folder. So "eval.jsonl" read from one folder and the absolute path of the same
file are the same setting, and so are two copies of one file. (A path that names nothing on
either side, its files moved or deleted since, is compared as written.) Adapter hashes are
compared for the rounds both runs have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_tui.analysis.rounds import round_summary
from ssd_tui.config import PATH_KEYS, RunConfig, config_from_json, load_config, path_of
from ssd_tui.models import file_sha256
from ssd_tui.runs.record import ENV_KEYS, lineage, run_record
from ssd_tui.store.review import open_export, resolve_run_db
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
# Where a run lives does not make it differ from another run.
_NOT_COMPARED = ("run.dir",)
_SECTIONS = ("config", "environment", "problems", "record", "lineage", "adapters", "metrics")
# The problem set a data path key feeds (its files' hashes are in the record).
_PURPOSE = {("data", "benchmark"): "eval", ("data", "train_prompts"): "train"}


@dataclass
class RunDiff:
    """Differences as (section, key, A, B); ``metrics`` holds every round's row of both."""

    differences: list[tuple[str, str, str, str]] = field(default_factory=list)
    metrics: list[tuple[int, str, float | None, float | None]] = field(default_factory=list)
    configs_only: bool = False  # a side was a config file: only settings were compared

    @property
    def identical(self) -> bool:
        return not self.differences


@dataclass
class Side:
    """What one side of a diff holds; a config file has only ``cfg``."""

    cfg: RunConfig | None
    record: dict[str, str] | None = None
    environments: list[dict[str, str]] = field(default_factory=list)
    adapters: dict[int, str] = field(default_factory=dict)
    metrics: dict[tuple[int, str], float | None] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)  # a branch's parent (record.lineage)

    @property
    def is_run(self) -> bool:
        return self.record is not None

    def path_hash(self, section: str, key: str) -> str | None:
        """The hash of what a path key names: as recorded by the run, else a problem file's
        sha256 now (a config, a run that never loaded the file); None when unknown."""
        record = self.record or {}
        if (section, key) == ("model", "path"):
            return record.get("model_sha256") or None  # a model folder is hashed by a run only
        purpose = _PURPOSE.get((section, key))
        sets = json.loads(record["problems"]) if record.get("problems") else {}
        files = sets.get(purpose, {}).get("files") if purpose else None
        if files:
            return ",".join(sorted(files.values()))
        target = path_of(self.cfg, section, key) if self.cfg and purpose else None
        return file_sha256(target) if target is not None and target.is_file() else None


# ---- reading a side ----------------------------------------------------------------------------


def is_config(path: str | Path) -> bool:
    """A config file (TOML) rather than a run folder, run DB or export."""
    return Path(path).suffix.lower() == ".toml"


def read_side(path: str | Path) -> tuple[Side, Path]:
    """A config file, or a run folder / run DB / export (read-only); and the path it read."""
    if is_config(path):
        return Side(load_config(path)), Path(path)
    db = resolve_run_db(path)
    store = open_export(db)
    try:
        return run_side(store), db
    finally:
        store.close()


def run_side(store: RunStore) -> Side:
    """Everything a run brings to a diff."""
    info = store.run_info()
    cfg = config_from_json(info["config_json"], Path(info["base_dir"] or ".")) if info else None
    record = run_record(store)
    # The start's environment (the record's meta keys), then every start and resume.
    environments = [{k: record[k] for k in ENV_KEYS}] if record["ssd_tui_version"] else []
    environments += [json.loads(h["environment"] or "{}") for h in store.config_history()]
    adapters = {r["round"]: r["adapter_sha256"] for r in store.rounds() if r["adapter_sha256"]}
    return Side(cfg, record, environments, adapters, _metrics(store, cfg), lineage(store))


def _metrics(store: RunStore, cfg: RunConfig | None) -> dict[tuple[int, str], float | None]:
    """Round → headline metric at T_eval: pass@k, the probe's KeptMass, diversity."""
    if cfg is None:
        return {}
    out = {}
    for row in round_summary(store, cfg):
        for name, value in row.items():
            if name != "round" and (value is not None or name.startswith("pass@")):
                out[(row["round"], name)] = value
    return out


# ---- comparing ---------------------------------------------------------------------------------


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else text[: n - 1] + "…"


def _flat(cfg: RunConfig | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    return {f"{s}.{k}": v for s, values in cfg.to_dict().items() for k, v in values.items()}


def _named(side: Side, section: str, key: str) -> tuple[Any, str]:
    """What a path key names (resolved path, else its value: a named set, a hub id) and
    how to show it (with its recorded hash)."""
    raw = getattr(getattr(side.cfg, section), key)
    target = path_of(side.cfg, section, key) if side.cfg else None
    digest = side.path_hash(section, key)
    shown = str(target or raw) + (f" (sha256 {digest[:12]})" if digest else "")
    return (target or raw), shown


def _same_path(a: Side, b: Side, section: str, key: str) -> bool:
    """Whether a path key names the same thing on both sides: the same content where both
    hashes are known, else the same resolved path. A path that names nothing on either
    side (files moved or deleted since) leaves nothing to compare but what was written."""
    ha, hb = a.path_hash(section, key), b.path_hash(section, key)
    if ha and hb:
        return ha == hb
    (ta, _), (tb, _) = _named(a, section, key), _named(b, section, key)
    if ta == tb:
        return True
    if isinstance(ta, Path) and isinstance(tb, Path) and not (ta.exists() or tb.exists()):
        return getattr(getattr(a.cfg, section), key) == getattr(getattr(b.cfg, section), key)
    return False


def _config_differences(a: Side, b: Side) -> list[tuple[str, str, str, str]]:
    fa, fb = _flat(a.cfg), _flat(b.cfg)
    out = []
    for name in sorted(set(fa) | set(fb)):
        section, key = name.split(".", 1)
        if name in _NOT_COMPARED:
            continue
        if (section, key) in PATH_KEYS and a.cfg and b.cfg:
            if not _same_path(a, b, section, key):
                shown = _named(a, section, key)[1], _named(b, section, key)[1]
                out.append(("config", name, *shown))
        elif fa.get(name) != fb.get(name):
            out.append(("config", name, _short(fa.get(name)), _short(fb.get(name))))
    return out


def _environment(side: Side, key: str) -> str:
    """A key's value at the run's start, then each other value it was resumed under."""
    values: list[str] = []
    for env in side.environments:
        value = str(env.get(key, ""))
        if value not in values:
            values.append(value)
    if not values:
        return ""
    return ", ".join([_short(values[0]), *(f"resumed under {_short(v)}" for v in values[1:])])


def _problem_sets(record: dict[str, str]) -> dict[str, tuple[tuple[int, str], str]]:
    """Per purpose: what is compared (count, hash of the problems as loaded), and its text."""
    sets = json.loads(record["problems"]) if record["problems"] else {}
    return {
        purpose: (
            (s["count"], s["sha256"]),
            f"{s['spec']} · {s['count']} problems · sha256 {s['sha256'][:12]}",
        )
        for purpose, s in sets.items()
    }


def _run_differences(a: Side, b: Side) -> list[tuple[str, str, str, str]]:
    """What only runs have: environments, problem sets, record and adapters."""
    ra, rb = a.record or {}, b.record or {}
    out = []
    for key in ENV_KEYS:
        ea, eb = _environment(a, key), _environment(b, key)
        if ea != eb:
            out.append(("environment", key, ea, eb))
    pa, pb = _problem_sets(ra), _problem_sets(rb)
    for purpose in sorted(set(pa) | set(pb)):
        xa, xb = pa.get(purpose), pb.get(purpose)
        if (xa and xa[0]) != (xb and xb[0]):
            out.append(("problems", purpose, xa[1] if xa else "", xb[1] if xb else ""))
    for key in _RECORD_KEYS:
        if ra[key] != rb[key]:
            out.append(("record", key, _short(ra[key]), _short(rb[key])))
    out += lineage_differences(a.lineage, b.lineage)
    # A round only one run has is a difference of the metrics already.
    for rnd in sorted(set(a.adapters) & set(b.adapters)):
        ha, hb = a.adapters[rnd], b.adapters[rnd]
        if ha != hb:
            out.append(("adapters", f"round {rnd}", f"sha256 {ha[:12]}", f"sha256 {hb[:12]}"))
    return out


def diff_sides(a: Side, b: Side) -> RunDiff:
    """Every difference between two sides; only the settings when one is a config."""
    out = RunDiff(configs_only=not (a.is_run and b.is_run))
    out.differences += _config_differences(a, b)
    if out.configs_only:
        return out
    out.differences += _run_differences(a, b)
    for rnd, name in sorted(set(a.metrics) | set(b.metrics)):
        x, y = a.metrics.get((rnd, name)), b.metrics.get((rnd, name))
        out.metrics.append((rnd, name, x, y))
        if not _same(x, y):
            out.differences.append(("metrics", f"round {rnd} {name}", _num(x), _num(y)))
    return out


def lineage_differences(la: dict[str, str], lb: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Where two runs come from, where it differs: a branch's parent run and round, the
    adapter it started from (``record.LINEAGE_KEYS``; '–' for a run that is no branch)."""
    keys = ("parent_name", "parent_run", "parent_round", "parent_adapter_sha256", "parent_model")
    return [
        ("lineage", k, _short(la.get(k) or "–"), _short(lb.get(k) or "–"))
        for k in keys
        if la.get(k, "") != lb.get(k, "")
    ]


def diff_runs(a: RunStore, b: RunStore) -> RunDiff:
    """Two open run stores compared."""
    return diff_sides(run_side(a), run_side(b))


def _same(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


# ---- showing -----------------------------------------------------------------------------------


def format_diff(d: RunDiff, a: str, b: str) -> list[str]:
    """Plain lines: the differences by section, then pass@k per round side by side."""
    lines = [f"A: {a}", f"B: {b}", ""]
    if d.identical:
        lines.append(
            "identical settings (a config file has no environment, record or metrics to compare)"
            if d.configs_only
            else "identical: config, environment, problem sets, record, lineage, adapters and metrics"
        )
    for section in _SECTIONS:
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
    """Compare two of: a run folder, a run DB, an export (.db.gz too), a config file."""
    (sa, pa), (sb, pb) = read_side(a), read_side(b)
    d = diff_sides(sa, sb)
    return d, format_diff(d, str(pa), str(pb))


def setting_lines(d: RunDiff, limit: int = 14) -> list[str]:
    """The differences other than metrics, one line each (the app's compare view)."""
    rows = [r for r in d.differences if r[0] != "metrics"]
    if not rows:
        return ["same config, environment, problem sets, record and adapters"]
    out = [f"{section} {key}: A {va} | B {vb}" for section, key, va, vb in rows[:limit]]
    if len(rows) > limit:
        out.append(f"… and {len(rows) - limit} more (ssd-tui diff A B lists all)")
    return out
