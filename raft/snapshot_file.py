"""The quorum's snapshot file (``raft-snapshot.bin``): encode, decode and check it.

Pure: bytes in, bytes out; the quorum (:mod:`raftlog.raft.quorum`) reads and writes the file
through pysyncobj's serializer hooks (hazard 6 of :mod:`raftlog.raft.pysyncobj_guards`: no
pickle, no attribute scraping). Checksummed, not rebuildable::

    offset 0   8 bytes  magic b"RLQSNAP1"
    offset 8   4 bytes  CRC-32 (zlib.crc32, big-endian) of everything after offset 12
    offset 12  cbor2 map {"last": [command, index, term],   # the log entry at the snapshot
                          "prev": [command, index, term],   # the entry before it
                          "voters": ["127.0.0.1:7001", ...],
                          "state": <machine.snapshot() bytes>}

Worked example: state ``b"S"`` at index 7 (term 2), previous entry index 6 (term 2), one voter:
bytes 0-7 ``RLQSNAP1``, bytes 8-11 the CRC of the cbor2 map, bytes 12.. ``a4 64 6c 61 73 74 83
...`` (a map of 4: "last" -> [h'00...', 7, 2], ...). pysyncobj sends this file as is to a
follower that needs a snapshot; the follower checks the CRC before restoring.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

import cbor2

from .quorum_types import QuorumStorageError

__all__ = [
    "Entry",
    "SnapshotFile",
    "SnapshotFileError",
    "decode_snapshot_file",
    "encode_snapshot_file",
]

_SNAPSHOT_MAGIC: Final = b"RLQSNAP1"

Entry = tuple[bytes, int, int]  # pysyncobj log entry: (command, index, term)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    last_entry: Entry
    prev_entry: Entry
    voters: tuple[str, ...]
    state: bytes


class SnapshotFileError(QuorumStorageError):
    pass


def encode_snapshot_file(snapshot: SnapshotFile) -> bytes:
    body = cbor2.dumps(
        {
            "last": list(snapshot.last_entry),
            "prev": list(snapshot.prev_entry),
            "voters": list(snapshot.voters),
            "state": snapshot.state,
        }
    )
    return _SNAPSHOT_MAGIC + struct.pack(">I", zlib.crc32(body)) + body


def _entry(value: object) -> Entry:
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], bytes)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    ):
        return (value[0], value[1], value[2])
    raise SnapshotFileError(f"bad log entry in snapshot file: {value!r:.100}")


def decode_snapshot_file(blob: bytes) -> SnapshotFile:
    if len(blob) < 12 or blob[:8] != _SNAPSHOT_MAGIC:
        raise SnapshotFileError("not a raftlog snapshot file (bad magic)")
    (crc,) = struct.unpack(">I", blob[8:12])
    body = blob[12:]
    if zlib.crc32(body) != crc:
        raise SnapshotFileError("snapshot file checksum mismatch")
    try:
        decoded = cbor2.loads(body)
    except Exception as exc:
        raise SnapshotFileError(f"snapshot file body is not cbor2: {exc}") from exc
    if not isinstance(decoded, dict):
        raise SnapshotFileError("snapshot file body is not a map")
    voters = decoded.get("voters")
    state = decoded.get("state")
    if not isinstance(voters, list) or not all(isinstance(v, str) for v in voters):
        raise SnapshotFileError("bad voters in snapshot file")
    if not isinstance(state, bytes):
        raise SnapshotFileError("bad state in snapshot file")
    return SnapshotFile(
        last_entry=_entry(decoded.get("last")),
        prev_entry=_entry(decoded.get("prev")),
        voters=tuple(voters),
        state=state,
    )
