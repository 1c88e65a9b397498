"""Run configuration: one TOML file, validated into frozen dataclasses.

Every error names the file, the line where it can be found, and the key, in one
line. Relative paths in a config resolve against the config file's folder, so a
config means the same thing whatever the current directory is; the copy a run keeps in
its folder is rewritten to mean the same from there (`config_for_run_folder`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssd_tui.engine.base import (
    ENGINES,
    VLLM_MAX_TEMPERATURE,
    EngineSettings,
    LaunchSettings,
    LoraSettings,
    SamplingParams,
    TrainSettings,
    VllmSettings,
)
from ssd_tui.errors import SSDError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Stop strings when the config names none. A completion-style model writes top-level code
# after the function; a chat answer ends with its closing fence, and the completion stops
# would cut it at its second function or its first comment line.
DEFAULT_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
CHAT_STOP = ("\n```\n",)

# What `[sandbox] isolation` accepts; ssd_tui/evaluation/sandbox.py applies it.
ISOLATION_POLICIES = ("strict", "auto", "userns", "none")
#: Overrides ``[sandbox] isolation`` for `ssd-tui run`/`demo` and every engine they (or the
#: app) start: what `--sandbox MODE` sets, so a user who is not root can opt in without
#: editing a config (the demo's ships in the package).
ISOLATION_ENV = "SSD_TUI_SANDBOX"


def weaker_than_strict(label: str) -> bool:
    """Whether an isolation label as stored per stage ("root+cgroup-v1+seccomp", "none", ...)
    is weaker than the default: root mode with a cgroup per program and the seccomp filter.
    (Runs made before the filter existed store "root+cgroup-v1": weaker, by today's measure.)"""
    return not (label.startswith("root+cgroup") and label.endswith("+seccomp"))


def _between(lo: float, hi: float, lo_open: bool = False):
    def check(v: float) -> str | None:
        if (v <= lo if lo_open else v < lo) or v > hi:
            left = "(" if lo_open else "["
            return f"must be in {left}{lo}, {hi}]"
        return None

    return check


def _at_least(lo: float):
    return lambda v: None if v >= lo else f"must be ≥ {lo}"


def _one_of(*choices: str):
    return lambda v: None if v in choices else "must be one of " + ", ".join(map(repr, choices))


def _opt(help: str, check=None, **kw) -> Any:
    return field(metadata={"help": help, "check": check}, **kw)


@dataclass(frozen=True)
class RunSection:
    name: str = _opt("a short name for the run, shown in the app", default="run")
    dir: str = _opt("run folder (run.db, adapters/); relative to this file", default="")
    seed: int = _opt("seed for sampling and training", _at_least(0), default=0)
    rounds: int = _opt("SSD rounds to run after round 0 (the base model)", _at_least(0), default=3)
    engine: str = _opt(
        "sampler engine: auto = vLLM where installed and it pays off (a model of 100M+ "
        "parameters, or a GPU), else transformers (hf); the choice is printed and stored",
        _one_of(*ENGINES),
        default="auto",
    )
    threads: int = _opt("CPU threads for torch; 0 = all cores", _at_least(0), default=0)


@dataclass(frozen=True)
class ModelSection:
    path: str = _opt(
        "local model folder (or a Hugging Face id already in the local cache)", default=""
    )
    gguf_file: str = _opt("a GGUF file inside `path` to convert once to safetensors", default="")
    dtype: str = _opt(
        "weights dtype", _one_of("float32", "bfloat16", "float16", "auto"), default="float32"
    )
    device: str = _opt("torch device", _one_of("cpu", "cuda", "auto"), default="cpu")
    prompt_style: str = _opt(
        "completion: the model continues the code prompt; chat: chat template + fenced code answer",
        _one_of("completion", "chat"),
        default="completion",
    )
    system_prompt: str = _opt(
        "system message for chat-style prompting",
        default="You are an expert Python programmer. Answer with the complete solution in a single ```python code block.",
    )


@dataclass(frozen=True)
class DataSection:
    train_prompts: str = _opt(
        "training prompts: 'humaneval', 'leetcode' or a JSONL file", default=""
    )
    benchmark: str = _opt(
        "held-out benchmark: 'humaneval', 'leetcode' or a JSONL file with tests", default=""
    )
    max_train_prompts: int = _opt(
        "use the first N training prompts; 0 = all", _at_least(0), default=0
    )
    max_eval_problems: int = _opt(
        "use the first N benchmark problems; 0 = all", _at_least(0), default=0
    )


@dataclass(frozen=True)
class SamplingSection:
    temperature: float = _opt("T_train", _between(0.0, 5.0, lo_open=True), default=1.0)
    top_k: int = _opt("top-k truncation; 0 = off", _at_least(0), default=0)
    top_p: float = _opt(
        "top-p truncation; 1.0 = off", _between(0.0, 1.0, lo_open=True), default=1.0
    )
    min_p: float = _opt("min-p truncation; 0.0 = off", _between(0.0, 1.0), default=0.0)
    samples_per_prompt: int = _opt("samples per training prompt", _at_least(1), default=1)
    max_new_tokens: int = _opt("token budget per sample", _at_least(1), default=256)
    stop: tuple[str, ...] = _opt(
        "stop strings (not included in the sample); default: the code-completion stops, or "
        'the closing fence with prompt_style = "chat"',
        default=DEFAULT_STOP,
    )
    batch_size: int = _opt("prompts per generation batch", _at_least(1), default=16)
    refill: bool = _opt(
        "transformers engine, every stage it decodes: a row that ends hands its slot to the "
        "next row of the stage's queue instead of each batch waiting for its longest row. "
        "Off (default): each batch decodes alone, so a stage resumed after a kill writes "
        "exactly what an uninterrupted one would; on, only up to float rounding "
        "(docs/engine.md)",
        default=False,
    )


@dataclass(frozen=True)
class EvalSection:
    temperature: float = _opt(
        "T_eval; 0 = greedy decoding (the arg-max: how most published pass@1 figures are "
        "measured; one answer per problem, so samples_per_problem = 1 and k = [1] suffice)",
        _between(0.0, 5.0),
        default=0.8,
    )
    top_k: int = _opt("top-k truncation; 0 = off", _at_least(0), default=0)
    top_p: float = _opt(
        "top-p truncation; 1.0 = off", _between(0.0, 1.0, lo_open=True), default=0.95
    )
    min_p: float = _opt("min-p truncation; 0.0 = off", _between(0.0, 1.0), default=0.0)
    samples_per_problem: int = _opt("n samples per problem, for pass@k", _at_least(1), default=5)
    k: tuple[int, ...] = _opt("k values for pass@k", default=(1, 5))
    max_new_tokens: int = _opt("token budget per sample", _at_least(1), default=256)
    stop: tuple[str, ...] = _opt(
        "stop strings (not included in the sample); default: the code-completion stops, or "
        'the closing fence with prompt_style = "chat"',
        default=DEFAULT_STOP,
    )
    batch_size: int = _opt("prompts per generation batch", _at_least(1), default=16)
    timeout_s: float = _opt("wall-clock limit per test program", _between(0.1, 600.0), default=10.0)
    memory_mb: int = _opt("memory limit per test program", _at_least(64), default=1024)
    workers: int = _opt("test programs run in parallel; 0 = all cores", _at_least(0), default=0)
    baseline_temperatures: tuple[float, ...] = _opt(
        "round 0 also evaluates the base model at these T_eval values (temperature-only baseline)",
        default=(),
    )


@dataclass(frozen=True)
class LoraSection:
    r: int = _opt("LoRA rank", _at_least(1), default=8)
    alpha: int = _opt("LoRA alpha", _at_least(1), default=16)
    dropout: float = _opt("LoRA dropout", _between(0.0, 0.9), default=0.05)
    target_modules: tuple[str, ...] = _opt(
        "modules to adapt; ['all-linear'] = every linear layer", default=("all-linear",)
    )


@dataclass(frozen=True)
class TrainSection:
    learning_rate: float = _opt(
        "peak learning rate", _between(0.0, 1.0, lo_open=True), default=2e-4
    )
    epochs: int = _opt("passes over the round's samples", _at_least(1), default=1)
    batch_size: int = _opt("examples per micro-batch", _at_least(1), default=4)
    grad_accum: int = _opt("micro-batches per optimiser step", _at_least(1), default=1)
    max_length: int = _opt("prompt + completion tokens kept", _at_least(8), default=512)
    min_completion_lines: int = _opt(
        "drop completions with fewer non-empty lines (stubs)", _at_least(0), default=2
    )
    drop_shortest: float = _opt(
        "also drop this share of the shortest completions", _between(0.0, 0.9), default=0.0
    )
    # A sample cut at max_new_tokens never gets an EOS target: teaching EOS after it would
    # teach the model to stop mid-program (docs/engine.md).
    truncated: str = _opt(
        "samples cut at [sampling] max_new_tokens: 'keep' (trained on as sampled, no EOS "
        "after them) or 'drop'",
        _one_of("keep", "drop"),
        default="keep",
    )
    # How the step is computed; the examples of each optimiser step and its update stay
    # the same (docs/engine.md).
    group_by_length: bool = _opt(
        "run each optimiser step's examples longest first, so passes hold similar lengths "
        "(less padding when grad_accum > 1, same update); false = the shuffled order",
        default=True,
    )
    autocast: str = _opt(
        "bf16 autocast of the training forward pass: 'auto' (on a CPU with native bf16, "
        "AVX512-BF16 or AMX; never on GPUs, where [model] dtype decides), 'bf16' or 'off'",
        _one_of("auto", "bf16", "off"),
        default="auto",
    )
    gradient_checkpointing: bool = _opt(
        "recompute activations in the backward pass: less memory per example, one more "
        "forward pass of time (~1.4× the LoRA step)",
        default=False,
    )
    # Where the step is computed; the update is the one-process update, float summation
    # order aside (docs/engine.md, "Data-parallel").
    processes: int = _opt(
        "training processes on this machine (data-parallel: each holds the model and takes "
        "every N-th forward pass of a step; gloo on CPU, NCCL on GPUs, one GPU each); "
        "1 = in the run's own process, more = launched with torchrun",
        _at_least(1),
        default=1,
    )
    nodes: int = _opt(
        "machines training together (torchrun --nnodes); this one is node 0, the others run "
        'the command the train stage logs (docs/gpu.md, "Several machines")',
        _at_least(1),
        default=1,
    )
    rendezvous: str = _opt(
        "with nodes > 1: HOST:PORT of node 0, where every node meets (torchrun "
        "--master_addr/--master_port)",
        default="",
    )


@dataclass(frozen=True)
class AnalysisSection:
    fork_entropy: float = _opt(
        "positions with base-model entropy ≥ this (nats) are forks", _at_least(0.0), default=1.0
    )
    lock_top1: float = _opt(
        "positions with base-model top-1 probability ≥ this are locks",
        _between(0.0, 1.0),
        default=0.9,
    )
    max_unique_share_drop: float = _opt(
        "warn when the share of unique programs falls by more than this share of the reference "
        "round's (round 0 for eval samples, the first sampled round for training samples)",
        _between(0.0, 1.0),
        default=0.75,
    )
    max_diversity_drop: float = _opt(
        "warn when eval distinct-2 falls by more than this share of round 0's while pass@1 "
        "is not above round 0's",
        _between(0.0, 1.0),
        default=0.2,
    )
    min_passk_gap_ratio: float = _opt(
        "warn when the pass@k − pass@1 gap shrinks below this share of round 0's while pass@k "
        "falls below round 0's (passk_fall_se)",
        _between(0.0, 1.0),
        default=0.5,
    )
    max_fork_entropy_drop: float = _opt(
        "warn when fork-position entropy falls by more than this share of round 0's",
        _between(0.0, 1.0),
        default=0.65,
    )
    passk_fall_se: float = _opt(
        "pass@k counts as fallen (passk_gap_closing, behaviour_collapse) when it is below round "
        "0's by more than this many standard errors of the difference, paired by problem",
        _at_least(0.0),
        default=2.0,
    )
    max_behaviour_entropy_drop: float = _opt(
        "warn when the entropy of eval behaviours falls by more than this share of round 0's "
        "while pass@k falls below round 0's (passk_fall_se)",
        _between(0.0, 1.0),
        default=0.5,
    )
    max_length_drift: float = _opt(
        "warn when mean completion length moves by more than this share of the first round's "
        "(round 0 for eval samples, the first sampled round for training samples)",
        _between(0.0, 10.0),
        default=0.5,
    )
    max_duplicate_share_rise: float = _opt(
        "warn when the share of a round's training samples that are exact duplicates exceeds "
        "the first sampled round's by more than this",
        _between(0.0, 1.0),
        default=0.25,
    )
    max_loop_share_rise: float = _opt(
        "warn when the share of samples that loop (a repeated token run) exceeds the reference "
        "round's by at least this (round 0 for eval, the first sampled round for training)",
        _between(0.0, 1.0),
        default=0.1,
    )
    loop_min_repeats: int = _opt(
        "a sample loops when a token n-gram repeats back to back at least this many times…",
        _at_least(2),
        default=3,
    )
    loop_min_tokens: int = _opt(
        "…and the repeated run covers at least this many tokens", _at_least(2), default=30
    )
    behaviours: bool = _opt(
        "behavioural diversity: run each distinct eval program (at T_eval) on its problem's "
        "tests with a recorder and group samples by what they return; false = skip "
        "(docs/analysis.md)",
        default=True,
    )
    probe_samples: int = _opt(
        "round 0 eval samples re-scored each round for fork/lock statistics; 0 = all",
        _at_least(0),
        default=128,
    )


# How rounds follow one another (docs/rounds.md). The defaults are the loop as it always
# was: each round trains on its own samples and keeps training one adapter.
DATA_POLICIES = ("latest", "accumulate", "anchor")
ADAPTER_POLICIES = ("continue", "fresh", "merge")
ACCUMULATE_BUDGETS = ("steps", "epochs")
COLLAPSE_ACTIONS = ("warn", "stop", "rollback")


@dataclass(frozen=True)
class RoundsSection:
    data: str = _opt(
        "what round k trains on: 'latest' = its own samples; 'accumulate' = the samples of "
        "rounds 1..k (the rounds its model descends from); 'anchor' = its own samples with a "
        "share (anchor_share) of round 1's, the base model's own distribution",
        _one_of(*DATA_POLICIES),
        default="latest",
    )
    anchor_share: float = _opt(
        "anchor: the share of each round's training set drawn from round 1's samples (the "
        "set keeps the size of the round's own)",
        _between(0.0, 1.0),
        default=0.25,
    )
    # "steps" by default: round k then costs what round 1 costs and takes as many optimiser
    # steps as under 'latest', so accumulate against latest compares data, not compute; with
    # "epochs" round k costs k times round 1 and, under adapter = "continue", trains again on
    # samples its adapter has seen k-1 times already.
    accumulate_budget: str = _opt(
        "accumulate: 'steps' (default) = as many optimiser steps as the round's own samples "
        "give, on an even draw from the pooled rounds (round k costs what round 1 costs, and "
        "accumulate compares with latest at equal compute); 'epochs' = [train] epochs passes "
        "over the whole pool (round k costs about k times round 1)",
        _one_of(*ACCUMULATE_BUDGETS),
        default="steps",
    )
    adapter: str = _opt(
        "how adapters carry across rounds: 'continue' = keep training the previous round's "
        "adapter; 'fresh' = a new adapter on the base weights each round; 'merge' = the "
        "previous round's adapter merged into a copy of its weights (RUN_DIR/merged/, one "
        "model's weights of disk per round) and a new adapter trained on top",
        _one_of(*ADAPTER_POLICIES),
        default="continue",
    )


@dataclass(frozen=True)
class ControlSection:
    on_collapse: str = _opt(
        "when a round's mode-collapse rules fire: 'warn' = go on; 'stop' = end the run before "
        "the next round's sampling; 'rollback' = the next round samples from the best round "
        "so far (highest pass@1; within one standard error the earlier round)",
        _one_of(*COLLAPSE_ACTIONS),
        default="warn",
    )
    stop_after_no_gain: int = _opt(
        "stop after this many rounds in a row without a pass@1 gain beyond one standard "
        "error over the best round so far; 0 = off",
        _at_least(0),
        default=0,
    )

    @property
    def active(self) -> bool:
        """Whether the run has decisions to make between rounds (else none are stored)."""
        return self.on_collapse != "warn" or self.stop_after_no_gain > 0


@dataclass(frozen=True)
class VllmSection:
    """Settings of the vLLM engine (`[run] engine = "vllm"`); docs/gpu.md explains each."""

    tensor_parallel_size: int = _opt(
        "GPUs one vLLM engine shards the model over (tensor parallelism)", _at_least(1), default=1
    )
    gpu_memory_utilization: float = _opt(
        "share of each GPU's memory vLLM may take (weights + KV cache); the trainer runs "
        "later, in its own process",
        _between(0.05, 1.0),
        default=0.9,
    )
    max_model_len: int = _opt(
        "longest prompt + completion in tokens (sizes the KV cache); 0 = the model's own",
        _at_least(0),
        default=0,
    )
    max_num_seqs: int = _opt(
        "sequences decoded at once, and how many a stage keeps queued across its batches "
        "(0 = vLLM's own limit; 64 queued on a CPU, 256 on a GPU)",
        _at_least(0),
        default=0,
    )
    max_lora_rank: int = _opt(
        "largest LoRA rank the engine can serve; 0 = the smallest of 8, 16, 32, 64, 128, 256, "
        "512 that holds [lora] r",
        _at_least(0),
        default=0,
    )
    logprobs: int = _opt(
        "top-N log-probabilities vLLM returns per token (raised to top_k when that is larger); "
        "tail_mass is computed from them when they determine it",
        _between(0, 256),
        default=20,
    )
    enforce_eager: bool | None = _opt(
        "no CUDA graphs / no compile: slower decoding, faster start, less memory; "
        "unset = true on vLLM's CPU backend (else each stage pays a compile), false on GPUs",
        default=None,
    )
    enable_prefix_caching: bool = _opt(
        "share the KV cache of a prompt between its n samples", default=True
    )
    # Unset or 0 below: what works on vLLM's CPU backend, where the GPU defaults fail.
    enable_chunked_prefill: bool | None = _opt(
        "split long prefills over engine steps; unset = false on vLLM's CPU backend (where a "
        "seeded request whose prefill is split kills the engine), vLLM's default on GPUs",
        default=None,
    )
    cpu_kvcache_gib: float = _opt(
        "KV cache in GiB on vLLM's CPU backend (VLLM_CPU_KVCACHE_SPACE); 0 = a quarter of "
        "the free RAM, between 1 and 8 GiB (gpu_memory_utilization is not used on CPU)",
        _between(0.0, 1024.0),
        default=0.0,
    )


@dataclass(frozen=True)
class SandboxSection:
    """How test programs are isolated; docs/sandbox.md explains each mode."""

    # Strict by default: a weaker sandbox runs only when a user asks for it.
    isolation: str = _opt(
        '"strict": root with namespaces, an unprivileged uid and a cgroup per program, or '
        'evaluation stops; "auto": the strongest that works here; "userns", "none": that mode '
        "(none: no namespaces, programs run as you). The mode that ran is stored per stage",
        _one_of(*ISOLATION_POLICIES),
        default="strict",
    )


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    control: ControlSection = field(default_factory=ControlSection)
    vllm: VllmSection = field(default_factory=VllmSection)
    sandbox: SandboxSection = field(default_factory=SandboxSection)
    # The folder relative paths resolve against (the config file's folder).
    base_dir: Path = field(default=Path("."), compare=False)

    # ---- derived settings the engines take -------------------------------------------
    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def run_dir(self) -> Path:
        return self.resolve(self.run.dir or f"runs/{self.run.name}")

    @property
    def db_path(self) -> Path:
        return self.run_dir / "run.db"

    def train_sampling(self, seed: int) -> SamplingParams:
        s = self.sampling
        return SamplingParams(
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            s.max_new_tokens,
            s.samples_per_prompt,
            tuple(s.stop),
            seed,
        )

    def eval_sampling(self, seed: int, temperature: float | None = None) -> SamplingParams:
        e = self.eval
        t = e.temperature if temperature is None else temperature
        return SamplingParams(
            t,
            e.top_k,
            e.top_p,
            e.min_p,
            e.max_new_tokens,
            e.samples_per_problem,
            tuple(e.stop),
            seed,
        )

    def lora_settings(self) -> LoraSettings:
        lo = self.lora
        return LoraSettings(lo.r, lo.alpha, lo.dropout, tuple(lo.target_modules))

    def train_settings(self) -> TrainSettings:
        t = self.train
        return TrainSettings(
            t.learning_rate,
            t.epochs,
            t.batch_size,
            t.grad_accum,
            t.max_length,
            self.run.seed,
            group_by_length=t.group_by_length,
            autocast=t.autocast,
            gradient_checkpointing=t.gradient_checkpointing,
        )

    def engine_settings(self) -> EngineSettings:
        """What the engines, and the choice between them, read from this config."""
        return EngineSettings(
            engine=self.run.engine,
            dtype=self.model.dtype,
            device=self.model.device,
            seed=self.run.seed,
            threads=self.run.threads,
            serves_adapters=self.run.rounds > 0,
            max_temperature=max(
                self.sampling.temperature, self.eval.temperature, *self.eval.baseline_temperatures
            ),
            top_ks=(self.sampling.top_k, self.eval.top_k),
            batch_size=max(self.sampling.batch_size, self.eval.batch_size),
            schedule="refill" if self.sampling.refill else "batch",
            lora=self.lora_settings(),
            train=self.train_settings(),
            launch=LaunchSettings(self.train.processes, self.train.nodes, self.train.rendezvous),
            vllm=VllmSettings(**dataclasses.asdict(self.vllm)),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            f.name: dataclasses.asdict(getattr(self, f.name))
            for f in fields(self)
            if f.name != "base_dir"
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# Keys a later version replaced: a config that still names one gets a line saying what
# replaced it; a run DB's stored config that holds one (written by the older version) is
# read without it.
REPLACED_KEYS = {
    ("analysis", "min_unique_share"): "max_unique_share_drop (a drop from round 0's share)",
    ("analysis", "max_loop_share"): "max_loop_share_rise (a rise over round 0's share)",
    ("analysis", "max_duplicate_share"): (
        "max_duplicate_share_rise (a rise over the first sampled round's share)"
    ),
}

_SECTION_TYPES = {
    "run": RunSection,
    "model": ModelSection,
    "data": DataSection,
    "sampling": SamplingSection,
    "eval": EvalSection,
    "lora": LoraSection,
    "train": TrainSection,
    "analysis": AnalysisSection,
    "rounds": RoundsSection,
    "control": ControlSection,
    "vllm": VllmSection,
    "sandbox": SandboxSection,
}


def _line_of(text: str, section: str | None, key: str | None) -> int | None:
    """Find the line (1-based) where `key` is set in `[section]`, or the header itself."""
    current = None
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", s)
        if m:
            current = m.group(1)
            if key is None and current == section:
                return i
            continue
        if key is not None and current == section and re.match(rf"^{re.escape(key)}\s*=", s):
            return i
    return None


def _coerce(value: Any, ftype: str, where: str) -> Any:
    """Check a TOML value against a field's annotated type; ints are accepted for floats."""

    def bad(kind: str) -> SSDError:
        return SSDError(f"{where} must be {kind} (got {value!r})")

    if ftype in ("bool", "bool | None"):  # None: unset, the engine picks
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if ftype == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if ftype == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if ftype == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if ftype.startswith("tuple["):
        inner = ftype[len("tuple[") : -len(", ...]")]
        if not isinstance(value, list):
            raise bad(f"a list of {inner}s")
        return tuple(_coerce(v, inner, f"{where} item") for v in value)
    raise AssertionError(f"unhandled field type {ftype}")


def parse_config(
    data: dict[str, Any], text: str = "", source: str = "config", base_dir: Path | None = None
) -> RunConfig:
    """Validate a parsed TOML document; errors name `source:line: [section] key`."""

    def where(section: str | None, key: str | None) -> str:
        line = _line_of(text, section, key) if text else None
        loc = f"{source}:{line}" if line else source
        name = f"[{section}] {key}" if key else f"[{section}]"
        return f"{loc}: {name}"

    sections: dict[str, Any] = {}
    for sname, table in data.items():
        if sname not in _SECTION_TYPES:
            known = ", ".join(f"[{s}]" for s in _SECTION_TYPES)
            raise SSDError(f"{where(sname, None)}: unknown section (known: {known})")
        if not isinstance(table, dict):
            raise SSDError(f"{source}: '{sname}' must be a table ([{sname}])")
        cls = _SECTION_TYPES[sname]
        spec = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in table.items():
            if (sname, key) in REPLACED_KEYS:
                raise SSDError(
                    f"{where(sname, key)}: replaced by {REPLACED_KEYS[(sname, key)]}: the "
                    "collapse rules judge each run against its own round 0 (docs/analysis.md)"
                )
            if key not in spec:
                raise SSDError(f"{where(sname, key)}: unknown key (known: {', '.join(spec)})")
            f = spec[key]
            loc = where(sname, key)
            v = _coerce(value, str(f.type), loc)
            check = f.metadata.get("check")
            if check is not None:
                items = v if isinstance(v, tuple) else (v,)
                for item in items:
                    msg = check(item)
                    if msg:
                        raise SSDError(f"{loc} {msg} (got {item!r})")
            values[key] = v
        sections[sname] = cls(**values)
    cfg = RunConfig(**sections, base_dir=base_dir or Path("."))
    if cfg.model.prompt_style == "chat":
        for sname in ("sampling", "eval"):
            if "stop" not in data.get(sname, {}):
                cfg = dataclasses.replace(
                    cfg, **{sname: dataclasses.replace(getattr(cfg, sname), stop=CHAT_STOP)}
                )
    _check_cross_fields(cfg, where)
    return cfg


def _check_cross_fields(cfg: RunConfig, where) -> None:
    if not cfg.model.path:
        raise SSDError(f"{where('model', 'path')}: missing (a local model folder is required)")
    if not cfg.data.benchmark:
        raise SSDError(f"{where('data', 'benchmark')}: missing (the held-out problems with tests)")
    if cfg.run.rounds > 0 and not cfg.data.train_prompts:
        raise SSDError(
            f"{where('data', 'train_prompts')}: missing (SSD rounds need training prompts)"
        )
    if not cfg.eval.k:
        raise SSDError(f"{where('eval', 'k')} must list at least one k")
    for k in cfg.eval.k:
        if k < 1 or k > cfg.eval.samples_per_problem:
            raise SSDError(
                f"{where('eval', 'k')} value {k} must be between 1 and samples_per_problem "
                f"({cfg.eval.samples_per_problem})"
            )
    if cfg.lora.alpha < 1:
        raise SSDError(f"{where('lora', 'alpha')} must be ≥ 1")
    if cfg.run.engine == "vllm":
        _check_vllm_temperatures(cfg, where)
    if cfg.train.nodes > 1 and not _host_port(cfg.train.rendezvous):
        raise SSDError(
            f"{where('train', 'rendezvous')} must be HOST:PORT of node 0 when [train] nodes "
            f"> 1 (got {cfg.train.rendezvous!r})"
        )


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _check_vllm_temperatures(cfg: RunConfig, where) -> None:
    """The temperature range follows the engine: vLLM refuses T > 2, and a run should
    say so when its config is read, not when its first stage starts vLLM."""
    keys = [
        ("sampling", "temperature", cfg.sampling.temperature),
        ("eval", "temperature", cfg.eval.temperature),
        *(("eval", "baseline_temperatures", t) for t in cfg.eval.baseline_temperatures),
    ]
    for section, key, t in keys:
        if t > VLLM_MAX_TEMPERATURE:
            raise SSDError(
                f"{where(section, key)} = {t:g} is above {VLLM_MAX_TEMPERATURE:g}, the most "
                'vLLM accepts ([run] engine = "vllm"; the hf engine takes up to 5)'
            )


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; raise SSDError with a one-line message on any problem."""
    p = Path(path)
    if not p.exists():
        raise SSDError(f"config file not found: {p}")
    if p.is_dir():
        raise SSDError(f"config path is a folder, not a TOML file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SSDError(f"cannot read config {p}: {e}") from None
    return loads_config(text, source=str(p), base_dir=p.resolve().parent)


def loads_config(text: str, source: str = "config", base_dir: Path | None = None) -> RunConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SSDError(f"{source}: TOML syntax error: {e}") from None
    return parse_config(data, text, source, base_dir)


# Keys a resumed run may change: how many rounds, and how the work is spread over the
# hardware. None of them changes what is sampled, trained or measured (vllm.logprobs does:
# it decides tail_mass, so it is not here). `run.dir` names the run folder, and a resumed
# run is the database in that folder wherever it now lies (its own config.toml says ".",
# an archived or moved folder is still the same run).
RESUMABLE_KEYS = (
    "run.rounds",
    # The engine draws the samples but does not change what they are (the same truncated
    # distribution, engine/truncation.py); each stage records the engine that ran it.
    "run.engine",
    "run.dir",
    "run.threads",
    "vllm.tensor_parallel_size",
    "vllm.gpu_memory_utilization",
    "vllm.max_num_seqs",
    "vllm.enforce_eager",
    "vllm.enable_prefix_caching",
    "vllm.enable_chunked_prefill",
    "vllm.cpu_kvcache_gib",
    "train.group_by_length",  # how a step is computed, not what it computes
    "train.gradient_checkpointing",
    "train.processes",  # where a step is computed: the same update, summed in another order
    "train.nodes",
    "train.rendezvous",
    "sandbox.isolation",  # a run refused under "strict" must be resumable once opted in
)


def config_diff(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """Keys (as 'section.key') whose values differ between two configs.

    A path differs only when it names another file: "../assets/m" read from examples/ and
    "../../assets/m" read from runs/demo/ are the same model. The same spelling also counts
    as the same (a checkout moved as a whole; a path that then names nothing fails on its
    own, with its own message)."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for s in da:
        for k in da[s]:
            name = f"{s}.{k}"
            va, vb = da[s][k], db.get(s, {}).get(k)
            if name in ignore or va == vb:
                continue
            if (s, k) in PATH_KEYS:
                pa = path_of(a, s, k)
                if pa is not None and pa == path_of(b, s, k):
                    continue
            out.append(name)
    return out


# Keys that act only after round 0's evaluation: two configs that differ in nothing else
# evaluate the same base model on the same problems with the same seeds, so round 0's
# evaluate and baseline stages are the same (a sweep computes them once and the other runs
# reuse them: docs/workbench.md). Round 0's analyse stage reads [analysis] and T_train's
# truncation (the probe's KeptMass), so every run does its own.
AFTER_ROUND0_SECTIONS = ("sampling", "lora", "train", "rounds", "control", "analysis")
AFTER_ROUND0_KEYS = (
    "run.name",
    "run.rounds",
    "data.train_prompts",
    "data.max_train_prompts",
    "eval.workers",  # how many programs run at once, not what they are
)


def round0_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """The keys that make two configs' round-0 evaluations differ (empty: the same
    model, problems, seed and evaluation settings). The engine that samples is compared
    apart, as chosen (``[run] engine = "auto"`` may choose differently per config)."""
    after = tuple(f"{s}.{f.name}" for s in AFTER_ROUND0_SECTIONS for f in fields(_SECTION_TYPES[s]))
    return config_diff(a, b, ignore=RESUMABLE_KEYS + AFTER_ROUND0_KEYS + after)


# ---- paths in a config -------------------------------------------------------------------
# The keys whose values are paths, relative to the config file's folder.
PATH_KEYS = (("run", "dir"), ("model", "path"), ("data", "train_prompts"), ("data", "benchmark"))


def looks_like_hub_id(raw: str) -> bool:
    """``org/name``: read as a Hugging Face model id when no such local folder exists."""
    return raw.count("/") == 1 and not raw.startswith((".", "/", "~"))


def path_of(cfg: RunConfig, section: str, key: str) -> Path | None:
    """The file or folder a path key names, resolved; None when it names none: an empty
    value, a named problem set ('humaneval', 'leetcode…') or a Hugging Face model id."""
    if (section, key) == ("run", "dir"):
        return cfg.run_dir
    raw = getattr(getattr(cfg, section), key)
    if not raw:
        return None
    if section == "data":
        # Here, not at the top: it loads the LeetCode reader (~20 ms) that a config
        # without a `leetcode` spec never needs, and the app imports this module at start.
        from ssd_tui.problems.load import is_named_problem_set

        return None if is_named_problem_set(raw) else cfg.resolve(raw)
    local = cfg.resolve(raw)
    return None if looks_like_hub_id(raw) and not local.exists() else local


def config_for_run_folder(text: str, cfg: RunConfig) -> str:
    """The text of RUN_DIR/config.toml for a run started from config ``text`` (read as
    ``cfg``): it means the same from the run folder as ``text`` does from its own folder.

    ``[run] dir`` becomes "." (the folder it lies in, also after the folder is archived or
    moved); every other relative path is rewritten relative to the run folder, so the copy
    keeps working when the checkout it belongs to moves as a whole (made absolute only
    where ".." after a symlink would name another file); absolute paths, named problem sets
    and model ids stay as written. Comments and layout are kept; a value that is not a
    one-line string (rare TOML forms) makes the whole file written anew instead.
    """
    run_dir = cfg.run_dir
    relative: dict[tuple[str, str], str] = {("run", "dir"): "."}
    absolute = dict(relative)
    for section, key in PATH_KEYS[1:]:
        raw = getattr(getattr(cfg, section), key)
        target = path_of(cfg, section, key)
        if target is None or Path(raw).expanduser().is_absolute():
            continue
        # Lexically, so a symlinked folder (models/ on a big disk) stays in the path.
        rel = os.path.relpath(os.path.normpath(cfg.base_dir / raw), run_dir)
        relative[(section, key)] = rel if rel.startswith(".") else f"./{rel}"
        absolute[(section, key)] = str(target)
    for values in (relative, absolute):  # absolute when ".." after a symlink misleads
        for out in (_set_string_values(text, values), _dump_with(text, values)):
            try:
                if out is not None and _same_paths(cfg, loads_config(out, base_dir=run_dir)):
                    return out
            except SSDError:  # e.g. a quoted key the line search missed, now set twice
                pass
    raise SSDError(f"cannot write a config for the run folder {run_dir}")  # not reached


def config_for_new_run(text: str, base_dir: Path, name: str, run_dir: Path) -> str:
    """The config ``text`` (read from ``base_dir``) for another run called ``name`` in
    ``run_dir``, written as that folder's config.toml (``config_for_run_folder``): what the
    app writes for a branch of a run."""
    values = {("run", "name"): name, ("run", "dir"): str(Path(run_dir).resolve())}
    new = _set_string_values(text, values) or _dump_with(text, values)
    return config_for_run_folder(new, loads_config(new, base_dir=base_dir))


def _dump_with(text: str, values: dict[tuple[str, str], str]) -> str:
    """The whole config written anew with ``values`` set (its comments are lost)."""
    data = tomllib.loads(text)
    for (section, key), v in values.items():
        data.setdefault(section, {})[key] = v
    return dump_toml(data, header="written for its run folder by ssd-tui run")


def _same_paths(a: RunConfig, b: RunConfig) -> bool:
    return all(path_of(a, s, k) == path_of(b, s, k) for s, k in PATH_KEYS) and (
        config_diff(a, b, ignore=()) == []
    )


_STRING_VALUE = re.compile(r"""^(\s*[A-Za-z0-9_]+\s*=\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*')(.*)$""")


def _set_string_values(text: str, values: dict[tuple[str, str], str]) -> str | None:
    """``text`` with each (section, key) set to a string, in place (comments kept); a key
    not in the text is added under its section header. None when a value is not a plain
    one-line string where it is set."""
    lines = text.splitlines()
    added: list[tuple[int, str]] = []
    for (section, key), value in values.items():
        line = _line_of(text, section, key)
        literal = json.dumps(value, ensure_ascii=False)
        if line is not None:
            m = _STRING_VALUE.match(lines[line - 1])
            if m is None:
                return None
            lines[line - 1] = m.group(1) + literal + m.group(3)
            continue
        header = _line_of(text, section, None)
        if header is None:
            if section != "run":
                return None  # not reached: only [run] dir may be missing and still matter
            added.append((0, f"[run]\n{key} = {literal}\n"))
        else:
            added.append((header, f"{key} = {literal}"))
    for at, new in sorted(added, reverse=True):
        lines.insert(at, new)
    return "\n".join(lines) + "\n"


def toml_value(v: Any) -> str:
    """A plain value (bool, number, string, list) as a TOML literal."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise SSDError(f"cannot write {v!r} to TOML")


def dump_toml(data: dict[str, dict[str, Any]], header: str = "") -> str:
    """A config (sections of plain values) as TOML text, under ``header`` as comments."""
    lines = [f"# {ln}" for ln in header.splitlines()] + ([""] if header else [])
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def config_from_json(text: str, base_dir: Path) -> RunConfig:
    """Rebuild a config stored in a run DB (already validated once)."""
    data = json.loads(text)
    sections = {}
    for sname, cls in _SECTION_TYPES.items():
        values = {k: v for k, v in data.get(sname, {}).items() if (sname, k) not in REPLACED_KEYS}
        for f in fields(cls):
            if f.name in values and str(f.type).startswith("tuple["):
                values[f.name] = tuple(values[f.name])
        sections[sname] = cls(**values)
    return RunConfig(**sections, base_dir=base_dir)


def describe_options() -> str:
    """Every section and key with its default and help: the reference `--help` points to."""
    lines = []
    for sname, cls in _SECTION_TYPES.items():
        lines.append(f"[{sname}]")
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            lines.append(
                f"  {f.name} = {json.dumps(default, ensure_ascii=False)}  # {f.metadata.get('help', '')}"
            )
    return "\n".join(lines)
