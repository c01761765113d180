"""The replica manager's two delayed operations: an acks=all produce waiting for the high
watermark, and a fetch waiting for bytes to read (``purgatory.py`` holds them until then).

Each says *what* it waits for (``try_complete``, after the rules in ``replica_rules.py``) and
answers its request through an asyncio future when it completes — woken by an append, an HW move
or a leadership change on one of its partitions, or at its deadline. Created and completed on
the broker loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from raftlog.proto.codes import ErrorCode
from raftlog.raft.metadata_records import TopicPartition

from .partition import Partition
from .purgatory import DelayedOperation
from .replica_rules import (
    FetchSpec,
    ProduceOutcome,
    acks_all_verdict,
    estimated_bytes,
    fetch_moved,
    readable_end,
)

__all__ = ["DelayedFetch", "DelayedProduce", "ProduceWait", "failed"]


def failed(outcome: ProduceOutcome, error: ErrorCode, message: str) -> ProduceOutcome:
    """The answer to a produce of ``outcome``'s partition that failed with ``error``."""
    return ProduceOutcome(outcome.topic, outcome.partition, error, message)


@dataclass(slots=True)
class ProduceWait:
    """One partition's append of an acks=all produce, waiting for the HW to pass it."""

    partition: Partition
    outcome: ProduceOutcome  # what the append returned
    min_insync_replicas: int
    result: ProduceOutcome | None = None


class DelayedProduce(DelayedOperation):
    """acks=all: waits until the HW passes every appended batch of the request."""

    __slots__ = ("future", "waits")

    def __init__(self, deadline_ms: int, waits: list[ProduceWait]) -> None:
        super().__init__(deadline_ms)
        self.waits = waits
        self.future: asyncio.Future[list[ProduceOutcome]] = (
            asyncio.get_running_loop().create_future()
        )

    def try_complete(self, now_ms: int) -> bool:
        for wait in self.waits:
            if wait.result is not None:
                continue
            partition = wait.partition
            verdict = acks_all_verdict(
                partition, partition.cut_off, wait.outcome, wait.min_insync_replicas
            )
            if verdict is None:
                continue
            code, message = verdict
            wait.result = (
                wait.outcome if code == ErrorCode.NONE else failed(wait.outcome, code, message)
            )
        if all(w.result is not None for w in self.waits):
            return self.force_complete()
        return False

    def on_complete(self) -> None:
        results = [
            w.result or failed(w.outcome, ErrorCode.REQUEST_TIMED_OUT, "not replicated in time")
            for w in self.waits
        ]
        if not self.future.done():
            self.future.set_result(results)

    def on_expiration(self) -> None:
        pass


class DelayedFetch(DelayedOperation):
    """A fetch waiting for min_bytes to become readable (or for a leadership change)."""

    __slots__ = ("future", "min_bytes", "partitions", "replica_id", "specs", "start_marks")

    def __init__(
        self,
        deadline_ms: int,
        partitions: Mapping[TopicPartition, Partition],
        replica_id: int,
        specs: list[FetchSpec],
        min_bytes: int,
        start_marks: dict[TopicPartition, tuple[int, int]],
    ) -> None:
        super().__init__(deadline_ms)
        self.partitions = partitions  # the replica manager's, as they are now
        self.replica_id = replica_id
        self.specs = specs
        self.min_bytes = min_bytes
        self.start_marks = start_marks  # (readable end, leader epoch) when we started waiting
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def try_complete(self, now_ms: int) -> bool:
        available = 0
        for spec in self.specs:
            partition = self.partitions.get((spec.topic, spec.partition))
            mark = self.start_marks.get((spec.topic, spec.partition))
            if partition is None or mark is None:
                return self.force_complete()
            log_ = partition.log
            end = readable_end(self.replica_id, partition.high_watermark, log_.log_end_offset)
            if fetch_moved(mark[0], mark[1], end, partition.leader_epoch):
                return self.force_complete()
            available += estimated_bytes(
                spec.fetch_offset, end, log_.log_start_offset, log_.log_end_offset, log_.size_bytes
            )
        if available >= self.min_bytes:
            return self.force_complete()
        return False

    def on_complete(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def on_expiration(self) -> None:
        pass
