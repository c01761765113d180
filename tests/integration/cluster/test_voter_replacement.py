"""Replacing a dead voter on a real cluster (issue 20): 5 brokers, voters {1, 2, 3}; voter 3 dies
for good, broker 4 (an observer) is added as a voter, 3 is removed — while metadata keeps
committing and acks=all producing goes on — and then one more of the original voters dies: the
two left, one of them 4, still elect a controller and commit."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from raftlog.client import Admin, Producer
from raftlog.proto import broker_pb2
from raftlog.proto.errors import DuplicateVoterError, RaftlogError, VoterNotFoundError

from ..conftest import ClusterFactory
from .test_data_plane import FAST, stub_for, wait_until

pytestmark = pytest.mark.integration


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
