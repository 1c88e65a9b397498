"""The sandbox: verdicts, limits, and a hostile corpus (issue "Hardening", part 1).

Hostile programs only run where the sandbox has namespaces (``isolation()`` is "root"
or "userns"): without them a program that kills its process group or writes files
would hit the test runner itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssd_tui.errors import SSDError
from ssd_tui.evaluation import sandbox
from ssd_tui.evaluation.sandbox import ExecResult, Limits, isolation, run_many, run_program

FAST = Limits(timeout_s=5, cpu_s=5)
isolated = pytest.mark.skipif(
    isolation() == "none", reason="no namespaces here: hostile programs would hit the host"
)


def run(code: str, limits: Limits = FAST, slot: int = 0) -> ExecResult:
    return run_program(code, limits, slot)


# ---- verdicts ----------------------------------------------------------------------------


def test_passing_program_passes_with_output() -> None:
    r = run("print('hello')\nimport sys; print('oops', file=sys.stderr)")
    assert (r.status, r.message, r.returncode) == ("passed", "", 0)
    assert r.stdout == "hello\n" and r.stderr == "oops\n"
    assert 0 < r.duration_s < 5


def test_assertion_is_failed_with_its_message() -> None:
    r = run("x = 2\nassert x == 3, f'expected 3, got {x}'")
    assert r.status == "failed"
    assert r.message == "AssertionError: expected 3, got 2"
    assert "<program>" in r.stderr and "line 2" in r.stderr


def test_other_exception_is_error() -> None:
    r = run("def f():\n    return x\nf()")
    assert r.status == "error"
    assert r.message == "NameError: name 'x' is not defined"


def test_syntax_error_is_error_with_line() -> None:
    r = run("x = 1\ndef f(:\n    pass")
    assert r.status == "error"
    assert r.message.startswith("SyntaxError") and "(line 2)" in r.message


def test_hanging_program_times_out() -> None:
    r = run("import time\ntime.sleep(60)", Limits(timeout_s=1))
    assert r.status == "timeout" and r.returncode is None
    assert 1 <= r.duration_s < 4


def test_cpu_limit_counts_as_timeout() -> None:
    r = run("while True:\n    pass", Limits(timeout_s=10, cpu_s=1))
    assert r.status == "timeout"
    assert "CPU time limit" in r.message
    assert r.duration_s < 5


def test_nonzero_exit_without_exception_is_error() -> None:
    r = run("import os\nos._exit(3)")
    assert (r.status, r.returncode) == ("error", 3)
    assert "status 3" in r.message


def test_message_is_one_short_line() -> None:
    r = run("raise ValueError('a\\nb' + 'c' * 5000)")
    assert r.status == "error"
    assert "\n" not in r.message and len(r.message) <= sandbox.MESSAGE_CHARS


def test_large_program_is_fed_through_stdin() -> None:
    code = "# " + "x" * 2_000_000 + "\nprint('ok')"
    assert run(code).stdout == "ok\n"


def test_stdin_is_empty() -> None:
    r = run("import sys\nprint(repr(sys.stdin.read()))")
    assert r.stdout == "''\n"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)


def test_run_many_yields_every_index_once() -> None:
    programs = [f"assert {i} % 3 != 0" for i in range(9)]
    got = dict(run_many(programs, FAST, workers=3))
    assert sorted(got) == list(range(9))
    assert [got[i].status for i in range(9)] == [
        "failed" if i % 3 == 0 else "passed" for i in range(9)
    ]


def test_run_many_of_nothing() -> None:
    assert list(run_many([], FAST)) == []


# ---- the program cannot fake a pass --------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.exit(0)\nassert False",
        "import os\nos._exit(0)\nassert False",
        "raise SystemExit(0)\nassert False",
        # writes plausible tokens to every fd it might share with us, then exits 0
        "import os\nfor fd in range(1, 64):\n"
        "    try:\n        os.write(fd, b'0' * 32 + b'\\n' + b'E [\"passed\", \"\"]\\n')\n"
        "    except OSError:\n        pass\nos._exit(0)",
        # a background thread exits 0 while the (failing) tests run
        "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(0))).start()\n"
        "time.sleep(5)\nassert False",
    ],
    ids=["sys.exit", "os._exit", "SystemExit", "fake-tokens", "thread-exit"],
)
def test_early_exit_is_not_passed(code: str) -> None:
    r = run(code)
    assert r.status == "error"
    assert "before tests finished" in r.message or "status" in r.message


def test_messages_and_tracebacks_keep_odd_characters() -> None:
    # The harness writes its JSON records by hand (no json import): quotes, backslashes,
    # control characters, lone surrogates and non-BMP characters must survive; the
    # traceback on stderr goes to the real stderr even if the program replaced it, and
    # starts at the program's frame.
    r = run(
        "import sys, io\nsys.stderr = io.StringIO()\n"
        "class Odd(Exception):\n    pass\n"
        "def f():\n    raise Odd('q\"uote \\\\ back \\x00\\x07 \\ud800 \\U0001f600 \u00e9')\nf()"
    )
    assert r.status == "error"
    assert r.message == '__sandbox__.Odd: q"uote \\ back \x00\x07 \ud800 \U0001f600 \u00e9'
    assert r.stderr.startswith("Traceback") and 'File "<program>", line 7' in r.stderr
    assert "<string>" not in r.stderr  # no frame of the harness
    assert "__sandbox__.Odd" in r.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "prelude",
    [
        # a builtin `check` that does nothing: the tests' own `check` shadows it
        "import builtins\nbuiltins.check = lambda candidate: None\n",
        # a fake AssertionError: `assert` raises the real one regardless
        "import builtins\nclass Nope(Exception):\n    pass\nbuiltins.AssertionError = Nope\n",
        # patching what a naive harness would use to report
        "import os, sys, json, traceback\nos._exit = lambda c: None\nsys.exit = lambda *a: None\n"
        'json.dumps = lambda *a, **k: \'["passed", ""]\'\n'
        "traceback.format_exception_only = lambda *a: ['passed']\n",
    ],
    ids=["builtin-check", "fake-AssertionError", "patched-modules"],
)
def test_patching_the_harness_does_not_pass(prelude: str) -> None:
    program = prelude + (
        "def add(a, b):\n    return a - b\n\n"
        "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"
    )
    assert run(program).status == "failed"


# ---- hostile corpus (needs namespaces) ------------------------------------------------------


def _sandbox_uid_processes() -> list[str]:
    """Host processes running as any sandbox uid: anyone's, so no leak check can use it
    while another sandbox runs on the machine (the concurrency test shows it would fail)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                if sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_COUNT:
                    found.append(entry)
    return found


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time in ticks, state) of every host process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def _descendants(roots: set[int], zombies: bool = True) -> dict[int, int]:
    """pid -> start time of every process below ``roots`` (not the roots themselves)."""
    table = _process_table()
    found = {}
    for pid, (parent, started, state) in table.items():
        seen = 0
        while parent and parent not in roots and seen < 100:
            parent, seen = table.get(parent, (0, 0, ""))[0], seen + 1
        if parent in roots and pid not in roots and (zombies or state != "Z"):
            found[pid] = started
    return found


def _leftovers() -> list[int]:
    """What is left of the programs *this* process ran: anything below its fork servers
    (the inits, the programs, what they forked: a PID namespace keeps them all below its
    init), and its own program cgroups. Another sandbox user's processes never count."""
    servers = {s.proc.pid for pool in sandbox._idle.values() for s in pool}
    # In userns mode the server we start is util-linux `unshare`, the fork server its child.
    unshares = {s.proc.pid for s in sandbox._idle.get("userns", [])}
    servers |= {p for p, (parent, *_) in _process_table().items() if parent in unshares}
    # Zombies hold nothing but a pid: a "none" mode server reaps its orphans' at its next
    # program (in a PID namespace the init reaps them all before it goes).
    return sorted(_descendants(servers, zombies=False)) + [-1 for _ in _own_cgroups()]


def _own_cgroups() -> list[str]:
    setup = sandbox._cgroups()
    if isinstance(setup, str):
        return []
    mine = f"{sandbox._CGROUP_PREFIX}{os.getpid()}-"
    return [
        os.path.join(parent, name)
        for parent in setup.parents.values()
        for name in os.listdir(parent)
        if name.startswith(mine)
    ]


@isolated
def test_runs_as_unprivileged_user_in_private_dir() -> None:
    r = run(
        "import os, stat\nst = os.stat('.')\nprint(os.getuid(), st.st_uid, oct(st.st_mode & 0o777))"
    )
    uid, owner, mode = r.stdout.split()
    assert uid == owner and mode == "0o700"
    if isolation() == "root":
        assert sandbox.UID_BASE <= int(uid) < sandbox.UID_BASE + sandbox.UID_COUNT


@isolated
def test_deep_recursion_is_error() -> None:
    r = run("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.status == "error" and "RecursionError" in r.message


@isolated
def test_memory_bomb_is_memory_error() -> None:
    r = run("x = bytearray(4 * 1024 ** 3)", Limits(timeout_s=5, memory_mb=512))
    assert r.status == "error" and r.message == "MemoryError"


@isolated
def test_output_flood_is_capped_and_finishes() -> None:
    code = "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\nsys.stderr.write('e' * 10 ** 6)"
    r = run(code, Limits(timeout_s=10, output_bytes=1000))
    assert r.status == "passed"
    assert r.stdout == "x" * 1000 + "\n[... 19999000 more bytes discarded]"
    assert r.stderr == "e" * 1000 + "\n[... 999000 more bytes discarded]"


@isolated
def test_cannot_touch_files_outside_its_dir(tmp_path: Path) -> None:
    victim_dir = tmp_path / "host"
    victim_dir.mkdir(mode=0o755)
    victim = victim_dir / "precious.txt"
    victim.write_text("keep me")
    marker = f"ssd-sandbox-test-{os.getpid()}"
    beside_tests = Path(__file__).parent / marker
    code = f"""
import os
attempts = [
    lambda: os.remove({str(victim)!r}),
    lambda: open({str(victim_dir / "new.txt")!r}, "w"),
    lambda: open({str(beside_tests)!r}, "w"),
    lambda: open("/etc/{marker}", "w"),
]
for attempt in attempts:
    try:
        attempt()
        print("WROTE")
    except OSError as e:
        print(type(e).__name__)
open("/var/tmp/{marker}", "w").write("private")  # its own /var/tmp: allowed, not the host's
"""
    try:
        r = run(code)
        assert r.status == "passed", r.stderr
        assert "WROTE" not in r.stdout
        assert victim.read_text() == "keep me"
        assert sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
        for path in (Path("/var/tmp", marker), beside_tests, Path("/etc", marker)):
            assert not path.exists()
    finally:
        for path in (Path("/var/tmp", marker), beside_tests, Path("/etc", marker)):
            path.unlink(missing_ok=True)


@isolated
@pytest.mark.parametrize(
    "code",
    [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
    ],
    ids=["kill-parent", "killpg", "kill-all"],
)
def test_cannot_kill_the_host(code: str) -> None:
    r = run(code)
    assert r.status == "error"  # it failed or killed itself; we are still here


@isolated
def test_no_network() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        r = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert r.status == "error" and "OSError" in r.message
        with pytest.raises(socket.timeout):
            server.accept()


@isolated
def test_cannot_see_another_running_sample() -> None:
    writer = (
        "import os, time\nopen('secret-ssd-test.txt', 'w').write('s3cret')\n"
        "print(os.path.abspath('secret-ssd-test.txt'), flush=True)\ntime.sleep(2)"
    )
    reader = (
        "import os, time\ntime.sleep(0.7)\nfound = []\n"
        "for top in ('/tmp', '/var/tmp', '/dev/shm'):\n"
        "    for root, dirs, files in os.walk(top):\n"
        "        found += [os.path.join(root, f) for f in files if f.startswith('secret-ssd')]\n"
        "print(found, sorted(p for p in os.listdir('/proc') if p.isdigit()))"
    )
    got = dict(run_many([writer, reader], Limits(timeout_s=8), workers=2))
    assert got[0].status == "passed" and got[0].stdout.strip().endswith("secret-ssd-test.txt")
    assert got[1].status == "passed", got[1].stderr
    found, pids = got[1].stdout.split("] ", 1)
    assert found == "["
    assert pids.strip() == "['1', '2']"  # its own PID namespace: init and itself


@isolated
def test_processes_are_bounded_and_all_die() -> None:
    # Bounded and harmless: 200 sleeping children requested, at most nproc may exist.
    code = (
        "import os, time\nn = 0\nfor _ in range(200):\n    try:\n"
        "        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n"
        "        n += 1\n    except OSError:\n        break\nprint(n, flush=True)\ntime.sleep(60)"
    )
    r = run(code, Limits(timeout_s=2, nproc=10))
    assert r.status == "timeout"
    assert 0 < int(r.stdout) < 10
    assert _leftovers() == []


# Up to 30 sleeping children (bounded even if no limit held), then the uid and the count.
FORKS = (
    "import os, time\nn = 0\nfor _ in range(30):\n    try:\n"
    "        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
    "        n += 1\n    except OSError:\n        break\nprint(os.getuid(), n)"
)


def test_fork_bomb_is_contained() -> None:
    # A real fork bomb runs only once this test has proven, in the same strict sandbox,
    # that the uid is dropped and the program's process limit holds.
    try:
        iso = sandbox.choose_isolation("strict")
    except SSDError as e:
        pytest.skip(f"no strict isolation here: {e}")
    r = sandbox.run_program(FORKS, Limits(timeout_s=5, nproc=8), 0, iso)
    uid, forked = map(int, r.stdout.split())
    assert sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_COUNT
    assert forked < 8
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = sandbox.run_program(code, Limits(timeout_s=1.5, nproc=16), 0, iso)
    assert r.status == "timeout"
    assert _leftovers() == []
    assert run("print('still fine')").stdout == "still fine\n"


@pytest.mark.parametrize("mode", ["root", "userns", "none"])
def test_a_program_is_held_to_its_process_limit_as_a_whole(mode: str) -> None:
    # The case: userns and none ran as uid 0, where RLIMIT_NPROC counts every
    # process of the user, and all 30 forks succeeded. The program's cgroup holds them all.
    if isinstance(sandbox._cgroups(), str) or isinstance(sandbox._probe(mode), str):
        pytest.skip(f"no {mode} mode with a cgroup here")
    r = sandbox._run(FORKS, Limits(timeout_s=10, nproc=8), 0, mode, cgroup=True)
    assert r.status == "passed", r
    uid, forked = map(int, r.stdout.split())
    assert forked < 8, f"{mode}: uid {uid} forked {forked} of 30"
    if mode != "none":  # without a PID namespace the children outlive the program a while
        assert _leftovers() == []


def test_a_program_is_held_to_its_memory_limit_as_a_whole() -> None:
    # 4 processes of 600 MB each at memory_mb = 1024: each is under its address-space
    # limit; together they are not. Before cgroups this program held 2.4 GB and passed.
    if not sandbox.choose_isolation("auto").strict:
        pytest.skip("no cgroup per program here")
    code = (
        "import os, time\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n"
        "    if pid == 0:\n        x = b'x' * (600 << 20)\n        time.sleep(2)\n"
        "        os._exit(0)\n    kids.append(pid)\nx = b'x' * (600 << 20)\n"
        "for k in kids:\n    os.waitpid(k, 0)\nprint('all held')"
    )
    r = run(code, Limits(timeout_s=60, memory_mb=1024))
    assert (r.status, r.message) == ("error", "memory limit exceeded (1024 MB, all its processes)")
    assert _leftovers() == []


def test_the_cpu_limit_holds_for_all_processes_together() -> None:
    if not sandbox.choose_isolation("auto").strict:
        pytest.skip("no cgroup per program here")
    code = "import os\nfor _ in range(2):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass"
    r = run(code, Limits(timeout_s=60, cpu_s=1))
    assert (r.status, r.message) == ("timeout", "CPU time limit exceeded (1 s, all its processes)")
    assert r.cpu_s is not None and r.cpu_s >= 1
    assert _leftovers() == []


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "rusage"])
def test_cpu_time_is_accounted_for_a_program_killed_at_its_timeout(cgroup: bool) -> None:
    # It prints the CPU time it has used as it goes; what we report covers at least that.
    if isolation() == "none" or (cgroup and isinstance(sandbox._cgroups(), str)):
        pytest.skip("needs a PID namespace (and a cgroup for the cgroup case)")
    code = (
        "import time\nnext_ = 0.0\nwhile True:\n    t = time.process_time()\n"
        "    if t >= next_:\n        print(t, flush=True)\n        next_ = t + 0.05"
    )
    r = sandbox._run(code, Limits(timeout_s=1.5), 0, isolation(), cgroup=cgroup)
    assert r.status == "timeout"
    assert r.cpu_s is not None and r.cpu_s >= float(r.stdout.split()[-1])


@pytest.mark.skipif(isolation() != "root", reason="counts processes by sandbox uid")
def test_sandbox_dies_soon_after_its_caller_is_killed() -> None:
    # kill -9 of the pipeline mid-evaluation must not leave sleeping programs behind:
    # the harness init has its own alarm at timeout_s + 2.
    # Only what the caller started counts: its descendants, recorded (pid and start time)
    # while its program runs; another sandbox on the machine is none of our business.
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        stdout=subprocess.PIPE,
    )
    try:
        assert caller.stdout and caller.stdout.readline() == b"probed\n"
        deadline = time.monotonic() + 10
        started: dict[int, int] = {}
        while len(started) < 4 and time.monotonic() < deadline:  # server, init, program, child
            started = _descendants({caller.pid})
            time.sleep(0.05)
        assert len(started) >= 4, "the sandboxed program never started"
    finally:
        caller.kill()
        caller.wait()

    def alive() -> list[int]:
        table = _process_table()
        return [p for p, t in started.items() if table.get(p, (0, -1, ""))[1] == t]

    deadline = time.monotonic() + 8
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive() == []


CALLER = """
from ssd_tui.evaluation.sandbox import Limits, isolation, run_program
isolation()
print("probed", flush=True)
run_program("import os, time\\nos.fork()\\ntime.sleep(100)", Limits(timeout_s=1.5), slot=7)
"""


@isolated
def test_setuid_binaries_give_nothing() -> None:
    code = (
        "import subprocess\n"
        "r = subprocess.run(['su', '-c', 'id -u'], capture_output=True, stdin=subprocess.DEVNULL)\n"
        "print(r.returncode, r.stdout)"
    )
    r = run(code)
    assert r.status == "passed"
    assert not r.stdout.startswith("0 ")


def test_isolation_is_known() -> None:
    assert isolation() in ("root", "userns", "none")


@pytest.mark.parametrize("mode", ["userns", "none"])
def test_fallback_modes_give_the_same_verdicts(mode: str) -> None:
    # Harmless programs only: in "none" mode nothing protects the host.
    if mode == "userns" and sandbox._run("pass", FAST, 0, mode).status != "passed":
        pytest.skip("no user namespaces here")
    codes = ["print('ok')", "assert 1 == 2", "x", "import os\nos._exit(0)", "while True:\n    pass"]
    got = [sandbox._run(c, Limits(timeout_s=1), 0, mode) for c in codes]
    assert [r.status for r in got] == ["passed", "failed", "error", "error", "timeout"]
    assert got[0].stdout == "ok\n"


# ---- the fork server ------------------------------------------------------------------------


def _top_server() -> int:
    """The pid of the server the next run_program takes (the pool hands out the last one)."""
    run("pass")  # makes sure there is one
    return sandbox._idle[isolation()][-1].proc.pid


def test_a_program_cannot_change_what_the_next_one_sees() -> None:
    server = _top_server()
    r = run(
        "import builtins, sys, math, os, re\n"
        "builtins.len = lambda x: 42\nbuiltins.print = None\nmath.pi = 3\nre.compile = None\n"
        "sys.modules['math'] = 'patched'\nsys.path.insert(0, '/nowhere')\n"
        "os.environ['SSD_POLLUTED'] = '1'\nsys.setrecursionlimit(50)\n"
        "open('left-behind.txt', 'w').write('x')"
    )
    assert r.status == "passed", r.stderr
    r = run(
        "import builtins, sys, math, os, re\n"
        "print(len([1]), math.pi, re.compile('x').pattern, sys.path[0] == '/nowhere',\n"
        "      'SSD_POLLUTED' in os.environ, sys.getrecursionlimit(), os.listdir('.'))"
    )
    assert r.stdout == "1 3.141592653589793 x False False 1000 []\n", r.stderr
    assert _top_server() == server  # both ran on that same server: it stayed pristine


def test_a_killed_server_is_replaced_without_losing_a_verdict() -> None:
    import threading

    server = _top_server()
    os.kill(server, 9)  # idle: the next program finds it dead and starts a new one
    time.sleep(0.1)
    assert run("print('after idle kill')").stdout == "after idle kill\n"
    server = _top_server()
    assert server != sandbox._idle[isolation()][0].proc.pid or len(sandbox._idle[isolation()]) == 1
    killer = threading.Timer(0.5, os.kill, (server, 9))  # mid-program: the program runs again
    killer.start()
    r = run("import time\ntime.sleep(1.2)\nprint('done')")
    killer.join()
    assert (r.status, r.stdout) == ("passed", "done\n"), r
    assert _top_server() != server


def test_a_timeout_kills_the_program_not_the_server() -> None:
    server = _top_server()
    r = run("import os, time\nos.fork()\ntime.sleep(60)", Limits(timeout_s=1))
    assert r.status == "timeout"
    assert _top_server() == server


def test_a_program_holds_only_its_own_pipes() -> None:
    # The server's control socket (which would let it start programs or read the next
    # program's config) and the init's status pipe must not reach the program.
    r = run(
        "import os\nfor fd in sorted(os.listdir('/proc/self/fd'), key=int):\n"
        "    try:\n        print(fd, os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError:\n        pass  # the listing's own fd, closed by now"
    )
    kinds = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert kinds.pop("0") == "/dev/null"
    assert [k for k, v in kinds.items() if v.startswith("pipe:")] == ["1", "2", "4"], kinds
    assert not any(v.startswith(("socket:", "pipe:")) for k, v in kinds.items() if k not in "124")


def test_the_program_is_pid_2_under_its_own_init_in_a_new_pid_namespace() -> None:
    code = (
        "import os\nprint(os.getpid(), os.getppid(), os.readlink('/proc/self/ns/pid'),\n"
        "      sorted(p for p in os.listdir('/proc') if p.isdigit()))"
    )
    r = run(code)
    if isolation() == "none":
        assert r.status == "passed"
        return
    pid, ppid, ns, procs = r.stdout.split(" ", 3)
    assert (pid, ppid, procs.strip()) == ("2", "1", "['1', '2']"), r
    assert ns != os.readlink("/proc/self/ns/pid")
    if isolation() == "root":
        # The server unshares a PID namespace for each init and goes straight back to its
        # own: nothing it forks later can land in a program's namespace.
        server = Path(f"/proc/{_top_server()}/ns")
        assert os.readlink(server / "pid_for_children") == os.readlink(server / "pid")
        assert os.readlink(server / "pid") == os.readlink("/proc/self/ns/pid")


@pytest.mark.skipif(isolation() != "root", reason="counts processes by sandbox uid")
def test_nothing_of_a_program_is_left_when_the_call_returns() -> None:
    # A child that closes all its pipes and lives on: the call returns only once the
    # init, and with it its whole PID namespace, is gone. No sleep before looking.
    code = (
        "import os, time\nif os.fork() == 0:\n    for fd in (1, 2, 4):\n        os.close(fd)\n"
        "    time.sleep(30)\n    os._exit(0)\nprint('parent done')"
    )
    killed = sandbox.stragglers_killed
    r = run(code)
    assert (r.status, r.stdout) == ("passed", "parent done\n"), r
    assert _leftovers() == []
    r = run("import os, time\nos.fork()\nos.fork()\ntime.sleep(30)", Limits(timeout_s=1))
    assert r.status == "timeout"
    assert _leftovers() == []
    assert sandbox.stragglers_killed == killed  # the PID namespace took them, not the cgroup


# A second user of the sandbox on the same machine: programs that fork and sleep, in a loop
# until told to stop (a file appears), so some of its processes always run as sandbox uids.
OTHER = """
import os, sys
from ssd_tui.evaluation.sandbox import Limits, run_many
prog = "import os, time\\nfor _ in range(3):\\n    if os.fork() == 0:\\n        break\\ntime.sleep(1)"
print("started", flush=True)
while not os.path.exists(sys.argv[1]):
    list(run_many([prog, prog], Limits(timeout_s=5), workers=2))
"""


@pytest.mark.skipif(isolation() != "root", reason="the old check counted sandbox uids")
def test_leak_checks_pass_while_another_sandbox_runs(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER, str(stop)],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        stdout=subprocess.PIPE,
    )
    try:
        assert other.stdout and other.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 20
        while not _sandbox_uid_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        foreign = len(_sandbox_uid_processes())
        assert foreign, "the other sandbox never ran a program"
        test_nothing_of_a_program_is_left_when_the_call_returns()
        test_processes_are_bounded_and_all_die()
        foreign += len(_sandbox_uid_processes())
        assert foreign  # the old, machine-wide count would have seen these as leaks
        assert _leftovers() == []
    finally:
        stop.touch()
        try:
            other.wait(timeout=20)
        finally:
            other.kill()
            other.wait()


def test_without_pidfds_the_server_still_gives_every_verdict(monkeypatch, tmp_path) -> None:
    # Kernels before 5.3 have no pidfd_open: the server then waits for each init instead.
    mode = isolation()
    source = Path(sandbox.SERVER_PATH).read_text()
    assert "os.pidfd_open(pid)" in source
    patched = tmp_path / "sandbox_server.py"
    patched.write_text(source.replace("os.pidfd_open(pid)", "os.pidfd_open(-1)"))
    monkeypatch.setattr(sandbox, "SERVER_PATH", str(patched))
    monkeypatch.setitem(sandbox._idle, mode, [])  # servers of the patched code only
    try:
        codes = ["print('ok')", "assert 1 == 2", "while True:\n    pass", "print('after')"]
        got = [sandbox._run(c, Limits(timeout_s=1), 0, mode) for c in codes]
    finally:
        for server in sandbox._idle[mode]:
            server.stop()
    assert [r.status for r in got] == ["passed", "failed", "timeout", "passed"]
    assert got[3].stdout == "after\n"
    if mode == "root":
        assert _leftovers() == []


# ---- isolation policy and cgroups ---------------------------------------------------------


@pytest.fixture
def fresh_detection(monkeypatch):
    """Detection as a new process would do it (the results are cached per process)."""
    monkeypatch.setattr(sandbox, "_probes", {})
    monkeypatch.setattr(sandbox, "_no_filter", {})
    monkeypatch.setattr(sandbox, "_cgroup_setup", None)


@pytest.mark.parametrize(
    ("deny", "cause", "fallback"),
    [
        ("cgroup", "(no cgroup per program: cgroups disabled by SSD_TUI_SANDBOX_DENY", "root"),
        ("seccomp", "(no seccomp filter: seccomp disabled by SSD_TUI_SANDBOX_DENY", "root"),
        ("root", "(root mode disabled by SSD_TUI_SANDBOX_DENY (a test hook))", "userns"),
        ("root,userns", "(root mode disabled by SSD_TUI_SANDBOX_DENY", "none"),
    ],
)
def test_strict_refuses_a_weaker_sandbox_and_auto_takes_it(
    monkeypatch, fresh_detection, deny: str, cause: str, fallback: str
) -> None:
    if isinstance(sandbox._probe("root"), str):
        pytest.skip("needs the root mode to force weaker ones")
    monkeypatch.setenv(sandbox.DENY_ENV, deny)
    monkeypatch.setattr(sandbox, "_probes", {})
    monkeypatch.setattr(sandbox, "_no_filter", {})
    monkeypatch.setattr(sandbox, "_cgroup_setup", None)
    with pytest.raises(SSDError) as e:
        sandbox.choose_isolation("strict")
    line = str(e.value)
    assert line.startswith("sandbox: strict isolation is not available " + cause), line
    assert '[sandbox] isolation = "auto"' in line and "\n" not in line
    got = sandbox.choose_isolation("auto")
    if fallback == "userns" and got.mode == "none":
        fallback = "none"  # no user namespaces here
    assert got.mode == fallback and not got.strict
    assert sandbox.run_program("print('ran')", FAST, 0, got).stdout == "ran\n"


def test_a_mode_asked_for_by_name_is_that_mode_or_an_error(monkeypatch, fresh_detection) -> None:
    assert sandbox.choose_isolation("none").mode == "none"
    monkeypatch.setenv(sandbox.DENY_ENV, "userns")
    with pytest.raises(SSDError, match=r'^sandbox: isolation = "userns" is not available: '):
        sandbox.choose_isolation("userns")
    with pytest.raises(SSDError, match="must be one of strict, auto, userns, none"):
        sandbox.choose_isolation("loose")


def test_program_cgroups_live_inside_our_own_and_are_removed() -> None:
    if isinstance(sandbox._cgroups(), str):
        pytest.skip(sandbox._cgroups())
    ours = {h: path for h, _, path in _cgroup_lines(Path("/proc/self/cgroup").read_text())}
    r = run("print(open('/proc/self/cgroup').read())")
    theirs = [(h, path) for h, _, path in _cgroup_lines(r.stdout) if sandbox._CGROUP_PREFIX in path]
    assert theirs, r.stdout  # it ran in cgroups of its own...
    for h, path in theirs:  # ... each a child of ours in that hierarchy, never beside it
        parent, name = path.rsplit("/", 1)
        assert (parent or "/", name.startswith(sandbox._CGROUP_PREFIX)) == (ours[h], True)
    run("import time\ntime.sleep(5)", Limits(timeout_s=0.5))
    assert _own_cgroups() == []


def _cgroup_lines(text: str) -> list[tuple[str, str, str]]:
    return [tuple(line.split(":", 2)) for line in text.splitlines() if line.count(":") >= 2]


def test_cgroups_of_a_dead_engine_are_removed(tmp_path: Path) -> None:
    setup = sandbox._cgroups()
    if isinstance(setup, str):
        pytest.skip(setup)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now belongs to no one (for the moment)
    stale = [
        os.path.join(p, f"{sandbox._CGROUP_PREFIX}{dead.pid}-7") for p in setup.parents.values()
    ]
    for path in stale:
        os.mkdir(path)
    sandbox._remove_stale(setup)
    assert [p for p in stale if os.path.exists(p)] == []
