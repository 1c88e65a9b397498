"""The transformers engine against a tiny random Llama built in conftest.py.

Statistics are checked against an independent manual forward pass over prompt +
completion, and truncation against a transcription of vLLM's top-k/top-p code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd_tui.engine.base import LoraSettings, SamplingParams, TrainSettings, encode_prompt
from ssd_tui.engine.hf import (
    HFSampler,
    HFTrainer,
    completion_loss_sum,
    load_tokenizer,
    pick_tokens,
)
from ssd_tui.errors import SSDError
from tests.vllm_reference import vllm_kept

PROMPTS = [
    "def add(a, b):\n",
    "import os\n\nclass Config:\n    def __init__(self, path):\n",
    "for i in range(",
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def sampler(tiny_model_dir: Path) -> HFSampler:
    s = HFSampler(str(tiny_model_dir), batch_size=4)
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """An independently loaded copy of the model for manual forward passes."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).eval()
    tok = load_tokenizer(str(tiny_model_dir))

    def logits_for(prompt: str, completion_ids: list[int]) -> torch.Tensor:
        """Logits predicting each completion token (one row per completion token)."""
        p = encode_prompt(tok, prompt)
        ids = torch.tensor([p + completion_ids])
        with torch.no_grad():
            out = model(input_ids=ids).logits[0].float()
        return out[len(p) - 1 : len(p) - 1 + len(completion_ids)]

    return logits_for


# ----------------------------------------------------------------------------- loading


def test_missing_local_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SSDError, match="model folder not found"):
        load_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(SSDError, match="not a local folder and not in the Hugging Face cache"):
        load_tokenizer("no-such-org/no-such-model-xyz")


# ----------------------------------------------------------------------------- sampling


def test_n_samples_in_prompt_order(sampler: HFSampler) -> None:
    calls: list[tuple[int, int]] = []
    res = sampler.generate(
        PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=1), lambda d, t: calls.append((d, t))
    )
    assert [len(r) for r in res] == [3, 3, 3]
    assert calls[-1] == (9, 9) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Greedy samples of each prompt equal that prompt's greedy completion on its own.
    greedy = sampler.generate(PROMPTS, SamplingParams(temperature=0, n=2, max_new_tokens=6))
    for prompt, per in zip(PROMPTS, greedy, strict=True):
        alone = sampler.generate([prompt], SamplingParams(temperature=0, max_new_tokens=6))[0][0]
        assert [c.token_ids for c in per] == [alone.token_ids] * 2


def test_seed_reproducible(sampler: HFSampler) -> None:
    p = SamplingParams(temperature=1.0, top_p=0.95, n=2, max_new_tokens=16, seed=7)
    a = sampler.generate(PROMPTS, p)
    b = sampler.generate(PROMPTS, p)
    c = sampler.generate(PROMPTS, SamplingParams(**{**p.__dict__, "seed": 8}))
    ids = lambda res: [x.token_ids for per in res for x in per]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_greedy_is_argmax_and_stats_match_manual_forward(sampler: HFSampler, reference) -> None:
    res = sampler.generate(PROMPTS, GREEDY)
    topk1 = sampler.generate(PROMPTS, SamplingParams(top_k=1, max_new_tokens=12, seed=3))
    for prompt, [c], [k1] in zip(PROMPTS, res, topk1, strict=True):
        assert c.finish_reason == "length" and len(c.token_ids) == 12
        logits = reference(prompt, c.token_ids)
        assert c.token_ids == logits.argmax(-1).tolist()
        assert k1.token_ids == c.token_ids  # top_k=1 at T=1 is greedy too
        logp = torch.log_softmax(logits, -1)
        expected_lp = logp.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
        expected_h = -(logp.exp() * logp).sum(-1)
        assert torch.allclose(torch.tensor(c.logprobs), expected_lp, atol=1e-4)
        assert torch.allclose(torch.tensor(c.entropies), expected_h, atol=1e-4)
        # top_k = 1 keeps only the arg-max: tail = 1 - p(top token).
        expected_tail = 1 - expected_lp.exp()
        assert torch.allclose(torch.tensor(k1.tail_mass), expected_tail, atol=1e-5)


def test_sampled_stats_match_manual_forward(sampler: HFSampler, reference) -> None:
    p = SamplingParams(temperature=1.3, n=2, max_new_tokens=10, seed=5)
    for prompt, per in zip(PROMPTS, sampler.generate(PROMPTS, p), strict=True):
        for c in per:
            logp = torch.log_softmax(reference(prompt, c.token_ids), -1)
            expected = logp.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)
            assert c.tail_mass == [0.0] * len(c.token_ids)  # no truncation, no tail


def _vllm_kept(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Kept-token mask of vLLM V1 (temperature, min-p, top-k with ties, top-p): the transcription."""
    return vllm_kept(logits, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7, top_k=20, top_p=0.8),
        SamplingParams(temperature=1.6, top_p=0.9),
        SamplingParams(temperature=1.1, top_k=40, top_p=0.95, min_p=0.05),
        SamplingParams(temperature=1.1, top_p=0.8, min_p=0.1),
        SamplingParams(temperature=1.0, min_p=0.2),
        SamplingParams(temperature=0.9, top_k=5),
    ],
)
def test_tail_mass_and_kept_set_match_vllm(params: SamplingParams) -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 300) * 3
    gen = torch.Generator().manual_seed(0)
    tokens, _, _, tail = pick_tokens(logits, params, gen)
    kept = _vllm_kept(logits, params)
    p1 = logits.softmax(-1)
    assert torch.allclose(tail, 1 - (p1 * kept).sum(-1), atol=1e-5)
    assert kept.gather(-1, tokens[:, None]).all()  # every sampled token is in the kept set
    assert (tail > 0).all()


def test_stop_string_cuts_text(sampler: HFSampler) -> None:
    tok = sampler.tokenizer
    [[full]] = sampler.generate([PROMPTS[1]], SamplingParams(temperature=0, max_new_tokens=24))
    # A stop string made of the text of tokens 5..6 of the greedy completion.
    start = len(tok.decode(full.token_ids[:5]))
    stop = tok.decode(full.token_ids[:7])[start:]
    assert stop
    cut = full.text.find(stop)
    params = SamplingParams(temperature=0, max_new_tokens=24, stop=("@@never@@", stop))
    [[c]] = sampler.generate([PROMPTS[1]], params)
    assert c.finish_reason == "stop"
    assert c.text == full.text[:cut]
    assert stop not in c.text
    # Statistics cover exactly the tokens whose text starts before the cut.
    n = len(c.token_ids)
    assert c.token_ids == full.token_ids[:n]
    assert len(tok.decode(c.token_ids[: n - 1])) < cut <= len(tok.decode(c.token_ids)) or cut == 0
    assert len(c.logprobs) == len(c.entropies) == len(c.tail_mass) == n


def test_eos_finishes_with_stop_and_no_text(tiny_model_dir: Path) -> None:
    s = HFSampler(str(tiny_model_dir))
    [[full]] = s.generate([PROMPTS[0]], GREEDY)
    # Pretend the model's 4th greedy token is an EOS token (a random model never emits one).
    s.eos_ids = {full.token_ids[3]} | s.eos_ids
    first = full.token_ids.index(full.token_ids[3])
    [[c]] = s.generate([PROMPTS[0]], GREEDY)
    assert c.finish_reason == "stop"
    assert c.token_ids == full.token_ids[: first + 1]  # EOS kept in ids and stats
    assert c.text == s.tokenizer.decode(full.token_ids[:first])
    s.close()


def test_batched_equals_unbatched(tiny_model_dir: Path, sampler: HFSampler) -> None:
    # Prompts of very different lengths exercise left padding and row removal.
    prompts = PROMPTS + ["x"]
    one = HFSampler(str(tiny_model_dir), batch_size=1)
    a = one.generate(prompts, GREEDY)
    one.close()
    b = sampler.generate(prompts, GREEDY)
    for [ca], [cb] in zip(a, b, strict=True):
        assert ca.token_ids == cb.token_ids
        assert ca.text == cb.text
        assert max(abs(x - y) for x, y in zip(ca.logprobs, cb.logprobs, strict=True)) < 1e-4


# A stage's queue whose rows end at different steps: the random model writes "e" often, so
# the stop string ends rows after 1 to ~20 tokens and slots free up mid-batch.
QUEUE_PROMPTS = [f"def f{i}(x):\n" + "    y = x\n" * (i % 5) for i in range(12)]


def _queue(**over: object) -> list[tuple[list[str], SamplingParams]]:
    base = dict(temperature=1.3, top_k=50, n=2, max_new_tokens=40, stop=("e",))
    return [
        (QUEUE_PROMPTS[b : b + 3], SamplingParams(**{**base, **over, "seed": b}))  # type: ignore[arg-type]
        for b in range(0, 12, 3)
    ]


def _same_samples(a: list[list], b: list[list], atol: float = 1e-5) -> None:
    """The same tokens and text; statistics equal up to float rounding (another batch)."""
    for pa, pb in zip(a, b, strict=True):
        for ca, cb in zip(pa, pb, strict=True):
            assert (ca.token_ids, ca.text, ca.finish_reason) == (
                cb.token_ids,
                cb.text,
                cb.finish_reason,
            )
            for x, y in ((ca.logprobs, cb.logprobs), (ca.entropies, cb.entropies)):
                np.testing.assert_allclose(x, y, atol=atol)
            np.testing.assert_allclose(ca.tail_mass, cb.tail_mass, atol=atol)


def test_refill_gives_every_batch_the_samples_it_gets_alone(tiny_model_dir: Path) -> None:
    """Rows of later batches take the slots of rows that ended; each row draws from its own
    stream, so a batch's samples are those it gets decoded alone, one row at a time."""
    work = _queue()
    with HFSampler(str(tiny_model_dir), batch_size=4, schedule="refill") as s:
        streamed = dict(s.generate_batches(work))
        rows = s.last_decoder.forward_rows
    with HFSampler(str(tiny_model_dir), batch_size=1, schedule="rows") as one:
        alone = [one.generate(prompts, params) for prompts, params in work]
    assert sorted(streamed) == [0, 1, 2, 3]
    lengths = {len(c.token_ids) for b in streamed.values() for per in b for c in per}
    assert len(lengths) > 5  # rows did end at many different steps
    for i in range(4):
        _same_samples(streamed[i], alone[i])
    assert max(rows) <= 4


def test_refill_keeps_the_slots_full(tiny_model_dir: Path) -> None:
    """The same queue with and without refill (the same per-row draws): the same samples,
    fewer forward passes (without refill each chunk of 4 rows waits for its longest)."""
    work = _queue()
    runs = {}
    for schedule in ("refill", "rows"):
        with HFSampler(str(tiny_model_dir), batch_size=4, schedule=schedule) as s:
            runs[schedule] = (dict(s.generate_batches(work)), s.last_decoder.forward_rows)
    (with_refill, passes), (without, passes_before) = runs["refill"], runs["rows"]
    for i in range(4):
        _same_samples(with_refill[i], without[i])
    assert len(passes) < len(passes_before)
    assert sum(passes) / len(passes) > sum(passes_before) / len(passes_before)


def test_a_batch_resumed_without_its_predecessor_draws_the_same(tiny_model_dir: Path) -> None:
    """What a resumed stage does: the queue starts at a later batch, so its rows share the
    forward passes with other rows than before; the draws are the same."""
    work = _queue()
    with HFSampler(str(tiny_model_dir), batch_size=4, schedule="refill") as s:
        whole = dict(s.generate_batches(work))
        resumed = dict(s.generate_batches(work[2:]))
        again = dict(s.generate_batches(work))
    for i in (0, 1):
        _same_samples(resumed[i], whole[i + 2])
    # and an uninterrupted stage is reproduced bit for bit
    assert [[c.logprobs for c in per] for b in range(4) for per in again[b]] == [
        [c.logprobs for c in per] for b in range(4) for per in whole[b]
    ]


def test_rows_of_other_settings_wait_for_their_own_pass(tiny_model_dir: Path) -> None:
    """Batches of another temperature or length limit never share a forward pass (one
    truncation rule per step); each gets what it gets alone. An empty batch is done at once."""
    work = _queue()[:2] + _queue(temperature=0.7)[2:3] + [([], SamplingParams())]
    work.append(([QUEUE_PROMPTS[0]], SamplingParams(temperature=0, n=3, max_new_tokens=5)))
    with HFSampler(str(tiny_model_dir), batch_size=4, schedule="refill") as s:
        streamed = dict(s.generate_batches(work))
        for i, (prompts, params) in enumerate(work):
            _same_samples(streamed[i], s.generate(prompts, params))
    assert streamed[3] == []
    [greedy] = streamed[4]
    assert len(greedy) == 3 and greedy[0].token_ids == greedy[2].token_ids


@pytest.mark.parametrize("schedule", ["batch", "refill"])
def test_closing_the_stream_early_leaves_the_sampler_usable(
    tiny_model_dir: Path, schedule: str
) -> None:
    with HFSampler(str(tiny_model_dir), batch_size=4, schedule=schedule) as s:
        stream = s.generate_batches(_queue())
        next(stream)
        assert not torch.is_inference_mode_enabled()  # the caller's code runs outside it
        stream.close()
        assert len(s.generate(["x"], GREEDY)[0][0].token_ids) == 12


def test_the_batch_schedule_is_exact_whatever_comes_before_or_after(tiny_model_dir: Path) -> None:
    """The default: a batch's samples are bit for bit those it gets alone, in a stage's
    queue or resumed without its predecessors (what the run database promises on resume)."""
    work = _queue()
    with HFSampler(str(tiny_model_dir), batch_size=4) as s:
        assert s.schedule == "batch"
        whole = dict(s.generate_batches(work))
        resumed = dict(s.generate_batches(work[2:]))
        alone = [s.generate(prompts, params) for prompts, params in work]

    def exact(batch: list) -> list:
        return [
            (c.token_ids, c.logprobs, c.entropies, c.tail_mass, c.text) for p in batch for c in p
        ]

    for i in range(4):
        assert exact(whole[i]) == exact(alone[i])
    for i in (0, 1):
        assert exact(resumed[i]) == exact(whole[i + 2])


def test_inverse_cdf_draws_follow_the_truncated_distribution() -> None:
    """One uniform per row: a token outside the kept set is never drawn, even at u = 0 or
    just below 1, and the frequencies are the kept set's renormalised probabilities."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0, 0.0]])
    params = SamplingParams(temperature=1.0, top_k=3)
    edge = torch.tensor([0.0, 1.0 - 1e-12, 1.0], dtype=torch.float64)
    tokens, *_ = pick_tokens(logits.expand(3, -1), params, edge)
    assert tokens.tolist() == [0, 2, 2]  # first and last token of the kept set {0, 1, 2}
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tokens, *_ = pick_tokens(logits.expand(40000, -1), params, u)
    freq = torch.bincount(tokens, minlength=6).double() / 40000
    want = torch.softmax(torch.tensor([2.0, 1.0, 0.5]), -1).double()
    assert freq[3:].sum() == 0
    assert torch.allclose(freq[:3], want, atol=0.01)


def test_bad_params_raise(sampler: HFSampler) -> None:
    for bad in (SamplingParams(n=0), SamplingParams(top_p=0.0), SamplingParams(stop=("",))):
        with pytest.raises(SSDError):
            sampler.generate(["x"], bad)


# ----------------------------------------------------------------------------- training


EXAMPLE = ("def add(a, b):\n", "    return a + b\n\nprint(add(1, 2))\n")
# float32 throughout: these tests compare losses and weights to 1e-4, which bf16 autocast
# ("auto" takes it on CPUs with native bf16, such as AMD Zen 4) does not hold to.
FAST = TrainSettings(
    learning_rate=2e-2, epochs=1, batch_size=2, max_length=64, seed=0, autocast="off"
)
LORA = LoraSettings(r=4, alpha=8, dropout=0.0)


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_first_step_loss_is_completion_only_cross_entropy(tiny_model_dir: Path, reference) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    prompt, completion = EXAMPLE
    trainer = HFTrainer(str(tiny_model_dir), LORA, FAST)
    feats = trainer._encode(tok, [EXAMPLE])
    ((ids, n_prompt),) = feats
    _, _, labels = trainer._collate(feats, tok.pad_token_id)
    assert (labels[0, :n_prompt] == -100).all() and (labels[0, n_prompt:] >= 0).all()
    assert ids[-1] == tok.eos_token_id
    # A fresh LoRA adapter starts as the identity (B = 0), so the first step's loss is the
    # base model's mean cross-entropy over completion tokens + EOS, prompt excluded.
    comp_ids = ids[n_prompt:]
    logp = torch.log_softmax(reference(prompt, comp_ids), -1)
    expected = -logp.gather(-1, torch.tensor(comp_ids)[:, None]).mean().item()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        trainer.train([EXAMPLE], Path(d) / "a")
    assert trainer.history[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_prompt_logits_cut_changes_neither_loss_nor_gradients(tiny_model_dir: Path) -> None:
    # Rows with different prompt lengths, right-padded, as the trainer collates them: the
    # cut keeps logits from the earliest completion token's predecessor on, so row 0's
    # prompt tail and row 1's whole completion must still be scored exactly.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    tok = load_tokenizer(str(tiny_model_dir))
    feats = [(list(range(5, 17)), 4), (list(range(30, 52)), 9), (list(range(60, 70)), 7)]
    input_ids, attn, labels = HFTrainer._collate(feats, tok.pad_token_id)
    results = []
    for cut in (False, True):
        model.zero_grad(set_to_none=True)
        loss = completion_loss_sum(model, input_ids, attn, labels, cut_prompt_logits=cut)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((loss.item(), grads))
    (full, g_full), (cut, g_cut) = results
    n_labels = sum(len(ids) - n for ids, n in feats)
    assert int((labels[:, 1:] != -100).sum()) == n_labels  # every completion token counted
    assert cut == pytest.approx(full, rel=1e-5)
    assert len(g_full) == len(g_cut) > 0
    for a, b in zip(g_full, g_cut, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_lowers_loss_and_writes_loadable_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    steps: list[tuple[int, int]] = []
    trainer = HFTrainer(str(tiny_model_dir), LORA, FAST)
    out = tmp_path / "round-1"
    (tmp_path / "round-1.tmp").mkdir()  # stale leftover of a crashed run
    got = trainer.train([EXAMPLE] * 12, out, progress=lambda s, t: steps.append((s, t)))
    assert got == out and not (tmp_path / "round-1.tmp").exists()
    assert steps == [(i, 6) for i in range(1, 7)]
    losses = [h["loss"] for h in trainer.history]
    assert losses[-1] < 0.5 * losses[0]
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    PeftModel.from_pretrained(base, str(out))  # loads as a standard adapter

    # The trained model differs from the base when sampling, and learned the completion.
    prompt, completion = EXAMPLE
    base_s = HFSampler(str(tiny_model_dir))
    tuned = HFSampler(str(tiny_model_dir), adapter=out)
    params = SamplingParams(temperature=0, max_new_tokens=8)
    [[b]] = base_s.generate([prompt], params)
    [[t]] = tuned.generate([prompt], params)
    assert b.token_ids != t.token_ids
    assert completion.startswith(t.text)
    base_s.close()
    tuned.close()

    # Continuing from the adapter starts from its weights: a zero learning rate keeps them.
    frozen = HFTrainer(
        str(tiny_model_dir), LORA, TrainSettings(**{**FAST.__dict__, "learning_rate": 0.0})
    )
    again = frozen.train([EXAMPLE] * 2, tmp_path / "round-2", init_adapter=out)
    w0, w1 = _adapter_weights(out), _adapter_weights(again)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert frozen.history[0]["loss"] == pytest.approx(losses[-1], rel=0.5)
    assert frozen.history[0]["loss"] < 0.5 * losses[0]

    # Overwriting an existing adapter folder replaces it whole.
    again = frozen.train([EXAMPLE] * 2, tmp_path / "round-2", init_adapter=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-1", "round-2"]


def test_grad_accumulation_matches_big_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    examples = [EXAMPLE, ("x = [", "1, 2, 3]\ny = x\n"), ("def f():", "\n    pass\n    return\n")]
    big = HFTrainer(str(tiny_model_dir), LORA, TrainSettings(**{**FAST.__dict__, "batch_size": 3}))
    acc = HFTrainer(
        str(tiny_model_dir),
        LORA,
        TrainSettings(**{**FAST.__dict__, "batch_size": 1, "grad_accum": 3}),
    )
    a = big.train(examples, tmp_path / "big")
    b = acc.train(examples, tmp_path / "acc")
    assert big.history[0]["loss"] == pytest.approx(acc.history[0]["loss"], rel=1e-5)
    wa, wb = _adapter_weights(a), _adapter_weights(b)
    # Adam's first step is ~lr * sign(grad): components whose gradient is at float-noise
    # level may move differently, so allow 5% of the learning rate (2e-2).
    assert all(torch.allclose(wa[k], wb[k], atol=1e-3) for k in wa)


def test_lr_schedule_warmup_and_cosine(tiny_model_dir: Path) -> None:
    t = HFTrainer(str(tiny_model_dir), LORA, FAST, schedule="cosine", min_lr_ratio=0.2)
    f = [t._lr_factor(s, 10, 2) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0
    assert all(x >= y for x, y in zip(f[2:], f[3:], strict=False)) and f[-1] > 0.2
    assert math.isclose(t._lr_factor(10, 10, 2), 0.2)


def test_no_usable_examples_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    t = HFTrainer(str(tiny_model_dir), LORA, TrainSettings(max_length=2))
    with pytest.raises(SSDError, match="no training examples"):
        t.train([EXAMPLE], tmp_path / "a")


def test_a_sample_cut_at_max_new_tokens_gets_no_eos_target(tiny_model_dir: Path) -> None:
    """A length-cut sample did not end: training it with EOS would teach stopping mid-program."""
    tok = load_tokenizer(str(tiny_model_dir))
    prompt, completion = EXAMPLE
    trainer = HFTrainer(str(tiny_model_dir), LORA, FAST)
    (done, _), (cut, _) = trainer._encode(
        tok, [(prompt, completion, True), (prompt, completion, False)]
    )
    assert done[-1] == tok.eos_token_id and cut[-1] != tok.eos_token_id
    assert done[:-1] == cut  # the same tokens, only the EOS target differs
    assert trainer._encode(tok, [EXAMPLE])[0][0] == done  # a pair counts as finished
