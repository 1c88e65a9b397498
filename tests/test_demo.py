"""The demo problem family and the shipped demo model (assets/).

Fast (well under 30 s): the generator runs once per session, the canonical and wrong
solutions of all eval problems run in one subprocess, and the model is only loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssd_tui.demo import tasks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
MODEL = ROOT / "assets" / "demo-model"
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generated() -> tuple[list[dict], list[dict]]:
    return tasks.build_problems(tasks.DEFAULT_SEED)


def test_shipped_problem_files_equal_the_generator(
    generated: tuple[list[dict], list[dict]],
) -> None:
    # The files were written by another process (other hash seed): equality also shows
    # that generation does not depend on anything but the seed.
    train, ev = generated
    assert (DEMO / "train_prompts.jsonl").read_text(encoding="utf-8") == tasks.to_jsonl(train)
    assert (DEMO / "eval.jsonl").read_text(encoding="utf-8") == tasks.to_jsonl(ev)


def test_generation_is_deterministic_from_the_seed() -> None:
    code = textwrap.dedent(
        """
        import hashlib, sys
        from ssd_tui.demo import tasks
        train, ev = tasks.build_problems(int(sys.argv[1]))
        print(hashlib.sha256((tasks.to_jsonl(train) + tasks.to_jsonl(ev)).encode()).hexdigest())
        """
    )

    def digest(seed: int, hashseed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(seed)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()

    import hashlib

    shipped = (DEMO / "train_prompts.jsonl").read_text(encoding="utf-8") + (
        DEMO / "eval.jsonl"
    ).read_text(encoding="utf-8")
    seed0 = digest(0, "12345")
    assert seed0 == hashlib.sha256(shipped.encode()).hexdigest()
    assert digest(1, "12345") != seed0


def test_file_format(generated: tuple[list[dict], list[dict]]) -> None:
    train, ev = generated
    assert 100 <= len(ev) <= 200 and len(train) >= 2000
    ids = [r["id"] for r in train + ev]
    assert len(set(ids)) == len(ids)
    for r in ev:
        assert r["split"] == "eval" and r["difficulty"] in ("easy", "medium", "hard")
        assert r["tests"].startswith("def check(candidate):\n")
        assert r["prompt"].startswith(f"def {r['entry_point']}(")
    for r in train:
        assert r["split"] == "train" and "tests" not in r and r["entry_point"]
    # Completions must survive the demo's stop strings.
    for r in train + ev:
        assert not any(s in r["canonical_solution"] for s in STOP)
    # Any prefix of the eval file covers all difficulties evenly (the demo takes 60).
    first = [r["difficulty"] for r in ev[:60]]
    assert {d: first.count(d) for d in set(first)} == {"easy": 20, "medium": 20, "hard": 20}


def test_eval_tasks_are_held_out_by_key_and_by_meaning() -> None:
    splits = tasks.make_splits(tasks.DEFAULT_SEED)
    ev, tr, pt = set(splits.eval), set(splits.train), set(splits.pretrain)
    assert ev and tr and pt
    assert not ev & tr and not ev & pt and not tr & pt
    # Not just different keys: no pretraining or training key computes the same function.
    ev_groups = {tasks.fingerprint(k) for k in ev}
    assert not ev_groups & {tasks.fingerprint(k) for k in tr | pt}
    # Names are injective in keys, so the shipped files are checkable by name alone.
    every = [k for t in tasks.TEMPLATES for k in tasks.all_keys(t)]
    assert len({tasks.make_task(k).entry_point for k in every}) == len(every)
    names = {tasks.make_task(k).entry_point for k in ev}
    assert not names & {tasks.make_task(k).entry_point for k in tr | pt}


def test_pretraining_corpus_never_shows_an_eval_task() -> None:
    splits = tasks.make_splits(tasks.DEFAULT_SEED)
    pretrain = set(splits.pretrain)
    eval_names = {tasks.make_task(k).entry_point for k in splits.eval}
    n = 0
    for key, doc in tasks.pretraining_documents(tasks.DEFAULT_SEED):
        assert key in pretrain
        name = doc[4 : doc.index("(")]
        assert name not in eval_names
        n += 1
    assert n == sum(tasks.CORPUS_DOCS.values())
    # And the shipped eval prompts' first lines (signatures) are not in the training file.
    train_prompts = (DEMO / "train_prompts.jsonl").read_text(encoding="utf-8")
    for r in _read_jsonl(DEMO / "eval.jsonl"):
        assert f'"entry_point": "{r["entry_point"]}"' not in train_prompts


_RUNNER = textwrap.dedent(
    """
    import json, sys
    out = []
    for program in json.load(sys.stdin):
        try:
            exec(program, {"__name__": "__check__"})
            out.append(True)
        except BaseException:
            out.append(False)
    print(json.dumps(out))
    """
)


def _run_programs(programs: list[str]) -> list[bool]:
    res = subprocess.run(
        [sys.executable, "-I", "-c", _RUNNER],
        input=json.dumps(programs),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(res.stdout)


def test_tests_have_teeth(generated: tuple[list[dict], list[dict]]) -> None:
    _, ev = generated
    by_name = {tasks.make_task(k).entry_point: k for k in tasks.make_splits(0).eval}
    programs, owners, good = [], [], []
    for r in ev:
        tail = "\n\n" + r["tests"] + "\n\ncheck(" + r["entry_point"] + ")\n"
        programs.append(r["prompt"] + r["canonical_solution"] + tail)
        owners.append(r["id"])
        good.append(True)
        wrong = tasks.wrong_solutions(by_name[r["entry_point"]])
        assert wrong, r["id"]
        for body in wrong:
            programs.append(r["prompt"] + body + tail)
            owners.append(r["id"])
            good.append(False)
    verdicts = _run_programs(programs)
    for owner, want, got in zip(owners, good, verdicts, strict=True):
        assert got == want, (owner, "canonical fails" if want else "a wrong variant passes")


def test_every_solution_style_passes() -> None:
    # The styles are the model's forks: each must be right, or the corpus teaches bugs.
    import random

    rng = random.Random(0)
    programs = []
    for key in tasks.make_splits(0).eval[::3]:
        task = tasks.make_task(key)
        tail = "\n\n" + tasks.tests_for(key) + f"\n\ncheck({task.entry_point})\n"
        for style in tasks.styles(key):
            param = task.param
            v = tasks.random_variant(key, param, rng)
            v = tasks.Variant(style, v.names, v.pred_alt, v.map_alt, v.aug, None)
            programs.append(task.prompt(param) + tasks.render(key, v) + tail)
    assert all(_run_programs(programs))


# ----------------------------------------------------------------------------- model


def _need_model() -> None:
    if not (MODEL / "model.safetensors").exists():
        pytest.skip("assets/demo-model not built yet")


def test_model_is_small() -> None:
    _need_model()
    size = sum(p.stat().st_size for p in MODEL.glob("*.safetensors"))
    assert size <= 20 * 1024 * 1024


def test_model_loads_offline_and_continues_a_prompt() -> None:
    _need_model()
    code = textwrap.dedent(
        """
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        path = sys.argv[1]
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        ids = tok("def sum_of_evens(nums):\\n    \\"\\"\\"Return the sum of the even numbers in nums.\\"\\"\\"\\n", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert text.startswith("    "), text
        print("ok")
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": "/nonexistent",
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(MODEL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_tokenizer_round_trips_python() -> None:
    _need_model()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    samples = [r["prompt"] + r["canonical_solution"] for r in _read_jsonl(DEMO / "eval.jsonl")[:20]]
    samples.append(Path(tasks.__file__).read_text(encoding="utf-8")[:4000])
    samples.append("def f(x):\n\treturn {\"a\": [1, 2.5e-3], 'b': x ** -1}  # ünïcode ✓\n")
    for text in samples:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.eos_token is not None and tok.pad_token_id != tok.eos_token_id


def test_prompt_tokens_are_a_prefix_of_the_solution_tokens() -> None:
    # Otherwise the prompt's last token is one the model only saw before EOS (a
    # trailing "\n" merged with indentation in training text) and it stops at once.
    _need_model()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    for r in _read_jsonl(DEMO / "eval.jsonl"):
        head = tok(r["prompt"])["input_ids"]
        full = tok(r["prompt"] + r["canonical_solution"])["input_ids"]
        assert full[: len(head)] == head, r["id"]
        assert len(full) - len(head) <= 96, r["id"]  # fits the demo's max_new_tokens
