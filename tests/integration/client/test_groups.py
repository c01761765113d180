"""Consumer groups on a real cluster: three processes share six partitions, one is killed and its
partitions move; committed offsets survive kill -9 of the coordinator; nothing is skipped."""

from __future__ import annotations

import json

import pytest

from bench.group_members import ConsumerProcess, wait_until
from raftlog.client import Admin, Consumer, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import group_pb2, group_pb2_grpc

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

MEMBER = r"""
import json, sys
from raftlog.client import ClientSecurity, Consumer
c = Consumer(sys.argv[1], group_id="workers", session_timeout_ms=3000, heartbeat_interval_ms=300,
             enable_auto_commit=False, auto_offset_reset="earliest",
             security=ClientSecurity.from_dir(sys.argv[2]))
def show(kind):
    def callback(parts):
        print(json.dumps({"event": kind, "partitions": sorted(parts)}), flush=True)
    return callback
c.subscribe(["work"], on_assign=show("assign"), on_revoke=show("revoke"))
while True:
    records = c.poll(timeout_ms=200)
    for r in records:  # "process" each record, then commit: at-least-once
        print(json.dumps({"event": "record", "p": r.partition, "o": r.offset,
                          "v": r.value.decode()}), flush=True)
    if records:
        c.commit()
"""


class Member(ConsumerProcess):
    """A consumer process of group ``workers``."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(MEMBER, cluster)


def produce(cluster: LocalCluster, start: int, count: int) -> None:
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        for i in range(start, start + count):
            producer.send("work", f"{i}".encode(), partition=i % 6)


def coordinator_of(cluster: LocalCluster, group: str) -> int:
    stub = group_pb2_grpc.GroupCoordinatorStub(cluster.security.channel(cluster.nodes[1].grpc))
    return int(
        stub.FindCoordinator(group_pb2.FindCoordinatorRequest(group_id=group)).coordinator_id
    )


def test_three_members_share_six_partitions_and_survive_kills(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, timeouts={"session_timeout_ms": 1500, "heartbeat_interval_ms": 150})
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("work", 6, 3, min_insync_replicas=2)
    produce(cluster, 0, 600)
    members = [Member(cluster) for _ in range(3)]
    try:
        wait_until(
            lambda: sorted(len(m.assignment) for m in members) == [2, 2, 2], 30, "a 2/2/2 split"
        )
        every = sorted(tp for m in members for tp in m.assignment)
        assert every == [("work", p) for p in range(6)]
        # one member dies without leaving: its partitions move within the session timeout
        victim = members.pop()
        victim.stop()
        moved = wait_until(
            lambda: sorted(len(m.assignment) for m in members) == [3, 3], 20, "a 3/3 split"
        )
        assert moved < 3.0 + 5.0  # session timeout + a rejoin round
        produce(cluster, 600, 600)
        wanted = {str(i) for i in range(1200)}
        seen = lambda: set().union(*(m.values() for m in [*members, victim]))  # noqa: E731
        wait_until(lambda: wanted <= seen(), 30, "every record consumed")
        assert wanted == seen()  # nothing skipped across the rebalance (at-least-once)
        # committed offsets survive kill -9 of the coordinator's broker
        wait_until(lambda: _committed(cluster) == {p: 200 for p in range(6)}, 20, "commits")
        coordinator = coordinator_of(cluster, "workers")
        cluster.kill(coordinator)
        for m in members:
            m.stop()
        assert (
            wait_until(
                lambda: _committed(cluster) == {p: 200 for p in range(6)},
                30,
                "the commits from the new coordinator",
            )
            >= 0
        )
    finally:
        for m in members:
            m.stop()


def _committed(cluster: LocalCluster) -> dict[int, int]:
    alive = ",".join(n.grpc for i, n in cluster.nodes.items() if cluster.is_running(i))
    try:
        with Admin(alive, timeout_s=5, security=cluster.security) as admin:
            found = admin.describe_group("workers").offsets
            return {p.partition: p.committed for p in found if p.topic == "work"}
    except Exception:
        return {}


def test_commits_are_fenced_by_generation(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("work", 2, 3, min_insync_replicas=2)
    consumer = Consumer(
        cluster.bootstrap,
        group_id="solo",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=300,
        security=cluster.security,
    )
    consumer.subscribe(["work"])
    consumer.poll(timeout_ms=1000)
    assert consumer.group is not None and consumer.group.generation >= 1
    consumer.commit({("work", 0): 5})
    stale = consumer.group.generation
    consumer.group.generation = stale - 1
    with pytest.raises(Exception, match="ILLEGAL_GENERATION"):
        consumer.commit({("work", 0): 7})
    consumer.group.generation = stale
    assert consumer.committed([("work", 0)]) == {("work", 0): 5}
    consumer.close()


def test_the_group_commands_of_the_cli(make_cluster: ClusterFactory) -> None:
    from .test_cli import raftlog

    cluster = make_cluster(3)
    boot = ["--bootstrap", cluster.bootstrap, "--dir", str(cluster.dir)]  # its CA and admin
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("cli", 2, 3, min_insync_replicas=2)
    lines = "".join(f"line-{i}\n" for i in range(100))
    assert raftlog("produce", "cli", *boot, stdin=lines).returncode == 0
    first = raftlog(
        "consume", "cli", "--group", "g1", "--from-beginning", "--max-messages", "60", *boot
    )
    assert first.returncode == 0, first.stderr
    # the same group, now cooperative: a round of its own, resuming at the commits
    rest = raftlog("consume", "cli", "--group", "g1", "--cooperative", "--timeout", "3", *boot)
    assert rest.returncode == 0, rest.stderr
    got = first.stdout.split() + rest.stdout.split()
    assert sorted(set(got)) == sorted(f"line-{i}" for i in range(100))  # resumed, none skipped
    described = json.loads(raftlog("group", "describe", "g1", "--json", *boot).stdout)
    assert described["state"] == "Empty"
    assert {o["partition"]: o["lag"] for o in described["offsets"]} == {0: 0, 1: 0}
    assert any(
        g["group"] == "g1" for g in json.loads(raftlog("group", "list", "--json", *boot).stdout)
    )
    reset = raftlog("group", "reset-offsets", "g1", "--topic", "cli", "--to-earliest", *boot)
    assert reset.returncode == 0, reset.stderr
    again = raftlog("consume", "cli", "--group", "g1", "--timeout", "3", *boot)
    assert sorted(again.stdout.split()) == sorted(f"line-{i}" for i in range(100))
    deleted = raftlog("group", "delete", "g1", "nobody", "--json", *boot)
    assert deleted.returncode == 1  # one of the two was not there
    assert [(r["group"], r["error"]) for r in json.loads(deleted.stdout)] == [
        ("g1", None),
        ("nobody", "GROUP_ID_NOT_FOUND"),
    ]
    assert json.loads(raftlog("group", "describe", "g1", "--json", *boot).stdout)["offsets"] == []
    after = raftlog("consume", "cli", "--group", "g1", "--from-beginning", "--timeout", "3", *boot)
    assert sorted(after.stdout.split()) == sorted(f"line-{i}" for i in range(100))
