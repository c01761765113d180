"""gRPC servicer of consumer groups: proto in, the group coordinator, proto out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raftlog.proto import common_pb2, group_pb2, group_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import Operation, ResourceType

from .auth import CLUSTER_RESOURCE, Principal
from .coordinator import OFFSETS_TOPIC, CoordinatorError
from .rpc_errors import denied, error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["GroupServicer"]

Context = Any  # grpc.aio.ServicerContext: unused, and untyped upstream


class GroupServicer(group_pb2_grpc.GroupCoordinatorServicer):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @property
    def coordinator(self) -> Any:
        return self.broker.coordinator

    def _group_denied(
        self, context: Context, operation: Operation, group_id: str
    ) -> tuple[Principal, common_pb2.Error | None]:
        """Kafka's group ACLs: READ to be a member or commit, DESCRIBE to look."""
        auth = self.broker.authorizer
        principal = auth.principal(context)
        if auth.allowed(principal, operation, ResourceType.GROUP, group_id):
            return principal, None
        return principal, denied(principal, operation.name, "group", group_id)

    def _topic_allowed(self, principal: Principal, operation: Operation, topic: str) -> bool:
        return self.broker.authorizer.allowed(principal, operation, ResourceType.TOPIC, topic)

    @typed_errors(group_pb2.FindCoordinatorResponse)
    async def FindCoordinator(
        self, request: group_pb2.FindCoordinatorRequest, context: Context
    ) -> group_pb2.FindCoordinatorResponse:
        _, denied = self._group_denied(context, Operation.DESCRIBE, request.group_id)
        if denied is not None:
            return group_pb2.FindCoordinatorResponse(error=denied)
        try:
            index = await self.coordinator.find(request.group_id)
        except CoordinatorError as exc:
            return group_pb2.FindCoordinatorResponse(error=error(exc.code, exc.message))
        with self.broker.store.read() as state:
            record = state.partitions.get((OFFSETS_TOPIC, index))
            leader = record.leader if record is not None else -1
            broker = state.brokers.get(leader)
            address = (
                self.broker.authorizer.listener_address(broker, context)
                if broker is not None
                else ""
            )
        if leader < 0 or not address:
            return group_pb2.FindCoordinatorResponse(
                error=error(
                    ErrorCode.COORDINATOR_NOT_AVAILABLE, f"offsets partition {index} is offline"
                )
            )
        return group_pb2.FindCoordinatorResponse(coordinator_id=leader, address=address)

    @typed_errors(group_pb2.JoinGroupResponse)
    async def JoinGroup(
        self, request: group_pb2.JoinGroupRequest, context: Context
    ) -> group_pb2.JoinGroupResponse:
        _, denied = self._group_denied(context, Operation.READ, request.group_id)
        if denied is not None:
            return group_pb2.JoinGroupResponse(error=denied)
        try:
            answer = await self.coordinator.join(
                request.group_id,
                request.member_id,
                request.client_id,
                request.session_timeout_ms or 10_000,
                request.rebalance_timeout_ms or 30_000,
                [(p.name, p.metadata) for p in request.protocols],
                request.group_instance_id,
            )
        except CoordinatorError as exc:
            return group_pb2.JoinGroupResponse(error=error(exc.code, exc.message))
        return group_pb2.JoinGroupResponse(
            generation=answer.generation,
            protocol=answer.protocol,
            leader_id=answer.leader_id,
            member_id=answer.member_id,
            members=[group_pb2.GroupMember(member_id=m, metadata=d) for m, d in answer.members],
        )

    @typed_errors(group_pb2.SyncGroupResponse)
    async def SyncGroup(
        self, request: group_pb2.SyncGroupRequest, context: Context
    ) -> group_pb2.SyncGroupResponse:
        _, denied = self._group_denied(context, Operation.READ, request.group_id)
        if denied is not None:
            return group_pb2.SyncGroupResponse(error=denied)
        try:
            assignment = await self.coordinator.sync(
                request.group_id,
                request.member_id,
                request.generation,
                [(a.member_id, a.metadata) for a in request.assignments],
                request.group_instance_id,
            )
        except CoordinatorError as exc:
            return group_pb2.SyncGroupResponse(error=error(exc.code, exc.message))
        return group_pb2.SyncGroupResponse(assignment=assignment)

    @typed_errors(group_pb2.HeartbeatResponse)
    async def Heartbeat(
        self, request: group_pb2.HeartbeatRequest, context: Context
    ) -> group_pb2.HeartbeatResponse:
        _, denied = self._group_denied(context, Operation.READ, request.group_id)
        if denied is not None:
            return group_pb2.HeartbeatResponse(error=denied)
        try:
            self.coordinator.heartbeat(
                request.group_id, request.member_id, request.generation, request.group_instance_id
            )
        except CoordinatorError as exc:
            return group_pb2.HeartbeatResponse(error=error(exc.code, exc.message))
        return group_pb2.HeartbeatResponse()

    @typed_errors(group_pb2.LeaveGroupResponse)
    async def LeaveGroup(
        self, request: group_pb2.LeaveGroupRequest, context: Context
    ) -> group_pb2.LeaveGroupResponse:
        _, denied = self._group_denied(context, Operation.READ, request.group_id)
        if denied is not None:
            return group_pb2.LeaveGroupResponse(error=denied)
        try:
            self.coordinator.leave(request.group_id, request.member_id, request.group_instance_id)
        except CoordinatorError as exc:
            return group_pb2.LeaveGroupResponse(error=error(exc.code, exc.message))
        return group_pb2.LeaveGroupResponse()

    @typed_errors(group_pb2.OffsetCommitResponse)
    async def OffsetCommit(
        self, request: group_pb2.OffsetCommitRequest, context: Context
    ) -> group_pb2.OffsetCommitResponse:
        principal, denied = self._group_denied(context, Operation.READ, request.group_id)
        if denied is not None:
            return group_pb2.OffsetCommitResponse(error=denied)
        offsets = [(o.topic, o.partition, o.offset, o.metadata) for o in request.offsets]
        for o in request.offsets:
            if not self._topic_allowed(principal, Operation.READ, o.topic):
                return group_pb2.OffsetCommitResponse(
                    error=error(
                        ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                        f"{principal.name} is not allowed READ on topic {o.topic}",
                    )
                )
        try:
            await self.coordinator.commit(
                request.group_id,
                request.member_id,
                request.generation,
                offsets,
                request.group_instance_id,
            )
        except CoordinatorError as exc:
            return group_pb2.OffsetCommitResponse(error=error(exc.code, exc.message))
        return group_pb2.OffsetCommitResponse(
            offsets=[  # the broker's own result per partition, never an echo of the request
                group_pb2.CommittedOffset(
                    topic=o.topic, partition=o.partition, offset=o.offset, metadata=o.metadata
                )
                for o in request.offsets
            ]
        )

    @typed_errors(group_pb2.OffsetFetchResponse)
    async def OffsetFetch(
        self, request: group_pb2.OffsetFetchRequest, context: Context
    ) -> group_pb2.OffsetFetchResponse:
        principal, denied = self._group_denied(context, Operation.DESCRIBE, request.group_id)
        if denied is not None:
            return group_pb2.OffsetFetchResponse(error=denied)
        wanted = [(p.topic, p.partition) for p in request.partitions] or None
        try:
            found = await self.coordinator.fetch_settled(request.group_id, wanted)
        except CoordinatorError as exc:
            return group_pb2.OffsetFetchResponse(error=error(exc.code, exc.message))
        return group_pb2.OffsetFetchResponse(
            offsets=[
                group_pb2.CommittedOffset(topic=t, partition=p, offset=o, metadata=m)
                for (t, p), (o, m) in sorted(found.items())
                if self._topic_allowed(principal, Operation.DESCRIBE, t)
            ]
        )

    @typed_errors(group_pb2.ListGroupsResponse)
    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: Context
    ) -> group_pb2.ListGroupsResponse:
        auth = self.broker.authorizer
        principal = auth.principal(context)
        everything = auth.allowed(
            principal, Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE
        )
        return group_pb2.ListGroupsResponse(
            coordinator_id=self.broker.config.node_id,
            groups=[
                group_pb2.GroupListing(group_id=g, state=s, members=n)
                for g, s, n in self.coordinator.groups()
                if everything or auth.allowed(principal, Operation.DESCRIBE, ResourceType.GROUP, g)
            ],
        )

    @typed_errors(group_pb2.DescribeGroupResponse)
    async def DescribeGroup(
        self, request: group_pb2.DescribeGroupRequest, context: Context
    ) -> group_pb2.DescribeGroupResponse:
        _, denied = self._group_denied(context, Operation.DESCRIBE, request.group_id)
        if denied is not None:
            return group_pb2.DescribeGroupResponse(error=denied)
        try:
            found = self.coordinator.describe(request.group_id)
        except CoordinatorError as exc:
            return group_pb2.DescribeGroupResponse(error=error(exc.code, exc.message))
        return group_pb2.DescribeGroupResponse(
            state=found["state"],
            generation=found["generation"],
            protocol=found["protocol"],
            leader_id=found["leader_id"],
            members=[
                group_pb2.MemberDescription(
                    member_id=m,
                    client_id=c,
                    assignment=a,
                    last_heartbeat_ms_ago=ago,
                    group_instance_id=instance,
                )
                for m, c, a, ago, instance in found["members"]
            ],
        )

    @typed_errors(group_pb2.DeleteGroupsResponse)
    async def DeleteGroups(
        self, request: group_pb2.DeleteGroupsRequest, context: Context
    ) -> group_pb2.DeleteGroupsResponse:
        results = []
        for group_id in dict.fromkeys(request.group_ids):  # each once, in the asked order
            _, refused = self._group_denied(context, Operation.DELETE, group_id)
            if refused is None:
                try:
                    await self.coordinator.delete(group_id)
                except CoordinatorError as exc:
                    refused = error(exc.code, exc.message)
            results.append(group_pb2.DeletedGroup(group_id=group_id, error=refused))
        return group_pb2.DeleteGroupsResponse(results=results)
