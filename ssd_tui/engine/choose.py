"""Which sampler runs a config (``[run] engine = "hf" | "vllm" | "auto"``), and the engines
a run's stages use (``Engines``: sampler, trainer, scoring model).

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
import inspect
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_tui.engine.base import (
    VLLM_MAX_TEMPERATURE,
    EngineSettings,
    Sampler,
    SamplingParams,
    ScoringModel,
    Trainer,
)

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


def choose_engine(settings: EngineSettings, model_path: str) -> EngineChoice:
    """The engine for these settings and this machine, with the reason.

    engine/vllm.py is imported only when the choice depends on it: it loads torch (~1 s),
    and vLLM itself takes seconds more, which `ssd-tui check` on an "hf" config need not pay.
    """
    asked = settings.engine
    if asked == "hf":
        return EngineChoice("hf", 'set in the config: [run] engine = "hf"')
    if asked == "vllm":
        from ssd_tui.engine.vllm import import_vllm, vllm_platform

        return EngineChoice("vllm", "set in the config", vllm_platform(import_vllm()))
    if not _installed("vllm"):
        return EngineChoice("hf", "auto: vLLM is not installed")
    from ssd_tui.engine.vllm import cpu_head_dims, model_head_dim

    if settings.max_temperature > VLLM_MAX_TEMPERATURE:
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


class Engines:
    """The engines a run's stages use, for one model: a sampler of base ⊕ an adapter, the
    LoRA trainer, and a scoring model (transformers, for teacher-forced passes over samples).

    The sampler is kept until another adapter is asked for or the trainer needs the device
    (a scoring model too, on a GPU). vLLM on a CPU stays up for the whole run and switches
    adapters in place (a fresh LoRA id) instead of paying another ~20-35 s engine start; on
    a GPU each stage runs in its own process (``EngineChoice.per_stage_processes``).

    ``make_sampler(adapter)`` builds the sampler in place of the chosen engine's (tests
    inject fakes through it). The transformers and vLLM modules are imported where a model
    is built, not at the top: with torch, transformers and peft they take ~5 s, which the
    commands that only read a run (and import the pipeline) need not pay.
    """

    def __init__(
        self,
        settings: EngineSettings,
        model_path: str,
        choice: EngineChoice | None = None,
        make_sampler: Callable[[str | None], Sampler] | None = None,
    ) -> None:
        self.settings = settings
        self.model_path = model_path
        self._choice = choice
        self._make_sampler = make_sampler or self._default_sampler
        self._sampler: Sampler | None = None
        self._sampler_adapter: str | None = None  # the live sampler's adapter
        self._scoring: tuple[str | None, Any] | None = None  # (adapter, HFSampler) beside vLLM
        self._tokenizer: Any = None

    @property
    def choice(self) -> EngineChoice:
        """Which engine samples; chosen on first use (the choice may import vLLM)."""
        if self._choice is None:
            self._choice = choose_engine(self.settings, self.model_path)
        return self._choice

    # ---- the sampler ---------------------------------------------------------------
    def sampler(self, adapter: str | None) -> Sampler:
        """The sampler of base ⊕ ``adapter`` (None: the base model); rebuilt only when the
        adapter changes, and not even then where one engine serves the run."""
        if self._sampler is not None and self._sampler_adapter == adapter:
            return self._sampler
        if self._sampler is not None and self._keeps_engine():
            self._sampler.set_adapter(adapter)  # a VLLMSampler: _keeps_engine said so
            self._sampler_adapter = adapter
            return self._sampler
        self.release_sampler()
        self._sampler = self._make_sampler(adapter)
        self._sampler_adapter = adapter
        return self._sampler

    def holds_sampler(self, adapter: str | None) -> bool:
        """Whether the sampler of base ⊕ ``adapter`` is loaded (else asking for it loads it)."""
        return self._sampler is not None and self._sampler_adapter == adapter

    def release_sampler(self) -> None:
        """Free the sampler's model (and its device memory)."""
        if self._sampler is not None:
            self._sampler.close()
        self._sampler = None
        self._sampler_adapter = None

    def engine_starts(self) -> tuple[int, str]:
        """(engines the live sampler has started, the last start in words for the run's log).

        vLLM starts its engine on the first batch (and again to turn LoRA on); the
        transformers sampler has none to start: (0, "").
        """
        sampler = self._sampler
        count = getattr(sampler, "engine_starts", 0)
        if not count:
            return 0, ""
        return count, f"vLLM engine started in {sampler.last_start_s:.0f}s"

    def _default_sampler(self, adapter: str | None) -> Sampler:
        s = self.settings
        if self.choice.name == "vllm":
            from ssd_tui.engine.vllm import VLLMSampler

            return VLLMSampler(self.model_path, adapter=adapter, settings=s)
        from ssd_tui.engine.hf import HFSampler

        return HFSampler(
            self.model_path,
            adapter=Path(adapter) if adapter else None,
            dtype=s.dtype,
            device=s.device,
            batch_size=s.batch_size,
            schedule=s.schedule,
        )

    def _keeps_engine(self) -> bool:
        """vLLM on a CPU stays up across stages and adapters (its RAM is not what the
        trainer needs); on a GPU each stage is its own process."""
        choice = self.choice
        return (
            choice.name == "vllm"
            and not choice.per_stage_processes
            and hasattr(self._sampler, "set_adapter")
        )

    # ---- the trainer and the scoring model ----------------------------------------
    def trainer(self) -> Trainer:
        """The LoRA trainer: in this process, or under torchrun with ``[train] processes``
        > 1 (engine/train_launch.py). It takes the device, so the sampler lets go of it
        first, unless one engine on the CPU serves the whole run."""
        if not self._keeps_engine():
            self.release_sampler()
        s = self.settings
        if s.launch.launched:  # torchrun's processes load the model: nothing to import here
            from ssd_tui.engine.train_launch import LaunchedTrainer

            return LaunchedTrainer(
                self.model_path, s.lora, s.train, s.dtype, s.device, s.launch, s.threads
            )
        from ssd_tui.engine.hf import HFTrainer

        return HFTrainer(self.model_path, s.lora, s.train, s.dtype, s.device)

    def trainer_settings(self) -> dict[str, Any]:
        """The trainer's settings that the config does not set (the run record's ``trainer``),
        read from HFTrainer's signature (no copy)."""
        from ssd_tui.engine.hf import HFTrainer

        fixed = {
            name: p.default
            for name, p in inspect.signature(HFTrainer.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in ("dtype", "device")
        }
        return {
            **fixed,
            "optimizer": "torch.optim.AdamW (default betas and eps)",
            "loss": "cross-entropy on completion tokens only; EOS target after finished samples",
            "lora_init": "[rounds] adapter: continue = round k trains on from the adapter of the "
            "round it sampled from; fresh = a new adapter on the base model; merge = a new adapter "
            "on a copy of that round's weights with its adapter merged in",
        }

    def scoring_model(self, adapter: str | None) -> ScoringModel:
        """A transformers model of base ⊕ ``adapter`` and its tokenizer.

        The live sampler's own model when it has one (the transformers engine); otherwise
        (vLLM) a transformers model loaded beside it, kept until ``release_scoring_model``.
        On a GPU the sampler is released first: vLLM holds ``gpu_memory_utilization`` of
        the device, and the scoring model needs its weights and the pass's logits
        (docs/gpu.md). On the CPU both stay, so the engine is not restarted.
        """
        held = self._scoring
        if held is not None and held[0] == adapter:
            return ScoringModel(held[1].model, held[1].tokenizer)
        if self.choice.name == "hf":  # the transformers sampler is the scoring model
            sampler = self.sampler(adapter)
            model = getattr(sampler, "model", None)
            if model is not None:
                return ScoringModel(model, sampler.tokenizer)
        self.release_scoring_model()
        from ssd_tui.engine.hf import HFSampler, resolve_device

        s = self.settings
        if resolve_device(s.device).type == "cuda":
            self.release_sampler()
        scoring = HFSampler(
            self.model_path,
            adapter=Path(adapter) if adapter else None,
            dtype=s.dtype,
            device=s.device,
        )
        self._scoring = (adapter, scoring)
        return ScoringModel(scoring.model, scoring.tokenizer)

    def scorer(
        self, adapter: str | None, params: SamplingParams, train_params: SamplingParams
    ) -> Callable[[list[str], list[str]], list[dict[str, Any]]] | None:
        """A teacher-forced scorer of base ⊕ ``adapter`` that needs no transformers model, or
        None: the pipeline runs the probe (analysis/probe.py) on ``scoring_model``. Every real
        engine answers None; the tests' fake engine (tests/fixtures/fake_engine.py) scores
        without torch here."""
        return None

    def release_scoring_model(self) -> None:
        """Free the transformers model ``scoring_model`` loaded beside a vLLM sampler."""
        if self._scoring is not None:
            self._scoring[1].close()
        self._scoring = None

    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded once), for rendering prompts with its chat template."""
        if self._tokenizer is None:
            from ssd_tui.engine.hf import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_path)
        return self._tokenizer

    def merge(self, adapter: str, out_dir: Path) -> Path:
        """This model ⊕ ``adapter`` merged into a copy of its weights at ``out_dir``
        (``engine.hf.merge_into_copy``: CPU, ``[model] dtype``); the sampler lets go of its
        model first, as the next model is another one anyway."""
        self.release_sampler()
        self.release_scoring_model()
        from ssd_tui.engine.hf import merge_into_copy

        return merge_into_copy(self.model_path, Path(adapter), out_dir, self.settings.dtype)
