"""Replacing a dead voter on a real cluster (issue 20): 5 brokers, voters {1, 2, 3}; voter 3 dies
for good, broker 4 (an observer) is added as a voter, 3 is removed — while metadata keeps
committing and acks=all producing goes on — and then one more of the original voters dies: the
two left, one of them 4, still elect a controller and commit.

The edges (each bounded by ``TEST_TIMEOUT_S``; the ``make_cluster`` fixture stops every broker
by PID whatever happens): the active controller removed while it leads; the controller killed
as the first victim of a replacement, then restarted with its old config after its removal;
a removed voter that was alive when removed, restarted with its old config."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest

from raftlog.client import Admin, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.client.processes import port_free
from raftlog.proto import broker_pb2
from raftlog.proto.errors import DuplicateVoterError, RaftlogError, VoterNotFoundError

from ..conftest import ClusterFactory
from .test_data_plane import FAST, stub_for, wait_until

pytestmark = pytest.mark.integration

TEST_TIMEOUT_S = 90  # each test takes 15-40 s on a busy 2-core machine


class MetadataLoad:
    """Alters a topic config in a loop (each one a committed metadata command) and records when
    each commit was answered."""

    def __init__(self, admin: Admin, topic: str) -> None:
        self.admin = admin
        self.topic = topic
        self.commits: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self.admin.alter_configs(self.topic, {"retention.ms": str(3_600_000 + i)})
                self.commits.append(time.monotonic())
            except RaftlogError as exc:
                self.failures.append(str(exc))
            time.sleep(0.02)

    def __enter__(self) -> MetadataLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def longest_gap_s(self, since: float) -> float:
        times = [since, *(t for t in self.commits if t >= since), time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))


def test_replace_a_dead_voter_while_metadata_commits(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(5, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    load_admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    admin.create_topic("orders", 5, 3, min_insync_replicas=2)
    admin.create_topic("knob", 1, 1)
    controller = admin.describe_cluster().controller_id
    # the voter that dies for good: 3, unless it is the controller (then another non-controller)
    victim = 3 if controller != 3 else 2
    new_raft = f"127.0.0.1:{cluster.base_port + 103}"  # broker 4 runs no Raft member yet

    futures = []
    with (
        MetadataLoad(load_admin, "knob") as load,
        Producer(
            cluster.bootstrap,
            acks="all",
            linger_ms=2,
            request_timeout_ms=5000,
            delivery_timeout_ms=60_000,
            security=cluster.security,
        ) as producer,
    ):
        started = time.monotonic()

        def produce(count: int) -> None:
            for _ in range(count):
                futures.append(producer.send("orders", f"v{len(futures)}".encode()))
                time.sleep(0.002)

        produce(300)
        cluster.kill(victim)
        produce(300)
        voters = admin.add_voter(4, new_raft)
        assert sorted(v.node_id for v in voters) == sorted({1, 2, 3, 4})
        with pytest.raises(DuplicateVoterError):
            admin.add_voter(4, new_raft)
        produce(300)
        voters = admin.remove_voter(victim)
        assert sorted(v.node_id for v in voters) == sorted({1, 2, 3, 4} - {victim})
        with pytest.raises(VoterNotFoundError):
            admin.remove_voter(victim)
        produce(300)
        replaced_at = time.monotonic()
        producer.flush(60)
        time.sleep(1.0)  # a second more of metadata commits after the replacement
        gap_s = load.longest_gap_s(started)
        commits_during = sum(1 for t in load.commits if started <= t <= replaced_at)

    print(f"longest metadata gap {gap_s:.2f} s, {commits_during} commits during the replacement")
    acked = [f.result() for f in futures if f.exception() is None]
    assert len(acked) == len(futures), [f.exception() for f in futures if f.exception()][:3]
    assert commits_during > 20, (commits_during, load.failures[:3])
    assert gap_s < 3.0, (gap_s, load.failures[:3])

    members = {1, 2, 4, 3} - {victim}
    alive = sorted({1, 2, 3, 4, 5} - {victim})

    def quorum_is(expected: set[int]) -> bool:
        answer = admin.describe_quorum()
        return {v.node_id for v in answer.voters} == expected and {
            v.node_id for v in answer.members
        } == expected

    wait_until(lambda: quorum_is(members), 10, f"DescribeQuorum showing {sorted(members)}")

    def same_version() -> bool:
        versions = {
            stub_for(cluster, b).Metadata(broker_pb2.MetadataRequest(), timeout=5).metadata_version
            for b in alive
        }
        return len(versions) == 1

    wait_until(same_version, 10, "every live broker at the same metadata version")
    for b in alive:  # every broker, observers too, learned the new voter set
        answer = stub_for(cluster, b).DescribeQuorum(broker_pb2.DescribeQuorumRequest(), timeout=5)
        assert {v.node_id for v in answer.members} == members, b

    # one more original voter dies (the controller if it is one): {survivor, 4} is a majority
    # of {1, 2, 4} - {victim} only if 4 votes
    controller = admin.describe_cluster().controller_id
    originals = sorted(members - {4})
    second = controller if controller in originals else originals[0]
    cluster.kill(second)
    deadline = time.monotonic() + 20
    while True:
        try:
            admin.alter_configs("knob", {"retention.ms": "7200000"})
            break
        except RaftlogError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    controller = admin.describe_cluster().controller_id
    assert controller in members - {second}
    admin.create_topic("after", 1, 2)
    load_admin.close()
    admin.close()


# ---- the edges ---------------------------------------------------------------------------------


def commit_within(admin: Admin, timeout_s: float, topic: str = "knob") -> None:
    """One metadata command committed (retried while a controller is elected)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.alter_configs(topic, {"retention.ms": str(7_200_000 + int(time.monotonic()))})
            return
        except RaftlogError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def describe_quorum_of(cluster: LocalCluster, broker: int) -> broker_pb2.DescribeQuorumResponse:
    """The quorum as ``broker`` itself sees it (no redirect to the leader)."""
    answer: broker_pb2.DescribeQuorumResponse = stub_for(cluster, broker).DescribeQuorum(
        broker_pb2.DescribeQuorumRequest(), timeout=5
    )
    return answer


def quorum_settles_on(admin: Admin, expected: set[int]) -> None:
    """The leader's Raft membership and the metadata's voter set are both ``expected``."""

    def settled() -> bool:
        answer = admin.describe_quorum()
        return {v.node_id for v in answer.voters} == expected and {
            v.node_id for v in answer.members
        } == expected

    wait_until(settled, 15, f"DescribeQuorum showing {sorted(expected)}")


def wait_observing(cluster: LocalCluster, broker: int, members: set[int]) -> None:
    """Until ``broker`` runs no Raft member (an observer answers term 0), knows the voters
    are ``members``, follows the leader, and nothing listens on its old Raft port."""
    raft_port = int(cluster.nodes[broker].raft.rpartition(":")[2])
    seen: list[object] = []

    def observes() -> bool:
        answer = describe_quorum_of(cluster, broker)
        seen[:] = [answer, port_free(raft_port)]
        return (
            answer.term == 0
            and {v.node_id for v in answer.members} == members
            and answer.leader_id in members
            and port_free(raft_port)
        )

    try:
        wait_until(observes, 10, f"broker {broker} observing")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last answer {seen}, log:\n{cluster.tail(broker, 30)}"
        ) from None


def metadata_versions(cluster: LocalCluster, brokers: list[int]) -> dict[int, int]:
    return {
        b: stub_for(cluster, b).Metadata(broker_pb2.MetadataRequest(), timeout=5).metadata_version
        for b in brokers
    }


def assert_no_election_while(
    cluster: LocalCluster, admin: Admin, members: set[int], action: Callable[[], None]
) -> None:
    """``action`` (restarting a removed voter) causes no election: the leader and every
    member's term stay what they were, and metadata commits throughout."""
    before = {b: describe_quorum_of(cluster, b) for b in members}
    leader_before = {a.leader_id for a in before.values()}
    assert len(leader_before) == 1, before
    with MetadataLoad(admin, "knob") as load:
        started = time.monotonic()
        action()
        time.sleep(3.0)  # several election timeouts of the restarted broker
        gap_s = load.longest_gap_s(started)
        commits = sum(1 for t in load.commits if t >= started)
    after = {b: describe_quorum_of(cluster, b) for b in members}
    assert {a.leader_id for a in after.values()} == leader_before, after
    assert {b: a.term for b, a in after.items()} == {b: a.term for b, a in before.items()}, (
        before,
        after,
    )
    assert gap_s < 3.0, (gap_s, load.failures[:3])
    assert commits > 20, (commits, load.failures[:3])


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_remove_the_active_controller(make_cluster: ClusterFactory) -> None:
    """remove-voter of the Raft leader: leadership moves to another voter, the removal commits
    there, the old controller goes on as an observer, and metadata commits throughout."""
    cluster = make_cluster(4, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    load_admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    admin.create_topic("knob", 1, 1)
    old = admin.describe_cluster().controller_id
    members = {1, 2, 3} - {old}
    with MetadataLoad(load_admin, "knob") as load:
        started = time.monotonic()
        voters = admin.remove_voter(old, timeout_s=20)
        assert {v.node_id for v in voters} == members
        removed_s = time.monotonic() - started
        time.sleep(1.0)
        gap_s = load.longest_gap_s(started)
        commits = sum(1 for t in load.commits if t >= started)
    print(f"removal took {removed_s:.2f} s; longest metadata gap {gap_s:.2f} s")
    assert gap_s < 3.0, (gap_s, load.failures[:3])
    assert commits > 20, (commits, load.failures[:3])
    new = admin.describe_cluster().controller_id
    assert new in members
    quorum_settles_on(admin, members)
    wait_observing(cluster, old, members)
    admin.create_topic("after", 1, 2)
    alive = [1, 2, 3, 4]
    wait_until(
        lambda: len(set(metadata_versions(cluster, alive).values())) == 1,
        10,
        "every broker at the same metadata version",
    )
    # the two voters left are the quorum now: one more death of a non-member changes nothing
    cluster.kill(old)
    commit_within(admin, 10)
    load_admin.close()
    admin.close()


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_replace_a_killed_controller_then_restart_it(make_cluster: ClusterFactory) -> None:
    """kill -9 of the controller as the first victim: a new controller is elected, broker 4 is
    added, the dead ex-controller removed; then it restarts with its old config (it never saw
    its removal): it observes, and causes no election."""
    cluster = make_cluster(4, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    load_admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    admin.create_topic("knob", 1, 1)
    victim = admin.describe_cluster().controller_id
    members = {1, 2, 3, 4} - {victim}
    new_raft = f"127.0.0.1:{cluster.base_port + 103}"
    cluster.kill(victim)
    with MetadataLoad(load_admin, "knob") as load:
        killed_at = time.monotonic()
        # at once: the change must wait for (or be retried through) the election
        voters = admin.add_voter(4, new_raft, timeout_s=20)
        assert {v.node_id for v in voters} == {1, 2, 3, 4}
        voters = admin.remove_voter(victim, timeout_s=20)
        assert {v.node_id for v in voters} == members
        replaced_s = time.monotonic() - killed_at
        time.sleep(max(1.0, killed_at + 5.0 - time.monotonic()))
        # the first commits wait for the election after the kill (< 1 s, FAST timeouts)
        gap_s = load.longest_gap_s(killed_at + 2.0)
        commits = sum(1 for t in load.commits if t >= killed_at)
    print(f"replacement took {replaced_s:.2f} s after the kill; gap after 3 s {gap_s:.2f} s")
    assert gap_s < 3.0, (gap_s, load.failures[:3])
    assert commits > 20, (commits, load.failures[:3])
    assert admin.describe_cluster().controller_id in members
    quorum_settles_on(admin, members)

    assert_no_election_while(
        cluster, load_admin, members, lambda: cluster.start(victim, timeout_s=30)
    )
    wait_observing(cluster, victim, members)
    wait_until(
        lambda: len(set(metadata_versions(cluster, [1, 2, 3, 4]).values())) == 1,
        10,
        "every broker at the same metadata version",
    )
    commit_within(admin, 10)
    load_admin.close()
    admin.close()


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_removed_voter_restarted_with_its_old_config_observes(
    make_cluster: ClusterFactory,
) -> None:
    """remove-voter of a running voter, then kill -9 and restart it with its old config (which
    still names it among the [[voters]]): it observes the metadata as a non-voter and causes no
    election; the quorum keeps committing."""
    cluster = make_cluster(4, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    load_admin = Admin(cluster.bootstrap, security=cluster.security, timeout_s=20)
    admin.create_topic("knob", 1, 1)
    controller = admin.describe_cluster().controller_id
    removed = 3 if controller != 3 else 2
    members = {1, 2, 3} - {removed}
    voters = admin.remove_voter(removed, timeout_s=20)
    assert {v.node_id for v in voters} == members
    quorum_settles_on(admin, members)
    wait_observing(cluster, removed, members)
    cluster.kill(removed)

    assert_no_election_while(
        cluster, load_admin, members, lambda: cluster.start(removed, timeout_s=30)
    )
    wait_observing(cluster, removed, members)
    admin.create_topic("after", 1, 3)  # it serves partitions as before
    wait_until(
        lambda: len(set(metadata_versions(cluster, [1, 2, 3, 4]).values())) == 1,
        10,
        "every broker at the same metadata version",
    )
    load_admin.close()
    admin.close()
