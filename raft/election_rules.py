"""The quorum's election rules on top of pysyncobj: pre-vote (hazard 14) and leader lease (9).

Pure: terms, log positions, votes and echoes in; decisions out. Times are pysyncobj's monotonic
clock in seconds (the unit of :class:`~raftlog.raft.quorum_types.QuorumConfig`'s timers and of
the ping echoes on the wire), passed in as ``now_s``; nothing here reads a clock, a socket or a
thread. :class:`~raftlog.raft.quorum.RaftQuorum` runs them on the Raft thread and carries out
what they decide (sending the requests, letting pysyncobj stand, answering ``is_leader()``).
The hazards are described in :mod:`raftlog.raft.pysyncobj_guards`.

**Pre-vote** (Raft thesis 9.6). When a node's election timer fires it does not raise its term:
it asks its peers "would you vote for me in term T+1?" (:func:`prevote_step` says when to ask and
when a majority has said yes). A peer says yes (:func:`prevote_granted`) only if it is not
recovering a damaged journal, T+1 is above its term, it is not the leader, it has heard no
leader for ``election_timeout_min_s``, and the asker's log is at least as up to date as its own.
Example, 3 voters, terms at 4: a node cut off from the others asks for term 5 every timeout,
hears no yes, and stays at term 4, so on healing it deposes nobody. One exception: a leader's
TimeoutNow (it hands leadership to a caught-up voter, as ``remove-voter`` of the leader does)
makes its target stand without a pre-vote, as etcd's ``campaignTransfer`` does: every peer has
just heard that leader, so each would say no, and the transfer could never happen.

**Leader lease.** The leader pings every voter each ``append_entries_period_s``; a peer echoes
the ping's send time with its own term (:func:`record_lease_ack` keeps, per peer, the latest
send time echoed in the leader's current term). :func:`majority_acked_at` is the newest send
time a majority (self included) has echoed, and :func:`lease_holds` says the node may act as
leader while that time and the Raft thread's last published view are both within
``leader_lease_s`` of now. Example, 3 voters, lease 0.25 s: echoes of pings sent at 10.00 (peer
A) and 9.75 (peer B) make the majority time 10.00 (self + A); at 10.25 the lease holds, at
10.26 it has expired. Send times, not receive times: a reply buffered while the leader was
paused must not look fresh.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

__all__ = [
    "LeaseAcks",
    "LogPosition",
    "PrevoteAction",
    "PrevoteRound",
    "PrevoteStep",
    "has_majority",
    "lease_holds",
    "majority_acked_at",
    "prevote_granted",
    "prevote_step",
    "record_lease_ack",
    "record_prevote_reply",
]


def has_majority(votes: int, voters: int) -> bool:
    """More than half of ``voters`` (self included in both counts)."""
    return votes > voters / 2


# ---- pre-vote (hazard 14) ---------------------------------------------------------------------


class LogPosition(NamedTuple):
    """The last entry of a log; logs compare by term, then index (Raft's "up to date")."""

    term: int
    log_index: int  # not "index": a tuple has an index() method


def prevote_granted(
    *,
    term: int,
    candidate_last: LogPosition,
    current_term: int,
    own_last: LogPosition,
    is_leader: bool,
    recovering: bool,
    now_s: float,
    leader_heard_at_s: float,
    election_timeout_min_s: float,
) -> bool:
    """Would this node vote for a candidate asking for ``term`` whose log ends at
    ``candidate_last``? ``leader_heard_at_s``: when a leader's append_entries (of our term or
    newer) last arrived. A node that heard from a leader within ``election_timeout_min_s``
    says no: the leader is alive, the asker is the one cut off."""
    return (
        not recovering
        and term > current_term
        and not is_leader
        and now_s - leader_heard_at_s >= election_timeout_min_s
        and candidate_last >= own_last
    )


@dataclass(frozen=True, slots=True)
class PrevoteRound:
    """A would-be candidate's pre-vote round: the term it asks for, when, who said yes."""

    term: int = -1  # -1: no round (none yet, or the last one won and was spent)
    started_at_s: float = -math.inf
    grants: frozenset[str] = frozenset()  # peers (by address) that said yes


class PrevoteAction(enum.Enum):
    STAND = "stand"  # a majority said yes: pysyncobj may hold its election now
    ASK = "ask"  # send a pre-vote request for the round's term to every connected peer
    WAIT = "wait"  # the round is still running: do not stand yet
    STAY_OUT = "stay_out"  # may not stand: recovering a damaged journal, or nobody connected


@dataclass(frozen=True, slots=True)
class PrevoteStep:
    action: PrevoteAction
    round: PrevoteRound  # the round to keep from now on
    lost: bool = False  # the previous round for this term timed out without a majority


def prevote_step(
    round: PrevoteRound,
    *,
    peers: int,
    connected: bool,
    recovering: bool,
    current_term: int,
    now_s: float,
    round_s: float,
    transfer_requested: bool = False,
) -> PrevoteStep:
    """The election timer fired (pysyncobj asks every tick while it stays expired): stand now?

    ``peers``: the other voters; ``connected``: to any of them. A single voter stands at once.
    ``transfer_requested``: the timer fired because the current leader sent us TimeoutNow (it
    is handing leadership over): stand at once, no pre-vote (a recovering journal still stays
    out). Otherwise a round for ``current_term + 1`` runs for ``round_s``; yeses from a
    majority (self included) within it mean STAND, and the round is spent (the next election
    needs a round of its own). A round that ran out without them is lost, and a new one starts
    (ASK).
    """
    if peers == 0:
        return PrevoteStep(PrevoteAction.STAND, round)
    if recovering or not connected:
        return PrevoteStep(PrevoteAction.STAY_OUT, round)
    if transfer_requested:
        return PrevoteStep(PrevoteAction.STAND, replace(round, term=-1))
    term = current_term + 1
    running = round.term == term and now_s - round.started_at_s < round_s
    if running and has_majority(1 + len(round.grants), peers + 1):
        return PrevoteStep(PrevoteAction.STAND, replace(round, term=-1))
    if running:
        return PrevoteStep(PrevoteAction.WAIT, round)
    return PrevoteStep(PrevoteAction.ASK, PrevoteRound(term, now_s), lost=round.term == term)


def record_prevote_reply(
    round: PrevoteRound, *, peer: str, term: object, granted: object
) -> PrevoteRound:
    """A peer's answer: a yes counts only for the round's own term."""
    if granted is True and term == round.term:
        return replace(round, grants=round.grants | {peer})
    return round


# ---- leader lease (hazard 9) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseAcks:
    """Per peer (by address), the latest send time of our ping it echoed in term ``term``."""

    term: int = -1
    sent_at_s: Mapping[str, float] = field(default_factory=dict)


def record_lease_ack(
    acks: LeaseAcks,
    *,
    peer: str,
    echo: object,
    echo_term: object,
    current_term: int,
    is_leader: bool,
) -> LeaseAcks:
    """A pong: ``peer`` echoed the send time ``echo`` of one of our pings, in its term
    ``echo_term``. It proves the peer followed our term at some instant after we sent the
    ping; it counts only while we lead that term. A new term starts the acks afresh; an older
    echo never replaces a newer one."""
    if not is_leader or echo_term != current_term or not isinstance(echo, float):
        return acks
    sent_at_s = acks.sent_at_s if acks.term == current_term else {}
    newest = max(sent_at_s.get(peer, -math.inf), echo)
    return LeaseAcks(current_term, {**sent_at_s, peer: newest})


def majority_acked_at(acks: LeaseAcks, *, term: int, peers: Sequence[str], now_s: float) -> float:
    """The newest send time that a majority (self included) echoed in ``term``; ``now_s`` for
    a single voter, ``-inf`` while no majority has echoed anything."""
    sent_at_s: Mapping[str, float] = acks.sent_at_s if acks.term == term else {}
    times = sorted((sent_at_s.get(peer, -math.inf) for peer in peers), reverse=True)
    needed = (len(peers) + 1) // 2  # echoes from others for a majority with self
    return now_s if needed == 0 else times[needed - 1]


def lease_holds(
    *,
    is_leader: bool,
    now_s: float,
    view_at_s: float,
    majority_acked_at_s: float,
    lease_s: float,
) -> bool:
    """May a Raft leader act as leader now? Only while a majority echoed a ping sent within
    ``lease_s`` and the Raft thread published that (its view at ``view_at_s``) within
    ``lease_s`` too: a stalled Raft thread loses the lease as well."""
    return is_leader and now_s - view_at_s <= lease_s and now_s - majority_acked_at_s <= lease_s
