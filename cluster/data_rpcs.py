"""The Broker service's data plane: produce, fetch (consumers and followers), offsets.

Produce and Fetch are the client-facing calls; ReplicaFetch is the followers' stream of the same
fetch (``fetcher.py`` is the other end): a fetch with a replica id moves the leader's high
watermark, so only that broker may send it, and only from its current incarnation.
ListOffsets and OffsetForLeaderEpoch (the end offset of an epoch, KIP-101; our own followers
learn where they diverge from the fetch answer instead, KIP-279) answer from the leader's log.
InitProducerId hands an idempotent producer its id and epoch. A principal over its byte-rate
quota gets its answer held back (``quota.py``). Part of ``BrokerServicer``
(``broker_servicer.py``); runs on the broker loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import Operation, ResourceType

from .auth import CLUSTER_RESOURCE, AuthenticationFailed, Principal
from .controller_service import ControllerError
from .replica_rules import CONSUMER, FetchOutcome, FetchSpec
from .rpc_errors import denied, error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["DataRpcs", "fetch_result"]

logger = logging.getLogger(__name__)
EPOCH_MAX = 32767  # producer epochs are int16; past it a producer gets a new id
FETCH_BYTES_MAX = 55 << 20  # the most one fetch answer carries (Kafka's fetch.max.bytes)


def fetch_result(outcome: FetchOutcome) -> broker_pb2.FetchPartitionResult:
    """One partition's fetch answer, as a consumer or a follower receives it."""
    result = broker_pb2.FetchPartitionResult(
        topic=outcome.topic,
        partition=outcome.partition,
        error=error(outcome.error, outcome.message),
        high_watermark=outcome.high_watermark,
        log_start_offset=outcome.log_start_offset,
        log_end_offset=outcome.log_end_offset,
        records=outcome.records,
        leader_id=outcome.leader_id,
        leader_epoch=outcome.leader_epoch,
    )
    if outcome.diverging_epoch is not None:
        result.diverging_epoch.epoch, result.diverging_epoch.end_offset = outcome.diverging_epoch
    return result


class DataRpcs(broker_pb2_grpc.BrokerServicer):
    """The data-plane methods of ``BrokerServicer``."""

    broker: Broker

    @typed_errors(broker_pb2.ProduceResponse)
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ProduceResponse:
        broker = self.broker
        auth = broker.authorizer
        principal = auth.principal(context)
        timeout_ms = min(max(request.timeout_ms, 0), broker.config.request_timeout_ms_max)
        items, refused = [], []
        for p in request.partitions:
            if auth.topic_write_allowed(principal, p.topic, Operation.WRITE):
                items.append((p.topic, p.partition, p.records))
            else:
                refused.append(
                    broker_pb2.PartitionProduceResult(
                        topic=p.topic,
                        partition=p.partition,
                        error=denied(principal, "WRITE", "topic", p.topic),
                        base_offset=-1,
                        last_offset=-1,
                        log_start_offset=-1,
                        leader_epoch=-1,
                    )
                )
        throttle_ms = self._throttle(principal, True, sum(len(records) for _, _, records in items))
        outcomes = await broker.replicas.produce(request.acks, timeout_ms, items) if items else []
        if throttle_ms:
            await asyncio.sleep(throttle_ms / 1000)
        drop = broker.config.fault_drop_produce_responses
        if drop and random.random() < drop:
            # testing hook (idempotence tests): the append happened, the answer is lost
            await context.abort(grpc.StatusCode.UNAVAILABLE, "fault injection: response dropped")
        return broker_pb2.ProduceResponse(
            partitions=[
                broker_pb2.PartitionProduceResult(
                    topic=o.topic,
                    partition=o.partition,
                    error=error(o.error, o.message),
                    base_offset=o.base_offset,
                    last_offset=o.last_offset,
                    log_start_offset=o.log_start_offset,
                    leader_epoch=o.leader_epoch,
                )
                for o in outcomes
            ]
            + refused,
            throttle_time_ms=throttle_ms,
        )

    @typed_errors(broker_pb2.FetchResponse)
    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.FetchResponse:
        return await self._fetch(request, self.broker.authorizer.principal(context))

    async def ReplicaFetch(
        self,
        requests: AsyncIterator[broker_pb2.FetchRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[broker_pb2.FetchResponse]:
        try:
            principal = self.broker.authorizer.principal(context)
        except AuthenticationFailed as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        meter = self.broker.metrics.requests
        async for request in requests:
            started = time.perf_counter()
            try:
                response = await self._fetch(request, principal)
            except Exception as exc:  # a stream has no wrapper: the same rule, per message
                logger.exception("ReplicaFetch failed unexpectedly")
                response = broker_pb2.FetchResponse(
                    error=error(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
                )
            if meter is not None:
                meter.observe("ReplicaFetch", time.perf_counter() - started, response)
            yield response

    def _throttle(self, principal: Principal, produce: bool, size_bytes: int) -> int:
        """Milliseconds to hold this answer: the principal is over its byte-rate quota."""
        if self.broker.authorizer.is_super(principal) and self.broker.authorizer.enabled:
            return 0  # brokers and super users are never throttled
        return self.broker.quotas.record(
            principal.name, produce, size_bytes, self.broker.clock_ms()
        )

    async def _fetch(
        self, request: broker_pb2.FetchRequest, principal: Principal
    ) -> broker_pb2.FetchResponse:
        auth = self.broker.authorizer
        replica_id = request.replica_id if request.replica_id >= 0 else CONSUMER
        if replica_id != CONSUMER and not auth.broker_only(principal, replica_id):
            # a follower's fetch moves the high watermark: only that broker may send it
            return broker_pb2.FetchResponse(
                error=denied(principal, "CLUSTER_ACTION", "replica fetch as broker", replica_id)
            )
        specs, refused = [], []
        for p in request.partitions:
            if replica_id == CONSUMER and not auth.allowed(
                principal, Operation.READ, ResourceType.TOPIC, p.topic
            ):
                refused.append(
                    broker_pb2.FetchPartitionResult(
                        topic=p.topic,
                        partition=p.partition,
                        error=denied(principal, "READ", "topic", p.topic),
                        high_watermark=-1,
                        log_start_offset=-1,
                        log_end_offset=-1,
                    )
                )
                continue
            specs.append(
                FetchSpec(
                    p.topic,
                    p.partition,
                    p.fetch_offset,
                    p.current_leader_epoch,
                    p.last_fetched_epoch,
                    p.partition_max_bytes or (1 << 20),
                    p.log_start_offset,
                )
            )
        if not specs:
            return broker_pb2.FetchResponse(partitions=refused)
        if replica_id != CONSUMER and not self.broker.replica_known(
            replica_id, request.replica_incarnation
        ):
            return broker_pb2.FetchResponse(
                error=error(
                    ErrorCode.STALE_BROKER_EPOCH, f"broker {replica_id} incarnation is not current"
                )
            )
        outcomes = await self.broker.replicas.fetch(
            replica_id,
            specs,
            max_wait_ms=request.max_wait_ms,
            min_bytes=request.min_bytes,
            # the caller's budget, never above Kafka's fetch.max.bytes default: one answer is
            # read into memory whole (a Kafka client may ask for 2 GiB)
            max_bytes=min(request.max_bytes or (50 << 20), FETCH_BYTES_MAX),
            replica_incarnation=request.replica_incarnation if replica_id != CONSUMER else -1,
        )
        results = [fetch_result(o) for o in outcomes]
        throttle_ms = 0
        if replica_id == CONSUMER:
            throttle_ms = self._throttle(principal, False, sum(len(o.records) for o in outcomes))
            if throttle_ms:
                await asyncio.sleep(throttle_ms / 1000)
        return broker_pb2.FetchResponse(partitions=results + refused, throttle_time_ms=throttle_ms)

    @typed_errors(broker_pb2.ListOffsetsResponse)
    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ListOffsetsResponse:
        replicas = self.broker.replicas
        auth = self.broker.authorizer
        principal = auth.principal(context)
        results = []
        for p in request.partitions:
            result = broker_pb2.ListOffsetsResult(
                topic=p.topic, partition=p.partition, offset=-1, timestamp=-1, leader_epoch=-1
            )
            if not auth.allowed(principal, Operation.DESCRIBE, ResourceType.TOPIC, p.topic):
                result.error.CopyFrom(denied(principal, "DESCRIBE", "topic", p.topic))
                results.append(result)
                continue
            partition, base = replicas.check_leader(
                FetchSpec(p.topic, p.partition, 0, p.current_leader_epoch), CONSUMER
            )
            if partition is None:
                result.error.CopyFrom(error(base.error, base.message))
            elif p.timestamp == -1:
                result.offset = partition.high_watermark
                result.leader_epoch = partition.leader_epoch
            elif p.timestamp == -2:
                result.offset = partition.log.log_start_offset
                result.leader_epoch = partition.leader_epoch
            else:
                found = partition.log.offset_for_timestamp(p.timestamp)
                if found is not None and found[0] < partition.high_watermark:
                    result.offset, result.timestamp = found
                    result.leader_epoch = partition.log.epochs.epoch_for_offset(found[0])
            results.append(result)
        return broker_pb2.ListOffsetsResponse(partitions=results)

    @typed_errors(broker_pb2.OffsetForLeaderEpochResponse)
    async def OffsetForLeaderEpoch(
        self,
        request: broker_pb2.OffsetForLeaderEpochRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        results = []
        for p in request.partitions:
            if auth.allowed(principal, Operation.DESCRIBE, ResourceType.TOPIC, p.topic):
                code, message, epoch, end = self.broker.replicas.leader_end_offset_for(
                    p.topic, p.partition, p.current_leader_epoch, p.leader_epoch
                )
            else:
                code, epoch, end = ErrorCode.TOPIC_AUTHORIZATION_FAILED, -1, -1
                message = f"{principal.name} is not allowed DESCRIBE on topic {p.topic}"
            results.append(
                broker_pb2.OffsetForLeaderEpochResult(
                    topic=p.topic,
                    partition=p.partition,
                    error=error(code, message),
                    leader_epoch=epoch,
                    end_offset=end,
                )
            )
        return broker_pb2.OffsetForLeaderEpochResponse(partitions=results)

    # ---- producer ids --------------------------------------------------------------------------

    @typed_errors(broker_pb2.InitProducerIdResponse)
    async def InitProducerId(
        self,
        request: broker_pb2.InitProducerIdRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.InitProducerIdResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        if not self._may_write_idempotently(principal):
            return broker_pb2.InitProducerIdResponse(
                error=denied(principal, "IDEMPOTENT_WRITE", "cluster", CLUSTER_RESOURCE)
            )
        if (
            request.producer_id >= 0
            and 0 <= request.producer_epoch < EPOCH_MAX
            and auth.is_super(principal)
        ):
            # bump: partitions refuse the older epoch once the new one has written to them.
            # Producer ids are not bound to principals, so only a super user may bump one:
            # anyone else could fence another principal's producer. The others get a new id,
            # which resets their sequences just as well (what Kafka did before KIP-360).
            return broker_pb2.InitProducerIdResponse(
                producer_id=request.producer_id, producer_epoch=request.producer_epoch + 1
            )
        try:
            producer_id = await self.broker.next_producer_id()
        except ControllerError as exc:
            return broker_pb2.InitProducerIdResponse(error=error(exc.code, exc.message))
        except grpc.aio.AioRpcError as exc:
            return broker_pb2.InitProducerIdResponse(
                error=error(
                    ErrorCode.NOT_CONTROLLER, f"the controller is unreachable: {exc.code()}"
                )
            )
        return broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)

    def _may_write_idempotently(self, principal: Principal) -> bool:
        """Kafka's rule: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic."""
        auth = self.broker.authorizer
        if auth.allowed(
            principal, Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_RESOURCE
        ):
            return True
        with self.broker.store.read() as state:
            acls = list(state.acls)
        return auth.may_write_some_topic(principal, acls)
