"""`ssd-tui report RUN.db`: a run's numbers as terminal tables or a self-contained file.

Everything is read from the run database (metrics rows written by the evaluate and
analyse stages), so the report shows exactly what the TUI shows. The file report is
HTML with its charts embedded as base64 PNGs, or Markdown with the PNGs written into
a folder beside it (``NAME_files/``). Charts use matplotlib's Agg canvas directly, so
the caller's matplotlib backend is never touched. matplotlib is an optional extra
(``pip install -e ".[report]"``): without it the file has every table and, in place of
the charts, a line saying how to get them.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ssd_tui.analysis import flips
from ssd_tui.analysis import rounds as an
from ssd_tui.analysis.behaviour import BEHAVIOUR_METRICS
from ssd_tui.config import RunConfig, weaker_than_strict
from ssd_tui.store.reads import run_config
from ssd_tui.store.run_store import RunStore


@dataclass
class Section:
    """One table of the report: the same cells go to rich, HTML and Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class ReportData:
    title: str
    facts: list[tuple[str, str]]
    sections: list[Section]
    charts: dict[str, bytes] = field(default_factory=dict)  # file stem → PNG
    charts_note: str = ""  # why there are no charts (matplotlib missing), else ""


def fmt(v: Any) -> str:
    """Cells: '—' for missing, numbers to 3 decimals (counts: see ``fmt_count``)."""
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def fmt_count(v: Any) -> str:
    return "—" if v is None else str(int(v))


def _cells(row: dict[str, Any], cols: list[str]) -> list[str]:
    # Count metrics are stored as REAL like every metric; show them as integers.
    def is_count(c: str) -> bool:
        name = c.split()[-1]
        return name.startswith("n_") or name.endswith("_samples")

    return [fmt_count(row[c]) if is_count(c) else fmt(row[c]) for c in cols]


NO_CHARTS = 'no charts: matplotlib is not installed (pip install -e ".[report]" adds them)'


def missing_chart_library() -> str:
    """Why a file report has no charts (``NO_CHARTS``), or "" when it can have them."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return NO_CHARTS
    return ""


# ---- collecting ---------------------------------------------------------------------------------------


def collect(store: RunStore, charts: bool = False) -> ReportData:
    cfg = run_config(store)
    info = store.run_info() or {}
    summary = an.round_summary(store, cfg)
    by_round = flips.round_pass_counts(store, cfg.eval.temperature)
    data = ReportData(
        title=f"SSD run report: {info.get('name', store.path.stem)}",
        facts=_facts(store, cfg, info),
        sections=[
            _rounds_section(summary, cfg),
            _difficulty_section(by_round, cfg),
            _mcnemar_section(by_round),
            _diversity_section(summary),
            _behaviour_section(store, cfg, summary),
            _probe_section(summary),
            _baseline_section(store, cfg),
            _warnings_section(store),
        ],
    )
    if charts:
        data.charts_note = missing_chart_library()
        if not data.charts_note:
            data.charts = _charts(store, cfg, summary)
    return data


def _facts(store: RunStore, cfg: RunConfig, info: dict[str, Any]) -> list[tuple[str, str]]:
    s, e = cfg.sampling, cfg.eval
    facts = [
        ("model", str(info.get("model") or cfg.model.path or "—")),
        ("database", str(store.path)),
        ("rounds", str(len(an.round_summary(store, cfg)))),
        ("T_train / top-k / top-p", f"{s.temperature} / {s.top_k} / {s.top_p}"),
        ("T_eval / top-k / top-p", f"{e.temperature} / {e.top_k} / {e.top_p}"),
        ("sampler engine", ", ".join(store.engine_labels()) or "—"),
        ("sandbox isolation", _sandbox_fact(store.sandbox_labels())),
    ]
    cmp = an.compare_baseline(store, cfg)
    if cmp:
        facts.append(
            (
                "best SSD vs best temperature-only baseline",
                f"SSD round {cmp['ssd_round']} pass@1 {fmt(cmp['ssd_pass@1'])} vs "
                f"base model at T={cmp['baseline_temperature']:g} {fmt(cmp['baseline_pass@1'])} "
                f"(gain {cmp['gain']:+.3f})",
            )
        )
    return facts


def _sandbox_fact(labels: list[str]) -> str:
    if not labels:
        return "not recorded (no test programs ran yet, or the run predates the record)"
    weak = any(weaker_than_strict(x) for x in labels)
    return ", ".join(labels) + (" (weaker than strict: see docs/sandbox.md)" if weak else "")


def _rounds_section(summary: list[dict[str, Any]], cfg: RunConfig) -> Section:
    ks = [f"pass@{k}" for k in sorted(set(cfg.eval.k))]
    cols = [*ks, "eval distinct_2", "eval unique_share", "eval mean_length", "eval loop_share"]
    return Section(
        f"Rounds (eval at T_eval = {cfg.eval.temperature})",
        ["round", *ks, "distinct-2", "unique share", "mean length", "loop share"],
        [[str(r["round"]), *_cells(r, cols)] for r in summary],
    )


DIFFICULTY_ORDER = ("easy", "medium", "hard")
NO_LEVEL = "unlabelled"  # problems without a difficulty


def _difficulty_section(by_round: dict[int, flips.PassCounts], cfg: RunConfig) -> Section:
    """pass@1 per difficulty per round, from the verdicts: the mean over a level's problems
    of the share of their samples that passed (the unbiased pass@1, as evaluate computes it)."""
    levels = sorted(
        {d or NO_LEVEL for counts in by_round.values() for _, d, n, _ in counts if n},
        key=lambda d: (DIFFICULTY_ORDER.index(d) if d in DIFFICULTY_ORDER else 9, d),
    )
    sizes = {
        level: max(
            sum(1 for _, d, n, _ in counts if n and (d or NO_LEVEL) == level)
            for counts in by_round.values()
        )
        for level in levels
    }
    rows = []
    for rnd, counts in sorted(by_round.items()):
        cells = []
        for level in levels:
            shares = [c / n for _, d, n, c in counts if n and (d or NO_LEVEL) == level]
            cells.append(fmt(sum(shares) / len(shares)) if shares else "—")
        rows.append([str(rnd), *cells])
    return Section(
        f"pass@1 per difficulty (eval at T_eval = {cfg.eval.temperature})",
        ["round", *(f"{level} ({sizes[level]} problems)" for level in levels)],
        rows,
        "no judged evaluation samples",
    )


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _mcnemar_section(by_round: dict[int, flips.PassCounts]) -> Section:
    """McNemar's exact test between every two rounds (analysis/flips.py)."""
    rows = [
        [f"{m.a} → {m.b_round}", str(m.gained), str(m.lost), str(m.pairs), fmt_p(m.p)]
        for m in flips.mcnemar_table(by_round)
    ]
    return Section(
        "McNemar's test between rounds (a problem is solved when at least half its samples "
        "pass; gained: unsolved → solved, lost: solved → unsolved)",
        ["rounds", "gained", "lost", "problems", "p"],
        rows,
        "fewer than two rounds with judged evaluation samples",
    )


def _behaviour_section(store: RunStore, cfg: RunConfig, summary: list[dict[str, Any]]) -> Section:
    """Behavioural diversity per round (analysis/behaviour.py), at T_eval."""
    t = cfg.eval.temperature
    rows = []
    for r in summary:
        values = [store.metric_at(r["round"], name, "eval", t) for name in BEHAVIOUR_METRICS]
        if any(v is not None for v in values):
            rows.append([str(r["round"]), *(fmt(v) for v in values)])
    return Section(
        f"Behavioural diversity (eval at T_eval = {t}: samples grouped by what they do on "
        "the tests)",
        [
            "round",
            "behaviours per problem",
            "behaviour entropy (nats)",
            "behaviour share",
            "programs per behaviour",
        ],
        rows,
        "no behaviour classes ([analysis] behaviours off, or no analyse stage has run)",
    )


def _diversity_section(summary: list[dict[str, Any]]) -> Section:
    cols = [
        "eval pairwise_similarity",
        "eval mean_entropy",
        "train n_samples",
        "train truncated_samples",
        "train trained_samples",
        "train distinct_2",
        "train duplicate_share",
        "train mean_length",
    ]
    return Section(
        "Diversity (eval similarity, entropy; training samples)",
        [
            "round",
            "eval similarity",
            "eval entropy",
            "train n",
            "train cut at max tokens",
            "trained on",
            "train distinct-2",
            "train duplicates",
            "train length",
        ],
        [[str(r["round"]), *_cells(r, cols)] for r in summary],
    )


def _probe_section(summary: list[dict[str, Any]]) -> Section:
    cols = [
        "probe fork_entropy",
        "probe lock_tail_mass",
        "probe kept_mass",
        "probe train_kept_mass",
        "probe lock_train_kept_mass",
        "probe n_fork",
        "probe n_lock",
    ]
    rows = [[str(r["round"]), *_cells(r, cols)] for r in summary if r["probe n_fork"] is not None]
    return Section(
        "Fork / lock probe (round 0's eval samples re-scored by each round's model)",
        [
            "round",
            "fork entropy",
            "lock tail mass (T_eval set)",
            "kept mass (T_eval set)",
            "KeptMass (T_train set)",
            "KeptMass at locks (T_train set)",
            "forks",
            "locks",
        ],
        rows,
        "" if rows else "no probe data (the analyse stage ran without a model)",
    )


def _baseline_section(store: RunStore, cfg: RunConfig) -> Section:
    curve = an.baseline_curve(store)
    ks = [f"pass@{k}" for k in sorted(set(cfg.eval.k))]
    return Section(
        "Temperature-only baseline (base model, round 0)",
        ["temperature", *ks],
        [[f"{p['temperature']:g}", *(fmt(p.get(k)) for k in ks)] for p in curve],
    )


def _warnings_section(store: RunStore) -> Section:
    rows = [
        [str(w["round"]), w["rule"], w["message"], _evidence_brief(w["evidence"])]
        for w in store.warnings()
    ]
    return Section(
        "Warnings", ["round", "rule", "message", "samples"], rows, "" if rows else "none"
    )


def _evidence_brief(ev: dict[str, Any]) -> str:
    ids = ev.get("sample_ids") or []
    more = "…" if len(ids) > 5 else ""
    return ", ".join(map(str, ids[:5])) + more


# ---- charts --------------------------------------------------------------------------------------------


def _new_figure(width: float) -> Any:
    """An empty figure on the Agg canvas, laid out so that legends outside the axes fit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(ax: Any) -> None:
    """Grid, and the legend below the axes: never over a line."""
    ax.grid(alpha=0.3)
    ncol = 2 if len(ax.lines) > 2 else 1  # four entries in one column squeeze the axes
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=8, frameon=False)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _figure(draw: Callable[[Any], bool]) -> bytes | None:
    """Render one chart to PNG; None when ``draw`` had nothing to plot."""
    fig = _new_figure(6.4)
    ax = fig.add_subplot()
    if not draw(ax):
        return None
    _finish(ax)
    return _png(fig)


#: The probe's picture: one panel per kind of number, each on its own scale (entropy is in
#: nats; the masses near 1 and the tail mass near 0 would be flat lines on a shared axis).
_PROBE_PANELS = (
    ("Fork entropy", "nats", [("probe fork_entropy", "fork entropy (nats)")]),
    (
        "Mass kept by truncation",
        "share of probability",
        [
            ("probe kept_mass", "kept mass (T_eval set)"),
            ("probe train_kept_mass", "KeptMass (T_train set, the paper's)"),
            ("probe lock_train_kept_mass", "KeptMass at locks (T_train set)"),
        ],
    ),
    (
        "Tail mass at locks",
        "share of probability",
        [("probe lock_tail_mass", "lock tail mass (T_eval set)")],
    ),
)


def probe_figure(summary: list[dict[str, Any]]) -> Any:
    """The fork / lock probe by round, a panel per kind of number; None without probe data."""
    panels = [p for p in _PROBE_PANELS if any(_series(summary, key)[0] for key, _ in p[2])]
    if not panels:
        return None
    fig = _new_figure(3.4 * len(panels))
    for i, (title, ylabel, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        _plot_rounds(ax, summary, keys, title, ylabel)
        _finish(ax)
    fig.suptitle("Fork / lock probe: round 0's eval samples re-scored by each round's model")
    return fig


def _series(summary: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["round"], r[key]) for r in summary if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_rounds(ax, summary, keys: list[tuple[str, str]], title: str, ylabel: str) -> bool:
    drawn = False
    for key, label in keys:
        xs, ys = _series(summary, key)
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
            drawn = True
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    return drawn


def _charts(store: RunStore, cfg: RunConfig, summary: list[dict[str, Any]]) -> dict[str, bytes]:
    ks = [f"pass@{k}" for k in sorted(set(cfg.eval.k))]
    curve = an.baseline_curve(store)
    best_base = max((p["pass@1"] for p in curve if "pass@1" in p), default=None)

    def pass_chart(ax) -> bool:
        drawn = _plot_rounds(ax, summary, [(k, k) for k in ks], "pass@k by round", "pass rate")
        if drawn and best_base is not None:
            ax.axhline(best_base, ls="--", color="grey", label="best baseline pass@1")
        return drawn

    def baseline_chart(ax) -> bool:
        for k in ks:
            pts = [(p["temperature"], p[k]) for p in curve if k in p]
            ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", label=f"base {k}")
        ssd = [r["pass@1"] for r in summary if r["round"] >= 1 and r.get("pass@1") is not None]
        if ssd:
            ax.axhline(max(ssd), ls="--", color="C3", label="best SSD round pass@1")
        ax.set(title="Temperature-only baseline", xlabel="T_eval", ylabel="pass rate")
        return len(curve) > 0

    specs: dict[str, Callable[[Any], bool]] = {
        "pass_at_k": pass_chart,
        "baseline": baseline_chart,
        "diversity": lambda ax: _plot_rounds(
            ax,
            summary,
            [
                ("eval distinct_2", "eval distinct-2"),
                ("eval unique_share", "eval unique share"),
                ("eval pairwise_similarity", "eval pairwise similarity"),
                ("train duplicate_share", "train duplicate share"),
            ],
            "Diversity by round",
            "share",
        ),
        "length": lambda ax: _plot_rounds(
            ax,
            summary,
            [("eval mean_length", "eval"), ("train mean_length", "train")],
            "Mean completion length",
            "tokens",
        ),
    }
    out = {}
    for name, draw in specs.items():
        png = _figure(draw)
        if png:
            out[name] = png
    if (probe := probe_figure(summary)) is not None:
        out["probe"] = _png(probe)
    return out


# ---- output -----------------------------------------------------------------------------------------


def print_report(store: RunStore, console: Console) -> None:
    """The report as rich tables in the terminal."""
    data = collect(store)
    console.print(f"[bold]{data.title}[/bold]")
    for k, v in data.facts:
        console.print(f"  {k}: {v}")
    for sec in data.sections:
        if not sec.rows:
            console.print(f"[bold]{sec.title}[/bold]: {sec.note or 'no data'}")
            continue
        # The title on a line of its own: as a table title it is wrapped to the table's width.
        console.print(sec.title, style="table.title", markup=False)
        table = Table()
        for h in sec.headers:
            table.add_column(h)
        for row in sec.rows:
            table.add_row(*row)
        console.print(table)


def write_report(store: RunStore, out_path: str | Path) -> Path:
    """Write the report: Markdown when ``out_path`` ends in .md, otherwise self-contained HTML."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect(store, charts=True)
    if out.suffix.lower() == ".md":
        out.write_text(_markdown(data, out), encoding="utf-8")
    else:
        out.write_text(_html(data), encoding="utf-8")
    return out


def _markdown(data: ReportData, out: Path) -> str:
    img_dir = out.with_name(out.stem + "_files")
    lines = [f"# {data.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in data.facts] + [""]
    for sec in data.sections:
        lines += [f"## {sec.title}", ""]
        if not sec.rows:
            lines += [sec.note or "no data", ""]
            continue
        cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines.append("| " + " | ".join(sec.headers) + " |")
        lines.append("|" + "---|" * len(sec.headers))
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in sec.rows]
        lines.append("")
    if data.charts_note:
        lines += ["## Charts", "", data.charts_note, ""]
    if data.charts:
        img_dir.mkdir(exist_ok=True)
        lines += ["## Charts", ""]
        for name, png in data.charts.items():
            (img_dir / f"{name}.png").write_bytes(png)
            lines += [f"![{name}]({img_dir.name}/{name}.png)", ""]
    return "\n".join(lines)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "td:nth-child(n+3){text-align:left}th{background:#f3f3f3}img{max-width:100%}"
)


def _html(data: ReportData) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(data.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{e(data.title)}</h1><ul>",
        *(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in data.facts),
        "</ul>",
    ]
    for sec in data.sections:
        parts.append(f"<h2>{e(sec.title)}</h2>")
        if not sec.rows:
            parts.append(f"<p>{e(sec.note or 'no data')}</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in sec.headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in sec.rows]
        parts.append("</table>")
    if data.charts_note:
        parts.append(f"<h2>Charts</h2><p>{e(data.charts_note)}</p>")
    if data.charts:
        parts.append("<h2>Charts</h2>")
        for name, png in data.charts.items():
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f"<p><img alt='{e(name)}' src='data:image/png;base64,{b64}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
