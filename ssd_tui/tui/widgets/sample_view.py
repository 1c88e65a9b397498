"""One sample: its verdict and test error, and the program (rich Syntax)."""

from __future__ import annotations

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from ssd_tui.evaluation.suspect import REASONS
from ssd_tui.store.reads import SampleDetail

VERDICT_STYLE = {
    "passed": "bold green",
    "failed": "bold red",
    "error": "bold red",
    "timeout": "bold yellow",
    None: "dim",
}
SUSPECT_MARK = (
    "⚑"  # a sample whose program looks like it games the tests (ssd_tui/evaluation/suspect.py)
)
SUSPECT_STYLE = "bold magenta"


def suspect_text(reasons: str | None) -> Text | None:
    """The line under the verdict of a suspect sample: each reason and what it means."""
    names = [x for x in (reasons or "").split(",") if x]
    if not names:
        return None
    text = Text(f"{SUSPECT_MARK} suspect: looks like it games the tests", style=SUSPECT_STYLE)
    for name in names:
        text.append(f"\n  {name}", style=SUSPECT_STYLE)
        if name in REASONS:  # a reason from a newer ssd-tui is shown by name alone
            text.append(f": {REASONS[name]}", style="magenta")
    return text


def verdict_text(status: str | None) -> Text:
    return Text(status or "not tested", style=VERDICT_STYLE.get(status, ""))


def describe(row: dict) -> str:
    return (
        f"#{row['id']} round {row['round']} {row['purpose']} T={row['temperature']:g} "
        f"{row['problem']}[{row['sample_idx']}]"
    )


class SampleView(VerticalScroll):
    DEFAULT_CSS = """
    SampleView { height: 1fr; padding: 0 1; }
    SampleView > #sample-head { margin-bottom: 1; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.detail: SampleDetail | None = None

    def compose(self):
        yield Static("select a sample", id="sample-head")
        yield Static("", id="sample-code")

    def show(self, detail: SampleDetail | None) -> None:
        self.detail = detail
        head = self.query_one("#sample-head", Static)
        code = self.query_one("#sample-code", Static)
        if detail is None:
            head.update("select a sample")
            code.update("")
            return
        r = detail.row
        parts = [
            Text.assemble(
                (describe(r), "bold"),
                "  ",
                verdict_text(r["status"]),
                (f"  {r['n_tokens']} tokens · finish {r['finish_reason']}", "dim"),
                (f" · {r['difficulty']}" if r.get("difficulty") else "", "dim"),
            )
        ]
        if r.get("message"):
            parts.append(Text(r["message"].rstrip(), style="red"))
        flagged = suspect_text(r.get("suspect"))
        if flagged is not None:
            parts.append(flagged)
        head.update(Group(*parts))
        program = r["code"] if r.get("code") else detail.prompt + r["completion"]
        code.update(
            Syntax(
                program,
                "python",
                theme="monokai",
                line_numbers=True,
                word_wrap=False,
                background_color="default",
            )
        )
