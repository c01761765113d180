"""Reading the brokers' Metadata answers without a cluster: the most up-to-date answer names the
controller, the highest leader epoch names each partition's leader (chaos/probes.py)."""

from __future__ import annotations

from raftlog.chaos.probes import controller_of, leaders_of
from raftlog.proto import broker_pb2

NODES = {1, 2, 3}


def answer(
    controller: int = -1, version: int = 0, leaders: dict[int, tuple[int, int]] | None = None
) -> broker_pb2.MetadataResponse:
    """One broker's answer; ``leaders``: partition of topic "t" → (leader, leader epoch)."""
    partitions = [
        broker_pb2.PartitionMetadata(partition=p, leader=leader, leader_epoch=epoch)
        for p, (leader, epoch) in (leaders or {}).items()
    ]
    return broker_pb2.MetadataResponse(
        controller_id=controller,
        metadata_version=version,
        topics=[broker_pb2.TopicMetadata(name="t", partitions=partitions)],
    )


def test_the_highest_metadata_version_names_the_controller() -> None:
    stale, fresh = answer(controller=1, version=7), answer(controller=2, version=9)
    assert controller_of([stale, fresh], NODES) == 2
    assert controller_of([fresh, stale], NODES) == 2


def test_no_controller_when_none_is_named_or_it_is_not_ours() -> None:
    assert controller_of([], NODES) is None
    assert controller_of([answer(controller=-1, version=5)], NODES) is None
    assert controller_of([answer(controller=9, version=5)], NODES) is None
    # an answer without a controller never outranks one with it, whatever its version
    assert controller_of([answer(-1, 99), answer(3, 1)], NODES) == 3


def test_per_partition_the_highest_leader_epoch_names_the_leader() -> None:
    isolated = answer(leaders={0: (1, 4), 1: (1, 2)})  # node 1 still believes it leads both
    current = answer(leaders={0: (2, 5), 1: (1, 2)})
    assert leaders_of([isolated, current], NODES) == {1, 2}
    assert leaders_of([current, isolated], NODES) == {1, 2}
    assert leaders_of([answer(leaders={0: (2, 5)}), isolated], NODES) == {1, 2}
    assert leaders_of([answer(leaders={0: (2, 5)}), answer(leaders={0: (1, 4)})], NODES) == {2}


def test_offline_partitions_and_unknown_nodes_lead_nothing() -> None:
    assert leaders_of([answer(leaders={0: (-1, 3)})], NODES) == frozenset()
    assert leaders_of([answer(leaders={0: (7, 3)})], NODES) == frozenset()
    assert leaders_of([], NODES) == frozenset()
