"""The harness's handle on one lazyfs mount (``lazyfs.py``): start its daemon, wait for the
mount, cut the power, unmount — and never leave a hung mount behind.

Owned by one thread at a time (``NetnsCluster`` calls it under its lock); not thread-safe.

The daemon is a child process we start (``python -m raftlog.chaos.lazyfs serve``, its own
session, output appended to ``BACKING/lazyfs.log``) and only ever signal by that PID. A mount is
found in ``/proc/self/mountinfo`` by its mount point, type ``fuse.lazyfs`` and source (the
``fsname`` we gave it) — never by ``stat``, which hangs on a stuck FUSE mount.

* ``mount()`` — start the daemon, wait (bounded) until the mount is there.
* ``unmount()`` — clean: SIGTERM; the daemon syncs everything (a clean shutdown), unmounts and
  exits.
* ``crash()`` — power loss: SIGKILL the daemon, then ``force_unmount`` (abort the FUSE
  connection through ``/sys/fs/fuse/connections/<minor>/abort``, ``umount -l``), then
  ``lazyfs.restore``: ``live/`` becomes what ``durable/`` holds. The broker must already be dead
  (the harness SIGKILLs and reaps it first).
* Any failure on the way (a daemon that does not mount in time, an unmount that does not finish)
  ends in ``force_unmount`` and a SIGKILL of our daemon, so nothing is left hanging.

``cleanup_stale_mounts(prefix)`` aborts and lazily unmounts lazyfs mounts whose source starts
with ``prefix`` (a crashed harness's; the runner calls it only for runs whose lock is free).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lazystate import RestoreStats, restore

__all__ = [
    "FUSE_CONNECTIONS",
    "LazyMount",
    "LazyMountError",
    "MountInfo",
    "bench",
    "cleanup_stale_mounts",
    "find_mount",
    "force_unmount",
    "mounts",
]

logger = logging.getLogger(__name__)

FUSE_CONNECTIONS = Path("/sys/fs/fuse/connections")
FSTYPE = "fuse.lazyfs"
MOUNT_TIMEOUT_S = 15.0
UNMOUNT_TIMEOUT_S = 30.0
UMOUNT_COMMAND_TIMEOUT_S = 10.0
POLL_S = 0.02


class LazyMountError(Exception):
    """A lazyfs mount could not be made or removed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the fields we use."""

    mountpoint: str
    fstype: str
    source: str
    minor: int


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountInfo]:
    """Every mount this process sees (its mount namespace)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 2:
                continue
            minor = int(fields[2].split(":")[1])
            found.append(MountInfo(_unescape(fields[4]), tail[0], _unescape(tail[1]), minor))
    return found


def find_mount(mountpoint: Path) -> MountInfo | None:
    """The lazyfs mount at ``mountpoint`` (the last one, if stacked), or None."""
    wanted = str(mountpoint)
    hits = [m for m in mounts() if m.mountpoint == wanted and m.fstype == FSTYPE]
    return hits[-1] if hits else None


def _abort(info: MountInfo) -> None:
    abort = FUSE_CONNECTIONS / str(info.minor) / "abort"
    if not abort.exists() and FUSE_CONNECTIONS.is_dir() and not any(FUSE_CONNECTIONS.iterdir()):
        # fusectl not mounted here: mount it so that a stuck connection can be aborted
        subprocess.run(
            ["mount", "-t", "fusectl", "fusectl", str(FUSE_CONNECTIONS)],
            capture_output=True,
            timeout=UMOUNT_COMMAND_TIMEOUT_S,
            check=False,
        )
    with contextlib.suppress(OSError):
        abort.write_text("1")


def force_unmount(mountpoint: Path, timeout_s: float = UNMOUNT_TIMEOUT_S) -> None:
    """Abort the FUSE connection of our mount at ``mountpoint`` and detach it (``umount -l``),
    until no lazyfs mount is left there; bounded. Raises LazyMountError if one stays."""
    deadline = time.monotonic() + timeout_s
    while (info := find_mount(mountpoint)) is not None:
        if time.monotonic() >= deadline:
            raise LazyMountError(f"the lazyfs mount at {mountpoint} would not go away")
        _abort(info)
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ["umount", "-l", str(mountpoint)],
                capture_output=True,
                timeout=UMOUNT_COMMAND_TIMEOUT_S,
                check=False,
            )
        time.sleep(POLL_S)


def cleanup_stale_mounts(source_prefix: str) -> list[str]:
    """Abort and detach every lazyfs mount whose source starts with ``source_prefix``."""
    removed = []
    for info in mounts():
        if info.fstype == FSTYPE and info.source.startswith(source_prefix):
            force_unmount(Path(info.mountpoint))
            removed.append(info.mountpoint)
    if removed:
        logger.info("removed stale lazyfs mounts: %s", ", ".join(removed))
    return removed


def _is_our_daemon(pid: int, backing: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"raftlog.chaos.lazyfs" in argv and b"serve" in argv and str(backing).encode() in argv


class LazyMount:
    """One lazyfs mount: ``backing/live`` shown at ``mountpoint``; see the module docstring."""

    def __init__(
        self,
        backing: str | Path,
        mountpoint: str | Path,
        *,
        fsname: str = "raftlog-lazyfs",
        host_fsync: bool = True,
        threads: bool = True,
        python: str = sys.executable,
        mount_timeout_s: float = MOUNT_TIMEOUT_S,
    ) -> None:
        if "," in fsname or " " in fsname:
            raise ValueError(f"fsname must not contain ',' or ' ': {fsname!r}")
        self.backing = Path(backing).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        self.fsname = fsname
        self.host_fsync = host_fsync
        self.threads = threads
        self.python = python
        self.mount_timeout_s = mount_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.backing / "lazyfs.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_mounted(self) -> bool:
        info = find_mount(self.mountpoint)
        return info is not None and info.source == self.fsname

    def daemon_pid(self) -> int | None:
        """Our daemon's PID while it lives: the child we started, or (for the command line,
        which starts it detached) the PID in ``daemon.pid`` if that process is our daemon."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        try:
            pid = int((self.backing / "daemon.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_daemon(pid, self.backing) else None

    # -- mount --

    def mount(self, detach: bool = False) -> int:
        """Start the daemon and wait until the mount is up; return the daemon's PID."""
        if find_mount(self.mountpoint) is not None:
            raise LazyMountError(f"a lazyfs mount is already at {self.mountpoint}")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "raftlog.chaos.lazyfs", "serve"]
        argv += [str(self.backing), str(self.mountpoint)]
        if not self.host_fsync:
            argv.append("--no-host-fsync")
        if not self.threads:
            argv.append("--single-thread")
        with open(self.log_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"--- raftlog.chaos.lazymount: mounting at {stamp} ---\n".encode())
            out.flush()
            process = subprocess.Popen(
                [*argv, "--fsname", self.fsname],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not detach:
            self.process = process
        deadline = time.monotonic() + self.mount_timeout_s
        while not self.is_mounted():
            if process.poll() is not None:
                raise LazyMountError(
                    f"the lazyfs daemon for {self.mountpoint} exited (code {process.returncode}) "
                    f"before mounting; its log ends:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self._kill(process.pid)
                force_unmount(self.mountpoint)
                raise LazyMountError(
                    f"no lazyfs mount at {self.mountpoint} within {self.mount_timeout_s} s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            time.sleep(POLL_S)
        return process.pid

    # -- unmount --

    def unmount(self, timeout_s: float = UNMOUNT_TIMEOUT_S) -> None:
        """Clean unmount: SIGTERM to our daemon, whose libfuse leaves its loop, runs the
        ``destroy`` callback (everything synced, as a clean shutdown) and unmounts. Not a plain
        ``umount``: a broker's private mount namespace (``ip netns exec``) may hold a copy of
        the mount, which keeps the connection — and the daemon — alive after ours is gone. On
        any failure the mount is aborted and the daemon killed instead (the next mount then
        restores the durable state)."""
        pid = self.daemon_pid()
        try:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                if not self._wait_exit(pid, timeout_s):
                    raise LazyMountError(f"the lazyfs daemon {pid} did not exit on SIGTERM")
            if find_mount(self.mountpoint) is not None:  # a daemon that died: drop its mount
                force_unmount(self.mountpoint)
        except (LazyMountError, OSError) as exc:
            logger.warning("clean unmount of %s failed (%s): aborting it", self.mountpoint, exc)
            self._kill(pid)
            force_unmount(self.mountpoint)
            raise LazyMountError(str(exc)) from exc
        finally:
            self.process = None

    def crash(self) -> RestoreStats:
        """Power loss: kill the daemon, drop the dead mount, rebuild ``live/`` from the durable
        state. Returns what the restore dropped."""
        self._kill(self.daemon_pid())
        force_unmount(self.mountpoint)
        self.process = None
        return restore(self.backing, self.host_fsync)

    def close(self) -> None:
        """Unmount whatever state we are in (for clean-up paths); never raises."""
        try:
            self.unmount()
        except Exception as exc:
            logger.warning("lazyfs at %s: %s", self.mountpoint, exc)
            with contextlib.suppress(Exception):
                self._kill(self.daemon_pid())
                force_unmount(self.mountpoint)

    # -- processes --

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:
                    return True
            elif not _is_our_daemon(pid, self.backing):
                return True
            time.sleep(POLL_S)
        return False

    def _kill(self, pid: int | None) -> None:
        """SIGKILL our daemon by PID and wait (bounded) until it is gone."""
        if pid is None:
            return
        process = self.process if self.process is not None and self.process.pid == pid else None
        if process is None and not _is_our_daemon(pid, self.backing):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10.0)
        else:
            self._wait_exit(pid, 10.0)


# ---- a benchmark --------------------------------------------------------------------------------


def bench(
    root: Path, seconds: float = 3.0, record_bytes: int = 100, host_fsync: bool = True
) -> dict[str, Any]:
    """Small appends, with and without an fdatasync after each, on the plain disk and through a
    fresh lazyfs mount under ``root``; ops/s for each. Bounded by ``seconds`` per loop."""
    root = root.resolve()
    mount = LazyMount(root / "backing", root / "mnt", host_fsync=host_fsync)
    plain = root / "plain"
    plain.mkdir(parents=True, exist_ok=True)
    record = b"x" * record_bytes
    out: dict[str, Any] = {"record_bytes": record_bytes, "seconds": seconds}
    out["host_fsync"] = host_fsync

    def loop(path: Path, sync: bool) -> float:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            count, start = 0, time.monotonic()
            deadline = start + seconds
            while count < 10_000_000 and time.monotonic() < deadline:
                os.write(fd, record)
                if sync:
                    os.fdatasync(fd)
                count += 1
            return round(count / (time.monotonic() - start), 1)
        finally:
            os.close(fd)

    out["plain_append_per_s"] = loop(plain / "a.log", False)
    out["plain_append_fdatasync_per_s"] = loop(plain / "b.log", True)
    mount.mount()
    try:
        out["lazyfs_append_per_s"] = loop(mount.mountpoint / "a.log", False)
        out["lazyfs_append_fdatasync_per_s"] = loop(mount.mountpoint / "b.log", True)
    finally:
        mount.unmount()
    return out
