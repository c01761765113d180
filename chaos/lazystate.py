"""lazyfs's model of a disk, pure except its on-disk form: the dirty ranges of each file, the
live and durable namespaces (``Tree``), the manifest that stores the durable one, and the two
whole-tree operations — ``snapshot`` (a first mount: everything there is durable) and
``restore`` (after a power loss: ``live/`` becomes what ``durable/`` holds).

The model and the backing directory's layout are described in ``lazyfs.py``'s docstring, which
also documents ``manifest.json`` with a worked example; this module reads and writes it.
Nothing here is thread-safe: ``LazyOperations`` calls it under its lock, ``restore`` runs while
nothing serves the backing.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DIR",
    "ENTRIES_MAX",
    "FILE",
    "MANIFEST_FORMAT",
    "RANGES_MAX",
    "ROOT_ID",
    "SYMLINK",
    "DirtyRanges",
    "Entry",
    "LazyFsError",
    "Manifest",
    "RestoreStats",
    "Tree",
    "durable_path",
    "inode_path",
    "read_manifest",
    "restore",
    "snapshot",
    "walk_live",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "raftlog-lazyfs/1"
ROOT_ID = 0
ENTRIES_MAX = 1_000_000  # entries in one tree walk: a bound, far above a broker's file count
RANGES_MAX = 256  # dirty ranges kept per file before they are merged into one span
COPY_CHUNK_BYTES = 1 << 20
FILE, DIR, SYMLINK = "f", "d", "l"


class LazyFsError(Exception):
    """The backing directory is not in a state we can serve or restore; the message says why."""


# ---- the pure model: dirty ranges and the two namespaces ------------------------------------


class DirtyRanges:
    """Byte ranges of one file written since its last fsync: sorted, disjoint, at most
    ``RANGES_MAX`` of them (then merged into one span — copying more is always safe)."""

    __slots__ = ("_ranges",)

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []  # [start, end), sorted, disjoint, not touching

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        ranges = self._ranges
        if ranges and ranges[-1][0] <= start <= ranges[-1][1]:  # the append case: O(1)
            ranges[-1][1] = max(ranges[-1][1], end)
            return
        merged: list[list[int]] = []
        placed = False
        for s, e in ranges:
            if e < start:
                merged.append([s, e])
            elif end < s:
                if not placed:
                    merged.append([start, end])
                    placed = True
                merged.append([s, e])
            else:
                start, end = min(s, start), max(e, end)
        if not placed:
            merged.append([start, end])
        if len(merged) > RANGES_MAX:
            merged = [[merged[0][0], merged[-1][1]]]
        self._ranges = merged

    def spans(self) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self._ranges]

    def __bool__(self) -> bool:
        return bool(self._ranges)


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory: what it is, our id for it, its mode bits at creation."""

    kind: str  # FILE | DIR | SYMLINK
    ino: int
    mode: int

    def to_json(self) -> list[Any]:
        return [self.kind, self.ino, self.mode]

    @staticmethod
    def from_json(value: Any) -> Entry:
        kind, ino, mode = value
        if kind not in (FILE, DIR, SYMLINK):
            raise LazyFsError(f"manifest entry of unknown kind {kind!r}")
        return Entry(str(kind), int(ino), int(mode))


Table = dict[str, Entry]


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


class Tree:
    """The live namespace (what the mount shows now) and the durable one (each directory's
    entries as of its last fsync), as tables ``dir id → {name: Entry}``. Pure; owned by
    ``LazyOperations`` under its lock."""

    def __init__(
        self,
        durable: Mapping[int, Table],
        symlinks: Mapping[int, str],
        next_id: int,
        live: Mapping[int, Table] | None = None,
    ) -> None:
        self.durable: dict[int, Table] = {d: dict(t) for d, t in durable.items()}
        self.live: dict[int, Table] = {
            d: dict(t) for d, t in (durable if live is None else live).items()
        }
        for tables in (self.durable, self.live):  # a directory never fsynced has no table yet
            tables.setdefault(ROOT_ID, {})
            for table in list(tables.values()):
                for entry in table.values():
                    if entry.kind == DIR:
                        tables.setdefault(entry.ino, {})
        self.symlinks: dict[int, str] = dict(symlinks)
        self.next_id = max(next_id, ROOT_ID + 1)

    # -- lookups --

    def lookup(self, path: str) -> Entry | None:
        """The live entry at ``path`` ("/" is the root directory)."""
        entry = Entry(DIR, ROOT_ID, 0o755)
        for part in _split(path):
            if entry.kind != DIR:
                return None
            found = self.live.get(entry.ino, {}).get(part)
            if found is None:
                return None
            entry = found
        return entry

    def parent(self, path: str) -> tuple[int, str]:
        """(the live parent directory's id, the last name); OSError ENOENT when none."""
        parts = _split(path)
        if not parts:
            raise OSError(errno.EINVAL, "the root has no parent")
        parent = self.lookup("/".join(parts[:-1]))
        if parent is None or parent.kind != DIR:
            raise OSError(errno.ENOENT, f"no directory for {path}")
        return parent.ino, parts[-1]

    # -- changes to the live namespace --

    def add(self, path: str, kind: str, mode: int, target: str | None = None) -> Entry:
        """A new name (create, mkdir, symlink); a name already there is replaced."""
        parent, name = self.parent(path)
        entry = Entry(kind, self.next_id, stat.S_IMODE(mode))
        self.next_id += 1
        self.live[parent][name] = entry
        if kind == DIR:
            self.live[entry.ino] = {}
        if kind == SYMLINK:
            self.symlinks[entry.ino] = target or ""
        return entry

    def adopt(self, path: str, kind: str, mode: int) -> Entry:
        """The entry at ``path``, made up when the live tree has a name our tables lack."""
        entry = self.lookup(path)
        return entry if entry is not None else self.add(path, kind, mode)

    def remove(self, path: str) -> Entry | None:
        parent, name = self.parent(path)
        entry = self.live[parent].pop(name, None)
        if entry is not None and entry.kind == DIR:
            self.live.pop(entry.ino, None)
        return entry

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self.parent(old)
        new_parent, new_name = self.parent(new)
        entry = self.live[old_parent].get(old_name)
        if entry is None:
            raise OSError(errno.ENOENT, f"{old} is not in the tables")
        replaced = self.live[new_parent].get(new_name)
        if replaced is not None and replaced.ino == entry.ino:
            return  # rename(2) of two links to one file does nothing
        del self.live[old_parent][old_name]
        if replaced is not None and replaced.kind == DIR:
            self.live.pop(replaced.ino, None)  # rename(2) only replaces an empty directory
        self.live[new_parent][new_name] = entry

    def link(self, existing: str, new: str) -> None:
        entry = self.lookup(existing)
        if entry is None:
            raise OSError(errno.ENOENT, f"{existing} is not in the tables")
        parent, name = self.parent(new)
        self.live[parent][name] = entry

    # -- durability --

    def sync_dir(self, ino: int) -> None:
        """fsync of a directory: its entries as they are now become the durable ones."""
        self.durable[ino] = dict(self.live.get(ino, {}))

    def sync_all(self) -> None:
        """A clean shutdown: every live directory's entries become durable."""
        self.durable = {d: dict(t) for d, t in self.live.items()}

    @staticmethod
    def _reach(tables: Mapping[int, Table]) -> set[int]:
        seen = {ROOT_ID}
        stack = [ROOT_ID]
        for _ in range(ENTRIES_MAX):
            if not stack:
                break
            for entry in tables.get(stack.pop(), {}).values():
                if entry.ino not in seen:
                    seen.add(entry.ino)
                    if entry.kind == DIR:
                        stack.append(entry.ino)
        return seen

    def reachable(self) -> tuple[set[int], set[int]]:
        """(ids reachable from the durable root, ids reachable from the live root)."""
        return self._reach(self.durable), self._reach(self.live)

    def prune(self, keep: set[int]) -> None:
        """Forget durable tables and symlinks of ids in neither namespace nor ``keep``."""
        durable, live = self.reachable()
        alive = durable | live | keep
        # a directory fsynced before its parent keeps its table: the parent's fsync may follow
        self.durable = {d: t for d, t in self.durable.items() if d in alive}
        self.symlinks = {i: t for i, t in self.symlinks.items() if i in alive}

    def live_names(self) -> int:
        """How many names the live root reaches (a hard link counts once per name)."""
        count, stack, seen = 0, [ROOT_ID], {ROOT_ID}
        for _ in range(ENTRIES_MAX):
            if not stack:
                break
            for entry in self.live.get(stack.pop(), {}).values():
                count += 1
                if entry.kind == DIR and entry.ino not in seen:
                    seen.add(entry.ino)
                    stack.append(entry.ino)
        return count

    def live_paths(self) -> dict[int, str]:
        """id → one live path of it (relative, no leading slash)."""
        out: dict[int, str] = {ROOT_ID: ""}
        stack = [ROOT_ID]
        for _ in range(ENTRIES_MAX):
            if not stack:
                break
            ino = stack.pop()
            for name, entry in self.live.get(ino, {}).items():
                if entry.ino not in out:
                    out[entry.ino] = f"{out[ino]}/{name}".lstrip("/")
                    if entry.kind == DIR:
                        stack.append(entry.ino)
        return out

    def manifest(self, state: str) -> dict[str, Any]:
        """Every durable table (also of directories not yet durably named: their parent's fsync
        may come) and every symlink target; ``restore`` walks only what the root reaches."""
        return {
            "format": MANIFEST_FORMAT,
            "state": state,
            "next_id": self.next_id,
            "dirs": {
                str(d): {name: e.to_json() for name, e in sorted(t.items())}
                for d, t in sorted(self.durable.items())
            },
            "symlinks": {str(i): t for i, t in sorted(self.symlinks.items())},
        }


# ---- the manifest on disk --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    state: str
    next_id: int
    dirs: dict[int, Table]
    symlinks: dict[int, str]


def _durable_dir(backing: Path) -> Path:
    return backing / "durable"


def _manifest_path(backing: Path) -> Path:
    return _durable_dir(backing) / "manifest.json"


def inode_path(backing: Path, ino: int) -> Path:
    return _durable_dir(backing) / "inodes" / str(ino)


def read_manifest(backing: Path) -> Manifest | None:
    """The manifest, or None when there is none yet; LazyFsError when it is unreadable."""
    try:
        raw = json.loads(_manifest_path(backing).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LazyFsError(f"cannot read {_manifest_path(backing)}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise LazyFsError(f"{_manifest_path(backing)} is not a {MANIFEST_FORMAT} manifest")
    try:
        dirs = {
            int(d): {str(n): Entry.from_json(e) for n, e in table.items()}
            for d, table in raw["dirs"].items()
        }
        symlinks = {int(i): str(t) for i, t in raw.get("symlinks", {}).items()}
        return Manifest(str(raw["state"]), int(raw["next_id"]), dirs, symlinks)
    except (KeyError, TypeError, ValueError) as exc:
        raise LazyFsError(f"{_manifest_path(backing)} is malformed: {exc!r}") from exc


def write_manifest(backing: Path, data: Mapping[str, Any], host_fsync: bool) -> None:
    path = _manifest_path(backing)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        if host_fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if host_fsync:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_path(backing: Path, relpath: str) -> Path | None:
    """Where the durable content of the file at ``relpath`` lives (None: not durably named
    there, or its content is empty because it was never fsynced)."""
    manifest = read_manifest(backing)
    if manifest is None:
        return None
    entry = Entry(DIR, ROOT_ID, 0)
    for part in _split(relpath):
        if entry.kind != DIR:
            return None
        found = manifest.dirs.get(entry.ino, {}).get(part)
        if found is None:
            return None
        entry = found
    path = inode_path(backing, entry.ino)
    return path if entry.kind == FILE and path.exists() else None


# ---- snapshot and restore ---------------------------------------------------------------------


def walk_live(live: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under ``live``, parents first; bounded."""
    stack = [""]
    count = 0
    while stack:
        rel = stack.pop()
        with os.scandir(live / rel if rel else live) as it:
            for item in sorted(it, key=lambda d: d.name):
                count += 1
                if count > ENTRIES_MAX:
                    raise LazyFsError(f"more than {ENTRIES_MAX} entries under {live}")
                child = f"{rel}/{item.name}".lstrip("/")
                st = item.stat(follow_symlinks=False)
                yield child, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)


def snapshot(backing: Path, host_fsync: bool = True) -> Tree:
    """Take ``live/`` as it is as fully durable (a first mount): every file copied to
    ``durable/inodes``, every directory's entries recorded; returns the tree."""
    live = backing / "live"
    inodes = _durable_dir(backing) / "inodes"
    if inodes.exists():
        for old in inodes.iterdir():
            old.unlink()
    inodes.mkdir(parents=True, exist_ok=True)
    tree = Tree({}, {}, ROOT_ID + 1)
    by_host_ino: dict[tuple[int, int], Entry] = {}
    for rel, st in walk_live(live):
        parent, name = tree.parent(rel)
        if (st.st_dev, st.st_ino) in by_host_ino and not stat.S_ISDIR(st.st_mode):
            tree.live[parent][name] = by_host_ino[(st.st_dev, st.st_ino)]  # a hard link
            continue
        if stat.S_ISDIR(st.st_mode):
            entry = tree.add(rel, DIR, st.st_mode)
        elif stat.S_ISLNK(st.st_mode):
            entry = tree.add(rel, SYMLINK, st.st_mode, os.readlink(live / rel))
        elif stat.S_ISREG(st.st_mode):
            entry = tree.add(rel, FILE, st.st_mode)
            _copy_file(live / rel, inode_path(backing, entry.ino), host_fsync)
        else:
            logger.warning("snapshot: %s is neither file, directory nor symlink; skipped", rel)
            continue
        by_host_ino[(st.st_dev, st.st_ino)] = entry
    tree.sync_all()
    return tree


def _copy_file(src: Path, dst: Path, host_fsync: bool) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(COPY_CHUNK_BYTES):
            fout.write(chunk)
        fout.flush()
        if host_fsync:
            os.fsync(fout.fileno())


@dataclass(frozen=True, slots=True)
class RestoreStats:
    """What a restore changed: live bytes and files before, durable ones after."""

    live_files: int
    live_bytes: int
    durable_files: int
    durable_bytes: int

    def text(self) -> str:
        return (
            f"{self.live_files} files / {self.live_bytes} B before, {self.durable_files} / "
            f"{self.durable_bytes} B after (dropped {self.live_bytes - self.durable_bytes} B)"
        )


def _tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    if root.exists():
        for _, st in walk_live(root):
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


def restore(backing: Path, host_fsync: bool = True) -> RestoreStats:
    """Rebuild ``live/`` from ``durable/`` — the disk as a power loss leaves it. Must run while
    nothing is mounted over the backing (the daemon is dead). Unreferenced durable inodes are
    deleted; the manifest ends ``clean``."""
    manifest = read_manifest(backing)
    live = backing / "live"
    before = _tree_size(live)
    if manifest is None:
        raise LazyFsError(f"{backing} has no manifest: nothing was ever served from it")
    staging = backing / "live.restoring"
    old = backing / "live.old"
    for leftover in (staging, old):
        if leftover.exists():
            _rmtree(leftover)
    staging.mkdir()
    made: dict[int, Path] = {}
    stack: list[tuple[int, Path]] = [(ROOT_ID, staging)]
    visited = {ROOT_ID}
    count = 0
    while stack:
        ino, where = stack.pop()
        for name, entry in sorted(manifest.dirs.get(ino, {}).items()):
            count += 1
            if count > ENTRIES_MAX:
                raise LazyFsError(f"more than {ENTRIES_MAX} durable entries in {backing}")
            target = where / name
            if entry.kind == DIR:
                if entry.ino in visited:  # two durable names for one directory: keep the first
                    continue
                visited.add(entry.ino)
                target.mkdir(mode=entry.mode or 0o755)
                stack.append((entry.ino, target))
            elif entry.kind == SYMLINK:
                os.symlink(manifest.symlinks.get(entry.ino, ""), target)
            elif entry.ino in made:
                os.link(made[entry.ino], target)
            else:
                source = inode_path(backing, entry.ino)
                if source.exists():
                    _copy_file(source, target, host_fsync=False)
                else:
                    target.touch()
                os.chmod(target, entry.mode or 0o644)
                made[entry.ino] = target
    if live.exists():
        os.rename(live, old)
    os.rename(staging, live)
    if old.exists():
        _rmtree(old)
    inodes = _durable_dir(backing) / "inodes"
    if inodes.exists():
        for path in inodes.iterdir():
            if not path.name.isdigit() or int(path.name) not in made:
                path.unlink()
    tree = Tree(manifest.dirs, manifest.symlinks, manifest.next_id)
    tree.prune(set())
    write_manifest(backing, tree.manifest("clean"), host_fsync)
    after = _tree_size(live)
    return RestoreStats(before[0], before[1], after[0], after[1])


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)
