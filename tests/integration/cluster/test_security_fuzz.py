"""Every RPC of the three services, driven with malformed messages and hostile record batches by
three callers, against one 3-broker cluster: each call gets a typed answer and nothing outside the
sandbox changes.

The RPCs are read from the service descriptors (a new RPC is fuzzed without touching this file).
Hypothesis sends, per example, one RPC (a stream of one to three requests for ReplicaFetch):

- random bytes as the raw request;
- a structurally valid request whose every field is drawn: names that are empty, huge, unicode,
  ``*``, internal or the cluster's own; edge and random ints; bytes, and for ``records`` hostile
  batches (garbage, valid headers over garbage, CRC-correct batches whose header lies, truncated,
  bit-flipped and concatenated batches);
- a valid request with a string field that is not UTF-8 (proto3 forbids it);
- hostile batches produced to a sandbox topic's leaders, so they reach the append path;
- a group session: a join, then drawn calls with the real member id and generation or drawn ones;

as ``User:fuzz`` (a client certificate without any ACL), as the super user ``admin`` (only
requests whose mutated names are in the sandbox ``fuzz-``: it creates, alters, deletes and
commits there), or without a client certificate (plaintext, or TLS without one: refused at the
handshake, UNAVAILABLE). Requests go to the broker that can answer them (a partition's leader, a
group's coordinator) so hostile values get past NOT_LEADER / NOT_COORDINATOR.

A typed answer is a response whose every ``Error`` holds a code of ``ErrorCode`` other than
UNKNOWN_SERVER_ERROR (the broker's mark of an exception it did not expect), or one of these gRPC
statuses, which gRPC itself gives before a servicer runs (observed with grpcio 1.85):

- UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>: Error parsing message" for
  bytes that do not parse as the request type (the aio server answers UNKNOWN, not
  INVALID_ARGUMENT or INTERNAL, for a request it cannot deserialize): allowed only when the bytes
  indeed do not parse;
- RESOURCE_EXHAUSTED for a request over the broker's 100 MiB message limit;
- UNAVAILABLE "failed to connect", for the callers without a certificate only (and always).

After each test the state outside the sandbox is what it was: topics and their configs,
partitions, leaders, epochs and ISRs, ACLs, users, brokers and their incarnations, every replica's
log start, log end and high watermark of a canary topic written before the run, and the committed
offsets of a canary group; every broker is alive and unfenced. Each test prints what its calls
were answered (``-s``); Hypothesis prints a failing example with a ``@reproduce_failure`` blob.
The two bugs it found (an OffsetCommit answer echoing the caller's Errors; an assignor named
'' taken at join and refused at rejoin) are fixed; their tests are at the end.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import crc32c
import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlog.client import Acl, Admin, ClientSecurity, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.cluster.broker import MESSAGE_BYTES_MAX
from raftlog.cluster.coordinator import OFFSETS_TOPIC, offsets_partition
from raftlog.proto import (
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    group_pb2,
    group_pb2_grpc,
)
from raftlog.segments import HEADER_BYTES, build_batch

from ..conftest import free_base_port
from .test_data_plane import wait_until

pytestmark = pytest.mark.integration

SANDBOX = "fuzz-"  # what the super user may create, change and delete
SINK = "fuzz-sink"  # a sandbox topic that exists, so batches reach the append path
SINK_CONFIGS = {"min.insync.replicas": "1"}
CANARY = "canary"
CANARY_GROUP = "canary-group"
CANARY_RECORDS = 30  # 15 in each of its 2 partitions, on all 3 brokers
CANARY_ENDS = {(node, p): (0, 15, 15) for node in (1, 2, 3) for p in (0, 1)}  # (LSO, LEO, HW)
CALL_TIMEOUT_S = 20  # above the longest long poll (fetch_wait_ms_max, 10 s)
NODES = 3

KNOWN_CODES = frozenset(common_pb2.ErrorCode.values()) - {common_pb2.UNKNOWN_SERVER_ERROR}
PARSE_FAILURE = "Error parsing message"  # in the details of grpc's UNKNOWN for such bytes


# ---- the RPCs, from the descriptors --------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    method: str
    path: str  # "/raftlog.v1.Broker/Produce"
    request: type[Message]
    response: type[Message]
    streaming: bool  # ReplicaFetch: a stream of requests, a stream of answers

    def __repr__(self) -> str:  # hypothesis prints examples with it
        return self.path


def _rpcs() -> list[Rpc]:
    services = [
        broker_pb2.DESCRIPTOR.services_by_name["Broker"],
        controller_pb2.DESCRIPTOR.services_by_name["Controller"],
        group_pb2.DESCRIPTOR.services_by_name["GroupCoordinator"],
    ]
    found = []
    for service in services:
        method: MethodDescriptor
        for method in service.methods:
            assert method.client_streaming == method.server_streaming, method.full_name
            found.append(
                Rpc(
                    method.name,
                    f"/{service.full_name}/{method.name}",
                    GetMessageClass(method.input_type),
                    GetMessageClass(method.output_type),
                    method.client_streaming,
                )
            )
    return found


RPCS = _rpcs()


# ---- what the super user may send: only requests that change nothing outside the sandbox --------


def _sandboxed(*names: str) -> bool:
    return all(name.startswith(SANDBOX) for name in names)


def _small_create(request: Any) -> bool:
    """Sandbox names, and no topic that would really be made with more than 8 partitions (more
    than 200 is refused whole): hundreds of examples must not load the brokers."""
    return _sandboxed(*(t.name for t in request.topics)) and (
        request.validate_only
        or all(t.partitions <= 8 or t.partitions > 200 for t in request.topics)
    )


_GROUP_RPCS = ("JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit")
SANDBOX_RULES: dict[str, Callable[[Any], bool]] = {
    "Produce": lambda r: _sandboxed(*(p.topic for p in r.partitions)),
    "CreateTopics": _small_create,
    "DeleteTopics": lambda r: _sandboxed(*r.names) and SINK not in r.names,
    "AlterConfigs": lambda r: _sandboxed(r.topic),
    "CreateAcls": lambda r: _sandboxed(*(a.resource_name for a in r.acls)),
    "DeleteAcls": lambda r: _sandboxed(*(f.resource_name for f in r.filters)),
    "UpsertUser": lambda r: _sandboxed(r.user),
    "DeleteUser": lambda r: _sandboxed(r.user),
    **{name: lambda r: _sandboxed(r.group_id) for name in _GROUP_RPCS},
}
# RPCs that change nothing whatever the request (or, on the Controller service, refuse every
# caller but a broker: if one let the super user through, the state check would say so)
READ_ONLY = frozenset(
    {
        "Fetch",
        "ReplicaFetch",
        "ListOffsets",
        "Metadata",
        "OffsetForLeaderEpoch",
        "DescribeReplicas",
        "DescribeConfigs",
        "DescribeCluster",
        "DescribeQuorum",
        "InitProducerId",
        "WhoAmI",
        "DescribeAcls",
        "DescribeUsers",
        "FindCoordinator",
        "OffsetFetch",
        "ListGroups",
        "DescribeGroup",
    }
)


def _strings(message: Message) -> Iterator[str]:
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = [*value.keys(), *value.values()]
        for v in values:
            if isinstance(v, Message):
                yield from _strings(v)
            elif isinstance(v, str):
                yield v


NAME_FIELDS = frozenset(
    {"topic", "name", "names", "group_id", "group_ids", "user", "resource_name"}
)


def into_the_sandbox(message: Message) -> None:
    """Prefix every name the super user's request carries with the sandbox's (in place), so its
    hostile names reach the code behind the checks without touching anything else."""
    for field, value in message.ListFields():
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for sub in value if field.is_repeated else [value]:
                into_the_sandbox(sub)
        elif field.name in NAME_FIELDS and field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                value[:] = [v if v.startswith(SANDBOX) else SANDBOX + v for v in value]
            elif not value.startswith(SANDBOX):
                setattr(message, field.name, SANDBOX + value)


def safe_for_the_super_user(rpc: Rpc, request: Message) -> bool:
    if rpc.path.startswith("/raftlog.v1.Controller/") or rpc.method in READ_ONLY:
        return True
    rule = SANDBOX_RULES.get(rpc.method)
    if rule is not None:
        return rule(request)
    return _sandboxed(*_strings(request))  # an RPC this file does not know: every name


# ---- strategies -------------------------------------------------------------------------------

_KNOWN_NAMES = [
    "",
    "*",
    CANARY,
    CANARY_GROUP,
    SINK,
    SANDBOX,
    "__consumer_offsets",
    "kafka-cluster",
    "admin",
    "User:fuzz",
    "User:*",
    "User:",
    "topic",
    "group",
    "cluster",
    "literal",
    "prefixed",
    "all",
    "read",
    "write",
    "allow",
    "deny",
    "SCRAM-SHA-256",
    "range",
    "retention.ms",
    "min.insync.replicas",
    "max.message.bytes",
    "..",
    "a/b",
    "\x00",
    "\u202e\u00e9\U0001f4a5",
]
NAMES = st.one_of(
    st.sampled_from([SINK, CANARY, CANARY_GROUP, "__consumer_offsets"]),  # what exists
    st.sampled_from(_KNOWN_NAMES),
    st.text(max_size=24),
    st.text(max_size=16).map(lambda s: SANDBOX + s),
    st.text(st.characters(codec="utf-8"), min_size=250, max_size=2000),
    st.sampled_from([SANDBOX + "x" * 300, "y" * 70_000]),
)


def _mostly(
    good: st.SearchStrategy[Any], other: st.SearchStrategy[Any], one_in: int = 6
) -> st.SearchStrategy[Any]:
    """``other`` one time in ``one_in``, else ``good`` (what shrinking goes back to)."""
    return st.integers(1, one_in).flatmap(lambda i: other if i == one_in else good)


def _ints(bits: int, signed: bool = True) -> st.SearchStrategy[int]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = [0, 1, 2, 1000, 1 << 20, high, high - 1, -1, -2, low, low + 1]
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
    )


_HEAD = struct.Struct(">qiibI")  # base_offset, batch_length, leader_epoch, magic, crc
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count: what the CRC covers


@st.composite
def forged_batches(draw: st.DrawFn) -> bytes:
    """A batch header over a payload (garbage, or another batch's records), the CRC computed
    over both: a batch the broker's checks must take or refuse by its header alone. Each header
    field is the plausible value, or (one time in sixteen) a drawn one."""

    def field(plausible: int, other: st.SearchStrategy[int]) -> int:
        return int(draw(_mostly(st.just(plausible), other, one_in=16)))

    payload = draw(
        st.one_of(
            st.builds(lambda b: b[HEADER_BYTES:], _valid_batches()),
            st.binary(max_size=200),
        )
    )
    count = draw(st.integers(1, 5))  # records the header claims (the payload may hold others)
    first_ms = draw(st.integers(0, 1 << 42))
    tail = _TAIL.pack(
        field(draw(st.integers(0, 4)), _ints(16)),  # attributes: codec, flags
        field(count - 1, _ints(32)),  # last_offset_delta
        first_ms,
        field(first_ms, _ints(64)),  # max_timestamp
        field(-1, _ints(64)),  # producer id
        field(-1, _ints(16)),
        field(-1, _ints(32)),  # base sequence
        field(count, _ints(32)),  # record_count
    )
    crc = crc32c.crc32c(payload, crc32c.crc32c(tail))
    head = _HEAD.pack(
        field(0, _ints(64)),  # base_offset
        field(HEADER_BYTES - 12 + len(payload), _ints(32)),  # batch_length
        field(-1, _ints(32)),  # leader_epoch
        field(2, st.integers(-128, 127)),  # magic
        field(crc, _ints(32, signed=False)),
    )
    return head + tail + payload


def _valid_batches() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda values, codec, ts, pid, epoch, seq: build_batch(
            values,
            timestamp_ms=ts,
            compression=codec,
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=seq,
        ),
        st.lists(st.one_of(st.none(), st.binary(max_size=64)), min_size=1, max_size=4),
        st.sampled_from(["none", "gzip", "snappy", "lz4", "zstd"]),
        st.integers(0, 1 << 42),
        st.one_of(st.just(-1), _ints(64)),
        st.one_of(st.just(-1), _ints(16)),
        st.one_of(st.just(-1), _ints(32)),
    )


def _cut(data: bytes, at: int) -> bytes:
    return data[: at % (len(data) + 1)]


ONE_BATCH = st.one_of(
    st.binary(max_size=300),
    _valid_batches(),
    forged_batches(),
    st.builds(_cut, st.one_of(_valid_batches(), forged_batches()), st.integers(0, 1000)),
    st.builds(  # one bit flipped: the CRC no longer holds (or the header lies)
        lambda b, i: b[: i % len(b)] + bytes([b[i % len(b)] ^ 1]) + b[i % len(b) + 1 :],
        _valid_batches(),
        st.integers(0, 1000),
    ),
)
BATCHES = st.one_of(ONE_BATCH, st.lists(ONE_BATCH, min_size=2, max_size=3).map(b"".join))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = FieldDescriptor
    match field.type:
        case t.TYPE_STRING:
            return NAMES
        case t.TYPE_BYTES:
            return BATCHES if field.name == "records" else st.binary(max_size=300)
        case t.TYPE_BOOL:
            return st.booleans()
        case t.TYPE_INT32 | t.TYPE_SINT32 | t.TYPE_SFIXED32:
            return _ints(32)
        case t.TYPE_INT64 | t.TYPE_SINT64 | t.TYPE_SFIXED64:
            return _ints(64)
        case t.TYPE_UINT32 | t.TYPE_FIXED32:
            return _ints(32, signed=False)
        case t.TYPE_UINT64 | t.TYPE_FIXED64:
            return _ints(64, signed=False)
        case t.TYPE_ENUM:  # proto3 enums are open: any int32 goes on the wire
            return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), _ints(32))
        case t.TYPE_FLOAT | t.TYPE_DOUBLE:
            return st.floats()
    raise AssertionError(f"no strategy for {field.full_name} (type {field.type})")


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of the type: each field absent or drawn (sub-messages three deep)."""
    cls = GetMessageClass(descriptor)
    drawn: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
            drawn[field.name] = st.dictionaries(_scalar(key), _scalar(value), max_size=3)
            continue
        if sub is not None:
            if depth >= 3:
                continue
            one = messages(sub, depth + 1)
        else:
            one = _scalar(field)
        drawn[field.name] = st.lists(one, max_size=3) if field.is_repeated else one
    return st.fixed_dictionaries({}, optional=drawn).map(lambda kw: cls(**kw))


def _not_utf8(message: Message, field: FieldDescriptor, junk: bytes) -> bytes:
    """``message`` with a string ``field`` (length-delimited, wire type 2) appended holding
    ``junk``: the last value of a field wins, so the receiver must refuse the whole request."""
    tag = _varint(field.number << 3 | 2)
    return message.SerializeToString() + tag + _varint(len(junk)) + junk


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ---- the cluster and its callers --------------------------------------------------------------


@dataclass
class Target:
    cluster: LocalCluster
    channels: dict[tuple[str, int], grpc.Channel]  # (caller, node) -> channel
    before: dict[str, Any]
    group_ids: Iterator[int]
    verdicts: Counter[str]  # "caller method: codes" -> calls, printed by each test
    leaders: dict[tuple[str, int], int]  # (topic, partition) -> its leader

    def channel(self, caller: str, node: int) -> grpc.Channel:
        return self.channels[(caller, node)]

    def admin_stub(self, node: int = 1) -> Any:
        return broker_pb2_grpc.BrokerStub(self.channel("admin", node))

    def route(self, request: Any, node: int) -> int:
        """The broker that answers the request past NOT_COORDINATOR / NOT_LEADER_OR_FOLLOWER (its
        group's coordinator, its first partition's leader), so hostile values reach the code
        behind; ``node`` for anything else."""
        fields = request.DESCRIPTOR.fields_by_name if request is not None else {}
        if "group_id" in fields:
            return self.leaders.get((OFFSETS_TOPIC, offsets_partition(request.group_id)), node)
        first = next(iter(getattr(request, "partitions", [])), None)
        if first is None:
            return node
        return self.leaders.get((getattr(first, "topic", ""), getattr(first, "partition", 0)), node)


NO_CERTIFICATE = frozenset({"plaintext", "tls without a certificate"})


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    cluster = LocalCluster(tmp_path_factory.mktemp("fuzz") / "c")
    cluster.up(NODES, free_base_port(NODES), timeout_s=60)
    channels: dict[tuple[str, int], grpc.Channel] = {}
    try:
        ca_pem = (cluster.tls_dir / "ca.pem").read_bytes()
        securities = {
            "fuzz": cluster.client_security("fuzz"),
            "admin": cluster.security,
            "plaintext": ClientSecurity.plaintext(),
            "tls without a certificate": ClientSecurity(ca_pem),
        }
        for (caller, security), node in itertools.product(securities.items(), cluster.nodes):
            channels[(caller, node)] = security.channel(cluster.nodes[node].grpc)
        _write_the_canaries(cluster)
        target = Target(cluster, channels, {}, itertools.count(), Counter(), {})
        metadata = target.admin_stub().Metadata(broker_pb2.MetadataRequest(), timeout=5)
        target.leaders = {
            (t.name, p.partition): p.leader for t in metadata.topics for p in t.partitions
        }
        assert (OFFSETS_TOPIC, 0) in target.leaders and (SINK, 2) in target.leaders
        # followers learn the high watermark on their next fetch: wait until all have it
        target.before = wait_until(
            lambda: (now := snapshot(target))["canary log ends"] == CANARY_ENDS and now,
            30,
            "every canary replica caught up",
        )
        yield target
    finally:
        for channel in channels.values():
            channel.close()
        cluster.down(timeout_s=10)


def _write_the_canaries(cluster: LocalCluster) -> None:
    """The state the run must leave alone: a written topic, a group's commits, ACLs, a user."""
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic(CANARY, 2, 3, min_insync_replicas=2)
        admin.create_topic(SINK, 3, 3, configs=SINK_CONFIGS)
        admin.create_acls(
            [
                Acl("User:canary", "topic", CANARY, "read"),
                Acl("User:*", "group", "canary-", "describe", pattern_type="prefixed"),
                Acl("User:canary", "cluster", "kafka-cluster", "idempotent_write", "deny"),
            ]
        )
        admin.upsert_user("canary-user", "the canary's password")
    with Producer(cluster.bootstrap, acks="all", security=cluster.security) as producer:
        for i in range(CANARY_RECORDS):
            producer.send(CANARY, f"canary-{i}".encode(), partition=i % 2).result(timeout=30)
    commit = group_pb2.OffsetCommitRequest(
        group_id=CANARY_GROUP,
        generation=-1,
        offsets=[
            group_pb2.CommittedOffset(topic=CANARY, partition=p, offset=7 + p, metadata="canary")
            for p in (0, 1)
        ],
    )

    def committed() -> bool:
        with cluster.security.channel(_coordinator(cluster)) as channel:
            stub = group_pb2_grpc.GroupCoordinatorStub(channel)
            return bool(stub.OffsetCommit(commit, timeout=CALL_TIMEOUT_S).error.code == 0)

    wait_until(committed, 30, "the canary group's commit")


def _coordinator(cluster: LocalCluster) -> str:
    """The address of the canary group's coordinator (the offsets topic is made on first use)."""
    request = group_pb2.FindCoordinatorRequest(group_id=CANARY_GROUP)

    def found() -> str:
        with cluster.security.channel(cluster.nodes[1].grpc) as channel:
            stub = group_pb2_grpc.GroupCoordinatorStub(channel)
            answer = stub.FindCoordinator(request, timeout=CALL_TIMEOUT_S)
            return str(answer.address) if answer.error.code == 0 else ""

    address: str = wait_until(found, 30, "the canary group's coordinator")
    return address


def snapshot(target: Target) -> dict[str, Any]:
    """Everything outside the sandbox that the run must not change, as plain values."""
    stub = target.admin_stub()
    metadata = stub.Metadata(broker_pb2.MetadataRequest(), timeout=CALL_TIMEOUT_S)
    topics = sorted(t.name for t in metadata.topics if not t.name.startswith(SANDBOX))
    configs = stub.DescribeConfigs(
        broker_pb2.DescribeConfigsRequest(topics=topics), timeout=CALL_TIMEOUT_S
    )
    acls = stub.DescribeAcls(
        broker_pb2.DescribeAclsRequest(filter=broker_pb2.AclBinding()), timeout=CALL_TIMEOUT_S
    )
    users = stub.DescribeUsers(broker_pb2.DescribeUsersRequest(), timeout=CALL_TIMEOUT_S)
    cluster = stub.DescribeCluster(broker_pb2.DescribeClusterRequest(), timeout=CALL_TIMEOUT_S)
    with target.cluster.security.channel(_coordinator(target.cluster)) as channel:
        offsets = group_pb2_grpc.GroupCoordinatorStub(channel).OffsetFetch(
            group_pb2.OffsetFetchRequest(group_id=CANARY_GROUP), timeout=CALL_TIMEOUT_S
        )
    ends = {}
    for node in target.cluster.nodes:  # each replica's own log of the canary
        replicas = target.admin_stub(node).DescribeReplicas(
            broker_pb2.DescribeReplicasRequest(), timeout=CALL_TIMEOUT_S
        )
        for r in replicas.replicas:
            if r.topic == CANARY:
                ends[(node, r.partition)] = (r.log_start_offset, r.log_end_offset, r.high_watermark)
    return {
        "topics": [_topic_state(t) for t in metadata.topics if t.name in topics],
        "configs": [(c.name, [(e.name, e.value) for e in c.entries]) for c in configs.topics],
        "acls": sorted(str(a) for a in acls.acls if not a.resource_name.startswith(SANDBOX)),
        "users": sorted(u.user for u in users.users if not u.user.startswith(SANDBOX)),
        "brokers": [(b.broker_id, b.incarnation, b.fenced, b.alive) for b in cluster.brokers],
        "canary log ends": ends,
        "canary group": [(o.topic, o.partition, o.offset, o.metadata) for o in offsets.offsets],
    }


def _topic_state(t: Any) -> tuple[Any, ...]:
    partitions = [
        (p.partition, p.leader, p.leader_epoch, p.partition_epoch, list(p.replicas), sorted(p.isr))
        for p in t.partitions
    ]
    return (t.name, t.topic_id, t.replication_factor, sorted(t.configs.items()), partitions)


def assert_unchanged(target: Target) -> None:
    """Nothing outside the sandbox changed, and every broker is alive and unfenced."""
    print("\n".join(f"{n:5} {v}" for v, n in sorted(target.verdicts.items())))
    target.verdicts.clear()
    assert all(target.cluster.is_running(node) for node in target.cluster.nodes)
    now = snapshot(target)
    changed = {k: (target.before[k], now[k]) for k in now if now[k] != target.before[k]}
    assert not changed, changed
    brokers = now["brokers"]
    assert len(brokers) == NODES and all(alive and not fenced for *_, fenced, alive in brokers)
    assert now["canary log ends"] == CANARY_ENDS


# ---- one call and its verdict -----------------------------------------------------------------


def _errors(message: Message) -> Iterator[common_pb2.Error]:
    """Every Error in a response, however deep."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        else:
            values = list(value) if field.is_repeated else [value]
        for v in values:
            if isinstance(v, common_pb2.Error):
                yield v
            else:
                yield from _errors(v)


def _parses(rpc: Rpc, payload: bytes) -> Message | None:
    try:
        return rpc.request.FromString(payload)
    except DecodeError:
        return None


def call(target: Target, rpc: Rpc, caller: str, node: int, payloads: Sequence[bytes]) -> None:
    """Send ``payloads`` (one, or a stream for a streaming RPC) and check the verdict."""
    channel = target.channel(caller, node)
    answers: list[Message] = []
    failure: grpc.RpcError | None = None
    try:
        if rpc.streaming:
            stream = channel.stream_stream(
                rpc.path, request_serializer=None, response_deserializer=rpc.response.FromString
            )
            for answer in stream(iter(payloads), timeout=CALL_TIMEOUT_S):
                answers.append(answer)
        else:
            unary = channel.unary_unary(
                rpc.path, request_serializer=None, response_deserializer=rpc.response.FromString
            )
            answers.append(unary(payloads[0], timeout=CALL_TIMEOUT_S))
    except grpc.RpcError as exc:
        failure = exc
    where = f"{rpc.path} on broker {node} as {caller}"
    if caller in NO_CERTIFICATE:
        assert failure is not None and failure.code() == grpc.StatusCode.UNAVAILABLE, where
        assert "failed to connect" in (failure.details() or ""), where  # at the handshake
        return
    codes = {error.code for answer in answers for error in _errors(answer)}
    for answer in answers:
        for error in _errors(answer):
            assert error.code in KNOWN_CODES, f"{where}: {answer}"
    verdict = (
        failure.code().name
        if failure
        else ", ".join(sorted(common_pb2.ErrorCode.Name(c) for c in codes))
    )
    target.verdicts[f"{caller} {rpc.method}: {verdict or 'NONE'}"] += 1
    if failure is None:
        assert len(answers) == len(payloads), where  # one answer per request
        return
    code, details = failure.code(), failure.details() or ""
    if code == grpc.StatusCode.UNKNOWN and PARSE_FAILURE in details:
        assert any(_parses(rpc, p) is None for p in payloads), f"{where}: {details}"
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert max(map(len, payloads)) > MESSAGE_BYTES_MAX, f"{where}: {details}"
    else:
        raise AssertionError(f"{where}: gRPC {code.name}: {details}")


def allowed_to_send(rpc: Rpc, caller: str, payloads: Sequence[bytes]) -> bool:
    """The super user sends only sandbox requests (or bytes that do not parse at all)."""
    if caller != "admin":
        return True
    parsed = [_parses(rpc, p) for p in payloads]
    return all(m is None or safe_for_the_super_user(rpc, m) for m in parsed)


FUZZ = settings(
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
RPC = st.sampled_from(RPCS)
CALLER = st.sampled_from(["fuzz", "fuzz", "admin", "admin", "admin", *sorted(NO_CERTIFICATE)])
NODE = st.integers(1, NODES)


# ---- the tests --------------------------------------------------------------------------------


def test_every_rpc_is_enumerated() -> None:
    paths = {r.path for r in RPCS}
    assert {"/raftlog.v1.Broker/Produce", "/raftlog.v1.Broker/ReplicaFetch"} <= paths
    assert "/raftlog.v1.Controller/RegisterBroker" in paths
    assert "/raftlog.v1.GroupCoordinator/OffsetCommit" in paths
    assert len(paths) == len(RPCS) >= 40


def test_the_verdict_sees_every_error_and_the_sandbox_holds() -> None:
    deep = broker_pb2.FetchResponse(
        partitions=[broker_pb2.FetchPartitionResult(error=common_pb2.Error(code=-1))]
    )
    assert [e.code for e in _errors(deep)] == [common_pb2.UNKNOWN_SERVER_ERROR]
    assert common_pb2.UNKNOWN_SERVER_ERROR not in KNOWN_CODES
    delete = next(r for r in RPCS if r.method == "DeleteTopics")
    request = broker_pb2.DeleteTopicsRequest(names=[CANARY, SANDBOX + "x"])
    assert not safe_for_the_super_user(delete, request)
    into_the_sandbox(request)
    assert list(request.names) == [SANDBOX + CANARY, SANDBOX + "x"]
    assert safe_for_the_super_user(delete, request)
    acls = next(r for r in RPCS if r.method == "DeleteAcls")
    assert not safe_for_the_super_user(acls, broker_pb2.DeleteAclsRequest(filters=[{}]))


def test_random_bytes_get_a_typed_answer(target: Target) -> None:
    @settings(FUZZ, max_examples=400)
    @given(rpc=RPC, caller=CALLER, node=NODE, data=st.data())
    def run(rpc: Rpc, caller: str, node: int, data: st.DataObject) -> None:
        count = data.draw(st.integers(1, 3)) if rpc.streaming else 1
        payloads = data.draw(st.lists(st.binary(max_size=400), min_size=count, max_size=count))
        if allowed_to_send(rpc, caller, payloads):
            call(target, rpc, caller, target.route(_parses(rpc, payloads[0]), node), payloads)

    run()
    assert_unchanged(target)


def test_valid_requests_with_hostile_values_get_a_typed_answer(target: Target) -> None:
    @settings(FUZZ, max_examples=1000)
    @given(rpc=RPC, caller=CALLER, node=NODE, data=st.data())
    def run(rpc: Rpc, caller: str, node: int, data: st.DataObject) -> None:
        count = data.draw(st.integers(1, 3)) if rpc.streaming else 1
        requests = data.draw(
            st.lists(messages(rpc.request.DESCRIPTOR), min_size=count, max_size=count)
        )
        for request in requests if caller == "admin" else []:
            into_the_sandbox(request)
            if rpc.method == "JoinGroup":
                # a group of its own: a join to a group with members waits out their rebalance
                request.group_id = f"{SANDBOX}{next(target.group_ids)}-{request.group_id}"
        payloads = [r.SerializeToString() for r in requests]
        if allowed_to_send(rpc, caller, payloads):
            call(target, rpc, caller, target.route(requests[0], node), payloads)

    run()
    assert_unchanged(target)


def test_group_sessions_with_hostile_values_get_a_typed_answer(target: Target) -> None:
    """The super user joins a group of its own, then follows up with drawn calls that carry its
    real member id and generation or drawn ones: the coordinator's paths past "unknown member"."""
    rpc = {r.method: r for r in RPCS if r.path.startswith("/raftlog.v1.GroupCoordinator/")}
    join = rpc["JoinGroup"]
    follow_ups = ["SyncGroup", "Heartbeat", "OffsetCommit", "OffsetFetch", "DescribeGroup"]

    @settings(FUZZ, max_examples=150)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        group_id = f"{SANDBOX}session-{next(target.group_ids)}"
        node = target.route(group_pb2.DescribeGroupRequest(group_id=group_id), 1)
        channel = target.channel("admin", node)
        first = group_pb2.JoinGroupRequest(
            group_id=group_id,
            session_timeout_ms=10_000,
            rebalance_timeout_ms=1_000,
            protocols=data.draw(st.lists(messages(group_pb2.Protocol.DESCRIPTOR), min_size=1)),
        )
        joined = channel.unary_unary(
            join.path, request_serializer=None, response_deserializer=join.response.FromString
        )(first.SerializeToString(), timeout=CALL_TIMEOUT_S)
        assert joined.error.code in KNOWN_CODES, joined
        member = _mostly(st.just(joined.member_id), NAMES)
        generation = _mostly(st.just(joined.generation), _ints(32))
        names = data.draw(st.lists(st.sampled_from([*follow_ups, "JoinGroup"])))
        for name in [*names, *(["LeaveGroup"] if data.draw(st.booleans()) else [])]:
            request = data.draw(messages(rpc[name].request.DESCRIPTOR))
            request.group_id = group_id
            fields = request.DESCRIPTOR.fields_by_name
            if "member_id" in fields:  # a rejoin: a new member would wait for this one
                request.member_id = joined.member_id if name == "JoinGroup" else data.draw(member)
            if "generation" in fields:
                request.generation = data.draw(generation)
            if name == "JoinGroup":  # mostly a rejoin the coordinator takes
                request.session_timeout_ms = data.draw(_mostly(st.just(10_000), _ints(32)))
                if data.draw(_mostly(st.just(True), st.just(False))):
                    del request.protocols[:]
                    request.protocols.extend(first.protocols)
            call(target, rpc[name], "admin", node, [request.SerializeToString()])

    run()
    assert_unchanged(target)


def test_hostile_batches_get_a_typed_answer(target: Target) -> None:
    """Produce to the sandbox topic that exists, through the leader, so every batch reaches the
    leader's checks."""
    produce = next(r for r in RPCS if r.method == "Produce")
    with Admin(target.cluster.bootstrap, security=target.cluster.security) as admin:
        # back to how it was made, whatever the other tests set on it
        explicit = {c.name for c in admin.describe_configs(SINK) if not c.is_default}
        admin.alter_configs(SINK, SINK_CONFIGS, delete=sorted(explicit - set(SINK_CONFIGS)))

    @settings(FUZZ, max_examples=300)
    @given(
        caller=st.sampled_from(["fuzz", "admin"]),
        node=NODE,
        acks=_mostly(st.sampled_from([-1, 1, 0]), _ints(32)),
        partitions=st.lists(
            st.builds(
                broker_pb2.PartitionRecords,
                topic=st.just(SINK),
                partition=_mostly(st.sampled_from([0, 1, 2]), _ints(32)),
                records=BATCHES,
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def run(caller: str, node: int, acks: int, partitions: list[Any]) -> None:
        request = broker_pb2.ProduceRequest(acks=acks, timeout_ms=5000, partitions=partitions)
        call(target, produce, caller, target.route(request, node), [request.SerializeToString()])

    run()
    assert_unchanged(target)


def test_a_string_that_is_not_utf8_fails_the_whole_request(target: Target) -> None:
    with_strings = [
        (rpc, field)
        for rpc in RPCS
        for field in rpc.request.DESCRIPTOR.fields
        if field.type == FieldDescriptor.TYPE_STRING
    ]

    @settings(FUZZ, max_examples=80)
    @given(
        case=st.sampled_from(with_strings),
        caller=st.sampled_from(["fuzz", "admin"]),
        node=NODE,
        junk=st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80"]),
        data=st.data(),
    )
    def run(
        case: tuple[Rpc, FieldDescriptor],
        caller: str,
        node: int,
        junk: bytes,
        data: st.DataObject,
    ) -> None:
        rpc, field = case
        payload = _not_utf8(data.draw(messages(rpc.request.DESCRIPTOR)), field, junk)
        assert _parses(rpc, payload) is None  # the receiver must refuse it whole
        call(target, rpc, caller, node, [payload])

    run()
    assert_unchanged(target)


def test_a_caller_without_a_certificate_is_refused_at_the_handshake(target: Target) -> None:
    for rpc, caller in itertools.product(RPCS, sorted(NO_CERTIFICATE)):
        call(target, rpc, caller, 1, [rpc.request().SerializeToString()])
    assert_unchanged(target)


def test_a_request_over_the_message_limit_is_refused_whole(target: Target) -> None:
    produce = next(r for r in RPCS if r.method == "Produce")
    huge = broker_pb2.ProduceRequest(
        acks=1,
        partitions=[broker_pb2.PartitionRecords(topic=SINK, records=bytes(MESSAGE_BYTES_MAX))],
    )
    for caller in ("fuzz", "admin"):
        call(target, produce, caller, 1, [huge.SerializeToString()])
    assert_unchanged(target)


def test_an_offset_commit_answer_does_not_echo_the_callers_errors(target: Target) -> None:
    group_id = f"{SANDBOX}echo-{next(target.group_ids)}"
    forged = common_pb2.Error(code=common_pb2.UNKNOWN_SERVER_ERROR, message="said by the caller")
    request = group_pb2.OffsetCommitRequest(
        group_id=group_id,
        generation=-1,  # outside membership: the group is empty
        offsets=[group_pb2.CommittedOffset(topic=SINK, partition=0, offset=1, error=forged)],
    )
    node = target.route(request, 1)
    stub = group_pb2_grpc.GroupCoordinatorStub(target.channel("admin", node))
    answer = stub.OffsetCommit(request, timeout=CALL_TIMEOUT_S)
    assert answer.error.code == common_pb2.NONE, answer  # the commit itself succeeded
    assert [o.error.code for o in answer.offsets] == [common_pb2.NONE], answer


def test_a_member_may_rejoin_with_the_assignors_it_joined_with(target: Target) -> None:
    request = group_pb2.JoinGroupRequest(
        group_id=f"{SANDBOX}rejoin-{next(target.group_ids)}",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=1_000,
        protocols=[group_pb2.Protocol(name="", metadata=b"subscription")],
    )
    stub = group_pb2_grpc.GroupCoordinatorStub(target.channel("admin", target.route(request, 1)))
    first = stub.JoinGroup(request, timeout=CALL_TIMEOUT_S)
    if first.error.code == common_pb2.INVALID_REQUEST:
        return  # refusing the nameless assignor outright is as consistent
    assert first.error.code == common_pb2.NONE, first
    request.member_id = first.member_id
    again = stub.JoinGroup(request, timeout=CALL_TIMEOUT_S)
    assert again.error.code == common_pb2.NONE, again
