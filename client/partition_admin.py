"""Moving partitions for ``Admin``: reassign from a plan, follow and cancel the moves, drain a
broker, elect preferred leaders, add partitions — kafka-reassign-partitions' and
kafka-leader-election's jobs.

A *plan* is kafka-reassign-partitions' JSON::

    {"version": 1, "partitions": [{"topic": "orders", "partition": 0, "replicas": [4, 5, 6]}]}

Each partition's replicas become the target: the new ones copy the log from the leader (at most
``throttle_bytes_per_s`` each partition, 0: no limit), join the ISR, and then the old ones leave;
``replicas: []`` cancels the move in progress. A move is carried by the metadata, so it goes on
when the controller fails over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from raftlog.proto import broker_pb2
from raftlog.proto.errors import RaftlogError, error_for, raise_for

__all__ = ["MoveResult", "OngoingMove", "PartitionAdmin", "PlanError", "parse_plan"]

T = TypeVar("T")


class PlanError(ValueError):
    """A reassignment plan that is not kafka-reassign-partitions' JSON."""


@dataclass(frozen=True, slots=True)
class MoveResult:
    topic: str
    partition: int
    error: RaftlogError | None  # None: accepted


@dataclass(frozen=True, slots=True)
class OngoingMove:
    topic: str
    partition: int
    replicas: tuple[int, ...]  # the target, then the replicas leaving
    adding: tuple[int, ...]
    removing: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    throttle_bytes_per_s: int


def parse_plan(text: str) -> dict[tuple[str, int], tuple[int, ...]]:
    """kafka-reassign-partitions' JSON → {(topic, partition): replicas}; PlanError if not."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("partitions"), list):
        raise PlanError('a plan is {"version": 1, "partitions": [...]}')
    plan: dict[tuple[str, int], tuple[int, ...]] = {}
    for i, entry in enumerate(body["partitions"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("topic"), str)
            or not isinstance(entry.get("partition"), int)
            or not isinstance(entry.get("replicas"), list)
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in entry["replicas"])
        ):
            raise PlanError(
                f"partitions[{i}] needs a topic (string), a partition and replicas (integers)"
            )
        key = (entry["topic"], entry["partition"])
        if key in plan:
            raise PlanError(f"{key[0]}-{key[1]} appears twice")
        plan[key] = tuple(entry["replicas"])
    return plan


def _results(partitions: Iterable[broker_pb2.PartitionResult]) -> list[MoveResult]:
    return [
        MoveResult(
            p.topic, p.partition, error_for(p.error.code, p.error.message) if p.error.code else None
        )
        for p in partitions
    ]


class PartitionAdmin:
    """Partition moves for ``Admin`` (a mixin: needs ``_call``, ``_retrying`` and the topic
    calls)."""

    timeout_s: float
    _call: Callable[..., Any]
    _retrying: Callable[..., Any]
    wait_for_topic: Callable[..., None]

    def reassign_partitions(
        self, plan: Mapping[tuple[str, int], Sequence[int]], *, throttle_bytes_per_s: int = 0
    ) -> list[MoveResult]:
        """Start the moves of ``plan`` (an empty replica list cancels one); each partition's
        outcome (a partition's refusal does not stop the others)."""
        request = broker_pb2.AlterPartitionReassignmentsRequest(
            reassignments=[
                broker_pb2.PartitionReassignment(topic=t, partition=p, replicas=list(r))
                for (t, p), r in plan.items()
            ],
            throttle_bytes_per_s=throttle_bytes_per_s,
        )

        def attempt() -> list[MoveResult]:
            response = self._call("AlterPartitionReassignments", request, 60)
            raise_for(response.error)
            return _results(response.partitions)

        results: list[MoveResult] = self._retrying(attempt, 60)
        return results

    def list_reassignments(self, topics: Sequence[str] = ()) -> list[OngoingMove]:
        request = broker_pb2.ListPartitionReassignmentsRequest(topics=list(topics))

        def attempt() -> list[OngoingMove]:
            response = self._call("ListPartitionReassignments", request)
            raise_for(response.error)
            return [
                OngoingMove(
                    r.topic,
                    r.partition,
                    tuple(r.replicas),
                    tuple(r.adding),
                    tuple(r.removing),
                    tuple(r.isr),
                    r.leader,
                    r.throttle_bytes_per_s,
                )
                for r in response.reassignments
            ]

        moves: list[OngoingMove] = self._retrying(attempt)
        return moves

    def wait_for_reassignments(
        self, topics: Sequence[str] = (), timeout_s: float = 60.0, poll_s: float = 0.2
    ) -> None:
        """Until no move is in progress (on the broker asked: its metadata); TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            ongoing = self.list_reassignments(topics)
            if not ongoing:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(ongoing)} reassignment(s) still in progress after {timeout_s:.0f} s, "
                    f"e.g. {ongoing[0]}"
                )
            time.sleep(poll_s)

    def drain_broker(self, broker_id: int, *, throttle_bytes_per_s: int = 0) -> list[MoveResult]:
        """Move every replica off ``broker_id`` (and its leaderships at once)."""
        request = broker_pb2.DrainBrokerRequest(
            broker_id=broker_id, throttle_bytes_per_s=throttle_bytes_per_s
        )

        def attempt() -> list[MoveResult]:
            response = self._call("DrainBroker", request, 60)
            raise_for(response.error)
            return _results(response.partitions)

        results: list[MoveResult] = self._retrying(attempt, 60)
        return results

    def elect_leaders(
        self, partitions: Sequence[tuple[str, int]] = (), *, preferred: bool = True
    ) -> list[MoveResult]:
        """Move leaderships to the first replicas (``preferred``), or elect leaders for
        partitions without a live one; ``partitions`` empty: every partition."""
        request = broker_pb2.ElectLeadersRequest(
            preferred=preferred,
            partitions=[
                broker_pb2.PartitionReassignment(topic=t, partition=p) for t, p in partitions
            ],
        )

        def attempt() -> list[MoveResult]:
            response = self._call("ElectLeaders", request, 60)
            raise_for(response.error)
            return _results(response.partitions)

        results: list[MoveResult] = self._retrying(attempt, 60)
        return results

    def add_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        """Grow ``name`` to ``count`` partitions in all (Kafka's CreatePartitions)."""
        request = broker_pb2.CreatePartitionsRequest(
            topics=[broker_pb2.NewPartitions(topic=name, count=count)], validate_only=validate_only
        )

        def attempt() -> None:
            response = self._call("CreatePartitions", request)
            raise_for(response.error)
            raise_for(response.topics[0].error)

        self._retrying(attempt)
        if not validate_only:
            self.wait_for_topic(name, count)
