"""Three Kafka client libraries behind one small interface, for the Kafka-listener tests.

confluent-kafka (librdkafka, C), kafka-python (pure Python) and aiokafka (asyncio) each: create a
topic with their admin client, produce with acks=all and idempotence, run one consumer-group
member, and read a group's committed offsets. Every call reaches the cluster over TLS with a
client certificate (``LocalCluster.kafka_client_config``).

A group member processes records exactly once: it keeps what a poll returned as *pending*,
commits the offsets after them synchronously, and only then counts them as processed; when the
commit fails (a rebalance took the partition) the pending records are dropped and, for
partitions it still owns, it seeks back so it reads them again. A record processed twice is then
a broker bug (a commit accepted from a member that no longer owned the partition, or a committed
offset not honoured), never the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftlog.client.local_cluster import LocalCluster

Record = tuple[int, int, bytes]  # partition, offset, value


@dataclass
class Member:
    """What one group member did; read by the test while it runs."""

    name: str
    processed: list[Record] = field(default_factory=list)
    assignments: list[list[int]] = field(default_factory=list)
    failed_commits: int = 0
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, batch: list[Record]) -> None:
        with self.lock:
            self.processed.extend(batch)

    def count(self) -> int:
        with self.lock:
            return len(self.processed)


class KafkaLibrary(Protocol):
    name: str

    def create_topic(self, topic: str, partitions: int, replication_factor: int) -> None: ...

    def produce(
        self, topic: str, values: list[bytes], partitions: int, acked: dict[bytes, tuple[int, int]]
    ) -> None: ...

    def member(self, topic: str, group: str, member: Member, stop: threading.Event) -> None: ...

    def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]: ...


STEP = 100  # records sent before waiting for their acknowledgements
STEP_PAUSE_S = 0.02  # so a leader kill lands in the middle of the stream
POLL_RECORDS = 50  # records a member takes per poll ...
PROCESS_S = 0.02  # ... and "processes" this long: a joining member finds work left


def _pending_by_partition(pending: list[Record]) -> dict[int, tuple[int, int]]:
    """partition -> (first, last) offset among the pending records."""
    spans: dict[int, tuple[int, int]] = {}
    for p, offset, _ in pending:
        first, last = spans.get(p, (offset, offset))
        spans[p] = (min(first, offset), max(last, offset))
    return spans


class Confluent:
    name = "confluent-kafka"

    def __init__(self, cluster: LocalCluster) -> None:
        self.config = cluster.kafka_client_config()

    def create_topic(self, topic: str, partitions: int, replication_factor: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.config)
        futures = admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, config={"min.insync.replicas": "2"})]
        )
        futures[topic].result(30)

    def produce(
        self, topic: str, values: list[bytes], partitions: int, acked: dict[bytes, tuple[int, int]]
    ) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {
                **self.config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 60_000,
            }
        )
        errors: list[str] = []

        def report(err: Any, message: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                acked[message.value()] = (message.partition(), message.offset())

        for start in range(0, len(values), STEP):
            for i, value in enumerate(values[start : start + STEP], start):
                producer.produce(
                    topic, value, key=value, partition=i % partitions, on_delivery=report
                )
            producer.flush(60)
            assert not errors, errors[:3]
            time.sleep(STEP_PAUSE_S)

    def member(self, topic: str, group: str, member: Member, stop: threading.Event) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            {
                **self.config,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        consumer.subscribe(
            [topic],
            on_assign=lambda c, ps: member.assignments.append(sorted(p.partition for p in ps)),
        )
        try:
            while not stop.is_set():
                messages = consumer.consume(num_messages=POLL_RECORDS, timeout=0.5)
                pending = [
                    (m.partition(), m.offset(), m.value()) for m in messages if not m.error()
                ]
                if not pending:
                    continue
                time.sleep(PROCESS_S)
                spans = _pending_by_partition(pending)
                try:
                    consumer.commit(
                        offsets=[
                            TopicPartition(topic, p, last + 1) for p, (_, last) in spans.items()
                        ],
                        asynchronous=False,
                    )
                except KafkaException:
                    member.failed_commits += 1
                    for p, (first, _) in spans.items():
                        with contextlib.suppress(KafkaException):
                            consumer.seek(TopicPartition(topic, p, first))
                    continue
                member.done(pending)
        except BaseException as exc:
            member.error = exc
        finally:
            consumer.close()

    def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self.config, "group.id": group, "enable.auto.commit": False})
        try:
            found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
            return {tp.partition: tp.offset for tp in found}
        finally:
            consumer.close()


class KafkaPython:
    name = "kafka-python"

    def __init__(self, cluster: LocalCluster) -> None:
        config = cluster.kafka_client_config()
        self.bootstrap = config["bootstrap.servers"].split(",")
        self.security = {
            "security_protocol": "SSL",
            "ssl_cafile": config["ssl.ca.location"],
            "ssl_certfile": config["ssl.certificate.location"],
            "ssl_keyfile": config["ssl.key.location"],
        }

    def create_topic(self, topic: str, partitions: int, replication_factor: int) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, **self.security)
        try:
            admin.create_topics(
                [
                    NewTopic(
                        topic,
                        partitions,
                        replication_factor,
                        topic_configs={"min.insync.replicas": "2"},
                    )
                ]
            )
        finally:
            admin.close()

    def produce(
        self, topic: str, values: list[bytes], partitions: int, acked: dict[bytes, tuple[int, int]]
    ) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            delivery_timeout_ms=60_000,
            **self.security,
        )
        try:
            for start in range(0, len(values), STEP):
                futures = [
                    (value, producer.send(topic, value, key=value, partition=i % partitions))
                    for i, value in enumerate(values[start : start + STEP], start)
                ]
                for value, future in futures:
                    metadata = future.get(timeout=60)
                    acked[value] = (metadata.partition, metadata.offset)
                time.sleep(STEP_PAUSE_S)
        finally:
            producer.close(timeout=10)

    def member(self, topic: str, group: str, member: Member, stop: threading.Event) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                member.assignments.append(sorted(tp.partition for tp in assigned))

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            **self.security,
        )
        consumer.subscribe([topic], listener=Listener())
        try:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500, max_records=POLL_RECORDS)
                pending = [
                    (tp.partition, r.offset, r.value) for tp, rs in batches.items() for r in rs
                ]
                if not pending:
                    continue
                time.sleep(PROCESS_S)
                spans = _pending_by_partition(pending)
                try:
                    consumer.commit(
                        {
                            TopicPartition(topic, p): OffsetAndMetadata(last + 1, "", -1)
                            for p, (_, last) in spans.items()
                        }
                    )
                except KafkaError:
                    member.failed_commits += 1
                    for p, (first, _) in spans.items():
                        with contextlib.suppress(Exception):
                            consumer.seek(TopicPartition(topic, p), first)
                    continue
                member.done(pending)
        except BaseException as exc:
            member.error = exc
        finally:
            consumer.close()

    def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            **self.security,
        )
        try:
            return {
                p: consumer.committed(TopicPartition(topic, p)) or -1 for p in range(partitions)
            }
        finally:
            consumer.close()


class AioKafka:
    name = "aiokafka"

    def __init__(self, cluster: LocalCluster) -> None:
        config = cluster.kafka_client_config()
        self.bootstrap = config["bootstrap.servers"]
        self.files = (
            config["ssl.ca.location"],
            config["ssl.certificate.location"],
            config["ssl.key.location"],
        )

    def _security(self) -> dict[str, Any]:
        from aiokafka.helpers import create_ssl_context

        ca, cert, key = self.files
        context = create_ssl_context(cafile=ca, certfile=cert, keyfile=key)
        return {"security_protocol": "SSL", "ssl_context": context}

    def create_topic(self, topic: str, partitions: int, replication_factor: int) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self._security())
            await admin.start()
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            partitions,
                            replication_factor,
                            topic_configs={"min.insync.replicas": "2"},
                        )
                    ]
                )
            finally:
                await admin.close()

        asyncio.run(create())

    def produce(
        self, topic: str, values: list[bytes], partitions: int, acked: dict[bytes, tuple[int, int]]
    ) -> None:
        from aiokafka import AIOKafkaProducer

        async def produce() -> None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=60_000,
                **self._security(),
            )
            await producer.start()
            try:
                for start in range(0, len(values), STEP):
                    futures = [
                        (
                            value,
                            await producer.send(topic, value, key=value, partition=i % partitions),
                        )
                        for i, value in enumerate(values[start : start + STEP], start)
                    ]
                    for value, future in futures:
                        metadata = await asyncio.wait_for(future, 60)
                        acked[value] = (metadata.partition, metadata.offset)
                    await asyncio.sleep(STEP_PAUSE_S)
            finally:
                await producer.stop()

        asyncio.run(produce())

    def member(self, topic: str, group: str, member: Member, stop: threading.Event) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
        from aiokafka.errors import KafkaError

        # aiokafka rebalances in a background task, between a getmany and the commit after it,
        # and resets the positions of the partitions it gets back to their committed offsets: a
        # batch fetched before a revocation is dropped uncommitted, and after a commit that a
        # rebalance overlapped, a partition still owned is moved past the batch just committed.
        # (The revocation must not wait for the commit: a commit retries until the coordinator
        # is known, which the rebalance task finds — waiting deadlocked 1 run in 5.)
        revocations = [0]

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                revocations[0] += 1

            async def on_partitions_assigned(self, assigned: Any) -> None:
                member.assignments.append(sorted(tp.partition for tp in assigned))

        async def run() -> None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                **self._security(),
            )
            consumer.subscribe([topic], listener=Listener())
            await consumer.start()
            try:
                while not stop.is_set():
                    seen_revocations = revocations[0]
                    batches = await consumer.getmany(timeout_ms=500, max_records=POLL_RECORDS)
                    pending = [
                        (tp.partition, r.offset, r.value) for tp, rs in batches.items() for r in rs
                    ]
                    if not pending:
                        continue
                    await asyncio.sleep(PROCESS_S)
                    spans = _pending_by_partition(pending)
                    if revocations[0] != seen_revocations:
                        continue  # fetched before a rebalance: read again from the commits
                    offsets = {TopicPartition(topic, p): last + 1 for p, (_, last) in spans.items()}
                    try:
                        await consumer.commit(offsets)
                    except KafkaError:
                        member.failed_commits += 1
                        for p, (first, _) in spans.items():
                            with contextlib.suppress(Exception):
                                consumer.seek(TopicPartition(topic, p), first)
                        continue
                    if revocations[0] != seen_revocations:
                        owned = consumer.assignment()
                        for tp, after in offsets.items():
                            if tp in owned and await consumer.position(tp) < after:
                                consumer.seek(tp, after)
                    member.done(pending)
            finally:
                await consumer.stop()

        try:
            asyncio.run(run())
        except BaseException as exc:
            member.error = exc

    def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def read() -> dict[int, int]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=group,
                enable_auto_commit=False,
                **self._security(),
            )
            await consumer.start()
            try:
                out = {}
                for p in range(partitions):
                    found = await consumer.committed(TopicPartition(topic, p))
                    out[p] = -1 if found is None else found
                return out
            finally:
                await consumer.stop()

        return asyncio.run(read())


LIBRARIES = {"confluent-kafka": Confluent, "kafka-python": KafkaPython, "aiokafka": AioKafka}
