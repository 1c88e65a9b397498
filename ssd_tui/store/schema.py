"""Every table, index and migration of the run database (docs/store.md).

A new database gets ``SCHEMA`` (the tables of schema 1) and then every step of
``MIGRATIONS``; a writable open of an older database applies the steps after its version,
in order, and a read-only open leaves it as it is (its readers cope with what it lacks).
"""

from __future__ import annotations

import re
import sqlite3

SCHEMA_VERSION = 7

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  model TEXT NOT NULL,
  config_toml TEXT,
  config_json TEXT NOT NULL,
  base_dir TEXT,
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
  round INTEGER PRIMARY KEY,
  status TEXT NOT NULL DEFAULT 'pending',          -- pending | running | done
  adapter_path TEXT,
  adapter_sha256 TEXT,
  started_at REAL,
  finished_at REAL
);
CREATE TABLE IF NOT EXISTS stages (
  round INTEGER NOT NULL REFERENCES rounds(round),
  stage TEXT NOT NULL,                             -- sample | train | evaluate | baseline | analyse
  position INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',          -- pending | running | stopped | failed | done
  detail TEXT,
  done INTEGER NOT NULL DEFAULT 0,
  total INTEGER NOT NULL DEFAULT 0,
  started_at REAL,
  finished_at REAL,
  seconds REAL NOT NULL DEFAULT 0,                 -- time spent, summed over resumes
  PRIMARY KEY (round, stage)
);
CREATE TABLE IF NOT EXISTS problems (
  id INTEGER PRIMARY KEY,
  purpose TEXT NOT NULL,                           -- train | eval
  name TEXT NOT NULL,
  prompt TEXT NOT NULL,
  tests TEXT,
  entry_point TEXT,
  difficulty TEXT,
  source TEXT,
  UNIQUE (purpose, name)
);
CREATE TABLE IF NOT EXISTS samples (
  id INTEGER PRIMARY KEY,
  round INTEGER NOT NULL,                          -- train samples of round k come from model k-1
  purpose TEXT NOT NULL,                           -- train | eval
  problem_id INTEGER NOT NULL REFERENCES problems(id),
  sample_idx INTEGER NOT NULL,
  temperature REAL NOT NULL,
  top_k INTEGER NOT NULL,
  top_p REAL NOT NULL,
  min_p REAL NOT NULL,
  completion TEXT NOT NULL,
  code TEXT,                                       -- the program that is tested (eval)
  n_tokens INTEGER NOT NULL,
  logprob_sum REAL,
  mean_entropy REAL,
  mean_tail_mass REAL,
  finish_reason TEXT,
  created_at REAL NOT NULL,
  UNIQUE (round, purpose, temperature, problem_id, sample_idx)
);
CREATE INDEX IF NOT EXISTS samples_problem ON samples (problem_id, round);
CREATE TABLE IF NOT EXISTS token_stats (
  sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
  token_ids BLOB NOT NULL,                         -- int32 little-endian
  logprobs BLOB NOT NULL,                          -- float32: log p(token) at T = 1
  entropies BLOB NOT NULL,                         -- float32: entropy of the full distribution (nats)
  tail_mass BLOB NOT NULL                          -- float32: mass outside the truncation set
);
CREATE TABLE IF NOT EXISTS verdicts (
  sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
  status TEXT NOT NULL,                            -- passed | failed | error | timeout
  message TEXT,
  duration_s REAL
);
CREATE INDEX IF NOT EXISTS verdicts_status ON verdicts (status);
CREATE TABLE IF NOT EXISTS metrics (
  round INTEGER NOT NULL,
  purpose TEXT NOT NULL,                           -- eval | train
  temperature REAL NOT NULL,
  name TEXT NOT NULL,                              -- pass@1, pass@5, distinct_2, ...
  scope TEXT NOT NULL DEFAULT 'all',               -- all | easy | medium | hard
  value REAL,
  PRIMARY KEY (round, purpose, temperature, name, scope)
);
CREATE TABLE IF NOT EXISTS train_log (
  round INTEGER NOT NULL,
  step INTEGER NOT NULL,
  loss REAL,
  lr REAL,
  PRIMARY KEY (round, step)
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  round INTEGER,
  stage TEXT,
  level TEXT NOT NULL,                             -- info | warning | error
  message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS warnings (
  id INTEGER PRIMARY KEY,
  round INTEGER NOT NULL,
  rule TEXT NOT NULL,
  message TEXT NOT NULL,
  evidence TEXT,                                   -- JSON
  created_at REAL NOT NULL,
  UNIQUE (round, rule)
);
"""

# Notes and tags on the run (round NULL) or on one round.
NOTES_TAGS_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, round INTEGER, "
    "text TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, round INTEGER, created_at REAL NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS tags_key ON tags (tag, IFNULL(round, -1))",
]

# The fork/lock probe: round 0's eval samples re-scored under each round's model
# (ssd_tui/analysis/rounds.py writes it, docs/analysis.md §2).
PROBE_STATS_SCHEMA = """
CREATE TABLE IF NOT EXISTS probe_stats (
  round INTEGER NOT NULL,
  sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
  token_ids BLOB NOT NULL,     -- int32: the completion's tokens as re-tokenised by the probe
  offsets BLOB NOT NULL,       -- int32: character start of each token in the completion (-1 unknown)
  logprobs BLOB NOT NULL,      -- float32: log p(token) at T = 1 under this round's model
  entropies BLOB NOT NULL,     -- float32: entropy of the full distribution (nats)
  tail_mass BLOB NOT NULL,     -- float32: T = 1 mass outside T_eval's truncation set
  top1 BLOB NOT NULL,          -- float32: top-1 probability at T = 1
  train_tail_mass BLOB,        -- float32: T = 1 mass outside T_train's truncation set
  PRIMARY KEY (round, sample_id)
)"""

#: The probe's per-token arrays: column and dtype (little-endian), in column order.
PROBE_BLOBS = (
    ("token_ids", "<i4"),
    ("offsets", "<i4"),
    ("logprobs", "<f4"),
    ("entropies", "<f4"),
    ("tail_mass", "<f4"),
    ("top1", "<f4"),
    ("train_tail_mass", "<f4"),  # NULL in probes written before it existed
)

# What [control] decided between two rounds (docs/rounds.md): one row per round after
# which a decision was made, with the rule and the numbers it was made on.
DECISIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
  round INTEGER PRIMARY KEY,   -- the round just finished; the decision is about the next
  action TEXT NOT NULL,        -- continue | stop | rollback
  rule TEXT,                   -- on_collapse | stop_after_no_gain | NULL (nothing fired)
  next_source INTEGER,         -- the round the next round samples from (NULL after a stop)
  message TEXT NOT NULL,
  evidence TEXT NOT NULL,      -- JSON: pass@1 and standard errors per round, warnings, ...
  created_at REAL NOT NULL
)"""

# Which samples each round trained on ([rounds] data: its own, rounds 1..k, or anchored).
TRAIN_SETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS train_sets (
  round INTEGER NOT NULL,      -- the round whose adapter trained on the sample
  sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
  PRIMARY KEY (round, sample_id)
)"""

# Behavioural diversity (ssd_tui/analysis/behaviour.py, docs/analysis.md §1): each eval
# sample's behaviour class on its problem's tests. A sample whose program (normalised:
# names, comments, formatting) was already run for the same problem, in any round, takes
# that one's class (ran = 0), so the table is also the cache that spares running it again.
BEHAVIOURS_SCHEMA = """
CREATE TABLE IF NOT EXISTS behaviours (
  sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
  program TEXT NOT NULL,       -- SHA-256 of the normalised program: the cache's key per problem
  class TEXT NOT NULL,         -- rec:<hash of the call log> | timeout | crash | no output
  detail TEXT,                 -- what the class does: its first calls' results, shortened
  recorder INTEGER NOT NULL,   -- the recorder's version (classes of two versions never compare)
  ran INTEGER NOT NULL,        -- 1: this sample's program ran; 0: an identical one's class
  duration_s REAL              -- wall time of the run (of the program it took the class from)
)"""

#: What changed after schema 1, by the version that brought it. Each statement must be safe
#: to run twice: CREATE ... IF NOT EXISTS, or "ALTER TABLE t ADD COLUMN c ..." (run only
#: when the column is missing).
MIGRATIONS: dict[int, list[str]] = {
    2: [
        # The run record: every start and resume, with its config and environment.
        "CREATE TABLE IF NOT EXISTS config_history (id INTEGER PRIMARY KEY, ts REAL NOT NULL, "
        "event TEXT NOT NULL, config_toml TEXT, config_json TEXT NOT NULL, environment TEXT)",
        # The sandbox isolation that ran a stage's test programs.
        "ALTER TABLE stages ADD COLUMN sandbox TEXT",
        # The sampler engine that ran a stage ("hf", "vllm on cpu", …).
        "ALTER TABLE stages ADD COLUMN engine TEXT",
        *NOTES_TAGS_SCHEMA,
    ],
    3: [
        # suspect samples: why a program looks like it games the tests (ssd_tui/evaluation/suspect.py),
        # comma-separated reasons; NULL when it does not (and in rows judged before)
        "ALTER TABLE verdicts ADD COLUMN suspect TEXT",
        # Suspects are few: a partial index makes counting and listing them cheap in a
        # run of a million verdicts, at no cost for the clean ones.
        "CREATE INDEX IF NOT EXISTS verdicts_suspect ON verdicts (sample_id) "
        "WHERE suspect IS NOT NULL",
    ],
    4: [
        # The probe table joins the schema: before, analysis created it on first write, so a
        # run analysed without a model has none, and one probed before the KeptMass column
        # existed lacks train_tail_mass.
        PROBE_STATS_SCHEMA,
        "ALTER TABLE probe_stats ADD COLUMN train_tail_mass BLOB",
        # Files that reached schema 2 before notes and tags were part of it never ran their
        # CREATE; writes used to create them on demand, now every migrated file has them.
        *NOTES_TAGS_SCHEMA,
    ],
    5: [
        # What each round's model is (docs/rounds.md): base_path is the weights its adapter
        # goes on (NULL: the run's [model] path; a merged copy under RUN_DIR/merged/ with
        # [rounds] adapter = "merge"; the parent's with a branch's round 0), source_round
        # the round whose model drew its training samples (round - 1, or the best round
        # after a rollback).
        "ALTER TABLE rounds ADD COLUMN base_path TEXT",
        "ALTER TABLE rounds ADD COLUMN source_round INTEGER",
        # A stage whose results were taken from another run's round (a sweep's shared round
        # 0, a branch's round 0): JSON naming the run, its round and what was copied.
        "ALTER TABLE stages ADD COLUMN reused_from TEXT",
        DECISIONS_SCHEMA,
        TRAIN_SETS_SCHEMA,
    ],
    6: [BEHAVIOURS_SCHEMA],
    7: [
        # What the fork/lock probe needs of round 0's samples beside their own statistics,
        # stored as they are scored (by the sampler, or the exact-statistics pass) so that
        # round 0's probe reads them instead of scoring the samples again (docs/analysis.md):
        # float32 per token, the top-1 probability and the T = 1 mass outside the training
        # truncation set ([sampling]'s). NULL where not recorded (other samples, older runs).
        "ALTER TABLE token_stats ADD COLUMN top1 BLOB",
        "ALTER TABLE token_stats ADD COLUMN train_tail_mass BLOB",
    ],
}

_ADD_COLUMN = re.compile(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.I)


def create(conn: sqlite3.Connection) -> None:
    """Every table of a new database, at SCHEMA_VERSION (inside the caller's transaction)."""
    for stmt in SCHEMA.split(";\n"):
        if stmt.strip():
            conn.execute(stmt)
    migrate(conn, from_version=1)


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Apply MIGRATIONS after ``from_version`` (inside the caller's transaction)."""
    for version in sorted(v for v in MIGRATIONS if v > from_version):
        for stmt in MIGRATIONS[version]:
            m = _ADD_COLUMN.match(stmt)
            if m and m[2] in columns(conn, m[1]):
                continue
            conn.execute(stmt)


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns a table has (none when it does not exist)."""
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    q = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
    return conn.execute(q, (name,)).fetchone() is not None
