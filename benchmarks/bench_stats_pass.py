"""The exact-statistics pass (issue 16) against the sampling it follows, in a real sample stage.

    python benchmarks/bench_stats_pass.py                       # demo model, HF engine only
    /work/main/.venv-vllm/bin/python benchmarks/bench_stats_pass.py --engine vllm
    .../python benchmarks/bench_stats_pass.py --engine vllm --model ~/.cache/ssd-tui/models/gguf/<id>

Builds a throw-away run (the demo's training prompts, completion style) and runs the
pipeline's own sample path (``Pipeline._generate``: sampling in batches, then
``fill_token_stats``), timing its parts:

- engine start (vLLM: the first ``generate``; HF: loading the model), paid once per engine;
- sampling: the batches, with their tokens/s;
- the pass: loading the transformers scoring model (base, no adapter here) and the
  teacher-forced scoring of every sample (under vLLM every sample lacks entropies; under
  the HF engine the pass finds nothing to do, so it is run once more on blanked stats to
  show what it would cost).

Settings default to the issue's comparison: 16 prompts, 128 new tokens, T 1.2 / top-k 20 /
top-p 0.95, one sample per prompt, batch 16. Uses every core this process may use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ssd-tui's entry point sets it

import torch  # noqa: E402

from ssd_tui.config import load_config  # noqa: E402
from ssd_tui.engine.base import SamplingParams, encode_prompt  # noqa: E402
from ssd_tui.engine.hf import load_tokenizer  # noqa: E402
from ssd_tui.runs.pipeline import STATS_BATCH_TOKENS, Pipeline  # noqa: E402
from ssd_tui.store.run_store import RunStore  # noqa: E402

DEMO = ROOT / "assets" / "demo"


class Timed(Pipeline):
    """The pipeline, with the time spent loading and running the pass recorded."""

    load_s = 0.0
    pass_s = 0.0
    scored = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        load = self.engines.scoring_model

        def timed_load(adapter):
            t = time.perf_counter()
            out = load(adapter)
            self.load_s += time.perf_counter() - t
            return out

        self.engines.scoring_model = timed_load

    def fill_token_stats(self, *args, **kwargs):
        t, load = time.perf_counter(), self.load_s
        n = super().fill_token_stats(*args, **kwargs)
        self.pass_s += time.perf_counter() - t - (self.load_s - load)
        self.scored += n
        return n


def max_model_len(model: Path, want: int = 1024) -> int:
    """``want``, or less where the model's positions end (vLLM refuses more)."""
    conf = json.loads((model / "config.json").read_text())
    return min(want, int(conf.get("max_position_embeddings") or want))


def write_config(folder: Path, a: argparse.Namespace) -> Path:
    model = Path(a.model).expanduser().resolve()
    text = f"""
[run]
name = "bench"
dir = "{folder / "run"}"
engine = "{a.engine}"
threads = 0
[model]
path = "{model}"
dtype = "{a.dtype}"
[data]
train_prompts = "{DEMO / "train_prompts.jsonl"}"
benchmark = "{DEMO / "eval.jsonl"}"
max_train_prompts = {a.prompts}
[sampling]
temperature = {a.temperature}
top_k = {a.top_k}
top_p = {a.top_p}
samples_per_prompt = {a.n}
max_new_tokens = {a.max_new_tokens}
batch_size = {a.batch}
[vllm]
max_model_len = {max_model_len(model)}
"""
    path = folder / "bench.toml"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=1, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.2)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--top-p", type=float, default=0.95)
    a = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(write_config(Path(tmp), a))
        store = RunStore.open(cfg.db_path, create=True)
        pipe = Timed(cfg, store)
        pipe.prepare()
        params = cfg.train_sampling(seed=cfg.run.seed)
        problems = pipe.train_problems

        t = time.perf_counter()  # engine start: load (HF) or the first generate (vLLM)
        pipe.engines.sampler(None).generate([problems[0].prompt], SamplingParams(max_new_tokens=1))
        start_s = time.perf_counter() - t

        t = time.perf_counter()
        pipe._generate(1, "sample", "train", problems, params, None, a.batch)
        total_s = time.perf_counter() - t
        sample_s = total_s - pipe.pass_s - pipe.load_s
        rows = store.conn.execute(
            "SELECT COUNT(*), SUM(n_tokens), COUNT(mean_entropy) FROM samples"
        ).fetchone()
        n_samples, n_tokens, with_stats = rows[0], rows[1] or 0, rows[2]
        ran_in_stage = pipe.scored > 0
        if not ran_in_stage:  # HF engine: stats exist; blank them to time the pass anyway
            pipe.release_sampler()
            store.conn.execute("UPDATE samples SET mean_entropy = NULL")
            store.conn.commit()
            pipe.fill_token_stats(1, "sample", "train", params.temperature, None, problems)
            pipe.engines.release_scoring_model()
        tok = load_tokenizer(pipe.model_path)  # prompts are stored as text: count their tokens
        prompt_tokens = sum(len(encode_prompt(tok, p.prompt)) for p in problems) * a.n
        pipe.release_sampler()
        store.close()

    out = {
        "model": Path(a.model).name,
        "engine": a.engine,
        "samples": n_samples,
        "generated_tokens": n_tokens,
        "prompt_tokens": prompt_tokens,
        "with_stats_after_stage": with_stats,
        "pass_ran_in_stage": ran_in_stage,
        "engine_start_s": round(start_s, 1),
        "sampling_s": round(sample_s, 1),
        "sampling_tok_s": round(n_tokens / sample_s, 1) if sample_s > 0 else None,
        "pass_model_load_s": round(pipe.load_s, 1),
        "pass_s": round(pipe.pass_s, 1),
        "pass_tok_s": round(n_tokens / pipe.pass_s, 1) if pipe.pass_s > 0 else None,
        "pass_over_sampling": round(pipe.pass_s / sample_s, 3) if sample_s > 0 else None,
        "stats_batch_tokens": STATS_BATCH_TOKENS,
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
