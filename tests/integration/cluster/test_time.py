"""Time on a real broker: retention.ms, segment.ms and flush.ms act on wall time.

The bug: the broker handed its monotonic clock to the logs, which compared it with record
timestamps (wall time): ``retention.ms`` never deleted anything, ``flush.ms`` never fired and a
reopened active segment did not roll by ``segment.ms``. Each test here failed on that code.
"""

from __future__ import annotations

import time
from pathlib import Path

import lmdb
import pytest

from raftlog.client import Admin, Consumer, Producer
from raftlog.client.local_cluster import LocalCluster

from ..conftest import ClusterFactory
from .test_data_plane import wait_until

pytestmark = pytest.mark.integration

FAST_CHECKS = {"storage": {"retention_check_interval_ms": 300}}


def _offsets(cluster: LocalCluster, topic: str) -> tuple[int, int]:
    """(earliest, latest = high watermark) of partition 0."""
    with Consumer(cluster.bootstrap, security=cluster.security) as consumer:
        key = (topic, 0)
        return consumer.beginning_offsets([key])[key], consumer.end_offsets([key])[key]


def _produce(cluster: LocalCluster, topic: str, count: int, size: int = 500) -> None:
    with Producer(cluster.bootstrap, security=cluster.security, linger_ms=0) as producer:
        for i in range(count):  # one batch each: segments of a few batches
            producer.send(topic, bytes([i % 256]) * size, partition=0).result(timeout=30)


def _segments(cluster: LocalCluster, topic: str) -> list[Path]:
    return sorted((cluster.dir / "node1" / "logs" / f"{topic}-0").glob("*.log"))


def test_retention_ms_deletes_old_segments_and_never_above_the_high_watermark(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1, **FAST_CHECKS)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("rt", 1, 1, configs={"retention.ms": "2000", "segment.bytes": "4096"})
    _produce(cluster, "rt", 60)
    assert len(_segments(cluster, "rt")) > 3
    wait_until(lambda: _offsets(cluster, "rt")[0] > 0, 20, "retention to delete a segment")
    earliest, latest = _offsets(cluster, "rt")
    assert 0 < earliest <= latest == 60
    # the newest records are younger than retention.ms: what is left starts at a segment
    # boundary and still reaches the end
    assert len(_segments(cluster, "rt")) >= 1


def test_segment_ms_counts_from_the_first_batch_across_a_restart(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("sm", 1, 1, configs={"segment.ms": "3000"})
    _produce(cluster, "sm", 1)
    cluster.kill(1)
    time.sleep(3.5)  # the active segment is now older than segment.ms
    cluster.start(1)
    _produce(cluster, "sm", 1)  # right after the restart: this append must roll
    assert len(_segments(cluster, "sm")) == 2


def test_flush_ms_fsyncs_an_idle_partition(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("fl", 1, 1, configs={"flush.ms": "500"})
    _produce(cluster, "fl", 3)
    state = str(cluster.dir / "node1" / "state")

    def recovery_point() -> int:
        env = lmdb.open(state, readonly=True, lock=True, max_dbs=6, subdir=True)
        try:
            db = env.open_db(b"recovery_point", create=False)
            with env.begin(db=db) as txn:
                raw = txn.get(b"fl-0")
            return -1 if raw is None else int.from_bytes(raw, "big", signed=True)
        finally:
            env.close()

    # nothing else will append: only the periodic flush.ms check can move the recovery point
    wait_until(lambda: recovery_point() == 3, 10, "flush.ms to fsync the idle partition")
