"""The run database: schema version, idempotent writes, bad files, concurrent readers."""

import hashlib
import json
import shutil
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ssd_tui.errors import SSDError
from ssd_tui.store import schema
from ssd_tui.store.run_store import RunStore, SampleRow
from ssd_tui.store.schema import SCHEMA_VERSION


def _problem(name):
    return SimpleNamespace(
        id=name,
        prompt=f"def {name}():\n",
        tests="def check(c): pass",
        entry_point=name,
        difficulty="easy",
        source="t",
    )


def _row(pid, idx, text="x = 1\n", rnd=0, purpose="eval", t=0.8):
    return SampleRow(
        rnd,
        purpose,
        pid,
        idx,
        t,
        0,
        1.0,
        0.0,
        text,
        text,
        "stop",
        [1, 2, 3],
        [-0.5, -1.0, -0.25],
        [1.0, 2.0, 0.5],
        [0.0, 0.1, 0.2],
    )


@pytest.fixture
def store(tmp_path):
    s = RunStore.open(tmp_path / "run.db", create=True)
    yield s
    s.close()


def test_new_db_is_wal_with_foreign_keys_and_version(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.meta("schema_version") == str(SCHEMA_VERSION)
    with pytest.raises(sqlite3.IntegrityError):  # a sample needs its problem
        store.add_samples([_row(999, 0)])


def test_samples_are_written_once_with_token_stats(store):
    ids = store.add_problems("eval", [_problem("a"), _problem("b")])
    assert store.add_problems("eval", [_problem("a")]) == ids  # idempotent
    rows = [_row(ids["a"], 0), _row(ids["a"], 1), _row(ids["b"], 0)]
    assert store.add_samples(rows) == 3
    assert store.add_samples(rows) == 0  # a replayed batch duplicates nothing
    assert store.count_samples(0, "eval") == 3
    s = store.samples(0, "eval")[0]
    assert s["n_tokens"] == 3
    assert s["logprob_sum"] == pytest.approx(-1.75)
    assert s["mean_entropy"] == pytest.approx(3.5 / 3)
    stats = store.token_stats(s["id"])
    assert stats["token_ids"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(stats["tail_mass"], [0.0, 0.1, 0.2], rtol=1e-6)
    assert store.sample_keys(0, "eval", 0.8) == {(ids["a"], 0), (ids["a"], 1), (ids["b"], 0)}
    assert store.sample_keys(0, "eval", 0.5) == set()


def test_samples_pages_match_the_full_list(store):
    ids = store.add_problems("eval", [_problem("a"), _problem("b"), _problem("c")])
    rows = [
        _row(ids[n], j, rnd=r, t=t)
        for r in (0, 1)
        for t in (0.8, 0.2)
        for n in "cba"
        for j in (1, 0)
    ]
    store.add_samples(rows[::-1])  # inserted out of key order
    todo = store.unjudged(0, 0.8)
    store.add_verdicts([(todo[0]["id"], "passed", "", 0.1)])
    for filters in (
        {},
        {"rnd": 1},
        {"rnd": 0, "purpose": "eval", "temperature": 0.8},
        {"problem_id": ids["b"]},
    ):
        full = store.samples(**filters)
        assert full and [
            (r["round"], r["temperature"], r["problem_id"], r["sample_idx"]) for r in full
        ] == sorted((r["round"], r["temperature"], r["problem_id"], r["sample_idx"]) for r in full)
        for limit in (1, 5, 100):
            pages = [
                store.samples(**filters, limit=limit, offset=o)
                for o in range(0, len(full) + limit, limit)
            ]
            assert [r for page in pages for r in page] == full
            assert all(len(page) <= limit for page in pages) and pages[-1] == []
    assert sum(r["status"] == "passed" for r in store.samples(limit=100)) == 1


def test_verdicts_and_pass_counts(store):
    ids = store.add_problems("eval", [_problem("a"), _problem("b")])
    store.add_samples([_row(ids["a"], 0), _row(ids["a"], 1), _row(ids["b"], 0)])
    todo = store.unjudged(0, 0.8)
    assert len(todo) == 3
    store.add_verdicts(
        [(todo[0]["id"], "passed", "", 0.1), (todo[1]["id"], "failed", "AssertionError", 0.1)]
    )
    assert [r["id"] for r in store.unjudged(0, 0.8)] == [todo[2]["id"]]
    store.add_verdicts([(todo[2]["id"], "timeout", "", 5.0)])
    assert store.pass_counts(0, 0.8) == [("a", "easy", 2, 1), ("b", "easy", 1, 0)]


def test_stage_time_accumulates_over_resumes_and_round_closes(store):
    store.plan_round(1, ["sample", "train"])
    store.plan_round(1, ["sample", "train"])  # idempotent
    assert [s["stage"] for s in store.stages(1)] == ["sample", "train"]
    store.start_stage(1, "sample", 10)
    store.end_stage(1, "sample", "stopped")
    first = store.stage(1, "sample")["seconds"]
    store.start_stage(1, "sample", 10)
    store.end_stage(1, "sample", "done")
    assert store.stage(1, "sample")["seconds"] >= first
    assert store.rounds()[0]["status"] == "running"
    store.start_stage(1, "train", 1)
    store.end_stage(1, "train", "done")
    assert store.rounds()[0]["status"] == "done"


def test_metrics_and_warnings_replace_by_key(store):
    store.set_metrics(0, "eval", 0.8, {"all": {"pass@1": 0.25}, "hard": {"pass@1": 0.0}})
    store.set_metrics(0, "eval", 0.8, {"all": {"pass@1": 0.5}})
    assert store.metric(0, "pass@1") == 0.5
    assert store.metric(0, "pass@1", scope="hard") == 0.0
    store.add_warning(1, "unique_share", "low", {"value": 0.1})
    store.add_warning(1, "unique_share", "lower", {"value": 0.05})
    w = store.warnings(1)
    assert len(w) == 1 and w[0]["evidence"] == {"value": 0.05}


def test_newer_schema_is_refused(tmp_path):
    s = RunStore.open(tmp_path / "r.db", create=True)
    s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    s.close()
    with pytest.raises(SSDError, match="newer ssd-tui"):
        RunStore.open(tmp_path / "r.db")


def test_older_schema_is_upgraded_on_a_writable_open_only(tmp_path, monkeypatch):
    s = RunStore.open(tmp_path / "r.db", create=True)
    s.set_meta("schema_version", "1")
    s.close()
    monkeypatch.setitem(
        schema.MIGRATIONS,
        SCHEMA_VERSION,
        [
            "CREATE TABLE IF NOT EXISTS added (x INTEGER)",
            "ALTER TABLE rounds ADD COLUMN note TEXT",
        ],
    )
    ro = RunStore.open(tmp_path / "r.db", readonly=True)
    assert ro.meta("schema_version") == "1"
    ro.close()
    for _ in range(2):  # a second open finds nothing left to do
        s = RunStore.open(tmp_path / "r.db")
        assert s.meta("schema_version") == str(SCHEMA_VERSION)
        cols = {r[1] for r in s.conn.execute("PRAGMA table_info(rounds)")}
        assert "note" in cols
        assert s.conn.execute("SELECT count(*) FROM added").fetchone()[0] == 0
        s.set_meta("schema_version", "1")
        s.close()


@pytest.mark.parametrize(
    "content, match",
    [(b"hello, not a database" * 10, "not an SQLite database"), (None, "run database not found")],
)
def test_bad_files_are_one_line_errors(tmp_path, content, match):
    p = tmp_path / "x.db"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(SSDError, match=match):
        RunStore.open(p)


def test_truncated_db_is_a_clear_error(tmp_path):
    s = RunStore.open(tmp_path / "r.db", create=True)
    ids = s.add_problems("eval", [_problem(f"p{i}") for i in range(300)])
    s.add_samples([_row(i, 0, "y" * 500) for i in ids.values()])
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = (tmp_path / "r.db").read_bytes()
    (tmp_path / "t.db").write_bytes(data[:4096])
    with pytest.raises(SSDError) as e:
        t = RunStore.open(tmp_path / "t.db")
        t.samples()  # may open, but reading must fail clearly
    assert "t.db" in str(e.value)


def test_reader_sees_whole_batches_while_a_writer_writes(tmp_path):
    path = tmp_path / "r.db"
    w = RunStore.open(path, create=True)
    ids = list(w.add_problems("eval", [_problem(f"p{i}") for i in range(20)]).values())
    reader = RunStore.open(path, readonly=True)
    batch = 10
    stop = threading.Event()

    def write():
        for b in range(30):
            w.add_samples([_row(ids[i % 20], b * batch + i) for i in range(batch)])
        stop.set()

    t = threading.Thread(target=write)
    t.start()
    seen = []
    while not stop.is_set():
        seen.append(reader.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    t.join()
    assert all(n % batch == 0 for n in seen)
    assert reader.count_samples(0, "eval") == 300


def test_verdicts_carry_suspect_reasons(store):
    ids = store.add_problems("eval", [_problem("a")])
    store.add_samples([_row(ids["a"], j) for j in range(3)])
    todo = store.unjudged(0, 0.8)
    store.add_verdicts(
        [
            (todo[0]["id"], "passed", "", 0.1, "frames,trace"),
            (todo[1]["id"], "failed", "AssertionError", 0.1, ""),  # "" is stored as clean
            (todo[2]["id"], "passed", "", 0.1),  # the old 4-tuple still works
        ]
    )
    assert [s["suspect"] for s in store.samples(0, "eval")] == ["frames,trace", None, None]
    plan = " ".join(
        r[3]
        for r in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM verdicts WHERE suspect IS NOT NULL"
        )
    )
    assert "verdicts_suspect" in plan  # the partial index serves the suspect counts


def _schema2_db(path):
    """A run database as schema 2 wrote it: SCHEMA, then the steps up to 2, one verdict."""
    c = sqlite3.connect(path)
    for stmt in schema.SCHEMA.split(";\n"):
        if stmt.strip():
            c.execute(stmt)
    for stmt in schema.MIGRATIONS[2]:
        c.execute(stmt)
    c.execute("INSERT INTO meta VALUES ('schema_version', '2'), ('created_at', '0')")
    c.execute("INSERT INTO problems (purpose, name, prompt) VALUES ('eval', 'a', 'def a():\n')")
    for j in (0, 1):
        c.execute(
            "INSERT INTO samples (round, purpose, problem_id, sample_idx, temperature, top_k, "
            "top_p, min_p, completion, code, n_tokens, created_at) "
            "VALUES (0, 'eval', 1, ?, 0.8, 0, 1.0, 0.0, 'x', 'x', 1, 0)",
            (j,),
        )
    c.execute("INSERT INTO verdicts VALUES (1, 'passed', '', 0.1)")  # as add_verdicts did
    c.commit()
    assert "suspect" not in {r[1] for r in c.execute("PRAGMA table_info(verdicts)")}
    c.close()


def test_schema2_file_reads_as_not_suspect_and_migrates(tmp_path):
    path = tmp_path / "v2.db"
    _schema2_db(path)
    ro = RunStore.open(path, readonly=True)  # read-only: left as it is, read all the same
    assert not ro.has_column("verdicts", "suspect") and ro.meta("schema_version") == "2"
    assert [(s["status"], s["suspect"]) for s in ro.samples()] == [("passed", None), (None, None)]
    ro.close()
    s = RunStore.open(path)  # writable: migrated to the current schema
    assert s.meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert s.has_column("verdicts", "suspect")
    s.add_verdicts([(2, "failed", "AssertionError", 0.2, "gc")])
    assert [(r["status"], r["suspect"]) for r in s.samples()] == [
        ("passed", None),
        ("failed", "gc"),
    ]
    s.close()
    s = RunStore.open(path)  # a second open has nothing left to do
    assert s.meta("schema_version") == "7"
    s.close()


# A run database written by schema-3 ssd-tui (the synthetic run, analysed with a fake probe,
# two notes and two tags; the commit that added it says how it was made).
SCHEMA3_DB = Path(__file__).parent / "fixtures" / "schema3_run.db"


# Columns later schemas add to old tables: a migrated file has them empty (NULL).
_LATER_COLUMNS = {"base_path", "source_round", "reused_from"}  # schema 5


def _old_columns(rows):
    """Rows without the columns later schemas added, checking those are empty."""
    assert all(r.get(k) is None for r in rows for k in _LATER_COLUMNS)
    return [{k: v for k, v in r.items() if k not in _LATER_COLUMNS} for r in rows]


def _reads(store):
    """A digest of what the store reads back from a run, for comparing two opens of it."""

    def h(x):
        return hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:16]

    probe = {
        r: {sid: {k: v.tolist() for k, v in d.items()} for sid, d in store.probe_stats(r).items()}
        for r in range(3)
    }
    return {
        "samples": h(store.samples()),
        "metrics": h(store.metrics()),
        "warnings": h(store.warnings()),
        "notes": h(store.notes()),
        "tags": h(store.tags(all_rounds=True)),
        "stages": h(_old_columns(store.stages())),
        "rounds": h(_old_columns(store.rounds())),
        "events": h(store.events()),
        "run": h(store.run_info()),
        "problems": h(store.problems()),
        "probe": h(probe),
        "token_stats_7": h({k: v.tolist() for k, v in store.token_stats(7).items()}),
    }


# What schema-3 ssd-tui read from SCHEMA3_DB (the same digest, computed with that code).
SCHEMA3_READS = {
    "samples": "524a9836b8454453",
    "metrics": "b25cd040a477c515",
    "warnings": "fb5b996525c98c11",
    "notes": "bd54c5c10c8e7327",
    "tags": "8fe6bf18463d43c2",
    "stages": "7d4a1b198dba7f14",
    "rounds": "b534d81a9d348962",
    "events": "784ecc3f05a0c468",
    "run": "48e5f6c262c8b063",
    "problems": "ba2dc51fe9adc00d",
    "probe": "b723e8c7c1d95122",
    "token_stats_7": "8029e2ea3b60b80e",
}


def _tables(conn):
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_schema3_file_reads_as_before_and_migrates(tmp_path):
    path = tmp_path / "run.db"
    shutil.copyfile(SCHEMA3_DB, path)
    ro = RunStore.open(path, readonly=True)  # read-only: left at schema 3, read all the same
    assert ro.meta("schema_version") == "3"
    assert _reads(ro) == SCHEMA3_READS
    ro.close()
    s = RunStore.open(path)  # writable: migrated
    assert s.meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert {"probe_stats", "notes", "tags", "config_history"} <= _tables(s.conn)
    assert {k for k, _ in schema.PROBE_BLOBS} <= schema.columns(s.conn, "probe_stats")
    assert _reads(s) == SCHEMA3_READS  # every old row reads back as before
    assert len(s.probe_stats(1)) == 24 and set(s.probe_series(min(s.probe_stats(0)))) == {0, 1, 2}
    s.add_note("after the migration", 2)  # and it is written to as usual
    s.close()
    s = RunStore.open(path)  # a second open has nothing left to do
    assert s.meta("schema_version") == "7" and len(s.notes()) == 3
    s.close()


def _schema4_copy(path):
    """SCHEMA3_DB as schema-4 ssd-tui left it after its writable open: migration 4 only."""
    shutil.copyfile(SCHEMA3_DB, path)
    c = sqlite3.connect(path)
    for stmt in schema.MIGRATIONS[4]:
        m = schema._ADD_COLUMN.match(stmt)
        if not (m and m[2] in schema.columns(c, m[1])):
            c.execute(stmt)
    c.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    c.commit()
    c.close()


def test_a_schema4_file_reads_as_before_and_migrates_to_5(tmp_path):
    """Schema 5 (rounds you can steer): each round's base weights and source round, a
    stage's reused_from, the [control] decisions and the training sets. A schema-4 file
    reads the same read-only (none of them: no decisions, no training sets), and a
    writable open adds them, empty, every old row unchanged."""
    path = tmp_path / "run.db"
    _schema4_copy(path)
    ro = RunStore.open(path, readonly=True)
    assert ro.meta("schema_version") == "4"
    assert _reads(ro) == SCHEMA3_READS
    assert ro.decisions() == [] and ro.train_set(1) == {}
    assert "base_path" not in ro.rounds()[0]  # the reader copes with what the file lacks
    ro.close()
    s = RunStore.open(path)
    assert s.meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert {"decisions", "train_sets"} <= _tables(s.conn)
    assert {"base_path", "source_round"} <= schema.columns(s.conn, "rounds")
    assert "reused_from" in schema.columns(s.conn, "stages")
    assert _reads(s) == SCHEMA3_READS  # the new columns are NULL, every old value as before
    # and the new tables are written to as the pipeline writes them
    ids = [r["id"] for r in s.samples(1, "train")][:3]
    s.set_train_set(2, ids)
    assert s.train_set(2) == dict.fromkeys(ids, 1)
    d = s.add_decision(2, "rollback", "on_collapse", 1, "round 2: back to 1", {"best_round": 1})
    assert d["next_source"] == 1 and d["evidence"] == {"best_round": 1}
    again = s.add_decision(2, "stop", None, None, "other", {})  # stored once: the first stays
    assert again["action"] == "rollback"
    assert [e["message"] for e in s.events() if e["stage"] == "control"] == ["round 2: back to 1"]
    s.set_round_base(2, "merged/round-001")
    s.set_round_source(2, 1)
    assert (s.rounds()[2]["base_path"], s.rounds()[2]["source_round"]) == ("merged/round-001", 1)
    s.close()
    s = RunStore.open(path)  # a second open has nothing left to do
    assert s.meta("schema_version") == "7" and len(s.decisions()) == 1
    s.close()


def _schema5_copy(path):
    """SCHEMA3_DB as schema-5 ssd-tui left it after its writable open: migrations 4 and 5."""
    _schema4_copy(path)
    c = sqlite3.connect(path)
    for stmt in schema.MIGRATIONS[5]:
        m = schema._ADD_COLUMN.match(stmt)
        if not (m and m[2] in schema.columns(c, m[1])):
            c.execute(stmt)
    c.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    c.commit()
    c.close()


def test_a_schema5_file_reads_as_before_and_migrates_with_the_behaviours_table(tmp_path):
    """Schema 6: the behaviours table (behavioural diversity, docs/analysis.md). A schema-5
    file reads the same read-only, with no behaviours, and a writable open adds the table,
    empty, every old row unchanged; the analysis then writes and reads it as usual."""
    path = tmp_path / "run.db"
    _schema5_copy(path)
    ro = RunStore.open(path, readonly=True)
    assert ro.meta("schema_version") == "5"
    assert _reads(ro) == SCHEMA3_READS
    assert ro.behaviours() == {} and ro.known_behaviours(1) == {}
    ro.close()
    s = RunStore.open(path)
    assert s.meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert "behaviours" in _tables(s.conn) and s.behaviours() == {}
    assert _reads(s) == SCHEMA3_READS
    rows = s.samples(0, "eval")[:2]
    a, b = rows[0]["id"], rows[1]["id"]
    s.add_behaviours(
        [(a, "prog-a", "rec:1", "n1", 1, 1, 0.01), (b, "prog-a", "rec:1", "n1", 1, 0, 0.01)]
    )
    got = s.behaviours(0, rows[0]["temperature"])
    assert {sid: x["class"] for sid, x in got.items()} == {a: "rec:1", b: "rec:1"}
    assert s.known_behaviours(1) == {(rows[0]["problem_id"], "prog-a"): ("rec:1", "n1", 0.01)}
    assert s.known_behaviours(2) == {}  # another recorder's classes never compare
    s.close()
    s = RunStore.open(path)  # a second open has nothing left to do
    assert s.meta("schema_version") == "7" and len(s.behaviours()) == 2
    s.close()


def test_a_schema5_file_reads_as_before_and_migrates_with_the_probes_extras(tmp_path):
    """Schema 7 (the probe's extras beside a sample's token statistics: top-1 and the
    training truncation's tail, recorded as round 0's samples are scored). A schema-5 file
    reads the same read-only (no sample has them, so round 0's probe scores every sample),
    and a writable open adds the columns, NULL, every old row unchanged; new samples and
    the exact-statistics pass write them."""
    path = tmp_path / "run.db"
    _schema5_copy(path)
    ro = RunStore.open(path, readonly=True)
    assert ro.meta("schema_version") == "5"
    assert _reads(ro) == SCHEMA3_READS
    assert ro.probe_ready_samples(0, "eval", 0.8) == []
    assert "top1" not in ro.token_stats(7)
    ro.close()
    s = RunStore.open(path)
    assert s.meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert {"top1", "train_tail_mass"} <= schema.columns(s.conn, "token_stats")
    assert _reads(s) == SCHEMA3_READS  # the new columns are NULL, every old value as before
    assert s.probe_ready_samples(0, "eval", 0.8) == []
    pid = s.add_problems("eval", [_problem("new")])["new"]
    row = _row(pid, 0, rnd=9)
    row.top1, row.train_tail_mass = [0.9, 0.8, 0.7], [0.0, 0.05, 0.1]
    assert s.add_samples([row, _row(pid, 1, rnd=9)]) == 2
    [ready] = s.probe_ready_samples(9, "eval", 0.8)
    np.testing.assert_array_equal(ready["token_ids"], [1, 2, 3])
    np.testing.assert_allclose(ready["top1"], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(ready["train_tail_mass"], [0.0, 0.05, 0.1])
    np.testing.assert_allclose(s.token_stats(ready["id"])["top1"], [0.9, 0.8, 0.7])
    # the exact-statistics pass (vLLM's samples) writes them too, and only them it was given
    blank = _row(pid, 2, rnd=9)
    blank.logprobs, blank.entropies, blank.tail_mass = [-0.5, -1.0, -0.25], [], []
    s.add_samples([blank])
    sid = [r["id"] for r in s.samples(9) if r["sample_idx"] == 2][0]
    extras = ([0.5, 0.6, 0.7], [0.1, 0.2, 0.3])
    assert s.set_token_stats([(sid, [-1.0] * 3, [1.0] * 3, [0.0] * 3, *extras)]) == 1
    assert [r["id"] for r in s.probe_ready_samples(9, "eval", 0.8)] == [ready["id"], sid]
    s.conn.execute("UPDATE samples SET mean_entropy = NULL WHERE id = ?", (sid,))
    s.conn.commit()
    with pytest.raises(ValueError, match="do not match"):  # an extra of the wrong length
        s.set_token_stats([(sid, [-1.0] * 3, [1.0] * 3, [0.0] * 3, [0.5], [0.1])])
    s.close()
    s = RunStore.open(path)  # a second open has nothing left to do
    # the sample set back to "not yet scored" does not count as ready
    assert s.meta("schema_version") == "7" and len(s.probe_ready_samples(9, "eval", 0.8)) == 1
    s.close()


def test_migration_4_creates_the_probe_table_and_its_late_column(tmp_path):
    """A schema-3 run analysed without a model has no probe_stats; one probed before the
    KeptMass column has it without train_tail_mass: both get the whole table."""
    if sqlite3.sqlite_version_info < (3, 35):
        pytest.skip("ALTER TABLE DROP COLUMN needs SQLite 3.35")
    for drop in ("DROP TABLE probe_stats", "ALTER TABLE probe_stats DROP COLUMN train_tail_mass"):
        path = tmp_path / f"{len(drop)}.db"
        shutil.copyfile(SCHEMA3_DB, path)
        c = sqlite3.connect(path)
        c.execute(drop)
        c.commit()
        c.close()
        ro = RunStore.open(path, readonly=True)  # left as it is, read all the same
        assert all("train_tail_mass" not in arrays for arrays in ro.probe_stats(0).values())
        ro.close()
        s = RunStore.open(path)
        assert "train_tail_mass" in schema.columns(s.conn, "probe_stats")
        s.write_probe(3, {1: {k: np.zeros(2) for k, _ in schema.PROBE_BLOBS}})
        assert set(s.probe_stats(3)[1]) == {k for k, _ in schema.PROBE_BLOBS}
        s.close()


def test_a_file_from_a_newer_schema_is_refused_in_one_line(tmp_path):
    """The other way round: this ssd-tui refuses a newer file, read-only opens too."""
    path = tmp_path / "run.db"
    shutil.copyfile(SCHEMA3_DB, path)
    c = sqlite3.connect(path)
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    c.commit()
    c.close()
    for readonly in (False, True):
        with pytest.raises(SSDError, match="newer ssd-tui") as e:
            RunStore.open(path, readonly=readonly)
        assert "\n" not in str(e.value)
