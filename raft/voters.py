"""The metadata quorum's voter set: what the replicated metadata says about it, and the rules of
changing it one voter at a time. Pure: no IO, no pysyncobj.

Who votes is decided by the Raft log itself (pysyncobj's membership entries: a node uses the
latest membership in its log, committed or not). The metadata keeps a copy with what Raft does
not know — each voter's broker id and gRPC address — so every broker, voter or observer, learns
by applying metadata where the voters are (its controller link, an observer's fetches, the status
view), and a broker learns that *it* must vote. The copy is written by the very entry that
changes the membership (``SetVoters`` rides inside pysyncobj's membership entry, see
:mod:`raftlog.raft.raft_node`), so the two cannot disagree once that entry is applied.

``voters`` empty in the metadata means "never changed": the ``[[voters]]`` of the brokers'
configs (the bootstrap set) is the current set. ``joining``: a broker named by ``add-voter``
that is starting its Raft member before the membership entry that adds it is appended; it is
cleared by the ``SetVoters`` that follows (or replaced by the next ``PrepareVoter``).

Rules (:func:`check_add`, :func:`check_remove`; the controller checks them before it starts a
change, with the quorum's live view):

1. One change at a time: a change is refused while the log holds one not yet committed; and a
   new leader appends none before it has applied the no-op of its own term (pysyncobj's rule,
   and Raft's fix for single-server changes: before that, the leader cannot know whether an
   older leader's change in its log is committed). The first refusal is the operator's to wait
   out; the second lasts a round trip or two after every election, so the controller waits and
   asks again (:func:`membership_refusal` tells them apart, :class:`MembershipRefusal`).
2. Ids and Raft addresses are unique among the voters; an added voter is a registered broker.
3. The leader does not remove itself (pysyncobj cannot: leadership is moved first).
4. A removal must leave a majority of the *new* set that answers the leader now, or the removal
   itself could never commit and the quorum would stall.

Worked example: voters {1, 2, 3}, voter 3 dead. ``add 4`` gives {1, 2, 3, 4}: its majority is 3,
so 1, 2 and 4 must all answer (4 is started first: ``joining``). ``remove 3`` gives {1, 2, 4}
(majority 2). A later ``remove 2`` while 4 is down is refused: {1, 4} needs both.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import assert_never

__all__ = [
    "MembershipRefusal",
    "VoterRecord",
    "check_add",
    "check_remove",
    "majority",
    "membership_refusal",
    "refusal_message",
    "voters_after_add",
    "voters_after_remove",
]


@dataclass(frozen=True, slots=True, order=True)
class VoterRecord:
    node_id: int
    raft_address: str  # host:port, the voter's identity in pysyncobj
    grpc_address: str  # host:port of its broker's gRPC listener (Controller service)

    def as_row(self) -> tuple[int, str, str]:
        return (self.node_id, self.raft_address, self.grpc_address)


def majority(count: int) -> int:
    """Votes needed among ``count`` voters."""
    return count // 2 + 1


def voters_after_add(voters: Sequence[VoterRecord], new: VoterRecord) -> tuple[VoterRecord, ...]:
    return tuple(sorted((*voters, new)))


def voters_after_remove(voters: Sequence[VoterRecord], node_id: int) -> tuple[VoterRecord, ...]:
    return tuple(v for v in sorted(voters) if v.node_id != node_id)


def check_add(voters: Sequence[VoterRecord], new: VoterRecord) -> str | None:
    """Why ``new`` cannot join ``voters`` (None: it can, by rule 2)."""
    if new.node_id < 0:
        return "voter ids are >= 0"
    for v in voters:
        if v.node_id == new.node_id:
            return f"broker {new.node_id} is already a voter (Raft address {v.raft_address})"
        if v.raft_address == new.raft_address:
            return f"Raft address {new.raft_address} is voter {v.node_id}'s"
    return None


def check_remove(
    voters: Sequence[VoterRecord],
    node_id: int,
    *,
    leader_id: int,
    answering: Collection[int],
) -> str | None:
    """Why ``node_id`` cannot leave ``voters`` now (None: it can). ``answering``: the voters
    that answer the leader now (the leader included)."""
    if all(v.node_id != node_id for v in voters):
        return f"broker {node_id} is not a voter (voters: {sorted(v.node_id for v in voters)})"
    if node_id == leader_id:
        return (
            f"voter {node_id} is the active controller (the Raft leader), which cannot remove "
            "itself: leadership moves to another voter first; retry"
        )
    after = voters_after_remove(voters, node_id)
    if not after:
        return "the last voter cannot be removed"
    reached = sorted(v.node_id for v in after if v.node_id in answering)
    if len(reached) < majority(len(after)):
        return (
            f"without {node_id} the voters {[v.node_id for v in after]} need "
            f"{majority(len(after))} to commit, but only {reached} answer the leader now"
        )
    return None


class MembershipRefusal(enum.Enum):
    """Why the Raft leader did not append a membership entry (rule 1, or pysyncobj's own)."""

    LEADER_NOT_READY = "leader_not_ready"  # its term's no-op is not applied yet: retry soon
    CHANGE_PENDING = "change_pending"  # a membership entry above the commit index
    NOTHING_TO_CHANGE = "nothing_to_change"  # already (not) a member, or the leader itself


def membership_refusal(
    *, applied_index: int, noop_index: int | None, pending_change_index: int | None
) -> MembershipRefusal | None:
    """Rule 1 as the leader checks it before appending a membership entry. ``noop_index``: the
    log index of the no-op this leader appended on election (None: not a leader yet);
    ``pending_change_index``: the last membership entry above the commit index, if any.

    The leader's own term comes first: until its no-op is applied, a membership entry above its
    commit index may well be an older leader's committed change (the new leader learns that it
    is only by committing an entry of its own term), so calling it pending would be untrue.
    """
    if noop_index is None or applied_index < noop_index:
        return MembershipRefusal.LEADER_NOT_READY
    if pending_change_index is not None:
        return MembershipRefusal.CHANGE_PENDING
    return None


def refusal_message(
    refusal: MembershipRefusal,
    *,
    add: bool,
    address: str,
    term: int,
    pending_change_index: int | None,
) -> str:
    verb = "add" if add else "remove"
    match refusal:
        case MembershipRefusal.LEADER_NOT_READY:
            return (
                f"the Raft leader elected in term {term} has not applied its first entry yet, "
                f"so it cannot {verb} {address} now; retry"
            )
        case MembershipRefusal.CHANGE_PENDING:
            return (
                f"the Raft leader refused to {verb} {address}: the membership change at log "
                f"index {pending_change_index} is not committed yet (one change at a time); "
                "retry once `raftlog quorum describe` shows it"
            )
        case MembershipRefusal.NOTHING_TO_CHANGE:
            return (
                f"the Raft leader refused to {verb} {address}: it is "
                f"{'already' if add else 'not'} a member, or it is the leader itself"
            )
        case _:
            assert_never(refusal)
