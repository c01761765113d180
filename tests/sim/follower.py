"""The follower side of replication, as ``cluster/fetcher.py`` does it, over the simulated network.

The decision for each partition's answer is the product's own pure function,
``replication.follower_decision`` (append / truncate / restart at the leader's start / back off /
park); this module is the IO around it, restating ``fetcher._Fetcher``:

- ``SimFetcher`` is ``_Fetcher``'s loop: one long-poll fetch at a time to its leader for every
  partition it follows there; transport errors and top-level errors back off; each partition's
  answer goes through ``follower_decision`` and is carried out on the ``ReplicaManager``.
- ``FetcherPlan`` is ``FetcherManager.partition_changed``: which leader's fetcher follows a
  partition after a metadata change.

``truncation_offset`` is the one step of the shell a test plants a bug in (``plants.py``: a
follower that truncates to its own high watermark, KIP-101's bug, instead of where the decision
says). Owned by one broker process; not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftlog.cluster import replication
from raftlog.cluster.partition import Partition
from raftlog.cluster.replica_rules import FetchOutcome, FetchSpec
from raftlog.cluster.replication import FollowerAction, FollowerDecision
from raftlog.proto.codes import ErrorCode
from raftlog.raft.metadata_records import NO_LEADER, TopicPartition
from raftlog.segments import StorageError

from .node import RpcError

if TYPE_CHECKING:
    from .broker import SimBroker

__all__ = ["FetcherPlan", "SimFetcher", "truncation_offset"]


def truncation_offset(
    partition: Partition, decision: FollowerDecision, diverging: tuple[int, int] | None
) -> int:
    """Where the shell truncates for a TRUNCATE / RESTART_AT decision: where it says."""
    return decision.offset


@dataclass(slots=True)
class _Followed:
    partition: Partition
    retry_at_ms: int = 0


class SimFetcher:
    """One leader's fetcher on one broker: ``fetcher._Fetcher`` over the simulated network."""

    def __init__(self, broker: SimBroker, leader_id: int) -> None:
        self.broker = broker
        self.leader_id = leader_id
        self.partitions: dict[TopicPartition, _Followed] = {}
        self._wakeup = broker.proc.future()
        self.task = broker.proc.spawn(self._loop())

    def wake(self) -> None:
        if not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _loop(self) -> None:
        broker = self.broker
        proc = broker.proc
        config = broker.fetcher_config
        while self.partitions:
            now = broker.clock.mono_ms()
            due = [f for f in self.partitions.values() if f.retry_at_ms <= now]
            address = broker.broker_address(self.leader_id)
            if not due or address is None:
                wakeup = self._wakeup = proc.future()
                timer = proc.call_later(config.backoff_ms, proc.resolve, wakeup, None)
                await wakeup
                timer.cancel()
                continue
            specs = [self._spec(f.partition) for f in due]
            request = (broker.broker_id, broker.proc.incarnation, specs, config)
            try:
                error, outcomes = await broker.world.rpc.call(
                    proc, address, "fetch", request, config.rpc_timeout_ms
                )
            except RpcError:
                await proc.sleep(config.backoff_ms)
                continue
            if error != ErrorCode.NONE:
                await proc.sleep(config.backoff_ms)
                continue
            for outcome in outcomes:
                followed = self.partitions.get((outcome.topic, outcome.partition))
                if followed is not None:
                    self._handle(followed, outcome)

    def _spec(self, partition: Partition) -> FetchSpec:
        log_ = partition.log
        return FetchSpec(
            partition.key[0],
            partition.key[1],
            log_.log_end_offset,
            partition.leader_epoch,
            log_.latest_epoch,
            self.broker.fetcher_config.partition_bytes_max,
            log_.log_start_offset,
        )

    def _handle(self, followed: _Followed, outcome: FetchOutcome) -> None:
        broker = self.broker
        replicas = broker.replicas
        partition = followed.partition
        if replicas.partitions.get(partition.key) is not partition or partition.is_leader:
            return  # re-planned meanwhile
        log_ = partition.log
        now = broker.clock.mono_ms()
        config = broker.fetcher_config
        decision = replication.follower_decision(
            outcome.error,
            outcome.diverging_epoch,
            log_.end_offset_for_epoch,
            log_.log_end_offset,
            outcome.log_start_offset,
            outcome.log_end_offset,
        )
        try:
            match decision.action:
                case FollowerAction.APPEND:
                    partition.append_as_follower(outcome.records, outcome.high_watermark)
                    if outcome.log_start_offset > log_.log_start_offset:
                        log_.advance_log_start(min(outcome.log_start_offset, log_.log_end_offset))
                case FollowerAction.TRUNCATE | FollowerAction.RESTART_AT:
                    offset = truncation_offset(partition, decision, outcome.diverging_epoch)
                    broker.world.trace(
                        f"b{broker.broker_id} truncates {partition.key} {log_.log_end_offset} "
                        f"-> {offset} (hw {partition.high_watermark}, {outcome.error} "
                        f"{outcome.diverging_epoch})"
                    )
                    replicas.truncate(partition, offset)
                    broker.world.emit("truncated", broker=broker.broker_id, leader=self.leader_id)
                case FollowerAction.BACK_OFF:
                    followed.retry_at_ms = now + config.backoff_ms
                case FollowerAction.PARK:
                    followed.retry_at_ms = now + config.parked_retry_ms
        except StorageError:
            followed.retry_at_ms = now + config.parked_retry_ms


class FetcherPlan:
    """``FetcherManager``: which leader's fetcher follows each partition."""

    def __init__(self, broker: SimBroker) -> None:
        self.broker = broker
        self.fetchers: dict[int, SimFetcher] = {}

    def partition_changed(self, partition: Partition) -> None:
        broker = self.broker
        key = partition.key
        target = None
        current = broker.replicas.partitions.get(key)
        if current is partition and not partition.is_leader and partition.record is not None:
            leader = partition.record.leader
            if leader not in (NO_LEADER, broker.broker_id):
                target = leader
        for leader_id, fetcher in list(self.fetchers.items()):
            if leader_id != target and key in fetcher.partitions:
                del fetcher.partitions[key]
        if target is None or not broker.proc.alive:
            return
        existing = self.fetchers.get(target)
        if existing is None or existing.task.done():
            existing = self.fetchers[target] = SimFetcher(broker, target)
        followed = existing.partitions.get(key)
        if followed is None or followed.partition is not partition:
            existing.partitions[key] = _Followed(partition)
        else:
            followed.retry_at_ms = 0
        existing.wake()
