"""The Broker service's read-only view of the cluster: Metadata and the describe calls.

Metadata (brokers, topics, partition leaders and ISRs) comes from this broker's applied metadata,
or from newer partition states it heard from the controller through a relay (``newest_known``);
DescribeReplicas shows this broker's own replicas, DescribeConfigs a topic's effective configs,
DescribeQuorum the metadata quorum as this voter sees it. Nothing here is forwarded to the
controller. Part of ``BrokerServicer`` (``broker_servicer.py``); runs on the broker loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import Operation, ResourceType
from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord, TopicPartition
from raftlog.raft.topic_config import TOPIC_CONFIGS, effective_configs

from .auth import CLUSTER_RESOURCE
from .rpc_errors import denied, error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["MetadataRpcs", "newest_known"]


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


class MetadataRpcs(broker_pb2_grpc.BrokerServicer):
    """The metadata and describe methods of ``BrokerServicer``."""

    broker: Broker

    @typed_errors(broker_pb2.MetadataResponse)
    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.MetadataResponse:
        broker = self.broker
        auth = broker.authorizer
        principal = auth.principal(context)
        response = broker_pb2.MetadataResponse(controller_id=broker.controller_id())
        known = broker.listener.record  # newer than the store when heard through a relay
        cut_off, me = broker.replicas.cut_off is not None, broker.config.node_id
        with broker.store.read() as state:
            response.metadata_version = state.version
            for b in sorted(state.brokers.values(), key=lambda b: b.broker_id):
                response.brokers.append(
                    broker_pb2.BrokerMetadata(
                        broker_id=b.broker_id,
                        address=auth.listener_address(b, context),
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
                            name=name, error=denied(principal, "DESCRIBE", "topic", name)
                        )
                    )
                    continue
                topic = state.topics.get(name)
                if topic is None:
                    response.topics.append(
                        broker_pb2.TopicMetadata(
                            name=name,
                            error=error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"),
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
                    leader = record.leader
                    if cut_off and leader == me:
                        # cut off from the controller for a session: it has fenced us and moved
                        # our leaderships, so send clients to ask a broker that knows
                        leader = NO_LEADER
                    entry.partitions.append(
                        broker_pb2.PartitionMetadata(
                            partition=record.partition,
                            error=error()
                            if leader != NO_LEADER
                            else error(ErrorCode.LEADER_NOT_AVAILABLE, "no live in-sync replica"),
                            leader=leader,
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
                error=denied(principal, "DESCRIBE", "cluster", CLUSTER_RESOURCE)
            )
        now = broker.clock_ms()
        response = broker_pb2.DescribeReplicasResponse(
            broker_id=broker.config.node_id,
            metadata_version=broker.store.version,
            rates=broker.metrics.rates(),
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
                            name=name, error=denied(principal, "DESCRIBE_CONFIGS", "topic", name)
                        )
                    )
                    continue
                topic = state.topics.get(name)
                if topic is None:
                    response.topics.append(
                        broker_pb2.TopicConfigs(
                            name=name, error=error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name)
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
                error=denied(principal, "DESCRIBE", "cluster", CLUSTER_RESOURCE)
            )
        status = self.broker.quorum.status()
        response = broker_pb2.DescribeQuorumResponse(
            leader_id=status.leader_id if status.leader_id is not None else -1,
            term=status.term,
            commit_index=status.commit_index,
            last_applied=status.last_applied,
            responder_id=self.broker.config.node_id,
        )
        with self.broker.store.read() as state:
            joining = state.joining_voter
        response.joining_voter = -1 if joining is None else joining.node_id
        for member in self.broker.current_voters():
            response.members.append(
                broker_pb2.QuorumVoter(
                    node_id=member.node_id,
                    raft_address=member.raft_address,
                    grpc_address=member.grpc_address,
                )
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
