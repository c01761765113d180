"""The simulated disk: what a power loss keeps, decided by what was fsynced.

The brokers of the simulation write real files (a temporary directory, on tmpfs when there is
one, where ``fsync`` costs nothing). ``DurabilityTracker`` wraps ``os.fsync`` while a simulation
runs and records, per inode, what that fsync made durable:

- a regular file: its size at the fsync (the logs only append, and every truncation of a
  segment is followed by an fsync of it, so the durable content is that prefix);
- a directory: its entries at the fsync (a name is durable only once its directory was
  fsynced after it was created).

``power_loss(root)`` then makes a broker's files what a machine would find after a reboot:
names created since their directory's last fsync are gone; every file keeps its durable prefix
and, with some probability, part of what was written after it (writeback may have happened,
tearing a batch in two is allowed). The broker's LMDB store (``state/``) is left alone: LMDB
fsyncs every committed transaction itself, through its own C code that this wrapper never sees.

Not modelled (an optimistic disk): a file truncated and not fsynced afterwards keeps its shorter
length; a name deleted and not fsynced stays deleted; pages written out of order (a later page
durable before an earlier one). The first two do not happen on the product's paths that matter
(``Log.truncate_to`` fsyncs the cut segment, deletions are followed by a directory fsync).

Owned by the simulation's one thread.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["DurabilityTracker", "close_fds_under"]

_PAGE_BYTES = 4096
_STATE_DIR = "state"  # the broker's LMDB environment: durable on every commit, left alone


class DurabilityTracker:
    """See the module docstring. Use as a context manager: it patches ``os.fsync`` inside."""

    def __init__(self) -> None:
        self.file_bytes: dict[tuple[int, int], int] = {}  # (dev, inode) → durable size
        self.dir_entries: dict[tuple[int, int], frozenset[str]] = {}  # (dev, inode) → names
        self.fsyncs = 0
        self._real_fsync: Callable[[Any], None] | None = None

    def __enter__(self) -> DurabilityTracker:
        self._real_fsync = os.fsync
        os.fsync = self._fsync
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._real_fsync is not None
        os.fsync = self._real_fsync  # type: ignore[assignment]  # it was os.fsync itself
        self._real_fsync = None

    def _fsync(self, fd: Any) -> None:
        assert self._real_fsync is not None
        self._real_fsync(fd)
        self.fsyncs += 1
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            self.dir_entries[key] = frozenset(os.listdir(f"/proc/self/fd/{fd}"))
        elif stat.S_ISREG(info.st_mode):
            self.file_bytes[key] = info.st_size

    def power_loss(self, root: str, rng: random.Random, *, writeback_p: float = 0.5) -> int:
        """Revert the tree under ``root`` to what survives a power loss; bytes dropped."""
        dropped = 0
        for directory, dirs, files in os.walk(root, topdown=True):
            dirs.sort()
            files.sort()
            if os.path.relpath(directory, root) == _STATE_DIR:
                dirs.clear()
                continue
            info = os.stat(directory)
            durable_names = self.dir_entries.get((info.st_dev, info.st_ino), frozenset())
            for name in [d for d in dirs if d not in durable_names]:
                if directory == root and name == _STATE_DIR:
                    continue  # LMDB made its own directory durable (makedirs_durable)
                shutil.rmtree(os.path.join(directory, name))
                dirs.remove(name)
            for name in files:
                path = os.path.join(directory, name)
                if name not in durable_names:
                    dropped += os.path.getsize(path)
                    os.unlink(path)
                    continue
                file_info = os.stat(path)
                key = (file_info.st_dev, file_info.st_ino)
                durable = min(self.file_bytes.get(key, 0), file_info.st_size)
                keep = durable
                unsynced = file_info.st_size - durable
                if unsynced and rng.random() < writeback_p:
                    # some writeback happened: a prefix of the unsynced bytes, in pages, may
                    # end inside a batch (a torn write)
                    pages = (unsynced + _PAGE_BYTES - 1) // _PAGE_BYTES
                    keep = min(file_info.st_size, durable + rng.randint(0, pages) * _PAGE_BYTES)
                if keep < file_info.st_size:
                    dropped += file_info.st_size - keep
                    os.truncate(path, keep)
                self.file_bytes[key] = keep  # what is on the platter now is durable
            self.dir_entries[(info.st_dev, info.st_ino)] = frozenset(os.listdir(directory))
        return dropped


def close_fds_under(root: str) -> int:
    """Close every descriptor of this process open on a file under ``root`` (a killed process's
    descriptors close with it; the objects that held them are dropped unflushed). Returns how
    many were closed."""
    prefix = os.path.abspath(root) + os.sep
    closed = 0
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            try:
                os.close(fd)
                closed += 1
            except OSError:
                pass
    return closed
