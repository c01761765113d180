"""Who is calling, and may they: principals from TLS certificates, and the authorizer.

The broker's listener is mutual TLS (``[security] protocol = "tls"``): gRPC verifies every peer's
certificate against the cluster CA before a servicer runs, so a certificate that reaches us was
minted by whoever holds the CA key. What it says decides the principal:

* a SAN URI ``raftlog://broker/<id>`` (``raftlog tls issue-broker``) -> broker ``<id>``, principal
  ``User:broker-<id>``. Broker-only RPCs (replica fetch, RegisterBroker, BrokerHeartbeat,
  AlterPartition, ReportDamagedReplicas, AllocateProducerIds and the controller's forwarded admin
  calls) accept a broker principal only, and only for the broker id it proves: a broker's
  certificate cannot speak for another broker.
* anything else -> ``User:<CN>``.

Authorization (Kafka's model, ``raftlog.raft.acl``; the host of an ACL is matched against the
caller's IP address as this broker sees it, ``context.peer()``): brokers and the ``super_users``
of the config may do anything; everyone else needs an ALLOW ACL and no DENY ACL for the
operation on the resource. ACLs live in the replicated metadata, so every broker decides the
same once it has applied the same version. Internal topics (``__consumer_offsets``) can be
neither created, written nor deleted by any client principal, super users included: only brokers
touch them.

The optional password listener (``listen.grpc_password``) is TLS *without* client certificates
(gRPC's Python API cannot make a client certificate optional on one port, so a second port it
is, as Kafka's SASL_SSL listener sits beside its SSL one). A call there must carry the headers
``x-raftlog-user`` and ``x-raftlog-password``; the password is checked against the user's SCRAM
credential in the metadata (RFC 5802 StoredKey/ServerKey: the broker never stores or logs the
password). A verified pair is cached under an HMAC of the password with a per-process random key
(so repeated calls cost a dict lookup, and the cache is no use to anyone who dumps it), and
dropped when the credential changes. Failed checks are rate-limited (``AUTH_FAILURES_PER_S``)
because each costs thousands of HMACs on the broker loop; past the limit a call fails at once.
A call without a verified principal on that listener is SASL_AUTHENTICATION_FAILED.

``protocol = "plaintext"`` (which a config must say explicitly) has no identities: every caller
is ``User:ANONYMOUS``, no check applies, and the ACL admin calls answer SECURITY_DISABLED.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from raftlog.raft.acl import (
    WILDCARD_PRINCIPAL,
    AclBinding,
    AclIndex,
    Operation,
    Permission,
    ResourceType,
)
from raftlog.raft.metadata_records import BrokerRecord
from raftlog.raft.scram import ScramCredential, verify_password

__all__ = [
    "ANONYMOUS",
    "BROKER_URI_PREFIX",
    "CLUSTER_RESOURCE",
    "INTERNAL_TOPIC_PREFIX",
    "PASSWORD_HEADER",
    "USER_HEADER",
    "AuthenticationFailed",
    "Authorizer",
    "ConnectionCall",
    "PasswordCheck",
    "Principal",
    "principal_from_auth_context",
    "principal_from_pem",
]

BROKER_URI_PREFIX = "raftlog://broker/"  # the same string as raftlog.client.certs
CLUSTER_RESOURCE = "kafka-cluster"  # Kafka's name for the one cluster resource
INTERNAL_TOPIC_PREFIX = "__"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # "User:<name>"
    broker_id: int | None = None  # set only for a certificate with a broker SAN URI
    host: str = "*"  # the caller's IP address as this broker sees it; "*" when unknown

    @property
    def is_broker(self) -> bool:
        return self.broker_id is not None


ANONYMOUS = Principal("User:ANONYMOUS")


@functools.lru_cache(maxsize=1024)
def principal_from_pem(pem: bytes) -> Principal:
    """The principal a verified certificate proves (cached: a client presents the same one on
    every call of its connection)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith(BROKER_URI_PREFIX) and uri[len(BROKER_URI_PREFIX) :].isdigit():
            broker_id = int(uri[len(BROKER_URI_PREFIX) :])
            return Principal(f"User:broker-{broker_id}", broker_id)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    return Principal(f"User:{common_name}" if common_name else "User:ANONYMOUS")


def principal_from_auth_context(auth: Mapping[str, Sequence[bytes]]) -> Principal:
    """``context.auth_context()`` of a gRPC call -> its principal (ANONYMOUS without TLS)."""
    pems = auth.get("x509_pem_cert")
    if not pems:
        return ANONYMOUS
    return principal_from_pem(bytes(pems[0]))


USER_HEADER = "x-raftlog-user"
PASSWORD_HEADER = "x-raftlog-password"
AUTH_FAILURES_PER_S = 20.0  # failed password checks per second, all callers together
_PASSWORD_CACHE_MAX = 4096


class AuthenticationFailed(Exception):
    """No certificate and no valid user name and password: SASL_AUTHENTICATION_FAILED."""


class PasswordCheck:
    """Verifies user name + password against SCRAM credentials; owned by the broker loop.

    ``credential(name)`` returns the user's current credential (None: no such user);
    ``now_s`` is a monotonic clock in seconds (the failure rate limit).
    """

    def __init__(
        self,
        credential: Callable[[str], ScramCredential | None],
        now_s: Callable[[], float],
        failures_per_s: float = AUTH_FAILURES_PER_S,
    ) -> None:
        self._credential = credential
        self._now_s = now_s
        self._pepper = secrets.token_bytes(32)
        self._verified: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()  # -> stored_key
        self._failures_per_s = failures_per_s
        self._budget = failures_per_s
        self._budget_at = now_s()

    def may_fail_now(self) -> bool:
        """Take one failure from the budget up front (a SCRAM proof check, which the caller
        ``refund_failure``s when it succeeds); False: over the limit, refuse without checking."""
        return self._may_fail()

    def refund_failure(self) -> None:
        self._budget += 1

    def _may_fail(self) -> bool:
        now = self._now_s()
        self._budget = min(
            self._failures_per_s, self._budget + (now - self._budget_at) * self._failures_per_s
        )
        self._budget_at = now
        if self._budget < 1:
            return False
        self._budget -= 1
        return True

    def principal(self, user: str, password: str) -> Principal:
        credential = self._credential(user)
        key = (user, hmac.digest(self._pepper, password.encode("utf-8", "surrogatepass"), "sha256"))
        if credential is not None and self._verified.get(key) == credential.stored_key:
            self._verified.move_to_end(key)
            return Principal(f"User:{user}")
        if not self._may_fail():
            raise AuthenticationFailed("too many failed authentications: try again later")
        if credential is None or not verify_password(credential, password):
            raise AuthenticationFailed(f"wrong user name or password for {user!r}")
        self._budget += 1  # a success does not count against the failure budget
        self._verified[key] = credential.stored_key
        if len(self._verified) > _PASSWORD_CACHE_MAX:
            self._verified.popitem(last=False)
        return Principal(f"User:{user}")


class ConnectionCall:
    """What a servicer receives in place of a gRPC context when another shell (the Kafka
    listener) calls it: the principal that connection authenticated, and which of a broker's
    addresses its clients dial. The servicers read a context only through the ``Authorizer``."""

    __slots__ = ("principal",)

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def address_of(self, record: BrokerRecord) -> str:
        return record.kafka_address or ""


def peer_host(peer: str) -> str:
    """gRPC's ``context.peer()`` ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234") -> the IP."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or "*"
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or "*"
    return "*"  # a unix socket or something unknown: only host "*" ACLs apply


def is_internal(topic: str) -> bool:
    return topic.startswith(INTERNAL_TOPIC_PREFIX)


class Authorizer:
    """Decides each request; owned by the broker loop (reads the metadata under its lock).

    ``acl_index`` returns the index of the metadata version currently applied.
    """

    def __init__(
        self,
        enabled: bool,
        super_users: Sequence[str],
        acl_index: Callable[[], AclIndex],
        passwords: PasswordCheck | None = None,
    ) -> None:
        self.enabled = enabled
        self.super_users = frozenset(super_users)
        self._acl_index = acl_index
        self._passwords = passwords

    def principal(self, context: Any) -> Principal:
        """The caller of a gRPC call: from its certificate (mutual-TLS listener) or its user
        name and password (password listener); a Kafka-listener call carries the principal its
        connection authenticated. Raises AuthenticationFailed."""
        if isinstance(context, ConnectionCall):
            return context.principal
        if not self.enabled:
            return ANONYMOUS
        auth = context.auth_context()
        if auth.get("x509_pem_cert"):
            principal = principal_from_auth_context(auth)
        else:
            headers = dict(context.invocation_metadata() or ())
            user, password = headers.get(USER_HEADER), headers.get(PASSWORD_HEADER)
            if (
                self._passwords is None
                or not isinstance(user, str)
                or not isinstance(password, str)
            ):
                raise AuthenticationFailed("no client certificate and no user name and password")
            principal = self._passwords.principal(user, password)
        return replace(principal, host=peer_host(context.peer() or ""))

    @staticmethod
    def by_certificate(context: Any) -> bool:
        """True when the call came over the mutual-TLS listener (it carries a certificate)."""
        return bool(context.auth_context().get("x509_pem_cert"))

    def listener_address(self, record: BrokerRecord, context: Any) -> str:
        """The address of ``record`` on the listener this call came in on: a client of the password
        listener has no certificate and must be sent to the other brokers' password listeners
        (empty when that broker has none)."""
        if isinstance(context, ConnectionCall):
            return context.address_of(record)
        if not self.enabled or self.by_certificate(context):
            return record.address
        return record.password_address or ""

    def is_super(self, principal: Principal) -> bool:
        return not self.enabled or principal.is_broker or principal.name in self.super_users

    def allowed(
        self, principal: Principal, operation: Operation, resource: ResourceType, name: str
    ) -> bool:
        if self.is_super(principal):
            return True
        return self._acl_index().authorize(
            principal.name, operation, resource, name, principal.host
        )

    def topic_write_allowed(self, principal: Principal, topic: str, operation: Operation) -> bool:
        """Writes, creates, deletes and config changes of a topic: internal topics are for
        brokers only, whatever the ACLs say."""
        if self.enabled and is_internal(topic) and not principal.is_broker:
            return False
        return self.allowed(principal, operation, ResourceType.TOPIC, topic)

    def may_create_topic(self, principal: Principal, topic: str) -> bool:
        """CREATE on the cluster or on the topic (Kafka's rule); internal topics: brokers."""
        if self.enabled and is_internal(topic) and not principal.is_broker:
            return False
        return self.allowed(
            principal, Operation.CREATE, ResourceType.CLUSTER, CLUSTER_RESOURCE
        ) or self.allowed(principal, Operation.CREATE, ResourceType.TOPIC, topic)

    def may_write_some_topic(self, principal: Principal, acls: Iterable[AclBinding]) -> bool:
        """Kafka's rule for IDEMPOTENT_WRITE without the cluster ACL: WRITE on *some* topic,
        existing or not — an ALLOW whose pattern names a (non-internal) topic name for which
        no DENY applies."""
        if self.is_super(principal):
            return True
        index = self._acl_index()
        for binding in acls:
            if (
                binding.permission is Permission.ALLOW
                and binding.resource_type is ResourceType.TOPIC
                and binding.operation in (Operation.WRITE, Operation.ALL)
                and binding.principal in (principal.name, WILDCARD_PRINCIPAL)
                and not is_internal(binding.resource_name)
                and index.authorize(
                    principal.name,
                    Operation.WRITE,
                    ResourceType.TOPIC,
                    binding.resource_name,
                    principal.host,
                )
            ):
                return True
        return False

    def broker_only(self, principal: Principal, broker_id: int | None = None) -> bool:
        """A broker-only call: the caller is a broker and, when the request names a broker id,
        that id is the one its certificate proves."""
        if not self.enabled:
            return True
        if principal.broker_id is None:
            return False
        return broker_id is None or broker_id == principal.broker_id
