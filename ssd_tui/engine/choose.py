"""Which sampler runs a config: ``[run] engine = "hf" | "vllm" | "auto"``.

``auto`` picks vLLM where it is installed, can serve the model on this machine, and pays
off; otherwise transformers. "Pays off" is measured, not guessed (benchmarks/README.md,
2 cores): on Qwen2.5-Coder-0.5B vLLM's CPU build samples ~3× faster than transformers
(94–112 vs 30–40 tokens/s, bf16 on a CPU with native bf16), and a whole round runs 1.46×
faster on a CPU without it (float32, §4b, with the exact-statistics pass vLLM's samples
need); but on the 1.4M-parameter demo model it is slower (3.5k vs 4.8k tokens/s) and its
~20 s engine start comes on top. So below ``MIN_VLLM_PARAMS``
parameters auto keeps transformers. On a GPU vLLM pays off for any real model.

The choice and its reason are printed by ``ssd-tui run``/``check`` and stored per stage
(``stages.engine``), so a run says which engine drew each sample.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssd_tui.config import RunConfig

ENGINES = ("auto", "hf", "vllm")

#: Below this many parameters auto keeps transformers (the demo model: 1.4M; Qwen 0.5B: 494M).
MIN_VLLM_PARAMS = 100_000_000


@dataclass(frozen=True)
class EngineChoice:
    name: str  # "hf" or "vllm"
    reason: str  # why, in a few words a user can act on
    platform: str = ""  # vLLM's device ("cpu", "cuda", …); "" for hf

    @property
    def per_stage_processes(self) -> bool:
        """vLLM on a GPU frees its memory reliably only at process exit, so each stage runs
        in its own process (the trainer needs the GPU). On a CPU one engine serves the run."""
        return self.name == "vllm" and self.platform not in ("cpu", "")

    def line(self) -> str:
        where = f" on {self.platform}" if self.platform else ""
        return f"engine: {self.name}{where} ({self.reason})"


def count_parameters(model_path: str | Path) -> int | None:
    """Parameters of a model folder, from its safetensors headers (exact, reads no weights),
    else estimated from config.json; None when neither says."""
    folder = Path(model_path)
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error):
            return None
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    if total:
        return total
    try:
        conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    conf = conf.get("text_config") or conf
    h, layers, vocab = (conf.get(k) for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
    if not (h and layers and vocab):
        return None
    return int(12 * layers * h * h + 2 * vocab * h)  # attention + MLP per layer, embeddings


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # a None entry in sys.modules: importing it fails
        return False


def _max_temperature(cfg: RunConfig) -> float:
    return max(cfg.sampling.temperature, cfg.eval.temperature, *cfg.eval.baseline_temperatures)


def choose_engine(cfg: RunConfig, model_path: str) -> EngineChoice:
    """The engine for this config and machine, with the reason (imports vLLM only when the
    choice depends on it)."""
    asked = cfg.run.engine
    if asked == "hf":
        return EngineChoice("hf", 'set in the config: [run] engine = "hf"')
    if asked == "vllm":
        from ssd_tui.engine.vllm import import_vllm, vllm_platform

        return EngineChoice("vllm", "set in the config", vllm_platform(import_vllm()))
    if not _installed("vllm"):
        return EngineChoice("hf", "auto: vLLM is not installed")
    from ssd_tui.engine.vllm import VLLM_MAX_TEMPERATURE, cpu_head_dims, model_head_dim

    if _max_temperature(cfg) > VLLM_MAX_TEMPERATURE:
        return EngineChoice(
            "hf", f"auto: a temperature above {VLLM_MAX_TEMPERATURE:g}, which vLLM refuses"
        )
    params = count_parameters(model_path)
    try:
        from ssd_tui.engine.vllm import import_vllm, vllm_platform

        platform = vllm_platform(import_vllm())
    except Exception as exc:  # noqa: BLE001 - a broken install means "not vLLM"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return EngineChoice("hf", f"auto: vLLM is installed but does not import ({first})")
    if platform == "cpu":
        dim = model_head_dim(model_path)
        if dim is not None and dim not in cpu_head_dims():
            return EngineChoice("hf", f"auto: vLLM's CPU attention does not take head size {dim}")
        if params is not None and params < MIN_VLLM_PARAMS:
            return EngineChoice(
                "hf",
                f"auto: a {params / 1e6:.1f}M-parameter model samples faster on transformers "
                "than vLLM's CPU build starts",
            )
    size = f"a {params / 1e6:.0f}M-parameter model" if params else "a model of unknown size"
    return EngineChoice("vllm", f"auto: vLLM is installed and pays off for {size}", platform)
