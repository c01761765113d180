"""A relayed controller call's proof of origin: the broker that sent it signs it.

A relay (``controller_link.py``) forwards broker X's call to the controller over its own
connection, so the controller's TLS sees the relay's certificate, not X's. X therefore signs what
it sends — the method, the request's bytes and the time — with the key of its broker certificate
and attaches that certificate. The controller accepts a relayed call only when the cluster CA
issued that certificate, the certificate is valid now, its broker id is the one the request
names, the signature holds, and the time is within ``PROOF_AGE_MS_MAX`` of the controller's
clock. So a broker still cannot speak for another, relayed or not.

What it does not stop: a relay replaying, within that window, a call it carried. A replayed
heartbeat keeps a dead broker unfenced that much longer at most (the probe still fences a
crashed process at once); every metadata change is still checked against epochs and
incarnations, so a replayed AlterPartition or registration of the same incarnation changes
nothing that its first delivery did not.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .auth import principal_from_pem

__all__ = [
    "ORIGIN_HEADERS",
    "PROOF_AGE_MS_MAX",
    "OriginSigner",
    "origin_broker",
    "origin_headers",
]

ORIGIN_CERT = "x-raftlog-origin-cert-bin"  # the sender's broker certificate (DER)
ORIGIN_SIGNATURE = "x-raftlog-origin-sig-bin"
ORIGIN_TIME = "x-raftlog-origin-ms"  # the sender's wall clock when it signed (ms)
ORIGIN_HEADERS = (ORIGIN_CERT, ORIGIN_SIGNATURE, ORIGIN_TIME)
PROOF_AGE_MS_MAX = 30_000  # clocks of a cluster's machines agree far better than this (NTP)

Metadata = tuple[tuple[str, str | bytes], ...]


def _signed_bytes(method: str, request: Any, wall_ms: int) -> bytes:
    body: bytes = request.SerializeToString(deterministic=True)
    return b"\0".join((method.encode(), str(wall_ms).encode(), body))


class OriginSigner:
    """Signs this broker's controller calls with its certificate's key (EC or RSA)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"a broker key must be EC or RSA, not {type(key).__name__}")
        self._key = key
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)

    @classmethod
    def from_files(cls, cert_file: str, key_file: str) -> OriginSigner:
        with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
            return cls(cert.read(), key.read())

    def headers(self, method: str, request: Any, wall_ms: int | None = None) -> Metadata:
        wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
        data = _signed_bytes(method, request, wall_ms)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return (
            (ORIGIN_CERT, self._cert_der),
            (ORIGIN_SIGNATURE, signature),
            (ORIGIN_TIME, str(wall_ms)),
        )


def origin_headers(metadata: Sequence[tuple[str, Any]] | None) -> Metadata:
    """The proof-of-origin headers of a call, to forward with it."""
    return tuple((k, v) for k, v in metadata or () if k in ORIGIN_HEADERS)


@functools.lru_cache(maxsize=256)
def _issued_certificate(cert_der: bytes, ca_pem: bytes) -> x509.Certificate | None:
    """The certificate, if the CA issued it (cached: a broker sends the same one every time)."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return None
    return cert


def origin_broker(
    metadata: Sequence[tuple[str, Any]] | None,
    method: str,
    request: Any,
    ca_pem: bytes,
    wall_ms: int | None = None,
) -> int | None:
    """The broker id a call's proof of origin proves; None when it is absent or proves nothing
    (not issued by the CA, expired, not a broker certificate, a bad signature, too old)."""
    headers = dict(metadata or ())
    cert_der, signature, sent = (headers.get(h) for h in ORIGIN_HEADERS)
    if not isinstance(cert_der, bytes) or not isinstance(signature, bytes):
        return None
    try:
        sent_ms = int(str(sent))
    except ValueError:
        return None
    wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
    if abs(wall_ms - sent_ms) > PROOF_AGE_MS_MAX:
        return None
    cert = _issued_certificate(cert_der, ca_pem)
    now = datetime.fromtimestamp(wall_ms / 1000, UTC)
    if cert is None or not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return None
    data = _signed_bytes(method, request, sent_ms)
    public_key = cert.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return None
    except InvalidSignature:
        return None
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return principal_from_pem(pem).broker_id
