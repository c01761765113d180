"""The Controller gRPC service: broker-only calls answered while this broker is the controller.

Brokers call it to register, heartbeat, change an ISR (AlterPartition), report damaged replicas,
take a block of producer ids and read their partitions' committed state; a broker that
authorized a client's admin call (``admin_rpcs.py``) forwards it here to be carried out (create
and delete topics, alter configs, describe the cluster, ACL and user changes). Every call must
come from a broker (``_not_a_broker``), speaking for the broker id it proves.

A broker's own call that reaches a broker which is not the controller is relayed to the
controller (``_relay``, one hop: ``controller_link.py`` is the sending side, ``relay_proof.py``
proves who sent it); a relayed call is answered where it lands, never relayed again
(NOT_CONTROLLER when that broker is not the controller either). Runs on the broker loop
(grpc.aio), like every servicer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from raftlog.proto import broker_pb2, common_pb2, controller_pb2, controller_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft import scram
from raftlog.raft.acl import WILDCARD, AclBinding, AclError, AclFilter, validate_binding
from raftlog.raft.commands import (
    AlterPartition,
    Command,
    CreateAcls,
    DeleteAcls,
    DeleteScramCredential,
    ReplicasDamaged,
    UpsertScramCredential,
)

from .controller_link import RELAY_HEADER, relayed_by
from .controller_service import ControllerError, TopicRequest
from .relay_proof import origin_broker, origin_headers
from .rpc_errors import error, result_error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["ControllerServicer", "acl_filter_from_proto", "acl_from_proto", "acl_to_proto"]

R = TypeVar("R")
RELAY_TIMEOUT_S_MAX = 5.0  # a relayed call waits for the controller at most this long
# partitions one reassignment or election request may name (each is committed in commands of at
# most REASSIGN_MOVES_MAX; a drain is not a request and moves what the broker holds), and topics
# one CreatePartitions may grow (each bounded by limits.partitions_per_request_max)
PARTITIONS_PER_MOVE_REQUEST_MAX = 10_000
TOPICS_PER_CREATE_PARTITIONS_MAX = 100


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
                ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                f"{principal.name} may not call a broker-only RPC as {who}",
            )
        if not auth.broker_only(principal, relay):
            return error(
                ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                f"{principal.name} may not relay as broker {relay}",
            )
        if broker_id is not None:
            proven = origin_broker(metadata, method, request, self._ca_pem)
            if proven != broker_id:
                return error(
                    ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
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
            return response(
                error=error(ErrorCode.NOT_CONTROLLER, "no active controller is known here")
            )
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
                    ErrorCode.NOT_CONTROLLER,
                    f"broker {broker.config.node_id} cannot reach the controller: {exc.code()}",
                )
            )
        return answer

    def _hint(self) -> controller_pb2.ControllerHint:
        leader = self.broker.controller_id()
        address = self.broker.voter_grpc_address(leader) if leader >= 0 else None
        return controller_pb2.ControllerHint(controller_id=leader, address=address or "")

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
                kafka_address=request.kafka_address or None,
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
            error=result_error(result), metadata_version=self.broker.store.version
        )
        if "error" not in result:
            response.partition_epoch = int(result["partition_epoch"])
            response.isr.extend(result["isr"])
            # a reassignment that this change completed may have moved the leadership away
            response.leader_epoch = int(result.get("leader_epoch", request.leader_epoch))
        elif result["error"] is ErrorCode.INVALID_UPDATE_VERSION:
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
            error=result_error(result), metadata_version=self.broker.store.version
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

    @typed_errors(controller_pb2.FetchMetadataResponse)
    async def FetchMetadata(
        self,
        request: controller_pb2.FetchMetadataRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controller_pb2.FetchMetadataResponse:
        """A broker that is not a voter follows the metadata (``metadata_observer.py``). Any
        broker answers from its own applied state; the leader it names is itself only while it
        holds the leader lease, so an observer leaves a deposed leader's frozen state."""
        denied = self._not_a_broker(context, request.broker_id, "FetchMetadata", request)
        if denied is not None:
            return controller_pb2.FetchMetadataResponse(error=denied)
        broker = self.broker
        quorum = broker.controller.quorum
        own = broker.config.node_id
        leader = own if quorum.is_leader() else quorum.leader_id()
        if leader is None or (leader == own and not quorum.is_leader()):
            leader = -1
        return await broker.metadata_feed.answer(request.version, request.max_wait_ms, leader)

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
            response.error.CopyFrom(result_error(refusal))
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
                    error=result_error(result),
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
                    error=result_error(result),
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
        return broker_pb2.AlterConfigsResponse(error=result_error(result))

    # ---- moving partitions (partition_admin.py authorized the caller) -------------------------

    @typed_errors(broker_pb2.AlterPartitionReassignmentsResponse)
    async def AlterPartitionReassignments(
        self,
        request: broker_pb2.AlterPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.AlterPartitionReassignmentsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.AlterPartitionReassignmentsResponse(error=denied)
        return await self.alter_partition_reassignments(request)

    async def alter_partition_reassignments(
        self, request: broker_pb2.AlterPartitionReassignmentsRequest
    ) -> broker_pb2.AlterPartitionReassignmentsResponse:
        if request.throttle_bytes_per_s < 0:
            return broker_pb2.AlterPartitionReassignmentsResponse(
                error=error(ErrorCode.INVALID_REQUEST, "throttle_bytes_per_s must be >= 0")
            )
        if len(request.reassignments) > PARTITIONS_PER_MOVE_REQUEST_MAX:
            return broker_pb2.AlterPartitionReassignmentsResponse(
                error=error(
                    ErrorCode.POLICY_VIOLATION,
                    f"{len(request.reassignments)} partitions in one request, above "
                    f"{PARTITIONS_PER_MOVE_REQUEST_MAX}: split the plan",
                )
            )
        moves = [(r.topic, r.partition, tuple(r.replicas)) for r in request.reassignments]
        try:
            outcomes = await self.broker.controller.reassign(moves, request.throttle_bytes_per_s)
        except ControllerError as exc:
            return broker_pb2.AlterPartitionReassignmentsResponse(
                error=error(exc.code, exc.message)
            )
        return broker_pb2.AlterPartitionReassignmentsResponse(
            partitions=_partition_results(outcomes)
        )

    @typed_errors(broker_pb2.ListPartitionReassignmentsResponse)
    async def ListPartitionReassignments(
        self,
        request: broker_pb2.ListPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.ListPartitionReassignmentsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.ListPartitionReassignmentsResponse(error=denied)
        return await self.list_partition_reassignments(request)

    async def list_partition_reassignments(
        self, request: broker_pb2.ListPartitionReassignmentsRequest
    ) -> broker_pb2.ListPartitionReassignmentsResponse:
        try:
            self.broker.controller.active()
        except ControllerError as exc:
            return broker_pb2.ListPartitionReassignmentsResponse(error=error(exc.code, exc.message))
        topics = set(request.topics)
        response = broker_pb2.ListPartitionReassignmentsResponse()
        with self.broker.store.read() as state:
            for (topic, partition), record in sorted(state.partitions.items()):
                if (record.adding or record.removing) and (not topics or topic in topics):
                    response.reassignments.append(
                        broker_pb2.OngoingReassignment(
                            topic=topic,
                            partition=partition,
                            replicas=record.replicas,
                            adding=record.adding,
                            removing=record.removing,
                            isr=record.isr,
                            leader=record.leader,
                            throttle_bytes_per_s=record.throttle,
                        )
                    )
        return response

    @typed_errors(broker_pb2.DrainBrokerResponse)
    async def DrainBroker(
        self, request: broker_pb2.DrainBrokerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DrainBrokerResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.DrainBrokerResponse(error=denied)
        return await self.drain_broker(request)

    async def drain_broker(
        self, request: broker_pb2.DrainBrokerRequest
    ) -> broker_pb2.DrainBrokerResponse:
        if request.throttle_bytes_per_s < 0:
            return broker_pb2.DrainBrokerResponse(
                error=error(ErrorCode.INVALID_REQUEST, "throttle_bytes_per_s must be >= 0")
            )
        try:
            outcomes = await self.broker.controller.drain(
                request.broker_id, request.throttle_bytes_per_s
            )
        except ControllerError as exc:
            return broker_pb2.DrainBrokerResponse(error=error(exc.code, exc.message))
        return broker_pb2.DrainBrokerResponse(partitions=_partition_results(outcomes))

    @typed_errors(broker_pb2.ElectLeadersResponse)
    async def ElectLeaders(
        self, request: broker_pb2.ElectLeadersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ElectLeadersResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.ElectLeadersResponse(error=denied)
        return await self.elect_leaders(request)

    async def elect_leaders(
        self, request: broker_pb2.ElectLeadersRequest
    ) -> broker_pb2.ElectLeadersResponse:
        if len(request.partitions) > PARTITIONS_PER_MOVE_REQUEST_MAX:
            return broker_pb2.ElectLeadersResponse(
                error=error(
                    ErrorCode.POLICY_VIOLATION,
                    f"{len(request.partitions)} partitions in one request, above "
                    f"{PARTITIONS_PER_MOVE_REQUEST_MAX} (name none for every partition)",
                )
            )
        keys = [(p.topic, p.partition) for p in request.partitions] or None
        try:
            outcomes = await self.broker.controller.elect_leaders(keys, preferred=request.preferred)
        except ControllerError as exc:
            return broker_pb2.ElectLeadersResponse(error=error(exc.code, exc.message))
        return broker_pb2.ElectLeadersResponse(partitions=_partition_results(outcomes))

    @typed_errors(broker_pb2.CreatePartitionsResponse)
    async def CreatePartitions(
        self,
        request: broker_pb2.CreatePartitionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.CreatePartitionsResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.CreatePartitionsResponse(error=denied)
        return await self.create_partitions(request)

    async def create_partitions(
        self, request: broker_pb2.CreatePartitionsRequest
    ) -> broker_pb2.CreatePartitionsResponse:
        response = broker_pb2.CreatePartitionsResponse()
        if len(request.topics) > TOPICS_PER_CREATE_PARTITIONS_MAX:
            response.error.CopyFrom(
                error(
                    ErrorCode.POLICY_VIOLATION,
                    f"{len(request.topics)} topics in one request, above "
                    f"{TOPICS_PER_CREATE_PARTITIONS_MAX}",
                )
            )
            return response
        for topic in request.topics:
            try:
                result = await self.broker.controller.add_partitions(
                    topic.topic, topic.count, validate_only=request.validate_only
                )
            except ControllerError as exc:
                result = {"error": exc.code, "message": exc.message}
            response.topics.append(
                broker_pb2.TopicResult(name=topic.topic, error=result_error(result), topic_id=-1)
            )
        return response

    # ---- the quorum's voters (voter_admin.py; the forwarding broker authorized the caller) ----

    @typed_errors(broker_pb2.VoterChangeResponse)
    async def AddVoter(
        self, request: broker_pb2.AddVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.VoterChangeResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.VoterChangeResponse(error=denied)
        return await self.broker.voter_changes.answer_add(request)

    @typed_errors(broker_pb2.VoterChangeResponse)
    async def RemoveVoter(
        self, request: broker_pb2.RemoveVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.VoterChangeResponse:
        denied = self._not_a_broker(context)
        if denied is not None:
            return broker_pb2.VoterChangeResponse(error=denied)
        return await self.broker.voter_changes.answer_remove(request)

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
            return broker_pb2.CreateAclsResponse(error=error(ErrorCode.INVALID_REQUEST, str(exc)))
        result = await self._submit(CreateAcls(bindings))
        return broker_pb2.CreateAclsResponse(error=result_error(result))

    async def delete_acls(
        self, request: broker_pb2.DeleteAclsRequest
    ) -> broker_pb2.DeleteAclsResponse:
        try:
            filters = tuple(acl_filter_from_proto(f) for f in request.filters)
        except AclError as exc:
            return broker_pb2.DeleteAclsResponse(error=error(ErrorCode.INVALID_REQUEST, str(exc)))
        result = await self._submit(DeleteAcls(filters))
        response = broker_pb2.DeleteAclsResponse(error=result_error(result))
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
            return broker_pb2.UpsertUserResponse(error=error(ErrorCode.INVALID_REQUEST, str(exc)))
        result = await self._submit(UpsertScramCredential(request.user, credential))
        return broker_pb2.UpsertUserResponse(error=result_error(result))

    async def delete_user(
        self, request: broker_pb2.DeleteUserRequest
    ) -> broker_pb2.DeleteUserResponse:
        result = await self._submit(DeleteScramCredential(request.user))
        return broker_pb2.DeleteUserResponse(error=result_error(result))

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


def _partition_results(outcomes: list[list[Any]]) -> list[broker_pb2.PartitionResult]:
    """[topic, partition, code, message] rows (the state machine's) as PartitionResults."""
    return [
        broker_pb2.PartitionResult(
            topic=topic,
            partition=partition,
            error=error(ErrorCode(code), message) if code else None,
        )
        for topic, partition, code, message in outcomes
    ]
