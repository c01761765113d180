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

Everything here runs on the broker loop; :class:`QuorumMember` delegates each call to whichever
member is current (a plain attribute swap, read by other threads as one reference).
"""

from __future__ import annotations

from collections.abc import Callable

from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import MetadataQuorum, QuorumError, QuorumStatus

from .metadata_observer import MetadataObserver

__all__ = ["QuorumMember"]


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
