"""What the harness asks the brokers of a run: are they ready, what does each one's own Metadata
answer say, and — from those answers — who is the controller and who leads.

Brokers disagree during and after a partition: a broker just back from one answers from stale
metadata for a while, and an isolated one keeps naming an old leader (often itself). So every
running broker is asked, and the most up-to-date answer wins (``controller_of``, ``leaders_of``:
pure functions of the answers). ``NetnsCluster`` calls these with its brokers' addresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

import grpc

from raftlog.client import ClientSecurity
from raftlog.client.processes import BrokerExitedError, BrokerNotReadyError, wait_until_ready
from raftlog.proto import broker_pb2, broker_pb2_grpc

from .network import NetnsError

__all__ = ["controller_of", "leaders_of", "metadata_answers", "wait_ready"]

# our own channels for readiness, reconnecting every ≤0.5 s: gRPC's default backoff (1 s
# growing to 120 s) would notice a restarted broker seconds late
_PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def wait_ready(
    bootstrap: str,
    addresses: Mapping[int, str],
    security: ClientSecurity,
    timeout_s: float,
    *,
    not_running: Callable[[], Iterable[int]],
    logs: Callable[[int], str],
) -> None:
    """Until each broker of ``addresses`` (node → gRPC address) answers Metadata, a controller
    exists, and the controller (asked through ``bootstrap``, every broker of the cluster) lists
    them registered, unfenced and alive. Raises NetnsError
    (with ``logs(node)``, a log tail) when one is not running or the time runs out."""
    wanted = set(addresses)
    channels = {
        n: security.channel(address, options=_PROBE_CHANNEL_OPTIONS)
        for n, address in addresses.items()
    }

    def silent() -> list[int]:
        out = []
        for node in sorted(wanted):
            try:
                broker_pb2_grpc.BrokerStub(channels[node]).Metadata(
                    broker_pb2.MetadataRequest(), timeout=1.0
                )
            except grpc.RpcError:
                out.append(node)
        return out

    with contextlib.ExitStack() as stack:
        for channel in channels.values():
            stack.callback(channel.close)
        try:
            wait_until_ready(
                bootstrap,
                security,
                wanted,
                timeout_s,
                not_running=not_running,
                silent=silent,
            )
        except BrokerExitedError as exc:
            raise NetnsError(
                f"broker {exc.node_id} is not running; its log ends:\n{logs(exc.node_id)}"
            ) from exc
        except BrokerNotReadyError as exc:
            raise NetnsError(
                f"brokers {sorted(wanted)} not ready within {timeout_s:.0f} s ({exc.last})"
            ) from exc


def metadata_answers(
    addresses: Mapping[int, str],
    security: ClientSecurity,
    topics: Sequence[str] = (),
    timeout_s: float = 1.0,
) -> dict[int, broker_pb2.MetadataResponse]:
    """Each broker's own Metadata answer (node → answer; the silent ones left out)."""
    answers = {}
    for node, address in addresses.items():
        with security.channel(address) as channel:
            try:
                answers[node] = broker_pb2_grpc.BrokerStub(channel).Metadata(
                    broker_pb2.MetadataRequest(topics=list(topics)), timeout=timeout_s
                )
            except grpc.RpcError:
                continue
    return answers


def controller_of(answers: Iterable[broker_pb2.MetadataResponse], node_ids: Set[int]) -> int | None:
    """The active controller as the answer with the highest metadata version names it (None:
    no answer names one, or it names a node outside ``node_ids``)."""
    named = [a for a in answers if a.controller_id >= 0]
    if not named:
        return None
    controller_id = int(max(named, key=lambda a: a.metadata_version).controller_id)
    return controller_id if controller_id in node_ids else None


def leaders_of(
    answers: Iterable[broker_pb2.MetadataResponse], node_ids: Set[int]
) -> frozenset[int]:
    """The nodes leading at least one partition named in the answers; per partition, the answer
    with the highest leader epoch wins."""
    best: dict[tuple[str, int], tuple[int, int]] = {}  # (topic, partition) → (epoch, leader)
    for answer in answers:
        for topic in answer.topics:
            for p in topic.partitions:
                key = (topic.name, p.partition)
                if p.leader >= 0 and (key not in best or p.leader_epoch > best[key][0]):
                    best[key] = (p.leader_epoch, p.leader)
    return frozenset(leader for _, leader in best.values() if leader in node_ids)
