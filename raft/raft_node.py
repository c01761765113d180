"""The pysyncobj ``SyncObj`` subclass at the heart of the quorum: a few narrow overrides.

pysyncobj's ``SyncObj`` runs Raft; :class:`RaftNode` changes it only where a hazard of
:mod:`raftlog.raft.pysyncobj_guards` needs it, and calls back into its owner
(:class:`~raftlog.raft.quorum.RaftQuorum`) through :class:`NodeHooks` for every decision:

* hazard 7 (acknowledge only what is durable): every tick starts by making the journal durable
  and sending the held answers; follower answers to append_entries are held until then; a
  single voter syncs its no-op on becoming leader.
* bounded ticks: a tick applies committed entries for at most ``APPLY_SLICE_S`` and leaves
  the rest to the next ticks (which then do not sleep); pysyncobj applied every committed
  entry in one go, and a leader that committed a thousand commands at once sent no heartbeat
  until it had applied them all (0.2-0.5 s at 100k partitions on a busy machine: elections).
* hazard 10 (no forwarding): a follower fails its queued commands with NOT_LEADER instead of
  forwarding them to the leader.
* hazard 14 (pre-vote): where pysyncobj decides whether to stand for election, the pre-vote
  decides.
* membership changes (``raftlog quorum add-voter|remove-voter``, :mod:`raftlog.raft.voters`):
  pysyncobj's membership entry ``[kind, address, address, node_id, command]`` carries, beyond
  its own ``[kind, address, node]``, the voter's broker id and a state-machine command that is
  applied when the entry is (so the metadata's copy of the voter set changes with the
  membership); at most one such entry may be uncommitted (pysyncobj 0.3.17 declares the rule
  but never enforces it); and on start-up every membership entry of the log that is not applied
  yet takes effect at once, as Raft requires (pysyncobj applied them only once committed, so a
  restarted voter briefly used the membership of its dump or its config).

Overrides use pysyncobj 0.3.17's name-mangled internals (``_SyncObj__...``); the version is
pinned and checked by :func:`~raftlog.raft.pysyncobj_guards.install_pysyncobj_guards`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pysyncobj import SyncObj, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as _pso_monotonic
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _COMMAND_TYPE, SyncObjExceptionWrongVer

from . import safe_pickle
from .quorum_types import QuorumCounters
from .voters import MembershipRefusal, membership_refusal

__all__ = ["NodeHooks", "RaftNode"]

_DRAIN_PER_TICK_MAX: Final = 10_000
# A tick applies committed entries for at most this long (at least one entry), then goes on:
# heartbeats go out and messages are read between the slices of a long backlog.
APPLY_SLICE_S: Final = 0.02
_APPLY_READ_MAX: Final = 1000  # entries read from the journal per slice
# while the election timer has fired (a pre-vote round runs, or we may not stand), pysyncobj
# re-asks every tick: tick at this period then, as pysyncobj's own fixed tick did
_EXPIRED_TIMER_TICK_S: Final = 0.01


@dataclass(frozen=True, slots=True)
class NodeHooks:
    """What :class:`RaftNode` calls back into, all on the Raft thread."""

    adopt: Callable[[Any], None]  # called first with the node: the Raft thread may call back
    # (snapshot restore, fatal stop) before SyncObj.__init__ returns
    apply: Callable[[int, bytes], bytes | None]  # (index, command) -> result; None: fatal
    make_durable: Callable[[], None]  # fdatasync the journal, then send the held answers
    hold_ack: Callable[[Any, dict[str, Any]], None]  # (peer, next_node_idx message)
    prevote_won: Callable[[], bool]  # the election timer fired: may we stand now?
    next_timer_s: Callable[[], float]  # when the owner's own tick work is next due (monotonic)
    # a membership entry took effect (appended, applied, replayed or rolled back: reverse):
    # (address, node_id or None)
    membership_changed: Callable[[str, int | None], None]


MEMBERSHIP_ADD: Final = "add"
MEMBERSHIP_REMOVE: Final = "rem"
_MEMBERSHIP_PREFIX: Final = bytes([_COMMAND_TYPE.MEMBERSHIP])


def parse_membership(entry_command: bytes) -> list[Any] | None:
    """The request of a membership log entry (None for another entry, or one we cannot read)."""
    if entry_command[:1] != _MEMBERSHIP_PREFIX:
        return None
    try:
        request = safe_pickle.loads(entry_command[1:])
    except Exception:
        return None
    if not isinstance(request, list) or len(request) < 2:
        return None
    return request


class _TimerPoller:
    """pysyncobj's poller, whose waiting poll (the end of a tick) sleeps for ``sleep_s(period)``
    instead of the fixed period; registering sockets goes straight through."""

    def __init__(self, poller: Any, sleep_s: Callable[[float], float]) -> None:
        self._poller = poller
        self._sleep_s = sleep_s
        self.subscribe = poller.subscribe
        self.unsubscribe = poller.unsubscribe

    def poll(self, timeout: float) -> None:
        self._poller.poll(self._sleep_s(timeout) if timeout else timeout)


class RaftNode(SyncObj):  # type: ignore[misc]
    """The pysyncobj object. Owned by one :class:`~raftlog.raft.quorum.RaftQuorum`; everything
    here runs on the Raft thread except ``raftlog_submit`` (thread-safe queue put).

    No properties here: ``SyncObj.__init__`` calls ``getattr`` on every attribute (``dir``)
    before its own fields exist. ``_raftlog_counters`` is where the guards of
    :mod:`raftlog.raft.pysyncobj_guards` count what they see on this node's connections.
    """

    def __init__(
        self,
        hooks: NodeHooks,
        counters: QuorumCounters,
        self_address: str,
        others: list[str],
        conf: Any,
    ):
        self._raftlog_hooks = hooks
        self._raftlog_counters = counters
        # the last membership change this leader was asked for: (refusal or None, the pending
        # entry's index, term); read by the REQUEST_DENIED callback (Raft thread)
        self.raftlog_last_refusal: tuple[MembershipRefusal | None, int | None, int] = (
            None,
            None,
            0,
        )
        hooks.adopt(self)
        super().__init__(self_address, others, conf)

    @replicated  # type: ignore[untyped-decorator]
    def _raftlog_apply(self, command: bytes) -> bytes | None:
        return self._raftlog_hooks.apply(self.raftLastApplied + 1, command)

    def raftlog_submit(self, command: bytes, callback: Callable[[Any, int], None]) -> None:
        self._raftlog_apply(command, callback=callback)
        wakeup = getattr(self, "_raftlog_wakeup", None)
        if wakeup is not None:  # end the Raft thread's sleep: the command goes out now
            with contextlib.suppress(OSError):  # a full pipe: the thread is being woken already
                wakeup.notify()

    def raftlog_change_membership(
        self,
        kind: str,
        address: str,
        node_id: int,
        command: bytes,
        callback: Callable[[Any, int], None],
    ) -> None:
        """Queue a membership entry (thread-safe, like ``raftlog_submit``); the leader appends
        it (or fails ``callback`` with REQUEST_DENIED) and ``callback`` gets the result of
        applying ``command`` once it is committed."""
        from pysyncobj import pickle as pso_pickle

        request = [kind, address, address, node_id, command]
        self._applyCommand(pso_pickle.dumps(request), callback, _COMMAND_TYPE.MEMBERSHIP)
        wakeup = getattr(self, "_raftlog_wakeup", None)
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup.notify()

    def raftlog_pending_membership_index(self) -> int | None:
        """The last membership entry above the commit index, if any (Raft thread)."""
        log = self._SyncObj__raftLog
        commit_index = int(self._SyncObj__raftCommitIndex)
        first_index = int(log[0][1])
        for position in range(len(log) - 1, max(commit_index - first_index, -1), -1):
            if parse_membership(log[position][0]) is not None:
                return int(log[position][1])
        return None

    def _SyncObj__changeCluster(self, request: Any) -> bool:
        # The leader, about to append a membership entry (raft/voters.py rule 1): its term's
        # no-op applied, and one change at a time (pysyncobj's own check of the latter reads a
        # field it never sets). Why it refuses is kept for the REQUEST_DENIED callback that
        # follows at once on this thread (pysyncobj's callback carries no reason).
        noop_index = self._SyncObj__noopIDx
        pending_index = self.raftlog_pending_membership_index()
        refusal = membership_refusal(
            applied_index=int(self._SyncObj__raftLastApplied),
            noop_index=None if noop_index is None else int(noop_index),
            pending_change_index=pending_index,
        )
        if refusal is None and not SyncObj._SyncObj__changeCluster(self, request):
            refusal = MembershipRefusal.NOTHING_TO_CHANGE
        self.raftlog_last_refusal = (refusal, pending_index, int(self.raftCurrentTerm))
        return refusal is None

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        changed = bool(SyncObj._SyncObj__doChangeCluster(self, request, reverse))
        if changed and isinstance(request, list) and len(request) >= 2:
            node_id = request[3] if len(request) > 3 and isinstance(request[3], int) else None
            self._raftlog_hooks.membership_changed(str(request[1]), node_id)
        return changed

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        result = SyncObj._SyncObj__doApplyCommand(self, command)
        request = parse_membership(command)
        if request is not None and len(request) > 4 and isinstance(request[4], bytes):
            # the state-machine command riding in the entry: applied with it, its result is
            # the entry's result
            return self._raftlog_hooks.apply(self.raftLastApplied + 1, request[4])
        return result

    def _raftlog_replay_membership(self) -> None:
        """Start-up: every membership entry above the applied index takes effect now (Raft's
        rule: a node uses the latest membership in its log, committed or not). Applying it
        later when committed changes nothing more (pysyncobj's change is idempotent)."""
        log = self._SyncObj__raftLog
        applied = int(self.raftLastApplied)
        first_index = int(log[0][1])
        for position in range(max(applied + 1 - first_index, 0), len(log)):
            request = parse_membership(log[position][0])
            if request is not None:
                self._SyncObj__doChangeCluster(request)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Hazard 7: every tick starts with the journal durable (one fdatasync for all that the
        # last tick appended) and only then releases the acknowledgements held meanwhile; the
        # leader's commit rule, which counts its own log, runs after this in the same tick.
        self._raftlog_hooks.make_durable()
        poller: Any = getattr(self, "_poller")  # noqa: B009  (set by SyncObj.__init__, untyped)
        if timeToWait and not isinstance(poller, _TimerPoller):
            # made here, on the Raft thread: the wake-up pipe for submitted commands, and the
            # poll that ends each tick sleeping only until the next timer is due
            # (``_raftlog_sleep_s``) instead of pysyncobj's fixed period. An idle follower
            # wakes for the leader's messages, an idle leader for its heartbeats; whatever
            # arrives is handled in that poll and the next tick starts at once, with
            # make_durable first, so hazard 7's order and the one-tick lag of the published
            # view are as before.
            self._raftlog_wakeup = PipeNotifier(poller)
            self._poller = _TimerPoller(poller, self._raftlog_sleep_s)
        loading = bool(self._SyncObj__needLoadDumpFile)
        super()._onTick(timeToWait)
        if loading and not self._SyncObj__needLoadDumpFile:
            self._raftlog_replay_membership()  # the dump (if any) is loaded: the log is final

    def _SyncObj__applyLogEntries(self) -> bool:
        # pysyncobj's loop, in slices: stop once APPLY_SLICE_S has passed (after at least one
        # entry); the committed rest waits for the next tick, which does not sleep
        # (_raftlog_sleep_s). Returns pysyncobj's "send append_entries now" flag: never, with
        # batching on.
        applied = int(self._SyncObj__raftLastApplied)
        backlog = int(self._SyncObj__raftCommitIndex) - applied
        if backlog <= 0:
            return False
        deadline = float(_pso_monotonic()) + APPLY_SLICE_S
        waiting = self._SyncObj__commandsWaitingCommit
        for entry in self._SyncObj__getEntries(applied + 1, min(backlog, _APPLY_READ_MAX)):
            try:
                term = entry[2]
                subscribers = waiting.pop(entry[1], [])
                result = self._SyncObj__doApplyCommand(entry[0])
                for subscribed_term, callback in subscribers:
                    if subscribed_term == term:
                        callback(result, FAIL_REASON.SUCCESS)
                    else:
                        callback(None, FAIL_REASON.DISCARDED)
                self._SyncObj__raftLastApplied += 1
            except SyncObjExceptionWrongVer:  # as pysyncobj: logged there, the entry skipped
                pass
            if _pso_monotonic() >= deadline:
                break
        return False

    def raftlog_apply_backlog(self) -> int:
        """Committed entries not applied yet (Raft thread)."""
        return int(self._SyncObj__raftCommitIndex) - int(self._SyncObj__raftLastApplied)

    def _raftlog_sleep_s(self, longest_s: float) -> float:
        """How long the Raft thread may sleep: until its next timer (the leader's heartbeat, a
        follower's election deadline, the owner's pings), at most ``longest_s``; not at all
        while committed entries wait to be applied."""
        if self.raftlog_apply_backlog() > 0:
            return 0.0
        now = float(_pso_monotonic())
        due = self._raftlog_hooks.next_timer_s()
        if self._isLeader():
            due = min(due, float(self._SyncObj__newAppendEntriesTime))
        else:
            deadline = float(self._SyncObj__raftElectionDeadline)
            if deadline <= now:
                return min(longest_s, _EXPIRED_TIMER_TICK_S)
            due = min(due, deadline)
        return min(longest_s, max(0.0, due - now))

    def _SyncObj__sendNextNodeIdx(
        self,
        node: Any,
        reset: bool = False,
        nextNodeIdx: int | None = None,
        success: bool = False,
    ) -> None:
        # Hazard 7: a follower's answer to append_entries ("I hold everything below
        # next_node_idx") waits for the fdatasync at the start of the next tick.
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__raftLog[-1][1] + 1
        message = {
            "type": "next_node_idx",
            "next_node_idx": nextNodeIdx,
            "reset": reset,
            "success": success,
        }
        self._raftlog_hooks.hold_ack(node, message)

    def _SyncObj__onBecomeLeader(self) -> None:
        SyncObj._SyncObj__onBecomeLeader(self)
        # A single voter wins inside _onTick's election step, and the commit rule later in
        # that same tick counts its no-op: make it durable first. With peers, the win comes
        # from a vote answer handled in the poll at the end of a tick, and the next tick's
        # make_durable runs before that tick's commit rule; syncing here as well would only
        # hold the new leader's first view (and its first accepted command) behind an
        # fdatasync.
        if not self._SyncObj__otherNodes:
            self._raftlog_hooks.make_durable()

    def _SyncObj__connectedToAnyone(self) -> bool:
        # Overrides SyncObj.__connectedToAnyone (its mangled name). pysyncobj calls it only
        # where a follower's or candidate's election timer has fired, to decide whether to
        # stand: hazard 14 puts the pre-vote there.
        return bool(self._raftlog_hooks.prevote_won())

    def _checkCommandsToApply(self) -> None:
        # Only a leader appends. pysyncobj would forward a follower's commands to the leader,
        # a path whose callbacks were seen never to fire; fail them here instead.
        if self._isLeader():
            last_index = self._SyncObj__getCurrentLogIndex()
            super()._checkCommandsToApply()
            if self._SyncObj__getCurrentLogIndex() != last_index:
                # The new commands go out now: pysyncobj's batching would hold them until the
                # next heartbeat (append_entries_period_s, 15 ms on average), and every
                # metadata change (a leader elected after a broker died) waited for it.
                self._SyncObj__sendAppendEntries()
            return
        queue = self._SyncObj__commandsQueue
        for _ in range(_DRAIN_PER_TICK_MAX):
            try:
                _command, callback = queue.get_nowait()
            except Exception:  # queue.Empty
                return
            self._SyncObj__callErrCallback(FAIL_REASON.NOT_LEADER, callback)
