"""SCRAM users on the password listener: TLS without a client certificate, a user name and a
password checked against the salted hash in the replicated metadata."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from raftlog.client import Acl, Admin, ClientSecurity, Consumer, Producer
from raftlog.client.errors import SaslAuthenticationFailedError
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import broker_pb2, broker_pb2_grpc, common_pb2

from ..conftest import free_base_port
from .test_data_plane import FAST

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("password") / "c")
    local.up(3, free_base_port(3), timeout_s=60, settings=FAST, password_listener=True)
    try:
        with Admin(local.bootstrap, security=local.security) as admin:
            admin.create_topic("pw", 1, 3)
            admin.upsert_user("alice", "correct horse battery staple")
            admin.create_acls(
                [
                    Acl("User:alice", "topic", "pw", "write"),
                    Acl("User:alice", "topic", "pw", "read"),
                ]
            )
        yield local
    finally:
        local.down(timeout_s=10)


def test_a_user_with_the_right_password_produces_and_consumes(cluster: LocalCluster) -> None:
    alice = cluster.password_security("alice", "correct horse battery staple")
    with Producer(cluster.password_bootstrap, security=alice, linger_ms=0) as producer:
        sent = [producer.send("pw", f"m{i}".encode()).result(timeout=30) for i in range(20)]
    with Consumer(cluster.password_bootstrap, security=alice) as consumer:
        consumer.assign_topic("pw")
        got = []
        for _ in range(50):
            got += consumer.poll(timeout_ms=200)
            if len(got) >= len(sent):
                break
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(20)]
    with Admin(cluster.password_bootstrap, security=alice) as admin:
        assert admin.whoami().principal == "User:alice"
        # the password listener's metadata names the other brokers' password listeners
        admin.metadata.refresh()
        addresses = set(admin.metadata.brokers().values())
    assert addresses == {n.grpc_password for n in cluster.nodes.values()}


def test_a_wrong_password_or_none_is_refused(cluster: LocalCluster) -> None:
    address = cluster.nodes[1].grpc_password
    ca = (cluster.tls_dir / "ca.pem").read_bytes()
    for security in (
        cluster.password_security("alice", "wrong"),
        cluster.password_security("mallory", "anything"),
        ClientSecurity(ca),  # TLS, no certificate, no password
    ):
        stub = broker_pb2_grpc.BrokerStub(security.channel(address))
        answer = stub.Metadata(broker_pb2.MetadataRequest(), timeout=10)
        assert answer.topics == [] or all(t.error.code for t in answer.topics)
        me = stub.WhoAmI(broker_pb2.WhoAmIRequest(), timeout=10)
        assert me.error.code == common_pb2.SASL_AUTHENTICATION_FAILED
    with (
        Admin(cluster.password_bootstrap, security=cluster.password_security("alice", "nope")) as a,
        pytest.raises(SaslAuthenticationFailedError),
    ):
        a.whoami()


def test_the_password_is_never_stored(cluster: LocalCluster) -> None:
    """Only the salt, iteration count and SCRAM keys reach the metadata (and its snapshots)."""
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        users = admin.describe_users()
    assert [(u.user, u.mechanism) for u in users] == [("alice", "SCRAM-SHA-256")]
    for node in cluster.nodes:
        for path in (cluster.dir / f"node{node}" / "raft").rglob("*"):
            if path.is_file():
                assert b"correct horse battery staple" not in path.read_bytes(), path


def test_the_mutual_tls_listener_does_not_take_passwords(cluster: LocalCluster) -> None:
    """A password is no way around a missing certificate on the broker listener."""
    ca = (cluster.tls_dir / "ca.pem").read_bytes()
    sneaky = ClientSecurity(ca, username="alice", password="correct horse battery staple")
    stub = broker_pb2_grpc.BrokerStub(sneaky.channel(cluster.nodes[1].grpc))
    with pytest.raises(grpc.RpcError) as caught:
        stub.WhoAmI(broker_pb2.WhoAmIRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
