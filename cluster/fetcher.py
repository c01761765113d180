"""Replica fetchers: followers pull from leaders, one fetcher per leader broker.

Owned by the broker loop (asyncio); not thread-safe. Each ``_Fetcher`` is one task that sends one
long-poll fetch at a time to its leader, over one ReplicaFetch stream (per-call setup was most
of the broker's CPU on the replication path), for every partition it follows there (so
in-flight bytes per fetcher are bounded by ``fetch_bytes_max``), appends what comes back, and
handles each partition's answer:

- records → append as follower (offsets and epochs kept), follower HW = min(leader HW, our LEO);
- a diverging epoch → truncate to ``divergence_truncation_offset`` (KIP-279) and go on;
- OFFSET_OUT_OF_RANGE → below the leader's start: restart the log there; past its end:
  truncate to its end;
- NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION → our metadata is stale
  or theirs is: park the partition until the next metadata change re-plans it (with a slow retry);
- UNKNOWN_LEADER_EPOCH and transport errors → back off and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

import grpc

from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft.metadata_records import NO_LEADER, TopicPartition
from raftlog.segments import StorageError

from .config import REPLICA_FETCH_WAIT_MS
from .partition import Partition
from .replica_manager import ReplicaManager
from .replication import FollowerAction, follower_decision

__all__ = ["FetcherConfig", "FetcherManager"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetcherConfig:
    max_wait_ms: int = REPLICA_FETCH_WAIT_MS
    min_bytes: int = 1
    fetch_bytes_max: int = 32 << 20
    partition_bytes_max: int = 8 << 20
    backoff_ms: int = 100
    parked_retry_ms: int = 1000
    rpc_timeout_ms: int = 5000


@dataclass(slots=True)
class _Followed:
    partition: Partition
    retry_at_ms: int = 0


class _Fetcher:
    def __init__(self, manager: FetcherManager, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.partitions: dict[TopicPartition, _Followed] = {}
        self.wakeup = asyncio.Event()
        self._stream: Any = None  # grpc.aio stream-stream call to the leader, while open
        self._stream_address: str | None = None
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"fetch-{leader_id}")

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            self._close_stream()

    async def _loop(self) -> None:
        manager = self.manager
        config = manager.config
        while self.partitions:
            now = manager.clock_ms()
            due = [f for f in self.partitions.values() if f.retry_at_ms <= now]
            address = manager.address_of(self.leader_id)
            if not due or address is None:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), config.backoff_ms / 1000)
                continue
            request = self._request(due)
            try:
                response = await self._exchange(address, request)
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
                logger.debug("fetch from broker %s failed: %r", self.leader_id, exc)
                self._close_stream()
                await asyncio.sleep(config.backoff_ms / 1000)
                continue
            if response.error.code:
                await asyncio.sleep(config.backoff_ms / 1000)
                continue
            for result in response.partitions:
                followed = self.partitions.get((result.topic, result.partition))
                if followed is not None:
                    self._handle(followed, result)

    async def _exchange(
        self, address: str, request: broker_pb2.FetchRequest
    ) -> broker_pb2.FetchResponse:
        """One fetch over this fetcher's stream to the leader (opened on first use, and again
        after any error); bounded by the RPC timeout like a unary call."""
        if self._stream is None or self._stream_address != address:
            self._close_stream()
            self._stream = self.manager.stub(address).ReplicaFetch()
            self._stream_address = address
        stream = self._stream
        # one timeout over the write and the read (asyncio.timeout arms one timer handle; two
        # wait_for made two tasks and two timers per fetch, on every follower's hot path)
        async with asyncio.timeout(self.manager.config.rpc_timeout_ms / 1000):
            await stream.write(request)
            response = await stream.read()
        if response is grpc.aio.EOF or not isinstance(response, broker_pb2.FetchResponse):
            raise ConnectionError("the leader closed the replication stream")
        return response

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self._stream = None
        self._stream_address = None

    def _request(self, due: list[_Followed]) -> broker_pb2.FetchRequest:
        manager = self.manager
        config = manager.config
        parts = []
        for followed in due:
            partition = followed.partition
            log_ = partition.log
            parts.append(
                broker_pb2.FetchPartition(
                    topic=partition.key[0],
                    partition=partition.key[1],
                    fetch_offset=log_.log_end_offset,
                    current_leader_epoch=partition.leader_epoch,
                    last_fetched_epoch=log_.latest_epoch,
                    partition_max_bytes=config.partition_bytes_max,
                    log_start_offset=log_.log_start_offset,
                )
            )
        return broker_pb2.FetchRequest(
            replica_id=manager.broker_id,
            replica_incarnation=manager.incarnation,
            max_wait_ms=config.max_wait_ms,
            min_bytes=config.min_bytes,
            max_bytes=config.fetch_bytes_max,
            partitions=parts,
        )

    def _handle(self, followed: _Followed, result: broker_pb2.FetchPartitionResult) -> None:
        manager = self.manager
        replicas = manager.replicas
        partition = followed.partition
        if replicas.partitions.get(partition.key) is not partition or partition.is_leader:
            return  # re-planned meanwhile
        now = manager.clock_ms()
        code = ErrorCode(result.error.code)
        log_ = partition.log
        diverging = (
            (result.diverging_epoch.epoch, result.diverging_epoch.end_offset)
            if result.HasField("diverging_epoch")
            else None
        )
        decision = follower_decision(
            code,
            diverging,
            log_.end_offset_for_epoch,
            log_.log_end_offset,
            result.log_start_offset,
            result.log_end_offset,
        )
        try:
            match decision.action:
                case FollowerAction.APPEND:
                    partition.append_as_follower(result.records, result.high_watermark)
                    replicas.traffic.replication_bytes_in += len(result.records)
                    if result.log_start_offset > log_.log_start_offset:
                        log_.advance_log_start(min(result.log_start_offset, log_.log_end_offset))
                case FollowerAction.TRUNCATE | FollowerAction.RESTART_AT:
                    logger.info(
                        "%s: %s from leader %s: truncating %s → %s",
                        partition.name, "diverged" if diverging else code, self.leader_id,
                        log_.log_end_offset, decision.offset,
                    )  # fmt: skip
                    replicas.truncate(partition, decision.offset)
                case FollowerAction.BACK_OFF:
                    followed.retry_at_ms = now + manager.config.backoff_ms
                case FollowerAction.PARK:
                    followed.retry_at_ms = now + manager.config.parked_retry_ms
                case _:
                    assert_never(decision.action)
        except StorageError as exc:
            logger.error("%s: follower append failed: %s", partition.name, exc)
            followed.retry_at_ms = now + manager.config.parked_retry_ms


class FetcherManager:
    """Plans which partitions each leader's fetcher pulls; see the module docstring."""

    def __init__(
        self,
        replicas: ReplicaManager,
        broker_id: int,
        incarnation: int,
        address_of: Callable[[int], str | None],
        channel: Callable[[str], grpc.aio.Channel],
        clock_ms: Callable[[], int],
        config: FetcherConfig | None = None,
    ) -> None:
        self.replicas = replicas
        self.broker_id = broker_id
        self.incarnation = incarnation
        self.address_of = address_of
        self._channel = channel
        self.clock_ms = clock_ms
        self.config = config or FetcherConfig()
        self._fetchers: dict[int, _Fetcher] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerStub] = {}
        self._closed = False

    def stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = broker_pb2_grpc.BrokerStub(self._channel(address))
        return stub

    def partition_changed(self, partition: Partition) -> None:
        """Re-plan one partition after a metadata change (called by the replica manager)."""
        key = partition.key
        target = None
        current = self.replicas.partitions.get(key)
        if current is partition and not partition.is_leader and partition.record is not None:
            leader = partition.record.leader
            if leader not in (NO_LEADER, self.broker_id):
                target = leader
        for leader_id, fetcher in list(self._fetchers.items()):
            if leader_id != target and key in fetcher.partitions:
                del fetcher.partitions[key]
        if target is None or self._closed:
            return
        existing = self._fetchers.get(target)
        if existing is None or existing.task.done():
            existing = self._fetchers[target] = _Fetcher(self, target)
        fetcher = existing
        followed = fetcher.partitions.get(key)
        if followed is None or followed.partition is not partition:
            fetcher.partitions[key] = _Followed(partition)
        else:
            followed.retry_at_ms = 0  # metadata moved: try at once
        fetcher.wakeup.set()

    def following(self) -> dict[int, list[TopicPartition]]:
        return {lid: sorted(f.partitions) for lid, f in self._fetchers.items() if f.partitions}

    async def close(self) -> None:
        self._closed = True
        tasks = [f.task for f in self._fetchers.values()]
        for fetcher in self._fetchers.values():
            fetcher.partitions.clear()
            fetcher.task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fetchers.clear()
