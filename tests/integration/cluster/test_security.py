"""The outsider attacks of the security issue, replayed against a TLS cluster (each one passed
against the plaintext broker before mutual TLS, broker principals and ACLs landed).

The attacker holds a certificate the cluster CA signed for ``User:mallory`` (a legitimate but
unprivileged client), or no certificate at all, or a certificate of broker 2 — and knows every
broker address and incarnation (``Metadata`` is public to any authenticated client).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftlog.client import Acl, Admin, ClientSecurity, Producer
from raftlog.client.certs import CertificateAuthority
from raftlog.client.errors import TopicAuthorizationFailedError
from raftlog.client.local_cluster import LocalCluster
from raftlog.cluster.controller_link import RELAY_HEADER
from raftlog.cluster.relay_proof import OriginSigner
from raftlog.proto import (
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
)

from ..conftest import ClusterFactory
from .test_data_plane import FAST, wait_until

pytestmark = pytest.mark.integration

TOPIC = "secure"
DENIED_CLUSTER = common_pb2.CLUSTER_AUTHORIZATION_FAILED
DENIED_TOPIC = common_pb2.TOPIC_AUTHORIZATION_FAILED


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    from ..conftest import free_base_port

    local = LocalCluster(tmp_path_factory.mktemp("secure") / "c")
    local.up(3, free_base_port(3), timeout_s=60, settings=FAST)
    try:
        with Admin(local.bootstrap, security=local.security) as admin:
            admin.create_topic(TOPIC, 3, 3, min_insync_replicas=2)
        yield local
    finally:
        local.down(timeout_s=10)


def broker_stub(cluster: LocalCluster, security: ClientSecurity, node: int = 1) -> Any:
    return broker_pb2_grpc.BrokerStub(security.channel(cluster.nodes[node].grpc))


def controller_stub(cluster: LocalCluster, security: ClientSecurity, node: int) -> Any:
    return controller_pb2_grpc.ControllerStub(security.channel(cluster.nodes[node].grpc))


def as_broker(cluster: LocalCluster, node_id: int) -> ClientSecurity:
    ca = CertificateAuthority(cluster.tls_dir)
    pair = ca.broker_pair(node_id)
    return ClientSecurity.from_files(ca.ca_file, pair.cert_file, pair.key_file)


def acls_everywhere(cluster: LocalCluster, principal: str, count: int) -> None:
    """Until every broker has applied the ACL change (metadata reaches brokers on its own)."""
    request = broker_pb2.DescribeAclsRequest(filter=broker_pb2.AclBinding(principal=principal))

    def applied() -> bool:
        return all(
            len(broker_stub(cluster, cluster.security, n).DescribeAcls(request).acls) == count
            for n in cluster.nodes
        )

    wait_until(applied, 10, f"{count} ACLs of {principal} on every broker")


def topic_state(cluster: LocalCluster, topic: str = TOPIC) -> Any:
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        return admin.describe_topic(topic)


# ---- transport ---------------------------------------------------------------------------------


def test_a_caller_without_a_cluster_certificate_cannot_even_connect(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    ca_pem = CertificateAuthority(cluster.tls_dir).ca_file.read_bytes()
    other = CertificateAuthority(tmp_path / "other-ca")
    other.create("someone else")
    foreign = other.issue_client("admin")  # the super user's name, from the wrong CA
    callers = {
        "plaintext": ClientSecurity.plaintext(),
        "TLS without a client certificate": ClientSecurity(ca_pem),
        "a certificate of another CA": ClientSecurity(
            ca_pem, foreign.cert_file.read_bytes(), foreign.key_file.read_bytes()
        ),
    }
    for what, security in callers.items():
        with pytest.raises(grpc.RpcError) as caught:
            broker_stub(cluster, security).Metadata(broker_pb2.MetadataRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_whoami_names_the_certificate(cluster: LocalCluster) -> None:
    mallory = broker_stub(cluster, cluster.client_security("mallory"))
    me = mallory.WhoAmI(broker_pb2.WhoAmIRequest(), timeout=5)
    assert (me.principal, me.broker_id, me.super_user) == ("User:mallory", -1, False)
    broker = broker_stub(cluster, as_broker(cluster, 2)).WhoAmI(broker_pb2.WhoAmIRequest())
    assert (broker.principal, broker.broker_id) == ("User:broker-2", 2)
    admin = broker_stub(cluster, cluster.security).WhoAmI(broker_pb2.WhoAmIRequest())
    assert admin.super_user


# ---- broker-only RPCs --------------------------------------------------------------------------


def test_only_a_broker_may_register_and_only_as_itself(cluster: LocalCluster) -> None:
    before = {b.broker_id: b.incarnation for b in _brokers(cluster)}
    attacks = [
        (cluster.client_security("mallory"), 99, 1),  # a fake broker 99
        (cluster.client_security("mallory"), 3, 1 << 62),  # knock broker 3 out of every ISR
        (as_broker(cluster, 1), 3, 1 << 62),  # an insider broker speaking for another
    ]
    for security, broker_id, incarnation in attacks:
        for node in cluster.nodes:  # whichever is the controller
            stub = controller_stub(cluster, security, node)
            answer = stub.RegisterBroker(
                controller_pb2.RegisterBrokerRequest(
                    broker_id=broker_id, incarnation=incarnation, address="10.6.6.6:9092"
                ),
                timeout=5,
            )
            assert answer.error.code == DENIED_CLUSTER, (broker_id, node)
            beat = stub.BrokerHeartbeat(
                controller_pb2.BrokerHeartbeatRequest(broker_id=broker_id, incarnation=incarnation),
                timeout=5,
            )
            assert beat.error.code == DENIED_CLUSTER
    time.sleep(0.5)
    assert {b.broker_id: b.incarnation for b in _brokers(cluster)} == before
    assert all(3 in p.isr for p in topic_state(cluster).partitions)


def test_a_relayed_call_must_prove_the_broker_that_sent_it(cluster: LocalCluster) -> None:
    """Relays (issue 21) carry a broker's controller calls when it cannot reach the controller:
    the controller takes a relayed call only with the sender's signature, so an insider broker
    still cannot speak for another through the relay header."""
    before = {b.broker_id: b.incarnation for b in _brokers(cluster)}
    pair = CertificateAuthority(cluster.tls_dir).broker_pair(1)
    own_key = OriginSigner.from_files(str(pair.cert_file), str(pair.key_file))
    attack = controller_pb2.RegisterBrokerRequest(
        broker_id=3, incarnation=1 << 62, address="10.6.6.6:9092"
    )
    relay = ((RELAY_HEADER, "1"),)
    attempts = {
        "a client naming itself a relay": (cluster.client_security("mallory"), relay),
        "broker 1 relaying with no proof": (as_broker(cluster, 1), relay),
        "broker 1 relaying, signed by itself": (
            as_broker(cluster, 1),
            relay + own_key.headers("RegisterBroker", attack),
        ),
        "broker 1 relaying as broker 2": (as_broker(cluster, 1), ((RELAY_HEADER, "2"),)),
    }
    for what, (security, metadata) in attempts.items():
        for node in cluster.nodes:
            stub = controller_stub(cluster, security, node)
            answer = stub.RegisterBroker(attack, timeout=5, metadata=metadata)
            assert answer.error.code == DENIED_CLUSTER, (what, node, answer.error)
    time.sleep(0.5)
    assert {b.broker_id: b.incarnation for b in _brokers(cluster)} == before
    # the control: broker 1 relaying broker 2's own signed heartbeat is answered
    pair = CertificateAuthority(cluster.tls_dir).broker_pair(2)
    broker_2 = OriginSigner.from_files(str(pair.cert_file), str(pair.key_file))
    beat = controller_pb2.BrokerHeartbeatRequest(broker_id=2, incarnation=before[2])
    codes = set()
    for node in cluster.nodes:
        stub = controller_stub(cluster, as_broker(cluster, 1), node)
        answer = stub.BrokerHeartbeat(
            beat, timeout=5, metadata=relay + broker_2.headers("BrokerHeartbeat", beat)
        )
        codes.add(answer.error.code)
    assert codes == {common_pb2.NONE, common_pb2.NOT_CONTROLLER}, codes


def _brokers(cluster: LocalCluster) -> list[Any]:
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        return list(admin.describe_cluster().brokers)


def test_outsiders_cannot_alter_an_isr_or_take_producer_ids(cluster: LocalCluster) -> None:
    partition = topic_state(cluster).partitions[0]
    mallory = cluster.client_security("mallory")
    for node in cluster.nodes:
        stub = controller_stub(cluster, mallory, node)
        altered = stub.AlterPartition(
            controller_pb2.AlterPartitionRequest(
                topic=TOPIC,
                partition=0,
                broker_id=partition.leader,
                leader_epoch=partition.leader_epoch,
                partition_epoch=getattr(partition, "partition_epoch", 0),
                isr=[partition.leader],
            ),
            timeout=5,
        )
        assert altered.error.code == DENIED_CLUSTER
        ids = stub.AllocateProducerIds(
            controller_pb2.AllocateProducerIdsRequest(broker_id=1, count=1000), timeout=5
        )
        assert ids.error.code == DENIED_CLUSTER
        damaged = stub.ReportDamagedReplicas(
            controller_pb2.ReportDamagedReplicasRequest(
                broker_id=partition.leader,
                partitions=[controller_pb2.TopicPartitionRef(topic=TOPIC, partition=0)],
            ),
            timeout=5,
        )
        assert damaged.error.code == DENIED_CLUSTER
    assert sorted(topic_state(cluster).partitions[0].isr) == sorted(partition.isr)


def test_a_spoofed_follower_fetch_is_refused_and_acknowledges_nothing(
    make_cluster: ClusterFactory,
) -> None:
    """The issue's worst case: with the real follower paused, a spoofed replica fetch made the
    leader acknowledge 100 of 100 records the follower never held; after the leader died and
    the follower resumed, 0 of 100 were left. Now the spoof is refused, so nothing is
    acknowledged that the follower does not hold, and nothing acknowledged is lost."""
    cluster = make_cluster(3, **FAST)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("spoof", 1, 2, min_insync_replicas=2)
        state = admin.describe_topic("spoof").partitions[0]
    leader, follower = state.leader, next(r for r in state.replicas if r != state.leader)
    leader_stub = broker_stub(cluster, cluster.client_security("mallory"), leader)
    insider_id = next(n for n in cluster.nodes if n not in (leader, follower))
    insider_stub = broker_stub(cluster, as_broker(cluster, insider_id), leader)
    incarnation = next(b.incarnation for b in _brokers(cluster) if b.broker_id == follower)
    os.kill(cluster.nodes[follower].pid, signal.SIGSTOP)
    acked = []
    try:
        with Producer(
            cluster.bootstrap,
            acks="all",
            security=cluster.security,
            request_timeout_ms=2000,
            delivery_timeout_ms=4000,
            linger_ms=0,
        ) as producer:
            futures = [producer.send("spoof", f"r{i}".encode(), partition=0) for i in range(100)]
            deadline = time.monotonic() + 5
            offset = 0
            while time.monotonic() < deadline:  # what the attack did: keep the fake F caught up
                for stub in (leader_stub, insider_stub):
                    spoof = stub.Fetch(
                        broker_pb2.FetchRequest(
                            replica_id=follower,
                            replica_incarnation=incarnation,
                            max_wait_ms=0,
                            partitions=[
                                broker_pb2.FetchPartition(
                                    topic="spoof",
                                    partition=0,
                                    fetch_offset=offset,
                                    current_leader_epoch=state.leader_epoch,
                                    partition_max_bytes=1 << 20,
                                )
                            ],
                        ),
                        timeout=5,
                    )
                    assert spoof.error.code == DENIED_CLUSTER
                    assert not spoof.partitions
                offset += 10
                time.sleep(0.05)
            for i, future in enumerate(futures):
                if future.exception(timeout=10) is None:
                    acked.append((future.result(), f"r{i}".encode()))
    finally:
        os.kill(cluster.nodes[follower].pid, signal.SIGCONT)
    # whatever was acknowledged (normally nothing: the real follower was paused) survives the
    # leader's death, because the follower really holds it
    cluster.kill(leader)
    wait_until(lambda: topic_state(cluster, "spoof").partitions[0].leader == follower, 30)
    from .test_data_plane import consume_all

    if acked:
        records = consume_all(cluster.bootstrap, "spoof", len(acked), security=cluster.security)
        assert {(r.partition, r.offset, r.value) for r in records} >= {
            (a.partition, a.offset, value) for a, value in acked
        }
    assert len(acked) == 0  # the follower was paused the whole time: nothing could be acked


# ---- ACLs on client RPCs -----------------------------------------------------------------------


def test_an_unprivileged_client_cannot_touch_topics(cluster: LocalCluster) -> None:
    mallory = broker_stub(cluster, cluster.client_security("mallory"))
    deleted = mallory.DeleteTopics(broker_pb2.DeleteTopicsRequest(names=[TOPIC]), timeout=10)
    assert deleted.topics[0].error.code == DENIED_TOPIC
    altered = mallory.AlterConfigs(
        broker_pb2.AlterConfigsRequest(topic=TOPIC, set={"max.message.bytes": "104857600"}),
        timeout=10,
    )
    assert altered.error.code == DENIED_TOPIC
    created = mallory.CreateTopics(
        broker_pb2.CreateTopicsRequest(
            topics=[broker_pb2.NewTopic(name="huge", partitions=1_000_000, replication_factor=3)]
        ),
        timeout=10,
    )
    assert created.topics[0].error.code == DENIED_TOPIC
    listed = mallory.Metadata(broker_pb2.MetadataRequest(), timeout=5)
    assert [t.name for t in listed.topics] == []  # no DESCRIBE: not even the names
    named = mallory.Metadata(broker_pb2.MetadataRequest(topics=[TOPIC]), timeout=5)
    assert named.topics[0].error.code == DENIED_TOPIC
    fetched = mallory.Fetch(
        broker_pb2.FetchRequest(
            replica_id=-1,
            partitions=[broker_pb2.FetchPartition(topic=TOPIC, partition=0, fetch_offset=0)],
        ),
        timeout=5,
    )
    assert fetched.partitions[0].error.code == DENIED_TOPIC
    assert not fetched.partitions[0].records
    acls = mallory.CreateAcls(
        broker_pb2.CreateAclsRequest(
            acls=[
                broker_pb2.AclBinding(
                    principal="User:mallory",
                    resource_type="cluster",
                    pattern_type="literal",
                    resource_name="kafka-cluster",
                    operation="all",
                    permission="allow",
                    host="*",
                )
            ]
        ),
        timeout=5,
    )
    assert acls.error.code == DENIED_CLUSTER
    with (
        Producer(
            cluster.bootstrap, security=cluster.client_security("mallory"), linger_ms=0
        ) as producer,
        pytest.raises(TopicAuthorizationFailedError),
    ):
        producer.send(TOPIC, b"x")  # the topic's metadata is refused before anything is sent
    assert topic_state(cluster).name == TOPIC  # still there, config unchanged
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        configs = {c.name: c.value for c in admin.describe_configs(TOPIC)}
    assert configs["max.message.bytes"] != "104857600"


def test_internal_topics_are_off_limits_even_to_super_users(cluster: LocalCluster) -> None:
    admin = broker_stub(cluster, cluster.security)
    created = admin.CreateTopics(
        broker_pb2.CreateTopicsRequest(
            topics=[
                broker_pb2.NewTopic(name="__consumer_offsets", partitions=1, replication_factor=1)
            ]
        ),
        timeout=10,
    )
    assert created.topics[0].error.code == DENIED_TOPIC
    deleted = admin.DeleteTopics(
        broker_pb2.DeleteTopicsRequest(names=["__consumer_offsets"]), timeout=10
    )
    assert deleted.topics[0].error.code == DENIED_TOPIC
    produced = admin.Produce(
        broker_pb2.ProduceRequest(
            acks=-1,
            timeout_ms=1000,
            partitions=[
                broker_pb2.PartitionRecords(topic="__consumer_offsets", partition=0, records=b"x")
            ],
        ),
        timeout=10,
    )
    assert produced.partitions[0].error.code == DENIED_TOPIC


def test_acls_grant_exactly_what_they_name(cluster: LocalCluster) -> None:
    app = cluster.client_security("app")
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_acls([Acl("User:app", "topic", "app.", "write", pattern_type="prefixed")])
        acls_everywhere(cluster, "User:app", 1)
        admin.create_topic("app.orders", 1, 3)
        admin.create_topic("other", 1, 3)
        try:
            with Producer(cluster.bootstrap, security=app, linger_ms=0) as producer:
                ok = producer.send("app.orders", b"fine").result(timeout=30)
                assert ok.offset == 0
                with pytest.raises(TopicAuthorizationFailedError):
                    producer.send("other", b"not mine")
            admin.create_acls([Acl("User:app", "topic", "app.orders", "write", permission="deny")])
            acls_everywhere(cluster, "User:app", 2)
            with Producer(cluster.bootstrap, security=app, linger_ms=0) as producer:
                denied = producer.send("app.orders", b"now denied").exception(timeout=30)
                assert isinstance(denied, TopicAuthorizationFailedError)
            with Producer(cluster.bootstrap, security=app, linger_ms=0, acks=1) as producer:
                denied = producer.send("app.orders", b"now denied").exception(timeout=30)
                assert isinstance(denied, TopicAuthorizationFailedError)
            listed = admin.describe_acls(principal="User:app")
            assert len(listed) == 2
        finally:
            removed = admin.delete_acls(principal="User:app")
        assert len(removed) == 2
        acls_everywhere(cluster, "User:app", 0)


def test_a_producer_cannot_fence_another_principals_producer(cluster: LocalCluster) -> None:
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_acls([Acl("User:mallory", "topic", "mallory-topic", "write")])
    acls_everywhere(cluster, "User:mallory", 1)
    with Producer(cluster.bootstrap, security=cluster.security, linger_ms=0) as victim:
        victim.send(TOPIC, b"first").result(timeout=30)
        pid, epoch = victim._producer_id, victim._producer_epoch
        mallory = broker_stub(cluster, cluster.client_security("mallory"))
        answer = mallory.InitProducerId(
            broker_pb2.InitProducerIdRequest(producer_id=pid, producer_epoch=epoch), timeout=10
        )
        assert answer.error.code == common_pb2.NONE
        assert answer.producer_id != pid  # a new id of its own, not the victim's with epoch + 1
        assert victim.send(TOPIC, b"second").result(timeout=30).offset >= 0
