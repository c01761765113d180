"""The Raft journal: pysyncobj's log entries on disk, written with ``pwrite`` and made durable
with ``fdatasync`` in groups (hazard 7 of :mod:`raftlog.raft.pysyncobj_guards`).

pysyncobj's own ``FileJournal`` writes through an mmap and never syncs; the quorum used to
msync it every 50 ms, *after* the entries had been acknowledged. :class:`DurableJournal` replaces
it (same duck-typed interface, plugged in through ``pysyncobj.syncobj.createJournal``) and makes
durability explicit: ``add`` / ``deleteEntriesFrom`` only change memory; :meth:`sync` writes what
changed with one ``pwrite`` (plus an ``ftruncate`` after a cut) and one ``fdatasync``, and
:attr:`durable_last_index` says how far the disk is known to hold this node's log. The quorum
calls :meth:`sync` once per Raft tick (group commit: every entry appended in a tick shares one
fdatasync) and holds every acknowledgement until it has. Plain ``write``/``fdatasync`` rather
than an mmap also keeps the file's crash behaviour simple to model: bytes not synced may be
lost, nothing else.

Owned by one pysyncobj ``SyncObj``; every method runs on its Raft thread (not thread-safe).

File ``raft-journal.bin`` (checksummed per entry; rebuildable from the leader)::

    offset 0   8 bytes  magic b"RLQJRNL1"
    then one record per entry, back to back:
      4 bytes  body length n (big-endian u32)
      4 bytes  CRC-32 (zlib.crc32, big-endian) of the body
      n bytes  body: index (u64 BE), term (u64 BE), command (n - 16 bytes)

Worked example: entries (b"\\x00", 1, 0) and (b"abc", 2, 3) give 8 + 25 + 27 = 60 bytes:
``RLQJRNL1``, then ``00 00 00 11`` (17), the CRC of the 17-byte body, the body ``00..01 00..00
00``; then ``00 00 00 13`` (19), its CRC, ``00..02 00..03 61 62 63``.

Start-up reads records while they are whole, their CRC matches, and indexes run on by one with
terms not decreasing. The first record that fails (a torn tail after power loss, a flipped bit,
a truncated file) ends the log: the file is cut there (``ftruncate`` + ``fsync``) and
:attr:`damage` describes what was cut. Every entry after the damage is gone from this node; the
quorum then keeps the node out of elections until a leader has brought it back (see hazard 15
in :mod:`raftlog.raft.pysyncobj_guards`). A file written by pysyncobj's ``FileJournal`` (magic
``PYSYNCOBJ``) is read once in that format and rewritten in this one (tmp + fsync + rename +
directory fsync).

``raft-journal.bin.meta`` holds currentTerm, votedForNodeId and raftCommitIndex as pysyncobj
wrote it (a protocol 2 pickle of a dict, read back with the allow-list unpickler), replaced
atomically (tmp + fsync + rename + directory fsync) on every term or vote change, before any
message reflecting it is sent; the commit index rides along once a second (it needs no
durability: it is relearned from the leader).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pysyncobj.pickle import dumps as _pickle_dumps

from . import safe_pickle

__all__ = [
    "JOURNAL_MAGIC",
    "DurableJournal",
    "JournalDamage",
    "encode_record",
    "fsync_dir",
]

logger = logging.getLogger(__name__)

JOURNAL_MAGIC: Final = b"RLQJRNL1"
_RECORD_HEADER: Final = struct.Struct(">II")  # body length, crc32(body)
_BODY_HEADER: Final = struct.Struct(">QQ")  # index, term
_PYSYNCOBJ_MAGIC: Final = b"PYSYNCOBJ"
_PYSYNCOBJ_FIRST_RECORD: Final = 24 + 8 + 4 + 4  # name, version, format, last-record offset
_RECORD_BYTES_MAX: Final = 1 << 31  # anything longer is damage, not an entry

Entry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj keeps them


@dataclass(frozen=True, slots=True)
class JournalDamage:
    """What start-up cut from a damaged journal."""

    valid_bytes: int  # the file was cut to this length
    bytes_cut: int
    last_good_index: int | None  # index of the last entry kept (None: no entry survived)
    reason: str
    # False for a torn tail: an incomplete last record, or only zero bytes after the last good
    # record (what power loss leaves of a write that was never fdatasync-ed, so never
    # acknowledged). True when whole-looking data failed its checks: synced, acknowledged
    # entries may be gone.
    suspect: bool


def encode_record(command: bytes, index: int, term: int) -> bytes:
    body = _BODY_HEADER.pack(index, term) + command
    return _RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body


def fsync_dir(path: str) -> None:
    """Make the directory's entries (files created, renamed, deleted) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(blob: bytes) -> tuple[list[Entry], list[int], int, str | None]:
    """Records of our format after the magic: (entries, offsets, valid length, why it ended)."""
    entries: list[Entry] = []
    offsets: list[int] = []
    pos = len(JOURNAL_MAGIC)
    end = len(blob)
    while pos < end:
        if end - pos < _RECORD_HEADER.size:
            return entries, offsets, pos, "torn record header"
        length, crc = _RECORD_HEADER.unpack_from(blob, pos)
        body_at = pos + _RECORD_HEADER.size
        if length < _BODY_HEADER.size or length > _RECORD_BYTES_MAX:
            return entries, offsets, pos, f"bad record length {length}"
        if end - body_at < length:
            return entries, offsets, pos, "torn record body"
        body = blob[body_at : body_at + length]
        if zlib.crc32(body) != crc:
            return entries, offsets, pos, "record checksum mismatch"
        index, term = _BODY_HEADER.unpack_from(body)
        if entries and (index != entries[-1][1] + 1 or term < entries[-1][2]):
            return entries, offsets, pos, f"entry {index} (term {term}) does not follow on"
        entries.append((bytes(body[_BODY_HEADER.size :]), index, term))
        offsets.append(pos)
        pos = body_at + length
    return entries, offsets, pos, None


def _parse_pysyncobj(blob: bytes) -> list[Entry]:
    """Entries of a pysyncobj 0.3.17 ``FileJournal`` (mmap format; no checksums)."""
    if len(blob) < _PYSYNCOBJ_FIRST_RECORD:
        return []
    (last,) = struct.unpack_from("<I", blob, _PYSYNCOBJ_FIRST_RECORD - 4)
    last = min(last, len(blob))
    entries: list[Entry] = []
    pos = _PYSYNCOBJ_FIRST_RECORD
    while pos + 4 <= last:
        (size,) = struct.unpack_from("<I", blob, pos)
        if size < 16 or pos + 8 + size > last:
            break
        index, term = struct.unpack_from("<QQ", blob, pos + 4)
        entries.append((bytes(blob[pos + 20 : pos + 4 + size]), index, term))
        pos += size + 8
    return entries


class DurableJournal:
    """pysyncobj's ``Journal`` interface over one append-only file; see the module docstring.

    Invariants: ``len(_offsets) == len(_entries)``; ``_offsets[i]`` is where entry i's record
    starts (or will start) in the file; ``0 <= _synced <= len(_entries)`` and the first
    ``_synced`` entries are on disk exactly as in memory and fdatasync-ed; ``_end`` is where the
    record after the last entry starts.
    """

    def __init__(self, path: str, *, fdatasync: Callable[[int], None] = os.fdatasync) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._dir = os.path.dirname(os.path.abspath(path))
        self._fdatasync = fdatasync  # tests inject a recorder here
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._end = len(JOURNAL_MAGIC)
        self._synced = 0
        self._rewrite = False  # clear() happened: the next sync replaces the file
        self.damage: JournalDamage | None = None
        self.syncs = 0  # fdatasync calls made by sync()
        self.cuts = 0  # deleteEntriesFrom / clear calls that dropped entries (acks go stale)
        self._meta: dict[str, Any] = self._load_meta()
        self._meta_saved = True
        self._fd = self._open()

    # ---- start-up -------------------------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        if not os.path.exists(self._meta_path):
            return {}
        with open(self._meta_path, "rb") as f:
            meta = safe_pickle.loads(f.read())  # the quorum refuses a bad one before this
        return meta if isinstance(meta, dict) else {}

    def _open(self) -> int:
        blob = b""
        if os.path.exists(self._path):
            with open(self._path, "rb") as f:
                blob = f.read()
        if blob.startswith(_PYSYNCOBJ_MAGIC):
            self._entries = _parse_pysyncobj(blob)
            logger.info(
                "rewriting pysyncobj journal %s (%d entries)", self._path, len(self._entries)
            )
            self._write_whole_file()
            return os.open(self._path, os.O_RDWR)
        if not blob:
            self._write_whole_file()
            return os.open(self._path, os.O_RDWR)
        if blob.startswith(JOURNAL_MAGIC):
            entries, offsets, valid, reason = _parse(blob)
        else:
            entries, offsets, valid, reason = [], [], 0, "bad magic"
        self._entries, self._offsets = entries, offsets
        self._end = max(valid, len(JOURNAL_MAGIC))
        self._synced = len(entries)
        if reason is not None:
            torn = reason.startswith("torn") or not blob[valid:].strip(b"\0")
            self.damage = JournalDamage(
                valid_bytes=valid,
                bytes_cut=len(blob) - valid,
                last_good_index=entries[-1][1] if entries else None,
                reason=reason,
                suspect=not torn,
            )
            logger.critical(
                "Raft journal %s is damaged at byte %d (%s): cut %d bytes; last good entry %s",
                self._path,
                valid,
                reason,
                len(blob) - valid,
                self.damage.last_good_index,
            )
            if valid < len(JOURNAL_MAGIC):
                self._write_whole_file()
                return os.open(self._path, os.O_RDWR)
            fd = os.open(self._path, os.O_RDWR)
            os.ftruncate(fd, valid)
            os.fsync(fd)
            return fd
        return os.open(self._path, os.O_RDWR)

    def _write_whole_file(self) -> None:
        """Replace the file atomically with the entries in memory (tmp, fsync, rename)."""
        parts = [JOURNAL_MAGIC]
        offsets: list[int] = []
        end = len(JOURNAL_MAGIC)
        for command, index, term in self._entries:
            record = encode_record(command, index, term)
            offsets.append(end)
            parts.append(record)
            end += len(record)
        tmp = self._path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = b"".join(parts)
            written = 0
            while written < len(data):
                written += os.write(fd, memoryview(data)[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        fsync_dir(self._dir)
        self._offsets, self._end = offsets, end
        self._synced = len(self._entries)
        self._rewrite = False

    # ---- durability (the quorum's part) ----------------------------------------------------

    @property
    def durable_last_index(self) -> int:
        """Index of the last entry known to be on disk as in memory (0: none)."""
        return self._entries[self._synced - 1][1] if self._synced else 0

    @property
    def dirty(self) -> bool:
        return self._rewrite or self._synced < len(self._entries)

    def sync(self) -> bool:
        """Make every entry durable: one pwrite of the unsynced tail, one fdatasync (or an atomic
        rewrite after ``clear``). Returns whether anything had to be written."""
        if self._rewrite:
            self._write_whole_file()
            self._reopen()
            self.syncs += 1
            return True
        if self._synced == len(self._entries):
            return False
        start = self._offsets[self._synced]
        data = b"".join(encode_record(*entry) for entry in self._entries[self._synced :])
        # A cut may have left stale records past `start`; drop them before the new ones land.
        if os.fstat(self._fd).st_size > start:
            os.ftruncate(self._fd, start)
        written = 0
        view = memoryview(data)
        while written < len(data):
            written += os.pwrite(self._fd, view[written:], start + written)
        self._fdatasync(self._fd)
        self.syncs += 1
        self._synced = len(self._entries)
        return True

    def _reopen(self) -> None:
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR)

    # ---- pysyncobj's Journal interface ------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += _RECORD_HEADER.size + _BODY_HEADER.size + len(command)

    def clear(self) -> None:
        if self._entries:
            self.cuts += 1
        self._entries, self._offsets = [], []
        self._end = len(JOURNAL_MAGIC)
        self._synced = 0
        self._rewrite = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        self.cuts += 1
        self._end = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._synced = min(self._synced, entryFrom)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the prefix a snapshot now covers: one atomic rewrite (pysyncobj's version
        rewrote the file in place, so a crash in between lost the tail)."""
        if entryTo <= 0:
            return
        del self._entries[:entryTo]
        self._write_whole_file()
        self._reopen()

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
            if not self._meta_saved:
                self._store_meta()
        finally:
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        # Never beyond the log we hold (a cut tail): the leader tells us the rest.
        commit = int(self._meta.get("raftCommitIndex", 1))
        return min(commit, self._entries[-1][1]) if self._entries else commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # Raft: currentTerm and votedFor are durable before a message reflecting them is sent.
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            self._store_meta()

    def _store_meta(self) -> None:
        tmp = self._meta_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_pickle_dumps(self._meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._meta_path)
        fsync_dir(self._dir)
        self._meta_saved = True
