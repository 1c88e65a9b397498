"""The arithmetic a round had to do, stage by stage, from the model's shape and its run DB;
and the machine's matmul rate, measured. ``bench_round.py`` prints both and their ratio.

What is counted (2 FLOPs per multiply-add):

- **Linear layers**: every projection of every layer (q, k, v, o; gate, up, down), 2 ×
  their weights per token processed; the LM head (hidden × vocabulary) only for the
  positions whose logits are needed: one per generated token, and the completion's
  positions in a teacher-forced pass or a training step (the engine cuts the prompt's).
- **Attention**: the score and value products, 4 × heads × head size per (query, key)
  pair, each query attending to every earlier position (causal), counted exactly per
  position. At these lengths it is small (Qwen 0.5B: ~3 % at 500 positions) but it is
  counted.
- **Sampling**: a prompt's prefill once (vLLM's prefix cache shares it between a prompt's n
  samples; the transformers engine prefills each row, so it does more than this), then
  one forward per generated token. Greedy samples are decoded once (both engines copy).
- **The exact-statistics pass** (vLLM stages) and **the probe** (``analyse``): one
  teacher-forced forward over prompt + completion per sample.
- **Training**: the forward and the backward of each trained example (the pipeline's own
  ``train_examples``: filtered, cut at ``max_length``), times the epochs. With LoRA the
  frozen weights get no gradient, so the backward is the activations' gradients only:
  about one more forward (measured: forward ≈ backward, benchmarks/README.md §5a), not the
  two of full fine-tuning. So 4 × weights × tokens, not 6; 6 with gradient checkpointing's
  recomputed forward.

Not counted: norms, activations, softmaxes, rotary embeddings, the embedding lookup, the
sampler's vocabulary-wide statistics, the optimiser, the sandbox (the ``test`` rows have no
arithmetic and so no floor). The floor is compute only: decoding a few rows at a time is
bound by memory bandwidth long before it reaches the matmul rate, which is what the ratio
shows.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this tree's ssd_tui, not whichever is installed
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's shape (Llama / Qwen2 config keys)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int

    @classmethod
    def from_config(cls, model: Path) -> Shape:
        c = json.loads((Path(model) / "config.json").read_text())
        c = c.get("text_config", c)
        heads = int(c["num_attention_heads"])
        return cls(
            layers=int(c["num_hidden_layers"]),
            hidden=int(c["hidden_size"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
            ffn=int(c["intermediate_size"]),
            vocab=int(c["vocab_size"]),
        )

    @property
    def body_params(self) -> int:
        """Weights of the linear layers a token goes through, the LM head apart."""
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return self.layers * (q_o + k_v + 3 * self.hidden * self.ffn)

    @property
    def head_params(self) -> int:
        return self.hidden * self.vocab

    def forward(self, start: int, end: int, logits: int) -> float:
        """FLOPs of one sequence's forward over positions start+1..end (the earlier ones
        cached), with the LM head on ``logits`` of them."""
        tokens = end - start
        pairs = (end * (end + 1) - start * (start + 1)) / 2  # Σ t: each attends to t positions
        attention = 4 * self.heads * self.head_dim * self.layers * pairs
        return 2 * self.body_params * tokens + 2 * self.head_params * logits + attention


def sampling_flops(shape: Shape, groups: dict[int, tuple[int, list[int]]]) -> float:
    """A sampling stage: per prompt (prompt tokens, generated tokens of each sample)."""
    total = 0.0
    for prompt, lengths in groups.values():
        total += shape.forward(0, prompt, 1)  # prefill; its logits give the first token
        for g in lengths:  # the other g - 1 tokens are fed back one at a time
            total += shape.forward(prompt, prompt + max(g - 1, 0), max(g - 1, 0))
    return total


def teacher_forced_flops(shape: Shape, pairs: list[tuple[int, int]]) -> float:
    """Forwards over (prompt tokens, completion tokens), logits on the completion."""
    return sum(shape.forward(0, p + c, c) for p, c in pairs)


def train_flops(shape: Shape, pairs: list[tuple[int, int]], epochs: int, ckpt: bool) -> float:
    """LoRA training over (sequence tokens, completion tokens): forward + backward (≈ one
    forward: no gradients of the frozen weights), + one forward with checkpointing."""
    passes = 3 if ckpt else 2
    return passes * epochs * sum(shape.forward(0, t, c) for t, c in pairs)


# ---- from a run ------------------------------------------------------------------------------


def _pipeline(config: Path) -> Any:
    """The run's own pipeline (read only): its prompts, as rendered, and its train_examples."""
    from ssd_tui.config import load_config
    from ssd_tui.problems.load import load_problem_set
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore

    cfg = load_config(config)
    pipe = Pipeline(cfg, RunStore.open(cfg.db_path, readonly=True))
    d = cfg.data
    pipe.eval_problems = load_problem_set(
        d.benchmark, cfg.base_dir, True, d.max_eval_problems or None
    )
    if d.train_prompts:
        pipe.train_problems = load_problem_set(
            d.train_prompts, cfg.base_dir, limit=d.max_train_prompts or None
        )
    return pipe


def stage_flops(config: Path) -> tuple[dict[tuple[int, str], float], Shape, str]:
    """FLOPs per (round, bench_round row) of the run of ``config``; the shape; the dtype.

    Rows: "<stage>: generate" (sampling), "<stage>: token stats" (the exact pass: counted
    for every sampling stage; bench_round shows it only where the run had one, i.e. vLLM),
    "train", "analyse" (the probe). Sampling stages: "sample" (train samples), "evaluate"
    (eval samples at T_eval), "baseline" (eval samples at other temperatures).
    """
    from ssd_tui.engine.base import encode_prompt
    from ssd_tui.engine.hf import load_tokenizer

    pipe = _pipeline(config)
    cfg, store = pipe.cfg, pipe.store
    shape = Shape.from_config(Path(pipe.model_path))
    tok = load_tokenizer(pipe.model_path)
    sets = {
        "eval": {p.id: p for p in pipe.eval_problems},
        "train": {p.id: p for p in pipe.train_problems},
    }
    prompt_len: dict[int, int] = {}  # a problem's prompt tokens, as the run rendered it
    for row in store.problems():
        problem = sets.get(row["purpose"], {}).get(row["name"])
        if problem is not None:
            prompt_len[row["id"]] = len(encode_prompt(tok, pipe.render(problem)))
    out: dict[tuple[int, str], float] = {}
    groups: dict[tuple[int, str], dict[int, tuple[int, list[int]]]] = {}
    forced: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for s in store.samples():
        if s["problem_id"] not in prompt_len:
            continue
        stage = "sample" if s["purpose"] == "train" else "evaluate"
        if stage == "evaluate" and abs(s["temperature"] - cfg.eval.temperature) > 1e-9:
            stage = "baseline"
        p, g = prompt_len[s["problem_id"]], s["n_tokens"] or 0
        key = (s["round"], stage)
        forced.setdefault(key, []).append((p, g))
        if s["temperature"] >= 1e-5 or s["sample_idx"] == 0:  # greedy: decoded once
            groups.setdefault(key, {}).setdefault(s["problem_id"], (p, []))[1].append(g)
    for (rnd, stage), g in groups.items():
        out[(rnd, f"{stage}: generate")] = sampling_flops(shape, g)
        out[(rnd, f"{stage}: token stats")] = teacher_forced_flops(shape, forced[(rnd, stage)])
    for rnd in sorted({r for r, _ in out}):
        out[(rnd, "analyse")] = _probe_flops(pipe, shape, rnd, prompt_len)
        if rnd > 0:
            out[(rnd, "train")] = _train_flops(pipe, shape, tok, rnd)
    store.close()
    return out, shape, cfg.model.dtype


def _probe_flops(pipe: Any, shape: Shape, rnd: int, prompt_len: dict[int, int]) -> float:
    sample_problem = {s["id"]: s["problem_id"] for s in pipe.store.samples(0, "eval")}
    pairs = [
        (prompt_len[sample_problem[sid]], len(stats["token_ids"]))
        for sid, stats in pipe.store.probe_stats(rnd).items()
        if sample_problem.get(sid) in prompt_len
    ]
    return teacher_forced_flops(shape, pairs)


def _train_flops(pipe: Any, shape: Shape, tok: Any, rnd: int) -> float:
    from ssd_tui.engine.base import encode_prompt

    t = pipe.cfg.train
    pairs = []
    for prompt, completion, finished in pipe.train_examples(rnd)[0]:
        p = len(encode_prompt(tok, prompt))
        c = len(tok(completion, add_special_tokens=False)["input_ids"]) + int(finished)
        total = min(p + c, t.max_length)
        if total > p:
            pairs.append((total, total - p))
    return train_flops(shape, pairs, t.epochs, t.gradient_checkpointing)


# ---- the machine -----------------------------------------------------------------------------


def matmul_rate(dtype: str, n: int = 1024, reps: int = 5, device: str = "cpu") -> float | None:
    """GFLOP/s of n × n by n × n matmuls in ``dtype`` on every thread torch uses: the best
    of ``reps`` timings of ~0.2 s each, after ~0.2 s of warm-up (the best, not the median:
    the floor is what the machine can do; other jobs only slow a timing down). None where
    the dtype does not run here."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        torch.mm(a, b)
    except (RuntimeError, TypeError):
        return None

    def timed(seconds: float) -> float:
        count, t = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - t < seconds:
            torch.mm(a, b)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            count += 1
        return 2 * n**3 * count / (time.perf_counter() - t) / 1e9

    timed(0.2)
    return max(timed(0.2) for _ in range(reps))
