"""The broker's member of the metadata quorum, which can change role while the broker runs.

A broker is a Raft voter (``RaftQuorum``) or an observer of the voters (``MetadataObserver``).
``raftlog quorum add-voter`` turns an observer into a voter without a restart: the controller
commits ``PrepareVoter`` naming the broker and the Raft address it is to listen on; the broker
applies it (as an observer, like any metadata), stops its observer and starts a Raft member that
names the current voters and itself. Until the leader appends the membership entry that adds it,
every voter refuses its connections (the handshake admits only members) and the pre-vote keeps it
from raising its term, so it cannot disturb the quorum; then it receives the log (or a snapshot)
and its store, ahead of that log, takes only what is newer (``raft.store.CatchingUpMachine``).

The same rule brings a voter that is not in its config's ``[[voters]]`` back after a restart: it
starts as an observer, applies the metadata, finds itself among the voters and starts its Raft
member on its existing journal (which holds its membership). A broker removed from the voters
does the reverse: it closes its Raft member and observes.

A removed voter often never *applies* its removal, though: the leader stops replicating to a
voter the moment it appends the entry that removes it (Raft, and pysyncobj), and every voter
refuses its connections from then on; a voter that was down when it was removed restarts on a
journal (and a config) that still name it. Its Raft member then hears no leader, ever — harmless
to the quorum (the pre-vote keeps it from raising its term; nobody connects to it), but it would
never learn the metadata. So a voter whose member has heard no leader for ``SILENCE_S`` asks
(:class:`MembershipCheck`, at most every ``CHECK_PERIOD_S``) the voters it knows, over gRPC,
who leads and who the voters are; when the leader itself — answering with its lease — names a
voter set without us, our removal was committed (the metadata's copy changes only with the
membership entry, ``raft/voters.py``) and the broker observes from then on
(``Broker._become_observer``, which also leaves ``raft/REMOVED`` behind).

Everything here runs on the broker loop; :class:`QuorumMember` delegates each call to whichever
member is current (a plain attribute swap, read by other threads as one reference).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from raftlog.proto import broker_pb2
from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import MetadataQuorum, QuorumError, QuorumStatus
from raftlog.raft.voters import VoterRecord

from .metadata_observer import MetadataObserver

__all__ = ["CHECK_PERIOD_S", "SILENCE_S", "MembershipCheck", "QuorumMember", "removal_seen"]

logger = logging.getLogger(__name__)

# A voter's Raft member that has heard no leader this long asks whether it is still a voter
# (a restart reconnects within ~1 s; an election takes < 1 s).
SILENCE_S: Final = 3.0
CHECK_PERIOD_S: Final = 1.0  # ... and asks again at most this often while the silence lasts
ASKS_PER_CHECK_MAX: Final = 8  # brokers asked in one check (the voters, then a named leader)

Describe = Callable[[str], Awaitable[broker_pb2.DescribeQuorumResponse]]


def removal_seen(node_id: int, answer: broker_pb2.DescribeQuorumResponse) -> bool:
    """Does ``answer`` prove that voter ``node_id`` was removed? Only the leader's word counts
    (it answers with its own id only while it holds the lease, and it has every committed
    entry), and only a voter set that changed (an empty ``members`` never is one)."""
    members = {m.node_id for m in answer.members}
    return (
        not answer.HasField("error")
        and answer.leader_id >= 0
        and answer.leader_id == answer.responder_id
        and answer.term > 0
        and bool(members)
        and node_id not in members
    )


class MembershipCheck:
    """Is this broker's silent Raft member still a voter? Owned by the broker loop (one check
    at a time, ``checking``); ``describe(grpc_address)`` asks a broker's DescribeQuorum."""

    def __init__(self, node_id: int, describe: Describe, clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.describe = describe
        self.clock = clock
        self.silent_since: float | None = None  # our member last had a leader just before this
        self.next_check_at = 0.0
        self.checking = False

    def due(self, status: QuorumStatus | None) -> bool:
        """Called periodically with our Raft member's status (None: no member, or a join
        under way): time to ask?"""
        now = self.clock()
        if status is None or status.is_leader or status.has_quorum:
            self.silent_since = None
            return False
        if self.silent_since is None:
            self.silent_since = now
        if self.checking or now - self.silent_since < SILENCE_S or now < self.next_check_at:
            return False
        self.checking = True  # until removed() ends
        self.next_check_at = now + CHECK_PERIOD_S
        return True

    async def removed(self, voters: Sequence[VoterRecord]) -> bool:
        """Ask the voters we know (then the leader one of them names) whether we were removed
        (after ``due`` said so)."""
        try:
            addresses = [v.grpc_address for v in voters if v.node_id != self.node_id]
            asked: set[str] = set()
            while addresses and len(asked) < ASKS_PER_CHECK_MAX:
                address = addresses.pop(0)
                if address in asked:
                    continue
                asked.add(address)
                try:
                    answer = await self.describe(address)
                except Exception as exc:  # down, cut off, or refusing: ask the next one
                    logger.debug("membership check: %s did not answer: %s", address, exc)
                    continue
                if removal_seen(self.node_id, answer):
                    logger.warning(
                        "broker %s: the Raft leader (broker %s) names the voters %s: this "
                        "broker was removed from the metadata quorum",
                        self.node_id,
                        answer.leader_id,
                        sorted(m.node_id for m in answer.members),
                    )
                    return True
                leader = next((m for m in answer.members if m.node_id == answer.leader_id), None)
                if leader is not None and leader.node_id != answer.responder_id:
                    addresses.insert(0, leader.grpc_address)  # ask the leader it names next
            return False
        finally:
            self.checking = False


class QuorumMember:
    """``MetadataQuorum`` over the current member: a voter's ``RaftQuorum`` or an observer."""

    def __init__(self, current: MetadataQuorum) -> None:
        self.current = current

    @property
    def raft(self) -> RaftQuorum | None:
        current = self.current
        return current if isinstance(current, RaftQuorum) else None

    @property
    def observer(self) -> MetadataObserver | None:
        current = self.current
        return current if isinstance(current, MetadataObserver) else None

    def is_leader(self) -> bool:
        return self.current.is_leader()

    def leader_id(self) -> int | None:
        return self.current.leader_id()

    def status(self) -> QuorumStatus:
        return self.current.status()

    def submit_async(
        self,
        command: bytes,
        timeout_s: float,
        callback: Callable[[bytes | None, QuorumError | None], None],
    ) -> None:
        self.current.submit_async(command, timeout_s, callback)

    def close(self, timeout_s: float = 5.0) -> None:
        self.current.close(timeout_s)
