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

Where namespaces are not available (not root and no user namespaces) the same tree runs
without them (rlimits + a process group) and we warn once. See docs/sandbox.md for the
threat model.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import marshal
import math
import os
import pwd
import queue
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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

log = logging.getLogger(__name__)

UID_BASE = 61000  # sandbox uids: UID_BASE + k, one per concurrently running program
UID_COUNT = 1000
MESSAGE_CHARS = 300  # ExecResult.message is one line of at most this many characters
_CHANNEL_CAP = 65536  # bytes kept from the status and result channels
_DRAIN_GRACE_S = 5.0  # after a kill, how long we wait for the pipes to close
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
    cpu_s: int = 10  # CPU seconds of the main process (RLIMIT_CPU)
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 16  # largest file it may write (RLIMIT_FSIZE); also sizes its /tmp
    nproc: int = 64  # processes + threads of its uid (RLIMIT_NPROC)
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
        if cfg["mode"] in ("root", "userns"):
            setup_mounts(cfg)
        workdir = cfg["workdir"] or os.path.join("/tmp", "sandbox-" + os.urandom(6).hex())
        if not cfg["workdir"]:
            os.mkdir(workdir, 0o700)
            if cfg["uid"] is not None:
                os.chown(workdir, cfg["uid"], cfg["uid"])
    except OSError as e:
        setup_error(e)
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

    signal.signal(signal.SIGALRM, expire)
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

def kill_init(current, mode):
    # Never reaped before finish(), so neither pid can be a recycled one.
    pid, pidfd = current[0], current[1]
    if mode == "none":
        try:
            os.killpg(pid, signal.SIGKILL)  # no namespace to take the program down with it
        except OSError:
            pass  # not yet its own group: then it has not forked the program either
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass

def finish(current):
    # The init has exited; outside "none" mode the kernel has then already killed and
    # reaped every other process of its PID namespace. Only now does the status pipe's
    # last writer go: its end of file tells our caller that nothing of the program is left.
    pid, pidfd, held = current
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
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
            kill_init(current, mode)
        elif msg == b"R" and len(fds) == 5:
            if current:  # our caller gave up on the last one without a kill: end it first
                kill_init(current, mode)
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
# Isolation mode: "root" (namespaces + uid drop), "userns" (namespaces in a user namespace,
# capabilities dropped), "none" (rlimits + process group only).

_mode: str | None = None
_mode_lock = threading.Lock()


def isolation() -> str:
    """The isolation this machine gives sandboxed programs (detected once, by a test run)."""
    global _mode
    with _mode_lock:
        if _mode is None:
            _mode = _detect_mode()
    return _mode


def _detect_mode() -> str:
    # root mode unshares through libc; only userns mode needs util-linux `unshare`
    candidates = (["root"] if os.geteuid() == 0 else []) + (
        ["userns"] if shutil.which("unshare") else []
    )
    for mode in candidates:
        try:
            probe = _run("pass", Limits(timeout_s=20), 0, mode)
        except Exception as e:  # e.g. no free uid, the server could not start
            log.debug("sandbox mode %s unavailable: %s", mode, e)
            continue
        if probe.status == "passed":
            log.debug("sandbox isolation: %s", mode)
            return mode
        log.debug("sandbox mode %s unavailable: %s %s", mode, probe.message, probe.stderr[-300:])
    log.warning(
        "sandbox: Linux namespaces are unavailable (need root or unprivileged user "
        "namespaces, and the util-linux `unshare`); untrusted programs run with resource "
        "limits and a process group only: they can read and write your files and use the "
        "network. See docs/sandbox.md."
    )
    return "none"


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


def run_program(code: str, limits: Limits | None = None, slot: int = 0) -> ExecResult:
    """Run ``code`` in the sandbox; ``slot`` (0..workers-1) picks its uid when parallel."""
    return _run(code, limits or Limits(), slot, isolation())


def _run(code: str, limits: Limits, slot: int, mode: str) -> ExecResult:
    with contextlib.ExitStack() as stack:
        uid = stack.enter_context(_uid_lease(slot)) if mode == "root" else None
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
            "code": code,
        }
        # A server that dies under a program (killed, crashed) loses nothing but time: the
        # program runs again on a new one. Twice in a row is reported, not retried.
        for _ in range(2):
            with _server(mode) as server:
                result = _attempt(server, cfg, limits)
            if result is not None:
                return result
    return ExecResult("error", "sandbox failed: its server died twice", 0.0, "", "", None)


def _attempt(server: _Server, cfg: dict, limits: Limits) -> ExecResult | None:
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
    out, timed_out = _pump(server, ours, marshal.dumps({**cfg, "nonce": nonce}), limits, start)
    if not timed_out and not out.status and not server.alive():
        return None
    return _classify(out, timed_out, nonce, limits, time.monotonic() - start)


@dataclass
class _Output:
    stdout: bytes = b""
    stderr: bytes = b""
    status: bytes = b""  # from the sandbox's init: trusted
    result: bytes = b""  # from the program's process: the nonce, or an exception record
    dropped_out: int = 0
    dropped_err: int = 0


def _pump(
    server: _Server, fds: list[int], config: bytes, limits: Limits, start: float
) -> tuple[_Output, bool]:
    """Feed the config, collect capped output from four pipes, enforce the wall-clock timeout.

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
    deadline = start + limits.timeout_s
    timed_out = killed = False
    exited_at = None  # when the init closed the status pipe: it has exited
    try:
        while sel.get_map():
            now = time.monotonic()
            if exited_at is not None and now > exited_at + 1.0:
                break  # without namespaces an escaped grandchild may hold the pipes open
            if now >= deadline:
                if killed:
                    server.stop()  # it did not kill the program in time: the hard way
                    break
                timed_out, killed = exited_at is None, True
                server.kill_program()
                deadline = now + _DRAIN_GRACE_S
            for key, _ in sel.select(timeout=min(deadline - now, 0.5)):
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
                    room = max(0, caps[key.fd] - len(bufs[key.fd]))
                    bufs[key.fd] += chunk[:room]
                    dropped[key.fd] += len(chunk) - len(chunk[:room])
    finally:
        sel.close()
        for fd in fds:
            os.close(fd)
    output = _Output(
        bytes(bufs[out_fd]), bytes(bufs[err_fd]), bytes(bufs[status_r]), bytes(bufs[result_r]),
        dropped[out_fd], dropped[err_fd],
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
    def result(status: str, message: str, returncode: int | None) -> ExecResult:
        return ExecResult(
            status, _one_line(message), duration, _text(out.stdout, out.dropped_out),
            _text(out.stderr, out.dropped_err), returncode,
        )  # fmt: skip

    if timed_out:
        return result("timeout", f"timed out after {limits.timeout_s:g} s", None)
    try:
        report = json.loads(out.status)
    except ValueError:
        report = None
    if not isinstance(report, dict):
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
    programs: Sequence[str], limits: Limits | None = None, workers: int | None = None
) -> Iterator[tuple[int, ExecResult]]:
    """Run ``programs`` in parallel; yield (index, result) as each finishes."""
    limits = limits or Limits()
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs) or 1))
    isolation()  # detect once, before the threads race for it
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for s in range(workers):
        slots.put(s)

    def one(code: str) -> ExecResult:
        slot = slots.get()
        try:
            return run_program(code, limits, slot)
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        futures = {pool.submit(one, code): i for i, code in enumerate(programs)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
