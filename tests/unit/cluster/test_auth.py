"""Principals and the authorizer's shell rules (cluster/auth.py), without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from raftlog.client.certs import CertificateAuthority
from raftlog.cluster.auth import (
    AuthenticationFailed,
    Authorizer,
    PasswordCheck,
    Principal,
    peer_host,
    principal_from_pem,
)
from raftlog.raft.acl import (
    AclBinding,
    AclIndex,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from raftlog.raft.scram import make_credential


class FakeContext:
    def __init__(self, pem: bytes | None = None, peer: str = "ipv4:10.1.2.3:5555", **headers: str):
        self._auth = {"x509_pem_cert": [pem]} if pem else {}
        self._peer = peer
        self._headers = tuple(headers.items())

    def auth_context(self) -> dict[str, Any]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._headers


def acl(
    principal: str, name: str, op: Operation, permission: Permission, host: str = "*"
) -> AclBinding:
    return AclBinding(
        principal, ResourceType.TOPIC, PatternType.LITERAL, name, op, permission, host
    )


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    authority.create()
    return authority


def test_certificates_make_principals(ca: CertificateAuthority) -> None:
    broker = ca.issue_broker(3, ["127.0.0.1", "broker3.example"])
    client = ca.issue_client("alice")
    assert principal_from_pem(broker.cert_file.read_bytes()) == Principal("User:broker-3", 3)
    assert principal_from_pem(client.cert_file.read_bytes()) == Principal("User:alice")


def test_a_client_certificate_cannot_be_named_like_a_broker(ca: CertificateAuthority) -> None:
    from raftlog.client.certs import CertificateError

    with pytest.raises(CertificateError):
        ca.issue_client("broker-1")


def test_broker_only_calls_need_the_broker_they_name(ca: CertificateAuthority) -> None:
    auth = Authorizer(True, (), lambda: AclIndex(()))
    broker2 = auth.principal(FakeContext(ca.issue_broker(2, ["127.0.0.1"]).cert_file.read_bytes()))
    alice = auth.principal(FakeContext(ca.issue_client("alice").cert_file.read_bytes()))
    assert auth.broker_only(broker2, 2) and auth.broker_only(broker2)
    assert not auth.broker_only(broker2, 3)
    assert not auth.broker_only(alice) and not auth.broker_only(alice, 2)


def test_acl_hosts_match_the_callers_address(ca: CertificateAuthority) -> None:
    pem = ca.issue_client("alice").cert_file.read_bytes()
    index = AclIndex(
        [
            acl("User:alice", "t", Operation.WRITE, Permission.ALLOW),
            acl("User:alice", "t", Operation.WRITE, Permission.DENY, host="10.9.9.9"),
        ]
    )
    auth = Authorizer(True, (), lambda: index)
    here = auth.principal(FakeContext(pem, peer="ipv4:10.1.2.3:4000"))
    there = auth.principal(FakeContext(pem, peer="ipv4:10.9.9.9:4000"))
    assert here.host == "10.1.2.3" and there.host == "10.9.9.9"
    assert auth.allowed(here, Operation.WRITE, ResourceType.TOPIC, "t")
    assert not auth.allowed(there, Operation.WRITE, ResourceType.TOPIC, "t")


def test_peer_hosts() -> None:
    assert peer_host("ipv4:127.0.0.1:1234") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:1234") == "::1"
    assert peer_host("unix:/tmp/sock") == "*"


def test_internal_topics_are_for_brokers_only(ca: CertificateAuthority) -> None:
    auth = Authorizer(True, ("User:admin",), lambda: AclIndex(()))
    admin = Principal("User:admin")
    broker = Principal("User:broker-1", 1)
    for op in (Operation.WRITE, Operation.DELETE, Operation.ALTER_CONFIGS):
        assert not auth.topic_write_allowed(admin, "__consumer_offsets", op)
        assert auth.topic_write_allowed(broker, "__consumer_offsets", op)
    assert not auth.may_create_topic(admin, "__consumer_offsets")
    assert auth.may_create_topic(admin, "orders")


def test_passwords_are_checked_cached_and_rate_limited() -> None:
    users = {"alice": make_credential("s3cret", salt=b"salty-salt", iterations=4096)}
    clock = [0.0]
    check = PasswordCheck(users.get, lambda: clock[0], failures_per_s=2)
    assert check.principal("alice", "s3cret").name == "User:alice"
    assert check.principal("alice", "s3cret").name == "User:alice"  # from the cache
    for _ in range(2):
        with pytest.raises(AuthenticationFailed, match="wrong"):
            check.principal("alice", "nope")
    with pytest.raises(AuthenticationFailed, match="too many"):
        check.principal("mallory", "guess")
    assert check.principal("alice", "s3cret").name == "User:alice"  # cached: never limited
    clock[0] += 1.0
    with pytest.raises(AuthenticationFailed, match="wrong"):
        check.principal("alice", "nope")
    users["alice"] = make_credential("changed", salt=b"other-salt", iterations=4096)
    with pytest.raises(AuthenticationFailed):
        check.principal("alice", "s3cret")  # the cached pair is no good after a change


def test_no_certificate_and_no_password_is_not_anonymous() -> None:
    auth = Authorizer(True, (), lambda: AclIndex(()), PasswordCheck(lambda _: None, lambda: 0.0))
    with pytest.raises(AuthenticationFailed):
        auth.principal(FakeContext())


def test_plaintext_has_no_identities() -> None:
    auth = Authorizer(False, (), lambda: AclIndex(()))
    anonymous = auth.principal(FakeContext())
    assert auth.allowed(anonymous, Operation.DELETE, ResourceType.TOPIC, "anything")
    assert auth.broker_only(anonymous, 1)
