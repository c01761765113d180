"""NetnsCluster against real brokers in real network namespaces (needs root and iproute2).

One 3-node cluster serves the fault tests in order (each leaves it healthy); the clean-up tests
build their own. The brokers speak mutual TLS, as a chaos run's do: every client here connects
with ``cluster.security``. Every wait is bounded; the whole file stays well under 90 s on 2
cores. Tests use the prefix ``rlt`` so they never touch a real run's ``rl`` objects.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from cryptography import x509

from raftlog.chaos.nemesis import NEMESIS_NAMES, NemesisContext, make_nemesis
from raftlog.chaos.netns import NetnsCluster
from raftlog.chaos.network import (
    NetnsError,
    NetnsUnavailableError,
    PartitionMode,
    check_available,
    netns_pids,
)
from raftlog.chaos.runs import LOCK_DIR, cleanup_stale, names_by_run
from raftlog.chaos.schedule import nemesis_rng
from raftlog.client import Admin, ClientSecurity, Consumer, Producer
from raftlog.cluster.config import load_config
from raftlog.proto import broker_pb2, broker_pb2_grpc

T = TypeVar("T")
PREFIX = "rlt"
TOPIC = "chaos-netns"


def _unavailable() -> str | None:
    try:
        check_available()
    except NetnsUnavailableError as exc:
        return str(exc)
    return None


UNAVAILABLE = _unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    """Poll ``check`` until it returns something truthy; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # the cluster is settling; say the last error on timeout
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout_s} s (last: {last!r})")


def broker_states(cluster: NetnsCluster) -> dict[int, tuple[bool, bool]]:
    """broker id → (fenced, alive) as the controller reports it."""
    with Admin(cluster.bootstrap, timeout_s=3.0, security=cluster.security) as admin:
        answer = admin.describe_cluster()
    return {b.broker_id: (b.fenced, b.alive) for b in answer.brokers}


def fast_producer(cluster: NetnsCluster) -> Producer:
    """acks=all, giving up on a request after 1.5 s: what the availability tests send with."""
    return Producer(
        cluster.bootstrap,
        acks="all",
        request_timeout_ms=1500,
        delivery_timeout_ms=20_000,
        security=cluster.security,
    )


def longest_gap(acked: Iterable[float], start: float, end: float) -> float:
    """The longest time between acknowledgements from ``start`` to ``end`` (both counted)."""
    during = [start, *sorted(t for t in acked if start < t <= end), end]
    return max(b - a for a, b in itertools.pairwise(during))


def leftovers(run_id: int) -> list[str]:
    return sorted(name for _, name in names_by_run(PREFIX).get(run_id, set()))


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    run_dir = tmp_path_factory.mktemp("netns")
    with NetnsCluster(3, run_dir=run_dir, prefix=PREFIX) as c:
        try:
            c.wait_ready(60)
        except NetnsError:
            for node in c.node_ids:
                print(f"--- node {node} ---\n{c.logs(node)}", file=sys.stderr)
            raise
        yield c


# ---- the happy path ------------------------------------------------------------------------------


def test_the_pid_is_the_broker_inside_its_namespace(cluster: NetnsCluster) -> None:
    for node in cluster.node_ids:
        pid = cluster.pid(node)
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0].decode() == cluster.python and b"raftlog.cluster" in argv
        identify = subprocess.run(
            ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, timeout=5
        )
        assert identify.stdout.strip() == cluster.namespace(node)
    assert cluster.bootstrap == ",".join(f"{cluster.ip(n)}:9092" for n in cluster.node_ids)


def test_brokers_speak_mutual_tls_on_their_namespace_addresses(cluster: NetnsCluster) -> None:
    for node in cluster.node_ids:
        config = load_config(cluster.config_path(node))
        assert config.security.is_tls and config.security.super_users == ("User:chaos",)
        cert = x509.load_pem_x509_certificate(Path(config.security.cert_file).read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # the address the other brokers and the harness dial: their TLS checks it
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(cluster.ip(node))]
    request = broker_pb2.MetadataRequest()
    with cluster.security.channel(cluster.address(1)) as channel:
        assert broker_pb2_grpc.BrokerStub(channel).Metadata(request, timeout=5).brokers
    with (
        ClientSecurity.plaintext().channel(cluster.address(1)) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        broker_pb2_grpc.BrokerStub(channel).Metadata(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS handshake, no answer


def test_rf3_topic_produce_acks_all_and_consume_back(cluster: NetnsCluster) -> None:
    with Admin(cluster.bootstrap, timeout_s=20.0, security=cluster.security) as admin:
        admin.create_topic(TOPIC, partitions=1, replication_factor=3, min_insync_replicas=2)
        # create_topic returns once *one* broker shows leaders; a client asking a broker that
        # has not applied the topic yet fails at once with UNKNOWN_TOPIC_OR_PARTITION (reported)
        wait_for(
            "every broker to know the topic", lambda: leader_views(cluster, cluster.node_ids), 10
        )
        described = admin.describe_topic(TOPIC)
    assert sorted(described.partitions[0].replicas) == [1, 2, 3]
    values = [f"v{i}".encode() for i in range(5)]
    with Producer(
        cluster.bootstrap, acks="all", request_timeout_ms=10_000, security=cluster.security
    ) as producer:
        futures = [producer.send(TOPIC, v, partition=0) for v in values]
        producer.flush(20)
        offsets = [f.result(1).offset for f in futures]
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    assert read_all(cluster, len(values)) == values


def leader_views(cluster: NetnsCluster, nodes: Iterable[int]) -> dict[int, int] | None:
    """node → the leader of TOPIC-0 it reports, when every one of ``nodes`` names one."""
    answers = cluster.metadata_answers([TOPIC])
    views = {}
    for node in nodes:
        answer = answers.get(node)
        if answer is None or not answer.topics or answer.topics[0].error.code:
            return None
        views[node] = answer.topics[0].partitions[0].leader
    return views if all(leader >= 0 for leader in views.values()) else None


def read_all(cluster: NetnsCluster, count: int, timeout_s: float = 20.0) -> list[bytes | None]:
    got: list[bytes | None] = []
    with Consumer(
        cluster.bootstrap, request_timeout_ms=5000, security=cluster.security
    ) as consumer:
        consumer.assign([(TOPIC, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            got += [r.value for r in consumer.poll(timeout_ms=500)]
    return got


# ---- faults --------------------------------------------------------------------------------------


def test_partition_drops_node_to_node_packets_but_not_host_to_node(cluster: NetnsCluster) -> None:
    try:
        cluster.isolate(1)
        assert cluster.cuts == {(1, 2), (1, 3), (2, 1), (3, 1)}
        assert not cluster.can_connect(1, 2, timeout_s=1.0)  # silently dropped: a timeout
        assert not cluster.can_connect(2, 1, port=9192, timeout_s=1.0)
        assert cluster.can_connect(2, 3)  # the majority side still talks
        assert cluster.can_connect(None, 1)  # the harness still reaches the isolated node
        assert cluster.can_connect(None, 2)
    finally:
        cluster.heal()
    assert cluster.cuts == frozenset()
    assert cluster.can_connect(1, 2) and cluster.can_connect(2, 1, port=9192)


def test_reject_mode_fails_fast_and_one_way_cuts_stay_one_way(cluster: NetnsCluster) -> None:
    cluster.partition_mode = PartitionMode.PROHIBIT
    try:
        cluster.apply_grudge({3: {2}})  # 3 drops packets from 2: only 2 → 3 is cut
        assert cluster.cuts == {(2, 3)}
        started = time.monotonic()
        assert not cluster.can_connect(2, 3, timeout_s=5.0)
        assert time.monotonic() - started < 4.0  # refused at once, not timed out
        routes = subprocess.run(
            ["ip", "-n", cluster.namespace(2), "route"], capture_output=True, text=True, timeout=5
        ).stdout
        assert f"prohibit {cluster.ip(3)}" in routes
    finally:
        cluster.heal()
        cluster.partition_mode = PartitionMode.DROP
    assert cluster.can_connect(2, 3)


def test_isolated_leader_is_replaced_and_acks_all_writes_continue(cluster: NetnsCluster) -> None:
    (old_leader,) = wait_for("a leader for the topic", lambda: cluster.leaders([TOPIC]), 10)
    values = [f"w{i}".encode() for i in range(5)]
    # The producer starts once the majority agrees on the new leader, and bootstraps from it: a
    # client that learns a stale leader (the isolated broker) keeps sending to it until
    # delivery_timeout_ms — it does not refresh metadata on REQUEST_TIMED_OUT (reported). This
    # test is about the brokers' failover.
    majority = [n for n in cluster.node_ids if n != old_leader]

    def new_leader() -> int | None:
        views = leader_views(cluster, majority)
        agreed = set(views.values()) if views else set()
        return agreed.pop() if len(agreed) == 1 and old_leader not in agreed else None

    cluster.isolate(old_leader)
    try:
        started = time.monotonic()
        elected = wait_for("a new leader on the majority side", new_leader, 20)
        print(f"leader {old_leader} → {elected} {time.monotonic() - started:.1f} s after isolation")
        assert cluster.leaders([TOPIC]) == {elected}  # the highest epoch wins over the stale one
        with Producer(
            ",".join(map(cluster.address, majority)),
            acks="all",
            request_timeout_ms=5000,
            delivery_timeout_ms=30_000,
            security=cluster.security,
        ) as producer:
            futures = [producer.send(TOPIC, v, partition=0) for v in values]
            producer.flush(40)
            offsets = [f.result(1).offset for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + 5))
    finally:
        cluster.heal()

    def back_in_isr() -> bool:
        answers = cluster.metadata_answers([TOPIC]).values()
        newest = max(answers, key=lambda a: a.topics[0].partitions[0].leader_epoch)
        return sorted(newest.topics[0].partitions[0].isr) == [1, 2, 3]

    wait_for("the old leader back in the ISR", back_in_isr, 30)
    assert read_all(cluster, 10) == [f"v{i}".encode() for i in range(5)] + values


def test_a_broker_cut_off_for_long_is_unfenced_soon_after_the_heal(cluster: NetnsCluster) -> None:
    """Issue 21, root cause 1: with gRPC's defaults the heartbeat connection stayed "ready"
    through a silent cut while TCP backed off (0.2 s doubling), so after 13 s cut off a broker
    was unfenced ~12 s after the heal (12.3-12.7 s measured). Keepalive and bounded reconnects
    (proto/channel.py): 0.4-0.7 s."""
    controller = wait_for("a controller", lambda: cluster.controller(timeout_s=2), 10)
    victim = next(n for n in cluster.node_ids if n != controller)
    cluster.isolate(victim)
    try:
        wait_for(
            "the cut-off broker fenced",
            lambda: broker_states(cluster).get(victim, (False, True))[0],
            10,
        )
        time.sleep(13)  # long enough for TCP's backoff to reach seconds
    finally:
        cluster.heal()
    healed = time.monotonic()
    wait_for("the broker unfenced", lambda: broker_states(cluster).get(victim) == (False, True), 30)
    took = time.monotonic() - healed
    print(f"broker {victim} unfenced {took:.2f} s after the heal")
    assert took < 3.0, f"unfenced {took:.2f} s after the heal (bound 3 s)"
    cluster.wait_ready(20)


def test_an_isolated_controller_rejoins_soon_after_the_heal(cluster: NetnsCluster) -> None:
    """Issue 21, root cause 3: the metadata quorum redialled a cut peer once a second (its
    handshake deadline was 1 s), so the isolated old controller's broker, which must hear from
    the new Raft leader before it can heartbeat to it, was unfenced 1.11-1.21 s after the heal;
    with 0.4 s (QuorumConfig.connect_timeout_s) 0.29-0.55 s. The best of two rounds must be
    under 0.9 s (one slow round on a loaded machine is allowed)."""
    took = []
    for _ in range(2):
        controller = wait_for("a controller", lambda: cluster.controller(timeout_s=2), 10)
        cluster.isolate(controller)
        try:
            wait_for(
                "the isolated controller's broker fenced",
                lambda c=controller: broker_states(cluster).get(c, (False, True))[0],
                15,
            )
            time.sleep(6)
        finally:
            cluster.heal()
        healed = time.monotonic()
        wait_for(
            "the broker unfenced",
            lambda c=controller: broker_states(cluster).get(c) == (False, True),
            30,
        )
        took.append(time.monotonic() - healed)
        cluster.wait_ready(20)
    print(f"isolated controllers unfenced {', '.join(f'{t:.2f}' for t in took)} s after the heal")
    assert min(took) < 0.9, took


def test_a_broker_cut_off_from_the_controller_alone_keeps_leading_through_a_relay(
    cluster: NetnsCluster,
) -> None:
    """Issue 21, keep serving while a majority is connected: cut only the link between the
    controller and broker B (both still reach the third broker R). Before, B was fenced after one
    session (1.5 s) and its partitions stopped until re-elected elsewhere, and every partition
    stalled 5 s (the lag window) behind its unreachable ISR member. Now B heartbeats and sends
    its AlterPartitions through R (cluster/controller_link.py), and a silent follower leaves the
    ISR after replica_silence_ms_max (1 s): B is never fenced, keeps its leaderships, and no
    partition goes 2 s without an acknowledgement."""
    topic = "relay"
    with Admin(cluster.bootstrap, timeout_s=10.0, security=cluster.security) as admin:
        admin.create_topic(topic, 6, 3, min_insync_replicas=2)
    controller = wait_for("a controller", lambda: cluster.controller(timeout_s=2), 10)

    def leaders() -> dict[int, int] | None:
        answers = cluster.metadata_answers([topic]).values()
        newest = max(answers, key=lambda a: sum(p.leader_epoch for p in a.topics[0].partitions))
        found = {p.partition: p.leader for p in newest.topics[0].partitions}
        return found if len(found) == 6 and -1 not in found.values() else None

    before = wait_for("leaders for every partition", leaders, 20)
    victim = next(b for b in sorted(set(before.values())) if b != controller)
    acked: dict[int, list[float]] = {p: [] for p in range(6)}
    with fast_producer(cluster) as producer:

        def send_round(i: int) -> None:
            for p in range(6):
                future = producer.send(topic, f"{i}".encode(), partition=p)
                future.add_done_callback(
                    lambda f, p=p: f.exception() is None and acked[p].append(time.monotonic())
                )

        for i in range(10):  # warm up: every partition acknowledging before the cut
            send_round(i)
            time.sleep(0.05)
        producer.flush(20)
        cluster.apply_cuts([(controller, victim), (victim, controller)])
        cut_at = time.monotonic()
        fenced_seen = False
        try:
            i = 10
            while time.monotonic() - cut_at < 7.0:
                send_round(i)
                i += 1
                time.sleep(0.05)
                if i % 20 == 0:  # asked of the third broker: the victim cannot answer for him
                    third = next(n for n in cluster.node_ids if n not in (controller, victim))
                    with Admin(
                        cluster.address(third), timeout_s=3.0, security=cluster.security
                    ) as a:
                        states = {b.broker_id: b.fenced for b in a.describe_cluster().brokers}
                    fenced_seen |= states.get(victim, True)
        finally:
            cluster.heal()
        healed_at = time.monotonic()
        producer.flush(30)
    gaps = {p: round(longest_gap(times, cut_at, healed_at), 2) for p, times in acked.items()}
    print(f"controller {controller}, cut from broker {victim}; longest gap per partition {gaps}")
    assert not fenced_seen, "the broker cut off from the controller alone was fenced"
    assert leaders() == before, "leadership moved although every leader could keep serving"
    assert max(gaps.values()) < 2.0, gaps
    cluster.wait_ready(20)


def test_a_leader_cut_from_one_follower_hands_over_when_min_isr_needs_both(
    cluster: NetnsCluster,
) -> None:
    """Issue 21, a newly electable ISR member: min.insync.replicas 3 and the link between the
    leader L and follower B cut. L can commit nothing; the third replica C reaches both. Before,
    the partition stopped for the whole cut; now the controller sees L starved in the brokers'
    reachability reports (cluster/peers.py) and moves leadership to C (MoveLeader), through
    which L and B both replicate: acknowledgements resume within 2 s of the cut."""
    topic = "hub"
    with Admin(cluster.bootstrap, timeout_s=10.0, security=cluster.security) as admin:
        admin.create_topic(topic, 1, 3, min_insync_replicas=3)

    def state() -> tuple[int, list[int], int] | None:
        answers = cluster.metadata_answers([topic]).values()
        newest = max(answers, key=lambda a: a.topics[0].partitions[0].leader_epoch)
        p = newest.topics[0].partitions[0]
        full = p.leader >= 0 and len(p.isr) == 3
        return (p.leader, sorted(p.isr), p.leader_epoch) if full else None

    def settled() -> tuple[int, list[int], int] | None:
        """The same full state 2 s apart. The reachability reports may still show the cut of
        the test before for a moment after its heal, and move this new partition once: then
        the move's cooldown (2 s) must be over before our cut."""
        first = state()
        time.sleep(2.0)
        return first if first is not None and state() == first else None

    leader, _, epoch = wait_for("a settled leader with a full ISR", settled, 30)
    follower, third = (n for n in cluster.node_ids if n != leader)
    acked: list[float] = []
    with fast_producer(cluster) as producer:
        for i in range(10):
            producer.send(topic, f"w{i}".encode(), partition=0)
        producer.flush(20)
        cluster.apply_cuts([(leader, follower), (follower, leader)])
        cut_at = time.monotonic()
        try:
            i = 0
            while time.monotonic() - cut_at < 6.0:
                future = producer.send(topic, f"c{i}".encode(), partition=0)
                future.add_done_callback(
                    lambda f: f.exception() is None and acked.append(time.monotonic())
                )
                i += 1
                time.sleep(0.05)
            ended = time.monotonic()
            moved = state()
        finally:
            cluster.heal()
        producer.flush(30)
    gap = longest_gap(acked, cut_at, ended)
    print(f"leader {leader} cut from {follower}: now {moved}; longest gap {gap:.2f} s")
    assert moved is not None and moved[0] == third and moved[2] > epoch, moved
    assert gap < 2.0, gap
    cluster.wait_ready(20)


def test_a_starved_leader_hands_over_to_a_replica_heard_only_through_a_relay(
    tmp_path: Path,
) -> None:
    """Issue 21, seed-4242 run (a majorities ring and a bridge): a partition's leader L reached
    neither follower, the two followers reached each other, and the one the controller would
    move leadership to reached the controller only through a relay — so its own quorum member
    was cut off too, it never learnt that it leads, and the partition served nothing for 8 s.
    Here on 5 nodes: cut L from both followers A and B, and A (first in replica order) from the
    controller. A now learns the move through its relay (PartitionStates) and leads."""
    topic = "ring"
    with NetnsCluster(5, run_dir=tmp_path / "five", prefix="rlf") as five:
        five.wait_ready(60)
        with Admin(five.bootstrap, timeout_s=10.0, security=five.security) as admin:
            admin.create_topic(topic, 6, 3, min_insync_replicas=2)
        controller = wait_for("a controller", lambda: five.controller(timeout_s=2), 10)

        def partitions() -> list[tuple[int, int, tuple[int, ...], int]] | None:
            answers = five.metadata_answers([topic]).values()
            newest = max(answers, key=lambda a: sum(p.leader_epoch for p in a.topics[0].partitions))
            found = [
                (p.partition, p.leader, tuple(p.replicas), len(p.isr))
                for p in newest.topics[0].partitions
            ]
            return found if all(leader >= 0 and isr == 3 for _, leader, _, isr in found) else None

        settled = wait_for("every partition led with a full ISR", partitions, 30)
        index, leader, replicas, _ = next(
            p for p in settled if controller not in p[2]
        )  # 6 partitions of 3 replicas on 5 brokers: some leave the controller out
        first, second = (b for b in replicas if b != leader)
        cut = [(leader, first), (leader, second), (first, controller)]
        five.apply_cuts([*cut, *((b, a) for a, b in cut)])
        cut_at = time.monotonic()
        acked: list[float] = []
        try:
            with fast_producer(five) as producer:
                while time.monotonic() - cut_at < 6.0:
                    future = producer.send(topic, b"r", partition=index)
                    future.add_done_callback(
                        lambda f: f.exception() is None and acked.append(time.monotonic())
                    )
                    time.sleep(0.05)
                ended = time.monotonic()
                answers = five.metadata_answers([topic]).values()
        finally:
            five.heal()
        newest = max(answers, key=lambda a: a.topics[0].partitions[index].leader_epoch)
        now_led_by = newest.topics[0].partitions[index].leader
        gap = longest_gap(acked, cut_at, ended)
        print(
            f"{topic}-{index} on {replicas}: leader {leader} cut from {first} and {second}, "
            f"{first} from the controller {controller}: now led by {now_led_by}; "
            f"longest gap {gap:.2f} s"
        )
        assert now_led_by in (first, second), now_led_by
        assert any(t > cut_at + 1.0 for t in acked), "no acknowledgement after the move"
        assert gap < 3.0, gap


def test_kill_9_and_restart_rejoins_unfenced(cluster: NetnsCluster) -> None:
    victim = 3
    old_pid = cluster.pid(victim)
    assert old_pid is not None
    cluster.kill(victim)
    assert not cluster.is_running(victim) and process_gone(old_pid)
    wait_for(
        "the killed broker fenced or not alive",
        lambda: broker_states(cluster).get(victim, (True, False)) != (False, True),
        15,
    )
    new_pid = cluster.start(victim)
    assert new_pid != old_pid and cluster.is_running(victim)
    started = time.monotonic()
    wait_for(
        "the restarted broker unfenced and alive",
        lambda: broker_states(cluster).get(victim) == (False, True),
        10,
    )
    print(f"broker {victim} rejoined {time.monotonic() - started:.1f} s after restart")
    cluster.wait_ready(20)
    assert read_all(cluster, 10)[:5] == [f"v{i}".encode() for i in range(5)]


def test_pause_and_resume(cluster: NetnsCluster) -> None:
    victim = 2
    pid = cluster.pid(victim)
    assert pid is not None
    cluster.pause(victim)
    try:
        assert cluster.is_paused(victim) and cluster.is_running(victim)
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "T"
        wait_for(
            "the paused broker seen as not alive",
            lambda: not broker_states(cluster).get(victim, (True, False))[1],
            15,
        )
    finally:
        cluster.resume(victim)
    assert not cluster.is_paused(victim)
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "T"
    wait_for(
        "the resumed broker alive again",
        lambda: broker_states(cluster).get(victim) == (False, True),
        15,
    )
    assert cluster.pid(victim) == pid  # the same process, not a restart


def test_stop_is_a_clean_sigterm(cluster: NetnsCluster) -> None:
    assert cluster.stop(1, timeout_s=10)
    assert not cluster.is_running(1)
    with pytest.raises(NetnsError, match="not running"):
        cluster.kill(1)
    cluster.start(1)
    with pytest.raises(NetnsError, match="already running"):
        cluster.start(1)
    cluster.wait_ready(30)


def test_every_nemesis_drives_the_real_cluster(cluster: NetnsCluster) -> None:
    started = time.monotonic()
    context = NemesisContext(
        now_s=lambda: time.monotonic() - started,
        leaders=lambda: cluster.leaders([TOPIC]),
        controller=cluster.controller,
    )
    rng = nemesis_rng(7)
    # the storage nemeses (power-loss needs lazyfs mounts; disk restarts at once, so nothing
    # is left to see) are driven by whole runs in test_chaos_storage.py; membership moves
    # partitions through the admin API (no cut, kill or pause to see): whole runs, README
    for name in (n for n in NEMESIS_NAMES if n not in ("power-loss", "disk", "membership")):
        nemesis = make_nemesis(name)
        record = nemesis.start(cluster, rng, context)
        assert record is not None, name
        hit = (
            bool(cluster.cuts)
            or any(not cluster.is_running(n) for n in cluster.node_ids)
            or any(cluster.is_paused(n) for n in cluster.node_ids)
        )
        assert hit, f"{name} changed nothing"
        healed = nemesis.stop(cluster, context)
        assert healed is not None and healed.stop_s is not None
        assert healed.stop_s >= record.start_s
        assert not cluster.cuts, name
        assert all(cluster.is_running(n) and not cluster.is_paused(n) for n in cluster.node_ids)
        assert nemesis.final_heal(cluster, context) is None
    cluster.wait_ready(30)


# ---- clean-up ------------------------------------------------------------------------------------


def test_close_removes_everything_even_when_the_body_raises(tmp_path: Path) -> None:
    pids: list[int] = []
    run_id = -1
    with pytest.raises(RuntimeError, match="boom"), NetnsCluster(3, prefix=PREFIX) as c:
        run_id = c.run_id
        pids = [p for p in (c.pid(n) for n in c.node_ids) if p is not None]
        c.isolate(2)
        c.pause(3)
        assert leftovers(run_id)
        raise RuntimeError("boom")
    assert len(pids) == 3
    assert leftovers(run_id) == []
    assert all(process_gone(p) for p in pids)
    assert (c.run_dir / "node1.log").exists()  # the logs stay for the post-mortem
    c.close()  # idempotent
    with pytest.raises(NetnsError, match="not open"):
        c.isolate(1)


def test_close_can_delete_the_run_dir() -> None:
    c = NetnsCluster(1, prefix=PREFIX, delete_run_dir=True).open()
    try:
        run_dir, run_id = c.run_dir, c.run_id
        assert run_dir.exists()
    finally:
        c.close()
    assert not run_dir.exists() and leftovers(run_id) == []


def test_sigterm_to_the_harness_cleans_up(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from raftlog.chaos.netns import NetnsCluster
        with NetnsCluster(3, prefix={PREFIX!r}, run_dir={str(tmp_path)!r}) as c:
            print(c.run_id, *[c.pid(n) for n in c.node_ids], flush=True)
            time.sleep(60)
        """
    )
    harness = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert harness.stdout is not None
        run_id, *pids = map(int, harness.stdout.readline().split())
        assert leftovers(run_id) and len(pids) == 3
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(30) == 128 + signal.SIGTERM
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait(10)
    assert leftovers(run_id) == []
    wait_for("the brokers gone", lambda: all(process_gone(p) for p in pids), 5)


def private_prefix() -> str:
    """A prefix of this test process alone ("q" + 3 letters of the pid), so a concurrent run of
    this file can never clean up the fake leftovers made here."""
    n = os.getpid() % 26**3
    return "q" + "".join(chr(ord("a") + (n // 26**k) % 26) for k in range(3))


def test_cleanup_stale_removes_only_dead_runs() -> None:
    prefix = private_prefix()

    def names(run_id: int) -> set[str]:
        return {name for _, name in names_by_run(prefix).get(run_id, set())}

    with NetnsCluster(1, prefix=prefix, delete_run_dir=True) as live:
        # leftovers of a "crashed" run: a namespace with a process inside, a veth, a bridge
        stale = next(r for r in range(250, 0, -1) if r != live.run_id and not names(r))
        ns, bridge, veth = f"{prefix}{stale}n1", f"{prefix}br{stale}", f"{prefix}{stale}v1"
        orphan = None
        try:
            for argv in (
                ["ip", "netns", "add", ns],
                ["ip", "link", "add", bridge, "type", "bridge"],
                ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ):
                subprocess.run(argv, check=True, timeout=10)
            orphan = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
            wait_for("the orphan inside", lambda: netns_pids(ns), 5)
            removed = cleanup_stale(prefix)
            assert set(removed) == {ns, bridge, veth}
            assert names(stale) == set()
            assert orphan.wait(5) == -signal.SIGKILL
            # the live run (its lock is held) is untouched
            assert names(live.run_id) == {
                live.bridge,
                live.namespace(1),
                f"{prefix}{live.run_id}v1",
            }
            assert live.is_running(1)
        finally:
            if orphan is not None and orphan.poll() is None:
                orphan.kill()
                orphan.wait(5)
            for argv in (["ip", "link", "del", bridge], ["ip", "netns", "del", ns]):
                subprocess.run(argv, capture_output=True, timeout=10)
        live_run = live.run_id
    assert names(live_run) == set()
    for lock in LOCK_DIR.glob(f"{prefix}*.lock"):  # the prefix is ours alone: no one holds these
        lock.unlink()
