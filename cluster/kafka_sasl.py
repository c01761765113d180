"""The server side of SASL on the Kafka listener: PLAIN and SCRAM-SHA-256/512. Pure: no IO.

A Kafka client that has no client certificate authenticates on its connection before anything
else (KIP-152: SaslHandshake names the mechanism, then SaslAuthenticate carries each token). The
same users as the gRPC password listener: their SCRAM credentials live in the replicated metadata
(``raftlog user add``); the broker never sees or stores a password except PLAIN's, which it checks
against the credential and forgets (``PasswordCheck``: cached under an HMAC, failures rate-limited).

SCRAM (RFC 5802; Kafka's variant: no channel binding, ``n,,`` GS2 header, optional ``tokenauth``
extension refused) in two round trips::

    client-first   n,,n=<user>,r=<client nonce>
    server-first   r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final   c=biws,r=<both nonces>,p=<base64 ClientProof>
    server-final   v=<base64 ServerSignature>

A user who does not exist, or whose credential is of the other hash, gets a made-up salt derived
from the user name (so the server-first message does not tell who exists) and fails at the proof,
which costs the failure budget like a wrong password.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable

from raftlog.raft.scram import (
    ITERATIONS_MIN,
    ScramCredential,
    ScramMechanism,
    server_signature,
    verify_client_proof,
)

from .auth import AuthenticationFailed, PasswordCheck, Principal

__all__ = ["MECHANISMS", "SaslServer"]

MECHANISMS = ("PLAIN", ScramMechanism.SHA_256.value, ScramMechanism.SHA_512.value)
_TOKEN_BYTES_MAX = 4096  # a SASL token longer than this is not a login


class SaslServer:
    """One connection's authentication. ``step(token)`` → the token to send back; ``principal``
    is set once the exchange succeeded. Raises ``AuthenticationFailed`` (the connection closes).

    ``nonce`` is the server nonce (random, from the shell); ``pepper`` keys the made-up salts.
    """

    def __init__(
        self,
        mechanism: str,
        passwords: PasswordCheck,
        credential: Callable[[str], ScramCredential | None],
        *,
        nonce: bytes,
        pepper: bytes,
    ) -> None:
        if mechanism not in MECHANISMS:
            raise AuthenticationFailed(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self.principal: Principal | None = None
        self._passwords = passwords
        self._credential = credential
        self._nonce = base64.b64encode(nonce).decode().rstrip("=").replace("/", "_")
        self._pepper = pepper
        self._scram: tuple[str, str, str, ScramCredential | None] | None = None

    @property
    def done(self) -> bool:
        return self.principal is not None

    def step(self, token: bytes) -> bytes:
        if self.done:
            raise AuthenticationFailed("already authenticated")
        if len(token) > _TOKEN_BYTES_MAX:
            raise AuthenticationFailed("SASL token too long")
        if self.mechanism == "PLAIN":
            return self._plain(token)
        if self._scram is None:
            return self._scram_first(token)
        return self._scram_final(token)

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise AuthenticationFailed("a PLAIN token is authzid NUL user NUL password")
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != user:
            raise AuthenticationFailed("a PLAIN authorization id must be empty or the user")
        self.principal = self._passwords.principal(user, password)
        return b""

    def _scram_first(self, token: bytes) -> bytes:
        text = token.decode("utf-8", "replace")
        if not text.startswith("n,,"):
            raise AuthenticationFailed("SCRAM: channel binding and authzid are not supported")
        bare = text[3:]
        fields = _fields(bare)
        user, client_nonce = fields.get("n"), fields.get("r")
        if not user or not client_nonce or "tokenauth" in fields:
            raise AuthenticationFailed("SCRAM: client-first-message needs n= and r=")
        user = user.replace("=2C", ",").replace("=3D", "=")
        credential = self._credential(user)
        if credential is not None and credential.mechanism != self.mechanism:
            credential = None
        if credential is None:
            salt = hmac.digest(self._pepper, user.encode(), "sha256")[:16]
            iterations = ITERATIONS_MIN
        else:
            salt, iterations = credential.salt, credential.iterations
        nonce = client_nonce + self._nonce
        first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        self._scram = (user, bare, first, credential)
        return first.encode()

    def _scram_final(self, token: bytes) -> bytes:
        assert self._scram is not None
        user, client_first, server_first, credential = self._scram
        text = token.decode("utf-8", "replace")
        without_proof, _, proof_field = text.rpartition(",p=")
        fields = _fields(without_proof)
        if fields.get("c") != "biws" or fields.get("r") != _fields(server_first).get("r"):
            raise AuthenticationFailed("SCRAM: wrong channel binding or nonce")
        try:
            proof = base64.b64decode(proof_field, validate=True)
        except ValueError as exc:
            raise AuthenticationFailed("SCRAM: the proof is not base64") from exc
        if not self._passwords.may_fail_now():
            raise AuthenticationFailed("too many failed authentications: try again later")
        auth_message = f"{client_first},{server_first},{without_proof}".encode()
        if credential is None or not verify_client_proof(credential, auth_message, proof):
            raise AuthenticationFailed(f"wrong user name or password for {user!r}")
        self._passwords.refund_failure()
        self.principal = Principal(f"User:{user}")
        signature = server_signature(credential, auth_message)
        return b"v=" + base64.b64encode(signature)


def _fields(message: str) -> dict[str, str]:
    """``a=1,b=2`` → {"a": "1", "b": "2"} (values may hold "="; the keys are one letter)."""
    out = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
        elif part:
            out[part] = ""
    return out
