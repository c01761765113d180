"""Bugs planted in the real code, to prove the simulator finds what it is for.

Each plant is a context manager that patches one rule of the product and restores it on exit:

- ``hw-committed-isr`` — the leader's high watermark over the *committed* ISR instead of the
  maximal one (``cluster/replication.py``, ``LeaderReplication.maximal_isr``): a follower whose
  addition is in flight is left out, so the HW may pass records it lacks; once the addition
  commits it is an ISR member that can be elected without them.
- ``truncate-to-hw`` — a follower told its log diverges truncates to its own high watermark
  instead of the divergence point ``replication.follower_decision`` gives (KIP-101's bug, DESIGN
  invariant 4), in the fetcher shell (``follower.truncation_offset``: ``cluster/fetcher.py``'s
  ``_handle`` has the same one line).
- ``leader-outside-isr`` — leader election takes the first live replica in replica order, in
  the ISR or not (``raft/metadata.py``, ``MetadataState._choose_leader``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from raftlog.cluster.partition import Partition
from raftlog.cluster.replication import FollowerDecision, LeaderReplication
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord

from . import follower

__all__ = ["PLANTS", "planted"]


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _hw_over_committed_isr() -> contextlib.AbstractContextManager[None]:
    return _patched(LeaderReplication, "maximal_isr", property(lambda self: self.isr))


def _truncate_to_own_hw() -> contextlib.AbstractContextManager[None]:
    def cut(
        partition: Partition, decision: FollowerDecision, diverging: tuple[int, int] | None
    ) -> int:
        return partition.high_watermark if diverging is not None else decision.offset

    return _patched(follower, "truncation_offset", cut)


def _leader_outside_isr() -> contextlib.AbstractContextManager[None]:
    def choose(
        self: MetadataState,
        record: PartitionRecord,
        isr: tuple[int, ...],
        elr: tuple[int, ...],
        last_known: tuple[int, ...],
        exclude: int = NO_LEADER,
    ) -> tuple[int, tuple[int, ...]]:
        for b in record.replicas:
            if b != exclude and self.is_live(b):  # the bug: no "b in isr"
                return b, tuple(r for r in record.replicas if r in isr or r == b)
        return NO_LEADER, isr

    return _patched(MetadataState, "_choose_leader", choose)


PLANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "hw-committed-isr": _hw_over_committed_isr,
    "truncate-to-hw": _truncate_to_own_hw,
    "leader-outside-isr": _leader_outside_isr,
}


def planted(name: str | None) -> contextlib.AbstractContextManager[None]:
    """The plant called ``name`` (None: nothing planted)."""
    if name is None:
        return contextlib.nullcontext()
    return PLANTS[name]()
