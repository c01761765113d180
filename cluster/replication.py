"""Replication rules of one partition: the leader's high watermark and ISR, the follower's
truncation. Pure — no IO, no clock: ``now_ms`` comes in — and deterministic.

Owned by the partition it belongs to (``partition.Partition``), on the broker loop; not
thread-safe.

Leader rules (Kafka's ``Partition``):
- Each follower's progress is learned from its fetches: fetching offset ``o`` proves it holds
  everything below ``o``. It is *caught up* at a fetch when ``o`` reaches the leader's log end
  offset (LEO), or reaches the LEO the leader had at the follower's previous fetch (then it was
  caught up at that previous fetch's time) — ``last_caught_up_ms``.
- High watermark (HW) = min LEO over the *maximal* ISR: the committed ISR plus a pending
  addition (an AlterPartition in flight). A pending *removal* still counts until committed, so
  the HW never outruns a replica that may yet be elected. The HW never moves backwards, and it
  does not move at all while the committed ISR is below ``min.insync.replicas`` (KIP-966): so a
  replica that left the ISR then still holds everything below the HW, and the metadata keeps it
  electable (the ELR) — a leader that later loses power cannot take committed records with it.
- A follower whose ``last_caught_up_ms`` is older than ``replica_lag_ms_max`` is proposed for
  removal — and so is one from which no fetch at all has arrived for ``replica_silence_ms_max``
  (cut off or dead, not slow: a live follower always has a fetch parked here or on its way, so
  silence longer than a few fetch waits is no slow disk; Kafka waits out the whole lag window and
  acks=all stalls that long behind one unreachable follower). A follower outside the ISR whose
  LEO reached the HW and the start of the current leader epoch is proposed for addition.
  At most one AlterPartition is in flight.
- acks=all for a batch ending at ``last_offset`` completes when HW > last_offset; it succeeds if
  the ISR then has at least ``min.insync.replicas`` members, else NOT_ENOUGH_REPLICAS_AFTER_APPEND
  (the same check Kafka's DelayedProduce makes).

Follower rule (KIP-101/279, DESIGN invariant 4): truncate to the divergence point the leader
reports for our latest epoch — ``min(leader's end offset for epoch E, our end offset for E)`` —
never to our own HW.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from raftlog.proto.codes import ErrorCode
from raftlog.segments.clock import MonoMs

__all__ = [
    "FollowerAction",
    "FollowerDecision",
    "FollowerProgress",
    "IsrProposal",
    "LeaderReplication",
    "divergence_truncation_offset",
    "diverging_epoch",
    "fetch_epoch_error",
    "follower_decision",
]


@dataclass(slots=True)
class FollowerProgress:
    log_end_offset: int = -1  # -1: not fetched since this leader epoch began
    last_caught_up_ms: int = -1
    last_fetch_ms: int = -1
    leader_end_offset_at_last_fetch: int = -1
    # the broker incarnation that fetched (-1: not told): a new one starts from nothing (KIP-903)
    incarnation: int = -1


@dataclass(frozen=True, slots=True)
class IsrProposal:
    """An AlterPartition to send: the new ISR based on ``partition_epoch``."""

    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int
    # per ISR member, the incarnation whose fetches earned its place (-1: not known): the
    # controller refuses to add a broker that has since restarted as another (KIP-903)
    incarnations: tuple[int, ...] = ()


# The controller checks the leader and partition epochs before anything else, so these refusals
# come only while ours are current: nothing was applied, by this send or an earlier one.
DEFINITE_ALTER_PARTITION_REFUSALS = frozenset(
    {ErrorCode.INELIGIBLE_REPLICA, ErrorCode.INVALID_REQUEST}
)


def alter_partition_outcome(error: ErrorCode | None) -> bool | None:
    """What an AlterPartition answer proves: True committed, False refused and never applied,
    None unknown. A stale-epoch refusal (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION...) may
    answer a resend whose first send committed, and a controller that moved (NOT_CONTROLLER,
    NOT_LEADER_OR_FOLLOWER) never looked: only the metadata can say, as Kafka's
    ``handleAlterPartitionError`` keeps the pending state for those."""
    if error is None or error == ErrorCode.NONE:
        return True
    if error in DEFINITE_ALTER_PARTITION_REFUSALS:
        return False
    return None


@dataclass(slots=True)
class LeaderReplication:
    """The leader's view of one partition in one leader epoch."""

    broker_id: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]  # committed in metadata; broker_id ∈ isr ⊆ replicas
    leader_epoch: int
    partition_epoch: int
    epoch_start_offset: int  # our LEO when this epoch began
    high_watermark: int  # 0 <= high_watermark <= our LEO
    replica_lag_ms_max: int
    min_insync_replicas: int = 1
    # an ISR member with no fetch arriving for this long is cut off or dead: it leaves without
    # waiting out replica_lag_ms_max (None: only the lag rule)
    replica_silence_ms_max: int | None = None  # the HW stands still while len(isr) is below this
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    pending: IsrProposal | None = None  # the AlterPartition in flight
    pending_since_ms: int = -1
    next_proposal_ms: int = 0  # backoff after a refused or lost proposal
    # an AlterPartition with no answer and no metadata change for this long is sent again (a
    # dropped request, a controller that failed over): never forgotten — it may have committed
    proposal_timeout_ms: int = 10_000

    @classmethod
    def start(
        cls,
        broker_id: int,
        replicas: Iterable[int],
        isr: Iterable[int],
        leader_epoch: int,
        partition_epoch: int,
        log_end_offset: int,
        high_watermark: int,
        replica_lag_ms_max: int,
        now_ms: MonoMs,
        min_insync_replicas: int = 1,
        replica_silence_ms_max: int | None = None,
    ) -> LeaderReplication:
        """Become leader. ISR members get one full lag window (and silence window) to show up
        (as in Kafka)."""
        replicas = tuple(replicas)
        isr = tuple(isr)
        followers = {b: _fresh_progress(b in isr, now_ms) for b in replicas if b != broker_id}
        return cls(
            broker_id,
            replicas,
            isr,
            leader_epoch,
            partition_epoch,
            epoch_start_offset=log_end_offset,
            high_watermark=min(high_watermark, log_end_offset),
            replica_lag_ms_max=replica_lag_ms_max,
            min_insync_replicas=min_insync_replicas,
            replica_silence_ms_max=replica_silence_ms_max,
            followers=followers,
        )

    # ---- the ISR -------------------------------------------------------------------------------

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        if self.pending is None:
            return self.isr
        return tuple(b for b in self.replicas if b in self.isr or b in self.pending.isr)

    def update_replicas(self, replicas: Iterable[int], now_ms: MonoMs) -> None:
        """A reassignment changed the replica set within our epoch: a new follower starts with
        no progress (it joins the ISR only by catching up); a removed one is forgotten (it has
        left the ISR in the same metadata change)."""
        replicas = tuple(replicas)
        if replicas == self.replicas:
            return
        followers = {}
        for b in replicas:
            if b != self.broker_id:
                known = self.followers.get(b)
                followers[b] = known if known is not None else _fresh_progress(False, now_ms)
        for b in self.isr:  # until the ISR that drops it is applied (the caller's next step)
            if b in self.followers and b not in followers:
                followers[b] = self.followers[b]
        self.replicas = replicas
        self.followers = followers

    def update_from_metadata(self, isr: Iterable[int], partition_epoch: int) -> None:
        """The committed ISR moved (our AlterPartition, or the controller fenced a member)."""
        if partition_epoch < self.partition_epoch:
            return  # a stale view: never go back
        self.isr = tuple(isr)
        self.partition_epoch = partition_epoch
        if self.pending is not None and partition_epoch > self.pending.partition_epoch:
            self.pending = None

    def proposal_answered(
        self, proposal: IsrProposal, outcome: bool | None, now_ms: MonoMs, backoff_ms: int = 1000
    ) -> None:
        """What the AlterPartition for ``proposal`` came back with (``alter_partition_outcome``).

        True: committed, the metadata will show it. False: refused and never applied: forget it
        and back off (a leader cut off from the controller would otherwise propose every check).
        None: no answer, or one that does not say whether an earlier send committed: keep it
        pending (its additions stay in the maximal ISR, so the HW never counts without a replica
        the controller may already have made an ISR member) and send it again after
        ``backoff_ms``, unless the metadata settles it first. An answer to a proposal that is no
        longer the pending one (the metadata settled it, a newer one is out) changes nothing.
        """
        if self.pending is not proposal:
            return
        if outcome is False:
            self.pending = None
            self.next_proposal_ms = now_ms + backoff_ms
        elif outcome is None:
            self.pending_since_ms = now_ms - self.proposal_timeout_ms + backoff_ms

    def check_isr(
        self,
        log_end_offset: int,
        now_ms: MonoMs,
        eligible: Callable[[int], bool] = lambda broker_id: True,
    ) -> IsrProposal | None:
        """Shrink out lagging followers or add caught-up ones; one proposal at a time.

        ``eligible`` says which brokers the metadata shows registered and unfenced: a fenced
        broker is never proposed back (the controller would refuse it: KIP-841), however recent
        its last fetch was.
        """
        if self.pending is not None and now_ms - self.pending_since_ms > self.proposal_timeout_ms:
            # no answer and no metadata change: send the same proposal again (it stays in the
            # maximal ISR: it may have been committed, and only the metadata can say)
            self.pending_since_ms = now_ms
            return self.pending
        if self.pending is not None or now_ms < self.next_proposal_ms:
            return None
        lagging = {b for b in self.isr if b != self.broker_id and self._out_of_touch(b, now_ms)}
        if lagging:
            return self._propose(tuple(b for b in self.isr if b not in lagging), now_ms)
        joining = {
            b
            for b, progress in self.followers.items()
            if b not in self.isr
            and b in self.replicas
            and eligible(b)
            and progress.log_end_offset >= self.high_watermark
            and progress.log_end_offset >= self.epoch_start_offset
            and not self._out_of_touch(b, now_ms)
        }
        if joining:
            return self._propose(
                tuple(b for b in self.replicas if b in self.isr or b in joining), now_ms
            )
        return None

    def _out_of_touch(self, follower: int, now_ms: int) -> bool:
        progress = self.followers[follower]
        if now_ms - progress.last_caught_up_ms > self.replica_lag_ms_max:
            return True
        silence_max = self.replica_silence_ms_max
        return silence_max is not None and now_ms - progress.last_fetch_ms > silence_max

    def _propose(self, isr: tuple[int, ...], now_ms: int) -> IsrProposal:
        incarnations = tuple(
            self.followers[b].incarnation if b in self.followers else -1 for b in isr
        )
        self.pending = IsrProposal(isr, self.leader_epoch, self.partition_epoch, incarnations)
        self.pending_since_ms = now_ms
        return self.pending

    # ---- offsets -------------------------------------------------------------------------------

    def on_follower_fetch(
        self,
        replica_id: int,
        fetch_offset: int,
        log_end_offset: int,
        now_ms: MonoMs,
        incarnation: int = -1,
    ) -> bool:
        """A follower fetched from ``fetch_offset``; True when the HW moved.

        The caller checked that the follower's log agrees with ours below ``fetch_offset``
        (no diverging epoch); an offset past our log end cannot be agreement and is ignored.
        ``incarnation`` is the fetching process's broker incarnation: a newer one than before
        is a restarted broker (after a power loss it may hold less than its predecessor
        reported), so what the old one showed counts no more (KIP-903); an older one is a
        zombie and is ignored.
        """
        progress = self.followers.get(replica_id)
        if progress is None:
            return False  # not a replica of this partition (the caller answers with an error)
        if incarnation < progress.incarnation:
            return False
        if incarnation > progress.incarnation:
            if progress.incarnation >= 0:  # as at leader start: an ISR member gets one window
                progress = _fresh_progress(replica_id in self.isr, now_ms)
                self.followers[replica_id] = progress
            progress.incarnation = incarnation
        if fetch_offset > log_end_offset:
            return False  # the follower has records we do not: diverged, not progress
        if fetch_offset == log_end_offset:
            progress.last_caught_up_ms = now_ms
        elif (
            progress.leader_end_offset_at_last_fetch >= 0
            and fetch_offset >= progress.leader_end_offset_at_last_fetch
        ):
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now_ms
        progress.leader_end_offset_at_last_fetch = log_end_offset
        return self.update_high_watermark(log_end_offset)

    def update_high_watermark(self, log_end_offset: int) -> bool:
        """Recompute the HW after our LEO or a follower's moved; True when it advanced."""
        if len(self.isr) < self.min_insync_replicas:
            return False  # below min ISR nothing new is committed (see the module rules)
        lowest = log_end_offset
        for b in self.maximal_isr:
            if b != self.broker_id:
                leo = self.followers[b].log_end_offset
                if leo < 0:
                    return False  # an ISR member not heard from this epoch: wait for it
                lowest = min(lowest, leo)
        if lowest > self.high_watermark:
            self.high_watermark = lowest
            return True
        return False

    def acks_all_outcome(self, last_offset: int, min_insync_replicas: int) -> ErrorCode | None:
        """None while waiting; else the code a batch ending there gets (NONE: committed).

        Below min ISR the HW stands still, so a batch not yet committed is answered at once
        (appended, not replicated enough) instead of waiting out its timeout."""
        if len(self.isr) < min_insync_replicas:
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        if self.high_watermark <= last_offset:
            return None
        return ErrorCode.NONE


def _fresh_progress(in_isr: bool, now_ms: int) -> FollowerProgress:
    """A follower not heard from yet: an ISR member is counted as caught up and heard from now,
    so it gets one full window of each kind to show up."""
    if not in_isr:
        return FollowerProgress()
    return FollowerProgress(last_caught_up_ms=now_ms, last_fetch_ms=now_ms)


def divergence_truncation_offset(
    leader_epoch: int,
    leader_end_offset: int,
    local_end_offset_for: tuple[int, int],
    local_log_end_offset: int,
) -> int:
    """Where a follower truncates, given the leader's answer (epoch E, end offset) for our epoch.

    ``local_end_offset_for`` is our own ``end_offset_for_epoch(E)``: the greatest epoch <= E we
    hold and where it ends — the start of our next epoch, which the leader did not write in E. So
    the logs agree below ``min(leader end, our end for E)`` (KIP-279); when we hold no epoch <= E
    at all, nothing we hold is proven and the answer is 0 (the caller clamps to its log start by
    truncating fully). If the leader holds no epoch as old as ours (E = -1) it sends its log start
    offset as ``leader_end_offset``: what we hold from there on diverged.
    """
    if leader_epoch < 0:
        if leader_end_offset < 0:
            return local_log_end_offset
        return min(leader_end_offset, local_log_end_offset)
    local_epoch, local_end = local_end_offset_for
    if local_epoch < 0:
        return 0
    return min(leader_end_offset, local_end, local_log_end_offset)


# ---- the follower's side: what to do with the leader's answer for one partition ---------------


class FollowerAction(Enum):
    APPEND = "append"  # append the records; follower HW = min(leader HW, our LEO)
    TRUNCATE = "truncate"  # cut our log to ``offset`` (divergence, or the leader's end)
    RESTART_AT = "restart_at"  # we are below the leader's log start: start our log afresh there
    BACK_OFF = "back_off"  # a passing condition (leader loading, epoch not known there yet)
    PARK = "park"  # stale metadata on one side: wait for a metadata change (or a slow retry)


@dataclass(frozen=True, slots=True)
class FollowerDecision:
    action: FollowerAction
    offset: int = -1  # TRUNCATE / RESTART_AT: where


def follower_decision(
    code: ErrorCode,
    diverging: tuple[int, int] | None,
    local_end_offset_for: Callable[[int], tuple[int, int]],
    local_log_end_offset: int,
    leader_log_start_offset: int,
    leader_log_end_offset: int,
) -> FollowerDecision:
    """The follower's handling of one partition's fetch answer (the fetcher carries it out).

    ``code`` is the answer's error (NONE for records); ``diverging`` the leader's diverging
    epoch (epoch, end offset) when it sent one (KIP-320); ``local_end_offset_for(e)`` our own
    ``end_offset_for_epoch``. A follower never truncates by its own high watermark (KIP-101):
    only by divergence, or to the leader's log end when we hold more than it does.
    """
    if code == ErrorCode.NONE and diverging is not None:
        cut = divergence_truncation_offset(
            diverging[0], diverging[1], local_end_offset_for(diverging[0]), local_log_end_offset
        )
        return FollowerDecision(FollowerAction.TRUNCATE, cut)
    if code == ErrorCode.NONE:
        return FollowerDecision(FollowerAction.APPEND)
    if code == ErrorCode.OFFSET_OUT_OF_RANGE:
        if local_log_end_offset < leader_log_start_offset:
            return FollowerDecision(FollowerAction.RESTART_AT, leader_log_start_offset)
        if local_log_end_offset > leader_log_end_offset >= 0:
            return FollowerDecision(FollowerAction.TRUNCATE, leader_log_end_offset)
        return FollowerDecision(FollowerAction.BACK_OFF)
    if code in (ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.LEADER_NOT_AVAILABLE):
        return FollowerDecision(FollowerAction.BACK_OFF)
    return FollowerDecision(FollowerAction.PARK)


# ---- the leader's side of a fetch: the epoch check and the divergence check (KIP-320/595) ------


def fetch_epoch_error(current_leader_epoch: int, leader_epoch: int) -> tuple[ErrorCode, str] | None:
    """The fetcher's view of the leader epoch against ours (-1: it does not know; no check)."""
    if current_leader_epoch < 0 or current_leader_epoch == leader_epoch:
        return None
    if current_leader_epoch < leader_epoch:
        return ErrorCode.FENCED_LEADER_EPOCH, f"epoch {current_leader_epoch} < {leader_epoch}"
    return ErrorCode.UNKNOWN_LEADER_EPOCH, f"epoch {current_leader_epoch} > {leader_epoch}"


def diverging_epoch(
    last_fetched_epoch: int,
    fetch_offset: int,
    end_offset_for_epoch: Callable[[int], tuple[int, int]],
    log_start_offset: int,
) -> tuple[int, int] | None:
    """Does the fetcher's log agree with ours below ``fetch_offset``? None when it does (or it
    did not say: epoch -1); else the (epoch, end offset) it must truncate by (KIP-320): our
    greatest epoch <= its last fetched one and where that ends, or (-1, our log start) when we
    hold no epoch that old."""
    if last_fetched_epoch < 0:
        return None
    epoch, end = end_offset_for_epoch(last_fetched_epoch)
    if epoch < 0:
        return (-1, log_start_offset)
    if epoch != last_fetched_epoch or end < fetch_offset:
        return (epoch, end)
    return None
