"""Shared pytest fixtures.

Tiny-model fixtures (engine tests and anyone who needs a real, loadable model):
a 2-layer Llama with random weights and a byte-level BPE tokenizer trained here on
a few KB of Python source. Both are written with ``save_pretrained`` into one folder,
so they load from a path exactly like a user's model. Built once per session (~1 s).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

# What `ssd-tui` sets before torch loads (cli.main), for the torch the tests run in their
# own process too: OpenMP threads that spin while a peer is descheduled make every op
# many times slower on a busy machine (the tiny model's full loop: 38 s instead of 6 s at
# load 5 on 2 cores), and the engines and sandboxes the tests start keep it busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Special tokens of the tiny tokenizer. The chat template below uses the same markers as
# ChatML so that chat rendering can be tested without a real chat model.
TINY_EOS = "<|endoftext|>"
TINY_PAD = "<|pad|>"
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _python_corpus() -> list[str]:
    """A few KB of real Python text from the standard library (deterministic per Python)."""
    import json.encoder
    import textwrap

    return [inspect.getsource(textwrap), inspect.getsource(json.encoder)]


def build_tiny_model(out_dir: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """Write a tiny random Llama + tokenizer to ``out_dir``; return it.

    ``head_dim`` 16 (4 heads) is the default; vLLM's CPU attention needs 32 or more.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = [TINY_EOS, TINY_PAD, "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_python_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=TINY_EOS, pad_token=TINY_PAD)
    tok.chat_template = TINY_CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=64 // head_dim,
        num_key_value_heads=max(1, 32 // head_dim),
        max_position_embeddings=1024,
        # A wide init makes the random model's next-token distributions peaked rather
        # than near-uniform, so greedy decoding has clear winners (no float ties between
        # batched and unbatched runs) and truncation actually cuts something.
        initializer_range=0.25,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random Llama and its tokenizer (has a chat template)."""
    import torch

    # Building the model uses the global RNG; keep the caller's RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder for the fake engine (fixtures/fake_engine.py): nothing to load. One per
    session, so runs that must be equal name the same model (adapters record its path)."""
    from fixtures.fake_engine import write_model

    return write_model(tmp_path_factory.mktemp("fake-model"))


class FinishedRun:
    """A finished run shared by the tests that only read it (``finished_run``)."""

    def __init__(self, config: Path, statements: dict[str, int]) -> None:
        from ssd_tui.config import load_config

        self.config = config
        self.dir = load_config(config).run_dir
        self.db = self.dir / "run.db"
        self.statements = statements  # SQL statements each stage ran ("ROUND:STAGE" -> n)

    def fingerprint(self) -> dict[str, str]:
        """Every file of the run folder and its sha256, a database by its rows (what a write
        changes even while it sits in the WAL): what no reader may change. SQLite's -wal and
        -shm files come and go with readers' connections."""
        import hashlib
        import sqlite3

        out = {}
        for p in sorted(self.dir.rglob("*")):
            if not p.is_file() or p.name.endswith(("-wal", "-shm")):
                continue
            if p.suffix == ".db":
                conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                data = "\n".join(conn.iterdump()).encode()
                conn.close()
            else:
                data = p.read_bytes()
            out[str(p.relative_to(self.dir))] = hashlib.sha256(data).hexdigest()
        return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, fake_model_dir: Path):
    """One finished 2-round run with a temperature-only baseline, made once per session by
    ``ssd-tui run``'s own code path with the fake engine (runkit.finished_project), for the
    tests that only read a finished run: the resume tests' reference, the diff and export
    of a run. A test that writes copies it first (``shutil.copytree(finished_run.dir, …)``);
    at the end of the session every file must be as it was made."""
    import json

    from fixtures.fake_run import TRACE_ENV
    from runkit import finished_project, run_fake

    folder = tmp_path_factory.mktemp("finished-run")
    config = finished_project(folder, fake_model_dir)
    trace = folder / "statements.json"
    r = run_fake(config, env={TRACE_ENV: str(trace)})
    assert r.returncode == 0, r.stderr
    run = FinishedRun(config, json.loads(trace.read_text()))
    made = run.fingerprint()
    yield run
    assert run.fingerprint() == made, "a test changed the shared finished run"
