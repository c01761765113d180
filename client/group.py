"""A consumer's membership of a group: find the coordinator, join, sync, heartbeat, commit.

Used by ``Consumer`` when it has a ``group_id``. Thread model: the consumer's thread calls
``ensure_active`` / ``commit`` / ``fetch_committed`` / ``leave``; one background thread sends
heartbeats every ``heartbeat_interval_ms`` and only ever sets flags (``rejoin_needed``,
``lost``, ``fenced``, ``coordinator`` lost) under the lock, so a member stays alive while the
application processes records between polls. The assignors are the pure ``assignors.py``.

Two ways to give partitions up, as Kafka distinguishes them: a rebalance the member takes part in
(REBALANCE_IN_PROGRESS: ``rejoin_needed``; it is still a member of the current generation, so a
commit before giving up succeeds) and a membership that is gone (UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION: ``lost``; another member may own the partitions already, a commit would fail).
A coordinator that moved (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, no answer) is neither:
the next coordinator loads the group's membership, and requests are retried there.

``group_instance_id`` makes the member static (KIP-345): a restarted consumer with the same id takes
its old place and partitions back without a rebalance, provided it returns within the session
timeout; ``leave`` then sends no LeaveGroup (the session timeout removes a static member that is
gone for good). FENCED_INSTANCE_ID means a newer instance with the same id replaced this one:
``fenced`` holds that error and the member stops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future

import grpc
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

from raftlog.proto import group_pb2, group_pb2_grpc
from raftlog.proto.errors import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    RaftlogError,
    error_for,
)

from .assignors import (
    ASSIGNORS,
    COOPERATIVE,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from .errors import NetworkError
from .metadata import ClusterMetadata

__all__ = ["GroupMembership", "find_coordinator"]

logger = logging.getLogger(__name__)
TopicPartition = tuple[str, int]
_REJOIN = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID")
_LOST = ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID")  # membership gone: partitions are lost
_NEW_COORDINATOR = ("NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS")


def find_coordinator(
    metadata: ClusterMetadata, group_id: str, timeout_s: float
) -> group_pb2.FindCoordinatorResponse:
    """Which broker coordinates ``group_id``: asks the brokers (bootstrap first; the next one
    when one does not answer) every 0.1 s for up to ``timeout_s`` until one names it, else
    raises CoordinatorNotAvailableError with the last answer."""
    last = "no answer"

    def ask() -> group_pb2.FindCoordinatorResponse:
        nonlocal last
        for address in metadata.candidates():
            stub = group_pb2_grpc.GroupCoordinatorStub(metadata.channel(address))
            try:
                answer: group_pb2.FindCoordinatorResponse = stub.FindCoordinator(
                    group_pb2.FindCoordinatorRequest(group_id=group_id), timeout=5
                )
            except grpc.RpcError as exc:
                last = str(exc.code())
                continue
            if answer.error.code == 0:
                return answer
            last = answer.error.message
            break
        raise error_for("COORDINATOR_NOT_AVAILABLE", f"group {group_id}: {last}")

    retrying = Retrying(
        retry=retry_if_exception_type(CoordinatorNotAvailableError),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.1),
        reraise=True,
    )
    return retrying(ask)


def _coordinator_moved(exc: BaseException) -> bool:
    """The coordinator did not answer, or says it is not (or not yet) the one: find it again."""
    return isinstance(exc, NetworkError) or (
        isinstance(exc, RaftlogError) and exc.name in _NEW_COORDINATOR
    )


class GroupMembership:
    """See the module docstring."""

    def __init__(
        self,
        metadata: ClusterMetadata,
        group_id: str,
        *,
        client_id: str = "raftlog",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        rebalance_timeout_ms: int = 30_000,
        assignors: Sequence[str] = ("sticky", "range", "roundrobin"),
        request_timeout_s: float = 30.0,
        group_instance_id: str | None = None,
    ) -> None:
        unknown = [a for a in assignors if a not in ASSIGNORS]
        if unknown or not assignors:
            raise ValueError(f"unknown assignor(s) {unknown}; known: {sorted(ASSIGNORS)}")
        self.metadata = metadata
        self.group_id = group_id
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.assignors = tuple(assignors)
        self.request_timeout_s = request_timeout_s
        if group_instance_id is not None and not group_instance_id:
            raise ValueError("group_instance_id must be non-empty (or None for a dynamic member)")
        self.instance_id = group_instance_id or ""
        self.member_id = ""
        self.generation = -1
        self.assignment: list[TopicPartition] = []
        self.topics: tuple[str, ...] = ()
        self._coordinator: str | None = None
        self._lock = threading.Lock()
        self._rejoin = True
        self._lost = False  # membership gone since the consumer last asked (take_lost)
        # waiting for a JoinGroup answer: no heartbeats (the group is rebalancing because of this
        # very join; REBALANCE_IN_PROGRESS would only ask for another round)
        self._joining = False
        self._in_round = False  # between asking to join and having the new assignment
        # a cooperative member keeps consuming while it rejoins: the round runs on this thread
        self.cooperative = set(self.assignors) <= COOPERATIVE
        self._round: Future[tuple[list[TopicPartition], list[TopicPartition]] | None] | None = None
        self.fenced: FencedInstanceIdError | None = None
        self._stop = threading.Event()
        self._closed = False
        self._heartbeats: threading.Thread | None = None

    # ---- the coordinator ---------------------------------------------------------------------

    def _stub(self) -> group_pb2_grpc.GroupCoordinatorStub:
        with self._lock:
            address = self._coordinator
        if address is None:
            address = self._find_coordinator()
        return group_pb2_grpc.GroupCoordinatorStub(self.metadata.channel(address))

    def _find_coordinator(self) -> str:
        found: str = find_coordinator(self.metadata, self.group_id, self.request_timeout_s).address
        with self._lock:
            self._coordinator = found
        return found

    def _lost_coordinator(self) -> None:
        with self._lock:
            self._coordinator = None

    def _call(self, method: str, request: object, timeout_s: float) -> object:
        """One RPC to the coordinator; transport errors and NOT_COORDINATOR find it again,
        every 0.2 s for up to ``request_timeout_s``."""

        def attempt() -> object:
            try:
                answer = getattr(self._stub(), method)(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                self._lost_coordinator()
                raise NetworkError(f"{method} to the coordinator: {exc.code()}") from exc
            code = answer.error.code
            if code and error_for(code).name in _NEW_COORDINATOR:
                self._lost_coordinator()
                raise error_for(code, answer.error.message)
            return answer

        # a find that gave up (COORDINATOR_NOT_AVAILABLE from ``_stub``) took the whole
        # request_timeout_s, which started after this call's: it is never tried again
        retrying = Retrying(
            retry=retry_if_exception(_coordinator_moved),
            stop=stop_after_delay(self.request_timeout_s),
            wait=wait_fixed(0.2),
            reraise=True,
        )
        return retrying(attempt)

    # ---- membership ----------------------------------------------------------------------------

    @property
    def rejoin_needed(self) -> bool:
        with self._lock:
            return self._rejoin

    def take_lost(self) -> bool:
        """Was the membership lost since the last call? (The consumer's partitions with it.)"""
        with self._lock:
            lost, self._lost = self._lost, False
            return lost

    def _answered(self, error: RaftlogError, sent: tuple[str, int] | None = None) -> None:
        """What an error answer says about the membership: flags, under the lock. ``sent``: the
        (member id, generation) the request carried — an answer about a membership this member
        has since replaced (a join completed meanwhile) says nothing about the current one."""
        with self._lock:
            if sent is not None and sent != (self.member_id, self.generation):
                return
            if isinstance(error, FencedInstanceIdError):
                self.fenced = error
                self._stop.set()
            if error.name in _REJOIN:
                self._rejoin = True
            if error.name == "ILLEGAL_GENERATION" and self._in_round:
                # a commit that crossed this member's own join round: the round decides (Kafka
                # answers such a commit RebalanceInProgress), the membership is not lost
                return
            if error.name in _LOST:
                self._lost = True
                self.generation = -1
                self.assignment = []  # a lost member owns nothing (its next join says so)
                if error.name == "UNKNOWN_MEMBER_ID":
                    self.member_id = ""

    def subscribe(self, topics: Sequence[str]) -> None:
        self.topics = tuple(sorted(set(topics)))
        with self._lock:
            self._rejoin = True

    def ensure_active(self) -> tuple[list[TopicPartition], list[TopicPartition]] | None:
        """Rejoin if needed; (revoked, assigned) when the assignment changed, else None.

        Raises on errors that retrying here cannot fix; retriable trouble returns None with the
        rejoin still pending (the next poll tries again).
        """
        if not self.rejoin_needed:
            return None
        old = list(self.assignment)
        with self._lock:
            self._in_round = True
        try:
            assigned = self._join_and_sync()
        except RaftlogError as exc:
            if exc.retriable or exc.name in _REJOIN:
                logger.info("group %s: rejoin failed (%s), will retry", self.group_id, exc)
                with self._lock:
                    self._rejoin = True
                    if exc.name in _LOST:  # whatever this member still holds is not its own
                        self._lost = True
                    if exc.name == "UNKNOWN_MEMBER_ID":
                        self.member_id = ""
                return None
            if isinstance(exc, FencedInstanceIdError):
                self._answered(exc)
            raise
        finally:
            with self._lock:
                self._in_round = False
        self.assignment = assigned
        self._start_heartbeats()
        return old, assigned

    def rejoin_in_background(self) -> None:
        """``ensure_active`` on this member's round thread, if a rejoin is due and none runs;
        ``round_outcome`` gives its result. The caller keeps consuming what it owns meanwhile."""
        if self._round is not None or not self.rejoin_needed:
            return
        round_: Future[tuple[list[TopicPartition], list[TopicPartition]] | None] = Future()

        def run() -> None:
            try:
                round_.set_result(self.ensure_active())
            except BaseException as exc:  # handed to the consumer's thread by round_outcome
                round_.set_exception(exc)

        self._round = round_
        # a daemon: a consumer closing mid-round must not wait out a long JoinGroup at exit
        threading.Thread(target=run, name=f"raftlog-join-{self.group_id}", daemon=True).start()

    def round_outcome(self) -> tuple[list[TopicPartition], list[TopicPartition]] | None:
        """(old, assigned) of a finished background round, once; None while it runs or when it
        changed nothing. Errors ``ensure_active`` raises are raised here."""
        if self._round is None or not self._round.done():
            return None
        round_, self._round = self._round, None
        return round_.result()

    def request_rejoin(self) -> None:
        """Ask for another round (a cooperative member that just revoked partitions does)."""
        with self._lock:
            self._rejoin = True

    def _join_call(self, subscription: bytes) -> object:
        return self._call(
            "JoinGroup",
            group_pb2.JoinGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                client_id=self.client_id,
                session_timeout_ms=self.session_timeout_ms,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
                protocols=[
                    group_pb2.Protocol(name=a, metadata=subscription) for a in self.assignors
                ],
                group_instance_id=self.instance_id,
            ),
            self.rebalance_timeout_ms / 1000 + 10,
        )

    def _join_and_sync(self) -> list[TopicPartition]:
        with self._lock:
            self._rejoin = False
            self._joining = True
        subscription = encode_subscription(Subscription(self.topics, tuple(self.assignment)))
        try:
            joined = self._join_call(subscription)
        finally:
            with self._lock:
                self._joining = False
        assert isinstance(joined, group_pb2.JoinGroupResponse)
        if joined.error.code:
            with self._lock:
                self._rejoin = True
            raise error_for(joined.error.code, joined.error.message)
        with self._lock:
            self.member_id = joined.member_id
            self.generation = joined.generation
        assignments: list[group_pb2.GroupMember] = []
        # a leader without members' subscriptions is a static leader back in a stable group:
        # the assignment stands, there is nothing to compute
        if joined.leader_id == joined.member_id and joined.members:
            plan = self._assign(joined.protocol, {m.member_id: m.metadata for m in joined.members})
            assignments = [
                group_pb2.GroupMember(member_id=m, metadata=encode_assignment(tps))
                for m, tps in plan.items()
            ]
        synced = self._call(
            "SyncGroup",
            group_pb2.SyncGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                generation=self.generation,
                assignments=assignments,
                group_instance_id=self.instance_id,
            ),
            70,
        )
        assert isinstance(synced, group_pb2.SyncGroupResponse)
        if synced.error.code:
            with self._lock:
                self._rejoin = True
            raise error_for(synced.error.code, synced.error.message)
        return decode_assignment(synced.assignment)

    def _assign(
        self, protocol: str, members: Mapping[str, bytes]
    ) -> dict[str, list[TopicPartition]]:
        """The leader's job: subscriptions in, everyone's partitions out."""
        subscriptions = {m: decode_subscription(d) for m, d in members.items()}
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        if topics:
            self.metadata.refresh(topics)
        counts = {}
        for topic in topics:
            try:
                counts[topic] = self.metadata.partition_count(topic, wait_s=2.0)
            except RaftlogError:
                continue  # a topic that does not exist yet: nothing to assign
        return ASSIGNORS[protocol](subscriptions, counts)

    # ---- heartbeats ------------------------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        if self._closed or (self._heartbeats is not None and self._heartbeats.is_alive()):
            return
        self._stop.clear()
        self._heartbeats = threading.Thread(
            target=self._beat, name=f"raftlog-heartbeat-{self.group_id}", daemon=True
        )
        self._heartbeats.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_ms / 1000):
            with self._lock:
                if self._rejoin or self._joining or not self.member_id:
                    continue
                sent = (self.member_id, self.generation)
            try:
                answer = self._stub().Heartbeat(
                    group_pb2.HeartbeatRequest(
                        group_id=self.group_id,
                        member_id=sent[0],
                        generation=sent[1],
                        group_instance_id=self.instance_id,
                    ),
                    timeout=self.heartbeat_interval_ms / 1000 * 2,
                )
            except (grpc.RpcError, RaftlogError):
                self._lost_coordinator()
                continue
            if not answer.error.code:
                continue
            error = error_for(answer.error.code, answer.error.message)
            if error.name in _NEW_COORDINATOR:
                self._lost_coordinator()
            self._answered(error, sent)

    # ---- offsets ---------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit (synchronously: answered once replicated) the next offsets to consume."""
        if not offsets:
            return
        with self._lock:
            sent = (self.member_id, self.generation)
        answer = self._call(
            "OffsetCommit",
            group_pb2.OffsetCommitRequest(
                group_id=self.group_id,
                member_id=sent[0],
                generation=sent[1],
                offsets=[
                    group_pb2.CommittedOffset(topic=t, partition=p, offset=o)
                    for (t, p), o in sorted(offsets.items())
                ],
                group_instance_id=self.instance_id,
            ),
            self.request_timeout_s,
        )
        assert isinstance(answer, group_pb2.OffsetCommitResponse)
        if answer.error.code:
            error = error_for(answer.error.code, answer.error.message)
            self._answered(error, sent)
            raise error

    def fetch_committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets (-1 where none) of ``partitions``."""
        answer = self._call(
            "OffsetFetch",
            group_pb2.OffsetFetchRequest(
                group_id=self.group_id,
                partitions=[group_pb2.CommittedOffset(topic=t, partition=p) for t, p in partitions],
            ),
            self.request_timeout_s,
        )
        assert isinstance(answer, group_pb2.OffsetFetchResponse)
        if answer.error.code:
            raise error_for(answer.error.code, answer.error.message)
        return {(o.topic, o.partition): o.offset for o in answer.offsets}

    def leave(self) -> None:
        """Leave the group (a dynamic member); a static member only stops heartbeating, so that
        its next instance finds its place within the session timeout (Kafka does the same)."""
        self._closed = True  # a background round finishing now starts no heartbeats
        self._stop.set()
        if self.member_id and not self.instance_id:
            with contextlib.suppress(grpc.RpcError, RaftlogError):  # the session timeout does it
                self._stub().LeaveGroup(
                    group_pb2.LeaveGroupRequest(group_id=self.group_id, member_id=self.member_id),
                    timeout=5,
                )
        self.member_id = ""
        self.assignment = []
