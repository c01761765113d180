"""The Kafka listener on a real cluster: one stored format for both protocols, the same users and
ACLs as the gRPC listeners, and what a malformed or unsupported request gets.

- A record produced with our gRPC ``Producer`` is read by a Kafka consumer (confluent-kafka) with
  the same key, value, headers and timestamp, and the other way round — the broker re-encodes
  nothing.
- SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 log in as the metadata's users; a wrong password
  is refused; the ACLs decide what a user may do, exactly as over gRPC; before authentication a
  TLS client without a certificate is served nothing but ApiVersions and SASL.
- A broker cut off from the controller for a session names no leader for the partitions it
  led (its leaderships have moved), so a client asks another broker instead of retrying it.
- Raw protocol: ApiVersions of an unknown version answers UNSUPPORTED_VERSION (in v0) with the
  supported list; an unknown api key or a garbled body closes the connection; the listener keeps
  serving afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import time
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka import Producer as KafkaProducer

from raftlog.client import Admin, Consumer, Producer
from raftlog.client.acl_admin import Acl
from raftlog.client.local_cluster import LocalCluster
from raftlog.cluster.kafka_apis import SUPPORTED
from raftlog.proto.kafka_codec import decode, encode

from ..conftest import ClusterFactory


def _kafka_read(config: dict[str, str], topic: str, count: int) -> list[Any]:
    consumer = KafkaConsumer({**config, "group.id": "reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                out.append(message)
    finally:
        consumer.close()
    return out


def test_a_record_crosses_between_the_protocols_unchanged(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    config = cluster.kafka_client_config()
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("both", 1, 3, min_insync_replicas=2)
        admin.wait_for_topic("both")
    headers = [("trace", b"abc"), ("empty", b""), ("none", None)]
    with Producer(cluster.bootstrap, security=cluster.security, acks=-1) as producer:
        sent = producer.send(
            "both", b"grpc-value", key=b"grpc-key", headers=headers, timestamp_ms=1_700_000_000_123
        ).result(30)
    kafka_producer = KafkaProducer({**config, "acks": "all", "enable.idempotence": True})
    reports: list[Any] = []
    kafka_producer.produce(
        "both",
        b"kafka-value",
        key=b"kafka-key",
        headers=[("trace", b"xyz"), ("none", None)],
        timestamp=1_700_000_000_456,
        on_delivery=lambda err, message: reports.append(err or message.offset()),
    )
    kafka_producer.flush(30)
    assert reports == [sent.offset + 1]

    first, second = _kafka_read(config, "both", 2)
    assert (first.offset(), first.key(), first.value()) == (sent.offset, b"grpc-key", b"grpc-value")
    assert first.headers() == headers
    assert first.timestamp()[1] == 1_700_000_000_123
    assert (second.key(), second.value(), second.timestamp()[1]) == (
        b"kafka-key",
        b"kafka-value",
        1_700_000_000_456,
    )

    with Consumer(cluster.bootstrap, security=cluster.security) as consumer:
        consumer.assign([("both", 0)])
        consumer.seek(("both", 0), 0)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while len(records) < 2 and time.monotonic() < deadline:
            records += consumer.poll(500)
    ours = records[1]
    assert (ours.offset, ours.key, ours.value) == (sent.offset + 1, b"kafka-key", b"kafka-value")
    assert ours.headers == (("trace", b"xyz"), ("none", None))
    assert ours.timestamp_ms == 1_700_000_000_456


def _sasl(cluster: LocalCluster, mechanism: str, user: str, password: str) -> dict[str, str]:
    return {
        "bootstrap.servers": cluster.kafka_bootstrap,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(cluster.tls_dir / "ca.pem"),
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def _produce(config: dict[str, str], topic: str, timeout_s: float = 15) -> Any:
    """One record; the delivery report's error, or its offset."""
    producer = KafkaProducer({**config, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
    reports: list[Any] = []
    producer.produce(topic, b"v", on_delivery=lambda err, m: reports.append(err or m.offset()))
    producer.flush(timeout_s + 5)
    assert len(reports) == 1
    return reports[0]


def test_sasl_users_and_acls_are_the_grpc_listeners(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("ledger", 1, 3, min_insync_replicas=2)
        admin.create_topic("secret", 1, 3, min_insync_replicas=2)
        admin.wait_for_topic("ledger")
        admin.wait_for_topic("secret")
        admin.upsert_user("alice", "alice-pw", mechanism="SCRAM-SHA-256")
        admin.upsert_user("bob", "bob-pw", mechanism="SCRAM-SHA-512")
        admin.create_acls(
            [
                Acl("User:alice", "topic", "ledger", "write"),
                Acl("User:bob", "topic", "ledger", "write"),
            ]
        )
    for mechanism, user in (
        ("SCRAM-SHA-256", "alice"),
        ("PLAIN", "alice"),
        ("SCRAM-SHA-512", "bob"),
    ):
        config = _sasl(cluster, mechanism, user, f"{user}-pw")
        assert isinstance(_produce(config, "ledger"), int), (mechanism, user)
        denied = _produce(config, "secret")
        assert isinstance(denied, KafkaError)
        assert denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # a SCRAM login with the other hash than the user's credential, and a wrong password, fail
    for config in (
        _sasl(cluster, "SCRAM-SHA-512", "alice", "alice-pw"),
        _sasl(cluster, "SCRAM-SHA-256", "alice", "wrong"),
        _sasl(cluster, "PLAIN", "mallory", "x"),
    ):
        failed = _produce(config, "ledger", timeout_s=2)
        assert isinstance(failed, KafkaError), config["sasl.username"]


# ---- raw protocol -------------------------------------------------------------------------------


class _Raw:
    """One Kafka connection spoken by hand (kafka_codec), TLS with the admin certificate."""

    def __init__(self, cluster: LocalCluster, certificate: bool = True, node: int = 1) -> None:
        host, port = cluster.nodes[node].kafka.rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(cluster.tls_dir / "ca.pem"))
        if certificate:
            config = cluster.kafka_client_config()
            context.load_cert_chain(config["ssl.certificate.location"], config["ssl.key.location"])
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.correlation = 0

    def send(self, api_key: int, version: int, body: bytes, header_version: int = 1) -> None:
        self.correlation += 1
        header = encode(
            "RequestHeader",
            header_version,
            {
                "request_api_key": api_key,
                "request_api_version": version,
                "correlation_id": self.correlation,
                "client_id": "raw",
            },
        )
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def receive(self) -> bytes:
        """The answer after its correlation id (b"" when the broker closed the connection)."""
        head = self._exactly(4)
        if not head:
            return b""
        data = self._exactly(struct.unpack(">i", head)[0])
        assert struct.unpack(">i", data[:4])[0] == self.correlation
        return data[4:]

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except (ConnectionResetError, ssl.SSLError):
                return b""
            if not chunk:
                return b""
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()


def test_raw_protocol_errors_close_or_answer_as_a_kafka_broker_does(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    raw = _Raw(cluster)
    # ApiVersions of a version we do not know: UNSUPPORTED_VERSION in v0, with our list
    raw.send(18, 99, b"", header_version=2)
    answer = decode("ApiVersionsResponse", 0, raw.receive())
    assert answer["error_code"] == 35
    assert {k["api_key"]: (k["min_version"], k["max_version"]) for k in answer["api_keys"]} == {
        key: (low, high) for key, (_, low, high) in SUPPORTED.items()
    }
    # a real ApiVersions v3 (flexible request, v0 response header) on the same connection
    raw.send(
        18,
        3,
        encode(
            "ApiVersionsRequest", 3, {"client_software_name": "raw", "client_software_version": "1"}
        ),
        2,
    )
    assert decode("ApiVersionsResponse", 3, raw.receive())["error_code"] == 0
    # Metadata v1: brokers with their Kafka addresses
    raw.send(3, 1, encode("MetadataRequest", 1, {"topics": None}))
    metadata = decode("MetadataResponse", 1, raw.receive())
    assert [(b["host"], b["port"]) for b in metadata["brokers"]] == [
        ("127.0.0.1", int(cluster.kafka_bootstrap.rsplit(":", 1)[1]))
    ]
    # a garbled body closes the connection
    raw.send(3, 1, b"\x7f\xff\xff\xff")
    assert raw.receive() == b""
    raw.close()
    # an api key nobody knows closes it too
    raw = _Raw(cluster)
    raw.send(999, 0, b"")
    assert raw.receive() == b""
    raw.close()
    # without a certificate and before SASL only ApiVersions and SASL are served
    raw = _Raw(cluster, certificate=False)
    raw.send(18, 0, b"", header_version=1)
    assert decode("ApiVersionsResponse", 0, raw.receive())["error_code"] == 0
    raw.send(3, 1, encode("MetadataRequest", 1, {"topics": None}))
    assert raw.receive() == b""
    raw.close()
    # the listener still serves
    raw = _Raw(cluster)
    raw.send(3, 1, encode("MetadataRequest", 1, {"topics": None}))
    assert decode("MetadataResponse", 1, raw.receive())["brokers"]
    raw.close()


def _leaders_seen_by(cluster: LocalCluster, node: int, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (leader, error code) in broker ``node``'s Kafka Metadata answer."""
    raw = _Raw(cluster, node=node)
    try:
        raw.send(3, 1, encode("MetadataRequest", 1, {"topics": [{"name": topic}]}))
        answer = decode("MetadataResponse", 1, raw.receive())
    finally:
        raw.close()
    (found,) = answer["topics"]
    return {p["partition_index"]: (p["leader_id"], p["error_code"]) for p in found["partitions"]}


def test_a_broker_cut_off_from_the_controller_names_no_leader_for_its_partitions(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("cut", 3, 3, min_insync_replicas=2)
        admin.wait_for_topic("cut")
        controller = admin.describe_cluster().controller_id
        leaders = {p.partition: p.leader for p in admin.describe_topic("cut").partitions}
    node = next(b for b in leaders.values() if b != controller)
    mine = {p for p, b in leaders.items() if b == node}
    assert all(_leaders_seen_by(cluster, node, "cut")[p] == (node, 0) for p in mine)
    others = [b for b in cluster.nodes if b != node]
    for b in others:
        os.kill(cluster.nodes[b].pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 15  # a session (2 s) without the controller, and then some
        seen = _leaders_seen_by(cluster, node, "cut")
        while any(seen[p] != (-1, 5) for p in mine) and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = _leaders_seen_by(cluster, node, "cut")
        assert all(seen[p] == (-1, 5) for p in mine), seen  # LEADER_NOT_AVAILABLE
    finally:
        for b in others:
            os.kill(cluster.nodes[b].pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = _leaders_seen_by(cluster, node, "cut")
        if all(leader >= 0 and code == 0 for leader, code in seen.values()):
            break
        time.sleep(0.2)
    assert all(leader >= 0 and code == 0 for leader, code in seen.values()), seen
