"""Log compaction on a real broker: a consumer group idle for longer than the offsets topic's
retention.ms keeps its committed offsets, because ``__consumer_offsets`` is compacted — the
cleaner removes superseded commits, never the latest one — also after the coordinator restarts
and reloads the offsets from the compacted log. A deleted group stays deleted through the same
cleaning, once its tombstones are gone too."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from raftlog.client import Admin, Consumer
from raftlog.client.local_cluster import LocalCluster
from raftlog.cluster.coordinator import OFFSETS_TOPIC, offsets_partition

from ..conftest import free_base_port
from .test_data_plane import wait_until

pytestmark = pytest.mark.integration

FAST: dict[str, dict[str, object]] = {
    "storage": {"retention_check_interval_ms": 200, "log_cleaner_interval_ms": 200}
}


@pytest.fixture
def plaintext_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """One broker, plaintext: with TLS only brokers may alter an internal topic's configs, and
    the test shortens the offsets topic's segment.ms and retention.ms."""
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.up(1, free_base_port(1), timeout_s=60, settings=FAST, plaintext=True, kafka=False)
    try:
        yield cluster
    finally:
        cluster.down(timeout_s=10)


def _consumer(cluster: LocalCluster, group: str) -> Consumer:
    consumer = Consumer(
        cluster.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=300,
        security=cluster.security,
    )
    consumer.subscribe(["work"])
    wait_until(lambda: consumer.poll(timeout_ms=200) is not None and consumer.assignment(), 20,
               f"{group} to get its partition")  # fmt: skip
    return consumer


def _committed(cluster: LocalCluster, group: str) -> int | None:
    try:
        with Admin(cluster.bootstrap, timeout_s=5, security=cluster.security) as admin:
            offsets = admin.describe_group(group).offsets
    except Exception:
        return None
    found = [p.committed for p in offsets if (p.topic, p.partition) == ("work", 0)]
    return found[0] if found else None


def _records(cluster: LocalCluster, partition: int) -> list[tuple[list[Any], bool]]:
    """(the decoded key, whether it is a tombstone) of every record of an offsets partition."""
    out = []
    with Consumer(cluster.bootstrap, security=cluster.security) as reader:
        tp = (OFFSETS_TOPIC, partition)
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        end = reader.end_offsets([tp])[tp]
        position = 0
        deadline = time.monotonic() + 10
        while position < end and time.monotonic() < deadline:
            for record in reader.poll(timeout_ms=200):
                out.append((cbor2.loads(record.key), record.value is None))
                position = record.offset + 1
            position = max(position, reader.position(tp))
    return out


def _records_in(cluster: LocalCluster, partition: int) -> int:
    return len(_records(cluster, partition))


def test_an_idle_group_keeps_its_offsets_past_retention_on_a_compacted_offsets_topic(
    plaintext_cluster: LocalCluster,
) -> None:
    cluster = plaintext_cluster
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("work", 1, 1)
    idle = _consumer(cluster, "idle")
    for offset in range(1, 31):  # 30 commits of the same key: 29 superseded
        idle.commit({("work", 0): offset})
    idle.close()
    partition = offsets_partition("idle")
    busy_id = next(f"busy{i}" for i in range(1000) if offsets_partition(f"busy{i}") == partition)
    gone_id = next(f"gone{i}" for i in range(1000) if offsets_partition(f"gone{i}") == partition)
    gone = _consumer(cluster, gone_id)
    gone.commit({("work", 0): 7})
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        refused = admin.delete_groups([gone_id])[gone_id]
        assert refused is not None and refused.name == "NON_EMPTY_GROUP"
        gone.close()  # it leaves: the group is empty
        assert admin.delete_groups([gone_id]) == {gone_id: None}
        again = admin.delete_groups([gone_id])[gone_id]
        assert again is not None and again.name == "GROUP_ID_NOT_FOUND"
        assert gone_id not in {g for g, _, _ in admin.list_groups()}
    assert _committed(cluster, gone_id) is None
    tombstones = {
        key[0] for key, dead in _records(cluster, partition) if dead and key[1] == gone_id
    }
    assert tombstones == {"o", "g", "m"}  # one per key the group had
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        assert dict(c for c in ((c.name, c.value) for c in admin.describe_configs(OFFSETS_TOPIC))
                    )["cleanup.policy"] == "compact"  # fmt: skip
        # segments roll every 300 ms of appends, retention would delete them after 1 s, and any
        # dirt is worth a pass
        admin.alter_configs(
            OFFSETS_TOPIC,
            {
                "segment.ms": "300",
                "retention.ms": "1000",
                "min.cleanable.dirty.ratio": "0.01",
                "delete.retention.ms": "500",
            },
        )
    # another group of the same offsets partition keeps committing: the partition rolls
    busy = _consumer(cluster, busy_id)
    stop = threading.Event()

    def commit_forever() -> None:
        offset = 0
        while not stop.is_set():
            offset += 1
            busy.commit({("work", 0): offset})
            time.sleep(0.05)

    committer = threading.Thread(target=commit_forever, daemon=True)
    committer.start()
    try:
        before = _records_in(cluster, partition)
        assert before >= 30
        time.sleep(1.5)  # past retention.ms of the idle group's commits
        # the cleaner has removed superseded commits (both groups'), the idle group's last one
        # stays
        wait_until(lambda: _records_in(cluster, partition) < before, 15, "the cleaner to run")
        assert _committed(cluster, "idle") == 30
        # the segments rolled every 300 ms and shrunk by compaction are merged as the cleaner
        # goes (Kafka's groupSegmentsBySize), not kept one descriptor each
        logs = cluster.dir / "node1" / "logs" / f"{OFFSETS_TOPIC}-{partition}"
        time.sleep(3)  # ten more rolls
        segments = sorted(p.name for p in logs.glob("*.log"))
        assert len(segments) <= 6, segments
        # past delete.retention.ms the cleaner drops the deleted group's tombstones as well
        wait_until(
            lambda: all(key[1] != gone_id for key, _ in _records(cluster, partition)),
            20,
            "the deleted group's records and tombstones to be cleaned away",
        )
    finally:
        stop.set()
        committer.join()
        busy.close()
    # the coordinator restarts and loads the offsets back from the compacted log
    cluster.kill(1)
    cluster.start(1)
    assert wait_until(lambda: _committed(cluster, "idle"), 20, "the offsets reloaded") == 30
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        assert gone_id not in {g for g, _, _ in admin.list_groups()}
    assert _committed(cluster, gone_id) is None  # deleted for good, tombstones and all


def test_offsets_expire_once_a_group_is_empty_for_the_retention(tmp_path: Path) -> None:
    """KIP-211 on a real broker (retention 3 s): the group whose member left loses its offsets
    and disappears, so does a standalone commit; the group with a live member keeps its offsets
    past twice the retention; after a restart nothing expired comes back."""
    cluster = LocalCluster(tmp_path / "cluster")
    settings = {
        **FAST,
        "groups": {"offsets_retention_ms": 3000, "offsets_retention_check_interval_ms": 200},
    }
    cluster.up(1, free_base_port(1), timeout_s=60, settings=settings, plaintext=True, kafka=False)
    stays: Consumer | None = None
    try:
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            admin.create_topic("work", 1, 1)
        stays, left = _consumer(cluster, "stays"), _consumer(cluster, "left")
        stays.commit({("work", 0): 4})
        left.commit({("work", 0): 5})
        left.close()
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            admin.reset_group_offsets("solo", "work", to="offset", offset=6)
        assert (_committed(cluster, "left"), _committed(cluster, "solo")) == (5, 6)
        started = time.monotonic()
        wait_until(
            lambda: _committed(cluster, "left") is None and _committed(cluster, "solo") is None,
            15,
            "the unused offsets to expire",
        )
        assert time.monotonic() - started > 2  # not before the retention
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            listed = {g for g, _, _ in admin.list_groups()}
        assert "left" not in listed and "solo" not in listed
        time.sleep(max(0.0, 6.5 - (time.monotonic() - started)))  # twice the retention
        assert _committed(cluster, "stays") == 4  # a member: kept
        cluster.kill(1)  # the member stays: the reloaded group has it, and keeps its offsets
        cluster.start(1)
        assert wait_until(lambda: _committed(cluster, "stays"), 20, "the offsets reloaded") == 4
        assert _committed(cluster, "left") is None and _committed(cluster, "solo") is None
    finally:
        if stays is not None:
            stays.close()
        cluster.down(timeout_s=10)
