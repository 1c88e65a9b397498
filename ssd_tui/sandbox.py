"""Run one untrusted program under limits, in its own namespaces, as an unprivileged uid.

Programs run in forks of a fork server: a clean ``python -I -S`` interpreter (one per
concurrently running program), started once with the modules programs commonly import.
It never runs program code itself. Process tree of one program::

    this process ── server (root, host namespaces, own session; long-lived)
                      └─ init (root, PID 1 of a new PID namespace; new mount/net/IPC/UTS
                           │   namespaces): mounts, reaps, reports
                           └─ program (uid 61000+k, rlimits, no_new_privs, PID 2)

The init only sets up mounts, forks the program, reaps, and reports the program's wait
status on a pipe the program cannot write. When it exits (or is killed) the kernel kills
every process left in the PID namespace, so nothing the program started can outlive it.
The server watches the init through a pidfd and closes its own copy of the status pipe
only once the init, and with it the whole namespace, is gone. The init dies with the
server (PR_SET_PDEATHSIG), and the server exits when we close its socket or die, so a
dead caller takes every program down at once.

Each program also gets a cgroup of its own, inside ours, that bounds the memory, processes
and CPU of all its processes together. ``choose_isolation(policy)`` says what a run gets:
"strict" (the default of a run's config) is root mode with a cgroup per program, or an
SSDError; weaker modes (user namespaces; none: rlimits + a process group) only when asked
for. See docs/sandbox.md for the threat model of each.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import logging
import marshal
import math
import os
import pwd
import queue
import re
import secrets
import selectors
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from ssd_tui.config import ISOLATION_POLICIES, weaker_than_strict
from ssd_tui.errors import SSDError

log = logging.getLogger(__name__)

UID_BASE = 61000  # sandbox uids: UID_BASE + k, one per concurrently running program
UID_COUNT = 1000
MESSAGE_CHARS = 300  # ExecResult.message is one line of at most this many characters
_CHANNEL_CAP = 65536  # bytes kept from the status and result channels
_DRAIN_GRACE_S = 5.0  # after a kill, how long we wait for the pipes to close
_ASK_GRACE_S = 0.5  # after asking the init to end its namespace, before we kill it
_SETUP_S = 20.0  # how long setting up a sandbox may take on top of the timeout
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    # Numeric libraries start one thread per core by default, each reserving address
    # space (RLIMIT_AS) and an NPROC slot; programs run in parallel anyway.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits."""

    timeout_s: float = 10.0  # wall clock, from start-up to exit
    # With a cgroup per program (docs/sandbox.md), cpu_s, memory_mb and nproc bound the
    # whole program, all its processes together; each process is held to them as well
    # (RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC of its uid), which is all there is without one.
    cpu_s: int = 10  # CPU seconds
    memory_mb: int = 1024  # memory (cgroup: resident, page cache, tmpfs); address space each
    file_size_mb: int = 16  # largest file it may write (RLIMIT_FSIZE); also sizes its /tmp
    nproc: int = 64  # processes + threads
    open_files: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 65536  # kept of stdout and of stderr each; the rest is discarded

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass
class ExecResult:
    """What happened. ``status``: passed | failed | error | timeout."""

    status: str
    message: str  # last line of the traceback, or why it did not pass; "" when passed
    duration_s: float
    stdout: str
    stderr: str
    returncode: int | None  # exit status, -signal when killed by one, None on timeout
    # CPU seconds of all its processes, timeouts included (the cgroup's counter, or the
    # rusage of the init's reaped tree); None if neither reached us
    cpu_s: float | None = None


# --------------------------------------------------------------------------------------
# The fork server: one long-lived, clean interpreter per concurrently running program
# (see the module docstring for the process tree). It never runs program code itself:
# every program runs in a fresh fork of it, so nothing a program changes (builtins,
# sys.modules, a patched module) reaches the server or the next program.
#
# Protocol, on a socketpair with us: the server writes b"+" once ready; then each b"R"
# carries five fds (SCM_RIGHTS): the config pipe's read end (marshal, from us: code,
# nonce, limits), stdout, stderr, the status pipe (init -> us: trusted) and the result
# pipe (program -> us: nonce or exception record). b"K" kills the running program's init
# (and with it its PID namespace; its process group in "none" mode). The status pipe
# reaches end of file only when the init is gone: the server holds a copy until then.
# End of file on the socket (we closed it, or we died) makes the server exit, and the
# parent-death signal takes the program it started down with it.
_SERVER = r"""
import builtins, ctypes, fcntl, gc, marshal, os, resource, select, signal, socket, sys

# What programs commonly import, loaded once here so that a program's fork finds it ready
# (HumanEval's prompts import typing, math, random, copy, string, collections, re, hashlib).
import bisect, collections, copy, functools, hashlib, heapq, itertools, math, operator
import random, re, string, typing

LIBC = ctypes.CDLL(None, use_errno=True)
# Resolved once here rather than in every fork (each child would look them up afresh).
for name in ("mount", "syscall", "prctl", "capset", "unshare", "setns"):
    getattr(LIBC, name)
U64x4, U32x2, U32x6 = ctypes.c_uint64 * 4, ctypes.c_uint32 * 2, ctypes.c_uint32 * 6
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
# os.unshare/os.setns only exist from Python 3.12. The server unshares CLONE_NEWPID (it
# applies to its next child only); the init unshares the rest for itself.
CLONE_NEWPID = 0x20000000
NEW_NAMESPACES = 0x20000 | 0x04000000 | 0x08000000 | 0x40000000  # CLONE_NEWNS | NEWUTS | NEWIPC | NEWNET
PR_SET_PDEATHSIG = 1
C = ctypes.c_long
# fds of a sandbox (the init moves the five it receives, and its alive pipe, here)
CONFIG_FD, STATUS_FD, RESULT_FD, ALIVE_FD = 0, 3, 4, 5

def _ok(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")

def _b(s):
    return None if s is None else s.encode()

def mount(src, target, fstype, flags, data=None):
    _ok(LIBC.mount(_b(src), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), "mount " + target)

def all_read_only():
    # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {MOUNT_ATTR_RDONLY}): every mount, this namespace only
    attr = U64x4(1, 0, 0, 0)
    if LIBC.syscall(C(442), C(-100), b"/", C(0x8000), attr, C(ctypes.sizeof(attr))) != 0:
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)  # kernel < 5.12: "/" only

def tmpfs(path, size_mb, mode="1777"):
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,nr_inodes=4096,mode={mode}")

def setup_mounts(cfg):
    # Private first: with shared propagation (systemd's default) our mounts would reach the host.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this PID namespace's own
    all_read_only()
    tmpfs("/tmp", 4 * cfg["file_size_mb"])
    for path in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            tmpfs(path, cfg["file_size_mb"])
    # Directories the interpreter needs but the sandbox uid cannot traverse (e.g. /root
    # is 0700 and Python lives under it): hide the parent behind an empty tmpfs and bind
    # just the needed trees back in, read-only.
    stashes = []
    for hidden, paths in cfg["expose"]:
        for p in paths:
            stash = f"/tmp/.expose{len(stashes)}"
            os.mkdir(stash)
            mount(p, stash, None, MS_BIND | MS_REC)
            stashes.append((stash, p))
        tmpfs(hidden, 1, mode="755")
    for stash, p in stashes:
        os.makedirs(p, exist_ok=True)
        mount(stash, p, None, MS_MOVE)
        os.rmdir(stash)

def drop_capabilities():
    # user-namespace mode: we are "root" of our own namespace; give that up for good
    for cap in range(64):
        LIBC.prctl(C(24), C(cap), C(0), C(0), C(0))  # PR_CAPBSET_DROP
    _ok(LIBC.prctl(C(28), C(0x3), C(0), C(0), C(0)), "securebits")  # SECBIT_NOROOT(+LOCKED)
    header = U32x2(0x20080522, 0)
    data = U32x6()
    _ok(LIBC.capset(header, data), "capset")

def die_with_parent():
    _ok(LIBC.prctl(C(PR_SET_PDEATHSIG), C(signal.SIGKILL), C(0), C(0), C(0)), "pdeathsig")

def js(s, ord=ord):
    # A JSON string literal: control characters, quotes, backslashes and lone surrogates escaped.
    return '"' + "".join(
        c if c >= " " and c not in '"\\' and not "\ud800" <= c <= "\udfff" else "\\u%04x" % ord(c)
        for c in s
    ) + '"'

def exception_line(e):
    # The last line of traceback.format_exception_only(type(e), e), without importing it.
    t = type(e)
    name, mod = t.__qualname__, t.__module__
    if mod not in ("__main__", "builtins"):
        name = (mod if isinstance(mod, str) else "<unknown>") + "." + name
    if isinstance(e, SyntaxError):
        where = f" ({e.filename})" if e.lineno is None and e.filename is not None else ""
        return f"{name}: {e.msg or '<no detail available>'}{where}"
    try:
        s = str(e)
    except BaseException:
        s = "<exception str() failed>"
    return name + ": " + s if s else name

def limit(which, n):
    resource.setrlimit(which, (n, n))

def enter_child(cfg, workdir):
    os.close(STATUS_FD)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
    limit(resource.RLIMIT_AS, cfg["memory_mb"] * mb)
    limit(resource.RLIMIT_FSIZE, cfg["file_size_mb"] * mb)
    limit(resource.RLIMIT_NOFILE, cfg["open_files"])
    limit(resource.RLIMIT_NPROC, cfg["nproc"])
    limit(resource.RLIMIT_CORE, 0)
    os.chdir(workdir)
    os.umask(0o077)
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    elif cfg["mode"] == "userns":
        drop_capabilities()
    _ok(LIBC.prctl(C(38), C(1), C(0), C(0), C(0)), "no_new_privs")  # setuid binaries gain nothing
    os.environ.update(HOME=workdir, TMPDIR=cfg["tmpdir"])

def run(code, nonce):
    # Everything used after the program runs is bound here, before it can patch anything.
    write, exit_, AE, line_of, result_fd = os.write, os._exit, AssertionError, exception_line, RESULT_FD
    dumps, print_exc, stderr, flush_all = js, sys.__excepthook__, sys.__stderr__, _flush_all
    builtins.exit = builtins.quit = sys.exit  # normally added by site, which -S skips
    module = type(sys)("__sandbox__")
    module.__builtins__ = builtins
    sys.modules["__sandbox__"] = module
    try:
        exec(compile(code, "<program>", "exec"), module.__dict__)
    except BaseException as e:
        if isinstance(e, SystemExit):
            kind, msg = "error", f"exited before tests finished (sys.exit({e.code!r}))"
        else:
            kind = "failed" if isinstance(e, AE) else "error"
            try:
                msg = line_of(e).strip()
                if isinstance(e, SyntaxError) and e.lineno:
                    msg += f" (line {e.lineno})"
            except BaseException:
                msg = "unprintable exception"
            try:  # the traceback minus our own frame, on the real stderr
                flush_all()
                sys.stderr = stderr
                e.__traceback__ = e.__traceback__.tb_next  # the hook prints the exception's own
                print_exc(type(e), e, e.__traceback__)
            except BaseException:
                pass
        flush_all()
        write(result_fd, b"E [" + dumps(kind).encode() + b", " + dumps(msg[:1000]).encode() + b"]\n")
        exit_(1)
    flush_all()
    write(result_fd, nonce + b"\n")
    exit_(0)

def _flush_all():
    for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            f.flush()
        except BaseException:
            pass

def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)

def setup_error(e):
    os.write(STATUS_FD, ('{"setup_error": ' + js(str(e)) + "}").encode())
    os._exit(3)

def init(boot):
    # PID 1 of the program's namespaces, root: mounts, forks the program, reaps, reports.
    cfg = {**boot, **marshal.loads(read_all(CONFIG_FD))}
    nonce = cfg.pop("nonce").encode()
    try:
        # Into the program's own cgroups (made by our caller) first, while /sys is still
        # writable: the program and everything it starts are counted there as a whole.
        for procs in cfg["cgroups"]:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        if cfg["mode"] in ("root", "userns"):
            setup_mounts(cfg)
        workdir = cfg["workdir"] or os.path.join("/tmp", "sandbox-" + os.urandom(6).hex())
        if not cfg["workdir"]:
            os.mkdir(workdir, 0o700)
            if cfg["uid"] is not None:
                os.chown(workdir, cfg["uid"], cfg["uid"])
    except OSError as e:
        setup_error(e)
    # The program's clock starts now: setting up (the cgroup move above can wait on a
    # kernel lock for seconds on a busy machine) is not the program's time.
    os.write(STATUS_FD, b'{"ready": 1}\n')
    pid = os.fork()
    if pid == 0:
        try:
            enter_child(cfg, workdir)
        except BaseException as e:
            os.write(RESULT_FD, ('E ["error", ' + js(f"sandbox setup failed: {e}") + "]\n").encode())
            os._exit(3)
        run(cfg.pop("code"), nonce)
    del cfg["code"], nonce
    os.close(RESULT_FD)
    os.close(CONFIG_FD)

    def expire(signum, frame):
        # Our caller normally kills us at the timeout; this covers a caller that died.
        try:
            os.write(STATUS_FD, b'{"expired": true}')
        except OSError:
            pass  # the caller is gone
        if cfg["mode"] == "none":
            os.killpg(0, signal.SIGKILL)  # no namespace to take the program down with us
        os._exit(4)

    def stop(signum, frame):
        # The server's first kill (a timeout): end the namespace ourselves and reap it, so
        # that our rusage, which the server reads, counts what it used. (Killed outright,
        # the kernel reaps it for us and its CPU time is lost to the count.)
        try:
            os.kill(-1, signal.SIGKILL)  # every process of our PID namespace but us
        except OSError:
            pass
        while True:
            try:
                os.wait4(-1, 0)
            except ChildProcessError:
                os._exit(4)
            except InterruptedError:
                pass

    signal.signal(signal.SIGALRM, expire)
    if cfg["mode"] != "none":  # there kill(-1) would reach the host: the server kills instead
        signal.signal(signal.SIGTERM, stop)
    signal.alarm(cfg["alarm_s"])
    # As PID 1 we inherit orphans: reap them until our child is done, then leave, which
    # kills whatever is left in the namespace.
    while True:
        try:
            got, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            status, usage = 0, None
            break
        if got == pid:
            break
    cpu = usage.ru_utime + usage.ru_stime if usage else 0.0
    os.write(STATUS_FD, ('{"wait": %d, "cpu": %r}' % (status, float(cpu))).encode())
    os._exit(0)

def start_init(boot, fds, alive_r):
    # The server's child for one program: outside "none" mode PID 1 of a new PID namespace
    # (the server unshared CLONE_NEWPID for it). It takes its five pipes, asks to die with
    # the server, enters new mount/net/IPC/UTS namespaces of its own and becomes the init.
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in (*fds, alive_r)]
        for i, fd in enumerate(high):
            os.dup2(fd, i)
        os.closerange(ALIVE_FD + 1, 1 << 20)  # the server's socket above all: programs never see it
        die_with_parent()
        # Our parent is outside our PID namespace, so getppid() says 0: instead the server
        # holds this pipe's write end until it has reaped us, and end of file means it
        # died before we could ask to die with it.
        os.set_blocking(ALIVE_FD, False)
        try:
            if os.read(ALIVE_FD, 1) == b"":
                os._exit(1)
        except BlockingIOError:
            pass
        os.close(ALIVE_FD)
        os.setsid()  # one process group: in "none" mode the kill takes all of it
        if boot["mode"] != "none":
            _ok(LIBC.unshare(C(NEW_NAMESPACES)), "unshare")
    except BaseException as e:
        setup_error(e)
    init(boot)

def launch(boot, fds, own_pidns):
    # Fork the init of one program. Returns (pid, pidfd or None, [fds we hold until it is
    # gone: the status pipe, the alive pipe]), or None if the fork failed.
    alive_r, alive_w = os.pipe()
    # Our next child is PID 1 of a new PID namespace (we stay in ours).
    if own_pidns is not None and LIBC.unshare(C(CLONE_NEWPID)) != 0:
        err = "unshare: " + os.strerror(ctypes.get_errno())
        os.write(fds[3], ('{"setup_error": ' + js(err) + "}").encode())
        os.close(alive_r)
        os.close(alive_w)
        return None
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:
        try:
            os.close(alive_w)
            start_init(boot, fds, alive_r)  # ends in os._exit
        finally:
            os._exit(5)  # an unexpected error: never back into the server's loop
    if own_pidns is not None and LIBC.setns(C(own_pidns), C(CLONE_NEWPID)) != 0:
        os._exit(70)  # our later children would land in the program's namespace: never
    os.close(alive_r)
    if pid < 0:
        os.close(alive_w)
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # Linux < 5.3
        pidfd = None
    return pid, pidfd, [os.dup(fds[3]), alive_w]

def kill_init(current, mode, hard):
    # Never reaped before finish(), so neither pid can be a recycled one. Not hard: ask
    # the init (SIGTERM) to kill and reap its namespace; the caller follows with a hard
    # kill (SIGKILL) if the init is not gone soon.
    pid, pidfd = current[0], current[1]
    sig = signal.SIGKILL if hard or mode == "none" else signal.SIGTERM
    if mode == "none":
        try:
            os.killpg(pid, signal.SIGKILL)  # no namespace to take the program down with it
        except OSError:
            pass  # not yet its own group: then it has not forked the program either
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        pass

def finish(current):
    # The init has exited; outside "none" mode the kernel has then already killed and
    # reaped every other process of its PID namespace. Only now does the status pipe's
    # last writer go: its end of file tells our caller that nothing of the program is left.
    pid, pidfd, held = current
    try:
        # The init's rusage covers every process it reaped: its program, the orphans, and
        # (in a PID namespace) all the kernel killed when it died, even at a timeout.
        usage = os.wait4(pid, 0)[2]
        os.write(held[0], b'\n{"tree_cpu": %r}' % (usage.ru_utime + usage.ru_stime))
    except OSError:
        pass  # not our child after all, or our caller stopped reading
    for fd in held + ([pidfd] if pidfd is not None else []):
        os.close(fd)

def reap():
    # "none" mode: orphans of a finished program come to us (a subreaper)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

def serve():
    boot = marshal.loads(sys.stdin.buffer.read())
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    sys.path += [p for p in boot.pop("site") if p not in sys.path]
    sock = socket.socket(fileno=boot.pop("sock"))
    mode = boot["mode"]
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if mode != "none" else None
    current = None  # (pid, pidfd, held fds) of the running program's init
    asked = False  # whether the running program's init was asked to stop already
    _ok(LIBC.prctl(C(36), C(1), C(0), C(0), C(0)), "subreaper")  # orphans come to us
    # The first compile() in a process sets up the compiler (~1.4 ms CPU): do it here, once.
    compile("pass", "<warm-up>", "exec")
    gc.freeze()  # what is loaded now stays put: forks share its pages instead of copying them
    sock.sendall(b"+")
    while True:
        watch = [sock] + ([current[1]] if current and current[1] is not None else [])
        ready = select.select(watch, [], [])[0]
        if current and current[1] in ready:
            finish(current)
            current = None
        if sock not in ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1, 5)
        except OSError:
            msg, fds = b"", []
        if not msg:
            os._exit(0)  # our caller closed us or died: the init dies with us
        if msg == b"K" and current:
            kill_init(current, mode, hard=asked)
            asked = True
        elif msg == b"R" and len(fds) == 5:
            asked = False
            if current:  # our caller gave up on the last one without a kill: end it first
                kill_init(current, mode, hard=True)
                finish(current)
                current = None
            reap()
            current = launch(boot, fds, own_pidns)
            if current and current[1] is None:  # no pidfd: wait here (a "K" waits too)
                os.waitid(os.P_PID, current[0], os.WEXITED | os.WNOWAIT)
                finish(current)
                current = None
        for fd in fds:
            os.close(fd)

serve()
"""


# --------------------------------------------------------------------------------------
# Isolation: the mode ("root": namespaces + uid drop; "userns": namespaces in a user
# namespace, capabilities dropped; "none": rlimits + a process group only) and whether
# each program gets its own cgroup. What a run accepts is a policy ([sandbox] isolation).

#: Test hook: a comma-separated list of "root", "userns", "cgroup" that this process treats
#: as unavailable, to see what a machine without them does (inherited by subprocesses).
DENY_ENV = "SSD_TUI_SANDBOX_DENY"
_OPT_IN = (
    'to accept weaker isolation set [sandbox] isolation = "auto" (or "userns", "none") in '
    "the run's config, or pass --sandbox auto to ssd-tui run/demo (SSD_TUI_SANDBOX=auto for "
    "engines the app starts); docs/sandbox.md says what each allows"
)


@dataclass(frozen=True)
class Isolation:
    """What runs a program: the mode, and the cgroup version (0: no cgroup, rlimits only)."""

    mode: str  # root | userns | none
    cgroup: int = 0

    @property
    def label(self) -> str:
        """As stored per stage in the run DB: "root+cgroup-v1", "userns", "none", ..."""
        return self.mode + (f"+cgroup-v{self.cgroup}" if self.cgroup else "")

    @property
    def strict(self) -> bool:
        return not weaker_than_strict(self.label)


_probes: dict[str, Isolation | str] = {}  # mode -> what works there, or why nothing does
_probe_lock = threading.RLock()  # _probe -> _cgroups both take it


def _denied() -> set[str]:
    return {w.strip() for w in os.environ.get(DENY_ENV, "").split(",") if w.strip()}


def _probe(mode: str) -> Isolation | str:
    """Run ``pass`` in ``mode`` (with a cgroup if there are cgroups, else without), once."""
    with _probe_lock:
        if mode not in _probes:
            _probes[mode] = _probe_now(mode)
        return _probes[mode]


def _probe_now(mode: str) -> Isolation | str:
    if mode in _denied():
        return f"{mode} mode disabled by {DENY_ENV} (a test hook)"
    if mode == "root" and os.geteuid() != 0:
        return "not running as root"
    if mode == "userns" and not shutil.which("unshare"):
        return "util-linux `unshare` not found"
    cg = _cgroups()
    why = f"{mode} mode does not work here"
    for version in ([cg.version] if isinstance(cg, _CgroupSetup) else []) + [0]:
        try:
            probe = _run("pass", Limits(timeout_s=20), 0, mode, cgroup=version > 0)
        except Exception as e:  # e.g. no free uid, the server could not start
            why = f"{mode} mode does not work here: {e}"
            log.debug("sandbox mode %s (cgroup %s) unavailable: %s", mode, version, e)
            continue
        if probe.status == "passed":
            return Isolation(mode, version)
        why = f"{mode} mode does not work here: {probe.message}"
        log.debug("sandbox mode %s unavailable: %s %s", mode, probe.message, probe.stderr[-300:])
    return why


def choose_isolation(policy: str = "auto") -> Isolation:
    """The isolation ``policy`` gets on this machine, or an SSDError naming why not.

    "strict": root mode with a cgroup per program, or nothing. "auto": the strongest that
    works (the old behaviour; a warning when it is less than strict). "userns", "none":
    exactly that mode (with a cgroup per program where cgroups work).
    """
    if policy not in ISOLATION_POLICIES:
        raise SSDError(
            f"sandbox isolation must be one of {', '.join(ISOLATION_POLICIES)}, got {policy!r}"
        )
    if policy in ("userns", "none"):
        got = _probe(policy)
        if isinstance(got, str):
            raise SSDError(f'sandbox: isolation = "{policy}" is not available: {got}')
        return got
    root = _probe("root")
    if policy == "strict":
        if isinstance(root, str):
            raise SSDError(f"sandbox: strict isolation is not available ({root}); {_OPT_IN}")
        if not root.strict:
            cg = _cgroups()
            why = cg if isinstance(cg, str) else "the sandbox could not join them"
            raise SSDError(
                f"sandbox: strict isolation is not available (no cgroup per program: {why}); {_OPT_IN}"
            )
        return root
    for got in (root, _probe("userns")):
        if isinstance(got, Isolation):
            break
    else:
        got = _probe("none")
        if isinstance(got, str):  # "none" itself failed: report it, there is nothing weaker
            raise SSDError(f"sandbox: no isolation mode works here: {got}")
    if not got.strict:
        log.warning(
            "sandbox: running programs with isolation %s, weaker than strict (%s). See "
            "docs/sandbox.md.",
            got.label,
            root if isinstance(root, str) else "no cgroup per program",
        )
    return got


def isolation() -> str:
    """The strongest isolation mode that works here: "root", "userns" or "none"."""
    return choose_isolation("auto").mode


# --------------------------------------------------------------------------------------
# Cgroups: one per running program, made *inside* the cgroup we run in (so every limit
# on us still holds), removed when the program is gone. cgroup v2: memory.max, pids.max,
# cpu.stat; v1: the memory, pids and cpuacct hierarchies. Where neither can be used (no
# write access, v2 without the memory and pids controllers delegated to our cgroup) each
# process is held to the rlimits alone; docs/sandbox.md says what then bounds what.

_CGROUP_PREFIX = "ssd-sandbox-"
_CGROUP_REMOVE_S = 5.0  # how long removal waits for processes to leave (they are gone)


@dataclass(frozen=True)
class _CgroupSetup:
    version: int  # 1 or 2
    parents: dict[str, str]  # v1: controller -> our cgroup's dir there; v2: {"": dir}


_cgroup_setup: _CgroupSetup | str | None = None
_cgroup_names = itertools.count()
#: Processes removal had to kill (a test reads it: in namespaced modes the PID namespace
#: is gone before we look, so it stays 0).
stragglers_killed = 0


def _cgroups() -> _CgroupSetup | str:
    """Where this process can make per-program cgroups, or why it cannot (detected once)."""
    global _cgroup_setup
    with _probe_lock:
        if _cgroup_setup is None:
            _cgroup_setup = _find_cgroups()
            if isinstance(_cgroup_setup, _CgroupSetup):
                _remove_stale(_cgroup_setup)
        return _cgroup_setup


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of the cgroup file systems we can see."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _src, opts = (right.split() + ["", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((left.split()[4].replace("\\040", " "), fstype, set(opts.split(","))))
    return out


def _find_cgroups() -> _CgroupSetup | str:
    if "cgroup" in _denied():
        return f"cgroups disabled by {DENY_ENV} (a test hook)"
    try:
        with open("/proc/self/cgroup") as f:
            own = [line.rstrip("\n").split(":", 2) for line in f]
        mounts = _mounts()
    except OSError as e:
        return f"cannot read our cgroup: {e}"
    v1 = {}
    for _hid, ctrls, path in own:
        for ctrl in ctrls.split(","):
            for mnt, fstype, opts in mounts:
                if fstype == "cgroup" and ctrl and ctrl in opts:
                    v1[ctrl] = os.path.join(mnt, path.lstrip("/"))
    if {"memory", "pids"} <= v1.keys():
        parents = {c: v1[c] for c in ("memory", "pids", "cpuacct") if c in v1}
        return _try(_CgroupSetup(1, parents))
    v2_path = next((path for hid, ctrls, path in own if hid == "0" and not ctrls), None)
    v2_mnt = next((mnt for mnt, fstype, _ in mounts if fstype == "cgroup2"), None)
    if v2_path is None or v2_mnt is None:
        return "no cgroup v1 memory and pids hierarchies, and no cgroup v2"
    parent = os.path.join(v2_mnt, v2_path.lstrip("/"))
    try:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
        missing = {"memory", "pids"} - enabled
        if missing:  # fails (EBUSY) when our cgroup holds processes and is not the root
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in sorted(missing)))
    except OSError as e:
        return f"cgroup v2 at {parent} does not give its children memory and pids limits ({e.strerror or e})"
    return _try(_CgroupSetup(2, {"": parent}))


def _try(setup: _CgroupSetup) -> _CgroupSetup | str:
    """Make and remove one program cgroup: the setup works, or why not."""
    try:
        cg = _ProgramCgroup(setup, Limits())
    except OSError as e:
        return f"cannot make a cgroup in {e.filename or 'our cgroup'}: {e.strerror or e}"
    cg.remove()
    return setup


def _remove_stale(setup: _CgroupSetup) -> None:
    """Program cgroups left by an engine that died (kill -9): empty, so they just go."""
    for parent in setup.parents.values():
        with contextlib.suppress(OSError):
            for name in os.listdir(parent):
                m = re.fullmatch(_CGROUP_PREFIX + r"(\d+)-\d+", name)
                # our own pid too: a dead engine's that had it (we have made none yet)
                if m and (int(m[1]) == os.getpid() or not _alive(int(m[1]))):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


class _ProgramCgroup:
    """One program's cgroup (v2) or cgroups (v1: one per hierarchy), limits set."""

    def __init__(self, setup: _CgroupSetup, limits: Limits) -> None:
        self.version = setup.version
        name = f"{_CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_names)}"
        self.dirs: dict[str, str] = {}
        try:
            for ctrl, parent in setup.parents.items():
                path = os.path.join(parent, name)
                os.mkdir(path)
                self.dirs[ctrl] = path
            memory = str(limits.memory_mb * 1024 * 1024)
            # +1: the init, which lives in it too
            pids = str(limits.nproc + 1)
            if self.version == 2:
                d = self.dirs[""]
                _write_file(f"{d}/memory.max", memory)
                with contextlib.suppress(OSError):  # no swap for it either, where there is swap
                    _write_file(f"{d}/memory.swap.max", "0")
                _write_file(f"{d}/pids.max", pids)
            else:
                _write_file(f"{self.dirs['memory']}/memory.limit_in_bytes", memory)
                with contextlib.suppress(OSError):  # only with swap accounting
                    _write_file(f"{self.dirs['memory']}/memory.memsw.limit_in_bytes", memory)
                _write_file(f"{self.dirs['pids']}/pids.max", pids)
        except OSError:
            self.remove()
            raise

    @property
    def procs(self) -> list[str]:
        """The cgroup.procs files the program's init writes itself into."""
        return [f"{d}/cgroup.procs" for d in self.dirs.values()]

    def cpu_s(self) -> float | None:
        """CPU seconds used by all its processes so far."""
        try:
            if self.version == 2:
                stat = _read_file(f"{self.dirs['']}/cpu.stat").split()
                return int(stat[stat.index("usage_usec") + 1]) / 1e6
            if "cpuacct" in self.dirs:
                return int(_read_file(f"{self.dirs['cpuacct']}/cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            pass
        return None

    def oom_kills(self) -> int:
        """Processes the kernel killed for the memory limit."""
        path = (
            f"{self.dirs['']}/memory.events"
            if self.version == 2
            else f"{self.dirs['memory']}/memory.oom_control"
        )
        try:
            fields = _read_file(path).split()
            return int(fields[fields.index("oom_kill") + 1])
        except (OSError, ValueError):
            return 0

    def remove(self) -> None:
        """Remove it; whatever is still in it (only possible without namespaces) is killed."""
        global stragglers_killed
        deadline = time.monotonic() + _CGROUP_REMOVE_S
        for path in sorted(self.dirs.values(), reverse=True):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: processes in it
                    if time.monotonic() > deadline:
                        log.warning("sandbox: could not remove cgroup %s", path)
                        break
                    stragglers_killed += self._kill_all(path)
                    time.sleep(0.01)
        self.dirs = {}

    @staticmethod
    def _kill_all(path: str) -> int:
        try:
            pids = [int(p) for p in _read_file(f"{path}/cgroup.procs").split()]
        except OSError:
            return 0
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


_expose_cache: list[list] | None = None


def _expose() -> list[list]:
    """The interpreter trees the sandbox uid must read but cannot reach.

    [[hidden_dir, [tree, ...]], ...] where hidden_dir is the topmost ancestor of an
    interpreter tree that other users cannot traverse.
    """
    global _expose_cache
    if _expose_cache is None:
        trees = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        groups: dict[str, set[str]] = {}
        for tree in trees:
            hidden = _topmost_untraversable(tree)
            if hidden:
                groups.setdefault(hidden, set()).add(tree)
        _expose_cache = [[h, sorted(_outermost(ts))] for h, ts in sorted(groups.items())]
    return _expose_cache


def _topmost_untraversable(path: str) -> str | None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _outermost(paths: set[str]) -> list[str]:
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]


# --------------------------------------------------------------------------------------
# Fork servers: started on demand, one per concurrently running program and mode, kept
# idle in a pool between programs, replaced when one dies.

_SERVER_START_S = 30.0  # how long a new server may take to import its modules


class _Server:
    """A fork server (``_SERVER``) and our end of its control socket."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-I", "-S", "-c", _SERVER]
        if mode == "userns":
            # --pid --fork: the server is PID 1 of a PID namespace of its own user namespace,
            # so it may setns() back to it after unsharing one for each program's init.
            cmd = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
                   "--", *cmd]  # fmt: skip
        boot = {
            "mode": mode,
            "site": [p for p in site.getsitepackages() if os.path.isdir(p)],  # we start it -S
            "expose": _expose() if mode == "root" else [],
            "sock": theirs.fileno(),
        }
        with theirs:
            # Own session: a Ctrl-C meant for us must not reach the server or its programs.
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),), env=_ENV, cwd="/", start_new_session=True,
            )  # fmt: skip
        self.sock = ours
        self._handshake(marshal.dumps(boot))

    def _handshake(self, boot: bytes) -> None:
        assert self.proc.stdin and self.proc.stderr
        try:
            with self.proc.stdin:
                self.proc.stdin.write(boot)
            self.sock.settimeout(_SERVER_START_S)
            ready = self.sock.recv(1) == b"+"
        except OSError:
            ready = False
        if not ready:
            self.stop()
            why = _last_line(self.proc.stderr.read()) or "no reason given"
            raise RuntimeError(f"sandbox server ({self.mode}) did not start: {why}")
        self.sock.settimeout(None)
        self.proc.stderr.close()  # it writes nothing from now on but a crash's traceback

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, fds: list[int]) -> bool:
        """Ask for a new sandbox on ``fds``; False if the server is gone."""
        try:
            socket.send_fds(self.sock, [b"R"], fds)
            return True
        except OSError:
            return False

    def kill_program(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b"K")

    def stop(self) -> None:
        """Kill the server; the parent-death signals take its programs down too."""
        self.sock.close()
        if self.alive():
            self.proc.kill()
        self.proc.wait()


_idle: dict[str, list[_Server]] = {}
_idle_lock = threading.Lock()


@contextlib.contextmanager
def _server(mode: str) -> Iterator[_Server]:
    """A live server for ``mode``, for one program; back to the pool afterwards if alive."""
    with _idle_lock:
        pool = _idle.setdefault(mode, [])
        server = pool.pop() if pool else None
    if server is not None and not server.alive():
        server.stop()
        server = None
    server = server or _Server(mode)
    try:
        yield server
    finally:
        if server.alive():
            with _idle_lock:
                _idle[mode].append(server)
        else:
            server.stop()


@atexit.register
def _stop_servers() -> None:
    with _idle_lock:
        servers = [s for pool in _idle.values() for s in pool]
        _idle.clear()
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------------------
# uid leases: a uid is held by one running program at a time, across processes too (a
# lock file per uid), so concurrent programs never share an NPROC budget or can signal
# each other.


@contextlib.contextmanager
def _uid_lease(slot: int) -> Iterator[int]:
    lock_dir = "/run/ssd-tui-sandbox" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for i in range(UID_COUNT):
        uid = UID_BASE + (slot + i) % UID_COUNT
        if _uid_taken(uid):
            continue
        fd = os.open(os.path.join(lock_dir, f"uid-{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise RuntimeError(f"sandbox: all uids {UID_BASE}..{UID_BASE + UID_COUNT - 1} are in use")


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True  # a real account: never borrow it
    except KeyError:
        return False


def _count_processes(uid: int) -> int:
    """Processes whose real uid is ``uid`` (for the no-namespace fallback's NPROC)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Uid:"):
                            n += int(line.split()[1]) == uid
                            break
            except OSError:
                continue
    return n


# --------------------------------------------------------------------------------------
# Running one program.


def run_program(
    code: str, limits: Limits | None = None, slot: int = 0, iso: Isolation | None = None
) -> ExecResult:
    """Run ``code`` in the sandbox; ``slot`` (0..workers-1) picks its uid when parallel.

    ``iso``: from ``choose_isolation``; by default the strongest that works here.
    """
    iso = iso or choose_isolation("auto")
    return _run(code, limits or Limits(), slot, iso.mode, cgroup=iso.cgroup > 0)


def _run(code: str, limits: Limits, slot: int, mode: str, cgroup: bool | None = None) -> ExecResult:
    """``cgroup``: give the program its own cgroup (None: where cgroups work)."""
    with contextlib.ExitStack() as stack:
        uid = stack.enter_context(_uid_lease(slot)) if mode == "root" else None
        setup = _cgroups() if cgroup is not False else None
        if cgroup and not isinstance(setup, _CgroupSetup):
            raise RuntimeError(f"sandbox: no cgroup per program: {setup}")
        cg = _ProgramCgroup(setup, limits) if isinstance(setup, _CgroupSetup) else None
        if cg is not None:
            stack.callback(cg.remove)  # after the program: its PID namespace is gone by then
        if mode == "none":
            workdir = stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
        else:
            workdir = ""  # the init makes one in its private /tmp
        # "none": NPROC counts every process of our uid, so allow for those already running
        nproc = limits.nproc + (_count_processes(os.getuid()) if mode == "none" else 0)
        cfg = {
            "uid": uid,
            "workdir": workdir,
            "tmpdir": workdir or "/tmp",
            "cpu_s": math.ceil(limits.cpu_s),
            "memory_mb": math.ceil(limits.memory_mb),
            "file_size_mb": math.ceil(limits.file_size_mb),
            "open_files": math.ceil(limits.open_files),
            "nproc": int(nproc),
            "alarm_s": math.ceil(limits.timeout_s) + 2,
            "cgroups": cg.procs if cg else [],
            "code": code,
        }
        # A server that dies under a program (killed, crashed) loses nothing but time: the
        # program runs again on a new one. Twice in a row is reported, not retried.
        for _ in range(2):
            with _server(mode) as server:
                result = _attempt(server, cfg, limits, cg)
            if result is not None:
                return result
    return ExecResult("error", "sandbox failed: its server died twice", 0.0, "", "", None)


def _attempt(
    server: _Server, cfg: dict, limits: Limits, cg: _ProgramCgroup | None
) -> ExecResult | None:
    """Run one program on ``server``; None if the server died before it could report."""
    nonce = secrets.token_hex(16)
    pipes = [os.pipe() for _ in range(5)]  # config, stdout, stderr, status, result
    start = time.monotonic()
    try:
        started = server.start([pipes[0][0]] + [w for _, w in pipes[1:]])
    finally:
        for fd in [pipes[0][0]] + [w for _, w in pipes[1:]]:
            os.close(fd)
    ours = [pipes[0][1]] + [r for r, _ in pipes[1:]]
    if not started:
        for fd in ours:
            os.close(fd)
        return None
    config = marshal.dumps({**cfg, "nonce": nonce})
    out, timed_out = _pump(server, ours, config, limits, start, cg.cpu_s if cg else None)
    reported = {"wait", "expired", "setup_error"} & _status_report(out.status).keys()
    if not timed_out and not reported and not server.alive():
        return None  # the server died under it: run it again
    if cg is not None:
        out.oom_kills, out.cgroup_cpu = cg.oom_kills(), cg.cpu_s()
    return _classify(out, timed_out, nonce, limits, time.monotonic() - start)


@dataclass
class _Output:
    stdout: bytes = b""
    stderr: bytes = b""
    status: bytes = b""  # from the sandbox's init: trusted
    result: bytes = b""  # from the program's process: the nonce, or an exception record
    dropped_out: int = 0
    dropped_err: int = 0
    cpu_exceeded: bool = False  # killed by us: its processes together used cpu_s
    oom_kills: int = 0  # processes its cgroup's memory limit killed
    cgroup_cpu: float | None = None  # CPU seconds its cgroup counted


def _pump(
    server: _Server,
    fds: list[int],
    config: bytes,
    limits: Limits,
    start: float,
    cpu_used: Callable[[], float | None] | None = None,
) -> tuple[_Output, bool]:
    """Feed the config, collect capped output from four pipes, enforce the wall-clock timeout
    and (given ``cpu_used``, the program's cgroup counter) the CPU limit of all its processes.

    ``fds``: the config pipe's write end, then the read ends of stdout, stderr, status and
    result. Output beyond the cap is read and thrown away, so the program never blocks on
    a full pipe and we never hold more than the cap in memory. Returns (output, timed_out).
    """
    fds = list(fds)  # what is still ours to close
    in_fd, out_fd, err_fd, status_r, result_r = fds
    caps = {out_fd: limits.output_bytes, err_fd: limits.output_bytes}
    caps |= {status_r: _CHANNEL_CAP, result_r: _CHANNEL_CAP}
    bufs = {fd: bytearray() for fd in caps}
    dropped = dict.fromkeys(caps, 0)
    sel = selectors.DefaultSelector()
    for fd in caps:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    os.set_blocking(in_fd, False)
    sel.register(in_fd, selectors.EVENT_WRITE)
    pending = memoryview(config)
    deadline = start + _SETUP_S + limits.timeout_s  # until the init says it is ready
    timed_out = cpu_exceeded = False
    kills = 0  # kill requests sent: the first asks the init, the second kills it
    exited_at = None  # when the init closed the status pipe: it has exited
    # The program cannot use cpu_s of CPU before cpu_s / cores of wall time: look then (a
    # short program never pays a read), and again when what is left could be used up.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu_check = math.inf  # from when the program starts
    try:
        while sel.get_map():
            now = time.monotonic()
            if exited_at is not None and now > exited_at + 1.0:
                break  # without namespaces an escaped grandchild may hold the pipes open
            if now >= cpu_check and not kills and cpu_used:
                used = cpu_used() or 0.0
                cpu_check = now + max(0.05, (limits.cpu_s - used) / (cores or 1))
                if used >= limits.cpu_s:
                    cpu_exceeded, kills = exited_at is None, 1
                    server.kill_program()
                    deadline = now + _ASK_GRACE_S
            if now >= deadline:
                if kills == 2:
                    server.stop()  # it did not kill the program in time: the hard way
                    break
                if kills == 0:
                    timed_out = exited_at is None
                kills += 1
                server.kill_program()
                deadline = now + (_ASK_GRACE_S if kills == 1 else _DRAIN_GRACE_S)
            wait = min(deadline, cpu_check) - now
            for key, _ in sel.select(timeout=max(0.0, min(wait, 0.5))):
                if key.fd == in_fd:
                    pending = _feed(in_fd, pending)
                    if not pending:  # all written: the init reads to end of file
                        sel.unregister(in_fd)
                        os.close(fds.pop(0))
                    continue
                chunk = _read(key.fd)
                if chunk == b"":
                    sel.unregister(key.fd)
                    if key.fd == status_r:
                        exited_at = time.monotonic()
                elif chunk:
                    if key.fd == status_r and not bufs[status_r] and not kills:
                        # the init's first word, "ready": the program starts now
                        deadline = time.monotonic() + limits.timeout_s
                        if cpu_used:
                            cpu_check = time.monotonic() + limits.cpu_s / (cores or 1)
                    room = max(0, caps[key.fd] - len(bufs[key.fd]))
                    bufs[key.fd] += chunk[:room]
                    dropped[key.fd] += len(chunk) - len(chunk[:room])
    finally:
        sel.close()
        for fd in fds:
            os.close(fd)
    output = _Output(
        bytes(bufs[out_fd]), bytes(bufs[err_fd]), bytes(bufs[status_r]), bytes(bufs[result_r]),
        dropped[out_fd], dropped[err_fd], cpu_exceeded,
    )  # fmt: skip
    return output, timed_out


def _feed(fd: int, pending: memoryview) -> memoryview:
    """Write what the pipe takes of ``pending``; what is left."""
    try:
        return pending[os.write(fd, pending) :]
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        return pending[:0]  # it died before reading its config: the status will say so


def _read(fd: int) -> bytes | None:
    """A chunk, b"" at end of file, None when nothing is ready after all."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


# --------------------------------------------------------------------------------------
# Verdicts.

_SIGNAL_HINTS = {
    signal.SIGSEGV: "segmentation fault (e.g. runaway recursion)",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGKILL: "killed",
    signal.SIGABRT: "aborted",
}


def _classify(
    out: _Output, timed_out: bool, nonce: str, limits: Limits, duration: float
) -> ExecResult:
    report = _status_report(out.status)
    cpu = out.cgroup_cpu if out.cgroup_cpu is not None else report.get("tree_cpu")

    def result(status: str, message: str, returncode: int | None) -> ExecResult:
        return ExecResult(
            status, _one_line(message), duration, _text(out.stdout, out.dropped_out),
            _text(out.stderr, out.dropped_err), returncode,
            float(cpu) if isinstance(cpu, (int, float)) else None,
        )  # fmt: skip

    if out.oom_kills:
        # The cause, whatever happened after (a timeout, a pass of the processes left).
        return result(
            "error", f"memory limit exceeded ({limits.memory_mb} MB, all its processes)", None
        )
    if out.cpu_exceeded:
        return result(
            "timeout", f"CPU time limit exceeded ({limits.cpu_s} s, all its processes)", None
        )
    if timed_out:
        return result("timeout", f"timed out after {limits.timeout_s:g} s", None)
    if not {"wait", "expired", "setup_error"} & report.keys():
        tail = _last_line(out.stderr) or "no report from the sandbox"
        return result("error", f"sandbox failed: {tail}", None)
    if report.get("expired"):
        return result("timeout", f"timed out after {limits.timeout_s:g} s (sandbox alarm)", None)
    if "setup_error" in report:
        return result("error", f"sandbox setup failed: {report['setup_error']}", None)
    wait = int(report["wait"])
    if os.WIFSIGNALED(wait):
        sig = os.WTERMSIG(wait)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and report["cpu"] >= limits.cpu_s):
            return result("timeout", f"CPU time limit exceeded ({limits.cpu_s} s)", -sig)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = _SIGNAL_HINTS.get(sig)
        return result("error", f"killed by {name}" + (f": {hint}" if hint else ""), -sig)
    code = os.WEXITSTATUS(wait)
    lines = out.result.split(b"\n")
    if code == 0 and nonce.encode() in lines:
        return result("passed", "", 0)
    if code == 0:
        return result("error", "exited before tests finished (exit status 0)", 0)
    record = _last_record(lines)
    if record:
        return result(record[0], record[1], code)
    tail = _last_line(out.stderr)
    return result("error", f"exited with status {code}" + (f": {tail}" if tail else ""), code)


def _status_report(data: bytes) -> dict:
    """The status pipe's records merged: the init's (wait status, CPU of the program; or
    expired, or setup_error) and the server's (tree_cpu), one JSON object a line."""
    report: dict = {}
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            report.update(record)
    return report


def _last_record(lines: list[bytes]) -> tuple[str, str] | None:
    """The harness's exception record (the last one: the program may have written others)."""
    for line in reversed(lines):
        if line.startswith(b"E "):
            try:
                kind, msg = json.loads(line[2:])
            except (ValueError, TypeError):
                continue
            if kind in ("failed", "error") and isinstance(msg, str):
                return kind, msg
    return None


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return text + (f"\n[... {dropped} more bytes discarded]" if dropped else "")


def _last_line(data: bytes) -> str:
    lines = [ln for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _one_line(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


# --------------------------------------------------------------------------------------
# Many programs in parallel.


def run_many(
    programs: Sequence[str],
    limits: Limits | None = None,
    workers: int | None = None,
    iso: Isolation | None = None,
) -> Iterator[tuple[int, ExecResult]]:
    """Run ``programs`` in parallel; yield (index, result) as each finishes.

    ``iso``: from ``choose_isolation``; by default the strongest that works here.
    """
    limits = limits or Limits()
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs) or 1))
    iso = iso or choose_isolation("auto")  # detect once, before the threads race for it
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for s in range(workers):
        slots.put(s)

    def one(code: str) -> ExecResult:
        slot = slots.get()
        try:
            return run_program(code, limits, slot, iso)
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        futures = {pool.submit(one, code): i for i, code in enumerate(programs)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
