"""Export of rounds and runs (ssd_tui.outputs.export): formats, consistency, round trips, bad input."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_tui.errors import SSDError
from ssd_tui.outputs import export as ex
from ssd_tui.outputs.export import (
    JSONL_FIELDS,
    META_KEYS,
    TABLES,
    default_out_name,
    export_info,
    export_run,
)
from ssd_tui.store.review import open_export
from ssd_tui.store.run_store import RunStore, SampleRow
from ssd_tui.store.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
T_TRAIN, T_EVAL = 1.1, 0.6


# ---- building real run databases ------------------------------------------------------------


def _problem(i: int, difficulty: str | None = "easy") -> SimpleNamespace:
    return SimpleNamespace(
        id=f"demo/{i}",
        prompt=f'def f{i}(x):\n    """Return x plus {i} — ünïcode ✓."""\n',
        tests=f"assert f{i}(1) == {1 + i}",
        entry_point=f"f{i}",
        difficulty=difficulty,
        source="demo",
    )


def _sample(
    rnd: int, purpose: str, pid: int, idx: int, temp: float, rng: np.random.Generator
) -> SampleRow:
    n = int(rng.integers(0, 6))  # 0 tokens: an engine without token statistics
    return SampleRow(
        round=rnd,
        purpose=purpose,
        problem_id=pid,
        sample_idx=idx,
        temperature=temp,
        top_k=20,
        top_p=0.95,
        min_p=0.0,
        completion=f"    return x + {idx}  # r{rnd} 'quote' \"dq\" \\ tab\t ✓\n",
        code=None if purpose == "train" else f"def f(x):\n    return x + {idx}\n",
        finish_reason="stop" if idx % 3 else "length",
        token_ids=rng.integers(0, 50_000, n).tolist(),
        logprobs=(-rng.random(n)).tolist(),
        entropies=rng.random(n).tolist(),
        tail_mass=(rng.random(n) / 10).tolist(),
    )


def build_run(path: Path, rounds: int = 2, n_train: int = 4, n_eval: int = 3, k: int = 3) -> Path:
    """A run database with rounds 0..rounds, written through RunStore like the pipeline does."""
    rng = np.random.default_rng(0)
    s = RunStore.open(path, create=True)
    s.init_run(
        "demo run", "tiny/model", '{"run": {"name": "demo run"}}', "[run]\n", str(path.parent)
    )
    s.log("run started")  # a run-wide event (round NULL)
    train_ids = s.add_problems("train", [_problem(i, None) for i in range(n_train)])
    eval_ids = s.add_problems(
        "eval", [_problem(100 + i, ("easy", "medium", "hard")[i % 3]) for i in range(n_eval)]
    )
    for rnd in range(rounds + 1):
        stages = ["evaluate", "analyse"] if rnd == 0 else ["sample", "train", "evaluate", "analyse"]
        s.plan_round(rnd, stages)
        for stage in stages:
            s.start_stage(rnd, stage, total=10, detail=f"{stage} r{rnd}")
            s.log(f"round {rnd}: {stage} started", rnd=rnd, stage=stage)
            if stage == "sample":
                s.add_samples(
                    [
                        _sample(rnd, "train", pid, j, T_TRAIN, rng)
                        for pid in train_ids.values()
                        for j in range(k)
                    ]
                )
            elif stage == "train":
                s.add_train_log(
                    rnd, [{"step": i + 1, "loss": 2.0 / (i + 1), "lr": 1e-4} for i in range(5)]
                )
                s.set_adapter(rnd, f"/runs/demo/adapters/round-{rnd}", f"{rnd:064x}")
            elif stage == "evaluate":
                s.add_samples(
                    [
                        _sample(rnd, "eval", pid, j, T_EVAL, rng)
                        for pid in eval_ids.values()
                        for j in range(k)
                    ]
                )
                verdicts = [
                    (
                        r["id"],
                        ("passed", "failed", "error", "timeout")[int(rng.integers(0, 4))],
                        "msg",
                        0.01,
                        "frames,trace" if i % 3 == 0 else None,  # the first in key order too
                    )
                    for i, r in enumerate(s.unjudged(rnd, T_EVAL))
                ]
                s.add_verdicts(verdicts)
                passed = sum(v[1] == "passed" for v in verdicts) / len(verdicts)
                s.set_metrics(
                    rnd,
                    "eval",
                    T_EVAL,
                    {"all": {"pass@1": passed, "pass@3": None}, "easy": {"pass@1": 0.5}},
                )
            elif stage == "analyse":
                s.set_metrics(rnd, "train", T_TRAIN, {"all": {"distinct_2": 0.1 * (rnd + 1)}})
                s.add_warning(
                    rnd, "low_diversity", f"round {rnd} looks collapsed", {"distinct_2": 0.1}
                )
            s.end_stage(rnd, stage, "done")
    s.close()
    return path


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("run") / "run.db")


def _dump(store: RunStore, rnd: int | None) -> dict:
    """Every number and text a reader of the round (or the run) can see."""
    c = store.conn

    def rows(sql: str, *args) -> list[dict]:
        return [dict(r) for r in c.execute(sql, args)]

    w = "" if rnd is None else " WHERE round = ?"
    a = () if rnd is None else (rnd,)
    samples = store.samples(rnd=rnd)
    return {
        "run": store.run_info(),
        "rounds": rows("SELECT * FROM rounds" + w + " ORDER BY round", *a),
        "stages": rows("SELECT * FROM stages" + w + " ORDER BY round, position", *a),
        "samples": samples,
        "token_stats": {
            s["id"]: {k: v.tolist() for k, v in store.token_stats(s["id"]).items()} for s in samples
        },
        "metrics": rows("SELECT * FROM metrics" + w + " ORDER BY round, purpose, name, scope", *a),
        "pass_counts": {r["round"]: store.pass_counts(r["round"], T_EVAL) for r in store.rounds()},
        "train_log": rows("SELECT * FROM train_log" + w + " ORDER BY round, step", *a),
        "events": rows("SELECT * FROM events" + w + " ORDER BY id", *a),
        "warnings": store.warnings(rnd),
    }


# ---- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_round_export_round_trip(run_db: Path, tmp_path: Path, compress: bool) -> None:
    out = export_run(run_db, tmp_path / "r1.db", round=1, compress=compress)
    assert out.name == ("r1.db.gz" if compress else "r1.db")
    src = RunStore.open(run_db, readonly=True)
    exp = open_export(out)
    try:
        want, got = _dump(src, 1), _dump(exp, None)
        got["pass_counts"] = {1: got["pass_counts"][1]}
        want["pass_counts"] = {1: want["pass_counts"][1]}
        assert got == want
        assert got["samples"] and got["token_stats"] and got["metrics"] and got["warnings"]
        assert {s["purpose"] for s in got["samples"]} == {"train", "eval"}
        # Only the round's rows, and only the problems its samples refer to.
        assert [r["round"] for r in exp.rounds()] == [1]
        assert {r["round"] for r in exp.conn.execute("SELECT round FROM samples")} == {1}
        referenced = {s["problem_id"] for s in got["samples"]}
        assert {p["id"] for p in exp.problems()} == referenced
        assert exp.problems() == [p for p in src.problems() if p["id"] in referenced]
        # The adapter's path and hash, and the export's facts.
        assert exp.rounds()[0]["adapter_sha256"] == f"{1:064x}"
        info = export_info(exp)
        assert info is not None and info.kind == "round" and info.round == 1
        assert info.source == str(run_db.resolve())
        assert exp.meta("schema_version") == str(SCHEMA_VERSION)
        assert export_info(src) is None
    finally:
        src.close()
        exp.close()


def test_whole_run_export_round_trip(run_db: Path, tmp_path: Path) -> None:
    out = export_run(run_db, tmp_path / "all.db")
    src, exp = RunStore.open(run_db, readonly=True), RunStore.open(out, readonly=True)
    try:
        assert _dump(exp, None) == _dump(src, None)
        assert exp.problems() == src.problems()
        info = export_info(exp)
        assert info is not None and info.kind == "run" and info.round is None
    finally:
        src.close()
        exp.close()


def test_export_is_one_plain_file(run_db: Path, tmp_path: Path) -> None:
    """Rollback-journal mode, no -wal/-shm: readable by sqlite3 from a read-only place."""
    for rnd in (None, 0):
        out = export_run(run_db, tmp_path, round=rnd)
        assert out.read_bytes()[18:20] == b"\x01\x01"  # not WAL
        conn = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo-run-all.db",
        "demo-run-all.metadata.json",
        "demo-run-round-0.db",
        "demo-run-round-0.metadata.json",
    ]


def test_default_names(run_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_out_name("demo run", 2) == "demo-run-round-2.db"
    assert default_out_name("a/b:c", None, jsonl=True, compress=True) == "a-b-c-all.jsonl.gz"
    assert default_out_name("...", 0) == "run-round-0.db"
    monkeypatch.chdir(tmp_path)
    assert export_run(run_db, round=2) == tmp_path / "demo-run-round-2.db"
    assert (
        export_run(run_db, round=2, jsonl=True, compress=True)
        == tmp_path / "demo-run-round-2.jsonl.gz"
    )
    # --out without .gz gets it when compressing; an existing folder gets the default name.
    assert export_run(run_db, tmp_path / "x.db", round=0, compress=True) == tmp_path / "x.db.gz"
    (tmp_path / "sub").mkdir()
    assert (
        export_run(run_db, tmp_path / "sub", compress=True)
        == tmp_path / "sub" / "demo-run-all.db.gz"
    )
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    for p in tmp_path.rglob("*.*"):  # readable by others as the umask allows, not 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_help_and_gitignore_know_where_default_exports_land(
    run_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import shutil
    import subprocess

    from ssd_tui import cli

    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in the current folder" in text and "beside the run DB" not in text
    monkeypatch.chdir(tmp_path)
    export_run(run_db, round=2)
    export_run(run_db, jsonl=True, compress=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 4 and all(p.parent == tmp_path for p in tmp_path.iterdir())
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in written:  # exports land in the checkout when run from there: not for git
        r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", name])
        assert r.returncode == 0, f"{name} is not in .gitignore"


# ---- documentation: one source, complete --------------------------------------------------------


def _schema_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


def test_every_column_is_described(run_db: Path, tmp_path: Path) -> None:
    fresh = RunStore.open(tmp_path / "fresh.db", create=True)  # SCHEMA and every migration
    schema = _schema_columns(fresh.conn)
    fresh.close()
    exported = _schema_columns(sqlite3.connect(export_run(run_db, tmp_path / "e.db", round=1)))
    assert set(exported) == set(schema) | {"descriptions"}
    for table, cols in exported.items():
        assert table in TABLES, f"table {table} has no description in export.TABLES"
        what, described = TABLES[table]
        assert what.strip()
        assert sorted(described) == sorted(cols), f"columns of {table} vs their descriptions"
        assert all(d.strip() for d in described.values())


def test_descriptions_table_and_datasette_metadata(run_db: Path, tmp_path: Path) -> None:
    out = export_run(run_db, tmp_path / "r2.db", round=2)
    conn = sqlite3.connect(out)
    docs = {(t, c): d for t, c, d in conn.execute("SELECT * FROM descriptions")}
    for table, (what, cols) in TABLES.items():
        assert docs[(table, "")] == what
        for col, d in cols.items():
            assert docs[(table, col)] == d
    meta = json.loads((tmp_path / "r2.metadata.json").read_text())
    db = meta["databases"]["r2"]  # Datasette names a database after its file's stem
    assert "round 2" in meta["title"] and "demo run" in meta["title"]
    assert str(run_db.resolve()) in db["description"]
    for table, cols in _schema_columns(conn).items():
        assert db["tables"][table]["description"] == TABLES[table][0]
        assert db["tables"][table]["columns"] == {c: TABLES[table][1][c] for c in cols}
    # Compressed: the metadata is named for the file that gunzip gives back.
    export_run(run_db, tmp_path / "r0.db.gz", round=0)
    assert "r0" in json.loads((tmp_path / "r0.metadata.json").read_text())["databases"]


def test_docs_are_generated_from_the_module() -> None:
    text = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    section = text.split(ex.DOCS_BEGIN, 1)[1].split(ex.DOCS_END, 1)[0]
    assert section.strip() == ex.docs_markdown().strip(), (
        "docs/export.md is stale: run `python -m ssd_tui.outputs.export docs/export.md`"
    )
    for key in META_KEYS:
        assert f"`{key}`" in section


# ---- JSONL ------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("compress", [False, True])
def test_jsonl_matches_the_store(run_db: Path, tmp_path: Path, compress: bool) -> None:
    out = export_run(run_db, tmp_path / "s.jsonl", round=1, jsonl=True, compress=compress)
    rows = _read_jsonl(out)
    src = RunStore.open(run_db, readonly=True)
    want = src.samples(rnd=1)
    problems = {p["id"]: p for p in src.problems()}
    src.close()
    assert len(rows) == len(want) > 0
    for r, s in zip(rows, want, strict=True):
        assert list(r) == list(JSONL_FIELDS)
        p = problems[s["problem_id"]]
        assert r["run"] == "demo run"
        assert (r["sample_id"], r["round"], r["purpose"], r["problem"], r["difficulty"]) == (
            s["id"],
            s["round"],
            s["purpose"],
            s["problem"],
            s["difficulty"],
        )
        assert (r["prompt"], r["problem_source"]) == (p["prompt"], p["source"])
        for k in (
            "completion",
            "code",
            "sample_idx",
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "n_tokens",
            "logprob_sum",
            "mean_entropy",
            "mean_tail_mass",
            "finish_reason",
        ):
            assert r[k] == s[k], k
        assert (r["verdict"], r["verdict_message"], r["verdict_duration_s"]) == (
            s["status"],
            s["message"],
            s["duration_s"],
        )
        assert r["verdict_suspect"] == s["suspect"]
    assert {r["verdict"] for r in rows if r["purpose"] == "train"} == {None}
    assert {r["verdict_suspect"] for r in rows} == {None, "frames,trace"}


def test_a_file_from_before_schema_3_exports_no_suspects(run_db: Path, tmp_path: Path) -> None:
    """A schema-2 run (no verdicts.suspect) still exports: verdict_suspect is null."""
    if sqlite3.sqlite_version_info < (3, 35):
        pytest.skip("ALTER TABLE DROP COLUMN needs SQLite 3.35")
    old = tmp_path / "old.db"
    src = RunStore.open(run_db, readonly=True)
    src.conn.backup(c := sqlite3.connect(old))
    src.close()
    c.execute("DROP INDEX verdicts_suspect")
    c.execute("ALTER TABLE verdicts DROP COLUMN suspect")
    c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    rows = _read_jsonl(export_run(old, tmp_path / "old.jsonl", round=1, jsonl=True))
    assert rows and {r["verdict_suspect"] for r in rows} == {None}
    assert {r["verdict"] for r in rows} - {None}  # the verdicts themselves are there


def test_jsonl_export_carries_the_run_record_beside_it(run_db: Path, tmp_path: Path) -> None:
    src = RunStore.open(run_db)
    src.set_meta("ssd_tui_version", "9.9.9-test")
    src.conn.execute(
        "INSERT INTO config_history (ts, event, config_toml, config_json, environment) "
        "VALUES (1.0, 'start', 'x = 1', '{}', '{}')"
    )
    src.conn.commit()
    src.close()
    out = export_run(run_db, tmp_path / "r1.jsonl.gz", round=1, jsonl=True, compress=True)
    doc = json.loads((tmp_path / "r1.record.json").read_text())
    assert out.name == "r1.jsonl.gz" and doc["run"] == "demo run"
    assert doc["record"]["ssd_tui_version"] == "9.9.9-test"
    assert [h["event"] for h in doc["config_history"]] == ["start"]
    assert doc["schema_version"] == str(SCHEMA_VERSION)


def test_jsonl_whole_run_and_non_finite_numbers(tmp_path: Path) -> None:
    db = build_run(tmp_path / "run.db", rounds=1)
    s = RunStore.open(db)
    s.conn.execute("UPDATE samples SET logprob_sum = -9e999, mean_entropy = NULL WHERE id = 1")
    s.conn.commit()
    s.close()
    out = export_run(db, tmp_path / "all.jsonl", jsonl=True)
    text = out.read_text(encoding="utf-8")
    assert "Infinity" not in text and "NaN" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert {r["round"] for r in rows} == {0, 1}
    first = next(r for r in rows if r["sample_id"] == 1)
    assert first["logprob_sum"] is None and first["mean_entropy"] is None


def test_jsonl_loads_with_datasets(run_db: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    for name in ("d.jsonl", "d.jsonl.gz"):
        out = export_run(run_db, tmp_path / name, jsonl=True, compress=name.endswith(".gz"))
        ds = datasets.load_dataset(
            "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache")
        )
        want = _read_jsonl(out)
        assert ds.num_rows == len(want)
        assert ds.column_names == list(JSONL_FIELDS)
        assert ds[0] == want[0] and ds[-1] == want[-1]
        assert ds.filter(lambda r: r["verdict"] == "passed").num_rows == sum(
            r["verdict"] == "passed" for r in want
        )


def _late_failures_run(db: Path) -> Path:
    """Eval samples whose first (key-order) verdicts all pass with no message; failures later."""
    rng = np.random.default_rng(2)
    s = RunStore.open(db, create=True)
    s.init_run("late", "m", "{}", "", "")
    s.plan_round(1, ["sample", "evaluate"])
    ev = s.add_problems("eval", [_problem(i) for i in range(10)])
    tr = s.add_problems("train", [_problem(i, None) for i in range(3)])
    s.add_samples(
        [_sample(1, "eval", pid, j, T_EVAL, rng) for pid in ev.values() for j in range(5)]
    )
    s.add_samples(
        [_sample(1, "train", pid, j, T_TRAIN, rng) for pid in tr.values() for j in range(5)]
    )
    late = {ev["demo/8"], ev["demo/9"]}
    s.add_verdicts(
        (r["id"], "failed", "AssertionError: f(1) == 9", 0.02)
        if r["problem_id"] in late
        else (r["id"], "passed", None, 0.01)
        for r in s.unjudged(1, T_EVAL)
    )
    s.close()
    return db


def test_jsonl_first_lines_carry_every_type(tmp_path: Path) -> None:
    """A field null in the first lines but set later must still load (type inference)."""
    db = _late_failures_run(tmp_path / "run.db")
    rows = _read_jsonl(export_run(db, tmp_path / "x.jsonl", round=1, jsonl=True))
    src = RunStore.open(db, readonly=True)
    keyed = [s["id"] for s in src.samples(rnd=1)]
    src.close()
    assert sorted(r["sample_id"] for r in rows) == sorted(keyed)
    # The first line in key order has passed (message null): one failure is moved ahead,
    # and everything else stays in key order.
    assert rows[0]["verdict_message"] is not None and rows[1]["verdict"] == "passed"
    assert [r["sample_id"] for r in rows[1:]] == [i for i in keyed if i != rows[0]["sample_id"]]
    for field in JSONL_FIELDS:
        if any(r[field] is not None for r in rows):
            assert any(r[field] is not None for r in rows[:2]), field


def test_jsonl_loads_with_datasets_in_small_chunks(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    db = _late_failures_run(tmp_path / "run.db")
    out = export_run(db, tmp_path / "x.jsonl", round=1, jsonl=True)
    # chunksize: bytes per chunk; the first chunk's types become the dataset's features.
    ds = datasets.load_dataset(
        "json", data_files=str(out), split="train", chunksize=1024, cache_dir=str(tmp_path / "c")
    )
    rows = _read_jsonl(out)
    assert ds.num_rows == len(rows)
    assert ds["verdict_message"] == [r["verdict_message"] for r in rows]
    assert ds["code"] == [r["code"] for r in rows]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=4), name=_TEXT)
def test_any_text_survives_both_formats(texts: list[str], name: str) -> None:
    """Completions with NUL, newlines, quotes, U+2028, emoji ...: exact in .db and .jsonl."""
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "run.db"
        s = RunStore.open(db, create=True)
        s.init_run(name, "m", "{}", "", "")
        s.plan_round(1, ["sample"])
        pid = s.add_problems("train", [_problem(0)])["demo/0"]
        s.add_samples(
            [
                SampleRow(1, "train", pid, i, T_TRAIN, 0, 1.0, 0.0, t, t, "stop", [], [], [], [])
                for i, t in enumerate(texts)
            ]
        )
        s.close()
        rows = _read_jsonl(export_run(db, Path(d) / "x.jsonl", round=1, jsonl=True))
        assert [r["completion"] for r in rows] == texts
        assert [r["code"] for r in rows] == texts
        assert {r["run"] for r in rows} == {name}
        exp = open_export(export_run(db, Path(d) / "x.db", round=1, compress=True))
        assert [r["completion"] for r in exp.samples(rnd=1)] == texts
        assert exp.run_info()["name"] == name
        exp.close()


# ---- consistency with a live writer ------------------------------------------------------------


def test_export_while_the_engine_writes(tmp_path: Path) -> None:
    """Every export of a run being written is one committed state: whole batches only."""
    db = tmp_path / "live.db"
    batch = 25
    s = RunStore.open(db, create=True)
    s.init_run("live", "m", "{}", "", "")
    s.plan_round(1, ["sample"])
    pid = s.add_problems("train", [_problem(0)])["demo/0"]
    s.close()
    stop = threading.Event()
    batches = [0]

    def writer() -> None:
        w = RunStore.open(db)
        rng = np.random.default_rng(1)
        i = 0
        while not stop.is_set() and i < 4000:
            rows = [_sample(1, "train", pid, i + j, T_TRAIN, rng) for j in range(batch)]
            w.add_samples(rows)
            i += batch
            batches[0] += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 8
        n = 0
        while (len(set(seen)) < 4 or n < 9) and time.monotonic() < deadline:
            kind = n % 3
            n += 1
            if kind == 2:
                rows = _read_jsonl(export_run(db, tmp_path / "l.jsonl", round=1, jsonl=True))
                assert len(rows) % batch == 0
                seen.append(len(rows))
                continue
            out = export_run(db, tmp_path / "l.db", round=1 if kind == 0 else None)
            c = sqlite3.connect(out)
            count = c.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            assert count % batch == 0
            assert c.execute("SELECT COUNT(*) FROM token_stats").fetchone()[0] == count
            assert (
                c.execute(
                    "SELECT COUNT(*) FROM samples s LEFT JOIN token_stats t ON t.sample_id = s.id "
                    "WHERE t.sample_id IS NULL"
                ).fetchone()[0]
                == 0
            )
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            c.close()
            seen.append(count)
    finally:
        stop.set()
        t.join()
    print("sample counts seen by successive exports:", seen)
    assert seen == sorted(seen)  # later exports never see less
    assert len({x for x in seen if x > 0}) >= 2, f"the writer never ran during exports: {seen}"


# ---- bad input --------------------------------------------------------------------------------


def _err(fn, *a, **kw) -> str:
    with pytest.raises(SSDError) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_bad_sources(run_db: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello, I am not a database\n" * 100)
    assert "not an SQLite database" in _err(export_run, text, tmp_path / "o.db", round=0)

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(run_db.read_bytes()[:4096])
    assert "truncated or damaged" in _err(export_run, truncated, tmp_path / "o.db", round=0)

    newer = tmp_path / "newer.db"
    newer.write_bytes(run_db.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    assert "newer ssd-tui" in _err(export_run, newer, tmp_path / "o.db")

    assert "not found" in _err(export_run, tmp_path / "missing.db", tmp_path / "o.db")
    assert "folder" in _err(export_run, tmp_path, tmp_path / "o.db")
    assert "no round 7 (its rounds: 0, 1, 2)" in _err(
        export_run, run_db, tmp_path / "o.db", round=7
    )
    assert "overwrite the source" in _err(export_run, run_db, run_db, round=1)
    assert not (tmp_path / "o.db").exists()


def test_truncated_late_is_caught(run_db: Path, tmp_path: Path) -> None:
    """A file cut short after its first pages opens fine; reading the rest must still fail."""
    data = run_db.read_bytes()
    bad = tmp_path / "cut.db"
    for keep in (0.66, 0.99):  # 0.99: only the last page is cut; the backup copies it fine
        bad.write_bytes(data[: int(len(data) * keep)])
        for kw in ({"round": 1}, {}, {"jsonl": True}):
            assert "truncated or damaged" in _err(export_run, bad, tmp_path / "o.out", **kw)
    assert not (tmp_path / "o.out").exists()


def test_round_of_an_empty_run(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    RunStore.open(db, create=True).close()
    assert "no rounds yet" in _err(export_run, db, tmp_path / "o.db", round=0)


def test_open_export_bad_files(run_db: Path, tmp_path: Path) -> None:
    gz = export_run(run_db, tmp_path / "ok.db", round=1, compress=True)
    cut = tmp_path / "cut.db.gz"
    cut.write_bytes(gz.read_bytes()[:200])
    assert "damaged gzip" in _err(open_export, cut)
    notdb = tmp_path / "text.db.gz"
    with gzip.open(notdb, "wt") as f:
        f.write("not a database")
    msg = _err(open_export, notdb)
    assert "not an SQLite database" in msg and str(notdb) in msg
    assert "not found" in _err(open_export, tmp_path / "nope.db.gz")


def test_open_export_removes_its_temporary_copy(run_db: Path, tmp_path: Path) -> None:
    gz = export_run(run_db, tmp_path / "ok.db", round=1, compress=True)
    store = open_export(gz)
    tmp = store.path
    assert tmp.exists() and tmp != gz
    assert store.count_samples(1, "eval") > 0
    store.close()
    assert not tmp.parent.exists()
    # Exporting from a compressed export works too (e.g. one round out of a shared run).
    all_gz = export_run(run_db, tmp_path / "all.db", compress=True)
    one = RunStore.open(export_run(all_gz, tmp_path / "one.db", round=2), readonly=True)
    assert [r["round"] for r in one.rounds()] == [2] and one.count_samples(2, "train") > 0
    assert export_info(one).source == str(all_gz.resolve())
    one.close()
