"""The consumer group's contract on a real cluster, as a Kafka user expects it.

Three consumer processes share six partitions while records flow. Every member reports, in order,
each callback (assign, revoke with the result of the commit made inside it, lost) and each record
it processed, so the checks read one member's own timeline:

- killing the group coordinator's broker (SIGKILL) changes neither the generation nor anybody's
  partitions, and no record is processed by two members;
- ``poll`` never returns a record of a partition after its ``on_revoke`` or ``on_lost``, and
  before a new ``on_assign`` gives it back;
- a member paused past its session timeout gets ``on_lost`` (never ``on_revoke``: a commit would
  fail), and a revoke's commit always succeeds;
- a static member (``group_instance_id``) killed and restarted within its session timeout takes
  the same partitions back with no rebalance;
- a member joining a cooperative group (KIP-429) moves one partition per old member, and the
  partitions that stay never pause for as long as a second.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from typing import Any

import pytest

from raftlog.client import Admin, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import group_pb2, group_pb2_grpc

from ..conftest import ClusterFactory
from .members import ConsumerProcess, owned_after, wait_until

pytestmark = pytest.mark.integration

GROUP = "contract"
CALLBACKS = ("assign", "revoke", "lost")
EAGER = "sticky,range,roundrobin"  # the consumer's default assignors: an eager member
TOPIC = "work"
PARTITIONS = 6

MEMBER = r"""
import json, sys
from raftlog.client import ClientSecurity, Consumer
import time
instance = sys.argv[3] or None
c = Consumer(sys.argv[1], group_id="contract", session_timeout_ms=3000, heartbeat_interval_ms=300,
             enable_auto_commit=False, auto_offset_reset="earliest", group_instance_id=instance,
             assignors=sys.argv[4].split(","), security=ClientSecurity.from_dir(sys.argv[2]))
def say(**event):
    print(json.dumps(event), flush=True)
def on_assign(parts):
    say(event="assign", partitions=sorted(parts), generation=c.group.generation)
def on_revoke(parts):
    try:
        c.commit()  # the member is still in the group: this must succeed
        ok = True
    except Exception as exc:
        ok = str(exc)
    say(event="revoke", partitions=sorted(parts), commit=ok)
def on_lost(parts):
    say(event="lost", partitions=sorted(parts))
c.subscribe(["work"], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
while True:
    records = c.poll(timeout_ms=200)
    for r in records:  # "process" each record, then commit: at-least-once
        say(event="record", p=r.partition, o=r.offset, v=r.value.decode(), t=time.time())
    if records:
        try:
            c.commit()
        except Exception as exc:
            say(event="commit-failed", error=str(exc))
"""


class Member(ConsumerProcess):
    """A consumer process of group ``contract``; ``instance``: its group.instance.id."""

    def __init__(self, cluster: LocalCluster, instance: str = "", assignors: str = EAGER) -> None:
        super().__init__(MEMBER, cluster, instance, assignors)


def records_outside_ownership(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records a member returned for a partition it did not own at that point of its timeline."""
    bad, since = [], 0
    owned: set[tuple[str, int]] = set()
    for i, e in enumerate(events):
        if e["event"] in CALLBACKS:
            owned = owned_after(events[since : i + 1], owned)
            since = i + 1
        elif e["event"] == "record" and (TOPIC, e["p"]) not in owned:
            bad.append(e)
    return bad


def test_the_ownership_checker_catches_a_record_after_a_revoke() -> None:
    """The check above can fail: a record of a revoked partition is reported."""
    timeline = [
        {"event": "assign", "partitions": [[TOPIC, 0], [TOPIC, 1]]},
        {"event": "record", "p": 1, "o": 0, "v": "a"},
        {"event": "revoke", "partitions": [[TOPIC, 0], [TOPIC, 1]], "commit": True},
        {"event": "record", "p": 1, "o": 1, "v": "b"},
    ]
    assert records_outside_ownership(timeline) == [timeline[-1]]


class Feed:
    """Produces records ``0, 1, …`` round-robin over the partitions until stopped."""

    def __init__(self, cluster: LocalCluster, per_second: int = 200) -> None:
        self.cluster = cluster
        self.per_second = per_second
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with Producer(self.cluster.bootstrap, security=self.cluster.security) as producer:
            while not self._stop.is_set():
                futures = [
                    producer.send(TOPIC, f"{i}".encode(), partition=i % PARTITIONS)
                    for i in range(self.sent, self.sent + self.per_second // 10)
                ]
                for future in futures:
                    future.result(timeout=60)  # acknowledged before it counts as sent
                self.sent += len(futures)
                time.sleep(0.1)

    def stop(self) -> set[str]:
        self._stop.set()
        self.thread.join(90)
        return {str(i) for i in range(self.sent)}


def coordinator_of(cluster: LocalCluster) -> int:
    """The coordinator's broker id, -1 while none is named."""
    alive = next(n for i, n in cluster.nodes.items() if cluster.is_running(i))
    stub = group_pb2_grpc.GroupCoordinatorStub(cluster.security.channel(alive.grpc))
    answer = stub.FindCoordinator(group_pb2.FindCoordinatorRequest(group_id=GROUP), timeout=10)
    return int(answer.coordinator_id) if not answer.error.code else -1


def generation(cluster: LocalCluster) -> int:
    alive = ",".join(n.grpc for i, n in cluster.nodes.items() if cluster.is_running(i))
    with Admin(alive, timeout_s=10, security=cluster.security) as admin:
        return admin.describe_group(GROUP).generation


def split(members: list[Member]) -> list[int]:
    return sorted(len(m.assignment) for m in members)


def start_group(make_cluster: ClusterFactory) -> LocalCluster:
    cluster = make_cluster(3, timeouts={"session_timeout_ms": 1500, "heartbeat_interval_ms": 150})
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic(TOPIC, PARTITIONS, 3, min_insync_replicas=2)
    return cluster


def test_a_coordinator_kill_or_move_changes_no_partition_and_nothing_is_processed_twice(
    make_cluster: ClusterFactory,
) -> None:
    cluster = start_group(make_cluster)
    feed = Feed(cluster)
    members = [Member(cluster) for _ in range(3)]
    try:
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        # the initial rebalance delay put all three into the first round: one assignment each
        assert [len(m.of("assign")) for m in members] == [1, 1, 1]
        before = generation(cluster)
        owned = [m.assignment for m in members]
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        killed = coordinator_of(cluster)
        cluster.kill(killed)
        wait_until(lambda: coordinator_of(cluster) != killed, 30, "a new coordinator")
        time.sleep(5)  # well past the members' session timeout (3 s): records keep flowing
        # back again: the preferred-leader election (every 30 s) moves the offsets partition's
        # leadership, and with it the coordinator, back to the restarted broker — no fault at all
        cluster.start(killed)
        wait_until(lambda: coordinator_of(cluster) == killed, 90, "the coordinator moved back")
        time.sleep(2)
        wanted = feed.stop()
        seen = lambda: [v for m in members for v in m.values()]  # noqa: E731
        wait_until(lambda: wanted <= set(seen()), 60, "every acknowledged record consumed")
        assert generation(cluster) == before
        assert [m.assignment for m in members] == owned
        for m in members:
            assert [e["event"] for e in m.events if e["event"] in CALLBACKS] == ["assign"]
        processed = seen()
        assert len(processed) == len(set(processed)), "a record was processed twice"
    finally:
        feed.stop()
        for m in members:
            m.stop()


def test_revoked_and_lost_partitions_return_nothing_and_a_revoke_can_commit(
    make_cluster: ClusterFactory,
) -> None:
    cluster = start_group(make_cluster)
    feed = Feed(cluster)
    members = [Member(cluster) for _ in range(2)]
    try:
        wait_until(lambda: split(members) == [3, 3], 40, "a 3/3 split")
        members.append(Member(cluster))  # a join: both others revoke (eager) and commit
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        paused = members[0]
        paused.signal(signal.SIGSTOP)  # past its session timeout: the others take its share
        wait_until(lambda: split(members[1:]) == [3, 3], 30, "its partitions moved")
        paused.signal(signal.SIGCONT)  # it learns its membership is gone: on_lost, no commit
        wait_until(lambda: bool(paused.of("lost")), 30, "on_lost in the paused member")
        wait_until(lambda: split(members) == [2, 2, 2], 40, "the member back in the group")
        cluster.kill(coordinator_of(cluster))
        time.sleep(5)
        wanted = feed.stop()
        wait_until(lambda: wanted <= {v for m in members for v in m.values()}, 60, "every record")
        for m in members:
            assert records_outside_ownership(m.events) == []
            assert all(e["commit"] is True for e in m.of("revoke")), m.of("revoke")
        # the paused member's partitions were lost, not revoked: its callbacks read
        # assign (2/2/2), lost, assign (back in the group) — one callback per change
        callbacks = [e["event"] for e in paused.events if e["event"] in CALLBACKS]
        first_lost = callbacks.index("lost")
        assert callbacks[first_lost - 1] == "assign" and callbacks[first_lost + 1] == "assign"
        assert callbacks.count("lost") == 1
    finally:
        feed.stop()
        for m in members:
            if m.process.poll() is None:
                m.signal(signal.SIGCONT)
            m.stop()


def test_a_static_member_restarted_within_its_session_takes_its_partitions_back(
    make_cluster: ClusterFactory,
) -> None:
    cluster = start_group(make_cluster)
    feed = Feed(cluster)
    members = [Member(cluster, instance=f"worker-{i}") for i in range(3)]
    try:
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        before = generation(cluster)
        owned = members[0].assignment
        killed = members[0]
        killed.stop()  # kill -9: no LeaveGroup, no commit
        members[0] = Member(cluster, instance="worker-0")
        wait_until(lambda: members[0].assignment == owned, 20, "the same partitions back")
        wanted = feed.stop()
        every = [*members, killed]  # what the killed instance processed counts too
        wait_until(lambda: wanted <= {v for m in every for v in m.values()}, 60, "every record")
        assert generation(cluster) == before  # no rebalance
        for m in members[1:]:  # the others noticed nothing
            assert [e["event"] for e in m.events if e["event"] in CALLBACKS] == ["assign"]
    finally:
        feed.stop()
        for m in members:
            m.stop()


def longest_pause(member: Member, partition: int, start: float, end: float) -> float:
    """The longest time between two records of ``partition`` this member processed around
    [start, end] (from its last record before ``start`` to its first after ``end``)."""
    times = sorted(e["t"] for e in member.of("record") if e["p"] == partition)
    before = [t for t in times if t < start][-1:]
    after = [t for t in times if t > end][:1]
    window = before + [t for t in times if start <= t <= end] + after
    return max((b - a for a, b in itertools.pairwise(window)), default=end - start)


def test_a_join_to_a_cooperative_group_never_stops_the_partitions_that_stay(
    make_cluster: ClusterFactory,
) -> None:
    cluster = start_group(make_cluster)
    feed = Feed(cluster)
    members = [Member(cluster, assignors="cooperative-sticky") for _ in range(2)]
    try:
        wait_until(lambda: split(members) == [3, 3], 40, "a 3/3 split")
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        time.sleep(1)
        start = time.time()
        members.append(Member(cluster, assignors="cooperative-sticky"))
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        end = time.time()
        time.sleep(2)
        wanted = feed.stop()
        wait_until(lambda: wanted <= {v for m in members for v in m.values()}, 60, "every record")
        pauses = {}
        for m in members[:2]:
            revoked = {p for e in m.of("revoke") for _, p in e["partitions"]}
            assert len(revoked) == 1  # 3 → 2: one partition moves, the others stay
            for _, p in m.assignment:
                pauses[p] = longest_pause(m, p, start, end)
        print(f"longest pause of a partition that stayed: {max(pauses.values()):.3f} s")
        assert max(pauses.values()) < 1.0, pauses
        for m in members:
            assert records_outside_ownership(m.events) == []
            assert all(e["commit"] is True for e in m.of("revoke"))
        processed = [v for m in members for v in m.values()]
        assert len(processed) == len(set(processed)), "a record was processed twice"
    finally:
        feed.stop()
        for m in members:
            m.stop()
