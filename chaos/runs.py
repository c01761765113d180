"""The chaos runs of this machine: run ids claimed with an flock, and the clean-up of what crashed
runs left behind.

A run ``r`` of prefix ``p`` (1-4 lowercase letters; tests use their own) owns the id while it
holds an exclusive flock on ``LOCK_DIR/<p><r>.lock``, and names everything after it: namespaces
``<p><r>n<i>``, veths ``<p><r>v<i>``, the bridge ``<p>br<r>`` (network.py) and lazyfs mounts
whose source is ``raftlog-lazyfs-<p><r>n<i>`` (lazymount.py). Concurrent runs therefore never
collide, and a run that crashed hard (SIGKILL) is recognisable: its names exist, its lock is
free. ``cleanup_stale()`` removes those, never a live run's.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Set
from pathlib import Path

from raftlog.client.processes import is_dead

from .lazymount import cleanup_stale_mounts, mounts
from .network import NetnsError, check_available, ip, links, namespaces, netns_pids

__all__ = [
    "LOCK_DIR",
    "RUN_ID_MAX",
    "RunLock",
    "check_prefix",
    "claim_run_id",
    "cleanup_stale",
    "delete_run_resources",
    "lazyfs_source_prefix",
    "names_by_run",
]

logger = logging.getLogger(__name__)

RUN_ID_MAX = 250
LOCK_DIR = Path(tempfile.gettempdir()) / "raftlog-netns-locks"

_PREFIX_RE = re.compile(r"[a-z]{1,4}")


def check_prefix(prefix: str) -> None:
    # Interface names are at most 15 bytes: "<prefix>br250" and "<prefix>250v9" stay well inside.
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"prefix must be 1-4 lowercase letters, not {prefix!r}")


class RunLock:
    """An exclusive flock on ``LOCK_DIR/<prefix><run>.lock``: held for a run's whole life.

    The lock files are never unlinked (unlinking a locked file lets a second process lock a new
    inode of the same name); there are at most ``RUN_ID_MAX`` of them per prefix.
    """

    def __init__(self, prefix: str, run_id: int) -> None:
        self.path = LOCK_DIR / f"{prefix}{run_id}.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def claim_run_id(prefix: str, usable: Callable[[int], bool]) -> tuple[int, RunLock]:
    """The first free run id (starting from one derived from our PID) whose lock we get and for
    which ``usable(run_id)`` — called with the lock held, e.g. to create the run's bridge —
    says yes. Ids with leftovers are skipped (``cleanup_stale`` removes them). An exception of
    ``usable`` releases the lock and propagates."""
    taken = names_by_run(prefix)
    start = (os.getpid() % RUN_ID_MAX) + 1
    for step in range(RUN_ID_MAX):
        run_id = (start + step - 1) % RUN_ID_MAX + 1
        if run_id in taken:
            continue  # leftovers (or a live run): cleanup_stale() removes the former
        lock = RunLock(prefix, run_id)
        if not lock.try_acquire():
            continue
        try:
            ok = usable(run_id)
        except BaseException:
            lock.release()
            raise
        if ok:
            return run_id, lock
        lock.release()
    raise NetnsError(
        f"no free run id among 1..{RUN_ID_MAX} for prefix {prefix!r}: "
        "remove leftovers with raftlog.chaos.runs.cleanup_stale()"
    )


def names_by_run(prefix: str) -> dict[int, set[tuple[str, str]]]:
    """run id → {("netns"|"link", name)} of everything named like our runs."""
    p = re.escape(prefix)
    ns_re = re.compile(rf"{p}(\d{{1,3}})n\d+")
    link_re = re.compile(rf"{p}(\d{{1,3}})v\d+|{p}br(\d{{1,3}})")
    found: dict[int, set[tuple[str, str]]] = {}
    for name in namespaces():
        if m := ns_re.fullmatch(name):
            found.setdefault(int(m.group(1)), set()).add(("netns", name))
    for name in links():
        if m := link_re.fullmatch(name):
            run = int(m.group(1) or m.group(2))
            found.setdefault(run, set()).add(("link", name))
    return found


def _kill_namespace_processes(namespaces: Iterable[str], timeout_s: float = 5.0) -> list[int]:
    """SIGKILL, by PID, every process inside these (our own) namespaces; wait until gone."""
    me = os.getpid()
    pids = sorted({pid for ns in namespaces for pid in netns_pids(ns) if pid != me})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    for pid in pids:  # a zombie is dead; whoever started it reaps it (a Popen of ours, or init)
        while not is_dead(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return pids


def delete_run_resources(names: Set[tuple[str, str]]) -> list[str]:
    """Kill what runs inside, then delete veths, namespaces, bridges; return the names deleted."""
    namespaces = sorted(n for kind, n in names if kind == "netns")
    links = sorted(n for kind, n in names if kind == "link")
    _kill_namespace_processes(namespaces)
    deleted = []
    # veths first (synchronous; deleting a namespace frees its veth only asynchronously), the
    # bridge last; a prefix has no digits, so only veth names end in "v<digits>"
    for name in sorted(links, key=lambda n: re.search(r"v\d+$", n) is None):
        if ip("link", "del", name, check=False).returncode == 0:
            deleted.append(name)
    for name in namespaces:
        if ip("netns", "del", name, check=False).returncode == 0:
            deleted.append(name)
    return deleted


def cleanup_stale(prefix: str = "rl") -> list[str]:
    """Remove namespaces, veths and bridges left by crashed runs with this prefix.

    Only names of our exact shapes (``<prefix><r>n<i>``, ``<prefix><r>v<i>``, ``<prefix>br<r>``)
    are considered, and only runs whose lock is free (their owner is gone); processes still
    inside those namespaces (orphaned brokers) are killed by PID first. Returns what was deleted.
    """
    check_prefix(prefix)
    check_available()
    deleted: list[str] = []
    runs = names_by_run(prefix)
    for run_id in _lazyfs_runs(prefix):
        runs.setdefault(run_id, set())
    for run_id, names in sorted(runs.items()):
        lock = RunLock(prefix, run_id)
        if not lock.try_acquire():
            continue  # a live run owns it
        try:
            deleted += cleanup_stale_mounts(lazyfs_source_prefix(prefix, run_id))
            deleted += delete_run_resources(names)
        finally:
            lock.release()
    if deleted:
        logger.info("removed stale chaos network objects: %s", ", ".join(deleted))
    return deleted


def lazyfs_source_prefix(prefix: str, run_id: int) -> str:
    """The start of the source name of every lazyfs mount of run ``run_id`` (+ node id)."""
    return f"raftlog-lazyfs-{prefix}{run_id}n"


def _lazyfs_runs(prefix: str) -> set[int]:
    """Run ids of this prefix that have lazyfs mounts (by the mounts' source names)."""
    pattern = re.compile(rf"raftlog-lazyfs-{re.escape(prefix)}(\d{{1,3}})n\d+")
    return {int(m.group(1)) for info in mounts() if (m := pattern.fullmatch(info.source))}
