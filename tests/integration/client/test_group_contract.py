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

import signal
import time

import pytest

from bench.group_members import (
    CALLBACKS,
    EAGER,
    ConsumerProcess,
    Feed,
    coordinator_of,
    describe_group,
    longest_pause,
    records_outside_ownership,
    wait_until,
)
from raftlog.client import Admin
from raftlog.client.local_cluster import LocalCluster

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

GROUP = "contract"
TOPIC = "work"
PARTITIONS = 6


def member(cluster: LocalCluster, instance: str = "", assignors: str = EAGER) -> ConsumerProcess:
    return ConsumerProcess.member(cluster, GROUP, TOPIC, instance=instance, assignors=assignors)


def test_the_ownership_checker_catches_a_record_after_a_revoke() -> None:
    """The check above can fail: a record of a revoked partition is reported."""
    timeline = [
        {"event": "assign", "partitions": [[TOPIC, 0], [TOPIC, 1]]},
        {"event": "record", "p": 1, "o": 0, "v": "a"},
        {"event": "revoke", "partitions": [[TOPIC, 0], [TOPIC, 1]], "commit": True},
        {"event": "record", "p": 1, "o": 1, "v": "b"},
    ]
    assert records_outside_ownership(timeline, TOPIC) == [timeline[-1]]


def coordinator(cluster: LocalCluster) -> int:
    return coordinator_of(cluster, GROUP)


def generation(cluster: LocalCluster) -> int:
    return describe_group(cluster, GROUP).generation


def split(members: list[ConsumerProcess]) -> list[int]:
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
    feed = Feed(cluster, TOPIC, PARTITIONS)
    members = [member(cluster) for _ in range(3)]
    try:
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        # the initial rebalance delay put all three into the first round: one assignment each
        assert [len(m.of("assign")) for m in members] == [1, 1, 1]
        before = generation(cluster)
        owned = [m.assignment for m in members]
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        killed = coordinator(cluster)
        cluster.kill(killed)
        wait_until(lambda: coordinator(cluster) != killed, 30, "a new coordinator")
        time.sleep(5)  # well past the members' session timeout (3 s): records keep flowing
        # back again: the preferred-leader election (every 30 s) moves the offsets partition's
        # leadership, and with it the coordinator, back to the restarted broker — no fault at all
        cluster.start(killed)
        wait_until(lambda: coordinator(cluster) == killed, 90, "the coordinator moved back")
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
    feed = Feed(cluster, TOPIC, PARTITIONS)
    members = [member(cluster) for _ in range(2)]
    try:
        wait_until(lambda: split(members) == [3, 3], 40, "a 3/3 split")
        members.append(member(cluster))  # a join: both others revoke (eager) and commit
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        paused = members[0]
        paused.signal(signal.SIGSTOP)  # past its session timeout: the others take its share
        wait_until(lambda: split(members[1:]) == [3, 3], 30, "its partitions moved")
        paused.signal(signal.SIGCONT)  # it learns its membership is gone: on_lost, no commit
        wait_until(lambda: bool(paused.of("lost")), 30, "on_lost in the paused member")
        wait_until(lambda: split(members) == [2, 2, 2], 40, "the member back in the group")
        cluster.kill(coordinator(cluster))
        time.sleep(5)
        wanted = feed.stop()
        wait_until(lambda: wanted <= {v for m in members for v in m.values()}, 60, "every record")
        for m in members:
            assert records_outside_ownership(m.events, TOPIC) == []
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
    feed = Feed(cluster, TOPIC, PARTITIONS)
    members = [member(cluster, instance=f"worker-{i}") for i in range(3)]
    try:
        wait_until(lambda: split(members) == [2, 2, 2], 40, "a 2/2/2 split")
        before = generation(cluster)
        owned = members[0].assignment
        killed = members[0]
        killed.stop()  # kill -9: no LeaveGroup, no commit
        members[0] = member(cluster, instance="worker-0")
        wait_until(lambda: members[0].assignment == owned, 20, "the same partitions back")
        wanted = feed.stop()
        every = [*members, killed]  # what the killed instance processed counts too
        wait_until(lambda: wanted <= {v for m in every for v in m.values()}, 60, "every record")
        assert generation(cluster) == before  # no rebalance
        described = describe_group(cluster, GROUP)  # static members show their instance ids
        assert sorted(described.instances.values()) == ["worker-0", "worker-1", "worker-2"]
        for m in members[1:]:  # the others noticed nothing
            assert [e["event"] for e in m.events if e["event"] in CALLBACKS] == ["assign"]
    finally:
        feed.stop()
        for m in members:
            m.stop()


def test_a_join_to_a_cooperative_group_never_stops_the_partitions_that_stay(
    make_cluster: ClusterFactory,
) -> None:
    cluster = start_group(make_cluster)
    feed = Feed(cluster, TOPIC, PARTITIONS)
    members = [member(cluster, assignors="cooperative-sticky") for _ in range(2)]
    try:
        wait_until(lambda: split(members) == [3, 3], 40, "a 3/3 split")
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        time.sleep(1)
        start = time.time()
        members.append(member(cluster, assignors="cooperative-sticky"))
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
                times = [e["t"] for e in m.of("record") if e["p"] == p]
                pauses[p] = longest_pause(times, start, end)
        print(f"longest pause of a partition that stayed: {max(pauses.values()):.3f} s")
        assert max(pauses.values()) < 1.0, pauses
        for m in members:
            assert records_outside_ownership(m.events, TOPIC) == []
            assert all(e["commit"] is True for e in m.of("revoke"))
        processed = [v for m in members for v in m.values()]
        assert len(processed) == len(set(processed)), "a record was processed twice"
    finally:
        feed.stop()
        for m in members:
            m.stop()
