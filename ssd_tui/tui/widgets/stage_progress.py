"""One progress bar per running stage, with rate and ETA from the run DB."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from ssd_tui.store.reads import StageRow
from ssd_tui.tui.data import fmt_duration


@dataclass
class Progress:
    """Rate and ETA of a running stage from what the app saw it do (no DB access).

    The rate counts only work the app watched being done: a resumed stage starts with
    the work of an earlier session already counted in `done`, and dividing that by the
    time since this session's start showed "240/s · ETA 1s". So: items per second since
    the first sight of the current phase, and the stage's ETA from its fraction done
    since the first sight of this stage run.
    """

    key: tuple[int, str, float | None]  # (round, stage, started_at): one stage run
    phase: str = ""
    phase_t0: float = 0.0
    phase_done0: int = 0
    t0: float = 0.0
    fraction0: float | None = None

    @classmethod
    def first(cls, st: StageRow, now: float) -> Progress:
        return cls((st.round, st.stage, st.started_at), st.detail, now, st.done, now, st.fraction())

    def update(self, st: StageRow, now: float) -> tuple[float | None, float | None]:
        """(items per second in this phase, seconds left in the stage), None if unknown."""
        if (st.round, st.stage, st.started_at) != self.key:
            self.__dict__.update(Progress.first(st, now).__dict__)
        if st.detail != self.phase or st.done < self.phase_done0:
            self.phase, self.phase_t0, self.phase_done0 = st.detail, now, st.done
        rate = None
        if now > self.phase_t0 and st.done > self.phase_done0:
            rate = (st.done - self.phase_done0) / (now - self.phase_t0)
        eta = None
        f = st.fraction()
        if f is not None and self.fraction0 is not None and now > self.t0 and f > self.fraction0:
            eta = (1.0 - f) * (now - self.t0) / (f - self.fraction0)
        elif f is not None and self.fraction0 is None:
            self.t0, self.fraction0 = now, f
        return rate, eta


class StageBar(Horizontal):
    DEFAULT_CSS = """
    StageBar { height: 1; }
    StageBar > .stage-name { width: 22; }
    StageBar > ProgressBar { width: 48; }
    StageBar > .stage-rate { width: 1fr; color: $text-muted; }
    """

    def __init__(self, key: str, stage: StageRow, now: float) -> None:
        super().__init__(id=key)
        self.key = key
        self._initial = (stage, now)
        self.progress = Progress.first(stage, now)

    def on_mount(self) -> None:
        self.update_stage(*self._initial)

    def compose(self) -> ComposeResult:
        yield Label("", classes="stage-name")
        yield ProgressBar(total=None, show_eta=False, id=f"{self.key}-bar")
        yield Label("", classes="stage-rate")

    def update_stage(self, st: StageRow, now: float) -> None:
        if not self.query(".stage-name"):
            return  # removed again before its children were mounted (the stage ended)
        self.query_one(".stage-name", Label).update(
            Text.assemble(f"round {st.round} · ", (st.stage, "bold"))
        )
        bar = self.query_one(ProgressBar)
        # The bar is the whole stage's share done (it never goes back as the stage moves
        # from one temperature or phase to the next); the text gives the current phase.
        fraction = st.fraction()
        bar.update(
            total=1000 if fraction is not None else None, progress=round(1000 * (fraction or 0))
        )
        rate, eta = self.progress.update(st, now)
        parts = [st.detail] if st.detail else []
        parts.append(f"{st.done:,}/{st.total:,}" if st.total else f"{st.done:,}")
        if rate is not None:
            parts.append(f"{rate:.2f}/s" if rate < 10 else f"{rate:,.0f}/s")
        if eta is not None:
            parts.append(f"stage ETA {fmt_duration(eta)}")
        self.query_one(".stage-rate", Label).update(Text("  ·  ".join(parts)))


class StageProgress(Vertical):
    """Bars for the stages with status 'running' (set with `show`)."""

    DEFAULT_CSS = """
    StageProgress { height: auto; max-height: 4; padding: 0 1; }
    StageProgress > .idle { color: $text-muted; }
    """

    def __init__(self, clock: Callable[[], float], **kw) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.stages: list[StageRow] = []
        self.idle_text = "no stage running"

    def compose(self) -> ComposeResult:
        yield Label(self.idle_text, classes="idle")

    def show(self, stages: list[StageRow], idle_text: str) -> None:
        self.stages = stages
        self.idle_text = idle_text
        keys = {f"stage-{s.round}-{s.stage}" for s in stages}
        for bar in list(self.query(StageBar)):
            if bar.key not in keys:
                bar.remove()
        idle = self.query_one(".idle", Label)
        idle.update(idle_text)
        idle.display = not stages
        now = self.clock()
        for st in stages:
            key = f"stage-{st.round}-{st.stage}"
            found = self.query(f"#{key}")
            if found:
                found.first(StageBar).update_stage(st, now)
            else:
                self.mount(StageBar(key, st, now))
