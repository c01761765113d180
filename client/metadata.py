"""The client's view of the cluster: brokers, partition leaders and epochs, and gRPC channels.

Thread-safe (one lock): the Producer's sender thread, the Consumer and application threads share
it. ``refresh()`` asks any reachable broker — bootstrap addresses first, then known brokers — for
Metadata; callers refresh when an answer says their view is stale (``invalid_metadata`` errors)
and the cache never accepts a partition's leader epoch going backwards (a stale broker's answer).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.proto.channel import MESSAGE_BYTES_MAX, channel_options
from raftlog.proto.errors import error_for

from .errors import (
    NoBrokersAvailableError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from .security import ClientSecurity, SecurityConfigError

__all__ = ["MESSAGE_BYTES_MAX", "ClusterMetadata", "PartitionInfo", "parse_bootstrap"]


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[str]:
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out = [i.strip() for i in items if i.strip()]
    if not out:
        raise ValueError("bootstrap needs at least one host:port")
    for item in out:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bootstrap address {item!r} is not host:port")
    return out


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int  # -1: offline
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class ClusterMetadata:
    """See the module docstring."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        security: ClientSecurity | None,
        request_timeout_s: float = 5.0,
        refresh_backoff_ms: int = 50,
    ) -> None:
        if security is None:
            raise SecurityConfigError(
                "security= is required: ClientSecurity.from_files(...) / .from_dir(...) for a "
                "TLS cluster, ClientSecurity.plaintext() only for one configured plaintext"
            )
        self.security = security
        self.bootstrap = parse_bootstrap(bootstrap)
        self.request_timeout_s = request_timeout_s
        self.refresh_backoff_ms = refresh_backoff_ms
        self._lock = threading.RLock()
        self._channels: dict[str, grpc.Channel] = {}
        self._brokers: dict[int, str] = {}
        self._partitions: dict[tuple[str, int], PartitionInfo] = {}
        self._topics: dict[str, int] = {}  # topic → partition count
        self._unknown_topics: set[str] = set()
        self._denied_topics: dict[str, str] = {}  # topic → the broker's authorization message
        self._moved: set[tuple[str, int]] = set()  # leader or epoch changed since taken
        self.controller_id = -1
        self._last_refresh = 0.0

    # ---- channels --------------------------------------------------------------------------

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                # keepalive and bounded reconnects: back within ~1.5 s of a heal
                channel = self.security.channel(address, options=channel_options())
                self._channels[address] = channel
            return channel

    def stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        return broker_pb2_grpc.BrokerStub(self.channel(address))

    def broker_address(self, broker_id: int) -> str | None:
        with self._lock:
            return self._brokers.get(broker_id)

    def brokers(self) -> dict[int, str]:
        with self._lock:
            return dict(self._brokers)

    def candidates(self) -> list[str]:
        """Addresses to ask, bootstrap first (shuffled), then every known broker."""
        boot = list(self.bootstrap)
        random.shuffle(boot)
        with self._lock:
            known = [a for a in self._brokers.values() if a not in boot]
        return boot + known

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    # ---- metadata ----------------------------------------------------------------------------

    def refresh(self, topics: Iterable[str] = (), *, force: bool = True) -> bool:
        """Fetch metadata (all topics when none are named) from the first broker that answers
        and knows the active controller. A broker that names none (``controller_id`` -1: an
        election, or it is cut off from the controller and its view may be stale) is used only
        when no broker does.

        Without ``force`` a refresh within ``refresh_backoff_ms`` of the last one is skipped
        (returns False: the caller asks again later).
        """
        with self._lock:
            if not force and time.monotonic() - self._last_refresh < self.refresh_backoff_ms / 1000:
                return False
        last_error: Exception | None = None
        fallback: broker_pb2.MetadataResponse | None = None
        for address in self.candidates():
            try:
                response = self.stub(address).Metadata(
                    broker_pb2.MetadataRequest(topics=list(topics)),
                    timeout=self.request_timeout_s,
                )
            except grpc.RpcError as exc:
                last_error = exc
                continue
            if response.controller_id < 0:
                fallback = fallback or response
                continue
            self._update(response)
            return True
        if fallback is not None:
            self._update(fallback)
            return True
        raise NoBrokersAvailableError(
            f"no broker answered Metadata (tried {', '.join(self.candidates())}): {last_error}"
        )

    def _update(self, response: broker_pb2.MetadataResponse) -> None:
        with self._lock:
            self._last_refresh = time.monotonic()
            for b in response.brokers:
                self._brokers[b.broker_id] = b.address
            self.controller_id = response.controller_id
            for topic in response.topics:
                if topic.error.code:
                    if topic.error.code == TopicAuthorizationFailedError.code:
                        self._denied_topics[topic.name] = topic.error.message
                        self._topics.pop(topic.name, None)
                    elif topic.error.code == UnknownTopicOrPartitionError.code:
                        self._unknown_topics.add(topic.name)
                        self._topics.pop(topic.name, None)
                    continue
                self._unknown_topics.discard(topic.name)
                self._denied_topics.pop(topic.name, None)
                self._topics[topic.name] = len(topic.partitions)
                for p in topic.partitions:
                    key = (topic.name, p.partition)
                    old = self._partitions.get(key)
                    if old is not None and old.leader_epoch > p.leader_epoch:
                        continue  # a stale broker's view: keep the newer one
                    if old is None or (old.leader, old.leader_epoch) != (
                        p.leader,
                        p.leader_epoch,
                    ):
                        self._moved.add(key)
                    self._partitions[key] = PartitionInfo(
                        topic.name,
                        p.partition,
                        p.leader,
                        p.leader_epoch,
                        tuple(p.replicas),
                        tuple(p.isr),
                    )

    def take_moved(self) -> set[tuple[str, int]]:
        """Partitions whose leader or leader epoch changed since the last call."""
        with self._lock:
            moved, self._moved = self._moved, set()
        return moved

    def partition_count(
        self, topic: str, *, refresh_if_missing: bool = True, wait_s: float = 0.0
    ) -> int:
        """How many partitions ``topic`` has; raises UnknownTopicOrPartitionError.

        ``wait_s``: keep asking that long — a topic just created may not have reached the broker
        we ask yet (metadata is applied by each broker on its own).
        """
        with self._lock:
            count = self._topics.get(topic)
        if count is not None:
            return count
        unknown = f"topic {topic!r} does not exist"
        if not refresh_if_missing:
            raise error_for("UNKNOWN_TOPIC_OR_PARTITION", unknown)

        def look_up() -> int:
            self.refresh([topic])
            with self._lock:
                found = self._topics.get(topic)
                denied = self._denied_topics.get(topic)
            if denied is not None:  # no DESCRIBE on it: waiting will not help
                raise error_for("TOPIC_AUTHORIZATION_FAILED", denied)
            if found is None:
                raise error_for("UNKNOWN_TOPIC_OR_PARTITION", unknown)
            return found

        retrying = Retrying(  # refresh raises only NoBrokersAvailableError: that is not retried
            retry=retry_if_exception_type(UnknownTopicOrPartitionError),
            stop=stop_after_delay(wait_s),
            wait=wait_fixed(0.05),
            reraise=True,
        )
        return retrying(look_up)

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        with self._lock:
            return self._partitions.get((topic, partition))

    def leader_address(self, topic: str, partition: int) -> tuple[int, str] | None:
        """(leader id, address), or None when offline or unknown."""
        with self._lock:
            info = self._partitions.get((topic, partition))
            if info is None or info.leader < 0:
                return None
            address = self._brokers.get(info.leader)
            return None if address is None else (info.leader, address)

    def topics(self) -> dict[str, int]:
        with self._lock:
            return dict(self._topics)
