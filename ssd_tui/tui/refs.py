"""What a screen is handed (`RunRef`) and the tokenizer the token view decodes with.

No textual here: screens import this module, never the app's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunRef:
    """What a dashboard shows: a run DB, its folder, and how the engine is started."""

    db_path: Path
    review: bool = False
    config_path: Path | None = None  # config for `ssd-tui run`; RUN_DIR/config.toml by default
    autostart_rounds: int | None = None  # start `ssd-tui run --rounds N` on opening (the demo)

    @property
    def run_dir(self) -> Path:
        return self.db_path.parent

    @property
    def engine_config(self) -> Path | None:
        own = self.run_dir / "config.toml"
        if own.exists():
            return own
        return self.config_path if self.config_path and self.config_path.exists() else None


class _FastTokenizer:
    """A model folder's `tokenizer.json` through the `tokenizers` library, with the
    `decode` signature the token view uses (that of a transformers tokenizer)."""

    def __init__(self, path: Path) -> None:
        # Imported on first use: only the token view decodes (benchmarks/README.md §8).
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer: its folder's `tokenizer.json` when there is one (well under
    a second), else `transformers.AutoTokenizer` (hub ids, old formats: importing
    transformers alone took 4-5.5 s, benchmarks/README.md §8)."""
    folder = Path(model_path).expanduser()
    if (folder / "tokenizer.json").is_file():
        return _FastTokenizer(folder / "tokenizer.json")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)
