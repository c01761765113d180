"""What the Raft thread publishes every tick, and the status report built from it.

The Raft thread reads pysyncobj's internals once per tick into an immutable :class:`QuorumView`
(:func:`read_view`); every other thread reads that view without locks (at most one tick old),
and :func:`quorum_status` turns it and the counters into the public
:class:`~raftlog.raft.quorum_types.QuorumStatus`. Owned by :class:`~raftlog.raft.quorum.RaftQuorum`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import safe_pickle
from .election_rules import LeaseAcks, majority_acked_at
from .pysyncobj_guards import oversized_frame_count, oversized_inflation_count
from .quorum_types import QuorumConfig, QuorumCounters, QuorumStatus, Role, VoterStatus

__all__ = ["QuorumView", "empty_view", "quorum_status", "read_view"]

# pysyncobj's numeric states.
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
_ROLES: Final = {_FOLLOWER: Role.FOLLOWER, _CANDIDATE: Role.CANDIDATE, _LEADER: Role.LEADER}


@dataclass(frozen=True, slots=True)
class QuorumView:
    """What the Raft thread publishes every tick (other threads read it without locks)."""

    at: float  # pysyncobj monotonic clock
    role: Role
    term: int
    leader_id: int | None
    commit_index: int
    last_applied: int
    log_first_index: int
    log_last_index: int
    # Leader: a majority (self included) echoed, in our term, a ping we sent at or after this.
    majority_acked_at: float
    connected_quorum: bool
    voters: tuple[VoterStatus, ...]
    journal_durable_index: int
    journal_syncs: int
    recovering: bool = False


def empty_view(now: float) -> QuorumView:
    """The view before the Raft thread published its first one."""
    return QuorumView(now, Role.FOLLOWER, 0, None, 0, 0, 0, 0, -math.inf, False, (), 0, 0)


def read_view(
    node: Any,
    *,
    now: float,
    config: QuorumConfig,
    id_by_address: Mapping[str, int],
    lease: LeaseAcks,
    recovering: bool,
) -> QuorumView:
    """The view of ``node`` (the pysyncobj object) at ``now``; on the Raft thread only."""
    state = node._SyncObj__raftState
    role = _ROLES.get(state, Role.FOLLOWER)
    leader = node._SyncObj__raftLeader
    leader_id = None if leader is None else id_by_address.get(str(leader.id))
    log = journal = node._SyncObj__raftLog
    first_index, last_index = int(log[0][1]), int(log[-1][1])
    others = node._SyncObj__otherNodes
    term = int(node.raftCurrentTerm)
    majority_acked = -math.inf
    voters: list[VoterStatus] = []
    # the current membership (pysyncobj's: the latest membership entry in the log), not the
    # config's bootstrap set
    members = sorted(
        (id_by_address.get(address, -1), address)
        for address in (config.self_address, *(str(peer.id) for peer in others))
    )
    if role is Role.LEADER:
        majority_acked = majority_acked_at(
            lease, term=term, peers=[str(peer.id) for peer in others], now_s=now
        )
        match = node._SyncObj__raftMatchIndex
        answered = {str(p.id): t for p, t in node._SyncObj__lastResponseTime.items()}
        for node_id, address in members:
            if address == config.self_address:
                voters.append(VoterStatus(node_id, address, last_index, 0, 0.0))
                continue
            matched = next((m for p, m in match.items() if p.id == address), None)
            lag = None if matched is None else last_index - int(matched)
            at = answered.get(address)
            voters.append(
                VoterStatus(node_id, address, matched, lag, None if at is None else now - at)
            )
    else:
        voters = [VoterStatus(node_id, address, None, None) for node_id, address in members]
    return QuorumView(
        at=now,
        role=role,
        term=term,
        leader_id=leader_id,
        commit_index=int(node.raftCommitIndex),
        last_applied=int(node.raftLastApplied),
        log_first_index=first_index,
        log_last_index=last_index,
        majority_acked_at=majority_acked,
        connected_quorum=bool(node.hasQuorum) and leader_id is not None,
        voters=tuple(voters),
        journal_durable_index=journal.durable_last_index,
        journal_syncs=journal.syncs,
        recovering=recovering,
    )


def quorum_status(
    view: QuorumView,
    *,
    now: float,
    node_id: int,
    is_leader: bool,
    counters: QuorumCounters,
    fatal_error: str | None,
    journal_bytes_cut: int,
) -> QuorumStatus:
    """The public status: ``view`` (as of ``now``), ``is_leader`` (the lease-gated answer),
    this quorum's counters, and the process-wide counts of the guards."""
    has_quorum = is_leader if view.role is Role.LEADER else view.connected_quorum
    return QuorumStatus(
        node_id=node_id,
        role=view.role,
        term=view.term,
        leader_id=view.leader_id,
        is_leader=is_leader,
        has_quorum=has_quorum,
        commit_index=view.commit_index,
        last_applied=view.last_applied,
        log_first_index=view.log_first_index,
        log_last_index=view.log_last_index,
        voters=view.voters,
        view_age_s=now - view.at,
        rejected_unpickles=safe_pickle.rejected_count(),
        oversized_frames=oversized_frame_count(),
        applied_index_regressions=counters.applied_index_regressions,
        applied_entries_truncated=counters.applied_entries_truncated,
        snapshot_restores=counters.snapshot_restores,
        snapshots_written=counters.snapshots_written,
        snapshot_write_failures=counters.snapshot_write_failures,
        connections_closed_by_keeper=counters.connections_closed_by_keeper,
        submit_timeouts=counters.submit_timeouts,
        late_results=counters.late_results,
        tick_errors=counters.tick_errors,
        prevotes_lost=counters.prevotes_lost,
        fatal_error=fatal_error,
        journal_durable_index=view.journal_durable_index,
        journal_syncs=view.journal_syncs,
        acks_dropped=counters.acks_dropped,
        leader_applied_before_durable=counters.leader_applied_before_durable,
        journal_bytes_cut=journal_bytes_cut,
        journal_recovering=view.recovering,
        votes_withheld=counters.votes_withheld,
        oversized_inflations=oversized_inflation_count(),
        handshake_timeouts=counters.handshake_timeouts,
        handshakes_evicted=counters.handshakes_evicted,
        handshakes_refused=counters.handshakes_refused,
        ticks=counters.ticks,
        tick_gap_ms_max=counters.tick_gap_s_max * 1000,
        snapshots_discarded=counters.snapshots_discarded,
    )
