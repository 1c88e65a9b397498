"""CPU sampler: HFSampler against a bare `model.generate` loop, same prompts and settings.

    python benchmarks/bench_sampler.py            # demo model (or the tests' tiny model), 5 reps
    python benchmarks/bench_sampler.py --quick    # 32 prompts, 64 new tokens, 3 reps (< 1 min)
    python benchmarks/bench_sampler.py --model PATH --batch 32 --max-new-tokens 96 --prompts 128
    python benchmarks/bench_sampler.py --refill --quick   # refilling rows against the schedule before
    .venv-vllm/bin/python benchmarks/bench_sampler.py --vllm-logprobs --quick   # a stage's vLLM requests

Both sides get the same length-sorted batches of the demo's training prompts (HFSampler
sorts its rows by prompt length; the bare loop is handed the same batches), the same
temperature / top-k / top-p / max_new_tokens / batch size, and the same torch threads.
They are run interleaved (ours, bare, bare, ours, ...), and the table gives the median.

Two settings:
- "EOS off": EOS is ignored by both (our sampler's EOS set emptied, generate's
  eos_token_id []), so every row generates exactly max_new_tokens: equal work.
- "EOS on": as in a run; tokens/s counts the tokens actually generated (up to and
  including EOS). generate keeps finished rows in the batch until the longest is done;
  our sampler drops them.

Our sampler also computes per-token statistics (log-prob, entropy, tail mass at T = 1)
that the bare loop does not.

--refill: our sampler against itself before refilling, on a stage's queue as the pipeline
hands it over (`--stage-batch` prompts per batch, each batch its own seed, EOS on):
`schedule="refill"` (a row that ends hands its slot to the next row of the queue) against
`schedule="batch"` (the default: each batch alone, in chunks of `--batch` rows, each chunk until its longest
row ends: the schedule before). Same draws on both sides (each row its own stream), so the
script also counts the samples whose tokens differ (float rounding only: expect 0).
Interleaved reps; tokens/s, forward passes and rows per pass.

--vllm-logprobs (run with the vLLM environment's python): one VLLMSampler, the same queue
through `generate_batches` as a stage hands it over, asking for no log-probs (what a stage
asks for now: the exact-statistics pass replaces them) against the top-N log-probs a stage
asked for before (`[vllm] logprobs` = 20, raised to top_k + 1). Interleaved reps on one
engine (its start is apart); tokens/s and whether the tokens are the same. The model is assets/demo-model when it exists, else the tiny
random Llama of tests/conftest.py (built into a temp folder), which is said in the output.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# OpenMP threads spin while they wait for a peer; on a machine whose cores are shared
# with other work that makes decoding up to 10x slower and erratic (benchmarks/README.md).
# Passive waiting, as in ssd_tui/demo/pretrain.py; OMP_WAIT_POLICY=ACTIVE overrides it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from ssd_tui.engine.base import SamplingParams, encode_prompt  # noqa: E402
from ssd_tui.engine.hf import HFSampler  # noqa: E402

DEMO_MODEL = ROOT / "assets" / "demo-model"
PROMPTS = ROOT / "assets" / "demo" / "train_prompts.jsonl"


def load_prompts(n: int) -> list[str]:
    out = []
    with open(PROMPTS) as f:
        for line in f:
            out.append(json.loads(line)["prompt"])
            if len(out) == n:
                break
    return out


class Bare:
    """The peer: model.generate on left-padded batches, nothing else."""

    def __init__(self, sampler: HFSampler):
        self.model = sampler.model
        self.tok = sampler.tokenizer
        self.pad = sampler.pad_id
        self.eos = sorted(sampler.eos_ids)

    def run(self, batches: list[list[list[int]]], p: SamplingParams, eos: bool) -> int:
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.eos_token_id = self.eos if eos else []  # None would fall back to the model's
        cfg.pad_token_id = self.pad
        cfg.do_sample, cfg.temperature, cfg.top_k, cfg.top_p = True, p.temperature, p.top_k, p.top_p
        cfg.max_new_tokens = p.max_new_tokens
        torch.manual_seed(p.seed)
        generated = 0
        with torch.inference_mode():
            for rows in batches:
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
                attn = torch.zeros_like(ids)
                for i, r in enumerate(rows):
                    ids[i, width - len(r) :] = torch.tensor(r)
                    attn[i, width - len(r) :] = 1
                out = self.model.generate(input_ids=ids, attention_mask=attn, generation_config=cfg)
                new = out[:, width:]
                for row in new.tolist():
                    n = len(row)
                    if eos:  # up to and including the first EOS; the rest is padding
                        n = next((i + 1 for i, t in enumerate(row) if t in self.eos), n)
                    generated += n
        return generated


def ours(sampler: HFSampler, batches: list[list[str]], p: SamplingParams, eos: bool) -> int:
    saved = sampler.eos_ids
    if not eos:
        sampler.eos_ids = set()
    try:
        generated = 0
        for rows in batches:
            for comps in sampler.generate(rows, p):
                generated += sum(len(c.token_ids) for c in comps)
        return generated
    finally:
        sampler.eos_ids = saved


def refill_ab(
    model: Path, prompts: list[str], a: argparse.Namespace, max_new: int, reps: int
) -> None:
    """--refill: the refill schedule against the batch schedule on the same queue, interleaved."""
    samplers = {
        side: HFSampler(
            str(model), batch_size=a.batch, schedule="refill" if side == "refill" else "batch"
        )
        for side in ("refill", "before")
    }
    queue = [
        (prompts[k : k + a.stage_batch], SamplingParams(
            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, n=a.n,
            max_new_tokens=max_new, seed=k))
        for k in range(0, len(prompts), a.stage_batch)
    ]  # fmt: skip
    tps: dict[str, list[float]] = {"refill": [], "before": []}
    passes: dict[str, list[int]] = {}
    outs: dict[str, dict] = {}
    for rep in range(reps):
        for side in ("refill", "before") if rep % 2 == 0 else ("before", "refill"):
            s = samplers[side]
            t = time.perf_counter()
            outs[side] = dict(s.generate_batches(queue))
            dt = time.perf_counter() - t
            n = sum(len(c.token_ids) for b in outs[side].values() for per in b for c in per)
            tps[side].append(n / dt)
            passes[side] = s.last_decoder.forward_rows
        print(f"rep {rep + 1}: refill {tps['refill'][-1]:,.0f} tok/s, before "
              f"{tps['before'][-1]:,.0f} tok/s ({n:,} tokens; load {os.getloadavg()[0]:.2f})")  # fmt: skip
    ratio = [x / y for x, y in zip(tps["refill"], tps["before"], strict=True)]
    print(f"\n{'median of reps':14s}{'tok/s':>10s}{'forward passes':>16s}{'rows/pass':>11s}")
    for side in ("refill", "before"):
        p = passes[side]
        print(f"{side:14s}{statistics.median(tps[side]):10,.0f}{len(p):16,d}"
              f"{sum(p) / len(p):11.2f}")  # fmt: skip
    # The two schedules draw differently (refill: a stream per row), so their samples and
    # token counts differ: compare rates, not samples.
    print(f"refill/before: {statistics.median(ratio):.2f}x (tokens per second)")
    for s in samplers.values():
        s.close()


def vllm_logprobs_ab(
    model: Path, prompts: list[str], a: argparse.Namespace, max_new: int, reps: int
) -> None:
    """--vllm-logprobs: a stage's requests without log-probs against with the top N."""
    from ssd_tui.engine.base import EngineSettings, VllmSettings
    from ssd_tui.engine.vllm import VLLMSampler, top_logprobs_wanted

    positions = json.loads((model / "config.json").read_text()).get("max_position_embeddings")
    positions = int(positions or 1024)  # vLLM refuses a longer max_model_len
    settings = EngineSettings(
        engine="vllm", serves_adapters=False, top_ks=(a.top_k, a.top_k),
        vllm=VllmSettings(max_model_len=min(1024, positions), max_num_seqs=a.batch),
    )  # fmt: skip
    queue = [
        (prompts[k : k + a.stage_batch], SamplingParams(
            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, n=a.n,
            max_new_tokens=max_new, seed=k))
        for k in range(0, len(prompts), a.stage_batch)
    ]  # fmt: skip
    s = VLLMSampler(str(model), settings=settings)
    t = time.perf_counter()
    s.generate(prompts[:1], SamplingParams(max_new_tokens=1))
    print(f"engine start {time.perf_counter() - t:.1f}s; before = top "
          f"{top_logprobs_wanted(20, a.top_k)} log-probs per token\n")  # fmt: skip
    tps: dict[str, list[float]] = {"tokens only": [], "before": []}
    outs: dict[str, dict] = {}
    for rep in range(reps):
        for side in ("tokens only", "before") if rep % 2 == 0 else ("before", "tokens only"):
            t = time.perf_counter()
            outs[side] = dict(s.generate_batches(queue, logprobs=side == "before"))
            dt = time.perf_counter() - t
            n = sum(len(c.token_ids) for b in outs[side].values() for per in b for c in per)
            tps[side].append(n / dt)
        print(f"rep {rep + 1}: tokens only {tps['tokens only'][-1]:,.0f} tok/s, before "
              f"{tps['before'][-1]:,.0f} tok/s ({n:,} tokens; load {os.getloadavg()[0]:.2f})")  # fmt: skip
    differ = sum(
        ca.token_ids != cb.token_ids
        for b in outs["before"]
        for pa, pb in zip(outs["tokens only"][b], outs["before"][b], strict=True)
        for ca, cb in zip(pa, pb, strict=True)
    )
    ratio = statistics.median(x / y for x, y in zip(tps["tokens only"], tps["before"], strict=True))
    print(f"\nmedian tok/s: tokens only {statistics.median(tps['tokens only']):,.0f}, before "
          f"{statistics.median(tps['before']):,.0f}; tokens only / before {ratio:.2f}x; "
          f"samples whose tokens differ: {differ}")  # fmt: skip
    s.close()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="32 prompts, 64 tokens, 3 reps")
    ap.add_argument("--model", type=Path, help="model folder (default: assets/demo-model)")
    ap.add_argument("--prompts", type=int, help="prompts per rep (128; 32 with --quick)")
    ap.add_argument("--batch", type=int, default=32, help="rows per batch (demo: 32)")
    ap.add_argument("--max-new-tokens", type=int, help="(demo: 96; 64 with --quick)")
    ap.add_argument("--temperature", type=float, default=1.2, help="(demo T_train: 1.2)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--reps", type=int, help="interleaved repetitions (5; 3 with --quick)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--refill", action="store_true",
                    help="the refill schedule against the batch schedule (the default), EOS on")  # fmt: skip
    ap.add_argument("--stage-batch", type=int, default=32,
                    help="--refill: prompts per pipeline batch (demo: 32)")  # fmt: skip
    ap.add_argument("--n", type=int, default=1, help="--refill: samples per prompt")
    ap.add_argument("--vllm-logprobs", action="store_true",
                    help="vLLM: a stage's requests without log-probs against with the top N")  # fmt: skip
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    n_prompts = a.prompts or (32 if a.quick else 128)
    max_new = a.max_new_tokens or (64 if a.quick else 96)
    reps = a.reps or (3 if a.quick else 5)
    torch.set_num_threads(a.threads)

    tmp = None
    model = a.model or DEMO_MODEL
    if not (model / "config.json").exists():
        if a.model:
            raise SystemExit(f"no model at {a.model}")
        from tests.conftest import build_tiny_model

        tmp = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
        model = build_tiny_model(tmp / "tiny")
        label = "tiny random Llama of tests/conftest.py (assets/demo-model does not exist yet)"
    else:
        label = str(model)
    try:
        if a.refill or a.vllm_logprobs:
            print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; "
                  f"torch {torch.__version__}, {a.threads} threads; model: {label}")  # fmt: skip
            print(f"{n_prompts} prompts in batches of {a.stage_batch} x n={a.n}, {a.batch} rows "
                  f"in flight; T={a.temperature} top_k={a.top_k} top_p={a.top_p} "
                  f"max_new_tokens={max_new}; {reps} interleaved reps\n")  # fmt: skip
            ab = refill_ab if a.refill else vllm_logprobs_ab
            ab(model, load_prompts(n_prompts), a, max_new, reps)
            return
        sampler = HFSampler(str(model), batch_size=a.batch)
        n_params = sum(p.numel() for p in sampler.model.parameters())
        prompts = load_prompts(n_prompts)
        # The same batches for both: sorted by prompt length, as HFSampler orders its rows.
        encoded = [encode_prompt(sampler.tokenizer, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        text_batches = [
            [prompts[i] for i in order[k : k + a.batch]] for k in range(0, len(order), a.batch)
        ]
        id_batches = [
            [encoded[i] for i in order[k : k + a.batch]] for k in range(0, len(order), a.batch)
        ]
        bare = Bare(sampler)
        p = SamplingParams(
            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, max_new_tokens=max_new
        )
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; torch "
              f"{torch.__version__}, {a.threads} threads, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}")  # fmt: skip
        print(f"model: {label}, {n_params / 1e6:.2f}M parameters")
        print(f"{n_prompts} prompts (mean {statistics.mean(map(len, encoded)):.0f} tokens) in "
              f"batches of {a.batch}; T={a.temperature} top_k={a.top_k} top_p={a.top_p} "
              f"max_new_tokens={max_new}; {reps} interleaved reps\n")  # fmt: skip
        # warm-up: a full first batch each
        warm = SamplingParams(temperature=1.0, max_new_tokens=8)
        for _ in range(2):
            ours(sampler, text_batches[:1], warm, True)
            bare.run(id_batches[:1], warm, True)

        results = {}
        for eos in (False, True):
            tps = {"ours": [], "bare": []}
            counts = {"ours": [], "bare": []}
            for rep in range(reps):
                sides = ["ours", "bare"] if rep % 2 == 0 else ["bare", "ours"]
                for side in sides:
                    t = time.perf_counter()
                    if side == "ours":
                        n = ours(sampler, text_batches, p, eos)
                    else:
                        n = bare.run(id_batches, p, eos)
                    dt = time.perf_counter() - t
                    tps[side].append(n / dt)
                    counts[side].append(n)
            ratio = [o / b for o, b in zip(tps["ours"], tps["bare"], strict=True)]
            results[eos] = (tps, counts, ratio)
            name = "EOS on " if eos else "EOS off"
            print(f"{name}: ours {', '.join(f'{x:,.0f}' for x in tps['ours'])} tok/s; bare "
                  f"{', '.join(f'{x:,.0f}' for x in tps['bare'])} tok/s; tokens per rep ours "
                  f"{counts['ours'][-1]:,} bare {counts['bare'][-1]:,}  "
                  f"(load {os.getloadavg()[0]:.2f})")  # fmt: skip

        print(f"\n{'median of reps':24s}{'ours tok/s':>12s}{'bare tok/s':>12s}{'ours/bare':>11s}")
        for eos, (tps, _, ratio) in results.items():
            print(f"{'EOS on (as in a run)' if eos else 'EOS off (equal work)':24s}"
                  f"{statistics.median(tps['ours']):12,.0f}{statistics.median(tps['bare']):12,.0f}"
                  f"{statistics.median(ratio):10.2f}x")  # fmt: skip
        sampler.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
