"""What this node may acknowledge and when it may vote again: hazards 7 and 15 on the Raft thread.

Hazard 7 (acknowledge only what is durable, see :mod:`raftlog.raft.pysyncobj_guards`): a
follower's answers to append_entries (``next_node_idx``: "I hold everything below n") are held
until the journal's next ``fdatasync``, which runs once at the start of every tick (group
commit), and only then sent, in order. An answer that claims more than the journal durably
holds, or that was made before the log was cut, is dropped (``acks_dropped``; Raft tolerates a
lost answer, the leader's next heartbeat asks again).

Hazard 15 (a damaged journal is not believed): when start-up cut a journal at damage that may
have lost acknowledged entries (:attr:`raftlog.raft.journal.DurableJournal.damage`), a node
with peers is *recovering*: it stays out of elections until it durably holds, from a leader's
append_entries, the leader's commit index at the leader's term. Example: the leader's last
append_entries said commit index 40 in term 3; once entry 40 of term 3 is fdatasync-ed here,
recovering ends.

Owned by one :class:`~raftlog.raft.quorum.RaftQuorum`; Raft thread only (``recovering`` and
``bytes_cut`` are read elsewhere as plain values).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .journal import DurableJournal
from .quorum_types import QuorumCounters, QuorumStorageError

__all__ = ["JournalGate"]

logger = logging.getLogger(__name__)


class JournalGate:
    """Holds acknowledgements until they are durable; tracks recovery from a damaged journal.

    ``has_peers``: a single voter just cuts its damaged journal and goes on (nobody could give
    entries back). ``set_fatal(reason)`` stops the node; ``fatal_reason()`` says if it has.
    """

    def __init__(
        self,
        *,
        has_peers: bool,
        counters: QuorumCounters,
        set_fatal: Callable[[str], None],
        fatal_reason: Callable[[], str | None],
    ) -> None:
        self._has_peers = has_peers
        self._counters = counters
        self._set_fatal = set_fatal
        self._fatal_reason = fatal_reason
        self.journal: DurableJournal | None = None  # set by the Raft thread's first tick
        self.bytes_cut = 0  # damaged journal tail cut at start-up
        # Hazard 15: set while a damaged journal keeps this node out of elections; the target
        # is the (commit index, term) of the last append_entries from a leader.
        self.recovering = False
        self._recovery_target: tuple[int, int] | None = None
        # Hazard 7: next_node_idx answers waiting for the journal's next fdatasync, each with
        # the journal's cut count when it was made (a cut since makes a success answer stale).
        self._held: list[tuple[Any, dict[str, Any], int]] = []

    def hold(self, journal: Any, peer: Any, message: dict[str, Any]) -> None:
        """Keep a ``next_node_idx`` answer to ``peer`` until :meth:`make_durable`."""
        self._held.append((peer, message, journal.cuts))

    def heard_leader(self, commit_index: object, term: Any) -> None:
        """A leader's append_entries (of our term or newer) arrived, with its commit index."""
        if self.recovering and isinstance(commit_index, int):
            self._recovery_target = (commit_index, int(term))

    def make_durable(self, journal: Any, transport: Any) -> None:
        """Group commit: one fdatasync for everything appended since the last call, then send
        the held append_entries answers it covers, in order. Called at the start of every tick
        (and after a single voter becomes leader)."""
        if self.journal is not journal:
            self._adopt(journal)
        if self._fatal_reason() is not None:
            return
        try:
            journal.sync()
        except OSError as exc:
            # Never retry an fdatasync that failed: Linux may have dropped the dirty pages and
            # a second call would report success for data that is gone (PostgreSQL's fsyncgate).
            self._held.clear()
            self._set_fatal(f"Raft journal write/fdatasync failed: {exc!r}")
            return
        if self.recovering:
            self._check_recovered(journal)
        if not self._held:
            return
        held, self._held = self._held, []
        durable = journal.durable_last_index
        for peer, message, cuts in held:
            # A success claims every entry below next_node_idx. If the log was cut after the
            # claim was made, it may no longer hold: drop it (Raft tolerates a lost answer;
            # the leader's next heartbeat asks again).
            if message["success"] and (
                cuts != journal.cuts or message["next_node_idx"] - 1 > durable
            ):
                self._counters.acks_dropped += 1
                continue
            transport.send(peer, message)

    def _adopt(self, journal: Any) -> None:
        if not isinstance(journal, DurableJournal):
            self._set_fatal(f"pysyncobj's journal is {type(journal).__name__}, not ours")
            raise QuorumStorageError("the durable journal is not installed")
        self.journal = journal
        damage = journal.damage
        if damage is not None:
            self.bytes_cut = damage.bytes_cut
            # Hazard 15: this node may have lost entries it acknowledged. Alone, nobody can
            # give them back; with peers, stay out of elections until a leader has.
            self.recovering = damage.suspect and self._has_peers

    def _check_recovered(self, journal: DurableJournal) -> None:
        """Caught up once we durably hold the leader's commit index with the leader's term:
        a leader commits an entry of its own term only after every earlier committed entry, so
        every entry this node ever acknowledged and that counted is then back."""
        target = self._recovery_target
        if target is None:
            return
        commit_index, term = target
        first_index = journal[0][1]
        if not first_index <= commit_index <= journal.durable_last_index:
            return
        if journal[commit_index - first_index][2] == term:
            self.recovering = False
            logger.warning(
                "Raft journal recovered from the leader up to index %d (term %d): voting again",
                commit_index,
                term,
            )
