"""The Admin client: topics, configs, cluster and quorum descriptions, the status snapshot.

Thread-safe (every call is independent gRPC). Calls that the controller answers go to any broker,
which forwards them; retriable answers (NOT_CONTROLLER while an election settles, transport
errors) are retried with exponential backoff and jitter (tenacity) up to ``timeout_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
    wait_fixed,
)

from raftlog.proto import broker_pb2
from raftlog.proto.errors import LeaderNotAvailableError, RaftlogError, error_for, raise_for

from .acl_admin import Acl, AclAdmin, UserDescription, WhoAmI
from .errors import NetworkError, NoBrokersAvailableError
from .group_admin import GroupAdmin, GroupDescription, GroupOffset
from .metadata import ClusterMetadata
from .partition_admin import PartitionAdmin
from .quorum_admin import QuorumAdmin
from .security import ClientSecurity
from .snapshot import (
    BrokerRates,
    BrokerView,
    PartitionView,
    QuorumView,
    ReplicaView,
    StatusSnapshot,
    TopicRates,
    VoterView,
)

__all__ = [
    "Acl",
    "Admin",
    "ConfigEntry",
    "GroupDescription",
    "GroupOffset",
    "PartitionDescription",
    "TopicDescription",
    "UserDescription",
    "WhoAmI",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    topic_id: int
    replication_factor: int
    configs: dict[str, str]  # explicitly set ones
    partitions: tuple[PartitionDescription, ...]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str
    is_default: bool
    doc: str


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, RaftlogError) and exc.retriable


class Admin(GroupAdmin, AclAdmin, PartitionAdmin, QuorumAdmin):
    """See the module docstring."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        timeout_s: float = 30.0,
        metadata: ClusterMetadata | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.metadata = metadata or ClusterMetadata(bootstrap, security=security)
        self._owns_metadata = metadata is None
        self.timeout_s = timeout_s
        self.unknown_topic_wait_s = min(2.0, timeout_s)

    def close(self) -> None:
        if self._owns_metadata:
            self.metadata.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------------

    def _call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        """One RPC to the first broker that answers (bootstrap first)."""
        last: Exception | None = None
        for address in self.metadata.candidates():
            stub = self.metadata.stub(address)
            try:
                return getattr(stub, method)(request, timeout=timeout_s or self.timeout_s)
            except grpc.RpcError as exc:
                last = exc
        raise NoBrokersAvailableError(
            f"no broker answered {method} (tried {', '.join(self.metadata.candidates())}): "
            f"{getattr(last, 'code', lambda: last)()}"
        )

    def _retrying(self, work: Callable[[], T], timeout_s: float | None = None) -> T:
        retrying = Retrying(
            retry=retry_if_exception(_retriable),
            stop=stop_after_delay(timeout_s or self.timeout_s),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
            reraise=True,
        )
        return retrying(work)

    # ---- topics ------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 3,
        replication_factor: int = 3,
        *,
        min_insync_replicas: int | None = None,
        configs: Mapping[str, str] | None = None,
        wait: bool = True,
        validate_only: bool = False,
    ) -> int:
        """Create a topic; with ``wait``, return once every partition has a leader."""
        all_configs = dict(configs or {})
        if min_insync_replicas is not None:
            all_configs["min.insync.replicas"] = str(min_insync_replicas)
        request = broker_pb2.CreateTopicsRequest(
            topics=[
                broker_pb2.NewTopic(
                    name=name,
                    partitions=partitions,
                    replication_factor=replication_factor,
                    configs=all_configs,
                )
            ],
            timeout_ms=int(self.timeout_s * 1000),
            validate_only=validate_only,
        )

        def attempt() -> int:
            response = self._call("CreateTopics", request)
            raise_for(response.error)
            result = response.topics[0]
            raise_for(result.error)
            return int(result.topic_id)

        topic_id = self._retrying(attempt)
        if wait and not validate_only:
            self.wait_for_topic(name, partitions)
        return topic_id

    def wait_for_topic(self, name: str, partitions: int | None = None) -> None:
        """Block until the topic shows leaders for all its partitions."""
        not_yet = f"topic {name!r} has no leaders yet"

        def led() -> None:
            try:
                self.metadata.refresh([name])
                count = self.metadata.partition_count(name, refresh_if_missing=False)
            except RaftlogError as exc:
                raise error_for("LEADER_NOT_AVAILABLE", not_yet) from exc
            if (partitions is not None and count != partitions) or any(
                self.metadata.leader_address(name, p) is None for p in range(count)
            ):
                raise error_for("LEADER_NOT_AVAILABLE", not_yet)

        retrying = Retrying(
            retry=retry_if_exception_type(LeaderNotAvailableError),
            stop=stop_after_delay(self.timeout_s),
            wait=wait_fixed(0.05),
            reraise=True,
        )
        retrying(led)

    def delete_topic(self, name: str) -> None:
        request = broker_pb2.DeleteTopicsRequest(names=[name])

        def attempt() -> None:
            response = self._call("DeleteTopics", request)
            raise_for(response.error)
            raise_for(response.topics[0].error)

        self._retrying(attempt)

    def describe_topics(self, names: Sequence[str] = ()) -> list[TopicDescription]:
        """Topics as the brokers' metadata shows them. A topic unknown to the broker asked is
        asked about again for up to ``unknown_topic_wait_s``: it may just have been created."""

        def attempt() -> Any:
            response = self._call("Metadata", broker_pb2.MetadataRequest(topics=list(names)))
            for topic in response.topics:
                raise_for(topic.error)
            return response

        response = self._retrying(attempt, self.unknown_topic_wait_s)
        out = []
        for topic in response.topics:
            out.append(
                TopicDescription(
                    topic.name,
                    topic.topic_id,
                    topic.replication_factor,
                    dict(topic.configs),
                    tuple(
                        PartitionDescription(
                            p.partition, p.leader, p.leader_epoch, tuple(p.replicas), tuple(p.isr)
                        )
                        for p in topic.partitions
                    ),
                )
            )
        return out

    def describe_topic(self, name: str) -> TopicDescription:
        return self.describe_topics([name])[0]

    def list_topics(self) -> list[str]:
        return [t.name for t in self.describe_topics()]

    def describe_configs(self, name: str) -> list[ConfigEntry]:
        response = self._call("DescribeConfigs", broker_pb2.DescribeConfigsRequest(topics=[name]))
        topic = response.topics[0]
        raise_for(topic.error)
        return [ConfigEntry(e.name, e.value, e.is_default, e.doc) for e in topic.entries]

    def alter_configs(
        self, name: str, set_configs: Mapping[str, str] | None = None, delete: Sequence[str] = ()
    ) -> None:
        request = broker_pb2.AlterConfigsRequest(
            topic=name, set=dict(set_configs or {}), delete=list(delete)
        )

        def attempt() -> None:
            raise_for(self._call("AlterConfigs", request).error)

        self._retrying(attempt)

    # ---- cluster -----------------------------------------------------------------------------

    def describe_cluster(self) -> broker_pb2.DescribeClusterResponse:
        def attempt() -> broker_pb2.DescribeClusterResponse:
            response: broker_pb2.DescribeClusterResponse = self._call(
                "DescribeCluster", broker_pb2.DescribeClusterRequest()
            )
            raise_for(response.error)
            return response

        return self._retrying(attempt)

    def describe_quorum(self) -> broker_pb2.DescribeQuorumResponse:
        """The Raft quorum as its leader sees it (match index and lag per voter)."""

        def attempt() -> broker_pb2.DescribeQuorumResponse:
            answer: broker_pb2.DescribeQuorumResponse = self._call(
                "DescribeQuorum", broker_pb2.DescribeQuorumRequest()
            )
            if answer.leader_id >= 0 and answer.responder_id != answer.leader_id:
                self.metadata.refresh()
                address = self.metadata.broker_address(answer.leader_id)
                if address is not None:
                    try:
                        leader_answer: broker_pb2.DescribeQuorumResponse = self.metadata.stub(
                            address
                        ).DescribeQuorum(broker_pb2.DescribeQuorumRequest(), timeout=5)
                        return leader_answer
                    except grpc.RpcError:
                        pass
            return answer

        return self._retrying(attempt)

    def describe_replicas(self, address: str, timeout_s: float = 5.0) -> Any:
        return self.metadata.stub(address).DescribeReplicas(
            broker_pb2.DescribeReplicasRequest(), timeout=timeout_s
        )

    # ---- the status snapshot -------------------------------------------------------------------

    def status_snapshot(self, timeout_s: float = 5.0) -> StatusSnapshot:
        """Everything ``raftlog status`` shows, gathered from every broker in parallel."""
        errors: list[str] = []
        metadata = self._call("Metadata", broker_pb2.MetadataRequest(), timeout_s)
        addresses = {b.broker_id: b.address for b in metadata.brokers}
        cluster: broker_pb2.DescribeClusterResponse | None = None
        try:
            cluster = self._call("DescribeCluster", broker_pb2.DescribeClusterRequest(), timeout_s)
            raise_for(cluster.error)
        except RaftlogError as exc:
            errors.append(f"cluster: {exc}")
            cluster = None
        quorum_answer: broker_pb2.DescribeQuorumResponse | None = None
        try:
            quorum_answer = Admin.describe_quorum(self)
        except RaftlogError as exc:
            errors.append(f"quorum: {exc}")

        def replicas_of(item: tuple[int, str]) -> tuple[int, Any]:
            broker_id, address = item
            try:
                return broker_id, self.describe_replicas(address, timeout_s)
            except grpc.RpcError as exc:
                return broker_id, NetworkError(f"broker {broker_id} at {address}: {exc.code()}")

        with ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:
            described = dict(pool.map(replicas_of, addresses.items()))
        reachable = set()
        by_partition: dict[tuple[str, int], dict[int, Any]] = {}
        for broker_id, answer in described.items():
            if isinstance(answer, Exception):
                errors.append(str(answer))
                continue
            reachable.add(broker_id)
            for replica in answer.replicas:
                by_partition.setdefault((replica.topic, replica.partition), {})[broker_id] = replica

        liveness = {}
        if cluster is not None:
            liveness = {b.broker_id: b for b in cluster.brokers}
        quorum_roles: dict[int, str] = {}
        quorum_view = None
        if quorum_answer is not None:
            quorum_view = QuorumView(
                quorum_answer.leader_id,
                quorum_answer.term,
                quorum_answer.commit_index,
                quorum_answer.last_applied,
                tuple(
                    VoterView(v.node_id, v.raft_address, v.match_index, v.lag)
                    for v in quorum_answer.voters
                ),
            )
            for v in quorum_answer.voters:
                quorum_roles[v.node_id] = (
                    "leader" if v.node_id == quorum_answer.leader_id else "follower"
                )
        controller_id = cluster.controller_id if cluster is not None else metadata.controller_id
        brokers = tuple(
            BrokerView(
                broker_id=b.broker_id,
                address=b.address,
                rack=b.rack or None,
                fenced=b.fenced,
                alive=bool(liveness[b.broker_id].alive) if b.broker_id in liveness else False,
                reachable=b.broker_id in reachable,
                last_heartbeat_ms_ago=liveness[b.broker_id].last_heartbeat_ms_ago
                if b.broker_id in liveness
                else -1,
                # a broker that is not a voter follows the metadata as an observer
                raft_role=quorum_roles.get(b.broker_id, "observer" if quorum_roles else "unknown"),
                is_controller=b.broker_id == controller_id,
                rates=_rates_of(described.get(b.broker_id)),
            )
            for b in metadata.brokers
        )
        partitions = []
        for topic in metadata.topics:
            min_isr = int(topic.configs.get("min.insync.replicas", "1"))
            for p in topic.partitions:
                held = by_partition.get((topic.name, p.partition), {})
                leader_view = held.get(p.leader)
                leader_leo = leader_view.log_end_offset if leader_view is not None else -1
                views = []
                for r in p.replicas:
                    replica = held.get(r)
                    leo = replica.log_end_offset if replica is not None else -1
                    lag = leader_leo - leo if leader_leo >= 0 and leo >= 0 else -1
                    views.append(ReplicaView(r, leo, lag, r in p.isr))
                partitions.append(
                    PartitionView(
                        topic=topic.name,
                        partition=p.partition,
                        leader=p.leader,
                        leader_epoch=p.leader_epoch,
                        replicas=tuple(p.replicas),
                        isr=tuple(p.isr),
                        min_insync_replicas=min_isr,
                        high_watermark=leader_view.high_watermark if leader_view else -1,
                        log_start_offset=leader_view.log_start_offset if leader_view else -1,
                        log_end_offset=leader_leo,
                        size_bytes=leader_view.size_bytes if leader_view else -1,
                        replica_views=tuple(views),
                    )
                )
        return StatusSnapshot(
            taken_at_ms=int(time.time() * 1000),
            bootstrap=",".join(self.metadata.bootstrap),
            controller_id=controller_id,
            metadata_version=metadata.metadata_version,
            brokers=brokers,
            quorum=quorum_view,
            partitions=tuple(partitions),
            errors=tuple(errors),
        )


def _rates_of(answer: Any) -> BrokerRates | None:
    """The rates of a DescribeReplicas answer (None: no answer, or a broker without rates)."""
    if answer is None or isinstance(answer, Exception) or not answer.HasField("rates"):
        return None
    r = answer.rates
    return BrokerRates(
        window_s=r.window_s,
        topics=tuple(
            TopicRates(
                topic=t.topic,
                records_in_per_s=t.records_in_per_s,
                bytes_in_per_s=t.bytes_in_per_s,
                records_out_per_s=t.records_out_per_s,
                bytes_out_per_s=t.bytes_out_per_s,
            )
            for t in r.topics
        ),
        replication_bytes_in_per_s=r.replication_bytes_in_per_s,
        replication_bytes_out_per_s=r.replication_bytes_out_per_s,
        isr_shrinks_last_minute=r.isr_shrinks_last_minute,
        isr_expands_last_minute=r.isr_expands_last_minute,
        raft_commits_per_s=r.raft_commits_per_s,
    )
