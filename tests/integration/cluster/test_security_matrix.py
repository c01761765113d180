"""Each operation is allowed exactly when an ACL allows it.

A matrix: every client RPC that an ACL guards × a list of ACL sets for ``User:matrix`` (none; the
needed ALLOW; that ALLOW plus a DENY of it or of ``all``; ALLOW of each other operation alone,
which covers the implied ones (read ⇒ describe, alter_configs ⇒ describe_configs); ALLOW on another
name, on the other resource type, via ``all``, via ``*``, via a prefix, to ``User:*``, to another
principal, from the caller's host or another; DENY to ``User:*``, on ``*``, by prefix or from a
host beside an ALLOW; row-specific sets for CreateTopics (CREATE on the cluster) and InitProducerId
(WRITE on some topic)), 600-odd cells. One cell installs exactly its ACL set on the broker (and
waits until the broker applied it), makes the call as ``User:matrix`` through a raw stub and reads
"allowed" or "denied" from the answer. The expected outcome comes from the rule restated in this
file (``permitted``: Kafka's, as ``raftlog.raft.acl``'s docstring states it), never from the
product's authorizer. Every cell runs; the mismatches are listed together at the end, so one run
shows the whole matrix.

One broker serves every RPC (it is the active controller and the coordinator of every group), so
an ACL change is waited for on the same broker that is asked. Besides the matrix: super users and
broker certificates pass every check, even under a DENY to ``User:*``; a client certificate never
passes a broker-only RPC, whatever its ACLs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import grpc
import pytest

from raftlog.client import Admin, ClientSecurity
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import (
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
)
from raftlog.segments import build_batch

from ..conftest import free_base_port
from .test_data_plane import FAST, wait_until
from .test_security import as_broker

pytestmark = pytest.mark.integration

PRINCIPAL = "User:matrix"
OTHER_PRINCIPAL = "User:matrix-other"
EVERYONE = "User:*"
VICTIM = "User:matrix-victim"  # what an allowed CreateAcls grants (nothing the matrix uses)
CLUSTER = "kafka-cluster"
PREFIX = "matrix."  # every resource of the matrix starts with it
TOPIC = "matrix.t"
GROUP = "matrix.g"
SACRIFICE = "matrix.sacrifice"  # what a broker-only RPC would delete if it let a client through
CLIENT_HOST = "127.0.0.1"  # where the test's calls come from, as the broker sees them
CALL_TIMEOUT_S = 15

NONE = common_pb2.NONE
DENIED_CODE = {
    "topic": common_pb2.TOPIC_AUTHORIZATION_FAILED,
    "group": common_pb2.GROUP_AUTHORIZATION_FAILED,
    "cluster": common_pb2.CLUSTER_AUTHORIZATION_FAILED,
}


# ---- the rule, restated (independent of raftlog.raft.acl) ---------------------------------------

# the operations a binding may name on each resource type: CreateAcls refuses any other
_CONFIGS = {"describe_configs", "alter_configs"}
VALID_OPERATIONS = {
    "topic": {"all", "read", "write", "create", "delete", "alter", "describe", *_CONFIGS},
    "group": {"all", "read", "describe", "delete"},
    "cluster": {"all", "create", "alter", "describe", "cluster_action", "idempotent_write"}
    | _CONFIGS,
}
# an ALLOW of the key is also an ALLOW of these; a DENY denies only what it names (or all)
IMPLIES = {
    "read": {"describe"},
    "write": {"describe"},
    "delete": {"describe"},
    "alter": {"describe"},
    "alter_configs": {"describe_configs"},
}


@dataclass(frozen=True, slots=True)
class Need:
    """One permission a call asks for."""

    resource_type: str  # topic | group | cluster
    name: str
    operation: str


@dataclass(frozen=True, slots=True, order=True)
class Binding:
    """An ACL as the test writes it (the wire's AclBinding fields)."""

    principal: str
    resource_type: str
    pattern_type: str  # literal | prefixed
    resource_name: str
    operation: str
    permission: str  # allow | deny
    host: str = "*"

    def to_proto(self) -> broker_pb2.AclBinding:
        return broker_pb2.AclBinding(**{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_proto(cls, message: broker_pb2.AclBinding) -> Binding:
        return cls(**{f.name: getattr(message, f.name) for f in fields(cls)})

    @property
    def valid(self) -> bool:
        """Would CreateAcls take it? (Cells whose bindings it would refuse are not run.)"""
        if self.operation not in VALID_OPERATIONS[self.resource_type]:
            return False
        if self.resource_type == "cluster":
            return self.pattern_type == "literal" and self.resource_name == CLUSTER
        return not (self.pattern_type == "prefixed" and self.resource_name == "*")


def _applies(b: Binding, principal: str, need: Need, host: str) -> bool:
    """Does the binding speak of this principal, host and resource (its operation aside)?"""
    if b.principal not in (principal, EVERYONE) or b.host not in (host, "*"):
        return False
    if b.resource_type != need.resource_type:
        return False
    if b.pattern_type == "prefixed":
        return need.name.startswith(b.resource_name)
    return b.resource_name in (need.name, "*")


def permitted(
    bindings: Sequence[Binding], need: Need, principal: str = PRINCIPAL, host: str = CLIENT_HOST
) -> bool:
    """Kafka's decision with allow.everyone.if.no.acl.found=false: a matching DENY of the
    operation (or of all) wins; else a matching ALLOW of it, of all, or of an operation that
    implies it allows; else denied."""
    found = [b for b in bindings if _applies(b, principal, need, host)]
    if any(b.permission == "deny" and b.operation in (need.operation, "all") for b in found):
        return False
    return any(
        b.permission == "allow"
        and (
            b.operation in (need.operation, "all") or need.operation in IMPLIES.get(b.operation, ())
        )
        for b in found
    )


def may_write_some_topic(
    bindings: Sequence[Binding], principal: str = PRINCIPAL, host: str = CLIENT_HOST
) -> bool:
    """Kafka's IDEMPOTENT_WRITE fallback: an ALLOW of WRITE on a (non-internal) topic pattern
    that no DENY covers wholly."""

    def covers(deny: Binding, allow: Binding) -> bool:
        if deny.pattern_type == "literal":
            return deny.resource_name in ("*", allow.resource_name) and (
                allow.pattern_type == "literal" or deny.resource_name == "*"
            )
        return allow.resource_name.startswith(deny.resource_name)

    def mine(b: Binding) -> bool:
        return (
            b.principal in (principal, EVERYONE)
            and b.host in (host, "*")
            and b.resource_type == "topic"
        )

    allows = [
        b
        for b in bindings
        if mine(b)
        and b.permission == "allow"
        and b.operation in ("write", "all")
        and not b.resource_name.startswith("__")
    ]
    denies = [b for b in bindings if mine(b) and b.permission == "deny"]
    return any(
        not any(d.operation in ("write", "all") and covers(d, a) for d in denies) for a in allows
    )


def test_the_restated_rule_agrees_with_the_worked_example() -> None:
    """The oracle itself, on raftlog.raft.acl's worked example: ``User:* allow read topic
    prefixed "orders."`` and ``User:bob deny all topic literal "orders.eu"``."""
    bindings = [
        Binding(EVERYONE, "topic", "prefixed", "orders.", "read", "allow"),
        Binding("User:bob", "topic", "literal", "orders.eu", "all", "deny"),
    ]

    def may(who: str, operation: str, name: str) -> bool:
        return permitted(bindings, Need("topic", name, operation), f"User:{who}")

    assert may("alice", "read", "orders.eu") and may("alice", "describe", "orders.eu")
    assert not may("alice", "write", "orders.eu")
    assert may("bob", "read", "orders.us")
    assert not any(may("bob", op, "orders.eu") for op in VALID_OPERATIONS["topic"])


# ---- callers and the operations ------------------------------------------------------------------


@dataclass
class Caller:
    """Raw stubs of one principal on the one broker."""

    channel: grpc.Channel
    broker: Any
    group: Any
    controller: Any

    @classmethod
    def of(cls, security: ClientSecurity, address: str) -> Caller:
        channel = security.channel(address)
        return cls(
            channel,
            broker_pb2_grpc.BrokerStub(channel),
            group_pb2_grpc.GroupCoordinatorStub(channel),
            controller_pb2_grpc.ControllerStub(channel),
        )


Call = Callable[[Caller, str], int]  # (caller, the cell's resource name) -> the deciding code
B, G = broker_pb2, group_pb2
NOBODY = "matrix-nobody"  # a member, ACL principal or user that does not exist


def _ask(stub: Any, method: str, request: Any) -> Any:
    return getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)


def _rpc(
    service: str,
    method: str,
    request: Callable[[str], Any],
    error: Callable[[Any], Any] = lambda answer: answer.error,
) -> Call:
    """Call ``method`` with ``request(name)``; the code of ``error(answer)`` decides."""
    return lambda c, name: int(error(_ask(getattr(c, service), method, request(name))).code)


def _first_partition(answer: Any) -> Any:
    return answer.partitions[0].error


def _first_topic(answer: Any) -> Any:
    return answer.topics[0].error


def _produce_request(name: str) -> B.ProduceRequest:
    records = build_batch([b"matrix"], timestamp_ms=int(time.time() * 1000))
    partition = B.PartitionRecords(topic=name, partition=0, records=records)
    return B.ProduceRequest(acks=1, timeout_ms=5000, partitions=[partition])


def _fetch_request(name: str) -> B.FetchRequest:
    partition = B.FetchPartition(topic=name, current_leader_epoch=-1, last_fetched_epoch=-1)
    return B.FetchRequest(replica_id=-1, max_wait_ms=0, partitions=[partition])


def _metadata_listing(c: Caller, name: str) -> int:
    """Listing every topic leaves out the ones the caller may not describe (no error)."""
    listed = {t.name: t.error.code for t in _ask(c.broker, "Metadata", B.MetadataRequest()).topics}
    return int(listed[name]) if name in listed else DENIED_CODE["topic"]


def _join_group(c: Caller, name: str) -> int:
    request = G.JoinGroupRequest(
        group_id=name,
        client_id="matrix",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=2_000,
        protocols=[G.Protocol(name="range")],
    )
    answer = _ask(c.group, "JoinGroup", request)
    if answer.member_id:  # leave at once: the next join and the commits need the group empty
        leave = G.LeaveGroupRequest(group_id=name, member_id=answer.member_id)
        assert _ask(c.group, "LeaveGroup", leave).error.code == NONE
    return int(answer.error.code)


def _commit(group: Callable[[str], str], topic: Callable[[str], str]) -> Call:
    """OffsetCommit outside membership (generation -1: the group is empty)."""
    return _rpc(
        "group",
        "OffsetCommit",
        lambda n: G.OffsetCommitRequest(
            group_id=group(n),
            generation=-1,
            offsets=[G.CommittedOffset(topic=topic(n), partition=0, offset=1)],
        ),
    )


_produce = _rpc("broker", "Produce", _produce_request, _first_partition)
_metadata = _rpc("broker", "Metadata", lambda n: B.MetadataRequest(topics=[n]), _first_topic)
_delete_topic = _rpc(
    "broker", "DeleteTopics", lambda n: B.DeleteTopicsRequest(names=[n]), _first_topic
)
_find_coordinator = _rpc("group", "FindCoordinator", lambda n: G.FindCoordinatorRequest(group_id=n))
_offset_fetch = _rpc("group", "OffsetFetch", lambda n: G.OffsetFetchRequest(group_id=n))
VICTIM_ACL = Binding(VICTIM, "topic", "literal", "matrix.victim", "read", "allow").to_proto()

CellSets = Callable[[str], list[tuple[str, tuple[Binding, ...]]]]  # name -> extra ACL sets
Rule = Callable[[Sequence[Binding], Need], bool]  # the ACLs and the cell's need -> allowed?


@dataclass(frozen=True)
class Op:
    """One row of the matrix: a call and the permission it needs."""

    label: str
    need: Need  # what the ACL sets vary; its name is the cell's resource (a prefix when fresh)
    call: Call
    also: tuple[Need, ...] = ()  # needed too: granted by an exact ALLOW in every cell
    ok: frozenset[int] = frozenset({NONE})  # answers that mean the call was carried out
    fresh: bool = False  # a new resource name per cell: need.name + a counter
    exists: bool = False  # with fresh: the super user creates that topic before the call
    rule: Rule | None = None  # when the call's rule is not "every need permitted"
    extra: CellSets | None = None  # ACL sets only this row has

    def expected(self, bindings: Sequence[Binding], need: Need) -> bool:
        if self.rule is not None:
            return self.rule(bindings, need)
        return all(permitted(bindings, n) for n in (need, *self.also))


def _deny(binding: Binding) -> Binding:
    return replace(binding, permission="deny")


def _create_rule(bindings: Sequence[Binding], need: Need) -> bool:
    """CREATE on the cluster, or CREATE on the topic."""
    return permitted(bindings, Need("cluster", CLUSTER, "create")) or permitted(bindings, need)


def _create_sets(name: str) -> list[tuple[str, tuple[Binding, ...]]]:
    on_cluster = Binding(PRINCIPAL, "cluster", "literal", CLUSTER, "create", "allow")
    on_topic = Binding(PRINCIPAL, "topic", "literal", name, "create", "allow")
    return [
        ("ALLOW create on the cluster", (on_cluster,)),
        ("DENY create on the cluster + ALLOW on the topic", (on_topic, _deny(on_cluster))),
        ("ALLOW create on the cluster + DENY on the topic", (on_cluster, _deny(on_topic))),
    ]


def _init_producer_id_rule(bindings: Sequence[Binding], need: Need) -> bool:
    """IDEMPOTENT_WRITE on the cluster, or WRITE on some topic."""
    return permitted(bindings, need) or may_write_some_topic(bindings)


def _init_producer_id_sets(name: str) -> list[tuple[str, tuple[Binding, ...]]]:
    write = Binding(PRINCIPAL, "topic", "literal", TOPIC, "write", "allow")
    by_prefix = replace(write, pattern_type="prefixed", resource_name=PREFIX)
    return [
        ("ALLOW write on a topic", (write,)),
        ("ALLOW write on a topic + DENY it", (write, _deny(write))),
        ("ALLOW all by topic prefix", (replace(by_prefix, operation="all"),)),
        (
            "ALLOW write by prefix + DENY every topic",
            (by_prefix, _deny(replace(write, resource_name="*"))),
        ),
        ("ALLOW write on a topic to User:*", (replace(write, principal=EVERYONE),)),
        ("ALLOW write on a topic to another", (replace(write, principal=OTHER_PRINCIPAL),)),
        ("ALLOW write on an internal topic", (replace(write, resource_name="__consumer_offsets"),)),
        ("ALLOW read on a topic", (replace(write, operation="read"),)),
    ]


def _topic(operation: str) -> Need:
    return Need("topic", TOPIC, operation)


def _group(operation: str) -> Need:
    return Need("group", GROUP, operation)


def _cluster(operation: str) -> Need:
    return Need("cluster", CLUSTER, operation)


def _same(name: str) -> str:
    return name


# group calls that reach the coordinator with a member it does not know
STRANGER = frozenset({common_pb2.UNKNOWN_MEMBER_ID, common_pb2.GROUP_ID_NOT_FOUND})

OPS = [
    Op("produce", _topic("write"), _produce),
    Op(
        "fetch (consumer)",
        _topic("read"),
        _rpc("broker", "Fetch", _fetch_request, _first_partition),
    ),
    Op(
        "list offsets",
        _topic("describe"),
        _rpc(
            "broker",
            "ListOffsets",
            lambda n: B.ListOffsetsRequest(
                replica_id=-1,
                partitions=[B.ListOffsetsPartition(topic=n, timestamp=-1, current_leader_epoch=-1)],
            ),
            _first_partition,
        ),
    ),
    Op("metadata (named topic)", _topic("describe"), _metadata),
    Op("metadata (every topic)", _topic("describe"), _metadata_listing),
    Op(
        "offset for leader epoch",
        _topic("describe"),
        _rpc(
            "broker",
            "OffsetForLeaderEpoch",
            lambda n: B.OffsetForLeaderEpochRequest(
                replica_id=-1,
                partitions=[B.OffsetForLeaderEpochPartition(topic=n, current_leader_epoch=-1)],
            ),
            _first_partition,
        ),
    ),
    Op(
        "describe configs",
        _topic("describe_configs"),
        _rpc(
            "broker",
            "DescribeConfigs",
            lambda n: B.DescribeConfigsRequest(topics=[n]),
            _first_topic,
        ),
    ),
    Op(
        "alter configs",
        _topic("alter_configs"),
        _rpc(
            "broker",
            "AlterConfigs",
            lambda n: B.AlterConfigsRequest(topic=n, set={"retention.ms": "86400000"}),
        ),
    ),
    Op(
        "create topic",
        Need("topic", "matrix.new-", "create"),
        _rpc(
            "broker",
            "CreateTopics",
            lambda n: B.CreateTopicsRequest(
                topics=[B.NewTopic(name=n, partitions=1, replication_factor=1)]
            ),
            _first_topic,
        ),
        fresh=True,
        rule=_create_rule,
        extra=_create_sets,
    ),
    Op(
        "delete topic",
        Need("topic", "matrix.old-", "delete"),
        _delete_topic,
        fresh=True,
        exists=True,
    ),
    Op(
        "describe replicas",
        _cluster("describe"),
        _rpc("broker", "DescribeReplicas", lambda n: B.DescribeReplicasRequest()),
    ),
    Op(
        "describe quorum",
        _cluster("describe"),
        _rpc("broker", "DescribeQuorum", lambda n: B.DescribeQuorumRequest()),
    ),
    Op("find coordinator", _group("describe"), _find_coordinator),
    Op("join group", _group("read"), _join_group),
    Op(
        "sync group",
        _group("read"),
        _rpc("group", "SyncGroup", lambda n: G.SyncGroupRequest(group_id=n, member_id=NOBODY)),
        ok=STRANGER,
    ),
    Op(
        "heartbeat",
        _group("read"),
        _rpc("group", "Heartbeat", lambda n: G.HeartbeatRequest(group_id=n, member_id=NOBODY)),
        ok=STRANGER,
    ),
    Op(
        "leave group",
        _group("read"),
        _rpc("group", "LeaveGroup", lambda n: G.LeaveGroupRequest(group_id=n, member_id=NOBODY)),
        ok=STRANGER,
    ),
    Op("offset commit (group)", _group("read"), _commit(_same, lambda n: TOPIC), (_topic("read"),)),
    Op("offset commit (topic)", _topic("read"), _commit(lambda n: GROUP, _same), (_group("read"),)),
    Op("offset fetch", _group("describe"), _offset_fetch),
    Op(
        "describe group",
        _group("describe"),
        _rpc("group", "DescribeGroup", lambda n: G.DescribeGroupRequest(group_id=n)),
    ),
    Op(
        "delete group",
        _group("delete"),
        _rpc(
            "group",
            "DeleteGroups",
            lambda n: G.DeleteGroupsRequest(group_ids=[n]),
            lambda answer: answer.results[0].error,
        ),
        ok=STRANGER,  # a fresh name: no such group, once past the check
        fresh=True,
    ),
    Op(
        "create ACLs",
        _cluster("alter"),
        _rpc("broker", "CreateAcls", lambda n: B.CreateAclsRequest(acls=[VICTIM_ACL])),
    ),
    Op(
        "delete ACLs",
        _cluster("alter"),
        _rpc(
            "broker",
            "DeleteAcls",
            lambda n: B.DeleteAclsRequest(filters=[B.AclBinding(principal="User:" + NOBODY)]),
        ),
    ),
    Op(
        "describe ACLs",
        _cluster("describe"),
        _rpc(
            "broker",
            "DescribeAcls",
            lambda n: B.DescribeAclsRequest(filter=B.AclBinding(principal="User:" + NOBODY)),
        ),
    ),
    Op(
        "delete user",
        _cluster("alter"),
        _rpc("broker", "DeleteUser", lambda n: B.DeleteUserRequest(user=NOBODY)),
        ok=frozenset({common_pb2.RESOURCE_NOT_FOUND}),
    ),
    Op(
        "describe users",
        _cluster("describe"),
        _rpc("broker", "DescribeUsers", lambda n: B.DescribeUsersRequest()),
    ),
    Op(
        "list reassignments",
        _cluster("describe"),
        _rpc(
            "broker", "ListPartitionReassignments", lambda n: B.ListPartitionReassignmentsRequest()
        ),
    ),
    Op(
        "reassign partitions",
        _cluster("alter"),
        _rpc(
            "broker",
            "AlterPartitionReassignments",
            lambda n: B.AlterPartitionReassignmentsRequest(
                reassignments=[B.PartitionReassignment(topic=NOBODY, partition=0, replicas=[1])]
            ),
        ),
    ),
    Op(
        "drain broker",
        _cluster("alter"),
        _rpc("broker", "DrainBroker", lambda n: B.DrainBrokerRequest(broker_id=99)),
        ok=frozenset({common_pb2.BROKER_NOT_AVAILABLE}),
    ),
    Op(
        "elect leaders",
        _cluster("alter"),
        _rpc(
            "broker",
            "ElectLeaders",
            lambda n: B.ElectLeadersRequest(
                preferred=True, partitions=[B.PartitionReassignment(topic=NOBODY, partition=0)]
            ),
        ),
    ),
    Op(
        "create partitions",
        _topic("alter"),
        _rpc(
            "broker",
            "CreatePartitions",
            lambda n: B.CreatePartitionsRequest(topics=[B.NewPartitions(topic=n, count=1)]),
            _first_topic,
        ),
        ok=frozenset({common_pb2.INVALID_PARTITIONS, common_pb2.UNKNOWN_TOPIC_OR_PARTITION}),
    ),
    Op(
        "add voter",
        _cluster("alter"),
        _rpc(
            "broker",
            "AddVoter",
            lambda n: B.AddVoterRequest(node_id=99, raft_address="127.0.0.1:1"),
        ),
        ok=frozenset({common_pb2.BROKER_NOT_AVAILABLE}),
    ),
    Op(
        "remove voter",
        _cluster("alter"),
        _rpc("broker", "RemoveVoter", lambda n: B.RemoveVoterRequest(node_id=99)),
        ok=frozenset({common_pb2.VOTER_NOT_FOUND}),
    ),
    Op(
        "init producer id",
        _cluster("idempotent_write"),
        _rpc("broker", "InitProducerId", lambda n: B.InitProducerIdRequest(producer_id=-1)),
        rule=_init_producer_id_rule,
        extra=_init_producer_id_sets,
    ),
]


def acl_sets(need: Need) -> Iterator[tuple[str, tuple[Binding, ...]]]:
    """The ACL sets of User:matrix every row runs under, built around the need."""
    kind, name, operation = need.resource_type, need.name, need.operation
    allow = Binding(PRINCIPAL, kind, "literal", name, operation, "allow")
    yield "no ACL", ()
    yield "ALLOW", (allow,)
    yield "ALLOW + DENY of it", (allow, _deny(allow))
    yield "ALLOW + DENY all", (allow, _deny(replace(allow, operation="all")))
    yield "ALLOW all", (replace(allow, operation="all"),)
    yield "ALLOW to User:*", (replace(allow, principal=EVERYONE),)
    yield "ALLOW + DENY to User:*", (allow, _deny(replace(allow, principal=EVERYONE)))
    yield "ALLOW to another principal", (replace(allow, principal=OTHER_PRINCIPAL),)
    # a host is the caller's IP address as the broker sees it
    here, elsewhere = replace(allow, host=CLIENT_HOST), replace(allow, host="10.9.9.9")
    yield "ALLOW from the caller's host", (here,)
    yield "ALLOW from another host", (elsewhere,)
    yield "ALLOW + DENY from the caller's host", (allow, _deny(here))
    yield "ALLOW + DENY from another host", (allow, _deny(elsewhere))
    # every other operation alone: the implied ones (read ⇒ describe, alter_configs ⇒
    # describe_configs, ...) allow, the rest do not
    for other in sorted(VALID_OPERATIONS[kind] - {operation, "all"}):
        yield f"ALLOW {other} only", (replace(allow, operation=other),)
    if kind == "cluster":  # the one cluster resource takes no other name and no pattern
        yield "ALLOW on a topic named kafka-cluster", (replace(allow, resource_type="topic"),)
        return
    other_kind = "group" if kind == "topic" else "topic"
    prefixed = replace(allow, pattern_type="prefixed", resource_name=PREFIX)
    yield f"ALLOW on the {other_kind} of that name", (replace(allow, resource_type=other_kind),)
    yield "ALLOW on another name", (replace(allow, resource_name="other." + name),)
    yield "ALLOW on every name (*)", (replace(allow, resource_name="*"),)
    yield "ALLOW + DENY on every name (*)", (allow, _deny(replace(allow, resource_name="*")))
    yield "ALLOW by prefix", (prefixed,)
    yield "ALLOW by a longer prefix", (replace(prefixed, resource_name=name + "x"),)
    yield "ALLOW + DENY by prefix", (allow, _deny(prefixed))
    yield "ALLOW by prefix + DENY of the name", (prefixed, _deny(allow))
    yield "ALLOW all by prefix to User:*", (replace(prefixed, principal=EVERYONE, operation="all"),)


def cell_sets(op: Op, name: str) -> dict[str, tuple[Binding, ...]]:
    """Every ACL set of the row for resource ``name`` that CreateAcls would take."""
    sets = [*acl_sets(replace(op.need, name=name)), *(op.extra(name) if op.extra else [])]
    return {label: bindings for label, bindings in sets if all(b.valid for b in bindings)}


# ---- the cluster --------------------------------------------------------------------------------


@dataclass
class Matrix:
    cluster: LocalCluster
    admin: Caller  # the super user
    matrix: Caller  # User:matrix, the principal under test
    broker: Caller  # broker 1's own certificate
    counter: Iterator[int] = field(default_factory=itertools.count)

    def name_for(self, op: Op) -> str:
        """The resource of the next cell of the row."""
        if not op.fresh:
            return op.need.name
        name = f"{op.need.name}{next(self.counter)}"
        if op.exists:
            with Admin(self.cluster.bootstrap, security=self.cluster.security) as admin:
                admin.create_topic(name, 1, 1)
        return name


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    cluster = LocalCluster(tmp_path_factory.mktemp("matrix") / "c")
    cluster.up(1, free_base_port(1), timeout_s=60, settings=FAST)
    address = cluster.nodes[1].grpc
    callers: list[Caller] = []
    try:
        for security in (
            cluster.security,
            cluster.client_security("matrix"),
            as_broker(cluster, 1),
        ):
            callers.append(Caller.of(security, address))
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            admin.create_topic(TOPIC, 1, 1)
            admin.create_topic(SACRIFICE, 1, 1)
        m = Matrix(cluster, *callers)
        wait_until(lambda: _produce(m.admin, TOPIC) == NONE, 20, "the matrix topic takes writes")
        # the offsets topic is made on the first FindCoordinator, then loaded
        wait_until(lambda: _find_coordinator(m.admin, GROUP) == NONE, 30, "a group coordinator")
        wait_until(lambda: _offset_fetch(m.admin, GROUP) == NONE, 30, "the group offsets loaded")
        yield m
    finally:
        for caller in callers:
            caller.channel.close()
        cluster.down(timeout_s=10)


def described(admin: Caller) -> set[Binding]:
    answer = _ask(admin.broker, "DescribeAcls", B.DescribeAclsRequest(filter=B.AclBinding()))
    assert answer.error.code == NONE, answer
    return {Binding.from_proto(a) for a in answer.acls}


def install(admin: Caller, wanted: Sequence[Binding]) -> None:
    """Make the broker's ACLs exactly ``wanted`` (touching only the difference) and wait until
    it applied them."""
    target = set(wanted)
    current = described(admin)
    stale, missing = sorted(current - target), sorted(target - current)
    if stale:
        request = B.DeleteAclsRequest(filters=[b.to_proto() for b in stale])
        assert _ask(admin.broker, "DeleteAcls", request).error.code == NONE
    if missing:
        request = B.CreateAclsRequest(acls=[b.to_proto() for b in missing])
        answer = _ask(admin.broker, "CreateAcls", request)
        assert answer.error.code == NONE, answer
    wait_until(lambda: described(admin) == target, 10, f"the ACLs {sorted(target)}")


def outcome(op: Op, code: int) -> str:
    if code == DENIED_CODE[op.need.resource_type]:
        return "denied"
    if code in op.ok:
        return "allowed"
    return f"answered {common_pb2.ErrorCode.Name(code)}"


def run_cell(m: Matrix, op: Op, bindings: Sequence[Binding], name: str) -> tuple[str, str]:
    """(expected, got) of one cell: ``bindings`` plus the row's ``also`` grants installed, the
    call made as User:matrix on resource ``name``."""
    grants = [
        Binding(PRINCIPAL, n.resource_type, "literal", n.name, n.operation, "allow")
        for n in op.also
    ]
    everything = list(dict.fromkeys([*bindings, *grants]))
    install(m.admin, everything)
    expected = op.expected(everything, replace(op.need, name=name))
    return "allowed" if expected else "denied", outcome(op, op.call(m.matrix, name))


# ---- the tests ----------------------------------------------------------------------------------


def test_each_operation_is_allowed_exactly_when_an_acl_allows_it(matrix: Matrix) -> None:
    mismatches, cells = [], 0
    for op in OPS:
        for label in cell_sets(op, op.need.name):
            name = matrix.name_for(op)
            want, got = run_cell(matrix, op, cell_sets(op, name)[label], name)
            cells += 1
            if got != want:
                mismatches.append(f"{op.label:24} | {label:46} | want {want}, {got}")
    install(matrix.admin, ())
    assert not mismatches, f"{len(mismatches)} of {cells} cells:\n" + "\n".join(mismatches)
    assert cells > 600


def test_super_users_and_brokers_pass_every_check_even_under_a_deny_to_everyone(
    matrix: Matrix,
) -> None:
    deny_everyone = [
        Binding(EVERYONE, kind, "literal", name, "all", "deny")
        for kind, name in (("topic", "*"), ("group", "*"), ("cluster", CLUSTER))
    ]
    wrong = []
    for acls in ([], deny_everyone):
        install(matrix.admin, acls)
        for who, caller in (("super user", matrix.admin), ("broker 1", matrix.broker)):
            for op in OPS:
                got = outcome(op, op.call(caller, matrix.name_for(op)))
                if got != "allowed":
                    wrong.append(f"{who} | {op.label} | {len(acls)} DENY ACLs | {got}")
    install(matrix.admin, ())
    assert not wrong, "\n".join(wrong)


def test_a_client_certificate_never_passes_a_broker_only_rpc_whatever_its_acls(
    matrix: Matrix,
) -> None:
    install(
        matrix.admin,
        [
            Binding(PRINCIPAL, kind, "literal", name, "all", "allow")
            for kind, name in (("topic", "*"), ("group", "*"), ("cluster", CLUSTER))
        ],
    )
    brokers = _ask(matrix.admin.broker, "DescribeCluster", B.DescribeClusterRequest()).brokers
    incarnation = next(b.incarnation for b in brokers if b.broker_id == 1)
    requests = _broker_only_requests(incarnation)
    service = controller_pb2.DESCRIPTOR.services_by_name["Controller"]
    assert set(requests) == {m.name for m in service.methods}, "a new Controller RPC: add it"
    let_through = []
    for method, request in requests.items():
        answer = _ask(matrix.matrix.controller, method, request)
        if answer.error.code != DENIED_CODE["cluster"]:
            let_through.append(f"Controller.{method}: {answer.error}")
    as_follower = B.FetchRequest(
        replica_id=1,
        replica_incarnation=incarnation,
        partitions=[B.FetchPartition(topic=TOPIC, partition=0, fetch_offset=0)],
    )
    fetched = _ask(matrix.matrix.broker, "Fetch", as_follower)
    streamed = list(_ask(matrix.matrix.broker, "ReplicaFetch", iter([as_follower])))
    for what, answer in [("Fetch", fetched)] + [("ReplicaFetch", s) for s in streamed]:
        if answer.error.code != DENIED_CODE["cluster"] or answer.partitions:
            let_through.append(f"Broker.{what} as follower 1: {answer}")
    # the control: broker 1's own certificate passes the same check
    control = _ask(matrix.broker.controller, "DescribeCluster", B.DescribeClusterRequest())
    install(matrix.admin, ())
    assert not let_through, "\n".join(let_through)
    assert len(streamed) == 1
    assert control.error.code == NONE, control
    after = _ask(matrix.admin.broker, "DescribeCluster", B.DescribeClusterRequest()).brokers
    assert [(b.broker_id, b.incarnation, b.fenced) for b in after] == [(1, incarnation, False)]
    assert _metadata(matrix.admin, SACRIFICE) == NONE  # not deleted
    assert _metadata(matrix.admin, "matrix.smuggled") == common_pb2.UNKNOWN_TOPIC_OR_PARTITION


def _broker_only_requests(incarnation: int) -> dict[str, Any]:
    """A request per Controller RPC, each one harmful if a client got through."""
    c = controller_pb2
    grant = Binding(PRINCIPAL, "cluster", "literal", CLUSTER, "all", "allow").to_proto()
    return {
        "RegisterBroker": c.RegisterBrokerRequest(
            broker_id=1, incarnation=incarnation + 1, address="10.6.6.6:9092"
        ),
        "BrokerHeartbeat": c.BrokerHeartbeatRequest(broker_id=1, incarnation=incarnation),
        "AlterPartition": c.AlterPartitionRequest(
            topic=TOPIC, broker_id=1, incarnation=incarnation
        ),
        "ReportDamagedReplicas": c.ReportDamagedReplicasRequest(
            broker_id=1, incarnation=incarnation, partitions=[c.TopicPartitionRef(topic=TOPIC)]
        ),
        "AllocateProducerIds": c.AllocateProducerIdsRequest(
            broker_id=1, incarnation=incarnation, count=1000
        ),
        "PartitionStates": c.PartitionStatesRequest(broker_id=1, incarnation=incarnation),
        # the whole metadata: SCRAM credentials, ACLs
        "FetchMetadata": c.FetchMetadataRequest(broker_id=1, version=0, max_wait_ms=0),
        "CreateTopics": B.CreateTopicsRequest(
            topics=[B.NewTopic(name="matrix.smuggled", partitions=1, replication_factor=1)]
        ),
        "DeleteTopics": B.DeleteTopicsRequest(names=[SACRIFICE]),
        "AlterConfigs": B.AlterConfigsRequest(topic=SACRIFICE, set={"retention.ms": "1"}),
        "DescribeCluster": B.DescribeClusterRequest(),
        "CreateAcls": B.CreateAclsRequest(acls=[grant]),
        "DeleteAcls": B.DeleteAclsRequest(filters=[B.AclBinding()]),
        "UpsertUser": B.UpsertUserRequest(
            user="matrix-smuggled",
            mechanism="SCRAM-SHA-256",
            iterations=4096,
            salt=b"s" * 16,
            salted_password=b"p" * 32,
        ),
        "DeleteUser": B.DeleteUserRequest(user="admin"),
        "AlterPartitionReassignments": B.AlterPartitionReassignmentsRequest(
            reassignments=[B.PartitionReassignment(topic=TOPIC, partition=0, replicas=[1])]
        ),
        "DrainBroker": B.DrainBrokerRequest(broker_id=1),
        "ListPartitionReassignments": B.ListPartitionReassignmentsRequest(),
        "ElectLeaders": B.ElectLeadersRequest(preferred=True),
        "CreatePartitions": B.CreatePartitionsRequest(
            topics=[B.NewPartitions(topic=TOPIC, count=5)]
        ),
        "AddVoter": B.AddVoterRequest(node_id=1, raft_address="10.6.6.6:9192"),
        "RemoveVoter": B.RemoveVoterRequest(node_id=2),
    }
