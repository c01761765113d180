"""LazyFS in Python: a FUSE passthrough that remembers what each fsync made durable, so that a
chaos run can drop exactly what a power loss drops (the idea of Jepsen's LazyFS).

The broker's data dir is a FUSE mount; every call passes straight through to ``live/`` (reads,
writes, mmap — LMDB keeps working), and the daemon keeps, beside it, what a disk would still hold
after the power went out. It trusts nothing the broker says: durability is decided here, from the
fsync calls the kernel forwards, under the strict POSIX model (as LazyFS does):

* a file's *data and size* become durable when that file is fsynced or fdatasynced (any fd of
  it: the kernel also writes back dirty mmap pages first); writes, truncations and fallocates
  after its last fsync are lost;
* a *directory's entries* (create, mkdir, unlink, rmdir, rename, link, symlink) become durable
  only when that directory is fsynced. A new file whose directory was fsynced but whose data was
  not comes back with its durable content — empty, as created. A rename is durable in each parent
  separately (sync only the new parent and both names exist after the crash, as hard links).

Backing directory layout (``BACKING`` is given to ``serve``)::

    BACKING/live/                 what the mount shows: the passthrough target
    BACKING/durable/manifest.json every directory's entries as of its last fsync (below)
    BACKING/durable/inodes/<id>   every file's content as of its last fsync (missing = empty)
    BACKING/daemon.pid            the serving daemon's PID; BACKING/lazyfs.log its log

Ids are ours (``0`` is the root directory), stable across renames; hard links share one id.
``manifest.json`` — JSON, not checksummed, replaced atomically (tmp + rename), rebuildable only
by a fresh snapshot. Worked example: a root holding ``state/`` (dir 1, with ``data.mdb``, file 3)
and ``chaos-0/`` (dir 2, never fsynced, so empty after a crash), while the daemon serves::

    {"format": "raftlog-lazyfs/1", "state": "mounted", "next_id": 4,
     "dirs": {"0": {"state": ["d", 1, 493], "chaos-0": ["d", 2, 493]},
              "1": {"data.mdb": ["f", 3, 420]}},
     "symlinks": {}}

Each entry is ``[kind, id, mode]``: kind ``f`` file, ``d`` directory, ``l`` symlink (its target
in ``symlinks``). ``state`` is ``mounted`` while a daemon serves and ``clean`` after a clean
unmount (which first syncs everything, as a clean shutdown does) or after ``restore``.

**Power loss** = SIGKILL the daemon (its writes to ``durable/`` may stop half-way through an
fsync: a disk may persist part of an unfinished fsync too), abort and lazily unmount the dead
mount (``lazymount.py`` does that), then ``restore``: ``live/`` is rebuilt from ``durable/``. A
daemon that starts on a backing whose manifest still says ``mounted`` restores first: its
predecessor died, and that is a power loss.

The model and its on-disk form are ``lazystate.py``; the harness's handle on a mount (start,
crash, unmount, abort) is ``lazymount.py``.

Threads: libfuse calls ``LazyOperations`` from several threads. One lock guards the namespace
tables, the dirty ranges and the handle map; namespace-changing calls hold it across their
syscall so the tables follow the disk in the same order. Data reads and writes run outside it;
a write marks its range dirty before it returns, so an fsync issued after a write completed
always copies it. A per-file lock serialises fsyncs of one file; the manifest has its own lock.
Every loop is bounded (``ENTRIES_MAX`` entries in a tree, ``RANGES_MAX`` dirty ranges per file).

``python -m raftlog.chaos.lazyfs`` serves, mounts, crashes, unmounts and benchmarks by hand
(``--help``). Needs root, /dev/fuse, libfuse 3 (Debian: ``fuse3 libfuse3-3``) and ``mfusepy``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lazystate import (
    COPY_CHUNK_BYTES,
    DIR,
    FILE,
    SYMLINK,
    DirtyRanges,
    Tree,
    inode_path,
    read_manifest,
    restore,
    snapshot,
    walk_live,
    write_manifest,
)

__all__ = ["LazyOperations", "fuse_unavailable", "main", "serve"]

logger = logging.getLogger(__name__)

_BACKING_DROP_FLAGS = (
    os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND | os.O_SYNC | os.O_DSYNC | os.O_NOCTTY
) | getattr(os, "O_DIRECT", 0)


def _durable_dir(backing: Path) -> Path:
    return backing / "durable"


# ---- the FUSE operations ----------------------------------------------------------------------


@dataclass(slots=True)
class _Handle:
    ino: int
    sync_writes: bool  # opened O_SYNC / O_DSYNC: every write is an fsync of its range


class LazyOperations:
    """The passthrough with durability bookkeeping; see the module docstring for the model.

    Called by libfuse's worker threads (thread-safe as described there). Methods raise OSError;
    mfusepy turns it into the errno the caller sees.
    """

    use_ns = True  # mfusepy: utimens gets nanoseconds

    def __init__(self, backing: Path, *, host_fsync: bool = True) -> None:
        self.backing = backing
        self.live_root = str(backing / "live")
        self.host_fsync = host_fsync
        self._lock = threading.Lock()
        self._manifest_lock = threading.Lock()
        self._sync_locks: dict[int, threading.Lock] = {}
        self._handles: dict[int, _Handle] = {}
        self._dirty: dict[int, DirtyRanges] = {}
        self._durable_inodes: set[int] = set()
        self.tree = self._load()
        self.counters = {"writes": 0, "fsyncs": 0, "fsyncdirs": 0, "bytes_synced": 0}

    # -- mount and unmount --

    def _load(self) -> Tree:
        backing = self.backing
        (backing / "live").mkdir(parents=True, exist_ok=True)
        (_durable_dir(backing) / "inodes").mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(backing)
        if manifest is not None and manifest.state == "mounted":
            logger.warning(
                "the last daemon on %s died while serving: restoring (power loss)", backing
            )
            restore(backing, self.host_fsync)
            manifest = read_manifest(backing)
        tree: Tree | None = None
        if manifest is not None:
            tree = Tree(manifest.dirs, manifest.symlinks, manifest.next_id)
            if not self._matches_live(tree):
                logger.warning("live/ differs from the clean manifest (changed while unmounted)")
                tree = None
        if tree is None:
            tree = snapshot(backing, self.host_fsync)
        self._durable_inodes = {
            int(p.name) for p in (_durable_dir(backing) / "inodes").iterdir() if p.name.isdigit()
        }
        write_manifest(backing, tree.manifest("mounted"), self.host_fsync)
        return tree

    def _matches_live(self, tree: Tree) -> bool:
        seen = 0
        for rel, st in walk_live(self.backing / "live"):
            entry = tree.lookup(rel)
            kind = (
                DIR if stat.S_ISDIR(st.st_mode) else SYMLINK if stat.S_ISLNK(st.st_mode) else FILE
            )
            if entry is None or entry.kind != kind:
                return False
            seen += 1
        return seen == tree.live_names()  # and no name in the tables is missing on disk

    def destroy(self, path: str) -> None:
        """A clean unmount: everything becomes durable, as a clean shutdown syncs the disk."""
        try:
            with self._lock:
                paths = self.tree.live_paths()
                dirty = list(self._dirty)
            for ino in dirty:
                rel = paths.get(ino)
                if rel is None:
                    continue
                fd = os.open(os.path.join(self.live_root, rel), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    self._sync_file(ino, fd)
                finally:
                    os.close(fd)
            with self._manifest_lock, self._lock:
                self.tree.sync_all()
                self._gc_locked()
                write_manifest(self.backing, self.tree.manifest("clean"), self.host_fsync)
            logger.info("clean unmount: everything synced; counters %s", self.counters)
        except Exception:
            logger.exception("clean unmount failed: the next mount restores the durable state")

    # -- helpers --

    def _live(self, path: str) -> str:
        return self.live_root + path if path != "/" else self.live_root

    @staticmethod
    def _backing_flags(flags: int) -> int:
        flags &= ~_BACKING_DROP_FLAGS
        # read-write on the backing whatever the caller asked: an fsync through any fd must be
        # able to read the file's dirty ranges (we run as root, so this never adds a refusal)
        return (flags & ~os.O_ACCMODE) | os.O_RDWR | os.O_CLOEXEC

    def _open_backing(self, path: str, flags: int, mode: int = 0o644) -> int:
        wanted = self._backing_flags(flags)
        try:
            return os.open(self._live(path), wanted, mode)
        except PermissionError:
            return os.open(self._live(path), (flags & ~_BACKING_DROP_FLAGS) | os.O_CLOEXEC, mode)

    def _mark(self, ino: int, start: int, end: int) -> None:
        ranges = self._dirty.get(ino)
        if ranges is None:
            ranges = self._dirty[ino] = DirtyRanges()
        ranges.add(start, end)

    def _ino_of(self, path: str | None, fh: int | None) -> int:
        if fh is not None and fh in self._handles:
            return self._handles[fh].ino
        if path is None:
            raise OSError(errno.EBADF, "no path and no handle")
        entry = self.tree.adopt(path, FILE, 0o644)
        return entry.ino

    # -- attributes and reading --

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(fh) if fh is not None and fh in self._handles else os.lstat(self._live(path))
        return {
            "st_mode": st.st_mode,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_size": st.st_size,
            "st_blocks": st.st_blocks,
            "st_ino": st.st_ino,
            "st_atime": st.st_atime_ns,  # nanoseconds: use_ns
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    def access(self, path: str, amode: int) -> int:
        os.lstat(self._live(path))
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._live(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._live(path))

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._live(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    # -- metadata changes that are not namespace changes (not tracked: a crash keeps them) --

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._live(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._live(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._live(path), follow_symlinks=False)
        else:
            os.utime(self._live(path), ns=times, follow_symlinks=False)
        return 0

    # -- files: open, write, truncate, sync --

    def open(self, path: str, flags: int) -> int:
        fd = self._open_backing(path, flags)
        try:
            with self._lock:
                ino = self._ino_of(path, None)
                self._handles[fd] = _Handle(ino, bool(flags & (os.O_SYNC | os.O_DSYNC)))
            if flags & os.O_TRUNC:
                self._truncate_fd(fd, ino, 0)
        except BaseException:
            self._handles.pop(fd, None)
            os.close(fd)
            raise
        return fd

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        with self._lock:
            fd = os.open(
                self._live(path),
                self._backing_flags(flags) | os.O_CREAT | (flags & os.O_EXCL),
                mode,
            )
            try:
                existing = self.tree.lookup(path)
                entry = existing if existing is not None else self.tree.add(path, FILE, mode)
                self._handles[fd] = _Handle(entry.ino, bool(flags & (os.O_SYNC | os.O_DSYNC)))
            except BaseException:
                os.close(fd)
                raise
        if flags & os.O_TRUNC:
            self._truncate_fd(fd, entry.ino, 0)
        return fd

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        written = os.pwrite(fh, data, offset)
        with self._lock:
            handle = self._handles[fh]
            self._mark(handle.ino, offset, offset + written)
            self.counters["writes"] += 1
        if handle.sync_writes:
            self._sync_file(handle.ino, fh)
        return written

    def _truncate_fd(self, fd: int, ino: int, length: int) -> None:
        with self._lock:
            old = os.fstat(fd).st_size
            os.ftruncate(fd, length)
            self._mark(ino, min(old, length), max(old, length))

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._handles:
            self._truncate_fd(fh, self._handles[fh].ino, length)
            return 0
        if path is None:
            raise OSError(errno.EBADF, "truncate without a path or a handle")
        fd = os.open(self._live(path), os.O_RDWR | os.O_CLOEXEC)
        try:
            with self._lock:
                ino = self._ino_of(path, None)
            self._truncate_fd(fd, ino, length)
        finally:
            os.close(fd)
        return 0

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        if mode != 0:
            raise OSError(errno.EOPNOTSUPP, "only fallocate mode 0")
        with self._lock:
            os.posix_fallocate(fh, offset, size)
            self._mark(self._handles[fh].ino, offset, offset + size)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        os.close(fh)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._lock:
            ino = self._handles[fh].ino
        self._sync_file(ino, fh)
        return 0

    def _sync_file(self, ino: int, fd: int) -> None:
        """Copy the file's dirty ranges and its size into ``durable/inodes/<ino>``."""
        with self._lock:
            lock = self._sync_locks.setdefault(ino, threading.Lock())
        with lock:
            with self._lock:
                ranges = self._dirty.pop(ino, None)
                self.counters["fsyncs"] += 1
            if ranges is None:
                return  # nothing written since the last sync: the durable copy is current
            try:
                size = os.fstat(fd).st_size
                dfd = os.open(
                    inode_path(self.backing, ino), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    copied = 0
                    for start, end in ranges.spans():
                        position, end = start, min(end, size)
                        while position < end:
                            chunk = os.pread(fd, min(COPY_CHUNK_BYTES, end - position), position)
                            if not chunk:
                                break
                            os.pwrite(dfd, chunk, position)
                            position += len(chunk)
                            copied += len(chunk)
                    os.ftruncate(dfd, size)
                    if self.host_fsync:
                        os.fdatasync(dfd)
                finally:
                    os.close(dfd)
            except BaseException:
                with self._lock:  # not synced after all: the ranges stay dirty
                    for start, end in ranges.spans():
                        self._mark(ino, start, end)
                raise
            with self._lock:
                self._durable_inodes.add(ino)
                self.counters["bytes_synced"] += copied

    # -- the namespace: durable only when the parent directory is fsynced --

    def mkdir(self, path: str, mode: int) -> int:
        with self._lock:
            os.mkdir(self._live(path), mode)
            self.tree.add(path, DIR, mode)
        return 0

    def rmdir(self, path: str) -> int:
        with self._lock:
            os.rmdir(self._live(path))
            self.tree.remove(path)
        return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            os.unlink(self._live(path))
            self.tree.remove(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            self.tree.adopt(old, DIR if os.path.isdir(self._live(old)) else FILE, 0o644)
            os.rename(self._live(old), self._live(new))
            self.tree.rename(old, new)
        return 0

    def link(self, target: str, source: str) -> int:
        """``ln source target`` (mfusepy's argument order)."""
        with self._lock:
            self.tree.adopt(source, FILE, 0o644)
            os.link(self._live(source), self._live(target))
            self.tree.link(source, target)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """``ln -s source target`` (mfusepy's argument order)."""
        with self._lock:
            os.symlink(source, self._live(target))
            self.tree.add(target, SYMLINK, 0o777, source)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._manifest_lock:
            with self._lock:
                entry = self.tree.lookup(path)
                if entry is None or entry.kind != DIR:
                    raise OSError(errno.ENOENT, f"{path} is not a directory in the tables")
                self.tree.sync_dir(entry.ino)
                dropped = self._gc_locked()
                manifest = self.tree.manifest("mounted")
                self.counters["fsyncdirs"] += 1
            write_manifest(self.backing, manifest, self.host_fsync)
        for ino in dropped:  # only once the manifest no longer names them
            with contextlib.suppress(FileNotFoundError):
                inode_path(self.backing, ino).unlink()
        return 0

    def _gc_locked(self) -> list[int]:
        """Ids whose durable content nothing can reach any more (no durable or live name, no
        open handle): forgotten here, their files deleted by the caller."""
        keep = {h.ino for h in self._handles.values()}
        self.tree.prune(keep)
        durable, live = self.tree.reachable()
        alive = durable | live | keep
        dropped = [ino for ino in self._durable_inodes if ino not in alive]
        for ino in dropped:
            self._durable_inodes.discard(ino)
            self._dirty.pop(ino, None)
        for ino in [i for i in self._dirty if i not in alive]:
            del self._dirty[ino]
        return dropped


# ---- serving ----------------------------------------------------------------------------------


def fuse_unavailable() -> str | None:
    """Why this machine cannot serve a lazyfs mount (None: it can)."""
    if os.geteuid() != 0:
        return f"lazyfs needs root (running as uid {os.geteuid()})"
    if not os.path.exists("/dev/fuse"):
        return "lazyfs needs /dev/fuse (no FUSE in this kernel or container)"
    try:
        import mfusepy  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        return f"lazyfs needs mfusepy and libfuse 3 (apt-get install fuse3 libfuse3-3): {exc}"
    except OSError as exc:  # mfusepy loads libfuse when imported
        return f"lazyfs needs libfuse 3 (apt-get install fuse3 libfuse3-3): {exc}"
    return None


def stop_by_signal(fuse: Any) -> Any:
    """Call ``fuse`` (mfusepy.FUSE), taking libfuse's status 8 — its loop ended on an error,
    which is how libfuse 3 reports the SIGTERM that ``LazyMount.unmount`` sends — as a clean end
    (libfuse ran our ``destroy`` and unmounted before it returned)."""

    def call(*args: Any, **kwargs: Any) -> None:
        try:
            fuse(*args, **kwargs)
        except RuntimeError as exc:
            if str(exc) != "8":
                raise
            logger.info("the FUSE loop ended on a signal (libfuse status 8)")

    return call


def serve(
    backing: Path,
    mountpoint: Path,
    *,
    fsname: str = "raftlog-lazyfs",
    host_fsync: bool = True,
    threads: bool = True,
) -> None:
    """Mount ``backing/live`` at ``mountpoint`` and serve until unmounted (foreground)."""
    import mfusepy

    class _Fuse(mfusepy.FUSE):  # type: ignore[misc]
        """mfusepy drops the handle of ftruncate and the flags of rename under libfuse 3."""

        def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
            fh = fip.contents.fh if fip else None
            decoded = None if path is None else path.decode(self.encoding, self.errors)
            return int(self.operations.truncate(decoded, length, fh))

        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            if flags:
                return -errno.EINVAL  # RENAME_NOREPLACE / EXCHANGE: not supported, say so
            return int(self.rename_fuse_2(old, new))

    backing = backing.resolve()
    operations = LazyOperations(backing, host_fsync=host_fsync)
    pid_file = backing / "daemon.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    logger.info(
        "serving %s at %s (host fsync %s, threads %s)", backing, mountpoint, host_fsync, threads
    )
    try:
        stop_by_signal(_Fuse)(
            operations,
            str(mountpoint),
            foreground=True,
            nothreads=not threads,
            fsname=fsname,
            subtype="lazyfs",
            hard_remove=True,  # no .fuse_hidden renames: ops on unlinked files use the handle
        )
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    logger.info("unmounted %s; counters %s", mountpoint, operations.counters)


# ---- the command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raftlog.chaos.lazyfs",
        description="A FUSE passthrough that drops unsynced writes on a simulated power loss.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("serve", "serve in the foreground until unmounted (what `mount` starts)"),
        ("mount", "start a daemon in the background and wait until the mount is up"),
        ("crash", "power loss: kill the daemon, drop the dead mount, rebuild live/ from durable/"),
        ("unmount", "clean unmount (everything synced first)"),
        ("bench", "small appends (+ fdatasync) through a fresh mount under BACKING"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("backing", type=Path, help="holds live/ and durable/")
        if name != "bench":
            cmd.add_argument("mountpoint", type=Path)
        cmd.add_argument(
            "--no-host-fsync",
            action="store_true",
            help="do not fsync durable/ itself (it is kept for a simulated, not a real, crash)",
        )
        cmd.add_argument("--single-thread", action="store_true", help="libfuse's -s")
        cmd.add_argument("--fsname", default="raftlog-lazyfs", help="the mount's source name")
        if name == "bench":
            cmd.add_argument("--seconds", type=float, default=3.0)
            cmd.add_argument("--record-bytes", type=int, default=100)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    from .lazymount import LazyMount, bench

    host_fsync = not args.no_host_fsync
    if args.command == "serve":
        serve(
            args.backing,
            args.mountpoint,
            fsname=args.fsname,
            host_fsync=host_fsync,
            threads=not args.single_thread,
        )
        return 0
    if args.command == "bench":
        print(
            json.dumps(bench(args.backing, args.seconds, args.record_bytes, host_fsync), indent=2)
        )
        return 0
    mount = LazyMount(
        args.backing,
        args.mountpoint,
        fsname=args.fsname,
        host_fsync=host_fsync,
        threads=not args.single_thread,
    )
    if args.command == "mount":
        pid = mount.mount(detach=True)
        print(f"lazyfs daemon {pid} serves {args.backing}/live at {args.mountpoint}")
    elif args.command == "crash":
        print(mount.crash().text())
    else:
        mount.unmount()
    return 0


if __name__ == "__main__":
    sys.exit(main())
