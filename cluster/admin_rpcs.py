"""The Broker service's admin calls: authorized here, carried out by the active controller.

Any broker takes an admin call: it checks the caller's ACLs, then hands what is allowed to the
controller — carried out here when this broker is it, forwarded otherwise (one hop over the
Controller service, ``controller_servicer.py``; NOT_CONTROLLER when none is known or it cannot
be reached, which clients retry). Topics (create, delete, alter configs), the cluster's brokers
(DescribeCluster), ACLs and SCRAM users; ACL and user changes need ALTER on the cluster, and
on a plaintext cluster they answer SECURITY_DISABLED. WhoAmI, DescribeAcls and DescribeUsers
are answered from this broker's metadata. Part of ``BrokerServicer`` (``broker_servicer.py``);
runs on the broker loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from raftlog.proto import broker_pb2, broker_pb2_grpc, common_pb2, controller_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import AclError, Operation, ResourceType

from .auth import CLUSTER_RESOURCE
from .controller_servicer import ControllerServicer, acl_filter_from_proto, acl_to_proto
from .rpc_errors import denied, error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["AdminRpcs"]

R = TypeVar("R")
T = TypeVar("T")


class AdminRpcs(broker_pb2_grpc.BrokerServicer):
    """The admin and security methods of ``BrokerServicer``."""

    broker: Broker

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
            return failed(error(ErrorCode.NOT_CONTROLLER, "no active controller is known yet"))
        try:
            return await remote(stub)
        except grpc.aio.AioRpcError as exc:
            return failed(
                error(ErrorCode.NOT_CONTROLLER, f"the controller is unreachable: {exc.code()}")
            )

    def _topics_allowed(
        self,
        context: Any,
        items: Iterable[T],
        name_of: Callable[[T], str],
        operation: Operation,
    ) -> tuple[list[T], list[broker_pb2.TopicResult]]:
        """(the items whose topic the caller may ``operation``, a refusal for each other)."""
        auth = self.broker.authorizer
        principal = auth.principal(context)
        allowed, refused = [], []
        for item in items:
            name = name_of(item)
            if (
                auth.may_create_topic(principal, name)
                if operation is Operation.CREATE
                else auth.topic_write_allowed(principal, name, operation)
            ):
                allowed.append(item)
            else:
                error = denied(principal, operation.name, "topic", name)
                refused.append(broker_pb2.TopicResult(name=name, error=error, topic_id=-1))
        return allowed, refused

    @typed_errors(broker_pb2.CreateTopicsResponse)
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.CreateTopicsResponse:
        topics, refused = self._topics_allowed(
            context, request.topics, lambda t: t.name, Operation.CREATE
        )
        allowed = broker_pb2.CreateTopicsRequest(validate_only=request.validate_only, topics=topics)
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
        names, refused = self._topics_allowed(
            context, request.names, lambda name: name, Operation.DELETE
        )
        allowed = broker_pb2.DeleteTopicsRequest(names=names)
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
                error=denied(principal, "ALTER_CONFIGS", "topic", request.topic)
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
                    status.address = auth.listener_address(record, context)
        return response

    # ---- security ------------------------------------------------------------------------------

    def _cluster_refusal(self, context: Any, operation: Operation) -> common_pb2.Error | None:
        """None when the caller may ``operation`` the cluster (anyone on a plaintext cluster):
        moving partitions, changing voters."""
        auth = self.broker.authorizer
        if not auth.enabled:
            return None
        principal = auth.principal(context)
        if auth.allowed(principal, operation, ResourceType.CLUSTER, CLUSTER_RESOURCE):
            return None
        return denied(principal, operation.name, "cluster", CLUSTER_RESOURCE)

    def _cluster_denied(self, context: Any, operation: Operation) -> common_pb2.Error | None:
        auth = self.broker.authorizer
        if not auth.enabled:
            return error(
                ErrorCode.SECURITY_DISABLED, "the cluster runs plaintext: no principals or ACLs"
            )
        principal = auth.principal(context)
        if auth.allowed(principal, operation, ResourceType.CLUSTER, CLUSTER_RESOURCE):
            return None
        return denied(principal, operation.name, "cluster", CLUSTER_RESOURCE)

    async def _security_change(
        self, context: Any, request: Any, local: str, remote: str, response: Callable[..., R]
    ) -> R:
        """An ACL or user change: ALTER on the cluster, then carried out by the controller."""
        refusal = self._cluster_denied(context, Operation.ALTER)
        if refusal is not None:
            return response(error=refusal)
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
        refusal = self._cluster_denied(context, Operation.DESCRIBE)
        if refusal is not None:
            return broker_pb2.DescribeAclsResponse(error=refusal)
        try:
            wanted = acl_filter_from_proto(request.filter)
        except AclError as exc:
            return broker_pb2.DescribeAclsResponse(error=error(ErrorCode.INVALID_REQUEST, str(exc)))
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
        refusal = self._cluster_denied(context, Operation.DESCRIBE)
        if refusal is not None:
            return broker_pb2.DescribeUsersResponse(error=refusal)
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
