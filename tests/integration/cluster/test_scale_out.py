"""Scale-out on real clusters: brokers that are not Raft voters (observers) serve partitions like
any broker, follow the metadata from the voters, and lose nothing acknowledged when they die."""

from __future__ import annotations

import time

import pytest

from raftlog.client import Admin, Producer
from raftlog.proto import broker_pb2

from ..conftest import ClusterFactory
from .test_data_plane import FAST, assert_acknowledged_in_place, stub_for, wait_until

pytestmark = pytest.mark.integration


def test_seven_brokers_three_voters_lose_nothing_when_observers_and_the_controller_die(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(7, voters=3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    quorum = admin.describe_quorum()
    assert sorted(v.node_id for v in quorum.voters) == [1, 2, 3]
    assert len(admin.describe_cluster().brokers) == 7

    admin.create_topic("spread", 14, 3, min_insync_replicas=2)
    partitions = admin.describe_topic("spread").partitions
    assert {b for p in partitions for b in p.replicas} == set(range(1, 8))  # all seven serve
    assert {p.leader for p in partitions} >= {4, 5, 6, 7}  # observers lead too

    # every broker, voter or observer, applies the same metadata (the same versions)
    def same_view() -> bool:
        versions = {
            stub_for(cluster, b).Metadata(broker_pb2.MetadataRequest(), timeout=5).metadata_version
            for b in range(1, 8)
        }
        return len(versions) == 1

    wait_until(same_view, 10, "every broker at the same metadata version")

    controller = admin.describe_cluster().controller_id
    assert controller in (1, 2, 3)
    victims = [5, 6, controller]
    futures = []
    with Producer(
        cluster.bootstrap,
        linger_ms=2,
        request_timeout_ms=5000,
        delivery_timeout_ms=60_000,
        security=cluster.security,
    ) as producer:
        for i in range(6000):
            futures.append(producer.send("spread", f"v{i}".encode(), key=str(i).encode()))
            if i % 100 == 0:
                time.sleep(0.05)  # a steady load across the kills, not one burst before them
            if i == 2000:
                for victim in victims:  # kill -9: two observers and the active controller
                    cluster.kill(victim)
            if i == 4000:
                time.sleep(2)  # a new controller fences the dead and moves their leaderships
                for victim in victims:
                    cluster.start(victim, wait=False)
        producer.flush(90)
    acked = [f.result() for f in futures if f.exception() is None]
    failed = [f.exception() for f in futures if f.exception() is not None]
    assert len(acked) == 6000, failed[:3]  # retries carried every record across the kills
    cluster.wait_ready(60)
    assert admin.describe_cluster().controller_id != controller

    assert_acknowledged_in_place(cluster, "spread", acked)

    # the restarted observers caught up (a fresh snapshot or the voters' command tail)
    wait_until(same_view, 10, "the restarted brokers at the others' metadata version")
    admin.close()
