"""`ssd-tui report`: terminal tables and a self-contained file, with the DB's numbers."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from rich.console import Console
from test_analysis import (
    T_EVAL,
    TEMPLATES,
    add_eval,
    add_train,
    cfg,
    fake_scorer,
    healthy_run,
    set_pass,
)

from ssd_tui.analysis import flips
from ssd_tui.analysis import rounds as an
from ssd_tui.outputs import report
from ssd_tui.store.run_store import RunStore


@pytest.fixture
def run(tmp_path: Path) -> RunStore:
    """Three analysed rounds with a probe, a baseline sweep and one warning (round 3)."""
    store = healthy_run(tmp_path)
    config = cfg()
    store.init_run("demo-run", "tiny-model", config.to_json(), "", str(tmp_path))
    set_pass(store, 0, 0.25, 0.5, t=0.4)
    set_pass(store, 0, 0.35, 0.65, t=1.2)
    for rnd, h in enumerate([2.0, 1.8, 1.6]):
        an.analyse_round(store, rnd, config, fake_scorer(h, 0.05 - 0.01 * rnd))
    add_train(store, 3, same=TEMPLATES[0].format(c=2))
    add_eval(store, 3)
    set_pass(store, 3, 0.6, 0.9)
    an.analyse_round(store, 3, config, fake_scorer(1.5, 0.01))
    return store


def _db_numbers(store: RunStore) -> list[str]:
    """A few numbers the report must show, formatted as it formats them."""
    return [
        f"{store.metric(2, 'pass@1', 'eval', T_EVAL):.3f}",
        f"{store.metric(1, 'distinct_2', 'eval', T_EVAL):.3f}",
        f"{store.metric(3, 'duplicate_share', 'train'):.3f}",
        f"{store.metric(1, 'fork_entropy', 'probe'):.3f}",
        f"{store.metric(0, 'pass@5', 'eval', 1.2):.3f}",
    ]


def test_html_report_is_self_contained(run, tmp_path):
    out = report.write_report(run, tmp_path / "out" / "report.html")
    text = out.read_text()
    assert text.count("<table>") >= 5
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) >= 3
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    for number in _db_numbers(run):
        assert number in text
    assert "train_duplicates" in text and "demo-run" in text
    assert "SSD round 3 pass@1 0.600 vs base model at T=1.2 0.350 (gain +0.250)" in text
    assert "src='http" not in text  # nothing fetched from elsewhere


def test_markdown_report_writes_images_beside_it(run, tmp_path):
    out = report.write_report(run, tmp_path / "report.md")
    text = out.read_text()
    assert "| round | pass@1 | pass@5 |" in text
    pngs = sorted((tmp_path / "report_files").glob("*.png"))
    assert {p.stem for p in pngs} >= {"pass_at_k", "baseline", "diversity", "probe", "length"}
    for p in pngs:
        assert f"(report_files/{p.name})" in text
        assert p.read_bytes().startswith(b"\x89PNG")
    for number in _db_numbers(run):
        assert number in text


def test_print_report_shows_tables(run):
    console = Console(record=True, width=220)
    report.print_report(run, console)
    text = console.export_text()
    for title in (
        "Rounds",
        "Diversity",
        "Fork / lock probe",
        "Temperature-only baseline",
        "Warnings",
    ):
        assert title in text
    for number in _db_numbers(run):
        assert number in text
    assert "train_duplicates" in text


def test_report_of_a_bare_run_has_no_charts_but_works(tmp_path):
    store = RunStore.open(tmp_path / "bare.db", create=True)
    out = report.write_report(store, tmp_path / "bare.html")
    text = out.read_text()
    assert "no probe data" in text and "data:image" not in text
    console = Console(record=True, width=120)
    report.print_report(store, console)
    assert "Warnings" in console.export_text()


def test_report_file_without_matplotlib_has_the_tables_and_says_why_no_charts(
    run, tmp_path, monkeypatch, capsys
):
    # matplotlib is an optional extra: simulate a base install, in process, through the CLI.
    import sys

    from ssd_tui import cli

    for name in [m for m in sys.modules if m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(run.path), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    assert f"wrote {out} ({report.NO_CHARTS})" in printed.out
    text = out.read_text()
    assert text.count("<table>") >= 5 and "data:image" not in text
    assert 'pip install -e ".[report]"' in text.replace("&quot;", '"')
    for number in _db_numbers(run):
        assert number in text
    md = report.write_report(run, tmp_path / "r.md")
    assert report.NO_CHARTS in md.read_text() and not (tmp_path / "r_files").exists()


def test_report_into_a_file_or_pipe_is_neither_wrapped_nor_cut(run):
    # `report > file` wrapped at 80 columns and cut headers ("eval simil…").
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "ssd_tui", "report", str(run.path)],
        capture_output=True,  # stdout is a pipe, not a terminal
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert not [line for line in lines if "┃" in line and "…" in line]  # no header cut
    for section in report.collect(run).sections:
        # not wrapped: the whole title on one line (a section without rows: "title: why")
        assert any(ln.strip().startswith(section.title) for ln in lines), section.title
        if section.rows:  # each header whole, on one line
            assert any(all(h in line for h in section.headers) for line in lines), section.title
    fact = next(line for line in lines if "best SSD vs best temperature-only baseline" in line)
    assert fact.endswith("(gain +0.250)")  # a long line stays one line


def test_the_probe_picture_puts_each_unit_on_its_own_axes_and_legends_outside(run):
    # Five lines on one axis overlapped near 1.0 and the legend covered fork entropy.
    summary = report.an.round_summary(run, report.run_config(run))
    fig = report.probe_figure(summary)
    panels = [ax for ax in fig.axes if ax.lines]
    labels = [[line.get_label() for line in ax.lines] for ax in panels]
    assert ["fork entropy (nats)"] in labels  # entropy alone: nats are not a share
    probed = [k for k in summary[0] if k.startswith("probe ") and "n_" not in k]
    drawn = [k for k in probed if any(r[k] is not None for r in summary)]
    assert len(panels) == 3 and sum(map(len, labels)) == len(drawn) >= 3  # every line drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in panels:
        legend = ax.get_legend()
        assert legend is not None
        box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(area), [line.get_label() for line in ax.lines]


# ---- where the gains and losses are: per difficulty, McNemar, behaviours ------------------------

ROUND0 = [("a", "easy", 5, 5), ("b", "hard", 5, 0), ("c", "hard", 5, 1), ("d", "medium", 5, 4)]
ROUND1 = [("a", "easy", 5, 4), ("b", "hard", 5, 3), ("c", "hard", 5, 4), ("d", "medium", 5, 1)]


def test_pass_at_1_per_difficulty_per_round():
    sec = report._difficulty_section({0: ROUND0, 1: ROUND1}, cfg())
    assert sec.headers == [
        "round", "easy (1 problems)", "medium (1 problems)", "hard (2 problems)"
    ]  # fmt: skip
    # hard: the mean of its problems' pass shares (0/5, 1/5), then (3/5, 4/5)
    assert sec.rows == [["0", "1.000", "0.800", "0.100"], ["1", "0.800", "0.200", "0.700"]]
    unlabelled = report._difficulty_section({0: [("a", None, 2, 1)]}, cfg())
    assert unlabelled.headers[1] == "unlabelled (1 problems)" and unlabelled.rows[0][1] == "0.500"


def test_mcnemar_between_every_two_rounds():
    round2 = [("a", "easy", 5, 5), ("b", "hard", 5, 5), ("c", "hard", 5, 0), ("d", "medium", 5, 2)]
    sec = report._mcnemar_section({0: ROUND0, 1: ROUND1, 2: round2})
    assert [r[0] for r in sec.rows] == ["0 → 1", "0 → 2", "1 → 2"]
    p01 = flips.mcnemar_p(2, 1)  # b and c became solved, d stopped
    assert sec.rows[0] == ["0 → 1", "2", "1", "4", f"{p01:.3f}"]
    assert report._mcnemar_section({0: ROUND0}).rows == []
    assert report.fmt_p(0.0004) == "<0.001"


def test_the_report_has_difficulty_mcnemar_and_behaviour_tables(run, tmp_path):
    run.set_metrics(1, "eval", T_EVAL, {"all": {"behaviours": 2.5, "behaviour_entropy": 0.693}})
    text = report.write_report(run, tmp_path / "r.md").read_text()
    assert "## pass@1 per difficulty (eval at T_eval" in text
    assert "| round | easy (2 problems) | hard (2 problems) |" in text
    assert "## McNemar's test between rounds" in text and "| 0 → 3 |" in text
    assert "## Behavioural diversity" in text and "| 1 | 2.500 | 0.693 | — | — |" in text
    console = Console(record=True, width=200)
    report.print_report(run, console)
    shown = console.export_text()
    assert "McNemar's test between rounds" in shown and "pass@1 per difficulty" in shown
