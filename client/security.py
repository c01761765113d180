"""How a client reaches brokers: TLS with the cluster's CA and a client certificate, or plaintext.

Every client object (Producer, Consumer, Admin, GroupAdmin, the status view) takes a
``security=`` argument. There is no silent default: ``ClientSecurity.plaintext()`` must be asked
for by name, and only works against brokers whose config says ``protocol = "plaintext"``.

    security = ClientSecurity.from_files("tls/ca.pem", "tls/client-ops.pem", "tls/client-ops.key")
    with Producer("10.0.0.1:9092", security=security) as producer: ...

``ClientSecurity.with_password("tls/ca.pem", "alice", password)`` authenticates as a SCRAM user
(``raftlog user add``) on a broker's password listener (``listen.grpc_password``: TLS without a
client certificate); the password goes with every call, over TLS only, and the broker checks it
against the salted hash kept in the metadata.

``ClientSecurity.from_dir(".raftlog")`` picks up what ``raftlog cluster up`` made: the cluster's
CA and its ``admin`` client certificate (a super user of that cluster). The CLI does the same
from ``--dir`` / ``RAFTLOG_TLS_DIR``; ``--plaintext`` asks for plaintext explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = ["PASSWORD_HEADER", "USER_HEADER", "ClientSecurity", "SecurityConfigError"]

USER_HEADER = "x-raftlog-user"  # the same names as raftlog.cluster.auth
PASSWORD_HEADER = "x-raftlog-password"


class SecurityConfigError(Exception):
    """Missing or unreadable TLS material; the message names the file."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


class _PasswordPlugin:
    """Adds the user name and password to every call (gRPC sends call credentials only over a
    secure channel)."""

    def __init__(self, username: str, password: str) -> None:
        self._metadata = ((USER_HEADER, username), (PASSWORD_HEADER, password))

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        callback(self._metadata, None)


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """TLS material (PEM bytes) or plaintext; immutable and safe to share between threads."""

    ca_pem: bytes | None  # None: plaintext
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    # SCRAM user (``raftlog user add``) for a broker's password listener (``listen.grpc_password``:
    # TLS without client certificates); sent with every call, over TLS only
    username: str | None = field(default=None)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def plaintext(cls) -> ClientSecurity:
        return cls(None)

    @property
    def is_tls(self) -> bool:
        return self.ca_pem is not None

    @classmethod
    def from_files(
        cls, ca_file: str | Path, cert_file: str | Path | None, key_file: str | Path | None
    ) -> ClientSecurity:
        if (cert_file is None) != (key_file is None):
            raise SecurityConfigError("a client certificate needs both its cert and key file")
        return cls(
            _read(ca_file, "CA certificate"),
            _read(cert_file, "client certificate") if cert_file else None,
            _read(key_file, "client key") if key_file else None,
        )

    @classmethod
    def with_password(cls, ca_file: str | Path, username: str, password: str) -> ClientSecurity:
        """TLS to a password listener, authenticating as the SCRAM user ``username``."""
        if not username or not password:
            raise SecurityConfigError("a user name and a password are both needed")
        return cls(_read(ca_file, "CA certificate"), username=username, password=password)

    @classmethod
    def from_dir(cls, cluster_dir: str | Path, client: str = "admin") -> ClientSecurity:
        """The security of a ``raftlog cluster up`` directory: plaintext when that cluster was
        made with ``--plaintext`` (recorded in its cluster.json), else its CA and the named
        client certificate."""
        base = Path(cluster_dir)
        state = base / "cluster.json"
        try:
            if state.exists() and json.loads(state.read_text()).get("plaintext"):
                return cls.plaintext()
        except (OSError, ValueError) as exc:
            raise SecurityConfigError(f"{state} is damaged: {exc}") from exc
        tls = base / "tls"
        return cls.from_files(
            tls / "ca.pem", tls / f"client-{client}.pem", tls / f"client-{client}.key"
        )

    def credentials(self) -> grpc.ChannelCredentials:
        assert self.ca_pem is not None, "plaintext has no channel credentials"
        tls = grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)
        if self.username is None:
            return tls
        return grpc.composite_channel_credentials(
            tls, grpc.metadata_call_credentials(_PasswordPlugin(self.username, self.password or ""))
        )

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        if self.ca_pem is None:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(address, self.credentials(), options=list(options))
