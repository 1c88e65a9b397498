"""Problem loading: HumanEval, our JSONL format, and its one-line errors."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssd_tui.errors import SSDError
from ssd_tui.problems.load import load_problem_set
from ssd_tui.problems.sets import Problem, load_humaneval, load_jsonl

GOOD = {
    "id": "add",
    "prompt": "def add(a, b):\n",
    "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
    "difficulty": "easy",
    "split": "train",
    "canonical_solution": "    return a + b\n",
    "statement": "Add two numbers.",
}


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SSDError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_humaneval_loads_164_problems() -> None:
    problems = load_humaneval()
    assert len(problems) == 164
    assert len({p.id for p in problems}) == 164
    first = problems[0]
    assert first.id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.tests and "def check(candidate)" in first.tests
    assert first.canonical_solution and first.source == "humaneval"
    assert all(p.difficulty is None and p.split == "eval" for p in problems)


def test_full_record_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", GOOD, "", {"id": "b", "prompt": "x"})
    a, b = load_jsonl(path)
    assert a == Problem(**GOOD, source=str(path))
    assert b == Problem(id="b", prompt="x", source=str(path))
    assert b.split == "eval" and b.tests is None


def test_nulls_mean_absent_and_crlf_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "p", "difficulty": null}\r\n\r\n')
    (p,) = load_jsonl(path)
    assert p.difficulty is None


def test_gzipped_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(GOOD).encode()))
    assert load_jsonl(path)[0].id == "add"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"id": "a", "prompt": "p",, }'], r"p\.jsonl:1: not valid JSON \(.* at column \d+\)"),
        ([GOOD, {"id": "b"}], r'p\.jsonl:2: missing required field "prompt"'),
        ([{"prompt": "p"}], r'p\.jsonl:1: missing required field "id"'),
        ([GOOD, "", GOOD], r'p\.jsonl:3: duplicate id "add" \(first on line 1\)'),
        ([{**GOOD, "test": "x"}], r'p\.jsonl:1: unknown field "test" \(known fields: id, prompt'),
        ([{"id": 3, "prompt": "p"}], r'p\.jsonl:1: field "id" must be a string, got a number'),
        ([{"id": None, "prompt": "p"}], r'field "id" must be a string, got null'),
        ([{"id": "a", "prompt": ["p"]}], r'field "prompt" must be a string, got an array'),
        ([{**GOOD, "difficulty": "trivial"}], r'"difficulty" must be one of easy, medium, hard'),
        ([{**GOOD, "split": "test"}], r'"split" must be one of train, eval, got "test"'),
        ([{"id": "a", "prompt": "p", "tests": "t"}], r'"entry_point" is required when "tests"'),
        ([{**GOOD, "entry_point": "not a name"}], r'"entry_point" must be a Python name'),
        ([{**GOOD, "id": "  "}], r'p\.jsonl:1: field "id" must not be empty'),
        (["[1, 2]"], r"p\.jsonl:1: expected a JSON object, got an array"),
        (["", "  "], r"p\.jsonl: no problems \(the file is empty\)"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, lines: list, expected: str) -> None:
    assert re.search(expected, error_of(write(tmp_path / "p.jsonl", *lines)))


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "\xff"}\n')
    assert re.search(r"p\.jsonl:2: not valid UTF-8", error_of(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.jsonl").endswith("nope.jsonl: no such file")
    assert "is a directory" in error_of(tmp_path)


def test_problem_set_spec_resolution(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonl", GOOD, {"id": "b", "prompt": "x"})
    assert len(load_problem_set("p.jsonl", base_dir=tmp_path)) == 2
    assert len(load_problem_set(str(tmp_path / "p.jsonl"), base_dir=Path("/elsewhere"))) == 2
    assert [p.id for p in load_problem_set("p.jsonl", tmp_path, limit=1)] == ["add"]
    assert len(load_problem_set("HumanEval", limit=5, require_tests=True)) == 5


def test_require_tests_names_the_problem(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonl", GOOD, {"id": "b", "prompt": "x"})
    assert len(load_problem_set("p.jsonl", tmp_path, require_tests=True, limit=1)) == 1
    with pytest.raises(SSDError, match=r'p\.jsonl: problem "b" has no tests'):
        load_problem_set("p.jsonl", tmp_path, require_tests=True)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_fields = st.sampled_from([*GOOD, "source", "x"])
_records = st.dictionaries(
    _fields, _json | st.sampled_from(["easy", "train", "add", "f"]), max_size=8
)
_lines = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    _json.map(lambda v: json.dumps(v).encode()),
    _records.map(lambda r: json.dumps(r).encode()),
    st.text(max_size=40).map(lambda t: t.replace("\n", " ").encode("utf-8", "surrogatepass")),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.integers(0, 3), line=_lines)
def test_any_bad_line_is_an_ssd_error_naming_it(tmp_path: Path, before: int, line: bytes) -> None:
    good = [json.dumps({**GOOD, "id": f"g{i}"}).encode() for i in range(before)]
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(
        b"\n".join([*good, line, json.dumps({**GOOD, "id": "the-last-line"}).encode()])
    )
    try:
        problems = load_jsonl(path)
    except SSDError as e:
        assert f"fuzz.jsonl:{before + 1}:" in str(e) and "\n" not in str(e)
    else:
        assert 1 + before <= len(problems) <= 2 + before
