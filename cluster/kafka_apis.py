"""The Kafka listener's APIs: a Kafka request (a dict from ``kafka_codec``) in, the same call the
gRPC clients make, a Kafka response out. A second shell around the same cores.

Every handler translates the Kafka request into the protobuf request of the matching gRPC
servicer method (``BrokerServicer``, ``GroupServicer``) and calls it with a ``ConnectionCall`` in
place of the gRPC context: authorization, quotas, the replica manager, the purgatories, the
producer state, the group coordinator and the controller forwarding are the servicers' — never
repeated here. What is Kafka's alone is here: version-dependent shapes, topic ids as UUIDs
(``uuid.UUID(int=topic_id)``: our topic ids are positive integers), ``host`` and ``port`` split,
the defaults a Kafka client leaves to the broker (``num_partitions = -1``), and AlterConfigs'
replace-everything semantics.

Error codes are Kafka's numbers already (``raftlog.proto.codes``). What raftlog does not do is
refused with a code, never faked: transactions (a ``transactional_id``: INVALID_REQUEST),
manual replica assignments (INVALID_REPLICA_ASSIGNMENT), fetch sessions (KIP-227:
every answer has session id 0, so clients send full fetches — allowed by the protocol), follower
fetches (replication is the gRPC ``ReplicaFetch``'s; a Kafka fetch with a replica id is refused).

``SUPPORTED`` lists the versions ApiVersions advertises: the ones modern clients negotiate
(librdkafka 2.x, kafka-python 2.x, aiokafka, the Java client 3.x/4.x), from where the record
format is v2 (Produce 3, Fetch 4) up to where a version would need a feature raftlog lacks
(Fetch 13 addresses topics by id, ListOffsets 7 adds the max-timestamp query).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from raftlog.proto import broker_pb2, common_pb2, group_pb2
from raftlog.proto.codes import ErrorCode

from .auth import ConnectionCall, Principal
from .coordinator import OFFSETS_TOPIC

if TYPE_CHECKING:
    from .broker_servicer import BrokerServicer
    from .group_servicer import GroupServicer

__all__ = ["SUPPORTED", "KafkaApis", "KafkaCall", "ResponseDropped", "topic_uuid"]

Request = dict[str, Any]
Response = dict[str, Any]

# api key -> (message name, lowest version, highest version)
SUPPORTED: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 3, 11),
    1: ("Fetch", 4, 12),
    2: ("ListOffsets", 1, 6),
    3: ("Metadata", 0, 12),
    8: ("OffsetCommit", 2, 8),
    9: ("OffsetFetch", 1, 8),
    10: ("FindCoordinator", 0, 4),
    11: ("JoinGroup", 2, 9),
    12: ("Heartbeat", 0, 4),
    13: ("LeaveGroup", 0, 5),
    14: ("SyncGroup", 0, 5),
    15: ("DescribeGroups", 0, 5),
    16: ("ListGroups", 0, 4),
    17: ("SaslHandshake", 1, 1),
    18: ("ApiVersions", 0, 4),
    19: ("CreateTopics", 2, 7),
    20: ("DeleteTopics", 1, 6),
    22: ("InitProducerId", 0, 4),
    23: ("OffsetForLeaderEpoch", 2, 4),
    32: ("DescribeConfigs", 1, 4),
    33: ("AlterConfigs", 0, 2),
    36: ("SaslAuthenticate", 0, 2),
    37: ("CreatePartitions", 0, 3),
    42: ("DeleteGroups", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
    60: ("DescribeCluster", 0, 1),
}
# known (their schemas are here) but not served: answered UNSUPPORTED_VERSION, never advertised
REFUSED: dict[int, str] = {}

NONE = 0
INVALID_REQUEST = int(ErrorCode.INVALID_REQUEST)
UNSUPPORTED_VERSION = int(ErrorCode.UNSUPPORTED_VERSION)
NO_TRANSACTIONS = "transactions are not supported by raftlog"
TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4  # DescribeConfigs / AlterConfigs resource types
CONFIG_SOURCE_TOPIC, CONFIG_SOURCE_DEFAULT = 1, 5
NOT_REQUESTED = -(2**31)  # authorized operations nobody asked for
UNKNOWN_TOPIC_ID = 100  # Kafka's code; only the topic-id lookups of this shell can meet it


class ResponseDropped(grpc.aio.AbortError):  # type: ignore[misc]
    """A servicer chose to give no answer (the fault-injection hook that drops produce answers):
    the Kafka listener closes the connection, which is how a lost answer looks to a client."""


class KafkaCall(ConnectionCall):
    """One Kafka request as the servicers see it: the connection's principal and the request
    header's client id."""

    __slots__ = ("client_id",)

    def __init__(self, principal: Principal, client_id: str = "") -> None:
        super().__init__(principal)
        self.client_id = client_id

    async def abort(self, code: Any, details: str) -> None:
        raise ResponseDropped(details)


class _ByTopic:
    """Partition answers grouped under their topics, in first-seen order: Kafka's responses
    nest partitions in topics, the servicers' answers list them flat."""

    def __init__(self) -> None:
        self._topics: dict[str, list[Response]] = {}

    def add(self, topic: str, partition: Response) -> None:
        self._topics.setdefault(topic, []).append(partition)

    def nested(self, name_key: str, parts_key: str = "partitions") -> list[Response]:
        return [{name_key: name, parts_key: parts} for name, parts in self._topics.items()]


def topic_uuid(topic_id: int) -> uuid.UUID:
    """Our positive integer topic id as the UUID Kafka carries (zero: no id)."""
    return uuid.UUID(int=max(topic_id, 0))


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _code(error: common_pb2.Error) -> int:
    return int(error.code)


def _message(error: common_pb2.Error) -> str | None:
    return error.message if error.code else None


class KafkaApis:
    """The handlers; one per broker, shared by every connection of the Kafka listener."""

    def __init__(self, broker_rpcs: BrokerServicer, group_rpcs: GroupServicer) -> None:
        self.rpcs = broker_rpcs
        self.groups = group_rpcs
        self.broker = broker_rpcs.broker
        self.handlers: dict[int, Callable[[KafkaCall, int, Request], Awaitable[Response]]] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            19: self.create_topics,
            20: self.delete_topics,
            22: self.init_producer_id,
            23: self.offset_for_leader_epoch,
            32: self.describe_configs,
            33: self.alter_configs,
            37: self.create_partitions,
            42: self.delete_groups,
            44: self.incremental_alter_configs,
            60: self.describe_cluster,
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _topic_names_by_id(self) -> dict[uuid.UUID, str]:
        with self.broker.store.read() as state:
            return {topic_uuid(t.topic_id): name for name, t in state.topics.items()}

    def _topic_id(self, name: str) -> uuid.UUID:
        with self.broker.store.read() as state:
            topic = state.topics.get(name)
            return topic_uuid(topic.topic_id if topic is not None else 0)

    @staticmethod
    def api_versions(version: int, error_code: int = NONE) -> Response:
        return {
            "error_code": error_code,
            "api_keys": [
                {"api_key": key, "min_version": low, "max_version": high}
                for key, (_, low, high) in sorted(SUPPORTED.items())
            ],
            "throttle_time_ms": 0,
        }

    # ---- data ----------------------------------------------------------------------------------

    async def produce(self, call: KafkaCall, version: int, req: Request) -> Response:
        topics = req["topic_data"] or []
        if req["transactional_id"] is not None:
            return {
                "responses": [
                    {
                        "name": t["name"],
                        "partition_responses": [
                            {
                                "index": p["index"],
                                "error_code": INVALID_REQUEST,
                                "base_offset": -1,
                                "error_message": NO_TRANSACTIONS,
                            }
                            for p in t["partition_data"] or []
                        ],
                    }
                    for t in topics
                ]
            }
        request = broker_pb2.ProduceRequest(
            acks=req["acks"],
            timeout_ms=req["timeout_ms"],
            partitions=[
                broker_pb2.PartitionRecords(
                    topic=t["name"], partition=p["index"], records=bytes(p["records"] or b"")
                )
                for t in topics
                for p in t["partition_data"] or []
            ],
        )
        answer = await self.rpcs.Produce(request, call)
        by_topic = _ByTopic()
        for r in answer.partitions:
            code = _code(r.error) or _code(answer.error)
            if code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER and r.base_offset >= 0:
                # a retry of a stored batch: Kafka answers it as a success with the stored
                # offsets (librdkafka reports DUPLICATE_SEQUENCE_NUMBER with no offset at all)
                code = NONE
            by_topic.add(
                r.topic,
                {
                    "index": r.partition,
                    "error_code": code,
                    "base_offset": r.base_offset if not code else -1,
                    "log_append_time_ms": -1,
                    "log_start_offset": r.log_start_offset,
                    "error_message": _message(r.error),
                },
            )
        if not answer.partitions and answer.error.code:
            for p in request.partitions:
                by_topic.add(
                    p.topic,
                    {
                        "index": p.partition,
                        "error_code": _code(answer.error),
                        "base_offset": -1,
                        "error_message": answer.error.message,
                    },
                )
        return {
            "responses": by_topic.nested("name", "partition_responses"),
            "throttle_time_ms": answer.throttle_time_ms,
        }

    async def fetch(self, call: KafkaCall, version: int, req: Request) -> Response:
        if req["replica_id"] >= 0:
            # followers replicate over the gRPC ReplicaFetch, proven by their certificate
            return {
                "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                "session_id": 0,
                "responses": [],
            }
        request = broker_pb2.FetchRequest(
            replica_id=-1,
            max_wait_ms=req["max_wait_ms"],
            min_bytes=req["min_bytes"],
            max_bytes=req["max_bytes"],
            partitions=[
                broker_pb2.FetchPartition(
                    topic=t["topic"],
                    partition=p["partition"],
                    fetch_offset=p["fetch_offset"],
                    current_leader_epoch=p["current_leader_epoch"],
                    last_fetched_epoch=p["last_fetched_epoch"],
                    partition_max_bytes=p["partition_max_bytes"],
                )
                for t in req["topics"]
                for p in t["partitions"]
            ],
        )
        answer = await self.rpcs.Fetch(request, call)
        by_topic = _ByTopic()
        for r in answer.partitions:
            code = _code(r.error) or _code(answer.error)
            part: Response = {
                "partition_index": r.partition,
                "error_code": code,
                "high_watermark": r.high_watermark,
                # no transactions: everything below the high watermark is stable
                "last_stable_offset": r.high_watermark,
                "log_start_offset": r.log_start_offset,
                "aborted_transactions": None,  # no transactions
                "preferred_read_replica": -1,
                # an empty record set, never null: librdkafka drops a whole Fetch answer that
                # carries a null one (and with it the error that would send it to the leader)
                "records": r.records if not code else b"",
            }
            if r.HasField("diverging_epoch") and r.diverging_epoch.epoch >= 0:
                part["diverging_epoch"] = {
                    "epoch": r.diverging_epoch.epoch,
                    "end_offset": r.diverging_epoch.end_offset,
                }
            if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH):
                part["current_leader"] = {"leader_id": r.leader_id, "leader_epoch": r.leader_epoch}
            by_topic.add(r.topic, part)
        if not answer.partitions and answer.error.code:
            for p in request.partitions:
                by_topic.add(
                    p.topic,
                    {
                        "partition_index": p.partition,
                        "error_code": _code(answer.error),
                        "high_watermark": -1,
                        "last_stable_offset": -1,
                        "log_start_offset": -1,
                        "records": b"",
                    },
                )
        return {
            "throttle_time_ms": answer.throttle_time_ms,
            "error_code": NONE,
            "session_id": 0,  # no fetch sessions: the client sends every partition each time
            "responses": by_topic.nested("topic"),
        }

    async def list_offsets(self, call: KafkaCall, version: int, req: Request) -> Response:
        request = broker_pb2.ListOffsetsRequest(
            partitions=[
                broker_pb2.ListOffsetsPartition(
                    topic=t["name"],
                    partition=p["partition_index"],
                    timestamp=p["timestamp"],
                    current_leader_epoch=p["current_leader_epoch"],
                )
                for t in req["topics"]
                for p in t["partitions"]
            ]
        )
        answer = await self.rpcs.ListOffsets(request, call)
        by_topic = _ByTopic()
        for r in answer.partitions:
            code = _code(r.error) or _code(answer.error)
            by_topic.add(
                r.topic,
                {
                    "partition_index": r.partition,
                    "error_code": code,
                    "timestamp": r.timestamp,
                    "offset": r.offset,
                    "leader_epoch": r.leader_epoch,
                },
            )
        return {
            "throttle_time_ms": 0,
            "topics": by_topic.nested("name"),
        }

    async def offset_for_leader_epoch(
        self, call: KafkaCall, version: int, req: Request
    ) -> Response:
        request = broker_pb2.OffsetForLeaderEpochRequest(
            replica_id=-1,
            partitions=[
                broker_pb2.OffsetForLeaderEpochPartition(
                    topic=t["topic"],
                    partition=p["partition"],
                    current_leader_epoch=p["current_leader_epoch"],
                    leader_epoch=p["leader_epoch"],
                )
                for t in req["topics"]
                for p in t["partitions"]
            ],
        )
        answer = await self.rpcs.OffsetForLeaderEpoch(request, call)
        by_topic = _ByTopic()
        for r in answer.partitions:
            by_topic.add(
                r.topic,
                {
                    "error_code": _code(r.error) or _code(answer.error),
                    "partition": r.partition,
                    "leader_epoch": r.leader_epoch,
                    "end_offset": r.end_offset,
                },
            )
        return {
            "throttle_time_ms": 0,
            "topics": by_topic.nested("topic"),
        }

    async def init_producer_id(self, call: KafkaCall, version: int, req: Request) -> Response:
        if req["transactional_id"] is not None:
            return {"error_code": INVALID_REQUEST, "producer_id": -1, "producer_epoch": -1}
        answer = await self.rpcs.InitProducerId(
            broker_pb2.InitProducerIdRequest(
                producer_id=req["producer_id"], producer_epoch=req["producer_epoch"]
            ),
            call,
        )
        code = _code(answer.error)
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "producer_id": answer.producer_id if not code else -1,
            "producer_epoch": answer.producer_epoch if not code else -1,
        }

    # ---- metadata ------------------------------------------------------------------------------

    def _brokers(self, answer: Iterable[Any], id_field: str = "node_id") -> list[Response]:
        """The brokers a Kafka client can dial: registered with a Kafka address, not fenced."""
        out = []
        for b in answer:
            if b.address and not b.fenced:
                host, port = split_address(b.address)
                out.append(
                    {
                        id_field: b.broker_id,
                        "host": host,
                        "port": port,
                        "rack": b.rack or None,
                    }
                )
        return out

    async def metadata(self, call: KafkaCall, version: int, req: Request) -> Response:
        wanted = req["topics"]
        names: list[str] = []
        unknown_ids: list[uuid.UUID] = []
        if wanted:
            by_id = None
            for t in wanted:
                if t["name"] is not None:
                    names.append(t["name"])
                    continue
                by_id = by_id if by_id is not None else self._topic_names_by_id()
                name = by_id.get(t["topic_id"])
                if name is None:
                    unknown_ids.append(t["topic_id"])
                else:
                    names.append(name)
        all_topics = wanted is None or (version == 0 and not wanted)
        answer = await self.rpcs.Metadata(broker_pb2.MetadataRequest(topics=names), call)
        topics = []
        if all_topics or names:
            for t in answer.topics:
                code = _code(t.error)
                topics.append(
                    {
                        "error_code": code,
                        "name": t.name,
                        "topic_id": topic_uuid(t.topic_id),
                        "is_internal": t.name == OFFSETS_TOPIC,
                        "partitions": [
                            {
                                "error_code": _code(p.error),
                                "partition_index": p.partition,
                                "leader_id": p.leader,
                                "leader_epoch": p.leader_epoch,
                                "replica_nodes": list(p.replicas),
                                "isr_nodes": list(p.isr),
                                "offline_replicas": [],
                            }
                            for p in t.partitions
                        ],
                        "topic_authorized_operations": NOT_REQUESTED,
                    }
                )
        topics += [
            {
                "error_code": UNKNOWN_TOPIC_ID,
                "name": None,
                "topic_id": topic_id,
                "partitions": [],
            }
            for topic_id in unknown_ids
        ]
        return {
            "throttle_time_ms": 0,
            "brokers": self._brokers(answer.brokers),
            "cluster_id": self.broker.cluster_id,
            "controller_id": answer.controller_id,
            "topics": topics,
            "cluster_authorized_operations": NOT_REQUESTED,
        }

    async def describe_cluster(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.rpcs.DescribeCluster(broker_pb2.DescribeClusterRequest(), call)
        return {
            "throttle_time_ms": 0,
            "error_code": _code(answer.error),
            "error_message": _message(answer.error),
            "endpoint_type": 1,
            "cluster_id": answer.cluster_id or self.broker.cluster_id,
            "controller_id": answer.controller_id,
            "brokers": self._brokers(answer.brokers, "broker_id"),
            "cluster_authorized_operations": NOT_REQUESTED,
        }

    # ---- topics and configs --------------------------------------------------------------------

    async def create_topics(self, call: KafkaCall, version: int, req: Request) -> Response:
        defaults = self.broker.config.topic_defaults
        request = broker_pb2.CreateTopicsRequest(
            timeout_ms=req["timeout_ms"], validate_only=req["validate_only"]
        )
        refused: list[Response] = []
        for t in req["topics"]:
            if t["assignments"]:
                refused.append(
                    {
                        "name": t["name"],
                        "error_code": int(ErrorCode.INVALID_REPLICA_ASSIGNMENT),
                        "error_message": "raftlog assigns replicas itself",
                    }
                )
                continue
            configs = {c["name"]: c["value"] for c in t["configs"] if c["value"] is not None}
            configs.setdefault("min.insync.replicas", str(defaults["min_insync_replicas"]))
            request.topics.append(
                broker_pb2.NewTopic(
                    name=t["name"],
                    partitions=t["num_partitions"]
                    if t["num_partitions"] > 0
                    else defaults["partitions"],
                    replication_factor=t["replication_factor"]
                    if t["replication_factor"] > 0
                    else defaults["replication_factor"],
                    configs=configs,
                )
            )
        answer = (
            await self.rpcs.CreateTopics(request, call)
            if request.topics
            else broker_pb2.CreateTopicsResponse()
        )
        asked = {t.name: t for t in request.topics}
        results = []
        for r in answer.topics:
            code = _code(r.error) or _code(answer.error)
            topic = asked.get(r.name)
            results.append(
                {
                    "name": r.name,
                    "topic_id": topic_uuid(r.topic_id if not code else 0),
                    "error_code": code,
                    "error_message": _message(r.error) or _message(answer.error),
                    "num_partitions": topic.partitions if topic is not None and not code else -1,
                    "replication_factor": (
                        topic.replication_factor if topic is not None and not code else -1
                    ),
                    "configs": None,
                }
            )
        if not answer.topics and answer.error.code:
            results += [
                {
                    "name": t.name,
                    "error_code": _code(answer.error),
                    "error_message": answer.error.message,
                }
                for t in request.topics
            ]
        return {"throttle_time_ms": 0, "topics": results + refused}

    async def delete_topics(self, call: KafkaCall, version: int, req: Request) -> Response:
        names = list(req["topic_names"] or [])
        unknown: list[uuid.UUID] = []
        by_id = None
        for t in req["topics"] or []:
            if t["name"] is not None:
                names.append(t["name"])
                continue
            by_id = by_id if by_id is not None else self._topic_names_by_id()
            name = by_id.get(t["topic_id"])
            if name is None:
                unknown.append(t["topic_id"])
            else:
                names.append(name)
        answer = await self.rpcs.DeleteTopics(
            broker_pb2.DeleteTopicsRequest(names=names, timeout_ms=req["timeout_ms"]), call
        )
        results = [
            {
                "name": r.name,
                "topic_id": topic_uuid(max(r.topic_id, 0)),
                "error_code": _code(r.error) or _code(answer.error),
                "error_message": _message(r.error) or _message(answer.error),
            }
            for r in answer.topics
        ]
        if not answer.topics and answer.error.code:
            results += [
                {
                    "name": n,
                    "error_code": _code(answer.error),
                    "error_message": answer.error.message,
                }
                for n in names
            ]
        results += [{"name": None, "topic_id": i, "error_code": UNKNOWN_TOPIC_ID} for i in unknown]
        return {"throttle_time_ms": 0, "responses": results}

    async def describe_configs(self, call: KafkaCall, version: int, req: Request) -> Response:
        results = []
        for resource in req["resources"]:
            name, kind = resource["resource_name"], resource["resource_type"]
            result: Response = {
                "error_code": NONE,
                "resource_type": kind,
                "resource_name": name,
                "configs": [],
            }
            if kind != TOPIC_RESOURCE:
                result["error_code"] = INVALID_REQUEST
                result["error_message"] = (
                    "raftlog describes topic configs only (a broker's settings are its TOML file)"
                )
                results.append(result)
                continue
            answer = await self.rpcs.DescribeConfigs(
                broker_pb2.DescribeConfigsRequest(topics=[name]), call
            )
            topic = answer.topics[0] if answer.topics else None
            error = topic.error if topic is not None else answer.error
            if error.code:
                result["error_code"], result["error_message"] = _code(error), error.message
                results.append(result)
                continue
            keys = resource["configuration_keys"]
            assert topic is not None
            result["configs"] = [
                {
                    "name": e.name,
                    "value": e.value,
                    "read_only": False,
                    "is_default": e.is_default,
                    "config_source": CONFIG_SOURCE_DEFAULT if e.is_default else CONFIG_SOURCE_TOPIC,
                    "is_sensitive": False,
                    "synonyms": [],
                    "config_type": 0,
                    "documentation": e.doc or None,
                }
                for e in topic.entries
                if keys is None or e.name in keys
            ]
            results.append(result)
        return {"throttle_time_ms": 0, "results": results}

    async def _alter_topic(
        self, call: KafkaCall, resource: Request, set_: dict[str, str], delete: list[str]
    ) -> Response:
        name, kind = resource["resource_name"], resource["resource_type"]
        result: Response = {"error_code": NONE, "resource_type": kind, "resource_name": name}
        if kind != TOPIC_RESOURCE:
            result["error_code"] = INVALID_REQUEST
            result["error_message"] = "raftlog alters topic configs only"
            return result
        answer = await self.rpcs.AlterConfigs(
            broker_pb2.AlterConfigsRequest(topic=name, set=set_, delete=delete), call
        )
        result["error_code"], result["error_message"] = (
            _code(answer.error),
            _message(answer.error),
        )
        return result

    async def alter_configs(self, call: KafkaCall, version: int, req: Request) -> Response:
        """Kafka's AlterConfigs replaces a resource's whole set: what it does not name reverts
        to the default."""
        if req["validate_only"]:
            return self._validate_only_refused(req)
        results = []
        for resource in req["resources"]:
            set_ = {c["name"]: c["value"] for c in resource["configs"] if c["value"] is not None}
            with self.broker.store.read() as state:
                topic = state.topics.get(resource["resource_name"])
                current = [k for k, _ in topic.configs] if topic is not None else []
            delete = [k for k in current if k not in set_]
            results.append(await self._alter_topic(call, resource, set_, delete))
        return {"throttle_time_ms": 0, "responses": results}

    async def incremental_alter_configs(
        self, call: KafkaCall, version: int, req: Request
    ) -> Response:
        if req["validate_only"]:
            return self._validate_only_refused(req)
        results = []
        for resource in req["resources"]:
            set_, delete, bad = {}, [], []
            for c in resource["configs"]:
                if c["config_operation"] == 0 and c["value"] is not None:
                    set_[c["name"]] = c["value"]
                elif c["config_operation"] == 1:
                    delete.append(c["name"])
                else:  # APPEND / SUBTRACT are for list-valued configs; ours have none
                    bad.append(c["name"])
            if bad:
                results.append(
                    {
                        "error_code": int(ErrorCode.INVALID_CONFIG),
                        "error_message": f"APPEND/SUBTRACT on a non-list config: {bad}",
                        "resource_type": resource["resource_type"],
                        "resource_name": resource["resource_name"],
                    }
                )
                continue
            results.append(await self._alter_topic(call, resource, set_, delete))
        return {"throttle_time_ms": 0, "responses": results}

    @staticmethod
    def _validate_only_refused(req: Request) -> Response:
        return {
            "throttle_time_ms": 0,
            "responses": [
                {
                    "error_code": INVALID_REQUEST,
                    "error_message": "validate_only is not supported for config changes",
                    "resource_type": r["resource_type"],
                    "resource_name": r["resource_name"],
                }
                for r in req["resources"]
            ],
        }

    async def create_partitions(self, call: KafkaCall, version: int, req: Request) -> Response:
        request = broker_pb2.CreatePartitionsRequest(validate_only=req["validate_only"])
        results: list[Response] = []
        for t in req["topics"]:
            if t["assignments"] is not None:
                results.append(
                    {
                        "name": t["name"],
                        "error_code": int(ErrorCode.INVALID_REPLICA_ASSIGNMENT),
                        "error_message": "raftlog assigns replicas itself",
                    }
                )
            else:
                request.topics.append(broker_pb2.NewPartitions(topic=t["name"], count=t["count"]))
        if request.topics:
            answer = await self.rpcs.CreatePartitions(request, call)
            for r in answer.topics:
                code = _code(r.error) or _code(answer.error)
                message = _message(r.error) or _message(answer.error)
                results.append({"name": r.name, "error_code": code, "error_message": message})
        return {"throttle_time_ms": 0, "results": results}

    # ---- groups --------------------------------------------------------------------------------

    async def find_coordinator(self, call: KafkaCall, version: int, req: Request) -> Response:
        keys = req["coordinator_keys"] if version >= 4 else [req["key"]]
        found = []
        for key in keys:
            entry: Response = {"key": key, "node_id": -1, "host": "", "port": -1}
            if req["key_type"] != 0:
                entry["error_code"], entry["error_message"] = INVALID_REQUEST, NO_TRANSACTIONS
            else:
                answer = await self.groups.FindCoordinator(
                    group_pb2.FindCoordinatorRequest(group_id=key), call
                )
                entry["error_code"] = _code(answer.error)
                entry["error_message"] = _message(answer.error)
                if not answer.error.code:
                    entry["node_id"] = answer.coordinator_id
                    entry["host"], entry["port"] = split_address(answer.address)
            found.append(entry)
        if version >= 4:
            return {"throttle_time_ms": 0, "coordinators": found}
        one = found[0]
        return {
            "throttle_time_ms": 0,
            "error_code": one["error_code"],
            "error_message": one["error_message"],
            "node_id": one["node_id"],
            "host": one["host"],
            "port": one["port"],
        }

    async def join_group(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.JoinGroup(
            group_pb2.JoinGroupRequest(
                group_id=req["group_id"],
                member_id=req["member_id"],
                client_id=call.client_id,
                session_timeout_ms=req["session_timeout_ms"],
                rebalance_timeout_ms=req["rebalance_timeout_ms"],
                protocols=[
                    group_pb2.Protocol(name=p["name"], metadata=bytes(p["metadata"]))
                    for p in req["protocols"]
                ],
                group_instance_id=req["group_instance_id"] or "",
            ),
            call,
        )
        code = _code(answer.error)
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "generation_id": answer.generation if not code else -1,
            "protocol_type": req["protocol_type"],
            "protocol_name": answer.protocol or None,
            "leader": answer.leader_id,
            "skip_assignment": False,
            "member_id": answer.member_id,
            "members": [
                {"member_id": m.member_id, "group_instance_id": None, "metadata": m.metadata}
                for m in answer.members
            ],
        }

    async def sync_group(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.SyncGroup(
            group_pb2.SyncGroupRequest(
                group_id=req["group_id"],
                member_id=req["member_id"],
                generation=req["generation_id"],
                assignments=[
                    group_pb2.GroupMember(member_id=a["member_id"], metadata=bytes(a["assignment"]))
                    for a in req["assignments"]
                ],
                group_instance_id=req["group_instance_id"] or "",
            ),
            call,
        )
        return {
            "throttle_time_ms": 0,
            "error_code": _code(answer.error),
            "protocol_type": req["protocol_type"],
            "protocol_name": req["protocol_name"],
            "assignment": answer.assignment,
        }

    async def heartbeat(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.Heartbeat(
            group_pb2.HeartbeatRequest(
                group_id=req["group_id"],
                member_id=req["member_id"],
                generation=req["generation_id"],
                group_instance_id=req["group_instance_id"] or "",
            ),
            call,
        )
        return {"throttle_time_ms": 0, "error_code": _code(answer.error)}

    async def leave_group(self, call: KafkaCall, version: int, req: Request) -> Response:
        members = (
            req["members"]
            if version >= 3
            else [{"member_id": req["member_id"], "group_instance_id": None}]
        )
        results = []
        for m in members:
            answer = await self.groups.LeaveGroup(
                group_pb2.LeaveGroupRequest(
                    group_id=req["group_id"],
                    member_id=m["member_id"],
                    group_instance_id=m["group_instance_id"] or "",
                ),
                call,
            )
            results.append(
                {
                    "member_id": m["member_id"],
                    "group_instance_id": m["group_instance_id"],
                    "error_code": _code(answer.error),
                }
            )
        codes = [r["error_code"] for r in results]
        # before v3 the one member's error is the answer's; from v3 a group-level error (the
        # coordinator moved, the group is denied) is the answer's and the members' are theirs
        shared = codes[0] if codes and all(c == codes[0] for c in codes) else NONE
        if version >= 3 and shared in (0, int(ErrorCode.UNKNOWN_MEMBER_ID)):
            shared = NONE
        return {"throttle_time_ms": 0, "error_code": shared, "members": results}

    async def offset_commit(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.OffsetCommit(
            group_pb2.OffsetCommitRequest(
                group_id=req["group_id"],
                member_id=req["member_id"],
                generation=req["generation_id_or_member_epoch"],
                group_instance_id=req["group_instance_id"] or "",
                offsets=[
                    group_pb2.CommittedOffset(
                        topic=t["name"],
                        partition=p["partition_index"],
                        offset=p["committed_offset"],
                        metadata=p["committed_metadata"] or "",
                    )
                    for t in req["topics"]
                    for p in t["partitions"]
                ],
            ),
            call,
        )
        by_topic = _ByTopic()
        for o in answer.offsets:
            by_topic.add(
                o.topic,
                {
                    "partition_index": o.partition,
                    "error_code": _code(o.error) or _code(answer.error),
                },
            )
        if not answer.offsets:
            for t in req["topics"]:
                for p in t["partitions"]:
                    by_topic.add(
                        t["name"],
                        {
                            "partition_index": p["partition_index"],
                            "error_code": _code(answer.error),
                        },
                    )
        return {
            "throttle_time_ms": 0,
            "topics": by_topic.nested("name"),
        }

    async def _offsets_of(
        self, call: KafkaCall, group: str, topics: list[Request] | None
    ) -> tuple[int, list[Response]]:
        answer = await self.groups.OffsetFetch(
            group_pb2.OffsetFetchRequest(
                group_id=group,
                partitions=[
                    group_pb2.CommittedOffset(topic=t["name"], partition=p)
                    for t in topics or []
                    for p in t["partition_indexes"]
                ],
            ),
            call,
        )
        by_topic = _ByTopic()
        for o in answer.offsets:
            by_topic.add(
                o.topic,
                {
                    "partition_index": o.partition,
                    "committed_offset": o.offset,
                    "committed_leader_epoch": -1,
                    "metadata": o.metadata,
                    "error_code": _code(o.error),
                },
            )
        return _code(answer.error), by_topic.nested("name")

    async def offset_fetch(self, call: KafkaCall, version: int, req: Request) -> Response:
        if version >= 8:
            groups = []
            for g in req["groups"]:
                code, topics = await self._offsets_of(call, g["group_id"], g["topics"])
                groups.append({"group_id": g["group_id"], "topics": topics, "error_code": code})
            return {"throttle_time_ms": 0, "groups": groups}
        code, topics = await self._offsets_of(call, req["group_id"], req["topics"])
        if code and version < 2:  # no top-level error before v2: each partition carries it
            for t in req["topics"] or []:
                topics.append(
                    {
                        "name": t["name"],
                        "partitions": [
                            {"partition_index": p, "committed_offset": -1, "error_code": code}
                            for p in t["partition_indexes"]
                        ],
                    }
                )
        return {"throttle_time_ms": 0, "topics": topics, "error_code": code}

    async def list_groups(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.ListGroups(group_pb2.ListGroupsRequest(), call)
        states = set(req["states_filter"] or ())
        return {
            "throttle_time_ms": 0,
            "error_code": _code(answer.error),
            "groups": [
                {"group_id": g.group_id, "protocol_type": "consumer", "group_state": g.state}
                for g in answer.groups
                if not states or g.state in states
            ],
        }

    async def delete_groups(self, call: KafkaCall, version: int, req: Request) -> Response:
        answer = await self.groups.DeleteGroups(
            group_pb2.DeleteGroupsRequest(group_ids=req["groups_names"]), call
        )
        return {
            "throttle_time_ms": 0,
            "results": [
                {
                    "group_id": r.group_id,
                    "error_code": _code(r.error),
                    "error_message": _message(r.error),
                }
                for r in answer.results
            ],
        }

    async def describe_groups(self, call: KafkaCall, version: int, req: Request) -> Response:
        groups = []
        for group_id in req["groups"]:
            answer = await self.groups.DescribeGroup(
                group_pb2.DescribeGroupRequest(group_id=group_id), call
            )
            code = _code(answer.error)
            groups.append(
                {
                    "error_code": code,
                    "group_id": group_id,
                    "group_state": answer.state if not code else "Dead",
                    "protocol_type": "consumer" if answer.protocol else "",
                    "protocol_data": answer.protocol,
                    "members": [
                        {
                            "member_id": m.member_id,
                            "group_instance_id": m.group_instance_id or None,
                            "client_id": m.client_id,
                            "client_host": "",
                            "member_metadata": b"",
                            "member_assignment": m.assignment,
                        }
                        for m in answer.members
                    ],
                    "authorized_operations": NOT_REQUESTED,
                }
            )
        return {"throttle_time_ms": 0, "groups": groups}
