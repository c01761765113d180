"""ACL and user calls for ``Admin``: Kafka's ``kafka-acls`` and ``kafka-configs --alter
--add-config SCRAM-...`` as methods.

An ``Acl`` reads "``principal`` from ``host`` is ``permission`` (allow/deny) ``operation`` on the
``resource_type`` resources ``resource_name`` names, as a ``pattern_type`` (literal/prefixed)
pattern". The broker validates them (raftlog.raft.acl) and answers INVALID_REQUEST with the rule
that was broken. Passwords never leave the client: ``upsert_user`` sends the salt, the iteration
count and the RFC 5802 SaltedPassword, from which the controller stores StoredKey and ServerKey.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from raftlog.proto import broker_pb2
from raftlog.proto.errors import raise_for

from .metadata import ClusterMetadata

__all__ = ["Acl", "AclAdmin", "UserDescription", "WhoAmI"]

_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


@dataclass(frozen=True, slots=True)
class Acl:
    principal: str  # "User:alice", "User:*"
    resource_type: str  # topic | group | cluster
    resource_name: str  # a name, "*", or "kafka-cluster" for the cluster
    operation: str  # read, write, create, delete, alter, describe, ..., all
    permission: str = "allow"  # allow | deny
    pattern_type: str = "literal"  # literal | prefixed
    host: str = "*"

    def to_proto(self) -> broker_pb2.AclBinding:
        return broker_pb2.AclBinding(**asdict(self))

    @classmethod
    def from_proto(cls, message: broker_pb2.AclBinding) -> Acl:
        return cls(
            principal=message.principal,
            resource_type=message.resource_type,
            resource_name=message.resource_name,
            operation=message.operation,
            permission=message.permission,
            pattern_type=message.pattern_type,
            host=message.host,
        )


@dataclass(frozen=True, slots=True)
class WhoAmI:
    principal: str
    broker_id: int  # -1 unless a broker certificate
    super_user: bool


@dataclass(frozen=True, slots=True)
class UserDescription:
    user: str
    mechanism: str
    iterations: int


def _filter(
    principal: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
    operation: str | None = None,
    permission: str | None = None,
    pattern_type: str | None = None,
    host: str | None = None,
) -> broker_pb2.AclBinding:
    """None fields match anything (sent as empty strings)."""
    return broker_pb2.AclBinding(
        principal=principal or "",
        resource_type=resource_type or "",
        resource_name=resource_name or "",
        operation=operation or "",
        permission=permission or "",
        pattern_type=pattern_type or "",
        host=host or "",
    )


class _NotEverywhere(Exception):
    """Some brokers do not enforce the change yet (their addresses are the argument)."""


class AclAdmin:
    """Security calls for ``Admin`` (a mixin: needs ``_call`` and ``_retrying``)."""

    _call: Callable[..., Any]
    _retrying: Callable[..., Any]
    metadata: ClusterMetadata
    timeout_s: float

    def _on_every_broker(self, applied: Callable[[set[Acl]], bool]) -> None:
        """Wait until every known broker's ACLs satisfy ``applied``: each broker applies the
        metadata on its own, and a request that reaches one still behind would be judged by
        the old ACLs (Kafka has the same propagation delay)."""
        self.metadata.refresh()
        pending = set(self.metadata.brokers().values())
        request = broker_pb2.DescribeAclsRequest(filter=_filter())

        def ask_pending() -> None:
            for address in sorted(pending):
                try:
                    response = self.metadata.stub(address).DescribeAcls(request, timeout=5)
                except grpc.RpcError:
                    continue  # down: it catches up from the quorum when it comes back
                if not response.error.code and applied({Acl.from_proto(a) for a in response.acls}):
                    pending.discard(address)
            if pending:
                raise _NotEverywhere(sorted(pending))

        retrying = Retrying(
            retry=retry_if_exception_type(_NotEverywhere),
            stop=stop_after_delay(self.timeout_s),
            wait=wait_fixed(0.02),
        )
        # out of time: applied at the controller; a straggler catches up on its own
        with contextlib.suppress(RetryError):
            retrying(ask_pending)

    def _checked(self, method: str, request: Any) -> Any:
        def attempt() -> Any:
            response = self._call(method, request)
            raise_for(response.error)
            return response

        return self._retrying(attempt)

    def whoami(self) -> WhoAmI:
        response = self._checked("WhoAmI", broker_pb2.WhoAmIRequest())
        return WhoAmI(response.principal, response.broker_id, response.super_user)

    def create_acls(self, acls: list[Acl], *, wait: bool = True) -> None:
        """Add ACLs; with ``wait``, return once every live broker enforces them."""
        self._checked("CreateAcls", broker_pb2.CreateAclsRequest(acls=[a.to_proto() for a in acls]))
        if wait:
            self._on_every_broker(set(acls).issubset)

    def describe_acls(self, **filter_fields: str | None) -> list[Acl]:
        response = self._checked(
            "DescribeAcls", broker_pb2.DescribeAclsRequest(filter=_filter(**filter_fields))
        )
        return [Acl.from_proto(a) for a in response.acls]

    def delete_acls(self, **filter_fields: str | None) -> list[Acl]:
        """Delete every ACL the filter matches (None fields match anything); returns them once
        no live broker enforces them any more."""
        response = self._checked(
            "DeleteAcls", broker_pb2.DeleteAclsRequest(filters=[_filter(**filter_fields)])
        )
        deleted = [Acl.from_proto(a) for a in response.deleted]
        self._on_every_broker(lambda acls: acls.isdisjoint(deleted))
        return deleted

    def upsert_user(
        self,
        user: str,
        password: str,
        *,
        mechanism: str = "SCRAM-SHA-256",
        iterations: int = 4096,
    ) -> None:
        if mechanism not in _HASHES:
            raise ValueError(f"mechanism is one of {sorted(_HASHES)}")
        salt = os.urandom(24)
        salted = hashlib.pbkdf2_hmac(_HASHES[mechanism], password.encode(), salt, iterations)
        self._checked(
            "UpsertUser",
            broker_pb2.UpsertUserRequest(
                user=user,
                mechanism=mechanism,
                iterations=iterations,
                salt=salt,
                salted_password=salted,
            ),
        )

    def delete_user(self, user: str) -> None:
        self._checked("DeleteUser", broker_pb2.DeleteUserRequest(user=user))

    def describe_users(self) -> list[UserDescription]:
        response = self._checked("DescribeUsers", broker_pb2.DescribeUsersRequest())
        return [UserDescription(u.user, u.mechanism, u.iterations) for u in response.users]
