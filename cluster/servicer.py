"""gRPC servicers: proto in, a call into the broker's cores, proto out. Nothing else.

Both run on the broker loop (grpc.aio). Admin calls that need the active controller are answered
here when this broker is it, and forwarded to it otherwise (one hop; NOT_CONTROLLER when none is
known, which clients retry).

No exception leaves a servicer: each unary method is wrapped by ``typed_errors``, which logs
what was unexpected and answers UNKNOWN_SERVER_ERROR in the response's ``error`` field (every
response message has one), so a caller always gets a typed error, never a bare gRPC UNKNOWN.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from raftlog.proto import (
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
)
from raftlog.raft import scram
from raftlog.raft.acl import (
    WILDCARD,
    AclBinding,
    AclError,
    AclFilter,
    Operation,
    ResourceType,
    validate_binding,
)
from raftlog.raft.commands import (
    AlterPartition,
    Command,
    CreateAcls,
    DeleteAcls,
    DeleteScramCredential,
    ReplicasDamaged,
    UpsertScramCredential,
)
from raftlog.raft.metadata_records import NO_LEADER, BrokerRecord, PartitionRecord, TopicPartition
from raftlog.raft.topic_config import TOPIC_CONFIGS, effective_configs

from .auth import CLUSTER_RESOURCE, AuthenticationFailed, Principal
from .controller_link import RELAY_HEADER, relayed_by
from .controller_service import ControllerError, TopicRequest
from .relay_proof import origin_broker, origin_headers
from .replica_manager import CONSUMER, FetchSpec

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["BrokerServicer", "ControllerServicer", "error", "typed_errors"]

logger = logging.getLogger(__name__)
R = TypeVar("R")
RELAY_TIMEOUT_S_MAX = 5.0  # a relayed call waits for the controller at most this long
EPOCH_MAX = 32767  # producer epochs are int16; past it a producer gets a new id


def error(code: str = "NONE", message: str = "") -> common_pb2.Error:
    try:
        value = common_pb2.ErrorCode.Value(code)
    except ValueError:
        value, message = common_pb2.UNKNOWN_SERVER_ERROR, f"{code}: {message}"
    return common_pb2.Error(code=value, message=message)


Handler = Callable[[Any, Any, Any], Awaitable[Any]]


def typed_errors(response: type[Any]) -> Callable[[Handler], Handler]:
    """Answer ``response(error=UNKNOWN_SERVER_ERROR)`` for anything a handler did not expect."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(self: Any, request: Any, context: Any) -> Any:
            try:
                return await handler(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise  # the call was cancelled, or the handler chose a gRPC status itself
            except AuthenticationFailed as exc:
                return response(error=error("SASL_AUTHENTICATION_FAILED", str(exc)))
            except Exception as exc:
                logger.exception("%s failed unexpectedly", handler.__name__)
                return response(error=error("UNKNOWN_SERVER_ERROR", f"{type(exc).__name__}: {exc}"))

        return guarded

    return wrap


def listener_address(record: BrokerRecord, context: Any, authorizer: Any) -> str:
    """The address of ``record`` on the listener this call came in on: a client of the password
    listener has no certificate and must be sent to the other brokers' password listeners
    (empty when that broker has none)."""
    if not authorizer.enabled or authorizer.by_certificate(context):
        return record.address
    return record.password_address or ""


def newest_known(
    stored: PartitionRecord, known: Callable[[TopicPartition], PartitionRecord | None]
) -> PartitionRecord:
    """The partition's state as this broker acts on it: the store's, or a newer one the broker
    learnt from the controller through a relay (``Broker._states_through_relay``)."""
    heard = known(stored.key)
    if (
        heard is not None
        and heard.topic_id == stored.topic_id
        and (heard.leader_epoch, heard.partition_epoch)
        > (stored.leader_epoch, stored.partition_epoch)
    ):
        return heard
    return stored


def _denied(principal: Principal, operation: str, resource: str, name: object) -> common_pb2.Error:
    code = {"topic": "TOPIC_AUTHORIZATION_FAILED", "group": "GROUP_AUTHORIZATION_FAILED"}.get(
        resource, "CLUSTER_AUTHORIZATION_FAILED"
    )
    return error(code, f"{principal.name} is not allowed {operation} on {resource} {name}")


def _result_error(result: dict[str, Any]) -> common_pb2.Error:
    if "error" in result:
        return error(str(result["error"]), str(result.get("message", "")))
    return error()


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # ---- data ----------------------------------------------------------------------------------

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
                        error=_denied(principal, "WRITE", "topic", p.topic),
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
        async for request in requests:
            try:
                response = await self._fetch(request, principal)
            except Exception as exc:  # a stream has no wrapper: the same rule, per message
                logger.exception("ReplicaFetch failed unexpectedly")
                response = broker_pb2.FetchResponse(
                    error=error("UNKNOWN_SERVER_ERROR", f"{type(exc).__name__}: {exc}")
                )
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
                error=_denied(principal, "CLUSTER_ACTION", "replica fetch as broker", replica_id)
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
                        error=_denied(principal, "READ", "topic", p.topic),
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
                error=error("STALE_BROKER_EPOCH", f"broker {replica_id} incarnation is not current")
            )
        outcomes = await self.broker.replicas.fetch(
            replica_id,
            specs,
            max_wait_ms=request.max_wait_ms,
            min_bytes=request.min_bytes,
            max_bytes=request.max_bytes or (50 << 20),
            replica_incarnation=request.replica_incarnation if replica_id != CONSUMER else -1,
        )
        results = []
        for o in outcomes:
            result = broker_pb2.FetchPartitionResult(
                topic=o.topic,
                partition=o.partition,
                error=error(o.error, o.message),
                high_watermark=o.high_watermark,
                log_start_offset=o.log_start_offset,
                log_end_offset=o.log_end_offset,
                records=o.records,
                leader_id=o.leader_id,
                leader_epoch=o.leader_epoch,
            )
            if o.diverging_epoch is not None:
                result.diverging_epoch.epoch, result.diverging_epoch.end_offset = o.diverging_epoch
            results.append(result)
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
                result.error.CopyFrom(_denied(principal, "DESCRIBE", "topic", p.topic))
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
                code, epoch, end = "TOPIC_AUTHORIZATION_FAILED", -1, -1
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

    # ---- metadata and status -------------------------------------------------------------------

    @typed_errors(broker_pb2.MetadataResponse)
    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.MetadataResponse:
        broker = self.broker
        auth = broker.authorizer
        principal = auth.principal(context)
        response = broker_pb2.MetadataResponse(controller_id=broker.controller_id())
        known = broker.listener.record  # newer than the store when heard through a relay
        with broker.store.read() as state:
            response.metadata_version = state.version
            for b in sorted(state.brokers.values(), key=lambda b: b.broker_id):
                response.brokers.append(
                    broker_pb2.BrokerMetadata(
                        broker_id=b.broker_id,
                        address=listener_address(b, context, auth),
                        rack=b.rack or "",
                        fenced=b.fenced,
                        incarnation=b.incarnation,
                    )
                )
            names = list(request.topics) or [
                name  # listing all: only the topics this principal may see
                for name in sorted(state.topics)
                if auth.allowed(principal, Operation.DESCRIBE, ResourceType.TOPIC, name)
            ]
            for name in names:
                if not auth.allowed(principal, Operation.DESCRIBE, ResourceType.TOPIC, name):
                    response.topics.append(
                        broker_pb2.TopicMetadata(
                            name=name, error=_denied(principal, "DESCRIBE", "topic", name)
                        )
                    )
                    continue
                topic = state.topics.get(name)
                if topic is None:
                    response.topics.append(
                        broker_pb2.TopicMetadata(
                            name=name,
                            error=error("UNKNOWN_TOPIC_OR_PARTITION", f"no topic {name!r}"),
                        )
                    )
                    continue
                entry = broker_pb2.TopicMetadata(
                    name=name,
                    topic_id=topic.topic_id,
                    replication_factor=topic.replication_factor,
                    configs=dict(topic.configs),
                )
                for stored in state.partitions_of(name):
                    record = newest_known(stored, known)
                    entry.partitions.append(
                        broker_pb2.PartitionMetadata(
                            partition=record.partition,
                            error=error()
                            if record.leader != NO_LEADER
                            else error("LEADER_NOT_AVAILABLE", "no live in-sync replica"),
                            leader=record.leader,
                            leader_epoch=record.leader_epoch,
                            partition_epoch=record.partition_epoch,
                            replicas=record.replicas,
                            isr=record.isr,
                        )
                    )
                response.topics.append(entry)
        return response

    @typed_errors(broker_pb2.DescribeReplicasResponse)
    async def DescribeReplicas(
        self,
        request: broker_pb2.DescribeReplicasRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeReplicasResponse:
        broker = self.broker
        principal = broker.authorizer.principal(context)
        if not broker.authorizer.allowed(
            principal, Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE
        ):
            return broker_pb2.DescribeReplicasResponse(
                error=_denied(principal, "DESCRIBE", "cluster", CLUSTER_RESOURCE)
            )
        now = broker.clock_ms()
        response = broker_pb2.DescribeReplicasResponse(
            broker_id=broker.config.node_id, metadata_version=broker.store.version
        )
        for key in sorted(broker.replicas.partitions):
            partition = broker.replicas.partitions[key]
            log_ = partition.log
            leader = partition.leader
            role = "leader" if leader else ("follower" if partition.leader_id >= 0 else "offline")
            status = broker_pb2.ReplicaStatus(
                topic=key[0],
                partition=key[1],
                role=role,
                leader_epoch=partition.leader_epoch,
                high_watermark=partition.high_watermark,
                log_start_offset=log_.log_start_offset,
                log_end_offset=log_.log_end_offset,
                size_bytes=log_.size_bytes,
            )
            if leader is not None:
                status.isr.extend(leader.maximal_isr)
                for follower_id, progress in sorted(leader.followers.items()):
                    caught = progress.last_caught_up_ms
                    status.followers.append(
                        broker_pb2.ReplicaProgress(
                            broker_id=follower_id,
                            log_end_offset=progress.log_end_offset,
                            last_caught_up_ms_ago=now - caught if caught >= 0 else -1,
                        )
                    )
            response.replicas.append(status)
        return response

    @typed_errors(broker_pb2.DescribeConfigsResponse)
    async def DescribeConfigs(
        self,
        request: broker_pb2.DescribeConfigsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeConfigsResponse:
        response = broker_pb2.DescribeConfigsResponse()
        auth = self.broker.authorizer
        principal = auth.principal(context)
        with self.broker.store.read() as state:
            for name in request.topics:
                if not auth.allowed(
                    principal, Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, name
                ):
                    response.topics.append(
                        broker_pb2.TopicConfigs(
                            name=name, error=_denied(principal, "DESCRIBE_CONFIGS", "topic", name)
                        )
                    )
                    continue
                topic = state.topics.get(name)
                if topic is None:
                    response.topics.append(
                        broker_pb2.TopicConfigs(
                            name=name, error=error("UNKNOWN_TOPIC_OR_PARTITION", name)
                        )
                    )
                    continue
                explicit = dict(topic.configs)
                entries = [
                    broker_pb2.ConfigEntry(
                        name=key,
                        value=value,
                        is_default=key not in explicit,
                        doc=TOPIC_CONFIGS[key].doc,
                    )
                    for key, value in sorted(effective_configs(topic.configs).items())
                ]
                response.topics.append(broker_pb2.TopicConfigs(name=name, entries=entries))
        return response

    @typed_errors(broker_pb2.DescribeQuorumResponse)
    async def DescribeQuorum(
        self,
        request: broker_pb2.DescribeQuorumRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeQuorumResponse:
        principal = self.broker.authorizer.principal(context)
        if not self.broker.authorizer.allowed(
            principal, Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE
        ):
            return broker_pb2.DescribeQuorumResponse(
                error=_denied(principal, "DESCRIBE", "cluster", CLUSTER_RESOURCE)
            )
        status = self.broker.quorum.status()
        response = broker_pb2.DescribeQuorumResponse(
            leader_id=status.leader_id if status.leader_id is not None else -1,
            term=status.term,
            commit_index=status.commit_index,
            last_applied=status.last_applied,
            responder_id=self.broker.config.node_id,
        )
        for voter in status.voters:
            response.voters.append(
                broker_pb2.VoterStatus(
                    node_id=voter.node_id,
                    raft_address=voter.address,
                    match_index=-1 if voter.match_index is None else voter.match_index,
                    lag=-1 if voter.lag is None else voter.lag,
                )
            )
        return response

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
                error=_denied(principal, "IDEMPOTENT_WRITE", "cluster", CLUSTER_RESOURCE)
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
                error=error("NOT_CONTROLLER", f"the controller is unreachable: {exc.code()}")
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

    # ---- admin (forwarded to the controller) ---------------------------------------------------

    async def _forward(
        self,
        local: Callable[[], Awaitable[R]],
        remote: Callable[[controller_pb2_grpc.ControllerStub], Awaitable[R]],
        failed: Callable[[common_pb2.Error], R],
    ) -> R:
        broker = self.broker
        if broker.controller.quorum.is_leader():
            return await local()
        stub = broker.controller_stub()
        if stub is None:
            return failed(error("NOT_CONTROLLER", "no active controller is known yet"))
        try:
            return await remote(stub)
        except grpc.aio.AioRpcError as exc:
            return failed(error("NOT_CONTROLLER", f"the controller is unreachable: {exc.code()}"))

    @typed_errors(broker_pb2.CreateTopicsResponse)
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateTopicsResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        allowed = broker_pb2.CreateTopicsRequest(validate_only=request.validate_only)
        refused = []
        for topic in request.topics:
            ok = auth.may_create_topic(principal, topic.name)
            if ok:
                allowed.topics.append(topic)
            else:
                refused.append(
                    broker_pb2.TopicResult(
                        name=topic.name,
                        error=_denied(principal, "CREATE", "topic", topic.name),
                        topic_id=-1,
                    )
                )
        if not allowed.topics:
            return broker_pb2.CreateTopicsResponse(topics=refused)
        controller = ControllerServicer(self.broker)
        response: broker_pb2.CreateTopicsResponse = await self._forward(
            lambda: controller.create_topics(allowed),
            lambda stub: stub.CreateTopics(allowed, timeout=30),
            lambda e: broker_pb2.CreateTopicsResponse(error=e),
        )
        response.topics.extend(refused)
        return response

    @typed_errors(broker_pb2.DeleteTopicsResponse)
    async def DeleteTopics(
        self, request: broker_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteTopicsResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        allowed = broker_pb2.DeleteTopicsRequest()
        refused = []
        for name in request.names:
            if auth.topic_write_allowed(principal, name, Operation.DELETE):
                allowed.names.append(name)
            else:
                refused.append(
                    broker_pb2.TopicResult(
                        name=name, error=_denied(principal, "DELETE", "topic", name), topic_id=-1
                    )
                )
        if not allowed.names:
            return broker_pb2.DeleteTopicsResponse(topics=refused)
        controller = ControllerServicer(self.broker)
        response: broker_pb2.DeleteTopicsResponse = await self._forward(
            lambda: controller.delete_topics(allowed),
            lambda stub: stub.DeleteTopics(allowed, timeout=30),
            lambda e: broker_pb2.DeleteTopicsResponse(error=e),
        )
        response.topics.extend(refused)
        return response

    @typed_errors(broker_pb2.AlterConfigsResponse)
    async def AlterConfigs(
        self, request: broker_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.AlterConfigsResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        if not auth.topic_write_allowed(principal, request.topic, Operation.ALTER_CONFIGS):
            return broker_pb2.AlterConfigsResponse(
                error=_denied(principal, "ALTER_CONFIGS", "topic", request.topic)
            )
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.alter_configs(request),
            lambda stub: stub.AlterConfigs(request, timeout=30),
            lambda e: broker_pb2.AlterConfigsResponse(error=e),
        )

    @typed_errors(broker_pb2.DescribeClusterResponse)
    async def DescribeCluster(
        self,
        request: broker_pb2.DescribeClusterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeClusterResponse:
        # like Kafka's DescribeCluster: any authenticated principal may see the brokers
        auth = self.broker.authorizer
        auth.principal(context)
        controller = ControllerServicer(self.broker)
        response: broker_pb2.DescribeClusterResponse = await self._forward(
            lambda: controller.describe_cluster(),
            lambda stub: stub.DescribeCluster(request, timeout=10),
            lambda e: broker_pb2.DescribeClusterResponse(error=e),
        )
        with self.broker.store.read() as state:
            for status in response.brokers:
                record = state.brokers.get(status.broker_id)
                if record is not None:
                    status.address = listener_address(record, context, auth)
        return response

    # ---- security ------------------------------------------------------------------------------

    def _cluster_denied(self, context: Any, operation: Operation) -> common_pb2.Error | None:
        auth = self.broker.authorizer
        if not auth.enabled:
            return error("SECURITY_DISABLED", "the cluster runs plaintext: no principals or ACLs")
        principal = auth.principal(context)
        if auth.allowed(principal, operation, ResourceType.CLUSTER, CLUSTER_RESOURCE):
            return None
        return _denied(principal, operation.name, "cluster", CLUSTER_RESOURCE)

    async def _security_change(
        self, context: Any, request: Any, local: str, remote: str, response: Callable[..., R]
    ) -> R:
        """An ACL or user change: ALTER on the cluster, then carried out by the controller."""
        denied = self._cluster_denied(context, Operation.ALTER)
        if denied is not None:
            return response(error=denied)
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: getattr(controller, local)(request),
            lambda stub: getattr(stub, remote)(request, timeout=30),
            lambda e: response(error=e),
        )

    @typed_errors(broker_pb2.WhoAmIResponse)
    async def WhoAmI(
        self, request: broker_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.WhoAmIResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        return broker_pb2.WhoAmIResponse(
            principal=principal.name,
            broker_id=-1 if principal.broker_id is None else principal.broker_id,
            super_user=auth.is_super(principal),
        )

    @typed_errors(broker_pb2.CreateAclsResponse)
    async def CreateAcls(
        self, request: broker_pb2.CreateAclsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateAclsResponse:
        return await self._security_change(
            context, request, "create_acls", "CreateAcls", broker_pb2.CreateAclsResponse
        )

    @typed_errors(broker_pb2.DeleteAclsResponse)
    async def DeleteAcls(
        self, request: broker_pb2.DeleteAclsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteAclsResponse:
        return await self._security_change(
            context, request, "delete_acls", "DeleteAcls", broker_pb2.DeleteAclsResponse
        )

    @typed_errors(broker_pb2.DescribeAclsResponse)
    async def DescribeAcls(
        self, request: broker_pb2.DescribeAclsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DescribeAclsResponse:
        denied = self._cluster_denied(context, Operation.DESCRIBE)
        if denied is not None:
            return broker_pb2.DescribeAclsResponse(error=denied)
        try:
            wanted = acl_filter_from_proto(request.filter)
        except AclError as exc:
            return broker_pb2.DescribeAclsResponse(error=error("INVALID_REQUEST", str(exc)))
        with self.broker.store.read() as state:
            found = sorted(b for b in state.acls if wanted.matches(b))
        return broker_pb2.DescribeAclsResponse(acls=[acl_to_proto(b) for b in found])

    @typed_errors(broker_pb2.UpsertUserResponse)
    async def UpsertUser(
        self, request: broker_pb2.UpsertUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.UpsertUserResponse:
        return await self._security_change(
            context, request, "upsert_user", "UpsertUser", broker_pb2.UpsertUserResponse
        )

    @typed_errors(broker_pb2.DeleteUserResponse)
    async def DeleteUser(
        self, request: broker_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteUserResponse:
        return await self._security_change(
            context, request, "delete_user", "DeleteUser", broker_pb2.DeleteUserResponse
        )

    @typed_errors(broker_pb2.DescribeUsersResponse)
    async def DescribeUsers(
        self, request: broker_pb2.DescribeUsersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DescribeUsersResponse:
        denied = self._cluster_denied(context, Operation.DESCRIBE)
        if denied is not None:
            return broker_pb2.DescribeUsersResponse(error=denied)
        with self.broker.store.read() as state:
            users = sorted(state.users.items())
        return broker_pb2.DescribeUsersResponse(
            users=[
                broker_pb2.UserDescription(
                    user=name, mechanism=str(c.mechanism), iterations=c.iterations
                )
                for name, c in users
            ]
        )


def acl_to_proto(binding: AclBinding) -> broker_pb2.AclBinding:
    return broker_pb2.AclBinding(**binding.to_dict())


def acl_from_proto(message: broker_pb2.AclBinding) -> AclBinding:
    """Raises AclError for a malformed or rule-breaking binding."""
    fields = {f.name: v for f, v in message.ListFields()}
    fields.setdefault("host", WILDCARD)
    binding = AclBinding.from_dict(fields)
    validate_binding(binding)
    return binding


def acl_filter_from_proto(message: broker_pb2.AclBinding) -> AclFilter:
    """Empty fields match anything. Raises AclError for a value outside its closed set."""
    return AclFilter.from_dict({f.name: v for f, v in message.ListFields() if v})


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Answers only while this broker is the active controller."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _not_a_broker(
        self,
        context: Any,
        broker_id: int | None = None,
        method: str = "",
        request: Any = None,
    ) -> common_pb2.Error | None:
        """None when the caller is a broker (speaking for ``broker_id`` when one is named). A
        relayed call (``controller_link.py``) must come from the broker relaying it and carry
        the proof that broker ``broker_id`` sent it (``relay_proof.py``)."""
        auth = self.broker.authorizer
        if not auth.enabled:
            return None  # plaintext: no identities to check
        principal = auth.principal(context)
        metadata = context.invocation_metadata()
        relay = relayed_by(metadata)
        if relay is None:
            if auth.broker_only(principal, broker_id):
                return None
            who = "a broker" if broker_id is None else f"broker {broker_id}"
            return error(
                "CLUSTER_AUTHORIZATION_FAILED",
                f"{principal.name} may not call a broker-only RPC as {who}",
            )
        if not auth.broker_only(principal, relay):
            return error(
                "CLUSTER_AUTHORIZATION_FAILED", f"{principal.name} may not relay as broker {relay}"
            )
        if broker_id is not None:
            proven = origin_broker(metadata, method, request, self._ca_pem)
            if proven != broker_id:
                return error(
                    "CLUSTER_AUTHORIZATION_FAILED",
                    f"a call relayed by broker {relay} carries no valid proof that broker "
                    f"{broker_id} sent it",
                )
        return None

    @functools.cached_property
    def _ca_pem(self) -> bytes:
        with open(self.broker.config.security.ca_file, "rb") as ca:
            return ca.read()

    async def _relay(
        self, method: str, request: Any, context: Any, response: Callable[..., R]
    ) -> R | None:
        """Forward a broker's call to the controller when we are not it and the call came
        direct (a relayed call is never forwarded again); None: answer it here."""
        broker = self.broker
        if broker.controller.quorum.is_leader():
            return None
        if relayed_by(context.invocation_metadata()) is not None:
            return None
        stub = broker.controller_stub()
        if stub is None:
            return response(error=error("NOT_CONTROLLER", "no active controller is known here"))
        remaining = context.time_remaining()
        timeout_s = (
            RELAY_TIMEOUT_S_MAX if remaining is None else min(remaining, RELAY_TIMEOUT_S_MAX)
        )
        try:
            answer: R = await getattr(stub, method)(
                request,
                timeout=max(timeout_s - 0.05, 0.05),
                metadata=(
                    (RELAY_HEADER, str(broker.config.node_id)),
                    *origin_headers(context.invocation_metadata()),
                ),
            )
        except grpc.aio.AioRpcError as exc:
            return response(
                error=error(
                    "NOT_CONTROLLER",
                    f"broker {broker.config.node_id} cannot reach the controller: {exc.code()}",
                )
            )
        return answer

    def _hint(self) -> controller_pb2.ControllerHint:
        leader = self.broker.controller_id()
        voter = self.broker.config.voter_by_id(leader) if leader >= 0 else None
        return controller_pb2.ControllerHint(
            controller_id=leader, address=voter.grpc_address if voter else ""
        )

    @typed_errors(controller_pb2.RegisterBrokerResponse)
    async def RegisterBroker(
        self,
        request: controller_pb2.RegisterBrokerRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.RegisterBrokerResponse:
        denied = self._not_a_broker(context, request.broker_id, "RegisterBroker", request)
        if denied is not None:
            return controller_pb2.RegisterBrokerResponse(error=denied)
        relayed = await self._relay(
            "RegisterBroker", request, context, controller_pb2.RegisterBrokerResponse
        )
        if relayed is not None:
            return relayed
        try:
            epoch = await self.broker.controller.register(
                request.broker_id,
                request.incarnation,
                request.address,
                request.rack or None,
                unclean=request.unclean,
                password_address=request.password_address or None,
            )
        except ControllerError as exc:
            return controller_pb2.RegisterBrokerResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.RegisterBrokerResponse(broker_epoch=epoch, controller=self._hint())

    @typed_errors(controller_pb2.BrokerHeartbeatResponse)
    async def BrokerHeartbeat(
        self,
        request: controller_pb2.BrokerHeartbeatRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.BrokerHeartbeatResponse:
        denied = self._not_a_broker(context, request.broker_id, "BrokerHeartbeat", request)
        if denied is not None:
            return controller_pb2.BrokerHeartbeatResponse(error=denied)
        relayed = await self._relay(
            "BrokerHeartbeat", request, context, controller_pb2.BrokerHeartbeatResponse
        )
        if relayed is not None:
            return relayed
        try:
            known, fenced = self.broker.controller.heartbeat(
                request.broker_id,
                request.incarnation,
                request.metadata_version,
                request.reachable_peers,
                direct=relayed_by(context.invocation_metadata()) is None,
            )
        except ControllerError as exc:
            return controller_pb2.BrokerHeartbeatResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.BrokerHeartbeatResponse(
            should_register=not known,
            fenced=fenced,
            heartbeat_interval_ms=self.broker.config.heartbeat_interval_ms,
            controller=self._hint(),
        )

    @typed_errors(controller_pb2.AlterPartitionResponse)
    async def AlterPartition(
        self,
        request: controller_pb2.AlterPartitionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.AlterPartitionResponse:
        denied = self._not_a_broker(context, request.broker_id, "AlterPartition", request)
        if denied is not None:
            return controller_pb2.AlterPartitionResponse(error=denied)
        relayed = await self._relay(
            "AlterPartition", request, context, controller_pb2.AlterPartitionResponse
        )
        if relayed is not None:
            return relayed
        command = AlterPartition(
            request.topic,
            request.partition,
            request.broker_id,
            request.leader_epoch,
            request.partition_epoch,
            tuple(request.isr),
            tuple(request.isr_incarnations),
        )
        try:
            result = await self.broker.controller.alter_partition(command)
        except ControllerError as exc:
            return controller_pb2.AlterPartitionResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        response = controller_pb2.AlterPartitionResponse(
            error=_result_error(result), metadata_version=self.broker.store.version
        )
        if "error" not in result:
            response.partition_epoch = int(result["partition_epoch"])
            response.isr.extend(result["isr"])
            response.leader_epoch = request.leader_epoch
        elif result["error"] == "INVALID_UPDATE_VERSION":
            # a resend of a change that committed, or a change that raced ours: tell the leader
            # what is committed now (it may not see our metadata until a partition heals)
            with self.broker.store.read() as state:
                record = state.partitions.get((request.topic, request.partition))
            if record is not None and (record.leader, record.leader_epoch) == (
                request.broker_id,
                request.leader_epoch,
            ):
                response.partition_epoch = record.partition_epoch
                response.isr.extend(record.isr)
                response.leader_epoch = record.leader_epoch
        return response

    @typed_errors(controller_pb2.ReportDamagedReplicasResponse)
    async def ReportDamagedReplicas(
        self,
        request: controller_pb2.ReportDamagedReplicasRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.ReportDamagedReplicasResponse:
        denied = self._not_a_broker(context, request.broker_id, "ReportDamagedReplicas", request)
        if denied is not None:
            return controller_pb2.ReportDamagedReplicasResponse(error=denied)
        relayed = await self._relay(
            "ReportDamagedReplicas", request, context, controller_pb2.ReportDamagedReplicasResponse
        )
        if relayed is not None:
            return relayed
        command = ReplicasDamaged(
            request.broker_id,
            request.incarnation,
            tuple((p.topic, p.partition) for p in request.partitions),
        )
        try:
            result = await self.broker.controller.replicas_damaged(command)
        except ControllerError as exc:
            return controller_pb2.ReportDamagedReplicasResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.ReportDamagedReplicasResponse(
            error=_result_error(result), metadata_version=self.broker.store.version
        )

    @typed_errors(controller_pb2.AllocateProducerIdsResponse)
    async def AllocateProducerIds(
        self,
        request: controller_pb2.AllocateProducerIdsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.AllocateProducerIdsResponse:
        denied = self._not_a_broker(context, request.broker_id, "AllocateProducerIds", request)
        if denied is not None:
            return controller_pb2.AllocateProducerIdsResponse(error=denied)
        relayed = await self._relay(
            "AllocateProducerIds", request, context, controller_pb2.AllocateProducerIdsResponse
        )
        if relayed is not None:
            return relayed
        try:
            result = await self.broker.controller.allocate_producer_ids(
                request.broker_id, request.count
            )
        except ControllerError as exc:
            return controller_pb2.AllocateProducerIdsResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.AllocateProducerIdsResponse(
            start=int(result["start"]), count=int(result["count"])
        )

    @typed_errors(controller_pb2.PartitionStatesResponse)
    async def PartitionStates(
        self,
        request: controller_pb2.PartitionStatesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.PartitionStatesResponse:
        denied = self._not_a_broker(context, request.broker_id, "PartitionStates", request)
        if denied is not None:
            return controller_pb2.PartitionStatesResponse(error=denied)
        relayed = await self._relay(
            "PartitionStates", request, context, controller_pb2.PartitionStatesResponse
        )
        if relayed is not None:
            return relayed
        try:
            version, rows = self.broker.controller.replicas_of(request.broker_id)
        except ControllerError as exc:
            return controller_pb2.PartitionStatesResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.PartitionStatesResponse(metadata_version=version, partitions=rows)

    @typed_errors(broker_pb2.CreateTopicsResponse)
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateTopicsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.CreateTopicsResponse(error=denied)
        return await self.create_topics(request)

    async def create_topics(
        self, request: broker_pb2.CreateTopicsRequest
    ) -> broker_pb2.CreateTopicsResponse:
        """Carried out for a broker that authorized the caller (or for this broker itself)."""
        controller = self.broker.controller
        response = broker_pb2.CreateTopicsResponse()
        topics = [
            TopicRequest(t.name, t.partitions, t.replication_factor, dict(t.configs))
            for t in request.topics
        ]
        # the whole request is refused by its size before any topic is looked at
        refusal = controller.check_create_request(topics)
        if refusal is not None:
            response.error.CopyFrom(_result_error(refusal))
        for topic in topics:
            if refusal is not None:
                result = refusal
            else:
                try:
                    result = await controller.create_topic(
                        topic, validate_only=request.validate_only
                    )
                except ControllerError as exc:
                    result = {"error": exc.code, "message": exc.message}
            response.topics.append(
                broker_pb2.TopicResult(
                    name=topic.name,
                    error=_result_error(result),
                    topic_id=int(result.get("topic_id", -1)),
                )
            )
        return response

    @typed_errors(broker_pb2.DeleteTopicsResponse)
    async def DeleteTopics(
        self, request: broker_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteTopicsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.DeleteTopicsResponse(error=denied)
        return await self.delete_topics(request)

    async def delete_topics(
        self, request: broker_pb2.DeleteTopicsRequest
    ) -> broker_pb2.DeleteTopicsResponse:
        """Carried out for a broker that authorized the caller (or for this broker itself)."""
        response = broker_pb2.DeleteTopicsResponse()
        for name in request.names:
            try:
                result = await self.broker.controller.delete_topic(name)
            except ControllerError as exc:
                result = {"error": exc.code, "message": exc.message}
            response.topics.append(
                broker_pb2.TopicResult(
                    name=name,
                    error=_result_error(result),
                    topic_id=int(result.get("topic_id", -1)),
                )
            )
        return response

    @typed_errors(broker_pb2.AlterConfigsResponse)
    async def AlterConfigs(
        self, request: broker_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.AlterConfigsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.AlterConfigsResponse(error=denied)
        return await self.alter_configs(request)

    async def alter_configs(
        self, request: broker_pb2.AlterConfigsRequest
    ) -> broker_pb2.AlterConfigsResponse:
        """Carried out for a broker that authorized the caller (or for this broker itself)."""
        try:
            result = await self.broker.controller.alter_configs(
                request.topic, dict(request.set), list(request.delete)
            )
        except ControllerError as exc:
            result = {"error": exc.code, "message": exc.message}
        return broker_pb2.AlterConfigsResponse(error=_result_error(result))

    @typed_errors(broker_pb2.DescribeClusterResponse)
    async def DescribeCluster(
        self,
        request: broker_pb2.DescribeClusterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeClusterResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.DescribeClusterResponse(error=denied)
        return await self.describe_cluster()

    async def describe_cluster(self) -> broker_pb2.DescribeClusterResponse:
        broker = self.broker
        try:
            liveness = broker.controller.liveness()
        except ControllerError as exc:
            return broker_pb2.DescribeClusterResponse(error=error(exc.code, exc.message))
        response = broker_pb2.DescribeClusterResponse(
            cluster_id=broker.cluster_id,
            controller_id=broker.config.node_id,
            metadata_version=broker.store.version,
        )
        with broker.store.read() as state:
            for b in sorted(state.brokers.values(), key=lambda b: b.broker_id):
                alive, ago = liveness.get(b.broker_id, (False, -1))
                response.brokers.append(
                    broker_pb2.BrokerStatus(
                        broker_id=b.broker_id,
                        address=b.address,
                        rack=b.rack or "",
                        fenced=b.fenced,
                        incarnation=b.incarnation,
                        alive=alive,
                        last_heartbeat_ms_ago=ago,
                    )
                )
        return response

    # ---- security (forwarded by a broker that authorized the caller) ---------------------------

    async def _submit(self, command: Command) -> dict[str, Any]:
        controller = self.broker.controller
        try:
            controller.active()
            return await controller.submit(command, bytes_max=controller.limits.command_bytes_max)
        except ControllerError as exc:
            return {"error": exc.code, "message": exc.message}

    async def create_acls(
        self, request: broker_pb2.CreateAclsRequest
    ) -> broker_pb2.CreateAclsResponse:
        try:
            bindings = tuple(acl_from_proto(a) for a in request.acls)
        except AclError as exc:
            return broker_pb2.CreateAclsResponse(error=error("INVALID_REQUEST", str(exc)))
        result = await self._submit(CreateAcls(bindings))
        return broker_pb2.CreateAclsResponse(error=_result_error(result))

    async def delete_acls(
        self, request: broker_pb2.DeleteAclsRequest
    ) -> broker_pb2.DeleteAclsResponse:
        try:
            filters = tuple(acl_filter_from_proto(f) for f in request.filters)
        except AclError as exc:
            return broker_pb2.DeleteAclsResponse(error=error("INVALID_REQUEST", str(exc)))
        result = await self._submit(DeleteAcls(filters))
        response = broker_pb2.DeleteAclsResponse(error=_result_error(result))
        for deleted in result.get("deleted", []):
            response.deleted.append(broker_pb2.AclBinding(**deleted))
        return response

    async def upsert_user(
        self, request: broker_pb2.UpsertUserRequest
    ) -> broker_pb2.UpsertUserResponse:
        try:
            credential = scram.credential_from_salted_password(
                request.mechanism, request.salt, request.iterations, request.salted_password
            )
            scram.validate_user(request.user)
        except scram.ScramError as exc:
            return broker_pb2.UpsertUserResponse(error=error("INVALID_REQUEST", str(exc)))
        result = await self._submit(UpsertScramCredential(request.user, credential))
        return broker_pb2.UpsertUserResponse(error=_result_error(result))

    async def delete_user(
        self, request: broker_pb2.DeleteUserRequest
    ) -> broker_pb2.DeleteUserResponse:
        result = await self._submit(DeleteScramCredential(request.user))
        return broker_pb2.DeleteUserResponse(error=_result_error(result))

    @typed_errors(broker_pb2.CreateAclsResponse)
    async def CreateAcls(
        self, request: broker_pb2.CreateAclsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateAclsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.CreateAclsResponse(error=denied)
        return await self.create_acls(request)

    @typed_errors(broker_pb2.DeleteAclsResponse)
    async def DeleteAcls(
        self, request: broker_pb2.DeleteAclsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteAclsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.DeleteAclsResponse(error=denied)
        return await self.delete_acls(request)

    @typed_errors(broker_pb2.UpsertUserResponse)
    async def UpsertUser(
        self, request: broker_pb2.UpsertUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.UpsertUserResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.UpsertUserResponse(error=denied)
        return await self.upsert_user(request)

    @typed_errors(broker_pb2.DeleteUserResponse)
    async def DeleteUser(
        self, request: broker_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteUserResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.DeleteUserResponse(error=denied)
        return await self.delete_user(request)
