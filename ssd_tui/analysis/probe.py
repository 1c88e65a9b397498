"""Teacher-forced re-scoring of fixed completions under a model (the fork/lock probe).

``score_completions`` runs one forward pass over prompt + completion and returns,
for each completion token, the statistics of the model's next-token distribution at
that position. It is a pure function of (model, tokenizer, texts, params): the
analysis calls it once per round on the same round-0 samples, so the numbers are
comparable position by position across rounds.

Conventions (the same as the samplers' ``Completion`` statistics):
- entropy, top-1 probability and the sampled token's log-probability are measured
  on the full distribution at T = 1;
- the truncation set is what a sampler with ``params`` would keep (``engine/truncation.py``:
  vLLM's rule, temperature, then min-p, then top-k with ties, then top-p);
- ``tail_mass`` is the T = 1 probability outside the set of the *evaluation* settings,
  ``train_tail_mass`` outside the set of the *training* settings (T_train, top-k, top-p,
  min-p of ``[sampling]``): 1 − ``train_tail_mass`` is the paper's KeptMass (0 when
  nothing is cut).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssd_tui.engine.base import SamplingParams, encode_prompt
from ssd_tui.engine.truncation import tail_mass

__all__ = [
    "ReusingScorer",
    "batches_by_tokens",
    "position_stats",
    "score_completions",
    "score_token_ids",
]

# Positions scored at once: bounds the (positions × vocab) float32 temporaries
# (several per chunk; with a 150k vocab, 64 positions ≈ 40 MB each).
_CHUNK = 64

STAT_KEYS = (
    "token_ids",
    "offsets",
    "logprobs",
    "entropies",
    "tail_mass",
    "train_tail_mass",
    "top1",
)


@dataclass
class _Encoded:
    prompt: list[int]
    completion: list[int]
    offsets: list[int]  # character start of each completion token (-1 if unknown)


def position_stats(
    logits: torch.Tensor,
    targets: torch.Tensor,
    params: SamplingParams,
    train_params: SamplingParams | None = None,
) -> dict[str, np.ndarray]:
    """Per-position statistics of next-token logits (positions × vocab) and the tokens that followed.

    ``train_tail_mass`` (outside the training truncation set) is there when ``train_params`` is.
    """
    keys = ["logprobs", "entropies", "tail_mass", "top1"]
    if train_params is not None:
        keys.append("train_tail_mass")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for a in range(0, logits.shape[0], _CHUNK):
        z = logits[a : a + _CHUNK].float()
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        if train_params is not None:
            parts["train_tail_mass"].append(tail_mass(z, train_params).cpu().numpy())
        parts["logprobs"].append(logp.gather(-1, targets[a : a + _CHUNK, None])[:, 0].cpu().numpy())
        parts["entropies"].append(torch.special.entr(p).sum(dim=-1).cpu().numpy())
        parts["tail_mass"].append(tail_mass(z, params).cpu().numpy())
        parts["top1"].append(p.max(dim=-1).values.cpu().numpy())
    return {
        k: (np.concatenate(v) if v else np.zeros(0)).astype(np.float32) for k, v in parts.items()
    }


def score_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    params: SamplingParams,
    batch_size: int = 8,
    train_params: SamplingParams | None = None,
) -> list[dict[str, np.ndarray]]:
    """Score each completion given its prompt with one teacher-forced forward pass.

    Returns one dict per completion with arrays of equal length (its tokens):
    ``token_ids`` (int32), ``offsets`` (int32 character start in the completion, -1 if
    the tokenizer cannot say), ``logprobs``, ``entropies``, ``tail_mass``, ``top1``
    (float32), and ``train_tail_mass`` when ``train_params`` is given. Batches are right-padded here whatever the tokenizer's padding side,
    so positions are 0.. for every row without passing position ids.
    """
    if len(prompts) != len(completions):
        raise ValueError("prompts and completions must have the same length")
    encoded = [_encode(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return _score_encoded(model, encoded, params, batch_size, train_params)


def score_token_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    batch_size: int = 8,
    train_params: SamplingParams | None = None,
) -> list[dict[str, np.ndarray]]:
    """``score_completions`` on token ids as a sampler produced them (nothing re-tokenised).

    The exact statistics of stored samples: position i is scored given the prompt and the
    completion's first i tokens, which is what the sampler's step i saw, so ``logprobs``,
    ``entropies`` and ``tail_mass`` (outside ``params``' kept set) are the numbers the
    transformers sampler records while decoding; ``top1`` and, with ``train_params``,
    ``train_tail_mass`` are its extra statistics (``SamplingParams.extra_truncation``).
    ``offsets`` are -1 (no text here).
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError("prompt_ids and completion_ids must have the same length")
    encoded = []
    for p, c in zip(prompt_ids, completion_ids, strict=True):
        if not p:  # samplers refuse empty prompts: there is no position to predict from
            raise ValueError("a prompt has no tokens")
        encoded.append(_Encoded([int(t) for t in p], [int(t) for t in c], [-1] * len(c)))
    return _score_encoded(model, encoded, params, batch_size, train_params)


def batches_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive index runs whose padded size (rows × longest) stays within ``max_tokens``.

    A forward pass computes vocabulary-wide logits for every position it keeps, so a
    token budget, not a row count, bounds its memory (one row alone may exceed it).
    """
    out: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if batch and (len(batch) + 1) * max(longest, n) > max_tokens:
            out.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, n)
    if batch:
        out.append(batch)
    return out


class ReusingScorer:
    """``score_completions`` that reads a completion's statistics from a stored sample
    instead of scoring it, where that is the same computation (round 0's probe: its samples
    were scored when they were drawn, by the transformers sampler or the exact-statistics
    pass of vLLM's samples; docs/analysis.md).

    ``stored[(prompt, completion)]`` holds the stored samples of that text: token ids and
    per-token ``logprobs``, ``entropies``, ``tail_mass`` (outside ``params``' kept set: the
    sample was drawn with ``params``' truncation), ``top1`` and ``train_tail_mass``
    (outside ``train_params``'). The probe scores the completion's own tokenisation; a
    stored sample whose tokens *begin* with exactly those tokens has, at each of those
    positions, the statistics of the same prompt and the same preceding tokens under the
    same model (a causal model's position i sees nothing after it), so its first tokens'
    statistics are the probe's, to float rounding; the tokens after them (the EOS, a
    stop string's) are not the probe's and are left out. A completion with no such sample
    (sampled as another tokenisation of its text, or stored without the extras) is scored
    with ``model()``, which is called only then (so a round whose samples all match never
    loads a scoring model). ``reused`` and ``scored`` count them.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: Callable[[], Any],
        params: SamplingParams,
        train_params: SamplingParams,
        stored: Mapping[tuple[str, str], Sequence[dict[str, np.ndarray]]],
        batch_size: int = 8,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.params = params
        self.train_params = train_params
        self.stored = stored
        self.batch_size = batch_size
        self.reused = 0
        self.scored = 0

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[dict[str, np.ndarray]]:
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        encoded = [_encode(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        results: list[dict[str, np.ndarray] | None] = []
        for p, c, e in zip(prompts, completions, encoded, strict=True):
            results.append(_from_stored(e, self.stored.get((p, c), ())))
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            scored = _score_encoded(
                self.model(),
                [encoded[i] for i in todo],
                self.params,
                self.batch_size,
                self.train_params,
            )
            for i, stats in zip(todo, scored, strict=True):
                results[i] = stats
        self.reused += len(results) - len(todo)
        self.scored += len(todo)
        return [r for r in results if r is not None]


def _from_stored(
    e: _Encoded, candidates: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray] | None:
    """The probe's arrays of ``e`` from a stored sample whose tokens begin with its tokens."""
    k = len(e.completion)
    want = np.asarray(e.completion, dtype=np.int32)
    for s in candidates:
        ids = s["token_ids"]
        if len(ids) < k or not np.array_equal(ids[:k], want):
            continue
        if any(len(s[key]) != len(ids) for key in _STORED_KEYS):
            continue  # damaged: score it instead
        out = {key: np.asarray(s[key][:k], dtype=np.float32) for key in _STORED_KEYS}
        out["token_ids"] = want
        out["offsets"] = np.asarray(e.offsets, dtype=np.int32)
        return out
    return None


_STORED_KEYS = ("logprobs", "entropies", "tail_mass", "top1", "train_tail_mass")


def _score_encoded(
    model,
    encoded: list[_Encoded],
    params: SamplingParams,
    batch_size: int,
    train_params: SamplingParams | None = None,
) -> list[dict[str, np.ndarray]]:
    # Longest first: rows of similar length share a batch, so little padding is computed.
    order = sorted(range(len(encoded)), key=lambda i: -_length(encoded[i]))
    results: list[dict[str, np.ndarray] | None] = [None] * len(encoded)
    was_training = bool(getattr(model, "training", False))
    model.eval()  # dropout off: scores must be deterministic
    try:
        with torch.inference_mode():
            for b in range(0, len(order), max(1, batch_size)):
                idx = order[b : b + max(1, batch_size)]
                for i, stats in zip(
                    idx,
                    _score_batch(model, [encoded[i] for i in idx], params, train_params),
                    strict=True,
                ):
                    results[i] = stats
    finally:
        if was_training:
            model.train()
    return [r for r in results if r is not None]


def _length(e: _Encoded) -> int:
    return len(e.prompt) + len(e.completion)


def _encode(tokenizer, prompt: str, completion: str) -> _Encoded:
    """Prompt ids as a sampler would feed them; completion ids tokenised on their own."""
    p_ids = encode_prompt(tokenizer, prompt)  # the one BOS rule, as the samplers feed prompts
    if not p_ids:  # the first completion token needs a position to be predicted from
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        p_ids = [int(start if start is not None else 0)]
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=fast)
    c_ids = list(enc["input_ids"])
    offsets = [int(s) for s, _ in enc["offset_mapping"]] if fast else [-1] * len(c_ids)
    return _Encoded(p_ids, c_ids, offsets)


def _accepts_logits_to_keep(model) -> bool:
    # PEFT wrappers forward **kwargs to the base model: look at the real forward.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _device(model) -> torch.device:
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def _score_batch(
    model,
    batch: list[_Encoded],
    params: SamplingParams,
    train_params: SamplingParams | None = None,
) -> list[dict[str, np.ndarray]]:
    width = max(_length(e) for e in batch)
    ids = torch.zeros(
        (len(batch), width), dtype=torch.long
    )  # pad id is irrelevant: masked, and after
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, e in enumerate(batch):
        seq = e.prompt + e.completion
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
    # Logit at position t predicts token t+1: the first needed is the last prompt token's.
    first = min(len(e.prompt) for e in batch) - 1
    kwargs = {"logits_to_keep": width - first} if _accepts_logits_to_keep(model) else {}
    shift = first if kwargs else 0
    dev = _device(model)
    logits = model(
        input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, **kwargs
    ).logits
    out = []
    for r, e in enumerate(batch):
        a = len(e.prompt) - 1 - shift
        targets = torch.tensor(e.completion, dtype=torch.long, device=logits.device)
        stats = position_stats(logits[r, a : a + len(e.completion)], targets, params, train_params)
        stats["token_ids"] = np.asarray(e.completion, dtype=np.int32)
        stats["offsets"] = np.asarray(e.offsets, dtype=np.int32)
        out.append(stats)
    return out
