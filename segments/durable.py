"""Making names durable: directories and small files that must survive a power loss.

A file's data is durable after its fsync; its *name* is durable only after the directory that
holds it is fsynced (POSIX; ext4 often does it as a side effect, a strict filesystem — and the
chaos harness's lazyfs — does not). A broker whose data directory, state store or Raft journal
was created but whose parent was never fsynced can come back from a power loss as an empty
stranger. These helpers are for the rare, cold paths that create things: never an append.
"""

from __future__ import annotations

import os

from .errors import StorageIOError

__all__ = ["fsync_directory", "makedirs_durable", "write_file_durable"]


def fsync_directory(path: str) -> None:
    """Make the directory's entries (files created, renamed, deleted) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageIOError(f"fsync of the directory {path} failed: {exc}") from exc


def makedirs_durable(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, then fsync every parent of a directory it created
    (and ``path`` itself), so the whole chain survives a power loss."""
    path = os.path.abspath(path)
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StorageIOError(f"cannot create {path}: {exc}") from exc
    for created in reversed(missing):
        fsync_directory(os.path.dirname(created))
    fsync_directory(path)


def write_file_durable(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp, fsync, rename, dir fsync)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageIOError(f"cannot write {path}: {exc}") from exc
    fsync_directory(os.path.dirname(os.path.abspath(path)))
