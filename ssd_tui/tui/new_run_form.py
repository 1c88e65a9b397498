"""The new-run form's fields and rules: an example config, edited, validated as the CLI
validates it, written as RUNS_DIR/<name>/config.toml. No textual here."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ssd_tui
from ssd_tui.config import dump_toml, loads_config, toml_value
from ssd_tui.errors import SSDError
from ssd_tui.tui.data import display_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class FormField:
    label: str
    section: str
    key: str
    kind: str  # str | path | value (any TOML value: numbers are parsed as TOML)


FORM_FIELDS: tuple[FormField, ...] = (
    FormField("model path", "model", "path", "path"),
    FormField("prompt set", "data", "train_prompts", "path"),
    FormField("benchmark", "data", "benchmark", "path"),
    FormField("T_train", "sampling", "temperature", "value"),
    FormField("top-k", "sampling", "top_k", "value"),
    FormField("top-p", "sampling", "top_p", "value"),
    FormField("samples per prompt", "sampling", "samples_per_prompt", "value"),
    FormField("LoRA r", "lora", "r", "value"),
    FormField("rounds", "run", "rounds", "value"),
)

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def example_dirs(only: Path | None = None) -> list[Path]:
    """Where example configs are looked for: ./examples and the source checkout's
    examples/ (or only `only`, when the app was given an examples folder)."""
    if only is not None:
        return [Path(only).resolve()] if Path(only).is_dir() else []
    dirs = [Path.cwd() / "examples", Path(ssd_tui.__file__).resolve().parent.parent / "examples"]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def example_configs(dirs: list[Path]) -> list[Path]:
    out = []
    for d in dirs:
        out += sorted(d.glob("*.toml"))
    # demo.toml first: it is the one to start from.
    return sorted(out, key=lambda p: (p.name != "demo.toml", p.name))


def read_example(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SSDError(f"{path}: cannot read example config: {e}") from None


def form_values(example: dict[str, dict[str, Any]], example_dir: Path) -> dict[str, str]:
    """The form's initial texts. Paths of the example (relative to its folder) are shown
    relative to the current directory, the one the form's relative paths are read from."""
    out = {}
    for f in FORM_FIELDS:
        v = example.get(f.section, {}).get(f.key)
        if v is None:
            out[field_id(f)] = ""
            continue
        if f.kind == "path" and isinstance(v, str) and v:
            resolved = resolve_path_value(v, example_dir, f.key)
            if resolved != v:
                # Shown relative to the current directory only when it exists (so that
                # reading it back cannot mistake it for a hub id); else absolute.
                v = display_path(resolved) if Path(resolved).exists() else resolved
        out[field_id(f)] = v if isinstance(v, str) else toml_value(v)
    return out


def field_id(f: FormField) -> str:
    return f"{f.section}-{f.key}".replace("_", "-")


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # kept as a string: the config check then names the expected type


def resolve_path_value(raw: str, base: Path, key: str) -> str:
    """A path-like config value made absolute against `base`; a named problem set
    ('humaneval', 'leetcode[:…]') or a Hugging Face model id stays as it is.

    The example's own values resolve against the example's folder (what the config
    format says); values typed in the form resolve against the current directory.
    """
    if not raw:
        return raw
    p = Path(raw).expanduser()
    if p.is_absolute():
        return str(p)
    if (base / p).exists() or raw.startswith((".", "~")):
        return str((base / p).resolve())
    if key != "path":  # a problem set: a name, or a JSONL file
        name = raw.strip().lower()
        if name == "humaneval" or name == "leetcode" or name.startswith("leetcode:"):
            return raw
        return str((base / p).resolve())
    if raw.count("/") == 1:  # shaped like a hub id ("org/name"), as the engine reads it
        return raw
    return str((base / p).resolve())


def build_run_config(
    example: dict[str, dict[str, Any]],
    example_dir: Path,
    name: str,
    values: dict[str, str],
    source: Path,
) -> str:
    """The config.toml text for a new run in `source.parent` (= RUNS_DIR/<name>).

    Starts from the example, applies the form's values, sets `[run] name` and `dir = "."`,
    and makes every path absolute: the example's own relative paths against its folder,
    typed ones against the current directory.
    """
    data: dict[str, dict[str, Any]] = {
        s: dict(t) for s, t in example.items() if isinstance(t, dict)
    }
    for f in FORM_FIELDS:
        raw = values.get(field_id(f), "").strip()
        table = data.setdefault(f.section, {})
        if f.kind == "value":
            if raw == "" and f.key not in table:
                continue
            table[f.key] = _parse_value(raw)
        else:
            if raw == "":
                table.pop(f.key, None)
            else:
                table[f.key] = resolve_path_value(raw, Path.cwd(), f.key)
    run = data.setdefault("run", {})
    run["name"] = name
    run["dir"] = "."
    ordered = {"run": data.pop("run"), **data}
    return dump_toml(ordered, header=f"ssd-tui run '{name}', created in the app from {example_dir}")


def check_new_run(runs_dir: Path, name: str, text: str) -> Path:
    """Validate a new run's name and config text exactly as `ssd-tui run` would; return the
    config path to write. Raises SSDError with the CLI's message."""
    if not name:
        raise SSDError("run name: missing")
    if not RUN_NAME_RE.match(name):
        raise SSDError(
            f"run name {name!r}: use letters, digits, '.', '_' or '-' (it names the run folder)"
        )
    run_dir = Path(runs_dir) / name
    if (run_dir / "config.toml").exists() or (run_dir / "run.db").exists():
        raise SSDError(f"run name {name!r}: {run_dir} already holds a run")
    path = run_dir / "config.toml"
    loads_config(text, source=str(path), base_dir=run_dir.resolve())
    return path


def write_new_run(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
