"""Round analytics: diversity metrics, program normalisation, collapse rules, baseline."""

from __future__ import annotations

import keyword
from math import comb
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_tui.analysis import rounds as an
from ssd_tui.config import AnalysisSection, RunConfig
from ssd_tui.evaluation.passk import pass_at_k
from ssd_tui.store.run_store import RunStore, SampleRow

T_EVAL = 0.8
T_TRAIN = 1.0
EVAL_PROBLEMS = ["p0", "p1", "p2", "p3"]
TRAIN_PROBLEMS = [f"t{i}" for i in range(8)]
N = 5  # eval samples per problem

# Five genuinely different algorithms; {c} varies per problem so problems differ too.
TEMPLATES = [
    "def f(xs):\n    total = 0\n    for x in xs:\n        total += x * {c}\n    return total\n",
    "def f(xs):\n    return sum(x * {c} for x in xs)\n",
    "def f(xs):\n    out = []\n    i = 0\n    while i < len(xs):\n        out.append(xs[i] + {c})\n        i += 1\n    return out\n",
    "def f(xs):\n    if not xs:\n        return {c}\n    return max(xs) - min(xs) + {c}\n",
    "def f(xs):\n    import math\n    return math.prod(xs) % {c}\n",
]
# One algorithm, names changed: the same program after normalisation, different text.
RENAMED = [
    f"def f({a}):\n    {b} = 0\n    for {x} in {a}:\n        {b} += {x} * 3\n    return {b}\n"
    for a, b, x in [
        ("xs", "total", "x"),
        ("ys", "acc", "y"),
        ("vals", "s", "v"),
        ("items", "res", "it"),
        ("q", "w", "e"),
    ]
]
COPIES = [RENAMED[0]] * N  # one program, verbatim
LOOP = "def f(xs):\n" + "    x = x + 1\n" * 12


def cfg(**analysis: float) -> RunConfig:
    return RunConfig(analysis=AnalysisSection(**analysis))


def open_run(tmp_path: Path) -> RunStore:
    store = RunStore.open(tmp_path / "run.db", create=True)
    store.add_problems(
        "eval",
        [
            _problem(n, d)
            for n, d in zip(EVAL_PROBLEMS, ["easy", "easy", "hard", "hard"], strict=True)
        ],
    )
    store.add_problems("train", [_problem(n) for n in TRAIN_PROBLEMS])
    return store


def _problem(name: str, difficulty: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        id=name,
        prompt=f"def f(xs):\n    '''{name}'''\n",
        tests=None,
        entry_point="f",
        difficulty=difficulty,
        source="test",
    )


def _row(rnd, purpose, pid, j, t, text, n_tokens=None, entropy=0.5) -> SampleRow:
    n = len(an.code_tokens(text)) if n_tokens is None else n_tokens
    return SampleRow(
        rnd, purpose, pid, j, t, 0, 1.0, 0.0, text, text if purpose == "eval" else None, "stop",
        list(range(n)), [-0.1] * n, [entropy] * n, [0.0] * n,
    )  # fmt: skip


def add_eval(
    store: RunStore,
    rnd: int,
    programs=None,
    passed: int = 2,
    t: float = T_EVAL,
    length_scale: float = 1.0,
) -> None:
    """N samples per eval problem (diverse templates unless ``programs``); ``passed`` pass each."""
    ids = {p["name"]: p["id"] for p in store.problems("eval")}
    rows = []
    for i, name in enumerate(EVAL_PROBLEMS):
        texts = programs or [tpl.format(c=i + 2) for tpl in TEMPLATES]
        for j, text in enumerate(texts):
            n = int(len(an.code_tokens(text)) * length_scale)
            rows.append(_row(rnd, "eval", ids[name], j, t, text, n_tokens=n))
    store.add_samples(rows)
    verdicts = [
        (s["id"], "passed" if s["sample_idx"] < passed else "failed", "", 0.1)
        for s in store.samples(rnd, "eval", t)
    ]
    store.add_verdicts(verdicts)


def add_train(store: RunStore, rnd: int, same: str | None = None) -> None:
    ids = {p["name"]: p["id"] for p in store.problems("train")}
    rows = [
        _row(rnd, "train", ids[name], 0, T_TRAIN, same or TEMPLATES[i % 5].format(c=i + 2))
        for i, name in enumerate(TRAIN_PROBLEMS)
    ]
    store.add_samples(rows)


def set_pass(store: RunStore, rnd: int, p1: float, p5: float, t: float = T_EVAL) -> None:
    store.set_metrics(rnd, "eval", t, {"all": {"pass@1": p1, "pass@5": p5}})


def healthy_run(tmp_path: Path) -> RunStore:
    """Rounds 0-2: diverse samples, pass@1 and pass@5 both rising."""
    store = open_run(tmp_path)
    for rnd in range(3):
        add_eval(store, rnd)
        set_pass(store, rnd, 0.3 + 0.1 * rnd, 0.6 + 0.1 * rnd)
        if rnd:
            add_train(store, rnd)
    return store


def rules_fired(store: RunStore, rnd: int, config: RunConfig | None = None) -> set[str]:
    return {w["rule"] for w in an.analyse_round(store, rnd, config or cfg())}


def analyse_upto(store: RunStore, last: int, config: RunConfig | None = None) -> set[str]:
    for rnd in range(last):
        an.analyse_round(store, rnd, config or cfg())
    return rules_fired(store, last, config)


# ---- text metrics on hand-made samples --------------------------------------------------------


def test_code_tokens_split_words_and_punctuation():
    assert an.code_tokens("x=a1+ 2\n  foo(y)") == ["x", "=", "a1", "+", "2", "foo", "(", "y", ")"]


def test_distinct_n_by_hand():
    toks = [["a", "b", "a", "b"], ["a", "c"]]
    assert an.distinct_n(toks, 1) == pytest.approx(3 / 6)
    assert an.distinct_n(toks, 2) == pytest.approx(3 / 4)  # ab ba ab | ac
    assert an.distinct_n(toks, 3) == pytest.approx(2 / 2)  # aba bab
    assert an.distinct_n(toks, 4) == pytest.approx(1 / 1)
    assert an.distinct_n(toks, 5) is None


def test_pairwise_similarity_is_bigram_jaccard_averaged_over_problems():
    one = [["a", "b", "c"], ["a", "b", "d"]]  # {ab, bc} vs {ab, bd}: 1/3
    two = [["x", "y"], ["x", "y"], ["z"]]  # pairs: 1, 0, 0 -> 1/3
    assert an.pairwise_similarity([one]) == pytest.approx(1 / 3)
    assert an.pairwise_similarity([one, two, [["solo"]]]) == pytest.approx(1 / 3)
    assert an.pairwise_similarity([[["solo"]]]) is None


def test_unique_and_duplicate_share_by_hand():
    a1, a2, b = RENAMED[0], RENAMED[1], TEMPLATES[1].format(c=2)
    rows = [
        {"problem": "A", "completion": a1},
        {"problem": "A", "completion": a2},
        {"problem": "A", "completion": b},
        {"problem": "B", "completion": b},
        {"problem": "B", "completion": b},
    ]
    m = an.diversity_metrics(rows)
    assert m["unique_share"] == pytest.approx((2 + 1) / 5)
    # Exact texts: a1, a2, b (b is repeated across A and B and within B).
    assert m["duplicate_share"] == pytest.approx(1 - 3 / 5)
    assert m["n_samples"] == 5


def test_unique_share_needs_two_samples_of_a_problem():
    rows = [{"problem": f"P{i}", "completion": TEMPLATES[0].format(c=1)} for i in range(3)]
    m = an.diversity_metrics(rows)
    assert m["unique_share"] is None
    assert m["duplicate_share"] == pytest.approx(2 / 3)


def test_lengths_entropy_loops_and_truncation():
    rows = [
        {"problem": "A", "completion": "a", "n_tokens": 1, "mean_entropy": 1.0, "finish_reason": "stop"},
        {"problem": "A", "completion": LOOP, "n_tokens": 3, "mean_entropy": 3.0, "finish_reason": "length"},
    ]  # fmt: skip
    m = an.diversity_metrics(rows)
    assert m["mean_length"] == pytest.approx(2.0)
    assert m["mean_entropy"] == pytest.approx((1 * 1 + 3 * 3) / 4)  # token-weighted
    assert m["loop_share"] == pytest.approx(0.5)
    assert m["truncated_share"] == pytest.approx(0.5)
    assert "passing_programs" not in m  # no verdicts


def test_passing_programs_counts_distinct_passing_programs_per_problem():
    rows = [
        {"problem": "A", "completion": RENAMED[0], "status": "passed"},
        {"problem": "A", "completion": RENAMED[1], "status": "passed"},  # same program
        {"problem": "A", "completion": TEMPLATES[1], "status": "passed"},
        {"problem": "B", "completion": TEMPLATES[2], "status": "passed"},
        {"problem": "C", "completion": TEMPLATES[3], "status": "failed"},
    ]
    assert an.diversity_metrics(rows)["passing_programs"] == pytest.approx((2 + 1) / 2)


def test_find_loop():
    assert an.find_loop(["a", "b"] * 20, 3, 30) == (2, 20)
    assert an.find_loop(an.code_tokens(LOOP), 3, 30) == (5, 12)
    assert an.find_loop(an.code_tokens("xs = [0, 0, 0, 0]"), 3, 30) is None
    for tpl in TEMPLATES:
        assert an.find_loop(an.code_tokens(tpl.format(c=3)), 3, 30) is None


# ---- program normalisation ----------------------------------------------------------------------


def test_renamed_programs_normalise_to_the_same_key():
    keys = {an.normalize_program(p) for p in RENAMED}
    assert len(keys) == 1
    commented = '# sum\ndef g(zs):\n    """Doc."""\n    t = 0\n    for z in zs:  # loop\n\n        t += z * 3\n    return t\n'
    assert an.normalize_program(commented) in keys


def test_different_algorithms_normalise_differently():
    keys = {an.normalize_program(t.format(c=3)) for t in TEMPLATES}
    assert len(keys) == len(TEMPLATES)
    # Builtins keep their names: len and sum are different programs.
    assert an.normalize_program("def f(x):\n    return len(x)\n") != an.normalize_program(
        "def f(x):\n    return sum(x)\n"
    )
    # Constants matter.
    assert an.normalize_program("y = 1") != an.normalize_program("y = 2")


def test_bodies_parse_after_dedent_and_junk_is_whitespace_normalised():
    body_a = "    out = 0\n    return out\n"
    body_b = "    res = 0\n    return res\n"
    assert an.normalize_program(body_a) == an.normalize_program(body_b)
    assert an.normalize_program("def (:\n  x   y") == an.normalize_program("def (: x y")
    assert an.normalize_program("def (: x y").startswith("text:")


def test_fenced_answers_are_normalised_by_their_code():
    sample = {"completion": "Here:\n```python\n" + RENAMED[0] + "```\nDone."}
    assert an.normalize_program(an.program_text(sample)) == an.normalize_program(RENAMED[1])


def test_pass_at_k_matches_the_combinatorial_formula():
    for n, c, k in [(5, 1, 1), (5, 1, 5), (5, 0, 1), (10, 3, 5), (10, 8, 3)]:
        expected = 1.0 if n - c < k else 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


# ---- analyse_round: metrics rows and idempotence ------------------------------------------------------


def test_analyse_writes_diversity_metrics_per_purpose_and_scope(tmp_path):
    store = healthy_run(tmp_path)
    an.analyse_round(store, 1, cfg())
    eval_all = {
        m["name"]: m["value"]
        for m in store.metrics("eval")
        if m["round"] == 1 and m["scope"] == "all"
    }
    assert eval_all["n_samples"] == len(EVAL_PROBLEMS) * N
    assert eval_all["unique_share"] == pytest.approx(1.0)
    assert eval_all["passing_programs"] == pytest.approx(2.0)
    assert eval_all["pass@1"] == pytest.approx(0.4)  # the evaluate stage's rows survive
    for name in (
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "distinct_4",
        "mean_length",
        "loop_share",
    ):
        assert eval_all[name] is not None
    scopes = {m["scope"] for m in store.metrics("eval", "distinct_2") if m["round"] == 1}
    assert scopes == {"all", "easy", "hard"}
    train = store.metric(1, "duplicate_share", "train", T_TRAIN)
    assert train == pytest.approx(0.0)


def test_healthy_run_raises_no_warning(tmp_path):
    store = healthy_run(tmp_path)
    for rnd in range(3):
        assert rules_fired(store, rnd) == set()
    assert store.warnings() == []


def test_rerun_is_idempotent_and_clears_stale_warnings(tmp_path):
    store = healthy_run(tmp_path)
    add_train(store, 3, same=TEMPLATES[0].format(c=2))
    add_eval(store, 3)
    set_pass(store, 3, 0.6, 0.9)
    first = an.analyse_round(store, 3, cfg())
    rows_before = store.metrics()
    assert {w["rule"] for w in first} == {"train_duplicates"}
    second = an.analyse_round(store, 3, cfg())
    assert [(w["rule"], w["evidence"]) for w in second] == [
        (w["rule"], w["evidence"]) for w in first
    ]
    assert store.metrics() == rows_before
    assert len(store.warnings(3)) == 1
    an.analyse_round(store, 3, cfg(max_duplicate_share_rise=1.0))
    assert store.warnings(3) == []


# ---- the collapse rules: each fires, and doesn't -------------------------------------------------------


def _collapsed_round(tmp_path: Path, p1: float, p5: float, programs=COPIES) -> RunStore:
    store = open_run(tmp_path)
    add_eval(store, 0)
    set_pass(store, 0, 0.3, 0.6)
    add_eval(store, 1, programs=programs)
    set_pass(store, 1, p1, p5)
    return store


def test_diversity_drop_fires_when_pass1_does_not_rise(tmp_path):
    store = _collapsed_round(tmp_path, 0.3, 0.6)
    fired = analyse_upto(store, 1)
    assert "diversity_drop" in fired
    ev = store.warnings(1)[[w["rule"] for w in store.warnings(1)].index("diversity_drop")][
        "evidence"
    ]
    assert ev["rounds"] == [0, 1]
    assert ev["values"][1] < ev["values"][0] * 0.8
    assert ev["pass@1"] == [0.3, 0.3]
    assert set(ev["problems"]) <= set(EVAL_PROBLEMS) and ev["problems"]
    assert ev["sample_ids"]


def test_diversity_drop_quiet_when_pass1_rises(tmp_path):
    store = _collapsed_round(tmp_path, 0.5, 0.6)
    assert "diversity_drop" not in analyse_upto(store, 1)


def test_diversity_drop_is_judged_against_round_0(tmp_path):
    """Round 0 low, round 1 diverse, round 2 back to round 0's: distinct-2 fell from round
    1's, not from round 0's, so nothing fired (rules judge a run against its round 0)."""
    store = open_run(tmp_path)
    add_eval(store, 0, programs=RENAMED)
    set_pass(store, 0, 0.1, 0.2)
    add_eval(store, 1)
    set_pass(store, 1, 0.5, 0.7)
    add_eval(store, 2, programs=RENAMED)
    set_pass(store, 2, 0.1, 0.2)
    assert "diversity_drop" not in analyse_upto(store, 2)


@pytest.mark.parametrize("programs", [COPIES, RENAMED], ids=["copies", "renamed"])
def test_unique_share_low_fires_on_a_drop_from_round_0(tmp_path, programs):
    store = _collapsed_round(tmp_path, 0.5, 0.7, programs)
    assert "unique_share_low" in analyse_upto(store, 1)
    ev = next(w for w in store.warnings(1) if w["rule"] == "unique_share_low")["evidence"]
    d = ev["by_purpose"]["eval"]
    assert d["values"] == [1.0, pytest.approx(1 / N)] and d["rounds"] == [0, 1]
    assert d["drop"] == pytest.approx(1 - 1 / N) and ev["threshold"] == 0.75
    assert len(ev["sample_ids"]) == min(an.MAX_IDS, len(EVAL_PROBLEMS) * N)


def test_unique_share_low_quiet_within_the_threshold(tmp_path):
    store = _collapsed_round(tmp_path, 0.5, 0.7)
    assert "unique_share_low" not in analyse_upto(store, 1, cfg(max_unique_share_drop=0.85))
    store2 = healthy_run(tmp_path / "h")
    assert "unique_share_low" not in analyse_upto(store2, 1)


def test_no_rule_fires_on_round_0_however_narrow_the_base_model(tmp_path):
    """Round 0 is every eval rule's reference: a base model with one program per problem,
    every sample looping and a closed pass@k gap is what the run is judged against, never
    a warning of its own (the old absolute floors called such a model collapsed)."""
    store = open_run(tmp_path)
    add_eval(store, 0, programs=[LOOP] * N, passed=0)
    set_pass(store, 0, 0.0, 0.0)
    assert an.analyse_round(store, 0, cfg()) == []
    assert store.metric_at(0, "unique_share", "eval", T_EVAL) == pytest.approx(1 / N)
    assert store.metric_at(0, "loop_share", "eval", T_EVAL) == 1.0
    # …and the next round is judged against it: as narrow as round 0, nothing fires
    add_eval(store, 1, programs=[LOOP] * N, passed=0)
    set_pass(store, 1, 0.0, 0.0)
    assert an.analyse_round(store, 1, cfg()) == []


def test_passk_gap_closing_fires(tmp_path):
    store = open_run(tmp_path)
    add_eval(store, 0, passed=1)  # every problem mixed in round 0
    set_pass(store, 0, 0.3, 0.6)
    add_eval(store, 1, passed=0)  # …and settled (all fail) in round 1
    set_pass(store, 1, 0.3, 0.35)
    assert "passk_gap_closing" in analyse_upto(store, 1)
    ev = next(w for w in store.warnings(1) if w["rule"] == "passk_gap_closing")["evidence"]
    assert ev["values"] == [pytest.approx(0.3), pytest.approx(0.05)]
    assert ev["rounds"] == [0, 1]
    assert set(ev["problems"]) == set(EVAL_PROBLEMS)


@pytest.mark.parametrize("p1,p5", [(0.4, 0.7), (0.62, 0.65), (0.55, 0.6)])
def test_passk_gap_closing_quiet(tmp_path, p1, p5):
    # (0.4, 0.7): the gap held; (0.62, 0.65): closed because pass@1 reached round 0's pass@5;
    # (0.55, 0.6): closed, but every problem is still solved in 5 tries (the verdicts): pass@k
    # held, single samples got better, as SSD does on the demo model.
    store = open_run(tmp_path)
    add_eval(store, 0)
    set_pass(store, 0, 0.3, 0.6)
    add_eval(store, 1)
    set_pass(store, 1, p1, p5)
    assert "passk_gap_closing" not in analyse_upto(store, 1)


def test_length_drift_fires_on_shorter_outputs(tmp_path):
    store = healthy_run(tmp_path)
    add_eval(store, 3, length_scale=0.3)
    set_pass(store, 3, 0.6, 0.9)
    assert "length_drift" in analyse_upto(store, 3)
    ev = next(w for w in store.warnings(3) if w["rule"] == "length_drift")["evidence"]
    assert ev["by_purpose"]["eval"]["direction"] == "shorter"
    assert ev["by_purpose"]["eval"]["rounds"] == [0, 3]
    assert ev["sample_ids"]


def test_length_drift_quiet_within_threshold(tmp_path):
    store = healthy_run(tmp_path)
    add_eval(store, 3, length_scale=1.3)
    set_pass(store, 3, 0.6, 0.9)
    assert "length_drift" not in analyse_upto(store, 3)


def test_looping_fires_and_names_the_loops(tmp_path):
    store = healthy_run(tmp_path)
    add_eval(store, 3, programs=[LOOP] + [t.format(c=9) for t in TEMPLATES[1:]])
    set_pass(store, 3, 0.6, 0.9)
    assert "looping" in analyse_upto(store, 3)
    ev = next(w for w in store.warnings(3) if w["rule"] == "looping")["evidence"]
    assert ev["by_purpose"]["eval"]["values"] == [0.0, pytest.approx(1 / N)]
    assert ev["examples"][0]["period"] == 5
    loop_ids = {s["id"] for s in store.samples(3, "eval") if s["sample_idx"] == 0}
    assert set(ev["sample_ids"]) == loop_ids


def test_looping_quiet_below_threshold(tmp_path):
    store = healthy_run(tmp_path)
    add_eval(store, 3, programs=[LOOP] + [t.format(c=9) for t in TEMPLATES[1:]])
    set_pass(store, 3, 0.6, 0.9)
    assert "looping" not in analyse_upto(store, 3, cfg(max_loop_share_rise=0.5))


def test_looping_is_judged_against_the_base_models_own_loops(tmp_path):
    """Round 0 loops in one sample of five: round 1 as loopy is quiet, one more loop is not."""
    store = open_run(tmp_path)
    loopy = [LOOP] + [t.format(c=9) for t in TEMPLATES[1:]]
    add_eval(store, 0, programs=loopy)
    set_pass(store, 0, 0.4, 0.6)
    add_eval(store, 1, programs=loopy)
    set_pass(store, 1, 0.4, 0.6)
    assert "looping" not in analyse_upto(store, 1)
    add_eval(store, 2, programs=[LOOP, LOOP] + [t.format(c=9) for t in TEMPLATES[2:]])
    set_pass(store, 2, 0.4, 0.6)
    assert "looping" in analyse_upto(store, 2)
    ev = next(w for w in store.warnings(2) if w["rule"] == "looping")["evidence"]
    assert ev["by_purpose"]["eval"]["values"] == [pytest.approx(1 / N), pytest.approx(2 / N)]


def test_train_duplicates_fires(tmp_path):
    store = healthy_run(tmp_path)
    add_train(store, 3, same=TEMPLATES[0].format(c=2))
    add_eval(store, 3)
    set_pass(store, 3, 0.6, 0.9)
    assert rules_fired(store, 3) == {"train_duplicates"}
    ev = store.warnings(3)[0]["evidence"]
    assert ev["values"] == [0.0, pytest.approx(1 - 1 / len(TRAIN_PROBLEMS))]
    assert ev["rounds"] == [1, 3]  # against round 1's samples, the base model's
    assert ev["most_repeated"][0]["count"] == len(TRAIN_PROBLEMS)
    assert set(ev["problems"]) == set(TRAIN_PROBLEMS)


def test_train_duplicates_quiet_on_distinct_samples(tmp_path):
    store = healthy_run(tmp_path)
    assert "train_duplicates" not in rules_fired(store, 2)


# ---- fork/lock probe through a fake scorer --------------------------------------------------------------

BASE_H = np.array([2.0, 0.1, 2.0, 0.1, 0.5, 0.5], dtype=np.float32)
BASE_TOP1 = np.array([0.3, 0.95, 0.3, 0.95, 0.6, 0.6], dtype=np.float32)


def fake_scorer(fork_h: float, lock_tail: float, seen: list | None = None):
    def score(prompts: list[str], completions: list[str]) -> list[dict[str, np.ndarray]]:
        if seen is not None:
            seen.extend(prompts)
        h = BASE_H.copy()
        h[[0, 2]] = fork_h
        tail = np.array([0.2, lock_tail, 0.2, lock_tail, 0.1, 0.1], dtype=np.float32)
        return [
            {
                "token_ids": np.arange(6, dtype=np.int32),
                "logprobs": np.full(6, -0.5, dtype=np.float32),
                "entropies": h,
                "tail_mass": tail,
                "top1": BASE_TOP1,
            }
            for _ in completions
        ]

    return score


def test_probe_metrics_on_round_zero_positions(tmp_path):
    store = healthy_run(tmp_path)
    seen: list[str] = []
    an.analyse_round(
        store,
        0,
        cfg(probe_samples=3),
        fake_scorer(2.0, 0.05, seen),
        render=lambda p: "R:" + p["name"],
    )
    assert seen == ["R:p0", "R:p1", "R:p2"]  # first sample of each problem first; render used
    m = {r["name"]: r["value"] for r in store.metrics("probe")}
    assert m["n_probe"] == 3 and m["n_fork"] == 6 and m["n_lock"] == 6
    assert m["fork_entropy"] == pytest.approx(2.0)
    assert m["lock_tail_mass"] == pytest.approx(0.05)
    assert m["kept_mass"] == pytest.approx(1 - np.mean([0.2, 0.05, 0.2, 0.05, 0.1, 0.1]))
    stats = store.probe_stats(0)
    assert len(stats) == 3
    sid = next(iter(stats))
    np.testing.assert_allclose(stats[sid]["entropies"], BASE_H)
    assert (stats[sid]["offsets"] == -1).all()
    an.analyse_round(store, 1, cfg(probe_samples=50), fake_scorer(1.8, 0.01))
    assert set(store.probe_stats(1)) == set(stats)  # the same probe set, whatever the cap now
    assert set(store.probe_series(sid)) == {0, 1}
    assert store.metric(1, "lock_tail_mass", "probe") == pytest.approx(0.01)


def test_fork_entropy_collapse_fires(tmp_path):
    store = healthy_run(tmp_path)
    an.analyse_round(store, 0, cfg(), fake_scorer(2.0, 0.05))
    warnings = an.analyse_round(store, 1, cfg(), fake_scorer(0.5, 0.05))
    assert [w["rule"] for w in warnings] == ["fork_entropy_collapse"]
    ev = warnings[0]["evidence"]
    assert ev["values"] == [pytest.approx(2.0), pytest.approx(0.5)]
    assert ev["drop"] == pytest.approx(0.75)
    assert ev["sample_ids"] and set(ev["problems"]) <= set(EVAL_PROBLEMS)


def test_fork_entropy_collapse_quiet_on_a_small_drop(tmp_path):
    store = healthy_run(tmp_path)
    an.analyse_round(store, 0, cfg(), fake_scorer(2.0, 0.05))
    assert an.analyse_round(store, 1, cfg(), fake_scorer(1.5, 0.01)) == []


def test_probe_skipped_without_round_zero_probe(tmp_path):
    store = healthy_run(tmp_path)
    an.analyse_round(store, 0, cfg(), None)
    calls: list[str] = []
    an.analyse_round(store, 1, cfg(), fake_scorer(2.0, 0.05, calls))
    assert calls == [] and store.metrics("probe") == []
    assert any("probe skipped" in e["message"] for e in store.events())


def test_classify_positions_lock_wins_over_fork():
    acfg = AnalysisSection(fork_entropy=1.0, lock_top1=0.9)
    got = an.classify_positions(
        np.array([2.0, 1.5, 0.1, 0.5]), np.array([0.3, 0.95, 0.99, 0.5]), acfg
    )
    assert got.tolist() == [an.FORK, an.LOCK, an.LOCK, 0]


# ---- temperature-only baseline -------------------------------------------------------------------------


def test_baseline_curve_and_comparison(tmp_path):
    store = healthy_run(tmp_path)  # round 0 at T_eval: 0.3 / 0.6
    set_pass(store, 0, 0.35, 0.55, t=0.4)
    set_pass(store, 0, 0.25, 0.7, t=1.2)
    curve = an.baseline_curve(store)
    assert [p["temperature"] for p in curve] == [0.4, T_EVAL, 1.2]
    assert curve[0] == {"temperature": 0.4, "pass@1": 0.35, "pass@5": 0.55}
    cmp = an.compare_baseline(store, cfg())
    assert cmp["baseline_temperature"] == 0.4 and cmp["baseline_pass@1"] == 0.35
    assert cmp["ssd_round"] == 2 and cmp["ssd_pass@1"] == pytest.approx(0.5)
    assert cmp["gain"] == pytest.approx(0.15)


def test_compare_baseline_needs_an_ssd_round(tmp_path):
    store = open_run(tmp_path)
    set_pass(store, 0, 0.3, 0.6)
    assert an.compare_baseline(store) is None


def test_round_summary_rows(tmp_path):
    store = healthy_run(tmp_path)
    for rnd in range(3):
        an.analyse_round(store, rnd, cfg())
    rows = an.round_summary(store, cfg())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["pass@1"] == pytest.approx(0.5)
    assert rows[1]["train n_samples"] == len(TRAIN_PROBLEMS)
    assert rows[0]["train n_samples"] is None


# ---- properties ------------------------------------------------------------------------------------

_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s != "len"
)
COUNT_LENGTHS = (
    "def f(xs):\n    total = 0\n    for x in xs:\n        total += len(x)\n    return total\n"
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_IDENT, min_size=4, max_size=4, unique=True))
def test_normalisation_ignores_any_consistent_renaming(names):
    fn, a, b, x = names
    prog = f"def {fn}({a}):\n    {b} = 0\n    for {x} in {a}:\n        {b} += len({x})\n    return {b}\n"
    assert an.normalize_program(prog) == an.normalize_program(COUNT_LENGTHS)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcd"), max_size=8), max_size=6), st.integers(1, 4))
def test_distinct_n_is_a_share(token_lists, n):
    v = an.distinct_n(token_lists, n)
    total = sum(max(0, len(t) - n + 1) for t in token_lists)
    assert (v is None) == (total == 0)
    if v is not None:
        assert 0 < v <= 1


def _loop_by_brute_force(tokens, min_repeats, min_tokens):
    best = None
    for p in range(1, min(an.MAX_PERIOD, len(tokens) // min_repeats) + 1):
        longest = current = 0
        for i in range(p, len(tokens)):
            current = current + 1 if tokens[i] == tokens[i - p] else 0
            longest = max(longest, current)
        span = longest + p
        if span // p >= min_repeats and span >= min_tokens and (best is None or span > best[0]):
            best = (span, p, span // p)
    return None if best is None else best[1:]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=80), st.integers(2, 4), st.integers(2, 20))
def test_find_loop_matches_brute_force(tokens, min_repeats, min_tokens):
    assert an.find_loop(tokens, min_repeats, min_tokens) == _loop_by_brute_force(
        tokens, min_repeats, min_tokens
    )
