"""A broker that is not a Raft voter: it follows the committed metadata by fetching it from them.

A cluster keeps 3 or 5 voters (``[[voters]]`` in every broker's config); any other broker is an
*observer*, as in KRaft. It runs no pysyncobj member. Instead :class:`MetadataObserver` long-polls
a voter's ``FetchMetadata`` (controller_servicer.py) with the version it has applied and applies
what comes back to its own ``MetadataStore``: the commands that follow its version, in order, or —
when the voter no longer keeps them (``raft/store.py``'s bounded tail), or on a first start — the
voter's whole state. Everything downstream (the listener, roles, the replica manager) is the same
code a voter's broker runs. Its calls to the controller (register, heartbeat, AlterPartition, …)
go over the controller link like every broker's.

What it asks and of whom: the Raft leader, as the last answer named it; a voter answers with its
own id only while it holds the leader lease (``RaftQuorum.is_leader``), so a deposed leader cut off
from the majority does not keep an observer on its frozen state — it names another leader or none,
and the observer moves on to the next voter. Any voter's answer is committed state (a voter applies
only committed entries); a lagging voter's is only older.

Fault model: an answer is applied only on top of the version it says it follows, and a snapshot
only when it is not older than ours — an observer never goes back, whichever voter answers. The
observer keeps no metadata on disk: after a restart it fetches the state again before it serves
(the broker waits for ``status()`` to show it caught up), and until it has registered this
incarnation it acts on no roles (broker.py), so an empty or old state cannot delete a log (only a
committed DeleteTopic does) or make it lead. Only brokers may fetch the metadata (it holds SCRAM
credentials and ACLs): the servicer checks the caller's certificate as for every broker-only call.
Bounds: one fetch in flight; each answer ≤ ``ANSWER_BYTES_MAX`` of commands, or one snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from raftlog.proto import controller_pb2, controller_pb2_grpc
from raftlog.raft.quorum_types import NotLeaderError, QuorumError, QuorumStatus, Role, VoterStatus
from raftlog.raft.store import MetadataStore

__all__ = [
    "ANSWER_BYTES_MAX",
    "FETCH_WAIT_MS",
    "FetchRoute",
    "MetadataObserver",
]

logger = logging.getLogger(__name__)

FETCH_WAIT_MS = 1000  # a voter holds a fetch this long waiting for a newer version
ANSWER_BYTES_MAX = 4 << 20  # commands per answer (a snapshot is sent whole)
RETRY_S = 0.1  # after a failed fetch, before asking the next voter

StubOf = Callable[[int], controller_pb2_grpc.ControllerStub | None]


@dataclass(slots=True)
class FetchRoute:
    """Which voter to ask next (pure): the leader an answer named, else the voters in turn."""

    voters: tuple[int, ...]
    leader: int | None = None
    _next: int = 0

    def target(self) -> int:
        if self.leader is not None and self.leader in self.voters:
            return self.leader
        return self.voters[self._next % len(self.voters)]

    def answered(self, by: int, leader_id: int) -> None:
        """``leader_id``: who the answerer takes for the leader (itself only with the lease)."""
        if leader_id >= 0 and leader_id in self.voters:
            self.leader = leader_id
        else:
            self.leader = None
            if by == self.target():
                self._next += 1  # it does not know a leader: ask the others in turn

    def failed(self, by: int) -> None:
        """No answer from ``by``: forget it as the leader and move to the next voter."""
        if self.leader == by:
            self.leader = None
        self._next = (self.voters.index(by) + 1) if by in self.voters else self._next + 1


class MetadataObserver:
    """The metadata quorum as seen by a broker that is not a voter (``MetadataQuorum``)."""

    def __init__(
        self, node_id: int, store: MetadataStore, voters: Mapping[int, str], stub_of: StubOf
    ) -> None:
        """``voters``: node id → Raft address (as the config names them)."""
        self.node_id = node_id
        self.store = store
        self.voters = dict(voters)
        self.route = FetchRoute(tuple(sorted(voters)))
        self.stub_of = stub_of
        self._leader_version = 0  # the answering voter's applied version (our "commit index")
        self._leader: int | None = None
        self._applier = ThreadPoolExecutor(1, thread_name_prefix=f"raftlog-observer-{node_id}")
        self.fetches = 0
        self.snapshots_taken = 0
        self._closed = False

    # ---- MetadataQuorum ------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return False

    def leader_id(self) -> int | None:
        return self._leader

    def status(self) -> QuorumStatus:
        applied = self.store.version
        return QuorumStatus(
            node_id=self.node_id,
            role=Role.OBSERVER,
            term=0,
            leader_id=self._leader,
            is_leader=False,
            has_quorum=self._leader is not None,
            commit_index=max(self._leader_version, applied),
            last_applied=applied,
            log_first_index=0,
            log_last_index=applied,
            voters=tuple(
                VoterStatus(node_id, address, None, None)
                for node_id, address in sorted(self.voters.items())
            ),
            view_age_s=0.0,
            rejected_unpickles=0,
            oversized_frames=0,
            applied_index_regressions=0,
            applied_entries_truncated=0,
            snapshot_restores=self.snapshots_taken,
            snapshots_written=0,
            snapshot_write_failures=0,
            connections_closed_by_keeper=0,
            submit_timeouts=0,
            late_results=0,
            tick_errors=0,
            prevotes_lost=0,
            fatal_error=None,
        )

    def submit_async(
        self,
        command: bytes,
        timeout_s: float,
        callback: Callable[[bytes | None, QuorumError | None], None],
    ) -> None:
        callback(
            None,
            NotLeaderError(self._leader, f"broker {self.node_id} is an observer, not a voter"),
        )

    def close(self, timeout_s: float = 5.0) -> None:
        self._closed = True
        self._applier.shutdown(wait=True)

    # ---- following -----------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Fetch and apply until ``stopping`` is set (one fetch in flight)."""
        loop = asyncio.get_running_loop()
        while not stopping.is_set() and not self._closed:
            voter = self.route.target()
            stub = self.stub_of(voter)
            try:
                if stub is None:
                    raise ConnectionError(f"voter {voter} has no address")
                response = await stub.FetchMetadata(
                    controller_pb2.FetchMetadataRequest(
                        broker_id=self.node_id,
                        version=self.store.version,
                        max_wait_ms=FETCH_WAIT_MS,
                    ),
                    timeout=FETCH_WAIT_MS / 1000 + 5,
                )
                if response.error.code:
                    raise ConnectionError(response.error.message)
            except (grpc.aio.AioRpcError, ConnectionError) as exc:
                logger.debug("metadata fetch from voter %s: %s", voter, exc)
                self.route.failed(voter)
                self._leader = self.route.leader
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RETRY_S)
                continue
            self.fetches += 1
            self.route.answered(voter, response.leader_id)
            self._leader = self.route.leader
            if response.commands or response.snapshot:
                await loop.run_in_executor(self._applier, self.apply_answer, response)
            self._leader_version = response.version

    def apply_answer(self, response: controller_pb2.FetchMetadataResponse) -> int:
        """Apply one answer (on the applier thread); the number of commands applied."""
        store = self.store
        if response.snapshot:
            started = time.monotonic()
            if not store.restore_if_newer(response.snapshot):
                return 0
            self.snapshots_taken += 1
            logger.info(
                "metadata snapshot at version %d taken in %.0f ms",
                store.version,
                (time.monotonic() - started) * 1000,
            )
            return 0
        if response.from_version != store.version:
            return 0  # an answer to an older question (we moved on meanwhile)
        for command in response.commands:
            store.apply(command)
        return len(response.commands)


SNAPSHOT_REUSE_S = 1.0  # observers starting together share one snapshot


class MetadataFeed:
    """The answering side of ``FetchMetadata`` (on the broker loop of every broker).

    ``changed()`` is called on the loop whenever the store applied something; held fetches wake
    then. A snapshot is taken off the loop (it encodes the whole state under the store's lock)
    and reused for ``SNAPSHOT_REUSE_S``: a newer one is never needed, an observer fetches the
    commands after it next."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._event: asyncio.Event | None = None
        self._snapshot: tuple[float, bytes] | None = None
        self._snapshot_lock: asyncio.Lock | None = None
        self.snapshots_sent = 0

    def changed(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def _wait_beyond(self, version: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.store.version <= version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._event is None:
                self._event = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)

    async def _take_snapshot(self) -> bytes:
        if self._snapshot_lock is None:
            self._snapshot_lock = asyncio.Lock()
        async with self._snapshot_lock:
            cached = self._snapshot
            if cached is not None and time.monotonic() - cached[0] < SNAPSHOT_REUSE_S:
                return cached[1]
            data = await asyncio.get_running_loop().run_in_executor(None, self.store.snapshot)
            self._snapshot = (time.monotonic(), data)
            return data

    async def answer(
        self, version: int, max_wait_ms: int, leader_id: int
    ) -> controller_pb2.FetchMetadataResponse:
        """The commands after ``version`` (waiting up to ``max_wait_ms``, at most
        ``FETCH_WAIT_MS``, for one), or the whole state when they are no longer kept."""
        if version < 0:
            version = 0
        await self._wait_beyond(version, min(max(max_wait_ms, 0), FETCH_WAIT_MS) / 1000)
        found = self.store.commands_after(version, ANSWER_BYTES_MAX)
        if found is None:
            data = await self._take_snapshot()
            self.snapshots_sent += 1
            return controller_pb2.FetchMetadataResponse(
                leader_id=leader_id, version=self.store.version, snapshot=data
            )
        current, commands = found
        return controller_pb2.FetchMetadataResponse(
            leader_id=leader_id, version=current, from_version=version, commands=commands
        )
