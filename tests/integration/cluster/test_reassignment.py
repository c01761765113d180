"""Moving partitions on real clusters (KIP-455): a reassignment under acks=all load, one across a
controller failover, a broker drain, preferred leaders and added partitions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from raftlog.client import Admin, Producer, cli
from raftlog.client.admin import PartitionDescription
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto.errors import PolicyViolationError

from ..conftest import ClusterFactory
from .test_data_plane import FAST, consume_all, wait_until

pytestmark = pytest.mark.integration


class Load:
    """acks=all records ``load{i}xxx…`` to one topic from a thread until stopped (~5,000/s)."""

    def __init__(self, cluster: LocalCluster, topic: str, value_bytes: int = 200) -> None:
        self.tag = "load"
        self.cluster = cluster
        self.topic = topic
        self.pad = b"x" * value_bytes
        self.futures: list = []  # type: ignore[type-arg]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        with Producer(
            self.cluster.bootstrap,
            linger_ms=5,
            request_timeout_ms=5000,
            delivery_timeout_ms=60_000,
            security=self.cluster.security,
        ) as producer:
            i = 0
            while not self._stop.is_set():
                value = f"{self.tag}{i}".encode() + self.pad
                self.futures.append(producer.send(self.topic, value))
                i += 1
                if i % 50 == 0:
                    time.sleep(0.01)
            producer.flush(90)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def acked(self) -> list:  # type: ignore[type-arg]
        """(metadata, value prefix) of every record: each one must have been acknowledged."""
        failed = [f.exception() for f in self.futures if f.exception() is not None]
        assert not failed, failed[:3]
        return [(f.result(), f"{self.tag}{i}x".encode()) for i, f in enumerate(self.futures)]


def partition_dirs(cluster: LocalCluster, broker: int, topic: str) -> list[Path]:
    return list((cluster.dir / f"node{broker}" / "logs").glob(f"{topic}-*"))


def settled(admin: Admin, topic: str, replicas: tuple[int, ...]) -> PartitionDescription:
    """Partition 0 of ``topic`` once the broker asked shows ``replicas`` (metadata reaches every
    broker a little after the controller)."""
    found = wait_until(
        lambda: next(
            (p for p in admin.describe_topic(topic).partitions[:1] if p.replicas == replicas),
            None,
        ),
        10,
        f"{topic}-0 on {replicas}",
    )
    return found  # type: ignore[no-any-return]


def check_in_place(cluster: LocalCluster, topic: str, sent: list) -> None:  # type: ignore[type-arg]
    """Each (metadata, value prefix) of ``sent``: read the topic and find a value with that
    prefix at the acknowledged offset, and no offset twice."""
    got = consume_all(cluster.bootstrap, topic, len(sent), security=cluster.security)
    where = {(r.partition, r.offset): r.value for r in got}
    wrong = [
        (m, prefix)
        for m, prefix in sent
        if not (where.get((m.partition, m.offset)) or b"").startswith(prefix)
    ]
    assert not wrong, f"{len(wrong)} of {len(sent)} acknowledged records missing: {wrong[:5]}"
    assert len(where) == len(got)


def test_a_reassignment_under_load_moves_every_acknowledged_record(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(6, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("moving", 1, 3, min_insync_replicas=2)
    first = admin.reassign_partitions({("moving", 0): [1, 2, 3]})
    assert [r.error for r in first] == [None]
    admin.wait_for_reassignments(timeout_s=30)
    settled(admin, "moving", (1, 2, 3))

    with Load(cluster, "moving") as load:
        wait_until(lambda: len(load.futures) > 3000, 20, "a first 3,000 records sent")
        results = admin.reassign_partitions(
            {("moving", 0): [4, 5, 6]}, throttle_bytes_per_s=4_000_000
        )
        assert [r.error for r in results] == [None]
        ongoing = admin.list_reassignments()
        if ongoing:  # (a fast catch-up may have finished already)
            assert ongoing[0].adding == (4, 5, 6) and ongoing[0].removing == (1, 2, 3)
            assert ongoing[0].throttle_bytes_per_s == 4_000_000
        admin.wait_for_reassignments(timeout_s=60)
        wait_until(lambda: len(load.futures) > 2 * 3000, 30, "records sent after the move")
    sent = load.acked()
    moved = settled(admin, "moving", (4, 5, 6))
    assert set(moved.isr) == {4, 5, 6}
    assert moved.leader in (4, 5, 6)
    check_in_place(cluster, "moving", sent)
    # the old replicas deleted their copies (as Kafka's StopReplica with delete)
    wait_until(
        lambda: not any(partition_dirs(cluster, b, "moving") for b in (1, 2, 3)),
        10,
        "the old replicas' logs deleted",
    )
    admin.close()


def test_a_reassignment_goes_on_when_the_controller_dies_half_way(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(6, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("moving", 1, 3, min_insync_replicas=2)
    controller = admin.describe_cluster().controller_id
    other_voter = next(b for b in (1, 2, 3) if b != controller)
    admin.reassign_partitions({("moving", 0): [controller, 4, 5]})  # the controller leads it
    admin.wait_for_reassignments(timeout_s=30)
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        before = [producer.send("moving", f"v{i}".encode() + b"x" * 2000) for i in range(3000)]
        producer.flush(60)
    target = [6, 4, other_voter]  # the controller and 5 leave, 6 and a voter join
    with Load(cluster, "moving", value_bytes=100) as load:
        # ~6 MB to copy at 2 MB/s each: the controller dies while the new replicas catch up
        admin.reassign_partitions({("moving", 0): target}, throttle_bytes_per_s=2_000_000)
        time.sleep(1.0)
        assert admin.list_reassignments(), "the move finished before the controller died"
        cluster.kill(controller)
        admin.wait_for_reassignments(timeout_s=60)
        cluster.start(controller, wait=False)
        time.sleep(0.5)
    sent = [(f.result(), f"v{i}x".encode()) for i, f in enumerate(before)] + load.acked()
    settled(admin, "moving", tuple(target))
    assert admin.describe_cluster().controller_id != controller
    check_in_place(cluster, "moving", sent)
    # the old controller was a replica that was moved away while it was dead: back up, it
    # deletes that stray log (it never saw itself leave)
    wait_until(
        lambda: not partition_dirs(cluster, controller, "moving"), 30, "the stray log deleted"
    )
    admin.close()


def test_drain_add_partitions_and_preferred_leaders_from_the_command_line(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(5, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("d", 4, 2, min_insync_replicas=1)
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        sent = [
            (producer.send("d", f"v{i}x".encode(), partition=i % 4), f"v{i}x".encode())
            for i in range(2000)
        ]
        producer.flush(30)
    sent = [(f.result(), prefix) for f, prefix in sent]
    on = {"--dir": str(cluster.dir)}
    dir_args = [item for pair in on.items() for item in pair]
    assert cli.main(["broker", "drain", "2", "--wait", "--timeout", "60", *dir_args]) == 0
    wait_until(
        lambda: all(
            2 not in p.replicas and p.leader != 2 for p in admin.describe_topic("d").partitions
        ),
        10,
        "no replica or leader on broker 2",
    )
    check_in_place(cluster, "d", sent)

    assert cli.main(["topic", "add-partitions", "d", "--partitions", "6", *dir_args]) == 0

    # (every broker's metadata has the new partitions a moment after the one that answered)
    def grown_with_leaders() -> tuple[PartitionDescription, ...] | None:
        partitions = admin.describe_topic("d").partitions
        ok = len(partitions) == 6 and all(p.leader >= 0 for p in partitions[4:])
        return partitions if ok else None

    grown = wait_until(grown_with_leaders, 10, "6 partitions with leaders")
    assert len(grown) == 6
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        assert producer.send("d", b"new", partition=5).result(10).offset == 0

    assert cli.main(["leader", "elect", "--preferred", *dir_args]) == 0
    wait_until(
        lambda: all(p.leader == p.replicas[0] for p in admin.describe_topic("d").partitions),
        10,
        "leaders on the preferred replicas",
    )
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "partitions": [{"topic": "d", "partition": 0}]}')
    assert cli.main(["partition", "reassign", "--plan", str(plan), *dir_args]) == 2
    plan.write_text(
        '{"version": 1, "partitions": [{"topic": "d", "partition": 0, "replicas": [9]}]}'
    )
    assert cli.main(["partition", "reassign", "--plan", str(plan), *dir_args]) == 1  # no broker 9
    assert cli.main(["partition", "reassignments", *dir_args]) == 0
    # a request's size is bounded before any work: one plan names at most 10,000 partitions
    with pytest.raises(PolicyViolationError, match="split the plan"):
        admin.reassign_partitions({("d", p): [1] for p in range(10_001)})
    admin.close()
