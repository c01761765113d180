"""Consumer-group administration for ``Admin``: list, describe (members, committed offsets, end
offsets, lag), reset an empty group's offsets, delete empty groups — kafka-consumer-groups'
jobs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from raftlog.proto import broker_pb2, group_pb2, group_pb2_grpc
from raftlog.proto.errors import RaftlogError, error_for, raise_for

from .assignors import decode_assignment
from .consumer import Consumer
from .group import find_coordinator
from .metadata import ClusterMetadata

__all__ = ["GroupAdmin", "GroupDescription", "GroupOffset"]


@dataclass(frozen=True, slots=True)
class GroupOffset:
    topic: str
    partition: int
    committed: int  # -1: none
    end_offset: int  # the high watermark; -1: unknown
    lag: int  # end - committed; -1: unknown
    member_id: str  # who holds it now ("" when nobody)


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    generation: int
    protocol: str
    leader_id: str
    coordinator_id: int
    members: tuple[tuple[str, str, tuple[tuple[str, int], ...]], ...]  # id, client, partitions
    offsets: tuple[GroupOffset, ...]
    instances: Mapping[str, str] = field(default_factory=dict)  # static member id → instance id


class GroupAdmin:
    """Group calls for ``Admin`` (a mixin: needs ``metadata``, ``_call`` and ``timeout_s``)."""

    metadata: ClusterMetadata
    timeout_s: float

    def _coordinator(self, group_id: str) -> tuple[int, group_pb2_grpc.GroupCoordinatorStub]:
        found = find_coordinator(self.metadata, group_id, self.timeout_s)
        stub = group_pb2_grpc.GroupCoordinatorStub(self.metadata.channel(found.address))
        return found.coordinator_id, stub

    def list_groups(self) -> list[tuple[str, str, int]]:
        """(group id, state, members) of every group, asked of every broker."""
        self.metadata.refresh()
        out: dict[str, tuple[str, str, int]] = {}
        for address in self.metadata.brokers().values():
            stub = group_pb2_grpc.GroupCoordinatorStub(self.metadata.channel(address))
            try:
                answer = stub.ListGroups(group_pb2.ListGroupsRequest(), timeout=5)
            except grpc.RpcError:
                continue
            for g in answer.groups:
                out[g.group_id] = (g.group_id, g.state, g.members)
        return sorted(out.values())

    def describe_group(self, group_id: str) -> GroupDescription:
        coordinator_id, stub = self._coordinator(group_id)
        described = stub.DescribeGroup(
            group_pb2.DescribeGroupRequest(group_id=group_id), timeout=10
        )
        state, generation, protocol, leader = "Dead", -1, "", ""
        members: list[tuple[str, str, tuple[tuple[str, int], ...]]] = []
        instances: dict[str, str] = {}
        owners: dict[tuple[str, int], str] = {}
        if described.error.code == 0:
            state, generation = described.state, described.generation
            protocol, leader = described.protocol, described.leader_id
            for m in described.members:
                parts = tuple(decode_assignment(m.assignment)) if m.assignment else ()
                members.append((m.member_id, m.client_id, parts))
                if m.group_instance_id:
                    instances[m.member_id] = m.group_instance_id
                for tp in parts:
                    owners[tp] = m.member_id
        fetched = stub.OffsetFetch(group_pb2.OffsetFetchRequest(group_id=group_id), timeout=10)
        raise_for(fetched.error)
        committed = {(o.topic, o.partition): o.offset for o in fetched.offsets}
        keys = sorted(set(committed) | set(owners))
        ends = self._end_offsets(keys)
        offsets = tuple(
            GroupOffset(
                t,
                p,
                committed.get((t, p), -1),
                ends.get((t, p), -1),
                ends[(t, p)] - committed[(t, p)]
                if (t, p) in ends and committed.get((t, p), -1) >= 0
                else -1,
                owners.get((t, p), ""),
            )
            for t, p in keys
        )
        return GroupDescription(
            group_id,
            state,
            generation,
            protocol,
            leader,
            coordinator_id,
            tuple(members),
            offsets,
            instances,
        )

    def _end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        out = {}
        topics = sorted({t for t, _ in partitions})
        if topics:
            self.metadata.refresh(topics)
        for t, p in partitions:
            found = self.metadata.leader_address(t, p)
            if found is None:
                continue
            try:
                answer = self.metadata.stub(found[1]).ListOffsets(
                    broker_pb2.ListOffsetsRequest(
                        replica_id=-1,
                        partitions=[
                            broker_pb2.ListOffsetsPartition(
                                topic=t, partition=p, timestamp=-1, current_leader_epoch=-1
                            )
                        ],
                    ),
                    timeout=5,
                )
            except grpc.RpcError:
                continue
            if answer.partitions and answer.partitions[0].error.code == 0:
                out[(t, p)] = answer.partitions[0].offset
        return out

    def reset_group_offsets(
        self, group_id: str, topic: str, *, to: str = "earliest", offset: int | None = None
    ) -> dict[tuple[str, int], int]:
        """Point an *empty* group's committed offsets of ``topic`` at earliest, latest or a
        fixed offset (Kafka's kafka-consumer-groups --reset-offsets)."""
        description = self.describe_group(group_id)
        if description.members:
            raise error_for(
                "NON_EMPTY_GROUP",
                f"group {group_id} has {len(description.members)} member(s): stop them first",
            )
        count = self.metadata.partition_count(topic, wait_s=2.0)
        partitions = [(topic, p) for p in range(count)]
        if to == "offset":
            if offset is None or offset < 0:
                raise ValueError("--to-offset needs an offset >= 0")
            targets = dict.fromkeys(partitions, offset)
        else:
            with Consumer(
                ",".join(self.metadata.bootstrap), security=self.metadata.security
            ) as consumer:
                lookup = consumer.end_offsets if to == "latest" else consumer.beginning_offsets
                targets = lookup(partitions)
        _, stub = self._coordinator(group_id)
        answer = stub.OffsetCommit(
            group_pb2.OffsetCommitRequest(
                group_id=group_id,
                member_id="",
                generation=-1,
                offsets=[
                    group_pb2.CommittedOffset(topic=t, partition=p, offset=o)
                    for (t, p), o in sorted(targets.items())
                ],
            ),
            timeout=self.timeout_s,
        )
        raise_for(answer.error)
        return targets

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, RaftlogError | None]:
        """Delete empty groups and their committed offsets (kafka-consumer-groups --delete):
        each group at its coordinator, retried on retriable answers (a coordinator moving or
        loading) for up to ``timeout_s``. Per group: None when deleted, else the error
        (NonEmptyGroupError while it has members, GroupIdNotFoundError, an authorization
        failure…)."""
        out: dict[str, RaftlogError | None] = {}
        for group_id in dict.fromkeys(group_ids):
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    _, stub = self._coordinator(group_id)
                    answer = stub.DeleteGroups(
                        group_pb2.DeleteGroupsRequest(group_ids=[group_id]),
                        timeout=self.timeout_s,
                    )
                    raise_for(answer.error)
                    result = answer.results[0].error if answer.results else None
                    raise_for(result)
                    out[group_id] = None
                    break
                except RaftlogError as exc:
                    if not exc.retriable or time.monotonic() >= deadline:
                        out[group_id] = exc
                        break
                time.sleep(0.1)
        return out
