"""The metadata snapshot and partition rows: cbor2 encodings of the replicated state.

Pure: values in, bytes out, and back. :class:`~raftlog.raft.metadata.MetadataState` snapshots
itself through :func:`encode_snapshot` / :func:`decode_snapshot` (the quorum stores the bytes
inside its own checksummed snapshot file, :mod:`raftlog.raft.snapshot_file`), and sends a
broker the partitions it replicates as :func:`encode_partition_rows`. Not checksummed here;
every node encodes the same state to the same bytes (maps in insertion order, sets sorted).

A snapshot is one cbor2 map (version 3; versions 1 and 2 are still read)::

    {"v": 3,                       # SNAPSHOT_VERSION
     "version": int,               # commands applied
     "next_producer_id": int, "next_topic_id": int,
     "brokers": [[broker_id, address, incarnation, rack, fenced, registered_version,
                  password_address, kafka_address], ...],  # password_address: v3 onwards;
                                                    # kafka_address: optional (None if absent)
     "topics": [[name, topic_id, partitions, replication_factor, [[key, value], ...]], ...],
     "partitions": [<partition row>, ...],
     "epoch_floor": [[topic, partition, leader_epoch, partition_epoch], ...],  # deleted ones
     "acls": [<AclBinding.to_dict()>, ...],         # sorted; v3 onwards
     "users": [[name, <ScramCredential.to_dict()>], ...],  # sorted by name; v3 onwards
     "voters": [[node_id, raft_address, grpc_address], ...],  # optional: once changed
     "joining_voter": [node_id, raft_address, grpc_address]}  # optional: add-voter under way

A partition row is ``[topic, partition, topic_id, replicas, isr, leader, leader_epoch,
partition_epoch, elr, last_known_elr]`` (``elr`` and ``last_known_elr``: v2 onwards), followed by
``adding, removing, throttle`` only while a reassignment is in progress (older readers never meet
them: a state with one is written only by a version that starts reassignments).

Worked example: broker 1 (``10.0.0.1:9092``, incarnation 7, rack ``r1``) registered by command
1 and unfenced by command 2, then topic ``orders`` (1 partition, replica 1) created by command
3, snapshot in 156 bytes: ``{"v": 3, "version": 3, "next_producer_id": 0, "next_topic_id": 2,
"brokers": [[1, "10.0.0.1:9092", 7, "r1", false, 1, null, null]], "topics": [["orders", 1, 1, 1,
[]]], "partitions": [["orders", 0, 1, [1], [1], 1, 0, 0, [], []]], "epoch_floor": [], "acls":
[], "users": []}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from .acl import AclBinding
from .metadata_records import BrokerRecord, PartitionRecord, TopicPartition, TopicRecord
from .scram import ScramCredential
from .voters import VoterRecord

__all__ = [
    "ROWS_PER_CHUNK",
    "SNAPSHOT_VERSION",
    "SnapshotContents",
    "decode_partition_rows",
    "decode_snapshot",
    "encode_partition_rows",
    "encode_snapshot",
]

SNAPSHOT_VERSION = 3  # 2: partitions carry elr and last_known_elr; 3: acls and users


@dataclass(frozen=True, slots=True)
class SnapshotContents:
    """What a snapshot holds: the state machine's replicated fields (its lookups are rebuilt)."""

    version: int
    next_producer_id: int
    next_topic_id: int
    brokers: Iterable[BrokerRecord]
    topics: Iterable[TopicRecord]
    partitions: Iterable[PartitionRecord]
    epoch_floor: Mapping[TopicPartition, tuple[int, int]]  # (leader, partition) epoch floors
    acls: Iterable[AclBinding]  # any order: encoded sorted
    users: Mapping[str, ScramCredential]  # any order: encoded sorted by name
    voters: Sequence[VoterRecord] = ()  # () until the first membership change (voters.py)
    joining_voter: VoterRecord | None = None


def encode_snapshot(contents: SnapshotContents) -> bytes:
    """The snapshot's bytes, exactly as ``cbor2.dumps`` writes the map above (a test holds the
    two equal), but written piece by piece: each list in chunks of at most
    :data:`ROWS_PER_CHUNK` rows.

    Why: ``cbor2.dumps`` is C code that holds the GIL for the whole call — 200 ms for the rows
    of 100k partitions, measured — so an encoding on a background thread would stall the Raft
    thread for as long. One chunk takes ~3 ms; between chunks the interpreter can switch."""
    body: list[tuple[str, Any]] = [
        ("v", SNAPSHOT_VERSION),
        ("version", contents.version),
        ("next_producer_id", contents.next_producer_id),
        ("next_topic_id", contents.next_topic_id),
        ("brokers", _Rows(_broker_row, list(contents.brokers))),
        ("topics", _Rows(_topic_row, list(contents.topics))),
        ("partitions", _Rows(_partition_row, list(contents.partitions))),
        ("epoch_floor", _Rows(_floor_row, list(contents.epoch_floor.items()))),
        # sorted: the same state gives the same bytes on every node (set order varies)
        ("acls", _Rows(AclBinding.to_dict, sorted(contents.acls))),
        ("users", _Rows(_user_row, sorted(contents.users.items()))),
    ]
    # written only once a membership change happened: older readers never meet them
    if contents.voters:
        body.append(("voters", [list(v.as_row()) for v in contents.voters]))
    if contents.joining_voter is not None:
        body.append(("joining_voter", list(contents.joining_voter.as_row())))
    parts = [_cbor_head(_MAP, len(body))]
    for key, value in body:
        parts.append(cbor2.dumps(key))
        if isinstance(value, _Rows):
            parts.extend(value.encode())
        else:
            parts.append(cbor2.dumps(value))
    return b"".join(parts)


ROWS_PER_CHUNK = 2000  # rows per cbor2.dumps call: ~3 ms with the GIL held (100k rows: 200 ms)
_ARRAY, _MAP = 4, 5  # CBOR major types


def _cbor_head(major: int, length: int) -> bytes:
    """A CBOR data item head (RFC 8949 3.1): major type and length, in its shortest form."""
    if length < 24:
        return bytes([major << 5 | length])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | extra]) + length.to_bytes(size, "big")
    raise ValueError(f"a CBOR length of {length} does not fit 64 bits")


@dataclass(frozen=True, slots=True)
class _Rows:
    """A list to encode as one CBOR array, row by row, in chunks."""

    row: Callable[[Any], Any]
    items: Sequence[Any]

    def encode(self) -> Iterator[bytes]:
        yield _cbor_head(_ARRAY, len(self.items))
        for start in range(0, len(self.items), ROWS_PER_CHUNK):
            chunk = [self.row(item) for item in self.items[start : start + ROWS_PER_CHUNK]]
            # cbor2 writes the chunk as an array: its head is dropped, its items kept
            yield cbor2.dumps(chunk)[len(_cbor_head(_ARRAY, len(chunk))) :]


def _broker_row(b: BrokerRecord) -> tuple[Any, ...]:
    return (
        b.broker_id,
        b.address,
        b.incarnation,
        b.rack,
        b.fenced,
        b.registered_version,
        b.password_address,
        b.kafka_address,
    )


def _topic_row(t: TopicRecord) -> tuple[Any, ...]:
    return (t.name, t.topic_id, t.partitions, t.replication_factor, t.configs)


def _floor_row(item: tuple[TopicPartition, tuple[int, int]]) -> tuple[Any, ...]:
    (topic, partition), (leader_epoch, partition_epoch) = item
    return (topic, partition, leader_epoch, partition_epoch)


def _user_row(item: tuple[str, ScramCredential]) -> tuple[Any, ...]:
    return (item[0], item[1].to_dict())


def decode_snapshot(data: bytes) -> SnapshotContents:
    """A snapshot of version 1 to :data:`SNAPSHOT_VERSION` back (``ValueError`` for another
    version; a damaged body raises what decoding it raises)."""
    body = cbor2.loads(data)
    if not isinstance(body, dict) or body.get("v") not in range(1, SNAPSHOT_VERSION + 1):
        raise ValueError(f"not a metadata snapshot of version 1 to {SNAPSHOT_VERSION}")
    brokers = [
        # password_address: v3 onwards; kafka_address: written since the Kafka listener
        BrokerRecord(
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6] if len(b) > 6 else None,
            b[7] if len(b) > 7 else None,
        )
        for b in body["brokers"]
    ]
    topics = [
        TopicRecord(t[0], t[1], t[2], t[3], tuple(tuple(c) for c in t[4])) for t in body["topics"]
    ]
    return SnapshotContents(
        version=body["version"],
        next_producer_id=body["next_producer_id"],
        next_topic_id=body["next_topic_id"],
        brokers=brokers,
        topics=topics,
        partitions=[_partition_from_row(p) for p in body["partitions"]],
        epoch_floor={(t, p): (le, pe) for t, p, le, pe in body["epoch_floor"]},
        # versions 1 and 2 had no ACLs and no users
        acls={AclBinding.from_dict(b) for b in body.get("acls", ())},
        users={name: ScramCredential.from_dict(c) for name, c in body.get("users", ())},
        voters=[VoterRecord(int(i), str(r), str(g)) for i, r, g in body.get("voters", ())],
        joining_voter=(
            VoterRecord(*body["joining_voter"]) if body.get("joining_voter") is not None else None
        ),
    )


def encode_partition_rows(records: Iterable[PartitionRecord]) -> bytes:
    """Partition states as a cbor2 array of rows (the snapshot's row format)."""
    return bytes(cbor2.dumps([_partition_row(p) for p in records]))


def decode_partition_rows(data: bytes) -> list[PartitionRecord]:
    """:func:`encode_partition_rows`' rows back; ValueError for anything else."""
    try:
        rows = cbor2.loads(data)
        if not isinstance(rows, list):
            raise TypeError("not a list")
        return [_partition_from_row(row) for row in rows]
    except (ValueError, TypeError, IndexError, KeyError, cbor2.CBORDecodeError) as exc:
        raise ValueError(f"not partition states: {exc}") from exc


def _partition_row(p: PartitionRecord) -> tuple[Any, ...]:
    # tuples encode as cbor2 arrays exactly like lists, without copying each one first (at 100k
    # partitions this is the difference between 430 and 120 ms on the Raft thread for a snapshot)
    return (
        p.topic,
        p.partition,
        p.topic_id,
        p.replicas,
        p.isr,
        p.leader,
        p.leader_epoch,
        p.partition_epoch,
        p.elr,
        p.last_known_elr,
    ) + ((p.adding, p.removing, p.throttle) if p.adding or p.removing else ())


def _partition_from_row(p: Sequence[Any]) -> PartitionRecord:
    replicas = tuple(p[3])
    isr = replicas if p[4] == p[3] else tuple(p[4])
    elr, last_known = (tuple(p[8]), tuple(p[9])) if len(p) > 8 else ((), ())  # v1 had neither
    if len(p) > 10:  # a reassignment in progress
        return PartitionRecord(
            p[0], p[1], p[2], replicas, isr, p[5], p[6], p[7], elr, last_known,
            tuple(p[10]), tuple(p[11]), p[12],
        )  # fmt: skip
    return PartitionRecord(p[0], p[1], p[2], replicas, isr, p[5], p[6], p[7], elr, last_known)
