"""Moving partitions, the Broker service's side: authorize, then hand to the controller.

``raftlog partition reassign`` (AlterPartitionReassignments), ``raftlog broker drain``
(DrainBroker), ``raftlog leader elect`` (ElectLeaders) and ``raftlog topic add-partitions``
(CreatePartitions) change the cluster: ALTER on the cluster (CreatePartitions: ALTER on the topic,
as Kafka), then the active controller carries them out (``controller_service.py``; forwarded like
every admin call, ``admin_rpcs.py``). ListPartitionReassignments needs DESCRIBE on the cluster and
is answered by the controller too: its metadata holds a move it has just started, which another
broker may not have applied yet. On a plaintext cluster nobody is checked. Part of
``BrokerServicer``; runs on the broker loop.
"""

from __future__ import annotations

from typing import Any

import grpc

from raftlog.proto import broker_pb2
from raftlog.raft.acl import Operation

from .admin_rpcs import AdminRpcs
from .controller_servicer import ControllerServicer
from .rpc_errors import typed_errors

__all__ = ["PartitionAdminRpcs"]


class PartitionAdminRpcs(AdminRpcs):
    """The partition-moving methods of ``BrokerServicer``."""

    @typed_errors(broker_pb2.AlterPartitionReassignmentsResponse)
    async def AlterPartitionReassignments(
        self,
        request: broker_pb2.AlterPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.AlterPartitionReassignmentsResponse:
        refusal = self._cluster_refusal(context, Operation.ALTER)
        if refusal is not None:
            return broker_pb2.AlterPartitionReassignmentsResponse(error=refusal)
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.alter_partition_reassignments(request),
            lambda stub: stub.AlterPartitionReassignments(request, timeout=60),
            lambda e: broker_pb2.AlterPartitionReassignmentsResponse(error=e),
        )

    @typed_errors(broker_pb2.DrainBrokerResponse)
    async def DrainBroker(
        self, request: broker_pb2.DrainBrokerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.DrainBrokerResponse:
        refusal = self._cluster_refusal(context, Operation.ALTER)
        if refusal is not None:
            return broker_pb2.DrainBrokerResponse(error=refusal)
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.drain_broker(request),
            lambda stub: stub.DrainBroker(request, timeout=60),
            lambda e: broker_pb2.DrainBrokerResponse(error=e),
        )

    @typed_errors(broker_pb2.ElectLeadersResponse)
    async def ElectLeaders(
        self, request: broker_pb2.ElectLeadersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.ElectLeadersResponse:
        refusal = self._cluster_refusal(context, Operation.ALTER)
        if refusal is not None:
            return broker_pb2.ElectLeadersResponse(error=refusal)
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.elect_leaders(request),
            lambda stub: stub.ElectLeaders(request, timeout=60),
            lambda e: broker_pb2.ElectLeadersResponse(error=e),
        )

    @typed_errors(broker_pb2.CreatePartitionsResponse)
    async def CreatePartitions(
        self,
        request: broker_pb2.CreatePartitionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.CreatePartitionsResponse:
        topics, refused = self._topics_allowed(
            context, request.topics, lambda t: t.topic, Operation.ALTER
        )
        allowed = broker_pb2.CreatePartitionsRequest(
            validate_only=request.validate_only, topics=topics
        )
        if not allowed.topics:
            return broker_pb2.CreatePartitionsResponse(topics=refused)
        controller = ControllerServicer(self.broker)
        response: broker_pb2.CreatePartitionsResponse = await self._forward(
            lambda: controller.create_partitions(allowed),
            lambda stub: stub.CreatePartitions(allowed, timeout=30),
            lambda e: broker_pb2.CreatePartitionsResponse(error=e),
        )
        response.topics.extend(refused)
        return response

    @typed_errors(broker_pb2.ListPartitionReassignmentsResponse)
    async def ListPartitionReassignments(
        self,
        request: broker_pb2.ListPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> broker_pb2.ListPartitionReassignmentsResponse:
        refusal = self._cluster_refusal(context, Operation.DESCRIBE)
        if refusal is not None:
            return broker_pb2.ListPartitionReassignmentsResponse(error=refusal)
        controller = ControllerServicer(self.broker)
        return await self._forward(
            lambda: controller.list_partition_reassignments(request),
            lambda stub: stub.ListPartitionReassignments(request, timeout=10),
            lambda e: broker_pb2.ListPartitionReassignmentsResponse(error=e),
        )
