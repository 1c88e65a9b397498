"""New run: start from an example config, edit its main fields, validate as the CLI does.

Every keystroke re-validates the would-be `RUNS_DIR/<name>/config.toml` with
`ssd_tui.config.loads_config`, so the message under the form is exactly the one
`ssd-tui run` would print for that file.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from ssd_tui.config import RunConfig
from ssd_tui.errors import SSDError
from ssd_tui.tui.data import display_path
from ssd_tui.tui.messages import OpenDashboard
from ssd_tui.tui.new_run_form import (
    FORM_FIELDS,
    build_run_config,
    check_new_run,
    example_configs,
    example_dirs,
    field_id,
    form_values,
    read_example,
    write_new_run,
)
from ssd_tui.tui.refs import RunRef


def _help(section: str, key: str) -> str:
    for f in fields(RunConfig):
        if f.name == section and f.default_factory is not None:  # type: ignore[misc]
            cls = f.default_factory  # type: ignore[misc]
            for g in fields(cls):
                if g.name == key:
                    return g.metadata.get("help", "")
    return ""


class NewRunScreen(Screen):
    HELP_TITLE = "new run"  # what the help screen calls it
    AUTO_FOCUS = "#name"
    BINDINGS = [
        Binding(
            "ctrl+s", "create", "Create run", priority=True, tooltip="write config.toml and open it"
        ),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.examples: list[Path] = []
        self.example: dict[str, dict[str, Any]] = {}
        self.example_dir = Path.cwd()
        self.error: str | None = None
        self.target: Path | None = None
        self.text = ""

    def compose(self) -> ComposeResult:
        self.examples = example_configs(example_dirs(self.app.examples_dir))
        yield Header()
        with VerticalScroll(id="form"):
            yield Static(
                "[b]New run[/b] — from an example config; edit the main fields.", id="form-title"
            )
            with Horizontal(classes="form-row"):
                yield Label("example", classes="form-label")
                yield Select(
                    [(p.name, str(p)) for p in self.examples],
                    prompt="(no example found: start empty)",
                    allow_blank=not self.examples,
                    id="example",
                    compact=True,
                )
            with Horizontal(classes="form-row"):
                yield Label("run name", classes="form-label")
                yield Input(
                    id="name", compact=True, placeholder="folder name under the runs folder"
                )
                yield Label("names the folder RUNS_DIR/<name>", classes="form-help")
            for f in FORM_FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(f.label, classes="form-label")
                    yield Input(id=field_id(f), compact=True)
                    yield Label(_help(f.section, f.key), classes="form-help")
            yield Static("", id="form-target")
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Create run", id="create", variant="primary")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        if self.examples:
            self.load_example(self.examples[0])
        else:
            self.validate()

    # ---- example → form ------------------------------------------------------------------
    @on(Select.Changed, "#example")
    def _example_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and event.value is not None:
            self.load_example(Path(str(event.value)))

    def load_example(self, path: Path) -> None:
        try:
            self.example = read_example(path)
        except SSDError as e:
            self.notify(str(e), severity="error", markup=False)
            return
        self.example_dir = path.resolve().parent
        sel = self.query_one("#example", Select)
        if sel.value != str(path):
            with sel.prevent(Select.Changed):
                sel.value = str(path)
        values = form_values(self.example, self.example_dir)
        for f in FORM_FIELDS:
            inp = self.query_one(f"#{field_id(f)}", Input)
            with inp.prevent(Input.Changed):
                inp.value = values.get(field_id(f), "")
        base = str(self.example.get("run", {}).get("name") or path.stem)
        name = self.query_one("#name", Input)
        with name.prevent(Input.Changed):
            name.value = self._free_name(base)
        self.validate()

    def _free_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "run"
        runs = self.app.runs_dir
        name, i = base, 2
        while (runs / name / "config.toml").exists() or (runs / name / "run.db").exists():
            name, i = f"{base}-{i}", i + 1
        return name

    # ---- validation --------------------------------------------------------------------------
    def values(self) -> dict[str, str]:
        return {field_id(f): self.query_one(f"#{field_id(f)}", Input).value for f in FORM_FIELDS}

    @on(Input.Changed)
    def validate(self) -> str | None:
        name = self.query_one("#name", Input).value.strip()
        runs_dir = self.app.runs_dir
        source = runs_dir / (name or "_") / "config.toml"
        self.text = build_run_config(self.example, self.example_dir, name, self.values(), source)
        for inp in self.query(Input):
            inp.remove_class("-invalid")
        try:
            self.target = check_new_run(runs_dir, name, self.text)
            self.error = None
        except SSDError as e:
            self.target = None
            self.error = str(e)
            bad = self._field_of(self.error)
            if bad is not None:
                self.query_one(f"#{bad}", Input).add_class("-invalid")
        err = self.query_one("#form-error", Static)
        tgt = self.query_one("#form-target", Static)
        if self.error:
            err.update(Text("✗ " + self.error, style="bold red"))
            tgt.update("")
        else:
            err.update(Text("✓ valid config", style="green"))
            tgt.update(
                Text(
                    f'will write {display_path(self.target)}  ([run] dir = ".", paths absolute)',
                    style="dim",
                )
            )
        self.query_one("#create", Button).disabled = self.error is not None
        return self.error

    @staticmethod
    def _field_of(message: str) -> str | None:
        if message.startswith("run name"):
            return "name"
        m = re.search(r"\[(\w+)\] (\w+)", message)
        if m:
            for f in FORM_FIELDS:
                if (f.section, f.key) == (m.group(1), m.group(2)):
                    return field_id(f)
        return None

    # ---- actions -------------------------------------------------------------------------------
    @on(Button.Pressed, "#create")
    def action_create(self) -> None:
        if self.validate() is not None or self.target is None:
            self.notify(
                self.error or "invalid",
                severity="error",
                title="Cannot create the run",
                markup=False,
            )
            bad = self._field_of(self.error or "")
            if bad:
                self.query_one(f"#{bad}", Input).focus()
            return
        path = write_new_run(self.target, self.text)
        self.notify(f"wrote {display_path(path)}", title="Run created", markup=False)
        self.post_message(OpenDashboard(RunRef((path.parent / "run.db").resolve()), replace=True))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.app.pop_screen()
