"""Pretrain the demo code model from scratch on the demo problem family.

    python -m ssd_tui.demo.pretrain --out assets/demo-model --seed 0

Steps, all deterministic from the seed:

1. The corpus: ``tasks.pretraining_documents`` (pretraining keys only: no evaluation
   or SSD-training task), each document ``prompt + body`` in a random style with
   random names, a share of them slightly wrong, then EOS.
2. A byte-level BPE tokenizer (vocab 1024) trained on that corpus with ``tokenizers``.
3. A small Llama (RoPE, so a long generation degrades instead of crashing on a
   position table) trained with plain next-token cross-entropy on packed sequences
   that each start at a document boundary, so the model sees "def" both at position 0
   (as when it is prompted) and right after an EOS.

The model is deliberately small and short-trained: it should be right often but not
always, and at temperature 1 sometimes take a distractor token, so that SSD has
something to fix. ``training_log.json`` in the output folder records the settings,
the loss curve and the wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ssd_tui.demo import tasks
from ssd_tui.demo.tasks import DEFAULT_BUG_RATE

# On a shared machine, OpenMP threads that spin while waiting for a descheduled peer
# make each step 3x slower; passive waiting avoids it. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class PretrainSettings:
    seed: int = 0
    bug_rate: float = DEFAULT_BUG_RATE  # share of corpus documents with one slight bug
    vocab_size: int = 1024
    hidden: int = 160
    layers: int = 4
    heads: int = 5
    ffn: int = 448
    seq_len: int = 256
    batch_size: int = 32
    steps: int = 420
    lr: float = 2e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    threads: int = 2
    val_docs: int = 400  # held-out corpus documents for a validation loss


def build_corpus(seed: int, bug_rate: float) -> list[str]:
    """The pretraining documents (text without EOS), in training order."""
    return [doc for _, doc in tasks.pretraining_documents(seed, bug_rate)]


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text round-trips) with EOS and a separate PAD.

    PAD differs from EOS on purpose: a trainer that masks the labels of padding by
    token id must not also mask the EOS the model has to learn to emit.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # A newline is always a token of its own. Otherwise "\n" + indentation merges into
    # one token in training text, and a prompt that ends in "\n" ends in a token the
    # model only ever saw right before EOS: it would stop at once. With this split the
    # tokens of a prompt are a prefix of the tokens of prompt + completion.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=512,
        clean_up_tokenization_spaces=False,  # the default cleanup would rewrite code (" ,")
    )


def make_model(tok, s: PretrainSettings):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=s.hidden,
        intermediate_size=s.ffn,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,  # halves the embedding cost of a small model
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pack(
    docs: Sequence[list[int]], seq_len: int, pad_id: int, rng: random.Random
) -> list[list[int]]:
    """Whole documents (each ending in EOS) packed greedily into sequences of ``seq_len``.

    Every sequence starts at a document start; the tail is padding (label -100).
    """
    order = list(range(len(docs)))
    rng.shuffle(order)
    seqs: list[list[int]] = []
    cur: list[int] = []
    for j in order:
        d = docs[j][:seq_len]
        if len(cur) + len(d) > seq_len:
            seqs.append(cur + [pad_id] * (seq_len - len(cur)))
            cur = []
        cur += d
    if cur:
        seqs.append(cur + [pad_id] * (seq_len - len(cur)))
    return seqs


def _batches(seqs: list[list[int]], batch_size: int, rng: random.Random):
    while True:
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [seqs[j] for j in order[i : i + batch_size]]


def _cpu_name() -> str:
    # Float results on CPU depend on the instruction set (AVX2 vs AVX-512 kernels): record it.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _optimizer(model, s: PretrainSettings):
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95))


def _lr_at(step: int, s: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _tensors(batch: list[list[int]], pad: int):
    import torch

    x = torch.tensor(batch)
    labels = x.clone()
    labels[x == pad] = -100
    return x, labels


def _val_loss(model, val_seqs: list[list[int]], batch_size: int, pad: int) -> float:
    import torch

    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(val_seqs), batch_size):
            x, y = _tensors(val_seqs[i : i + batch_size], pad)
            losses.append(model(input_ids=x, labels=y).loss.item())
    model.train()
    return sum(losses) / len(losses)


def pretrain(out: Path, s: PretrainSettings, log_every: int = 10) -> dict:
    """Build corpus, tokenizer and model; train; save to ``out``; return the training log."""
    import torch
    import transformers
    from transformers import GenerationConfig

    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    t0 = time.time()

    texts = build_corpus(s.seed, s.bug_rate)
    tok = train_tokenizer(texts, s.vocab_size)
    eos = tok.eos_token_id
    ids = [tok(t)["input_ids"] + [eos] for t in texts]
    val, train_docs = ids[: s.val_docs], ids[s.val_docs :]
    n_tokens = sum(len(d) for d in train_docs)

    rng = random.Random(f"pretrain:{s.seed}")
    seqs = pack(train_docs, s.seq_len, tok.pad_token_id, rng)
    val_seqs = pack(val, s.seq_len, tok.pad_token_id, random.Random(0))
    model = make_model(tok, s)
    n_params = sum(p.numel() for p in model.parameters())
    opt = _optimizer(model, s)

    print(
        f"corpus {len(texts)} docs, {n_tokens} train tokens in {len(seqs)} sequences "
        f"({n_tokens / (len(seqs) * s.seq_len):.0%} full); model {n_params / 1e6:.2f}M params; "
        f"{s.steps} steps = {s.steps * s.batch_size / len(seqs):.2f} epochs",
        flush=True,
    )
    log: dict = {
        "settings": asdict(s),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "corpus_docs": len(texts),
        "train_tokens": n_tokens,
        "sequences": len(seqs),
        "params": n_params,
        "loss": [],
        "val_loss": [],
    }
    model.train()
    batches = _batches(seqs, s.batch_size, rng)
    t_train = time.time()
    run = 0.0
    for step in range(s.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, s)
        x, y = _tensors(next(batches), tok.pad_token_id)
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        run += loss.item()
        if (step + 1) % log_every == 0:
            log["loss"].append([step + 1, round(run / log_every, 4)])
            el = time.time() - t_train
            print(f"step {step + 1}/{s.steps} loss {run / log_every:.4f} ({el:.0f}s)", flush=True)
            run = 0.0
        if (step + 1) % 100 == 0 or step + 1 == s.steps:
            v = _val_loss(model, val_seqs, s.batch_size, tok.pad_token_id)
            log["val_loss"].append([step + 1, round(v, 4)])
            print(f"step {step + 1} val loss {v:.4f}", flush=True)
    log["train_seconds"] = round(time.time() - t_train, 1)
    log["total_seconds"] = round(time.time() - t0, 1)

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=tok.pad_token_id, max_new_tokens=128
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return log


def main(argv: Sequence[str] | None = None) -> None:
    defaults = PretrainSettings()
    ap = argparse.ArgumentParser(description="Pretrain the demo code model from scratch.")
    ap.add_argument("--out", type=Path, required=True)
    for name, value in asdict(defaults).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--log-every", type=int, default=10)
    args = vars(ap.parse_args(argv))
    out, log_every = args.pop("out"), args.pop("log_every")
    log = pretrain(out, PretrainSettings(**args), log_every)
    print(f"saved to {out} in {log['total_seconds']}s")


if __name__ == "__main__":
    main()
