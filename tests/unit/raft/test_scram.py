"""SCRAM credentials: the RFC 7677 test vector, password checks, and the stored form."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from raftlog.raft.scram import (
    ITERATIONS_MAX,
    ITERATIONS_MIN,
    ScramCredential,
    ScramError,
    ScramMechanism,
    client_proof,
    credential_from_salted_password,
    make_credential,
    salted_password,
    server_signature,
    validate_credential,
    validate_user,
    verify_client_proof,
    verify_password,
)

# RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil"
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_WITHOUT_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
AUTH_MESSAGE = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_WITHOUT_PROOF}".encode()
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_rfc7677_client_proof_and_server_signature() -> None:
    salted = salted_password("pencil", SALT, 4096)
    assert client_proof(salted, AUTH_MESSAGE) == PROOF
    credential = make_credential("pencil", salt=SALT, iterations=4096)
    assert credential.mechanism == ScramMechanism.SHA_256
    assert server_signature(credential, AUTH_MESSAGE) == SERVER_SIGNATURE
    assert verify_client_proof(credential, AUTH_MESSAGE, PROOF)


def test_a_wrong_proof_is_refused() -> None:
    credential = make_credential("pencil", salt=SALT)
    flipped = bytes([PROOF[0] ^ 1]) + PROOF[1:]
    assert not verify_client_proof(credential, AUTH_MESSAGE, flipped)
    assert not verify_client_proof(credential, AUTH_MESSAGE, PROOF[:-1])
    assert not verify_client_proof(credential, AUTH_MESSAGE + b"x", PROOF)
    other = make_credential("pencil2", salt=SALT)
    assert not verify_client_proof(other, AUTH_MESSAGE, PROOF)


@pytest.mark.parametrize("mechanism", list(ScramMechanism))
def test_an_exchange_round_trips_for_each_mechanism(mechanism: ScramMechanism) -> None:
    credential = make_credential("s3cret", mechanism=mechanism, iterations=4096, salt=b"salt-1")
    assert len(credential.stored_key) == len(credential.server_key) == mechanism.digest_bytes
    salted = salted_password("s3cret", credential.salt, credential.iterations, mechanism)
    proof = client_proof(salted, b"auth", mechanism=mechanism)
    assert verify_client_proof(credential, b"auth", proof)
    wrong = salted_password("s3cre7", credential.salt, credential.iterations, mechanism)
    assert not verify_client_proof(
        credential, b"auth", client_proof(wrong, b"auth", mechanism=mechanism)
    )


def test_verify_password() -> None:
    credential = make_credential("correct horse", salt=b"0123456789abcdef", iterations=8192)
    assert verify_password(credential, "correct horse")
    assert not verify_password(credential, "correct horse ")
    assert not verify_password(credential, "")
    # the same password with another salt stores other keys
    other = make_credential("correct horse", salt=b"fedcba9876543210", iterations=8192)
    assert other.stored_key != credential.stored_key
    assert not verify_password(replace(credential, salt=other.salt), "correct horse")


def test_the_password_is_not_kept_and_secrets_stay_out_of_repr() -> None:
    credential = make_credential("hunter22", salt=b"pepper-and-salt")
    assert "hunter22" not in repr(credential.to_dict())
    text = repr(credential)
    assert "SCRAM-SHA-256" in text and "4096" in text
    assert repr(credential.stored_key) not in text and "pepper" not in text


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"iterations": ITERATIONS_MIN - 1}, "iterations"),
        ({"iterations": ITERATIONS_MAX + 1}, "iterations"),
        ({"salt": b""}, "salt"),
        ({"salt": b"x" * 257}, "salt"),
        ({"mechanism": "SCRAM-SHA-1"}, "mechanism"),
    ],
)
def test_make_credential_refuses_weak_or_unbounded_settings(
    kwargs: dict[str, Any], fragment: str
) -> None:
    arguments: dict[str, Any] = {"salt": b"0123456789abcdef", **kwargs}
    with pytest.raises(ScramError, match=fragment):
        make_credential("pw", **arguments)


def test_an_empty_password_is_refused() -> None:
    with pytest.raises(ScramError, match="empty password"):
        make_credential("", salt=b"0123456789abcdef")


def test_validate_credential_checks_key_lengths() -> None:
    credential = make_credential("pw", salt=b"0123456789abcdef")
    validate_credential(credential)
    with pytest.raises(ScramError, match="stored_key must be 32 bytes"):
        validate_credential(replace(credential, stored_key=b"short"))
    with pytest.raises(ScramError, match="must be 64 bytes for SCRAM-SHA-512"):
        validate_credential(replace(credential, mechanism=ScramMechanism.SHA_512))


@pytest.mark.parametrize("name", ["alice", "CN=app,O=corp", "a" * 256, "bob smith", "ü"])
def test_valid_user_names(name: str) -> None:
    validate_user(name)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "non-empty"),
        ("a" * 257, "longer than 256"),
        ("User:alice", "':'"),
        ("bob\x00", "unprintable"),
        ("tab\there", "unprintable"),
        ("*", "every user"),
    ],
)
def test_invalid_user_names(name: str, fragment: str) -> None:
    with pytest.raises(ScramError, match=fragment):
        validate_user(name)


def test_credential_round_trips_through_its_map() -> None:
    credential = make_credential("pw", mechanism="SCRAM-SHA-512", salt=b"0123456789abcdef")
    data = credential.to_dict()
    assert type(data["mechanism"]) is str
    assert ScramCredential.from_dict(data) == credential


@pytest.mark.parametrize(
    "change",
    [
        {"mechanism": "MD5"},
        {"iterations": "4096"},
        {"iterations": True},
        {"salt": "text"},
        {"stored_key": None},
        {"extra": 1},
    ],
)
def test_a_map_that_is_not_a_credential_is_a_scram_error(change: dict[str, Any]) -> None:
    data = {**make_credential("pw", salt=b"0123456789abcdef").to_dict(), **change}
    with pytest.raises(ScramError):
        ScramCredential.from_dict(data)
    with pytest.raises(ScramError):
        ScramCredential.from_dict([1, 2])


def test_a_credential_from_the_salted_password_equals_one_from_the_password() -> None:
    salted = salted_password("pencil", SALT, 4096)
    credential = credential_from_salted_password("SCRAM-SHA-256", SALT, 4096, salted)
    assert credential == make_credential("pencil", salt=SALT)
    assert verify_client_proof(credential, AUTH_MESSAGE, PROOF)
    with pytest.raises(ScramError, match="32 bytes"):
        credential_from_salted_password("SCRAM-SHA-256", SALT, 4096, salted[:-1])
    with pytest.raises(ScramError, match="64 bytes"):
        credential_from_salted_password("SCRAM-SHA-512", SALT, 4096, salted)
    with pytest.raises(ScramError, match="iterations"):
        credential_from_salted_password("SCRAM-SHA-256", SALT, 100, salted)
