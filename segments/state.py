"""Small durable broker state in LMDB: one environment per broker.

Owned by the broker process; thread-safe (LMDB serialises writers; every call is one
transaction). Values are not checksummed beyond what LMDB guarantees (copy-on-write B+tree with
an fsync per committed write transaction when ``sync=True``).

Named databases and their records (key: the partition name ``"<topic>-<partition>"`` in UTF-8)::

    hw          int64 big-endian     the high watermark last checkpointed
    log_start   int64 big-endian     the log start offset (retention / DeleteRecords)
    recovery_point int64 big-endian  every byte of the log below it is fsynced, data and
                                     directory entry (written only after those fsyncs)
    cleaner     int64 big-endian     the cleaner checkpoint: where the dirty section of a
                                     compacted log starts (``compaction.py``)
    epochs      cbor2 [[epoch, start_offset], ...]   the leader-epoch cache
    producers   cbor2 (opaque blob)  producer-state snapshots (idempotence)
    meta        cbor2 per key        broker-wide facts (e.g. the clean-shutdown marker)

Checkpoints are written in batches (one transaction for all partitions) so their cost is one
fsync per checkpoint interval, not per partition.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2
import lmdb

from .durable import fsync_directory, makedirs_durable
from .epochs import EpochEntry

__all__ = ["BrokerStateStore"]

_INT64 = struct.Struct(">q")
_DATABASES = (
    b"hw",
    b"log_start",
    b"recovery_point",
    b"cleaner",
    b"epochs",
    b"producers",
    b"meta",
)


class BrokerStateStore:
    """The broker's checkpoint store. One per broker process and data directory."""

    def __init__(self, path: str, *, map_size_bytes: int = 1 << 30, sync: bool = True) -> None:
        self.path = path
        makedirs_durable(path)
        self._env = lmdb.open(
            path, map_size=map_size_bytes, max_dbs=len(_DATABASES), sync=sync, subdir=True
        )
        if sync:
            fsync_directory(path)  # data.mdb and lock.mdb: their names must outlive a reboot
        self._dbs = {name.decode(): self._env.open_db(name) for name in _DATABASES}

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> BrokerStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- offsets: high watermarks and log start offsets ---------------------------------------

    def save_offsets(self, db: str, offsets: Mapping[str, int]) -> None:
        """Write many checkpoints in one transaction; ``db`` is "hw", "log_start" or
        "recovery_point"."""
        handle = self._dbs[db]
        with self._env.begin(write=True, db=handle) as txn:
            for partition, offset in offsets.items():
                txn.put(partition.encode(), _INT64.pack(offset))

    def load_offsets(self, db: str) -> dict[str, int]:
        handle = self._dbs[db]
        with self._env.begin(db=handle) as txn:
            return {k.decode(): _INT64.unpack(v)[0] for k, v in txn.cursor()}

    def get_offset(self, db: str, partition: str) -> int | None:
        with self._env.begin(db=self._dbs[db]) as txn:
            raw = txn.get(partition.encode())
        return None if raw is None else int(_INT64.unpack(raw)[0])

    # ---- leader-epoch caches -------------------------------------------------------------------

    def save_epochs(self, partition: str, entries: Iterable[EpochEntry]) -> None:
        value = cbor2.dumps([[e.epoch, e.start_offset] for e in entries])
        with self._env.begin(write=True, db=self._dbs["epochs"]) as txn:
            txn.put(partition.encode(), value)

    def load_epochs(self, partition: str) -> list[EpochEntry] | None:
        with self._env.begin(db=self._dbs["epochs"]) as txn:
            raw = txn.get(partition.encode())
        if raw is None:
            return None
        return [EpochEntry(int(e), int(o)) for e, o in cbor2.loads(raw)]

    # ---- opaque blobs (producer state, broker facts) --------------------------------------------

    def put_blob(self, db: str, key: str, value: Any) -> None:
        with self._env.begin(write=True, db=self._dbs[db]) as txn:
            txn.put(key.encode(), cbor2.dumps(value))

    def delete_blob(self, db: str, key: str) -> None:
        with self._env.begin(write=True, db=self._dbs[db]) as txn:
            txn.delete(key.encode())

    def get_blob(self, db: str, key: str) -> Any:
        with self._env.begin(db=self._dbs[db]) as txn:
            raw = txn.get(key.encode())
        return None if raw is None else cbor2.loads(raw)

    def delete_partition(self, partition: str) -> None:
        """Forget every record of a partition (topic deleted or replica moved away)."""
        key = partition.encode()
        with self._env.begin(write=True) as txn:
            for handle in self._dbs.values():
                txn.delete(key, db=handle)
