"""SCRAM credentials (RFC 5802, RFC 7677): what the cluster stores for a user, and the proofs.

Pure: no IO, no randomness — the salt comes in as an argument (the shell draws it from
``os.urandom``). The password is never stored: only what RFC 5802 §3 lets the server keep,

    SaltedPassword = Hi(password, salt, iterations)       # PBKDF2-HMAC-H
    ClientKey      = HMAC(SaltedPassword, "Client Key")
    StoredKey      = H(ClientKey)
    ServerKey      = HMAC(SaltedPassword, "Server Key")

with H = SHA-256 (SCRAM-SHA-256) or SHA-512 (SCRAM-SHA-512). A login proves knowledge of
ClientKey without sending it:

    ClientSignature = HMAC(StoredKey, AuthMessage)
    ClientProof     = ClientKey XOR ClientSignature       # sent by the client
    ServerSignature = HMAC(ServerKey, AuthMessage)        # sent back: the server knew ServerKey

where AuthMessage = client-first-message-bare "," server-first-message ","
client-final-message-without-proof. The server recovers ClientKey = ClientProof XOR
ClientSignature and checks H(ClientKey) == StoredKey. Worked example: RFC 7677 §3 (user "user",
password "pencil", 4096 iterations) is the test in tests/unit/raft/test_scram.py.

Passwords are encoded as UTF-8 without SASLprep, as Kafka does; the same bytes must be used at
login. Iterations are bounded like Kafka's (4096..16384) because every login costs that many
HMACs on the broker.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ITERATIONS_MAX",
    "ITERATIONS_MIN",
    "ScramCredential",
    "ScramError",
    "ScramMechanism",
    "client_proof",
    "credential_from_salted_password",
    "make_credential",
    "salted_password",
    "server_signature",
    "validate_credential",
    "validate_user",
    "verify_client_proof",
    "verify_password",
]

ITERATIONS_MIN = 4096  # RFC 7677 §4: at least 4096
ITERATIONS_MAX = 16384  # Kafka's bound: each login costs this many HMACs on the broker
SALT_BYTES_MAX = 256
USER_CHARS_MAX = 256


class ScramError(ValueError):
    """A user name, credential or password that is malformed (the caller's fault)."""


class ScramMechanism(StrEnum):
    SHA_256 = "SCRAM-SHA-256"
    SHA_512 = "SCRAM-SHA-512"

    @property
    def hash_name(self) -> str:
        return _HASHES[self][0]

    @property
    def digest_bytes(self) -> int:
        return _HASHES[self][1]


_HASHES = {ScramMechanism.SHA_256: ("sha256", 32), ScramMechanism.SHA_512: ("sha512", 64)}


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the cluster keeps for one user (the secrets stay out of ``repr``)."""

    mechanism: ScramMechanism
    salt: bytes = field(repr=False)
    iterations: int  # ITERATIONS_MIN <= iterations <= ITERATIONS_MAX
    stored_key: bytes = field(repr=False)  # len == mechanism.digest_bytes
    server_key: bytes = field(repr=False)  # len == mechanism.digest_bytes

    def to_dict(self) -> dict[str, Any]:
        """The plain map that cbor2 commands and the snapshot hold."""
        return {
            "mechanism": str(self.mechanism),
            "salt": self.salt,
            "iterations": self.iterations,
            "stored_key": self.stored_key,
            "server_key": self.server_key,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ScramCredential:
        """Read ``to_dict``'s map back, checking its shape (not the bounds:
        ``validate_credential``). Raises ScramError for a map that is not one."""
        if not isinstance(data, dict):
            raise ScramError(f"a credential is a map, not {type(data).__name__}")
        expected = {"mechanism", "salt", "iterations", "stored_key", "server_key"}
        if set(data) != expected:
            raise ScramError(f"a credential has exactly the fields {sorted(expected)}")
        mechanism = _mechanism(data["mechanism"])
        iterations = data["iterations"]
        if not isinstance(iterations, int) or isinstance(iterations, bool):
            raise ScramError("iterations must be an integer")
        for name in ("salt", "stored_key", "server_key"):
            if not isinstance(data[name], bytes):
                raise ScramError(f"{name} must be bytes")
        return cls(mechanism, data["salt"], iterations, data["stored_key"], data["server_key"])


def _mechanism(value: Any) -> ScramMechanism:
    try:
        return ScramMechanism(value)
    except ValueError:
        choices = ", ".join(m.value for m in ScramMechanism)
        raise ScramError(f"mechanism {value!r} is not one of {choices}") from None


# ---- validation --------------------------------------------------------------------------------


def validate_user(name: str) -> None:
    """A SCRAM user name: 1-256 printable characters, no ':' (principals are ``User:<name>``),
    and not '*' (``User:*`` means everyone in ACLs)."""
    if not isinstance(name, str) or not name:
        raise ScramError("a user name is a non-empty string")
    if len(name) > USER_CHARS_MAX:
        raise ScramError(f"user name is longer than {USER_CHARS_MAX} characters")
    if not name.isprintable():
        raise ScramError(f"user name {name!r} holds unprintable characters")
    if ":" in name:
        raise ScramError(f"user name {name!r} holds ':'")
    if name == "*":
        raise ScramError("'*' is not a user name: User:* means every user in ACLs")


def validate_credential(credential: ScramCredential) -> None:
    mechanism = _mechanism(credential.mechanism)
    iterations = credential.iterations
    if not isinstance(iterations, int) or not ITERATIONS_MIN <= iterations <= ITERATIONS_MAX:
        raise ScramError(f"iterations must be in [{ITERATIONS_MIN}, {ITERATIONS_MAX}]")
    if not isinstance(credential.salt, bytes) or not 1 <= len(credential.salt) <= SALT_BYTES_MAX:
        raise ScramError(f"the salt must be 1-{SALT_BYTES_MAX} bytes")
    for name in ("stored_key", "server_key"):
        key = getattr(credential, name)
        if not isinstance(key, bytes) or len(key) != mechanism.digest_bytes:
            raise ScramError(f"{name} must be {mechanism.digest_bytes} bytes for {mechanism}")


# ---- the formulas ------------------------------------------------------------------------------


def _hmac(mechanism: ScramMechanism, key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, mechanism.hash_name)


def _h(mechanism: ScramMechanism, data: bytes) -> bytes:
    return hashlib.new(mechanism.hash_name, data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _keys(mechanism: ScramMechanism, salted: bytes) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) from SaltedPassword."""
    client_key = _hmac(mechanism, salted, b"Client Key")
    return _h(mechanism, client_key), _hmac(mechanism, salted, b"Server Key")


def salted_password(
    password: str,
    salt: bytes,
    iterations: int,
    mechanism: ScramMechanism | str = ScramMechanism.SHA_256,
) -> bytes:
    """Hi(password, salt, iterations): PBKDF2 with HMAC-H (the client computes it too)."""
    mech = _mechanism(mechanism)
    return hashlib.pbkdf2_hmac(mech.hash_name, password.encode("utf-8"), salt, iterations)


def make_credential(
    password: str,
    *,
    mechanism: ScramMechanism | str = ScramMechanism.SHA_256,
    iterations: int = ITERATIONS_MIN,
    salt: bytes,
) -> ScramCredential:
    """The stored form of ``password``; ``salt`` should be fresh random bytes (16 or more)."""
    if not password:
        raise ScramError("an empty password")
    mech = _mechanism(mechanism)
    return credential_from_salted_password(
        mech, salt, iterations, salted_password(password, salt, iterations, mech)
    )


def credential_from_salted_password(
    mechanism: ScramMechanism | str, salt: bytes, iterations: int, salted_password: bytes
) -> ScramCredential:
    """The stored form from SaltedPassword, which a client can compute and send instead of the
    password (so the password never leaves the client). Raises ScramError for bad settings."""
    mech = _mechanism(mechanism)
    if not isinstance(salted_password, bytes) or len(salted_password) != mech.digest_bytes:
        raise ScramError(f"a salted password is {mech.digest_bytes} bytes for {mech}")
    credential = ScramCredential(mech, salt, iterations, *_keys(mech, salted_password))
    validate_credential(credential)
    return credential


def verify_password(credential: ScramCredential, password: str) -> bool:
    """Does ``password`` give this credential? (Costs ``iterations`` HMACs; constant-time
    comparison.)"""
    mech = _mechanism(credential.mechanism)
    salted = salted_password(password, credential.salt, credential.iterations, mech)
    stored_key, server_key = _keys(mech, salted)
    stored_ok = hmac.compare_digest(stored_key, credential.stored_key)
    server_ok = hmac.compare_digest(server_key, credential.server_key)
    return stored_ok and server_ok


def client_proof(
    salted_password: bytes,
    auth_message: bytes,
    *,
    mechanism: ScramMechanism | str = ScramMechanism.SHA_256,
) -> bytes:
    """The client's ClientProof for ``auth_message``, from its SaltedPassword."""
    mech = _mechanism(mechanism)
    client_key = _hmac(mech, salted_password, b"Client Key")
    client_signature = _hmac(mech, _h(mech, client_key), auth_message)
    return _xor(client_key, client_signature)


def verify_client_proof(credential: ScramCredential, auth_message: bytes, proof: bytes) -> bool:
    """Does ``proof`` show knowledge of the password behind ``credential``? (Constant-time.)"""
    mech = _mechanism(credential.mechanism)
    if len(proof) != mech.digest_bytes:
        return False
    client_signature = _hmac(mech, credential.stored_key, auth_message)
    client_key = _xor(proof, client_signature)
    return hmac.compare_digest(_h(mech, client_key), credential.stored_key)


def server_signature(credential: ScramCredential, auth_message: bytes) -> bytes:
    """The ServerSignature the server sends in its final message (the client checks it)."""
    mech = _mechanism(credential.mechanism)
    return _hmac(mech, credential.server_key, auth_message)
