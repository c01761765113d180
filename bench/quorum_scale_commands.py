"""The metadata commands of the scale benchmark (``bench/quorum_scale.py``), built from a state:
simulated brokers, topics created as the controller creates them, AlterPartition commands that
each apply cleanly, and what heals a state back to its freshly created shape. Pure: applied in
process by the parent and submitted through a quorum by its voters (``quorum_scale_voter``).
"""

from __future__ import annotations

import cbor2

from raftlog.raft.assignment import assign_replicas
from raftlog.raft.commands import (
    AlterPartition,
    Command,
    CreateTopic,
    ElectLeader,
    RegisterBroker,
    UnfenceBroker,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import NO_LEADER

from .common import require

__all__ = [
    "INCARNATION",
    "alter_commands",
    "broker_commands",
    "count_label",
    "create_topic_command",
    "heal_commands",
    "refusal",
    "topic_name",
    "unhealthy_partitions",
]

INCARNATION = 1  # every simulated broker registers once
ELECT_CHUNK = 1000  # partitions per ElectLeader (the controller's own batch size)


def refusal(result: bytes) -> str | None:
    """What the metadata state machine refused, from a command's result; None when it applied."""
    answer = cbor2.loads(result)
    return repr(answer) if "error" in answer else None


def count_label(count: int) -> str:
    """``100000`` → ``"100k"``, ``2500`` → ``"2500"``: the suffix of size-dependent keys."""
    return f"{count // 1000}k" if count % 1000 == 0 and count >= 1000 else str(count)


def topic_name(index: int) -> str:
    return f"scale-{index:05d}"


def broker_commands(brokers: int) -> list[Command]:
    """Register and unfence brokers 1..brokers (incarnation 1, no racks)."""
    out: list[Command] = []
    for b in range(1, brokers + 1):
        out.append(RegisterBroker(b, f"127.0.0.1:{19000 + b}", INCARNATION))
        out.append(UnfenceBroker(b, INCARNATION))
    return out


def create_topic_command(
    state: MetadataState, name: str, partitions: int, replication_factor: int
) -> CreateTopic:
    """A CreateTopic prepared as ``ActiveController.create_topic`` prepares it, less its limit
    checks (per-broker replica cap, config validation)."""
    live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
    counts = state.leader_counts()
    assignment = assign_replicas(live, partitions, replication_factor, leader_counts=counts)
    return CreateTopic(name, tuple(assignment))


def alter_commands(state: MetadataState, count: int) -> list[AlterPartition]:
    """``count`` AlterPartition commands that each apply cleanly, in this order, to ``state``.

    They cycle over the first ``max(1, count // 2)`` led partitions with RF > 1: a partition
    whose ISR is full loses its last follower, any other gets its full replica list back; each
    names the leader, its leader epoch and the partition epoch the previous command left.
    """
    records = [
        r for r in state.partitions.values() if r.leader != NO_LEADER and len(r.replicas) > 1
    ]
    require(bool(records), "AlterPartition needs a led partition with RF > 1")
    chosen = records[: max(1, min(len(records), count // 2))]
    isr = {r.key: r.isr for r in chosen}
    epoch = {r.key: r.partition_epoch for r in chosen}
    out: list[AlterPartition] = []
    for i in range(count):
        record = chosen[i % len(chosen)]
        current = isr[record.key]
        if set(current) == set(record.replicas):
            follower = [b for b in current if b != record.leader][-1]
            wanted = tuple(b for b in current if b != follower)
        else:
            wanted = record.replicas
        out.append(
            AlterPartition(
                record.topic,
                record.partition,
                record.leader,
                record.leader_epoch,
                epoch[record.key],
                wanted,
            )
        )
        epoch[record.key] += 1
        isr[record.key] = wanted
    return out


def heal_commands(state: MetadataState) -> list[Command]:
    """What brings ``state`` back to its freshly created shape, in log order: unfence every
    fenced broker, expand every led partition's ISR back to its replicas, then preferred
    elections. A partition that was offline is elected by the unfence, which changes its
    epochs: its expansion waits for the next round (the caller repeats until healthy)."""
    unfence: list[Command] = [
        UnfenceBroker(b.broker_id, b.incarnation) for b in state.brokers.values() if b.fenced
    ]
    expand: list[Command] = []
    moved: list[tuple[str, int]] = []
    for record in state.partitions.values():
        if record.leader != NO_LEADER and record.isr != record.replicas:
            expand.append(  # the leader's epochs are unchanged by the unfences before it
                AlterPartition(
                    record.topic,
                    record.partition,
                    record.leader,
                    record.leader_epoch,
                    record.partition_epoch,
                    record.replicas,
                )
            )
        if record.leader != record.replicas[0]:
            moved.append(record.key)
    elect: list[Command] = [
        ElectLeader(tuple(moved[i : i + ELECT_CHUNK]), preferred=True)
        for i in range(0, len(moved), ELECT_CHUNK)
    ]
    return unfence + expand + elect


def unhealthy_partitions(state: MetadataState) -> int:
    """Partitions not in their freshly created shape (ISR = replicas, preferred leader)."""
    return sum(
        1 for r in state.partitions.values() if r.isr != r.replicas or r.leader != r.replicas[0]
    )
