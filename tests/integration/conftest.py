"""Real brokers on loopback: a factory for local clusters that always cleans up."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftlog.client.local_cluster import LocalCluster
from raftlog.client.processes import port_free


def free_base_port(nodes: int) -> int:
    """A base port whose gRPC (base..), Raft (base+100..), metrics (base+300..) and Kafka
    (base+400..) ports are all free."""
    for _ in range(200):
        # below Linux's ephemeral range (32768-60999): a port there can be taken by any outgoing
        # connection between this check and the broker's bind (it failed CI once that way)
        base = random.randrange(20_000, 32_300, 10)
        ports = [base + offset + i for offset in (0, 100, 300, 400) for i in range(nodes)]
        if all(port_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """``make_cluster(nodes=3, voters=None, **settings)`` starts a cluster (``voters``: how many
    of the brokers form the metadata quorum; by default all of them, up to 5 — the tests of a
    5-broker cluster kill two voters and expect a majority left); all are stopped at the end."""
    started: list[LocalCluster] = []

    def factory(
        nodes: int = 3, voters: int | None = None, **settings: dict[str, object]
    ) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(started)}")
        started.append(cluster)
        if voters is None:
            voters = min(nodes, 5)
        cluster.up(nodes, free_base_port(nodes), timeout_s=60, settings=settings, voters=voters)
        return cluster

    yield factory
    for cluster in started:
        cluster.down(timeout_s=10)
