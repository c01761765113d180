"""Kafka-style ACLs: the bindings, their validation, and the authorizer's decision.

Pure: no IO, no clock. The metadata state machine keeps the set of bindings (replicated through
the quorum); the broker asks ``AclIndex.authorize`` per request. Super users are not handled
here: the caller decides who they are and skips the question for them.

A binding reads "``principal`` from ``host`` is allowed (or denied) ``operation`` on the
``resource_type`` resources that ``resource_name`` names (``pattern_type``)":

- ``principal`` is ``User:<name>``; ``User:*`` means every principal.
- ``host`` is the client's address as the broker sees it; ``*`` means every host. Matching is by
  equality, as in Kafka, so a caller that does not know the host passes ``*`` and then only
  bindings whose host is ``*`` apply.
- a literal ``resource_name`` names one resource, or all of its type when it is ``*``; a prefixed
  one names every resource whose name starts with it (``*`` is not a valid prefix). The cluster
  resource is the one literal ``kafka-cluster``.

The decision (Kafka's AclAuthorizer / StandardAuthorizer, with
``allow.everyone.if.no.acl.found=false``):

1. A matching DENY wins. A deny matches an operation when it names that operation or ``all``.
2. Otherwise the operation is allowed iff a matching ALLOW exists. An allow matches when it names
   the operation or ``all``, or an operation that implies it: read, write, delete and alter each
   imply describe; alter_configs implies describe_configs.
3. No matching binding: denied.

Worked example: with the bindings ``User:* allow read topic prefixed "orders."`` and ``User:bob
deny all topic literal "orders.eu"``, alice may read and describe ``orders.eu`` (read implies
describe) but not write it; bob may read ``orders.us`` and nothing on ``orders.eu``.

Closed sets are ``StrEnum``s whose values are the lowercase names used on the wire, in the
cbor2 commands and in the snapshot (``AclBinding.to_dict``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from typing import Any

__all__ = [
    "CLUSTER_NAME",
    "OPERATIONS_BY_RESOURCE",
    "WILDCARD",
    "WILDCARD_PRINCIPAL",
    "AclBinding",
    "AclError",
    "AclFilter",
    "AclIndex",
    "Operation",
    "PatternType",
    "Permission",
    "ResourceType",
    "parse_operation",
    "parse_principal",
    "validate_binding",
]

CLUSTER_NAME = "kafka-cluster"  # the name of the one cluster resource, as in Kafka
WILDCARD = "*"  # a literal resource name or a host that matches every one
USER_PREFIX = "User:"
WILDCARD_PRINCIPAL = USER_PREFIX + WILDCARD
PRINCIPAL_CHARS_MAX = 256
RESOURCE_NAME_CHARS_MAX = 249  # a topic name's bound
HOST_CHARS_MAX = 255
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


class AclError(ValueError):
    """A binding, filter or principal that is malformed or breaks a rule (the caller's fault)."""


class ResourceType(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class PatternType(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    ALL = "all"
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DELETE = "delete"
    ALTER = "alter"
    DESCRIBE = "describe"
    CLUSTER_ACTION = "cluster_action"
    DESCRIBE_CONFIGS = "describe_configs"
    ALTER_CONFIGS = "alter_configs"
    IDEMPOTENT_WRITE = "idempotent_write"


class Permission(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


_O = Operation
# which operations a binding may name on each resource type (Kafka's, plus ``all`` everywhere)
OPERATIONS_BY_RESOURCE: dict[ResourceType, frozenset[Operation]] = {
    ResourceType.TOPIC: frozenset(
        {
            _O.ALL,
            _O.READ,
            _O.WRITE,
            _O.CREATE,
            _O.DELETE,
            _O.ALTER,
            _O.DESCRIBE,
            _O.DESCRIBE_CONFIGS,
            _O.ALTER_CONFIGS,
        }
    ),
    ResourceType.GROUP: frozenset({_O.ALL, _O.READ, _O.DESCRIBE, _O.DELETE}),
    ResourceType.CLUSTER: frozenset(
        {
            _O.ALL,
            _O.CREATE,
            _O.ALTER,
            _O.DESCRIBE,
            _O.CLUSTER_ACTION,
            _O.DESCRIBE_CONFIGS,
            _O.ALTER_CONFIGS,
            _O.IDEMPOTENT_WRITE,
        }
    ),
}
# rule 1: a DENY of these operations denies the key
_DENYING: dict[Operation, frozenset[Operation]] = {op: frozenset({op, _O.ALL}) for op in _O}
# rule 2: an ALLOW of these operations allows the key
_ALLOWING: dict[Operation, frozenset[Operation]] = {
    **_DENYING,
    _O.DESCRIBE: frozenset({_O.DESCRIBE, _O.READ, _O.WRITE, _O.DELETE, _O.ALTER, _O.ALL}),
    _O.DESCRIBE_CONFIGS: frozenset({_O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.ALL}),
}


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    """One access rule. Ordered by its fields, so sets of them sort the same on every node."""

    principal: str  # "User:<name>" or "User:*"
    resource_type: ResourceType
    pattern_type: PatternType
    resource_name: str  # literal "*": every resource of the type; "kafka-cluster" for the cluster
    operation: Operation
    permission: Permission
    host: str = WILDCARD

    def to_dict(self) -> dict[str, str]:
        """The plain map that cbor2 commands and the snapshot hold."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> AclBinding:
        """Read ``to_dict``'s map back, checking its shape (not the rules: ``validate_binding``).

        Raises AclError for a map that is not one.
        """
        values = _fields_from_dict(cls, data, optional=False)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AclFilter:
    """Selects bindings for listing and deleting: every field that is not None must be equal."""

    principal: str | None = None
    resource_type: ResourceType | None = None
    pattern_type: PatternType | None = None
    resource_name: str | None = None
    operation: Operation | None = None
    permission: Permission | None = None
    host: str | None = None

    def matches(self, binding: AclBinding) -> bool:
        return (
            (self.principal is None or self.principal == binding.principal)
            and (self.resource_type is None or self.resource_type == binding.resource_type)
            and (self.pattern_type is None or self.pattern_type == binding.pattern_type)
            and (self.resource_name is None or self.resource_name == binding.resource_name)
            and (self.operation is None or self.operation == binding.operation)
            and (self.permission is None or self.permission == binding.permission)
            and (self.host is None or self.host == binding.host)
        )

    def to_dict(self) -> dict[str, str]:
        """The fields that are set (an absent key means any)."""
        return {f.name: str(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, data: Any) -> AclFilter:
        return cls(**_fields_from_dict(cls, data, optional=True))


_ENUM_FIELDS: dict[str, type[StrEnum]] = {
    "resource_type": ResourceType,
    "pattern_type": PatternType,
    "operation": Operation,
    "permission": Permission,
}


def _fields_from_dict(cls: type[Any], data: Any, *, optional: bool) -> dict[str, Any]:
    """The keyword arguments of ``cls`` from a map of strings: unknown keys, non-strings and
    unknown enum values are refused; a missing key is refused unless ``optional`` (or it has a
    default)."""
    what = cls.__name__
    if not isinstance(data, dict):
        raise AclError(f"{what}: a map of strings, not {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise AclError(f"{what}: unknown field(s) {unknown}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if not optional and f.default is MISSING:
                raise AclError(f"{what}: missing {f.name}")
            continue
        value = data[f.name]
        if not isinstance(value, str):
            raise AclError(f"{what}: {f.name} must be a string, not {type(value).__name__}")
        enum = _ENUM_FIELDS.get(f.name)
        if enum is None:
            values[f.name] = value
            continue
        try:
            values[f.name] = enum(value)
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise AclError(f"{what}: {f.name} {value!r} is not one of {choices}") from None
    return values


# ---- validation --------------------------------------------------------------------------------


def _check_principal(principal: str) -> None:
    if not isinstance(principal, str) or not principal.startswith(USER_PREFIX):
        raise AclError(
            f"principal {principal!r} is not User:<name> (e.g. User:alice, or User:* for everyone)"
        )
    if principal == USER_PREFIX:
        raise AclError("principal User: names nobody: User:<name>, or User:* for everyone")
    if len(principal) > PRINCIPAL_CHARS_MAX:
        raise AclError(f"principal is longer than {PRINCIPAL_CHARS_MAX} characters")
    if not principal.isprintable():
        raise AclError(f"principal {principal!r} holds unprintable characters")


def _check_host(host: str) -> None:
    if not isinstance(host, str) or not host or len(host) > HOST_CHARS_MAX:
        raise AclError(f"host must be '*' or an address of 1-{HOST_CHARS_MAX} characters")
    if not host.isprintable() or any(c.isspace() for c in host):
        raise AclError(f"host {host!r} holds spaces or unprintable characters")


def validate_binding(binding: AclBinding) -> None:
    """Raise AclError saying what is wrong with ``binding``, if anything."""
    _check_principal(binding.principal)
    _check_host(binding.host)
    try:
        resource_type = ResourceType(binding.resource_type)
        pattern_type = PatternType(binding.pattern_type)
        operation = Operation(binding.operation)
        Permission(binding.permission)
    except ValueError as exc:
        raise AclError(str(exc)) from None
    name = binding.resource_name
    if not isinstance(name, str) or not name:
        raise AclError("empty resource name")
    if len(name) > RESOURCE_NAME_CHARS_MAX:
        raise AclError(f"resource name is longer than {RESOURCE_NAME_CHARS_MAX} characters")
    if not name.isprintable():
        raise AclError(f"resource name {name!r} holds unprintable characters")
    if pattern_type == PatternType.PREFIXED and name == WILDCARD:
        raise AclError(
            f"'*' is not a prefix: a literal '*' names every {resource_type} "
            "(a prefixed pattern would match only names that start with '*')"
        )
    if resource_type == ResourceType.CLUSTER and (
        name != CLUSTER_NAME or pattern_type != PatternType.LITERAL
    ):
        raise AclError(f"the only valid cluster resource is the literal {CLUSTER_NAME!r}")
    if resource_type == ResourceType.TOPIC and name != WILDCARD and not _TOPIC_CHARS.match(name):
        raise AclError(f"topic name or prefix {name!r} is not made of [A-Za-z0-9._-]")
    allowed = OPERATIONS_BY_RESOURCE[resource_type]
    if operation not in allowed:
        choices = ", ".join(sorted(allowed))
        raise AclError(
            f"operation {operation} does not apply to a {resource_type} (one of {choices})"
        )


# ---- parsing (for the command line) -------------------------------------------------------------


def parse_principal(text: str) -> str:
    """``User:alice`` (surrounding blanks dropped) → ``User:alice``; AclError otherwise."""
    principal = text.strip()
    _check_principal(principal)
    return principal


def parse_operation(text: str) -> Operation:
    """An operation in any of Kafka's spellings: ``Read``, ``ClusterAction``, ``CLUSTER_ACTION``,
    ``cluster-action``, ``cluster_action``."""
    key = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", text.strip()).replace("-", "_").lower()
    try:
        return Operation(key)
    except ValueError:
        choices = ", ".join(op.value for op in Operation)
        raise AclError(f"unknown operation {text!r} (one of {choices})") from None


# ---- the authorizer ----------------------------------------------------------------------------

# bindings of one (resource type, name or prefix, principal), as (host, operation, permission)
_Entries = list[tuple[str, Operation, Permission]]
_Key = tuple[ResourceType, str, str]


class AclIndex:
    """The bindings arranged for ``authorize``, which the broker calls for every request.

    Immutable once built (build a new one when the bindings change), so it may be shared between
    threads without a lock. A question costs a few dict lookups — literal name, literal ``*``,
    and one per distinct prefix length of its resource type — for the asking principal and for
    ``User:*``, then a look at the few bindings found; never a scan of every binding.
    """

    __slots__ = ("_literal", "_prefix_lengths", "_prefixed", "_size")

    def __init__(self, bindings: Iterable[AclBinding]) -> None:
        self._literal: dict[_Key, _Entries] = {}
        self._prefixed: dict[_Key, _Entries] = {}
        lengths: dict[ResourceType, set[int]] = {}
        self._size = 0
        for b in set(bindings):
            key = (ResourceType(b.resource_type), b.resource_name, b.principal)
            entry = (b.host, Operation(b.operation), Permission(b.permission))
            if b.pattern_type == PatternType.LITERAL:
                self._literal.setdefault(key, []).append(entry)
            else:
                self._prefixed.setdefault(key, []).append(entry)
                lengths.setdefault(key[0], set()).add(len(b.resource_name))
            self._size += 1
        # prefix lengths per resource type, longest first (any order is correct)
        self._prefix_lengths = {rt: sorted(ls, reverse=True) for rt, ls in lengths.items()}

    def __len__(self) -> int:
        return self._size

    def authorize(
        self,
        principal: str,
        operation: Operation,
        resource_type: ResourceType,
        name: str,
        host: str = WILDCARD,
    ) -> bool:
        """May ``principal`` connecting from ``host`` do ``operation`` on the resource? (The
        rules are in the module docstring.)"""
        denying = _DENYING[operation]
        allowing = _ALLOWING[operation]
        allowed = False
        for entries in self._candidates(principal, resource_type, name):
            for entry_host, entry_operation, permission in entries:
                if entry_host != host and entry_host != WILDCARD:
                    continue
                if permission == Permission.DENY:
                    if entry_operation in denying:
                        return False
                elif entry_operation in allowing:
                    allowed = True
        return allowed

    def _candidates(self, principal: str, resource_type: ResourceType, name: str) -> list[_Entries]:
        """The bindings whose principal and resource pattern match (host and operation not
        yet looked at)."""
        literal = self._literal
        prefixed = self._prefixed
        lengths = [n for n in self._prefix_lengths.get(resource_type, ()) if n <= len(name)]
        found = []
        for who in {principal, WILDCARD_PRINCIPAL}:
            for key in ((resource_type, name, who), (resource_type, WILDCARD, who)):
                entries = literal.get(key)
                if entries:
                    found.append(entries)
            for n in lengths:
                entries = prefixed.get((resource_type, name[:n], who))
                if entries:
                    found.append(entries)
        return found
