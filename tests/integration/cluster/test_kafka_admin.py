"""A Kafka admin client (confluent-kafka's AdminClient) drives raftlog through the Kafka listener:
topics, configs, the cluster, offsets and groups — and what raftlog does not do is a typed error.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from raftlog.client import Admin

from ..conftest import ClusterFactory


def _result(future: Any) -> Any:
    return future.result(30)


def test_a_kafka_admin_client_manages_topics_configs_offsets_and_groups(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, groups={"initial_rebalance_delay_ms": 0})
    config = cluster.kafka_client_config()
    admin = AdminClient(config)

    # topics: defaults filled in (-1 partitions and replication factor), then described
    _result(
        admin.create_topics([NewTopic("events", 2, 3, config={"retention.ms": "3600000"})])[
            "events"
        ]
    )
    _result(admin.create_topics([NewTopic("defaults")])["defaults"])
    with Admin(cluster.bootstrap, security=cluster.security) as ours:
        ours.wait_for_topic("events")
        ours.wait_for_topic("defaults")
        described = ours.describe_topic("defaults")
    assert len(described.partitions) == 3  # the cluster's topic_defaults
    topics = admin.list_topics(timeout=10).topics
    assert {"events", "defaults"} <= set(topics)
    assert len(topics["events"].partitions) == 2
    assert sorted(topics["events"].partitions[0].replicas) == [1, 2, 3]

    # configs: described, changed incrementally, replaced whole
    resource = ConfigResource("topic", "events")
    entries = _result(admin.describe_configs([resource])[resource])
    assert entries["retention.ms"].value == "3600000"
    assert not entries["retention.ms"].is_default
    assert entries["min.insync.replicas"].value == "2"
    changed = ConfigResource(
        "topic",
        "events",
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    _result(admin.incremental_alter_configs([changed])[changed])
    entries = _result(admin.describe_configs([resource])[resource])
    assert entries["retention.ms"].value == "7200000"
    bad = ConfigResource(
        "topic",
        "events",
        incremental_configs=[
            ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    with pytest.raises(KafkaException):
        _result(admin.incremental_alter_configs([bad])[bad])
    replaced = ConfigResource("topic", "events", set_config={"min.insync.replicas": "2"})
    with pytest.warns(DeprecationWarning):  # Kafka's AlterConfigs: still served, still tested
        altered = admin.alter_configs([replaced])
    _result(altered[replaced])  # retention.ms, not named, reverts to its default
    entries = _result(admin.describe_configs([resource])[resource])
    assert entries["retention.ms"].is_default

    # the cluster
    described_cluster = _result(admin.describe_cluster())
    assert sorted(node.id for node in described_cluster.nodes) == [1, 2, 3]
    assert described_cluster.controller is not None

    # offsets: earliest, latest, by timestamp
    # one batch per record: the broker never parses records, so a timestamp finds the first
    # *batch* whose newest record is at or after it (Kafka decompresses to find the record)
    producer = Producer({**config, "acks": "all"})
    for i in range(10):
        producer.produce("events", b"%d" % i, partition=0, timestamp=1_000_000 + i)
        producer.flush(30)
    tp = TopicPartition("events", 0)
    offsets = admin.list_offsets({tp: OffsetSpec.earliest()})
    assert _result(offsets[tp]).offset == 0
    assert _result(admin.list_offsets({tp: OffsetSpec.latest()})[tp]).offset == 10
    assert _result(admin.list_offsets({tp: OffsetSpec.for_timestamp(1_000_004)})[tp]).offset == 4

    # groups: a member commits, the group is listed, described and its offsets read
    consumer = Consumer({**config, "group.id": "audit", "auto.offset.reset": "earliest"})
    consumer.subscribe(["events"])
    read = 0
    deadline = time.monotonic() + 30
    while read < 10 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            read += 1
    consumer.commit(asynchronous=False)
    listed = _result(admin.list_consumer_groups())
    assert "audit" in {g.group_id for g in listed.valid}
    group = _result(admin.describe_consumer_groups(["audit"])["audit"])
    assert group.state.name == "STABLE"
    assert len(group.members) == 1
    with pytest.raises(KafkaException, match="NON_EMPTY_GROUP"):  # a member is in it
        _result(admin.delete_consumer_groups(["audit"])["audit"])
    consumer.close()
    _result(admin.delete_consumer_groups(["audit"])["audit"])  # empty now: it and its offsets
    assert "audit" not in {g.group_id for g in _result(admin.list_consumer_groups()).valid}
    with pytest.raises(KafkaException, match="GROUP_ID_NOT_FOUND"):
        _result(admin.delete_consumer_groups(["audit"])["audit"])

    # more partitions (Kafka's CreatePartitions): the new ones get leaders and take records
    _result(admin.create_partitions([NewPartitions("events", 4)])["events"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        grown = admin.list_topics("events", timeout=10).topics["events"].partitions
        if len(grown) == 4 and all(p.leader >= 0 for p in grown.values()):
            break
        time.sleep(0.2)
    assert len(grown) == 4 and all(p.leader >= 0 for p in grown.values())
    with pytest.raises(KafkaException):  # fewer partitions is no change
        _result(admin.create_partitions([NewPartitions("events", 2)])["events"])

    # what raftlog does not do is refused with a code
    with pytest.raises(KafkaException):
        _result(
            admin.create_topics([NewTopic("placed", 1, replica_assignment=[[1, 2, 3]])])["placed"]
        )

    # deleting a topic: gone from every broker's metadata soon after (each applies it)
    _result(admin.delete_topics(["defaults"])["defaults"])
    deadline = time.monotonic() + 20
    absent = 0
    while absent < 5 and time.monotonic() < deadline:
        absent = absent + 1 if "defaults" not in admin.list_topics(timeout=10).topics else 0
        time.sleep(0.1)
    assert absent == 5, "the deleted topic is still listed"
