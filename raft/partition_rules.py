"""How a partition's leader, ISR and eligible replicas move: rules 2, 3 and 7 of the metadata
state machine (:mod:`raftlog.raft.metadata`), as pure functions.

Who is live, the topic's ``min.insync.replicas`` and whether it allows an unclean election come
in as arguments; nothing here reads the state. The state machine calls these for every leader or
ISR change and stores what they return.

Example: replicas (1, 2, 3), ISR (1, 2, 3), min ISR 2. When the ISR shrinks to (2,), brokers 1
and 3 left it while it was below min ISR, so the high watermark cannot have passed a record they
lack: they stay eligible (ELR (1, 3)) and :func:`choose_leader` takes one of them if broker 2
dies. When the ISR is back at (2, 3), the ELR is cleared (the HW moves on without broker 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .metadata_records import NO_LEADER, PartitionRecord

__all__ = ["choose_leader", "eligibility", "with_roles"]


def eligibility(
    record: PartitionRecord, isr: tuple[int, ...], *, min_isr: int, unsafe: int = NO_LEADER
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ELR, last known ELR) after ``record``'s ISR becomes ``isr``. Safe replicas (ISR or ELR
    members before) that leave the ISR while it is below ``min_isr`` stay eligible; ``unsafe``
    may have lost data and does not (rule 7). With no safe replica left, the last known safe
    ones are remembered."""
    safe_before = set(record.isr) | set(record.elr)
    if len(isr) >= min_isr:
        elr: tuple[int, ...] = ()
    else:
        elr = tuple(b for b in record.replicas if b in safe_before and b not in isr and b != unsafe)
    if isr or elr:
        return elr, ()
    remembered = safe_before | set(record.last_known_elr)
    return (), tuple(b for b in record.replicas if b in remembered)


def choose_leader(
    record: PartitionRecord,
    isr: tuple[int, ...],
    elr: tuple[int, ...],
    last_known: tuple[int, ...],
    *,
    live: Callable[[int], bool],
    unclean: Callable[[], bool],
) -> tuple[int, tuple[int, ...]]:
    """(leader, its ISR): the first live ISR member in replica order, else the first live ELR
    member (leading alone); unclean (``unclean()``, asked only then: the topic allows it): a
    live last known safe replica, else the first live replica (rule 7). NO_LEADER when none."""
    for b in record.replicas:
        if b in isr and live(b):
            return b, isr
    for b in record.replicas:
        if b in elr and live(b):
            return b, (b,)
    if unclean():
        for b in (*last_known, *record.replicas):
            if live(b):
                return b, (b,)
    return NO_LEADER, isr


def with_roles(
    record: PartitionRecord,
    leader: int,
    isr: tuple[int, ...],
    elr: tuple[int, ...],
    last_known: tuple[int, ...],
) -> PartitionRecord:
    """``record`` with these roles: itself when nothing changes, else with the partition epoch
    bumped, and the leader epoch too when the leader changes (rule 2)."""
    if (leader, isr, elr, last_known) == (
        record.leader,
        record.isr,
        record.elr,
        record.last_known_elr,
    ):
        return record
    return replace(
        record,
        leader=leader,
        isr=isr,
        elr=elr,
        last_known_elr=last_known,
        leader_epoch=record.leader_epoch + (leader != record.leader),
        partition_epoch=record.partition_epoch + 1,
    )
