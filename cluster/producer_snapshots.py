"""The idempotent-producer state of a replica kept across restarts and truncations: snapshots in
LMDB and the rebuild from a snapshot and the log.

The state itself and its rules are ``producer_state.py`` (pure); this is its IO. Called by the
replica manager on the broker loop; not thread-safe.

A snapshot is one LMDB blob per replica under ``producers``/``<topic>-<partition>``: a dict
``{"offset": o, "state": ProducerStateManager.to_snapshot()}`` (cbor2 through the state store),
the state as of log offset ``o`` — the log end when it was taken, e.g. ``{"offset": 4, "state":
[[7, 0, 1700000000000, [[0, 1, 0, 1], [2, 3, 2, 3]]]]}``: producer 7, epoch 0, its batches of
sequences 0-1 at offsets 0-1 and 2-3 at 2-3. It is rebuildable (the log holds every batch's
producer fields), so a missing or unreadable one only costs a replay of the whole log; one
*above* the log's end is never trusted, as it describes batches the log no longer holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from raftlog.segments import BrokerStateStore, Log, StorageError

from .partition import Partition
from .producer_state import ProducerStateManager

__all__ = ["drop_producer_snapshot_above", "rebuild_producers", "snapshot_producers"]

logger = logging.getLogger(__name__)

_BLOBS = "producers"  # the state store's table of snapshots


def rebuild_producers(log: Log, state: BrokerStateStore, name: str) -> ProducerStateManager:
    """Producer state from the newest snapshot at or below the LEO, plus the batches after it
    (the whole log when no snapshot fits: O(log), only after an unusual truncation)."""
    saved = state.get_blob(_BLOBS, name)
    if isinstance(saved, dict) and saved.get("offset", -1) > log.log_end_offset:
        # above the log's end (a power loss took the tail): never to be trusted once the log
        # grows past it again with other batches (see ReplicaManager.truncate)
        state.delete_blob(_BLOBS, name)
        saved = None
    start = log.log_start_offset
    producers = ProducerStateManager()
    if isinstance(saved, dict) and log.log_start_offset <= saved.get("offset", -1) <= (
        log.log_end_offset
    ):
        try:
            producers = ProducerStateManager.from_snapshot(saved["state"])
            start = int(saved["offset"])
        except (KeyError, TypeError, ValueError):
            producers, start = ProducerStateManager(), log.log_start_offset
    replayed = 0
    try:
        for header in log.iter_headers(start):
            if header.base_offset < start:
                continue  # the batch holding ``start`` began before it: already counted
            if header.producer_id >= 0:
                producers.record_batch(header, header.base_offset, header.last_offset)
            replayed += 1
    except StorageError as exc:
        logger.error("%s: producer state rebuilt up to a corrupt batch: %s", name, exc)
    producers.dirty = True
    logger.debug(
        "%s: producer state rebuilt from offset %d (%d batches replayed)", name, start, replayed
    )
    return producers


def snapshot_producers(partitions: Iterable[Partition], state: BrokerStateStore) -> int:
    """Write the producer state of every partition that changed; how many were written."""
    written = 0
    for partition in partitions:
        if partition.producers.dirty:
            body = {
                "offset": partition.log.log_end_offset,
                "state": partition.producers.to_snapshot(),
            }
            try:
                state.put_blob(_BLOBS, partition.name, body)
            except Exception as exc:  # lmdb's own types; retried at the next interval
                logger.error("%s: producer snapshot failed: %s", partition.name, exc)
                continue
            partition.producers.dirty = False
            written += 1
    return written


def drop_producer_snapshot_above(state: BrokerStateStore, name: str, offset: int) -> None:
    """Delete ``name``'s snapshot if it was taken above ``offset`` (the log is cut there)."""
    saved = state.get_blob(_BLOBS, name)
    if isinstance(saved, dict) and saved.get("offset", -1) > offset:
        state.delete_blob(_BLOBS, name)
