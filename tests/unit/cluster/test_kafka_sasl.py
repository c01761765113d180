"""The Kafka listener's SASL server without sockets: PLAIN and both SCRAMs, driven as a client."""

from __future__ import annotations

import base64

import pytest

from raftlog.cluster.auth import AuthenticationFailed, PasswordCheck, Principal
from raftlog.cluster.kafka_sasl import SaslServer
from raftlog.raft.scram import (
    client_proof,
    make_credential,
    salted_password,
    server_signature,
)

USERS = {
    "alice": make_credential("alice-pw", salt=b"s" * 16),
    "bob": make_credential("bob-pw", mechanism="SCRAM-SHA-512", salt=b"t" * 16),
}


def _server(mechanism: str, failures_per_s: float = 20.0) -> SaslServer:
    now = [0.0]
    passwords = PasswordCheck(USERS.get, lambda: now[0], failures_per_s)
    return SaslServer(mechanism, passwords, USERS.get, nonce=b"n" * 18, pepper=b"p" * 32)


def _scram_login(server: SaslServer, user: str, password: str) -> bytes:
    """What a SCRAM client sends (RFC 5802), against ``server``; its server-final message."""
    client_first_bare = f"n={user},r=clientnonce"
    server_first = server.step(f"n,,{client_first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    assert fields["r"].startswith("clientnonce") and len(fields["r"]) > len("clientnonce")
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    salted = salted_password(password, salt, iterations, server.mechanism)
    proof = client_proof(salted, auth_message, mechanism=server.mechanism)
    final = server.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    credential = USERS[user]
    assert final == b"v=" + base64.b64encode(server_signature(credential, auth_message))
    return final


@pytest.mark.parametrize(
    ("mechanism", "user"), [("SCRAM-SHA-256", "alice"), ("SCRAM-SHA-512", "bob")]
)
def test_scram_logs_a_user_in_and_proves_the_server_knew_the_credential(
    mechanism: str, user: str
) -> None:
    server = _server(mechanism)
    _scram_login(server, user, f"{user}-pw")
    assert server.principal == Principal(f"User:{user}")
    with pytest.raises(AuthenticationFailed):
        server.step(b"again")  # one login per connection


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        ("SCRAM-SHA-256", "alice", "wrong"),
        ("SCRAM-SHA-512", "alice", "alice-pw"),  # her credential is SHA-256
        ("SCRAM-SHA-256", "mallory", "x"),  # no such user
    ],
)
def test_scram_refuses_a_wrong_password_the_other_hash_and_an_unknown_user(
    mechanism: str, user: str, password: str
) -> None:
    server = _server(mechanism)
    client_first_bare = f"n={user},r=abc"
    server_first = server.step(f"n,,{client_first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    without_proof = f"c=biws,r={fields['r']}"
    auth = f"{client_first_bare},{server_first},{without_proof}".encode()
    proof = client_proof(
        salted_password(password, salt, iterations, mechanism), auth, mechanism=mechanism
    )
    with pytest.raises(AuthenticationFailed):
        server.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    assert server.principal is None


def test_an_unknown_users_salt_is_stable_and_tells_nothing() -> None:
    """The server-first message of a user who does not exist looks like a real one, and the same
    every time (a changing salt would tell an attacker the user is made up)."""
    first = _server("SCRAM-SHA-256").step(b"n,,n=mallory,r=abc")
    again = _server("SCRAM-SHA-256").step(b"n,,n=mallory,r=abc")
    assert first == again
    assert b",s=" in first and b",i=4096" in first


def test_scram_refuses_a_changed_nonce_channel_binding_and_garbage() -> None:
    for final in (b"c=biws,r=other,p=AAAA", b"c=eSws,r=abcnnnn,p=AAAA", b"\xff\xfe"):
        server = _server("SCRAM-SHA-256")
        server.step(b"n,,n=alice,r=abc")
        with pytest.raises(AuthenticationFailed):
            server.step(final)
    with pytest.raises(AuthenticationFailed):
        _server("SCRAM-SHA-256").step(b"p=tls-unique,,n=alice,r=abc")  # channel binding
    with pytest.raises(AuthenticationFailed):
        _server("SCRAM-SHA-256").step(b"n,,n=alice,r=abc,tokenauth=true")


def test_plain_checks_the_password_against_the_scram_credential() -> None:
    server = _server("PLAIN")
    assert server.step(b"\x00alice\x00alice-pw") == b""
    assert server.principal == Principal("User:alice")
    for token in (
        b"\x00alice\x00wrong",
        b"bob\x00alice\x00alice-pw",
        b"alice-pw",
        b"\x00nobody\x00x",
    ):
        with pytest.raises(AuthenticationFailed):
            _server("PLAIN").step(token)


def test_failed_logins_are_rate_limited_like_the_password_listener() -> None:
    """Past the failure budget a login fails without checking the proof (each check costs
    thousands of HMACs), and a good password does not spend the budget."""
    now = [0.0]
    passwords = PasswordCheck(USERS.get, lambda: now[0], failures_per_s=2)
    servers = [
        SaslServer("SCRAM-SHA-256", passwords, USERS.get, nonce=b"n" * 18, pepper=b"p" * 32)
        for _ in range(4)
    ]
    for server in servers[:2]:
        server.step(b"n,,n=alice,r=abc")
        with pytest.raises(AuthenticationFailed, match="wrong"):
            server.step(b"c=biws,r=abc" + base64.b64encode(b"n" * 18).rstrip(b"=") + b",p=AAAA")
    server = servers[2]
    server.step(b"n,,n=alice,r=abc")
    with pytest.raises(AuthenticationFailed, match="too many"):
        server.step(b"c=biws,r=abc" + base64.b64encode(b"n" * 18).rstrip(b"=") + b",p=AAAA")
    now[0] = 10.0  # the budget refills
    _scram_login(servers[3], "alice", "alice-pw")


def test_an_unsupported_mechanism_is_refused() -> None:
    with pytest.raises(AuthenticationFailed):
        _server("GSSAPI")
