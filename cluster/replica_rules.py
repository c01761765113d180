"""What a produce or a fetch is answered: the request and answer values of the replica manager,
and the rules that pick each answer's error code.

Pure — no IO, no clock, nothing of the loop — over plain values: the replica (``Replica``: its
name, leader and leader epoch), the topic metadata (a lookup), the offsets of its log. The replica
manager (``replica_manager.py``) reads those, asks these rules and carries the answer out; the
replication rules proper (HW, ISR, divergence) are in ``replication.py``, the produce decision
for the batches themselves in ``produce.py``.

- Produce, before anything is appended: acks other than 0, 1 or all → INVALID_REQUIRED_ACKS;
  metadata not loaded yet → LEADER_NOT_AVAILABLE; no such topic or partition →
  UNKNOWN_TOPIC_OR_PARTITION; no replica here, or one that does not lead →
  NOT_LEADER_OR_FOLLOWER; a broker cut off from the controller → NOT_LEADER_OR_FOLLOWER too (its
  leaderships may have moved already).
- acks=all, while waiting: leadership moved or the broker was cut off → NOT_LEADER_OR_FOLLOWER
  (the outcome is unknown to the client); the HW passed the batch → success, unless the ISR is
  below ``min.insync.replicas`` (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
- Fetch: as for produce up to the leadership, then the fetcher's leader epoch — older →
  FENCED_LEADER_EPOCH, newer → UNKNOWN_LEADER_EPOCH (``replication.fetch_epoch_error``) — and a
  follower that is no replica of the partition → NOT_LEADER_OR_FOLLOWER. Consumers read below
  the HW, followers below the LEO; an offset outside [log start, LEO] → OFFSET_OUT_OF_RANGE. A
  fetch is answered at once when it has ``min_bytes``, an error or a diverging epoch, or may not
  wait; else it waits until one of its partitions has moved (leader epoch, or its readable end
  went back) or enough bytes are readable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from raftlog.proto.codes import ErrorCode
from raftlog.raft.metadata_records import NO_LEADER, TopicRecord

from .replication import LeaderReplication, fetch_epoch_error

__all__ = [
    "CONSUMER",
    "WAITABLE",
    "FetchOutcome",
    "FetchSpec",
    "ProduceOutcome",
    "Replica",
    "acks_all_verdict",
    "acks_error",
    "estimated_bytes",
    "fetch_answers_now",
    "fetch_moved",
    "fetch_offset_error",
    "fetch_target_error",
    "produce_target_error",
    "read_bytes_limit",
    "readable_end",
]

CONSUMER = -1  # the replica id of a consumer's fetch (followers send their broker id)

# an acks=all produce with this answer waits for the HW: a duplicate waits until its original
# commits
WAITABLE = (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER)

Error = tuple[ErrorCode, str]  # (the code, a human message)


@dataclass(frozen=True, slots=True)
class ProduceOutcome:
    topic: str
    partition: int
    error: ErrorCode = ErrorCode.NONE  # an ErrorCode name
    message: str = ""
    base_offset: int = -1
    last_offset: int = -1
    log_start_offset: int = -1
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchSpec:
    topic: str
    partition: int
    fetch_offset: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    max_bytes: int = 1 << 20
    log_start_offset: int = -1


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    topic: str
    partition: int
    error: ErrorCode = ErrorCode.NONE
    message: str = ""
    high_watermark: int = -1
    log_start_offset: int = -1
    log_end_offset: int = -1
    records: bytes = b""
    diverging_epoch: tuple[int, int] | None = None
    leader_id: int = NO_LEADER
    leader_epoch: int = -1


class Replica(Protocol):
    """What the rules read of a replica (``partition.Partition`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def leader(self) -> LeaderReplication | None: ...  # set while this broker leads

    @property
    def leader_id(self) -> int: ...

    @property
    def leader_epoch(self) -> int: ...


# ---- produce -------------------------------------------------------------------------------------


def acks_error(acks: int) -> Error | None:
    if acks in (-1, 0, 1):
        return None
    return ErrorCode.INVALID_REQUIRED_ACKS, "acks must be 0, 1 or all (-1)"


def produce_target_error(
    ready: bool,
    topic: str,
    index: int,
    replica: Replica | None,
    topic_lookup: Callable[[str], TopicRecord | None],
    cut_off: str | None,
) -> Error | None:
    """May this broker append to ``topic``-``index`` as its leader? None when it may.

    ``replica`` is this broker's replica of it (None: it holds none), ``cut_off`` why the broker
    refuses produces (None: it does not)."""
    if not ready:
        return ErrorCode.LEADER_NOT_AVAILABLE, "this broker is still loading metadata"
    if replica is None:
        record = topic_lookup(topic)
        if record is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {topic!r}"
        if not 0 <= index < record.partitions:
            return (
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {topic!r} has partitions 0-{record.partitions - 1}",
            )
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, f"this broker holds no {topic}-{index}"
    if replica.leader is None:
        return (
            ErrorCode.NOT_LEADER_OR_FOLLOWER,
            f"{replica.name} is led by broker {replica.leader_id}",
        )
    if cut_off is not None:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, cut_off
    return None


def acks_all_verdict(
    replica: Replica,
    cut_off: bool,
    appended: ProduceOutcome,
    min_insync_replicas: int,
) -> Error | None:
    """A waiting acks=all append (``appended``: what the append answered): None while it waits,
    (ErrorCode.NONE, "") once committed, else the error it is answered with."""
    leader = replica.leader
    if leader is None or replica.leader_epoch != appended.leader_epoch:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership moved"
    if cut_off:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, "this broker lost the controller"
    verdict = leader.acks_all_outcome(appended.last_offset, min_insync_replicas)
    if verdict is None:
        return None
    if verdict == ErrorCode.NONE:
        return ErrorCode.NONE, ""
    return verdict, "the ISR shrank below the minimum"


# ---- fetch ---------------------------------------------------------------------------------------


def fetch_target_error(
    ready: bool,
    spec: FetchSpec,
    replica_id: int,
    replica: Replica | None,
    topic_lookup: Callable[[str], TopicRecord | None],
) -> Error | None:
    """May ``replica_id`` (``CONSUMER`` or a follower's broker id) fetch this partition from
    this broker, as its leader, in the leader epoch it names? None when it may."""
    topic, index = spec.topic, spec.partition
    if not ready:
        return ErrorCode.LEADER_NOT_AVAILABLE, "loading metadata"
    if replica is None:
        record = topic_lookup(topic)
        code = (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if record is None or not 0 <= index < record.partitions
            else ErrorCode.NOT_LEADER_OR_FOLLOWER
        )
        return code, f"no replica of {topic}-{index} here"
    leader = replica.leader
    if leader is None:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{replica.name} is led by {replica.leader_id}"
    stale = fetch_epoch_error(spec.current_leader_epoch, leader.leader_epoch)
    if stale is not None:
        return stale
    if replica_id != CONSUMER and replica_id not in leader.followers:
        return (
            ErrorCode.NOT_LEADER_OR_FOLLOWER,
            f"broker {replica_id} is not a replica of {replica.name}",
        )
    return None


def readable_end(replica_id: int, high_watermark: int, log_end_offset: int) -> int:
    """Followers read up to the LEO, consumers up to the HW."""
    return high_watermark if replica_id == CONSUMER else log_end_offset


def fetch_offset_error(
    fetch_offset: int, log_start_offset: int, log_end_offset: int, name: str
) -> Error | None:
    if log_start_offset <= fetch_offset <= log_end_offset:
        return None
    return (
        ErrorCode.OFFSET_OUT_OF_RANGE,
        f"offset {fetch_offset} is outside [{log_start_offset}, {log_end_offset}] of {name}",
    )


def read_bytes_limit(
    fetch_offset: int, end: int, partition_max_bytes: int, request_bytes_left: int
) -> int | None:
    """How many bytes to read from ``fetch_offset`` (below ``end``); None: nothing to read. At
    least one batch always comes back, then the request's budget is a hard stop."""
    if fetch_offset >= end or request_bytes_left <= 0:
        return None
    return min(partition_max_bytes, request_bytes_left)


def fetch_answers_now(outcomes: Sequence[FetchOutcome], min_bytes: int, max_wait_ms: int) -> bool:
    """Is a fetch answered with what it read at once (else it waits in the fetch purgatory)?"""
    if max_wait_ms <= 0 or not outcomes:
        return True
    if any(o.error != ErrorCode.NONE or o.diverging_epoch for o in outcomes):
        return True
    return sum(len(o.records) for o in outcomes) >= min_bytes


def fetch_moved(start_end: int, start_epoch: int, end: int, leader_epoch: int) -> bool:
    """Leadership or the log moved under a waiting fetch (its readable end and leader epoch were
    ``start_end`` and ``start_epoch`` when it began waiting): it is answered now."""
    return leader_epoch != start_epoch or end < start_end


def estimated_bytes(
    start: int, end: int, log_start_offset: int, log_end_offset: int, size_bytes: int
) -> int:
    """Bytes between two offsets, estimated from the log's average bytes per record (a fetch's
    min_bytes is a wake-up threshold, not a promise; any record counts as >= 1)."""
    if end <= start:
        return 0
    records = max(1, log_end_offset - log_start_offset)
    return max(1, (end - start) * size_bytes // records)
