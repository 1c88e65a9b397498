"""The sandbox's fork server: a clean interpreter that starts each untrusted program.

``ssd_tui.evaluation.sandbox`` runs this file as a script (``python -I -S sandbox_server.py``), one
server per concurrently running program; it must therefore import nothing but the standard
library (and ``pyseccomp`` from the site-packages directories it is told about). It never
runs program code itself: every program runs in a fresh fork of it, so nothing a program
changes (builtins, sys.modules, a patched module) reaches the server or the next program.

Process tree of one program::

    ssd-tui ── server (root, host namespaces, own session; long-lived)
                 └─ init (root, PID 1 of a new PID namespace; new mount/net/IPC/UTS
                      │   namespaces): builds the program's file system view, reaps, reports
                      └─ program (uid 61000+k, rlimits, no_new_privs, seccomp filter, PID 2)

Protocol, on a socketpair with the caller: the server writes b"+" once ready; then each
b"R" carries five fds (SCM_RIGHTS): the config pipe's read end (marshal, from the caller:
code, nonce, limits), stdout, stderr, the status pipe (init -> caller: trusted) and the
result pipe (program -> caller: nonce or exception record). b"K" ends the running
program: the first asks its init to kill and reap its namespace, the next kills the init
(and with it its PID namespace; its process group in "none" mode); b"X" kills the init at
once. The status pipe reaches end of file only when the init is gone: the server holds a
copy until then. End of file on the socket (the caller closed it, or died) makes the
server exit, and the parent-death signal takes the program it started down with it.
"""

# The modules programs commonly import are loaded once here, so that a program's fork finds
# them ready (HumanEval's prompts import typing, math, random, copy, string, collections,
# re, hashlib); the server itself uses only a few of them.
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import copy  # noqa: F401
import ctypes
import errno
import fcntl
import functools  # noqa: F401
import gc
import hashlib  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import marshal
import math  # noqa: F401
import operator  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import signal
import socket
import string  # noqa: F401
import sys
import typing  # noqa: F401

LIBC = ctypes.CDLL(None, use_errno=True)
# Resolved once here rather than in every fork (each child would look them up afresh).
for _name in ("mount", "umount2", "syscall", "prctl", "capset", "unshare", "setns"):
    getattr(LIBC, _name)
U64x4, U32x2, U32x6 = ctypes.c_uint64 * 4, ctypes.c_uint32 * 2, ctypes.c_uint32 * 6
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
# os.unshare/os.setns only exist from Python 3.12. The server unshares CLONE_NEWPID (it
# applies to its next child only); the init unshares the rest for itself.
CLONE_NEWPID = 0x20000000
NEW_NAMESPACES = 0x20000 | 0x04000000 | 0x08000000 | 0x40000000  # NEWNS | NEWUTS | NEWIPC | NEWNET
PR_SET_PDEATHSIG = 1
# pivot_root has no glibc wrapper, and its number differs between architectures.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
C = ctypes.c_long
# fds of a sandbox (the init moves the five it receives, and its alive pipe, here)
CONFIG_FD, STATUS_FD, RESULT_FD, ALIVE_FD = 0, 3, 4, 5
# In the init's private mount namespace a fresh tmpfs mounted here becomes the program's "/".
NEW_ROOT = "/tmp"
DEVICES = ("null", "zero", "random", "urandom")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))  # fmt: skip

FILTER = None  # the seccomp filter every program loads (built once, at boot): (prog, code)
FILTER_ERROR = ""  # why there is none


def _ok(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s):
    return None if s is None else s.encode()


def mount(src, target, fstype, flags, data=None):
    _ok(
        LIBC.mount(_b(src), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        "mount " + target,
    )


def all_read_only(path):
    # mount_setattr(AT_FDCWD, path, AT_RECURSIVE, {MOUNT_ATTR_RDONLY}): every mount below it
    attr = U64x4(1, 0, 0, 0)
    if LIBC.syscall(C(442), C(-100), _b(path), C(0x8000), attr, C(ctypes.sizeof(attr))) != 0:
        # kernel < 5.12: the root mount only (its binds are read-only already)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def tmpfs(path, size_mb, mode="1777"):
    mount(
        "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,nr_inodes=4096,mode={mode}"
    )


def bind(src, target, is_dir=None):
    # ``src`` (a folder, file or device) at ``target``; all_read_only makes it read-only.
    if os.path.isdir(src) if is_dir is None else is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    mount(src, target, None, MS_BIND | MS_REC)


def hide(path):
    # A tree or file the program must not read (the run's problem files, our own package)
    # that lies inside something bound: an empty tmpfs over a folder, /dev/null over a file.
    if os.path.isdir(path):
        tmpfs(path, 1, mode="755")
    elif os.path.lexists(path):
        mount("/dev/null", path, None, MS_BIND)


def pivot_root():
    # pivot_root(".", "."): the old root ends up on top of the new one; detaching it leaves
    # the new root alone, with no path back to the host's file system.
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown on {os.uname().machine}")
    _ok(LIBC.syscall(C(number), b".", b"."), "pivot_root")
    _ok(LIBC.umount2(b".", ctypes.c_int(MNT_DETACH)), "umount old root")
    os.chdir("/")


def setup_mounts(cfg):
    """The program's whole file system: a fresh tmpfs root holding read-only binds of what
    the interpreter needs (cfg["view"]), a few devices, its own /proc, and private,
    size-limited tmpfs on /tmp, /var/tmp and /dev/shm. Nothing else of the host is there."""
    # Private first: with shared propagation (systemd's default) our mounts would reach the host.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    os.umask(0o022)
    view = cfg["view"]
    # Each source is opened before the new root's tmpfs covers NEW_ROOT (/tmp): a tree
    # under it (a virtualenv in /tmp) is hidden by then, but binds from its descriptor.
    held = [(os.open(src, os.O_PATH | os.O_CLOEXEC), os.path.isdir(src), dst)
            for src, dst in view["binds"]]  # fmt: skip
    tmpfs(NEW_ROOT, 1, mode="755")
    for fd, is_dir, dst in held:
        bind(f"/proc/self/fd/{fd}", NEW_ROOT + dst, is_dir)
        os.close(fd)
    for path, target in view["links"]:
        os.makedirs(os.path.dirname(NEW_ROOT + path), exist_ok=True)
        os.symlink(target, NEW_ROOT + path)
    dev = NEW_ROOT + "/dev"
    os.makedirs(dev + "/shm", exist_ok=True)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            bind("/dev/" + name, f"{dev}/{name}")
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    for path in ("/proc", "/tmp", "/var/tmp"):
        os.makedirs(NEW_ROOT + path, exist_ok=True)
    mount(
        "proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC
    )  # this PID namespace's own
    for path in cfg["hide"]:
        hide(NEW_ROOT + path)
    os.chdir(NEW_ROOT)
    pivot_root()
    all_read_only("/")
    sizes = {"/tmp": 4 * cfg["file_size_mb"], "/var/tmp": cfg["file_size_mb"]}
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        # The program's own scratch space; a bound tree inside it (a virtualenv in /tmp)
        # is bound again on top, read-only, from a descriptor opened before it is covered.
        inside = [dst for _, dst in view["binds"] if dst.startswith(path + "/")]
        held = [(os.open(dst, os.O_PATH | os.O_CLOEXEC), os.path.isdir(dst), dst)
                for dst in inside]  # fmt: skip
        tmpfs(path, sizes.get(path, cfg["file_size_mb"]))
        for fd, is_dir, dst in held:
            bind(f"/proc/self/fd/{fd}", dst, is_dir)
            os.close(fd)
            all_read_only(dst)


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


def build_filter(policy):
    """The seccomp filter of every program, from the caller's policy (see
    ``sandbox.SECCOMP_POLICY``): allow all but what is listed. libseccomp compiles it; we
    keep its BPF and the ``struct sock_fprog`` that a program's process hands to prctl
    (generating the BPF at each load would cost ~0.5 ms a program)."""
    import tempfile

    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    for name in policy["deny"]:
        try:
            f.add_rule(deny, name)
        except (OSError, RuntimeError, ValueError):
            pass  # not a system call of this architecture
    # socket(2)/socketpair(2): only the families a test program may use. Ranges rather
    # than one rule per family: libseccomp ANDs the conditions of a rule.
    allowed = sorted(policy["socket_families"])
    for call in ("socket", "socketpair"):
        f.add_rule(deny, call, sc.Arg(0, sc.GT, allowed[-1]))
        for family in range(allowed[-1]):
            if family not in allowed:
                f.add_rule(deny, call, sc.Arg(0, sc.EQ, family))
    # New namespaces: clone(2) with any CLONE_NEW* flag. clone3 passes its flags in memory a
    # filter cannot read: ENOSYS makes the C library fall back to clone (as container
    # runtimes do).
    for flag in policy["clone_flags"]:
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        bpf = out.read()
    if not bpf or len(bpf) % 8:
        raise OSError(errno.EINVAL, f"libseccomp exported {len(bpf)} bytes of BPF")
    code = ctypes.create_string_buffer(bpf, len(bpf))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    return SockFprog(
        len(bpf) // 8, ctypes.addressof(code)
    ), code  # the program keeps its code alive


def load_filter():
    # prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog); no_new_privs is set already
    _ok(LIBC.prctl(C(22), C(2), ctypes.byref(FILTER[0]), C(0), C(0)), "seccomp")


def js(s, ord=ord):
    # A JSON string literal: control characters, quotes, backslashes and lone surrogates
    # escaped. ``ord`` is bound here: a program may replace builtins.ord before we report.
    return (
        '"'
        + "".join(
            c
            if c >= " " and c not in '"\\' and not "\ud800" <= c <= "\udfff"
            else f"\\u{ord(c):04x}"
            for c in s
        )
        + '"'
    )


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


def refused(e):
    """For an EPERM error, where the sandbox refused it: " (not permitted in the sandbox:
    socket family AF_VSOCK)". The innermost frame names the call; a program could forge
    it, but it only words its own error message."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return " (not permitted in the sandbox)"
    frame = tb.tb_frame
    where = f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"
    if where == "socket.__init__":
        family = frame.f_locals.get("family")
        try:
            where = "socket family " + socket.AddressFamily(family).name
        except (ValueError, TypeError):
            where = f"socket family {family!r}"
    elif where.startswith("__sandbox__."):
        where = f"line {tb.tb_lineno}"
    return f" (not permitted in the sandbox: {where})"


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
    if cfg["seccomp"]:
        if FILTER is None:
            raise OSError(errno.ENOSYS, f"no seccomp filter: {FILTER_ERROR}")
        load_filter()  # last: it refuses mount and namespace calls, which are done by now
    os.environ.update(HOME=workdir, TMPDIR=cfg["tmpdir"])


def run(code, nonce):
    # Everything used after the program runs is bound here, before it can patch anything.
    write, exit_, AE, line_of, result_fd = (
        os.write,
        os._exit,
        AssertionError,
        exception_line,
        RESULT_FD,
    )
    dumps, print_exc, stderr, flush_all, why = (
        js,
        sys.__excepthook__,
        sys.__stderr__,
        _flush_all,
        refused,
    )
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
                if isinstance(e, PermissionError) and e.errno == errno.EPERM:
                    msg += why(e)
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
        write(
            result_fd, b"E [" + dumps(kind).encode() + b", " + dumps(msg[:1000]).encode() + b"]\n"
        )
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
        # there: the program and everything it starts are counted there as a whole.
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
            os.write(
                RESULT_FD, ('E ["error", ' + js(f"sandbox setup failed: {e}") + "]\n").encode()
            )
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
    os.write(STATUS_FD, f'{{"wait": {status}, "cpu": {float(cpu)!r}}}'.encode())
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
    global FILTER, FILTER_ERROR
    boot = marshal.loads(sys.stdin.buffer.read())
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    sys.path += [p for p in boot.pop("site") if p not in sys.path]
    sock = socket.socket(fileno=boot.pop("sock"))
    mode = boot["mode"]
    try:
        FILTER = build_filter(boot.pop("seccomp"))
    except Exception as e:  # no pyseccomp, no libseccomp: programs asking for it fail to start
        FILTER_ERROR = f"{type(e).__name__}: {e}"
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
        if msg in (b"K", b"X") and current:
            kill_init(current, mode, hard=asked or msg == b"X")
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


if __name__ == "__main__":
    serve()
