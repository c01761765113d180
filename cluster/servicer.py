"""gRPC servicers: proto in, a call into the broker's cores, proto out. Nothing else.

Both run on the broker loop (grpc.aio). Admin calls that need the active controller are answered
here when this broker is it, and forwarded to it otherwise (one hop; NOT_CONTROLLER when none is
known, which clients retry).

No exception leaves a servicer: each unary method is wrapped by ``_typed_errors``, which logs
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
from raftlog.raft.commands import AlterPartition, ReplicasDamaged
from raftlog.raft.metadata import NO_LEADER
from raftlog.raft.topic_config import TOPIC_CONFIGS, effective_configs

from .controller_service import ControllerError, TopicRequest
from .replica_manager import CONSUMER, FetchSpec

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["BrokerServicer", "ControllerServicer", "error"]

log = logging.getLogger(__name__)
R = TypeVar("R")
EPOCH_MAX = 32767  # producer epochs are int16; past it a producer gets a new id


def error(code: str = "NONE", message: str = "") -> common_pb2.Error:
    try:
        value = common_pb2.ErrorCode.Value(code)
    except ValueError:
        value, message = common_pb2.UNKNOWN_SERVER_ERROR, f"{code}: {message}"
    return common_pb2.Error(code=value, message=message)


Handler = Callable[[Any, Any, Any], Awaitable[Any]]


def _typed_errors(response: type[Any]) -> Callable[[Handler], Handler]:
    """Answer ``response(error=UNKNOWN_SERVER_ERROR)`` for anything a handler did not expect."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(self: Any, request: Any, context: Any) -> Any:
            try:
                return await handler(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise  # the call was cancelled, or the handler chose a gRPC status itself
            except Exception as exc:
                log.exception("%s failed unexpectedly", handler.__name__)
                return response(error=error("UNKNOWN_SERVER_ERROR", f"{type(exc).__name__}: {exc}"))

        return guarded

    return wrap


def _result_error(result: dict[str, Any]) -> common_pb2.Error:
    if "error" in result:
        return error(str(result["error"]), str(result.get("message", "")))
    return error()


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # ---- data ----------------------------------------------------------------------------------

    @_typed_errors(broker_pb2.ProduceResponse)
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ProduceResponse:
        broker = self.broker
        timeout_ms = min(max(request.timeout_ms, 0), broker.config.request_timeout_ms_max)
        items = [(p.topic, p.partition, p.records) for p in request.partitions]
        outcomes = await broker.replicas.produce(request.acks, timeout_ms, items)
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
        )

    @_typed_errors(broker_pb2.FetchResponse)
    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.FetchResponse:
        return await self._fetch(request)

    async def ReplicaFetch(
        self,
        requests: AsyncIterator[broker_pb2.FetchRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[broker_pb2.FetchResponse]:
        async for request in requests:
            try:
                response = await self._fetch(request)
            except Exception as exc:  # a stream has no wrapper: the same rule, per message
                log.exception("ReplicaFetch failed unexpectedly")
                response = broker_pb2.FetchResponse(
                    error=error("UNKNOWN_SERVER_ERROR", f"{type(exc).__name__}: {exc}")
                )
            yield response

    async def _fetch(self, request: broker_pb2.FetchRequest) -> broker_pb2.FetchResponse:
        specs = [
            FetchSpec(
                p.topic,
                p.partition,
                p.fetch_offset,
                p.current_leader_epoch,
                p.last_fetched_epoch,
                p.partition_max_bytes or (1 << 20),
                p.log_start_offset,
            )
            for p in request.partitions
        ]
        replica_id = request.replica_id if request.replica_id >= 0 else CONSUMER
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
        return broker_pb2.FetchResponse(partitions=results)

    @_typed_errors(broker_pb2.ListOffsetsResponse)
    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ListOffsetsResponse:
        replicas = self.broker.replicas
        results = []
        for p in request.partitions:
            partition, base = replicas.check_leader(
                FetchSpec(p.topic, p.partition, 0, p.current_leader_epoch), CONSUMER
            )
            result = broker_pb2.ListOffsetsResult(
                topic=p.topic, partition=p.partition, offset=-1, timestamp=-1, leader_epoch=-1
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

    @_typed_errors(broker_pb2.OffsetForLeaderEpochResponse)
    async def OffsetForLeaderEpoch(
        self,
        request: broker_pb2.OffsetForLeaderEpochRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        results = []
        for p in request.partitions:
            code, message, epoch, end = self.broker.replicas.leader_end_offset_for(
                p.topic, p.partition, p.current_leader_epoch, p.leader_epoch
            )
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

    @_typed_errors(broker_pb2.MetadataResponse)
    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.MetadataResponse:
        broker = self.broker
        response = broker_pb2.MetadataResponse(controller_id=broker.controller_id())
        with broker.store.read() as state:
            response.metadata_version = state.version
            for b in sorted(state.brokers.values(), key=lambda b: b.broker_id):
                response.brokers.append(
                    broker_pb2.BrokerMetadata(
                        broker_id=b.broker_id,
                        address=b.address,
                        rack=b.rack or "",
                        fenced=b.fenced,
                        incarnation=b.incarnation,
                    )
                )
            names = list(request.topics) or sorted(state.topics)
            for name in names:
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
                for record in state.partitions_of(name):
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

    @_typed_errors(broker_pb2.DescribeReplicasResponse)
    async def DescribeReplicas(
        self,
        request: broker_pb2.DescribeReplicasRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeReplicasResponse:
        broker = self.broker
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

    @_typed_errors(broker_pb2.DescribeConfigsResponse)
    async def DescribeConfigs(
        self,
        request: broker_pb2.DescribeConfigsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeConfigsResponse:
        response = broker_pb2.DescribeConfigsResponse()
        with self.broker.store.read() as state:
            for name in request.topics:
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

    @_typed_errors(broker_pb2.DescribeQuorumResponse)
    async def DescribeQuorum(
        self,
        request: broker_pb2.DescribeQuorumRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeQuorumResponse:
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

    @_typed_errors(broker_pb2.InitProducerIdResponse)
    async def InitProducerId(
        self,
        request: broker_pb2.InitProducerIdRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.InitProducerIdResponse:
        if request.producer_id >= 0 and 0 <= request.producer_epoch < EPOCH_MAX:
            # bump: partitions refuse the older epoch once the new one has written to them
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

    @_typed_errors(broker_pb2.CreateTopicsResponse)
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateTopicsResponse:
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.CreateTopics(request, context),
            lambda stub: stub.CreateTopics(request, timeout=30),
            lambda e: broker_pb2.CreateTopicsResponse(error=e),
        )

    @_typed_errors(broker_pb2.DeleteTopicsResponse)
    async def DeleteTopics(
        self, request: broker_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteTopicsResponse:
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.DeleteTopics(request, context),
            lambda stub: stub.DeleteTopics(request, timeout=30),
            lambda e: broker_pb2.DeleteTopicsResponse(error=e),
        )

    @_typed_errors(broker_pb2.AlterConfigsResponse)
    async def AlterConfigs(
        self, request: broker_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.AlterConfigsResponse:
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.AlterConfigs(request, context),
            lambda stub: stub.AlterConfigs(request, timeout=30),
            lambda e: broker_pb2.AlterConfigsResponse(error=e),
        )

    @_typed_errors(broker_pb2.DescribeClusterResponse)
    async def DescribeCluster(
        self,
        request: broker_pb2.DescribeClusterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeClusterResponse:
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.DescribeCluster(request, context),
            lambda stub: stub.DescribeCluster(request, timeout=10),
            lambda e: broker_pb2.DescribeClusterResponse(error=e),
        )


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Answers only while this broker is the active controller."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _hint(self) -> controller_pb2.ControllerHint:
        leader = self.broker.controller_id()
        voter = self.broker.config.voter_by_id(leader) if leader >= 0 else None
        return controller_pb2.ControllerHint(
            controller_id=leader, address=voter.grpc_address if voter else ""
        )

    @_typed_errors(controller_pb2.RegisterBrokerResponse)
    async def RegisterBroker(
        self,
        request: controller_pb2.RegisterBrokerRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.RegisterBrokerResponse:
        try:
            epoch = await self.broker.controller.register(
                request.broker_id,
                request.incarnation,
                request.address,
                request.rack or None,
                unclean=request.unclean,
            )
        except ControllerError as exc:
            return controller_pb2.RegisterBrokerResponse(
                error=error(exc.code, exc.message), controller=self._hint()
            )
        return controller_pb2.RegisterBrokerResponse(broker_epoch=epoch, controller=self._hint())

    @_typed_errors(controller_pb2.BrokerHeartbeatResponse)
    async def BrokerHeartbeat(
        self,
        request: controller_pb2.BrokerHeartbeatRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.BrokerHeartbeatResponse:
        try:
            known, fenced = self.broker.controller.heartbeat(
                request.broker_id, request.incarnation, request.metadata_version
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

    @_typed_errors(controller_pb2.AlterPartitionResponse)
    async def AlterPartition(
        self,
        request: controller_pb2.AlterPartitionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.AlterPartitionResponse:
        command = AlterPartition(
            request.topic,
            request.partition,
            request.broker_id,
            request.leader_epoch,
            request.partition_epoch,
            tuple(request.isr),
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
        return response

    @_typed_errors(controller_pb2.ReportDamagedReplicasResponse)
    async def ReportDamagedReplicas(
        self,
        request: controller_pb2.ReportDamagedReplicasRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.ReportDamagedReplicasResponse:
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

    @_typed_errors(controller_pb2.AllocateProducerIdsResponse)
    async def AllocateProducerIds(
        self,
        request: controller_pb2.AllocateProducerIdsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.AllocateProducerIdsResponse:
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

    @_typed_errors(broker_pb2.CreateTopicsResponse)
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateTopicsResponse:
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

    @_typed_errors(broker_pb2.DeleteTopicsResponse)
    async def DeleteTopics(
        self, request: broker_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DeleteTopicsResponse:
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

    @_typed_errors(broker_pb2.AlterConfigsResponse)
    async def AlterConfigs(
        self, request: broker_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.AlterConfigsResponse:
        try:
            result = await self.broker.controller.alter_configs(
                request.topic, dict(request.set), list(request.delete)
            )
        except ControllerError as exc:
            result = {"error": exc.code, "message": exc.message}
        return broker_pb2.AlterConfigsResponse(error=_result_error(result))

    @_typed_errors(broker_pb2.DescribeClusterResponse)
    async def DescribeCluster(
        self,
        request: broker_pb2.DescribeClusterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.DescribeClusterResponse:
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
