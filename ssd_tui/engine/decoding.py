"""The transformers sampler's decoding loop: rows over a KV cache, in one of two schedules.

``"batch"`` (the default): the rows of one batch decode together, in chunks of at most
``max_rows``, each chunk until its longest row ends; one random generator per batch,
seeded with the batch's seed, draws every row's token in order (``torch.multinomial``). A
batch's samples are then a function of the batch alone, bit for bit, so a stage resumed
after a kill writes exactly what an uninterrupted one would (what the run database
promises, and tests).

``"refill"`` (``[sampling] refill = true``): every row (one sample of one prompt) has its
own random stream, seeded from its batch's seed and its place in the batch (``row_seed``),
and draws one uniform number per token from it (``pick_tokens``: inverse CDF over the
truncated distribution). So what a row samples does not depend on which rows it shares a
forward pass with, and a row that finishes hands its slot to the next row of the stage's
queue instead of leaving the batch to wait for its longest row. ``"rows"`` is the same
draws without the refill (for comparisons).

Under refill, what still depends on the company a row keeps is float rounding: a matrix product over 8
rows rounds differently from one over 3, and left padding shifts the attention's sums
(measured on the demo model: logits within ~4e-6). A row's statistics therefore agree
with the same row decoded in another batch to ~1e-6, and its tokens are the same unless
a draw falls within that rounding of a boundary between two tokens (docs/engine.md).

A row's statistics are of the untempered T = 1 distribution, computed from the logits it
was sampled from (log p, entropy, tail mass outside the kept set): see ``pick_tokens``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ssd_tui.engine.base import Completion, SamplingParams
from ssd_tui.engine.truncation import is_greedy, tail_mass, truncate_logits, truncates

# forward(input_ids=, attention_mask=, position_ids=, cache=) -> (last logits, cache)
Forward = Callable[..., tuple[torch.Tensor, Any]]


def row_seed(seed: int, prompt: int, sample: int) -> int:
    """The seed of one row's random stream: sample ``sample`` of prompt ``prompt`` of a
    batch seeded ``seed`` (a hash, so neighbouring rows get unrelated streams)."""
    digest = hashlib.sha256(f"{seed}:{prompt}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _uniforms(draw: torch.Tensor, rows: int) -> torch.Tensor:
    if draw.shape != (rows,):
        raise ValueError(f"need one uniform per row ({rows}), got {tuple(draw.shape)}")
    return draw


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative probability first exceeds ``u`` (one uniform per row).

    float64 sums, and ``right=True``: a token of probability 0 is never chosen (its
    cumulative sum equals its predecessor's, which ``u·total`` is not below). ``u`` = 1
    (a uniform rounded up to float32) takes the last token of non-zero probability.
    """
    cdf = probs.double().cumsum(-1)
    target = u.to(cdf.device, torch.float64)[:, None] * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    positive = probs > 0
    last = positive.shape[-1] - 1 - positive.flip(-1).int().argmax(-1)
    return torch.minimum(idx, last)


def pick_tokens(
    logits: torch.Tensor, params: SamplingParams, draw: torch.Generator | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the next token of each row; return (tokens, logprobs, entropies, tail_mass).

    ``draw``: one uniform number in [0, 1) per row (each row's own stream: inverse CDF), or
    the batch's generator (``torch.multinomial`` over the rows, in order: the batch
    schedule's draws). The kept set is ``engine/truncation.py``'s (vLLM's rule: temperature,
    min-p, top-k with ties, top-p). Statistics are of the untempered T = 1 distribution:
    ``tail_mass`` is its probability outside the kept set (greedy decoding keeps exactly
    the arg-max token and draws nothing).
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp()
    # entr(p) = -p log p with entr(0) = 0, so -inf logits (masked vocab) give no NaN.
    entropy = torch.special.entr(probs).sum(-1)
    if is_greedy(params):
        tokens = logits.argmax(dim=-1)
        tail = (1.0 - probs.gather(-1, tokens[:, None]).squeeze(-1)).clamp_(min=0.0)
    else:
        final = truncate_logits(logits, params)
        if isinstance(draw, torch.Generator) or draw is None:
            choice = torch.multinomial(torch.softmax(final, dim=-1), 1, generator=draw)
            tokens = choice.squeeze(-1)
        else:
            tokens = _inverse_cdf(torch.softmax(final, dim=-1), _uniforms(draw, logits.shape[0]))
        if truncates(params, logits.shape[-1]):
            kept = probs.masked_fill(~torch.isfinite(final), 0.0).sum(-1)
            tail = (1.0 - kept).clamp_(min=0.0)
        else:
            tail = torch.zeros_like(entropy)  # no truncation at all
    token_logp = logp.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, token_logp, entropy, tail


@dataclass
class Job:
    """One row to decode: sample ``sample`` of prompt ``prompt`` of batch ``batch``."""

    batch: int
    prompt: int
    sample: int
    ids: list[int]
    params: SamplingParams

    def generator(self) -> torch.Generator | None:
        if is_greedy(self.params):
            return None
        seed = row_seed(self.params.seed, self.prompt, self.sample)
        return torch.Generator().manual_seed(seed)


def same_decoding(a: SamplingParams, b: SamplingParams) -> bool:
    """Rows of these two settings can share a forward pass: they differ at most in the seed
    and in how many samples per prompt (neither changes how one row decodes)."""
    return replace(a, seed=0, n=1) == replace(b, seed=0, n=1)


class _Row:
    """Growing state of one sequence during decoding."""

    __slots__ = (
        "job",
        "gen",
        "ids",
        "logprobs",
        "entropies",
        "tail",
        "top1",
        "extra_tail",
        "text",
        "finish",
        "cut",
    )

    def __init__(self, job: Job) -> None:
        self.job = job
        self.gen = job.generator()
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.entropies: list[float] = []
        self.tail: list[float] = []
        self.top1: list[float] = []  # with the extra statistics (SamplingParams.wants_extra)
        self.extra_tail: list[float] = []
        self.finish: str | None = None
        self.cut: int | None = None  # char offset of the stop string in the decoded text
        self.text: str | None = None


@dataclass
class _Slots:
    """The rows decoding together: their KV cache, mask, next positions and next logits."""

    rows: list[_Row]
    cache: Any
    attn: torch.Tensor  # (rows, cache length), 1 on real tokens (left padding)
    next_pos: torch.Tensor  # (rows,)
    logits: torch.Tensor  # (rows, vocab): the distribution of each row's next token

    @property
    def params(self) -> SamplingParams:
        return self.rows[0].job.params


def _cache_tensors(cache: Any) -> list[tuple[Any, str, int]] | None:
    """(holder, attribute, index) of every key and value tensor of a plain dynamic KV cache,
    or None for any other kind (sliding window, quantised, static...), which is never merged.
    """
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56: one DynamicLayer per layer
        if any(type(layer).__name__ != "DynamicLayer" for layer in layers):
            return None
        return [(layer, name, -1) for layer in layers for name in ("keys", "values")]
    keys, values = getattr(cache, "key_cache", None), getattr(cache, "value_cache", None)
    if type(cache).__name__ != "DynamicCache" or keys is None or values is None:
        return None
    return [(lst, "", i) for lst in (keys, values) for i in range(len(lst))]


def _get(holder: Any, name: str, i: int) -> torch.Tensor:
    return getattr(holder, name) if i < 0 else holder[i]


def _set(holder: Any, name: str, i: int, value: torch.Tensor) -> None:
    if i < 0:
        setattr(holder, name, value)
    else:
        holder[i] = value


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def merge_slots(old: _Slots, new: _Slots) -> _Slots:
    """``old``'s rows followed by ``new``'s in one batch: the shorter cache is left-padded
    (masked) to the longer one's length. Both caches must be plain dynamic ones."""
    a, b = _cache_tensors(old.cache), _cache_tensors(new.cache)
    if a is None or b is None or len(a) != len(b):
        raise ValueError("only plain dynamic KV caches of one model can be merged")
    width = max(old.attn.shape[1], new.attn.shape[1])
    for (ha, na, ia), (hb, nb, ib) in zip(a, b, strict=True):
        ta, tb = _get(ha, na, ia), _get(hb, nb, ib)  # (rows, heads, length, head dim)
        _set(ha, na, ia, torch.cat([_left_pad(ta, width, 2), _left_pad(tb, width, 2)], dim=0))
    return _Slots(
        old.rows + new.rows,
        old.cache,
        torch.cat([_left_pad(old.attn, width, 1), _left_pad(new.attn, width, 1)], dim=0),
        torch.cat([old.next_pos, new.next_pos]),
        torch.cat([old.logits, new.logits]),
    )


def _drop_padding_columns(slots: _Slots) -> None:
    """Cut the leading cache columns no remaining row attends to (left by rows that left)."""
    first = int(slots.attn.any(dim=0).int().argmax())
    tensors = _cache_tensors(slots.cache)
    if first == 0 or tensors is None:
        return
    for holder, name, i in tensors:
        _set(holder, name, i, _get(holder, name, i)[:, :, first:])
    slots.attn = slots.attn[:, first:]


SCHEDULES = ("batch", "rows", "refill")


class Decoder:
    """Decodes a queue of rows with one model, at most ``max_rows`` in a forward pass.

    ``schedule="batch"``: the rows of one batch are decoded in chunks of ``max_rows``, each
    until its longest row ends, drawing from one generator per batch (exact: a batch's
    samples depend on nothing else). ``"refill"``: a finished row's slot goes to the next
    row of the queue at once (its prompt is prefilled and its KV cache merged into the
    running batch), as long as the settings match apart from the seed; each row draws from
    its own stream. ``"rows"``: those draws, chunked as ``"batch"`` (for comparisons).
    """

    def __init__(
        self,
        forward: Forward,
        decode_text: Callable[[Sequence[int]], str],
        eos_ids: set[int],
        pad_id: int,
        device: torch.device,
    ) -> None:
        self.forward = forward
        self.decode_text = decode_text
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.device = device
        self.forward_rows: list[int] = []  # rows of every forward pass (tests count them)
        self.schedule = "batch"
        self._batch_draws: dict[int, torch.Generator] = {}  # the batch schedule's generators

    def decode(
        self, jobs: Iterable[Job], max_rows: int, schedule: str = "batch"
    ) -> Iterator[tuple[Job, Completion]]:
        """``(job, completion)`` for every job, as each finishes."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        refill = schedule == "refill"
        queue = deque(jobs)
        slots: _Slots | None = None
        while queue or slots is not None:
            # Inference mode per step, not around the yields: the caller's code between
            # two rows must not run in it.
            with torch.inference_mode():
                slots, finished = self._iteration(slots, queue, max_rows, refill)
            for row in finished:
                yield row.job, self._finish(row)

    def _iteration(
        self, slots: _Slots | None, queue: deque[Job], max_rows: int, refill: bool
    ) -> tuple[_Slots | None, list[_Row]]:
        """Admit rows, pick every row's next token, decode one step; the rows that ended."""
        slots = self._admit(slots, queue, max_rows, refill)
        if slots is None:
            return None, []
        params = slots.params
        tokens, lps, ents, tails = pick_tokens(
            slots.logits, params, self._draws(slots.rows, params)
        )
        _record_extra(slots)  # from the same logits, before the step replaces them
        keep = self._record(slots.rows, tokens.tolist(), torch.stack([lps, ents, tails]))
        finished = [row for row in slots.rows if row.finish is not None]
        return self._step(slots, tokens, keep), finished

    # -- scheduling -----------------------------------------------------------------

    def _admit(
        self, slots: _Slots | None, queue: deque[Job], max_rows: int, refill: bool
    ) -> _Slots | None:
        """Prefill the next rows of the queue into free slots (all of them when none run)."""
        if not queue or (slots is not None and not refill):
            return slots
        free = max_rows - (len(slots.rows) if slots is not None else 0)
        first = queue[0]
        # Each admission is one more forward pass (the prompts' prefill); on a small model a
        # pass costs about the same whatever its rows, so wait for a quarter of the slots
        # (or for the whole rest of the queue) to be free and admit them together.
        enough = min(max(1, max_rows // 4), len(queue))
        if slots is not None and (
            free < enough
            or not same_decoding(slots.params, first.params)
            or _cache_tensors(slots.cache) is None  # a cache we cannot merge: wait for the end
        ):
            return slots
        group: list[Job] = []
        while queue and len(group) < free and same_decoding(queue[0].params, first.params):
            if not refill and queue[0].batch != first.batch:
                break  # without refill a chunk never spans two batches
            group.append(queue.popleft())
        fresh = self._prefill(group)
        return fresh if slots is None else merge_slots(slots, fresh)

    def _prefill(self, jobs: list[Job]) -> _Slots:
        bsz = len(jobs)
        width = max(len(j.ids) for j in jobs)
        input_ids = torch.full((bsz, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((bsz, width), dtype=torch.long)
        for r, job in enumerate(jobs):  # left padding: every row ends at the same column
            input_ids[r, width - len(job.ids) :] = torch.tensor(job.ids, dtype=torch.long)
            attn[r, width - len(job.ids) :] = 1
        input_ids, attn = input_ids.to(self.device), attn.to(self.device)
        # Explicit positions so padded rows count from their first real token (matters for
        # absolute position embeddings; RoPE models would not care).
        positions = (attn.cumsum(-1) - 1).clamp_(min=0)
        self.forward_rows.append(bsz)
        logits, cache = self.forward(
            input_ids=input_ids, attention_mask=attn, position_ids=positions
        )
        return _Slots([_Row(j) for j in jobs], cache, attn, positions[:, -1] + 1, logits)

    def _draws(
        self, rows: list[_Row], params: SamplingParams
    ) -> torch.Tensor | torch.Generator | None:
        """The batch schedule: the batch's generator, seeded with its seed when its first
        chunk draws. The others: one uniform per row from its own stream (created on the
        CPU: the same numbers on every device)."""
        if is_greedy(params):
            return None
        if self.schedule == "batch":
            batch = rows[0].job.batch  # a chunk never spans two batches here
            if batch not in self._batch_draws:
                gen = torch.Generator(device=self.device).manual_seed(params.seed)
                self._batch_draws[batch] = gen
            return self._batch_draws[batch]
        return torch.tensor(
            [float(torch.rand((), generator=r.gen, dtype=torch.float64)) for r in rows],
            dtype=torch.float64,
        )

    def _step(self, slots: _Slots, tokens: torch.Tensor, keep: list[int]) -> _Slots | None:
        """Drop the finished rows and decode one token of the others."""
        if not keep:
            return None
        if len(keep) < len(slots.rows):
            # Finished rows leave the batch (and the KV cache) so the rest decode faster.
            sel = torch.tensor(keep, device=self.device)
            slots.cache.batch_select_indices(sel)
            slots.rows = [slots.rows[s] for s in keep]
            slots.attn, slots.next_pos, tokens = slots.attn[sel], slots.next_pos[sel], tokens[sel]
            if self.schedule == "refill":  # rows merged in left columns of padding behind them
                _drop_padding_columns(slots)
        slots.attn = torch.cat([slots.attn, slots.attn.new_ones((len(keep), 1))], dim=1)
        self.forward_rows.append(len(keep))
        slots.logits, slots.cache = self.forward(
            input_ids=tokens[:, None],
            attention_mask=slots.attn,
            position_ids=slots.next_pos[:, None],
            cache=slots.cache,
        )
        slots.next_pos = slots.next_pos + 1
        return slots

    # -- rows -----------------------------------------------------------------------

    def _record(self, rows: list[_Row], tokens: list[int], stats: torch.Tensor) -> list[int]:
        """Append each row's token and statistics; return the slots still decoding."""
        lps, ents, tails = stats.tolist()  # one device->host copy per step
        keep: list[int] = []
        for slot, row in enumerate(rows):
            params = row.job.params
            tok = tokens[slot]
            row.ids.append(tok)
            row.logprobs.append(lps[slot])
            row.entropies.append(ents[slot])
            row.tail.append(tails[slot])
            if tok in self.eos_ids:
                row.finish = "stop"
            elif params.stop and self._hit_stop(row, params.stop):
                row.finish = "stop"
            elif len(row.ids) >= params.max_new_tokens:
                row.finish = "length"
            if row.finish is None:
                keep.append(slot)
        return keep

    def _hit_stop(self, row: _Row, stops: tuple[str, ...]) -> bool:
        """Did the last token complete a stop string? Sets ``row.cut`` if so."""
        # Enough tokens to hold the longest stop string even if some decode to nothing
        # (partial UTF-8 bytes).
        window = max(len(s) for s in stops) + 8
        tail_text = self.decode_text(row.ids[-window:])
        if not any(s in tail_text for s in stops):
            return False
        # Confirm on the full text and find the earliest occurrence of any stop string.
        full = self.decode_text(row.ids)
        hits = [i for i in (full.find(s) for s in stops) if i >= 0]
        if not hits:
            return False
        row.cut = min(hits)
        row.text = full[: row.cut]
        return True

    def _finish(self, row: _Row) -> Completion:
        n = len(row.ids)
        if row.cut is not None:
            # Keep the tokens whose text starts before the cut; tokens lying entirely
            # inside (or after) the stop string are dropped with their statistics. The
            # token that straddles the cut, if any, stays.
            while n > 0 and len(self.decode_text(row.ids[: n - 1])) >= row.cut:
                n -= 1
            text = row.text or ""
        elif row.ids and row.ids[-1] in self.eos_ids:
            # The EOS token stays in token_ids and the statistics (its probability is the
            # model's decision to stop) but contributes no text.
            text = self.decode_text(row.ids[:-1])
        else:
            text = self.decode_text(row.ids)
        return Completion(
            text=text,
            token_ids=row.ids[:n],
            logprobs=row.logprobs[:n],
            entropies=row.entropies[:n],
            tail_mass=row.tail[:n],
            finish_reason=row.finish or "length",
            top1=row.top1[:n],
            extra_tail_mass=row.extra_tail[:n],
        )


def _record_extra(slots: _Slots) -> None:
    """The extra statistics of the rows whose params ask for them (``wants_extra``): the
    top-1 probability and the T = 1 mass outside ``extra_truncation``, computed as the
    probe computes them (``probe.position_stats``) from the logits the token is drawn from."""
    extra = slots.params.extra_truncation
    if extra is None:
        return
    rows = [i for i, row in enumerate(slots.rows) if row.job.params.wants_extra(row.job.sample)]
    if not rows:
        return
    z = slots.logits[rows].float()
    top1 = torch.log_softmax(z, dim=-1).exp().max(dim=-1).values
    tails = tail_mass(z, extra)
    for i, p1, t in zip(rows, top1.tolist(), tails.tolist(), strict=True):
        slots.rows[i].top1.append(p1)
        slots.rows[i].extra_tail.append(t)
