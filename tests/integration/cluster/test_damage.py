"""Damaged replicas repair themselves from a healthy one (issue: disk faults on a minority).

Each test damages one replica's log — a flipped bit, a rolled segment cut at a batch boundary
(a gap), a bit flipped under a running leader — and checks that the damage is found (at start-up
or on the read), that no acknowledged record is lost or skipped for consumers, and that in the
end every replica holds the same intact batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftlog.client import Admin, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.segments import Log, iter_batches
from raftlog.segments.clock import SYSTEM_CLOCK

from ..conftest import ClusterFactory
from .test_data_plane import FAST, consume_all, wait_until

pytestmark = pytest.mark.integration

TOPIC = "d"
SMALL_SEGMENTS = {"segment.bytes": "4096"}


def partition_dir(cluster: LocalCluster, node_id: int) -> Path:
    return cluster.dir / f"node{node_id}" / "logs" / f"{TOPIC}-0"


def rolled_segments(cluster: LocalCluster, node_id: int) -> list[Path]:
    return sorted(partition_dir(cluster, node_id).glob("*.log"))[:-1]


def batch_positions(segment: Path) -> list[tuple[int, int]]:
    """(position, size) of each batch in a segment file."""
    data = segment.read_bytes()
    return [(pos, h.size_bytes) for pos, h in iter_batches(data, verify_crc=False)]


def flip_bit(segment: Path) -> None:
    """Flip one bit in the payload of the middle batch (covered by its CRC)."""
    position, size = batch_positions(segment)[len(batch_positions(segment)) // 2]
    at = position + size - 3
    with open(segment, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))
        f.flush()
        os.fsync(f.fileno())


def cut_at_boundary(segment: Path) -> None:
    """Cut a rolled segment exactly after its first batch: a gap before the next segment."""
    position, size = batch_positions(segment)[0]
    os.truncate(segment, position + size)


def produce(cluster: LocalCluster, count: int) -> list[tuple[int, bytes]]:
    """Send ``count`` records one by one; (offset, value) of each as acknowledged."""
    with Producer(
        cluster.bootstrap,
        linger_ms=0,
        request_timeout_ms=3000,
        delivery_timeout_ms=15_000,
        security=cluster.security,
    ) as p:
        sent = [f"v{i:05d}".encode() * 4 for i in range(count)]
        return [(p.send(TOPIC, value).result(15).offset, value) for value in sent]


def read_back(got: list) -> list[tuple[int, bytes]]:  # type: ignore[type-arg]
    return sorted((r.offset, r.value) for r in got)


def assert_replicas_agree(cluster: LocalCluster, acked: list[tuple[int, bytes]]) -> None:
    """Stop everything and compare the logs byte for byte (stamped batches, offsets)."""
    cluster.down()
    contents = {}
    for node_id in cluster.nodes:
        with Log(str(partition_dir(cluster, node_id)), clock=SYSTEM_CLOCK) as log_:
            assert log_.verify() is None, f"node {node_id} still damaged"
            assert log_.log_end_offset >= len(acked), f"node {node_id} misses records"
            chunks, offset = [], log_.log_start_offset
            while offset < len(acked):
                result = log_.read(offset, 1 << 20, max_offset=len(acked))
                chunks.append(result.data)
                offset = result.next_offset
            contents[node_id] = b"".join(chunks)
    assert len(set(contents.values())) == 1, "replicas hold different batches"


def start_with_damage(make_cluster: ClusterFactory, damage: str) -> None:
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic(TOPIC, 1, 3, min_insync_replicas=2, configs=SMALL_SEGMENTS)
    acked = produce(cluster, 400)
    state = admin.describe_topic(TOPIC).partitions[0]
    victim = state.leader if damage == "bitflip" else state.replicas[-1]
    wait_until(lambda: len(admin.describe_topic(TOPIC).partitions[0].isr) == 3, what="full ISR")
    cluster.kill(victim)
    segments = rolled_segments(cluster, victim)
    assert len(segments) >= 3
    target = segments[len(segments) // 2]
    if damage == "bitflip":
        flip_bit(target)
    else:
        cut_at_boundary(target)
    cluster.start(victim)
    # it found the damage at start-up, cut its log there, and caught up from the leader
    wait_until(
        lambda: "damaged log" in cluster.log_path(victim).read_text(errors="replace"),
        what="the damage found at start-up",
    )
    wait_until(
        lambda: victim in admin.describe_topic(TOPIC).partitions[0].isr,
        timeout_s=30,
        what="the repaired replica back in the ISR",
    )
    got = consume_all(cluster.bootstrap, TOPIC, len(acked), security=cluster.security)
    assert read_back(got) == acked  # every acknowledged value at its offset, nothing else
    admin.close()
    assert_replicas_agree(cluster, acked)


def test_a_flipped_bit_in_a_rolled_segment_is_found_at_startup_and_repaired(
    make_cluster: ClusterFactory,
) -> None:
    start_with_damage(make_cluster, "bitflip")


def test_a_gap_at_a_batch_boundary_is_found_at_startup_and_repaired(
    make_cluster: ClusterFactory,
) -> None:
    start_with_damage(make_cluster, "gap")


def test_a_bad_crc_under_a_running_leader_moves_leadership_and_repairs(
    make_cluster: ClusterFactory,
) -> None:
    """Latent corruption: a consumer's read hits it; the leader steps down, an intact replica
    serves every record, and the damaged one refetches the range."""
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic(TOPIC, 1, 3, min_insync_replicas=2, configs=SMALL_SEGMENTS)
    acked = produce(cluster, 400)
    wait_until(lambda: len(admin.describe_topic(TOPIC).partitions[0].isr) == 3, what="full ISR")
    leader = admin.describe_topic(TOPIC).partitions[0].leader
    flip_bit(rolled_segments(cluster, leader)[1])
    got = consume_all(cluster.bootstrap, TOPIC, len(acked), security=cluster.security)
    assert read_back(got) == acked  # nothing skipped, nothing lost, nothing changed
    state = admin.describe_topic(TOPIC).partitions[0]
    assert state.leader != leader
    wait_until(
        lambda: leader in admin.describe_topic(TOPIC).partitions[0].isr,
        timeout_s=30,
        what="the damaged replica repaired and back in the ISR",
    )
    admin.close()
    assert_replicas_agree(cluster, acked)
