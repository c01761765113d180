"""The metadata quorum's shell: one pysyncobj Raft group that replicates opaque command bytes.

:class:`RaftQuorum` is generic: it replicates ``bytes`` commands into a
:class:`~raftlog.raft.quorum_types.StateMachine` it is given and knows nothing about metadata.
It is the thin, boring part around pysyncobj; what it must get right lives beside it:

* :mod:`raftlog.raft.quorum_types` — config, status, errors, limits, the data_dir files;
* :mod:`raftlog.raft.pysyncobj_guards` — pysyncobj's hazards (the numbers in the comments below)
  and the process-wide patches against them;
* :mod:`raftlog.raft.raft_node` — the ``SyncObj`` subclass and its overrides;
* :mod:`raftlog.raft.election_rules` — the pre-vote and leader-lease rules (pure);
* :mod:`raftlog.raft.journal_gate` — acknowledgements held until fdatasync; recovery from a
  damaged journal;
* :mod:`raftlog.raft.pending_commands` — submitted commands, their deadlines and answers;
* :mod:`raftlog.raft.quorum_view` — what the Raft thread publishes every tick, and the status;
* :mod:`raftlog.raft.snapshot_file` — the snapshot file format (pure);
* :mod:`raftlog.raft.snapshot_writer` — the snapshot written off the Raft thread (captured on
  it, published on it, encoded and fsynced on a writer thread).

Importing this module patches pysyncobj (through :mod:`raftlog.raft.pysyncobj_guards`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pysyncobj import SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as _pso_monotonic

from . import safe_pickle
from .election_rules import (
    LeaseAcks,
    LogPosition,
    PrevoteAction,
    PrevoteRound,
    lease_holds,
    prevote_granted,
    prevote_step,
    record_lease_ack,
    record_prevote_reply,
)
from .journal import fsync_dir
from .journal_gate import JournalGate
from .pending_commands import Callback, PendingCommands
from .pysyncobj_guards import (
    close_silent_connections,
    close_stalled_handshakes,
    install_pysyncobj_guards,
    unwatch_raft_threads,
    watch_raft_thread,
)
from .quorum_types import (
    LOCK_FILE_NAME,
    LeaderNotReadyError,
    MembershipChangeRefusedError,
    NotLeaderError,
    QuorumClosedError,
    QuorumConfig,
    QuorumCounters,
    QuorumError,
    QuorumOverloadedError,
    QuorumStatus,
    QuorumStorageError,
    QuorumTimeoutError,
    QuorumUnknownOutcomeError,
    Role,
    SnapshotCapture,
    StateMachine,
    WrongThreadError,
    split_address,
)
from .quorum_view import QuorumView, empty_view, quorum_status, read_view
from .raft_node import MEMBERSHIP_ADD, MEMBERSHIP_REMOVE, NodeHooks, RaftNode
from .snapshot_file import Entry, SnapshotFile, decode_snapshot_file, encode_snapshot_file
from .snapshot_writer import BackgroundSerializer, SnapshotHooks, WriteJob
from .voters import MembershipRefusal, refusal_message

__all__ = ["RaftQuorum"]

logger = logging.getLogger(__name__)
_LEADER_POLL_S = 0.01  # wait_for_leader re-reads the published view this often

# Our own peer messages, handled before pysyncobj sees them (it ignores unknown types anyway):
# {"type": "raftlog_ping", "sent": <sender's monotonic s>, "term": n} is answered with
# {"type": "raftlog_pong", "echo": <sent>, "term": <responder's current term>}.
_PING_TYPE: Final = "raftlog_ping"
_PONG_TYPE: Final = "raftlog_pong"
_PREVOTE_TYPE: Final = "raftlog_prevote"  # hazard 14; pysyncobj ignores unknown types
_PREVOTE_REPLY_TYPE: Final = "raftlog_prevote_reply"
_BIND_RETRY_S: Final = 0.1
_UTILITY_COMMANDS: Final = ("status", "add", "remove", "set_version", "transfer")
GC_FREEZE_PERIOD_S: Final = 1.0  # what lived this long leaves the cyclic collector's scans
GC_THAW_PERIOD_S: Final = 600.0  # ... and comes back once in this long


def _lock_data_dir(path: str) -> int:
    """Take ``path``'s lock file (released by ``os.close`` or by the process dying)."""
    fd = os.open(os.path.join(path, LOCK_FILE_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise QuorumStorageError(f"{path} is in use by another process or quorum") from exc
    return fd


@dataclass(slots=True)
class _TickState:
    """Owned by the Raft thread."""

    started: bool = False
    next_keeper_at: float = 0.0
    next_lease_ping_at: float = 0.0
    next_gc_freeze_at: float = 0.0
    next_gc_thaw_at: float = 0.0
    # Leader lease: per peer, the latest send time of our ping it echoed in our current term.
    lease: LeaseAcks = field(default_factory=LeaseAcks)
    last_tick_at: float | None = None
    destroy_requested: bool = False
    transfer_requested: bool = False  # transfer_leadership() (any thread sets it)
    applied_index: int | None = None  # last index this node applied (or restored to)
    log_watch_registered: bool = False
    # Hazard 14 (pre-vote). As a voter: when a leader's append_entries last arrived. As a
    # would-be candidate: the round in progress (term asked for, when, who said yes).
    leader_heard_at: float = -math.inf
    prevote: PrevoteRound = field(default_factory=PrevoteRound)


class RaftQuorum:
    """One node of the Raft group: replicates command bytes into ``machine``.

    Owned by the broker process (one per process). Thread model: pysyncobj's Raft thread
    (started here, non-daemon, rebound to the main thread's lifetime) runs ``machine.apply`` /
    ``snapshot`` / ``restore``, ``on_applied(command, result)``, ``on_restored()``, and the
    result callbacks of :meth:`submit_async` — keep them short and never block in them (in
    particular never call :meth:`submit` there: it raises :class:`WrongThreadError`). Every
    public method is thread-safe; reads (:meth:`is_leader`, :meth:`status`, ...) use an
    immutable view the Raft thread publishes every tick. A second, daemon thread only fires
    submit timeouts (it runs ``submit_async`` callbacks with :class:`QuorumTimeoutError`).
    Call :meth:`close` when done.
    """

    def __init__(
        self,
        config: QuorumConfig,
        machine: StateMachine,
        *,
        on_applied: Callable[[bytes, bytes], None] | None = None,
        on_restored: Callable[[], None] | None = None,
    ) -> None:
        install_pysyncobj_guards()
        if sys.flags.optimize:
            raise QuorumError(
                "refusing to run under python -O: pysyncobj's replay checks are asserts"
            )
        from pysyncobj.encryptor import HAS_CRYPTO

        if not HAS_CRYPTO:
            raise QuorumError("pysyncobj needs the 'cryptography' package to use a secret")
        self._config = config
        self._machine = machine
        self._on_applied = on_applied
        self._on_restored = on_restored
        # Raft address -> broker id of every voter this node has heard of: the config's, the
        # ones membership entries name (Raft thread) and learn_voter_ids' (any thread; single
        # dict writes). Only grows: an address is never reused for another id (voters.py).
        self._id_by_address = {address: node_id for node_id, address in config.voters.items()}
        self._fatal: str | None = None
        self._counters = QuorumCounters()
        self._commands = PendingCommands(
            pending_max=config.max_pending_commands,
            counters=self._counters,
            clock=_pso_monotonic,
            fatal_reason=lambda: self._fatal,
        )
        # the first thaw comes one period after start (not at once: it would undo the freeze
        # of a state just loaded from the snapshot)
        self._tick = _TickState(next_gc_thaw_at=_pso_monotonic() + GC_THAW_PERIOD_S)
        self._view: QuorumView | None = None
        self._started = threading.Event()
        self._node: Any = None
        self._gate = JournalGate(
            has_peers=bool(self._other_addresses()),
            counters=self._counters,
            set_fatal=self._set_fatal,
            fatal_reason=lambda: self._fatal,
        )
        self._raft_thread: threading.Thread | None = None

        os.makedirs(config.data_dir, exist_ok=True)
        self._lock_fd: int | None = _lock_data_dir(config.data_dir)
        try:
            self._check_data_dir()
        except BaseException:
            os.close(self._lock_fd)
            raise
        hooks = NodeHooks(
            adopt=self._adopt_node,
            apply=self._apply_committed,
            make_durable=self._make_durable,
            hold_ack=self._hold_ack,
            prevote_won=self._prevote_won,
            next_timer_s=self._next_timer_s,
            membership_changed=self._membership_changed,
        )
        node: Any = RaftNode(
            hooks, self._counters, config.self_address, self._other_addresses(), self._conf()
        )
        self._raft_thread = node._SyncObj__thread
        # Hazard 13: pysyncobj's thread exits when its creator thread does.
        node._SyncObj__mainThread = threading.main_thread()
        transport = node._SyncObj__transport
        for command in _UTILITY_COMMANDS:
            transport.setOnUtilityMessageCallback(command, None)
        self._pysyncobj_on_message = transport._onMessageReceivedCallback
        transport.setOnMessageReceivedCallback(self._on_message)
        node.addOnTickCallback(self._on_tick)
        # Timeouts fire on their own thread: the Raft thread may be the one that is stuck.
        self._commands.start_timer(f"raftlog-quorum-{config.node_id}-timeouts")
        try:
            try:
                node.waitBinded()
            except Exception as exc:
                raise QuorumError(f"cannot bind {self._bind_address()}: {exc}") from exc
            if not self._started.wait(config.startup_timeout_s):
                raise QuorumError("the Raft thread did not start within startup_timeout_s")
            if self._fatal is not None:
                raise QuorumStorageError(self._fatal)
        except BaseException:
            self.close()
            raise

    # ---- construction helpers ---------------------------------------------------------------

    def _adopt_node(self, node: RaftNode) -> None:
        # Called first thing in RaftNode.__init__: the Raft thread starts inside
        # SyncObj.__init__ and may call back (snapshot restore, fatal stop) before that returns.
        self._node = node

    def _other_addresses(self) -> list[str]:
        own = self._config.self_address
        return [a for _, a in sorted(self._config.voters.items()) if a != own]

    def _bind_address(self) -> str:
        host, port = split_address(self._config.self_address)
        return f"{self._config.bind_host or host}:{port}"

    def _conf(self) -> Any:
        c = self._config
        return SyncObjConf(
            password=c.secret,
            bindAddress=self._bind_address(),
            autoTick=True,
            autoTickPeriod=c.tick_period_s,
            raftMinTimeout=c.election_timeout_min_s,
            raftMaxTimeout=c.election_timeout_max_s,
            appendEntriesPeriod=c.append_entries_period_s,
            connectionTimeout=c.connection_timeout_s,
            connectionRetryTime=c.connection_retry_s,
            leaderFallbackTimeout=c.leader_fallback_timeout_s,
            journalFile=c.journal_path,
            fullDumpFile=c.snapshot_path,
            useFork=False,
            serializer=SnapshotHooks(
                capture=self._capture_snapshot,
                published=self._snapshot_published,
                failed=self._snapshot_failed,
                discarded=self._snapshot_discarded,
            ),
            deserializer=self._read_snapshot,
            logCompactionMinEntries=c.log_compaction_min_entries,
            logCompactionMinTime=c.log_compaction_min_time_s,
            # membership entries only ever come from change_voters on the leader: the utility
            # commands that would let anyone ask are unregistered, and the handshake refuses
            # nodes outside the current membership (hazard 2 and 16 of pysyncobj_guards)
            dynamicMembershipChange=True,
            commandsWaitLeader=False,
            commandsQueueSize=c.max_pending_commands,
            bindRetryTime=_BIND_RETRY_S,
            maxBindRetries=max(1, math.ceil(c.bind_timeout_s / _BIND_RETRY_S)),
        )

    def _check_data_dir(self) -> None:
        """Refuse to start on a dump or journal meta we cannot read (pysyncobj would silently
        start empty: a corrupt ``.meta`` forgets votedFor, a corrupt dump forgets the state)."""
        meta_path = self._config.journal_path + ".meta"
        if os.path.exists(meta_path):
            try:
                with open(meta_path, "rb") as f:
                    meta = safe_pickle.loads(f.read())
            except Exception as exc:
                raise QuorumStorageError(f"unreadable journal meta {meta_path}: {exc}") from exc
            if not isinstance(meta, dict):
                raise QuorumStorageError(f"journal meta {meta_path} is not a dict")
        if os.path.exists(self._config.snapshot_path):
            with open(self._config.snapshot_path, "rb") as f:
                decode_snapshot_file(f.read())

    # ---- public API -------------------------------------------------------------------------

    @property
    def config(self) -> QuorumConfig:
        return self._config

    def submit(self, command: bytes, timeout_s: float) -> bytes:
        """Replicate ``command``; block until it is committed and applied here; return
        ``machine.apply``'s result. Raises :class:`NotLeaderError` (not applied),
        :class:`QuorumTimeoutError` / :class:`QuorumUnknownOutcomeError` (may apply later),
        :class:`QuorumOverloadedError`, :class:`QuorumClosedError`, :class:`WrongThreadError`."""
        if threading.current_thread() is self._raft_thread:
            raise WrongThreadError("submit() on the Raft thread would deadlock; use submit_async")
        done = threading.Event()
        outcome: list[tuple[bytes | None, QuorumError | None]] = []

        def deliver(result: bytes | None, error: QuorumError | None) -> None:
            outcome.append((result, error))
            done.set()

        token = self._submit(command, timeout_s, deliver)
        if not done.wait(timeout_s) and token is not None:
            self._commands.expire(token)  # no-op if the result is being delivered right now
            done.wait(1.0)
        if not outcome:  # pragma: no cover - the claim above guarantees an outcome
            raise QuorumTimeoutError(f"no result within {timeout_s} s")
        result, error = outcome[0]
        if error is not None:
            raise error
        assert result is not None
        return result

    def submit_async(self, command: bytes, timeout_s: float, callback: Callback) -> None:
        """Like :meth:`submit` without blocking: ``callback(result, None)`` or
        ``callback(None, error)`` exactly once: on the Raft thread (results), on the quorum's
        timeout thread (:class:`QuorumTimeoutError`), or on the calling thread when the command
        fails before it is queued (not leader, closed, overloaded)."""
        self._submit(command, timeout_s, callback)

    def is_leader(self) -> bool:
        """Raft leader, and a majority (self included) answered within ``leader_lease_s``, and
        the Raft thread published that within the same bound. Gates controller actions; it is
        not a guarantee that no other leader exists (hazard 9 of ``pysyncobj_guards``)."""
        return self._leads(self._view, _pso_monotonic())

    def _leads(self, view: QuorumView | None, now: float) -> bool:
        if view is None or self._commands.closed or self._fatal is not None:
            return False
        return lease_holds(
            is_leader=view.role is Role.LEADER,
            now_s=now,
            view_at_s=view.at,
            majority_acked_at_s=view.majority_acked_at,
            lease_s=self._config.lease_s,
        )

    def leader_id(self) -> int | None:
        """The last leader this node heard of (may be stale; None during elections)."""
        view = self._view
        return None if view is None else view.leader_id

    def wait_for_leader(self, timeout_s: float) -> int | None:
        deadline = _pso_monotonic() + timeout_s
        while True:
            leader = self.leader_id()
            if leader is not None or self._commands.closed:
                return leader
            if _pso_monotonic() >= deadline:
                return None
            time.sleep(_LEADER_POLL_S)

    def status(self) -> QuorumStatus:
        view = self._view
        now = _pso_monotonic()
        if view is None:
            view = empty_view(now)
        return quorum_status(
            view,
            now=now,
            node_id=self._config.node_id,
            is_leader=self._leads(view, now),
            counters=self._counters,
            fatal_error=self._fatal,
            journal_bytes_cut=self._gate.bytes_cut,
        )

    def voters(self) -> dict[int, str]:
        """The current membership as this node's log has it (the latest membership entry,
        committed or not): broker id -> Raft address; -1 for an address whose id is unknown."""
        view = self._view
        if view is None:
            return dict(self._config.voters)
        return {v.node_id: v.address for v in view.voters}

    def learn_voter_ids(self, ids: dict[int, str]) -> None:
        """Tell the quorum the broker ids of Raft addresses (from the metadata's voter set:
        a membership restored from a snapshot file carries addresses only)."""
        for node_id, address in ids.items():
            self._id_by_address.setdefault(address, node_id)

    def change_voters(
        self,
        *,
        add: bool,
        node_id: int,
        address: str,
        command: bytes,
        timeout_s: float,
        callback: Callback,
    ) -> None:
        """Add (``add``) or remove voter ``node_id`` at Raft ``address``, in one membership entry
        that also carries ``command`` for the state machine (applied with it; its result is
        the answer). Like :meth:`submit_async`: ``callback`` runs exactly once; a change the
        leader refuses to append (another one is not committed yet, the node is already
        (not) a member, the leader itself would leave) fails with
        :class:`MembershipChangeRefusedError`, saying which; a leader just elected refuses
        every change until it has applied its term's no-op (:class:`LeaderNotReadyError`,
        retriable). Joint consensus is not used: one voter at a
        time, as pysyncobj does (Raft thesis 4.1)."""
        split_address(address)
        if len(command) > self._config.max_command_bytes:
            raise ValueError(f"command of {len(command)} bytes exceeds max_command_bytes")
        if add:
            self._id_by_address.setdefault(address, node_id)
        view = self._view
        refusal = None
        if view is None or view.role is not Role.LEADER:
            refusal = NotLeaderError(None if view is None else view.leader_id)
        token = self._commands.add(timeout_s, callback, refusal)
        if token is None:
            return

        def on_result(result: Any, err: int) -> None:
            if err == FAIL_REASON.REQUEST_DENIED:
                refusal, pending_index, term = self._node.raftlog_last_refusal
                refusal = refusal or MembershipRefusal.NOTHING_TO_CHANGE
                message = refusal_message(
                    refusal,
                    add=add,
                    address=address,
                    term=term,
                    pending_change_index=pending_index,
                )
                failure = (
                    LeaderNotReadyError(message)
                    if refusal is MembershipRefusal.LEADER_NOT_READY
                    else MembershipChangeRefusedError(message)
                )
                self._commands.complete(token, None, failure)
                return
            self._on_result(token, result, err)

        kind = MEMBERSHIP_ADD if add else MEMBERSHIP_REMOVE
        self._node.raftlog_change_membership(kind, address, node_id, command, on_result)

    def transfer_leadership(self) -> None:
        """Ask the most caught-up connected voter to stand for election now (Raft's TimeoutNow;
        best effort, on the Raft thread's next tick; nothing happens if this node is not the
        leader then, or no voter is fully caught up). Watch :meth:`leader_id` for the result."""
        self._tick.transfer_requested = True

    def force_snapshot(self) -> None:
        """Ask pysyncobj to dump + compact the log at its next tick (tests, operators)."""
        self._node.forceLogCompaction()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the Raft thread, close its sockets and files; fail every pending command."""
        if not self._commands.close():
            return
        node, thread = self._node, self._raft_thread
        stopped = node is None or thread is None or not thread.is_alive()
        if node is not None:
            node.destroy()  # the Raft thread closes sockets and the journal, then exits
            if thread is not None and threading.current_thread() is not thread:
                thread.join(timeout_s)
                stopped = not thread.is_alive() and self._join_snapshot_writer(node, timeout_s)
                if stopped:
                    self._close_transmission_files(node)
                else:
                    logger.error("the Raft thread did not stop within %.1f s", timeout_s)
        unwatch_raft_threads(self._counters)
        if stopped and self._lock_fd is not None:  # never unlock under a live journal writer
            os.close(self._lock_fd)
            self._lock_fd = None
        self._commands.fail_all(QuorumClosedError(self._fatal or "quorum closed"))

    # ---- submit machinery (any thread) ------------------------------------------------------

    def _submit(self, command: bytes, timeout_s: float, callback: Callback) -> int | None:
        if not isinstance(command, bytes):
            raise TypeError(f"command must be bytes, not {type(command).__name__}")
        if len(command) > self._config.max_command_bytes:
            raise ValueError(f"command of {len(command)} bytes exceeds max_command_bytes")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s!r}")
        view = self._view
        refusal = None
        if view is None or view.role is not Role.LEADER:
            refusal = NotLeaderError(None if view is None else view.leader_id)
        token = self._commands.add(timeout_s, callback, refusal)
        if token is None:
            return None

        def on_result(result: Any, err: int) -> None:
            self._on_result(token, result, err)

        self._node.raftlog_submit(command, on_result)
        return token

    def _on_result(self, token: int, result: Any, err: int) -> None:
        if err == FAIL_REASON.SUCCESS and isinstance(result, bytes):
            self._commands.complete(token, result, None)
        elif err == FAIL_REASON.SUCCESS:  # our apply returned None: the node went fatal
            self._commands.complete(token, None, QuorumClosedError(self._fatal or "apply failed"))
        else:
            self._commands.complete(token, None, self._error_for(err))

    def _error_for(self, err: int) -> QuorumError:
        leader = self.leader_id()
        if err in (FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER):
            return NotLeaderError(leader)
        if err == FAIL_REASON.DISCARDED:  # another entry was committed at its index
            return NotLeaderError(leader, f"lost leadership before commit (leader: {leader})")
        if err == FAIL_REASON.QUEUE_FULL:
            return QuorumOverloadedError("pysyncobj's command queue is full")
        if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
            return QuorumUnknownOutcomeError(f"pysyncobj failure reason {err}")
        return QuorumError(f"pysyncobj failure reason {err}")

    # ---- Raft thread ------------------------------------------------------------------------

    def _apply_committed(self, index: int, command: bytes) -> bytes | None:
        if self._fatal is not None:
            return None
        tick = self._tick
        journal = self._gate.journal
        if journal is not None and self._node._isLeader() and index > journal.durable_last_index:
            # Hazard 7's invariant: a leader counts its own entry only once it is durable.
            self._counters.leader_applied_before_durable += 1
            logger.error("leader applies index %d above its durable journal", index)
        if tick.applied_index is not None and index <= tick.applied_index:
            self._counters.applied_index_regressions += 1
            logger.warning("applying index %d again (applied up to %d)", index, tick.applied_index)
        tick.applied_index = index
        try:
            result = self._machine.apply(command)
            if not isinstance(result, bytes):
                raise TypeError(f"apply returned {type(result).__name__}, not bytes")
        except Exception as exc:
            self._set_fatal(f"state machine apply failed at index {index}: {exc!r}")
            return None
        if self._on_applied is not None:
            try:
                self._on_applied(command, result)
            except Exception:
                logger.exception("on_applied raised (ignored)")
        return result

    def _capture_snapshot(self, data: Any) -> WriteJob:
        """pysyncobj's serializer hook, through :class:`BackgroundSerializer` (Raft thread):
        capture the state at the applied index the dump claims; the job returned encodes and
        writes it on the writer thread (``SnapshotCapture``; a machine without it is
        snapshotted here, only the file is written there)."""
        last, prev, cluster = data
        last_entry = (bytes(last[0]), int(last[1]), int(last[2]))
        prev_entry = (bytes(prev[0]), int(prev[1]), int(prev[2]))
        voters = tuple(sorted(str(node.id) for node in cluster))
        machine = self._machine
        if isinstance(machine, SnapshotCapture):
            encode_state = machine.snapshot_encoder()
        else:
            state = machine.snapshot()

            def encode_state() -> bytes:
                return state

        def write(tmp_path: str) -> None:  # the writer thread
            snapshot = SnapshotFile(last_entry, prev_entry, voters, encode_state())
            with open(tmp_path, "wb") as f:
                f.write(encode_snapshot_file(snapshot))
                f.flush()
                os.fsync(f.fileno())

        return write

    def _snapshot_published(self) -> None:
        self._counters.snapshots_written += 1

    def _snapshot_failed(self, exc: BaseException) -> None:
        self._counters.snapshot_write_failures += 1
        logger.error("writing the snapshot failed: %r", exc)

    def _snapshot_discarded(self) -> None:
        self._counters.snapshots_discarded += 1
        logger.info("a snapshot was installed while ours was written: ours is discarded")

    def _read_snapshot(self, path: str) -> tuple[Entry, Entry, set[str]]:
        """pysyncobj's deserializer hook (Raft thread): at start-up and on snapshot install."""
        try:
            with open(path, "rb") as f:
                snapshot = decode_snapshot_file(f.read())
                os.fsync(f.fileno())  # a received snapshot was written without fsync
            fsync_dir(os.path.dirname(os.path.abspath(path)))
            self._machine.restore(snapshot.state)
        except Exception as exc:
            self._set_fatal(f"cannot restore snapshot {path}: {exc!r}")
            raise
        index = snapshot.last_entry[1]
        tick = self._tick
        if tick.applied_index is not None and index < tick.applied_index:
            self._counters.applied_index_regressions += 1
            logger.warning(
                "snapshot install moved applied index back from %d to %d",
                tick.applied_index,
                index,
            )
        tick.applied_index = index
        self._counters.snapshot_restores += 1
        # the restored state lives until the next restore: out of the cyclic collector's scans
        # at once (a full collection over a fresh 100k-partition state took 0.1-0.5 s)
        gc.freeze()
        if self._on_restored is not None:
            try:
                self._on_restored()
            except Exception:
                logger.exception("on_restored raised (ignored)")
        # pysyncobj takes this as the cluster; it would keep our own address in it (it compares
        # the strings with its node object), and count us twice
        own = self._config.self_address
        return snapshot.last_entry, snapshot.prev_entry, {v for v in snapshot.voters if v != own}

    def _set_fatal(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            logger.critical("raft quorum node %d stops: %s", self._config.node_id, reason)
        if not self._tick.destroy_requested and self._node is not None:
            self._tick.destroy_requested = True
            self._node.destroy()
        self._commands.fail_all(QuorumClosedError(reason))
        self._started.set()  # do not keep __init__ waiting for a node that stopped

    # ---- journal durability (hazards 7 and 15), Raft thread ----------------------------------

    def _hold_ack(self, peer: Any, message: dict[str, Any]) -> None:
        self._gate.hold(self._node._SyncObj__raftLog, peer, message)

    def _make_durable(self) -> None:
        node = self._node
        self._gate.make_durable(node._SyncObj__raftLog, node._SyncObj__transport)

    def _on_tick(self) -> None:
        """Runs on the Raft thread at the end of every pysyncobj tick."""
        try:
            self._tick_once()
        except Exception:
            # Raising would make pysyncobj skip this tick's poll and retry; log and go on.
            self._counters.tick_errors += 1
            logger.exception("the quorum's tick callback raised")

    def _tick_once(self) -> None:
        self._counters.ticks += 1
        now = _pso_monotonic()
        node = self._node
        tick = self._tick
        if not tick.log_watch_registered:
            watch_raft_thread(self._counters)
            tick.log_watch_registered = True
        if tick.last_tick_at is not None:
            gap_s = now - tick.last_tick_at
            if gap_s > self._counters.tick_gap_s_max:
                self._counters.tick_gap_s_max = gap_s
        tick.last_tick_at = now
        close_stalled_handshakes(
            node._SyncObj__transport, now, self._config.connect_timeout_s, self._counters
        )
        if now >= tick.next_gc_freeze_at:
            # The metadata is ~10 objects a partition, nearly all of them long-lived: a full
            # collection scanning them (55-94 ms at 100k partitions, longer on a busy machine)
            # stalls this thread, and an apply that long costs an election. Frozen objects are
            # left out of collections (reference counting still frees them); gc.freeze is O(1).
            # Every second: at 5 s, the records a busy second creates (a fence, a heal: 60,000
            # ISR changes) were scanned by collections of 50-300 ms before they were frozen.
            tick.next_gc_freeze_at = now + GC_FREEZE_PERIOD_S
            if now >= tick.next_gc_thaw_at:
                # cycles that died after they were frozen are collected once in a while (the
                # objects go back to the oldest generation; its next collection scans them)
                tick.next_gc_thaw_at = now + GC_THAW_PERIOD_S
                gc.unfreeze()
            else:
                gc.freeze()
        if now >= tick.next_keeper_at:
            tick.next_keeper_at = now + self._config.peer_ping_period_s
            self._keep_connections(now)
        elif node._isLeader() and now >= tick.next_lease_ping_at:
            self._ping_peers(now)
        if tick.transfer_requested:
            tick.transfer_requested = False
            if node._isLeader():
                node.transferLeadership(None, None)
        self._view = self._make_view(now)
        if not tick.started and not node._SyncObj__needLoadDumpFile:
            tick.started = True
            self._started.set()

    def _next_timer_s(self) -> float:
        """When ``_tick_once`` next has timed work (Raft thread): the keeper's round, and on
        the leader the lease ping. Stalled handshakes and redials are checked at least every
        ``tick_period_s`` (the Raft thread's longest sleep)."""
        tick = self._tick
        node = self._node
        if node is not None and node._isLeader():
            return min(tick.next_keeper_at, tick.next_lease_ping_at)
        return tick.next_keeper_at

    def _keep_connections(self, now: float) -> None:
        """Hazard 8's keeper: close links that went silent (handshakes that never finish are
        ``close_stalled_handshakes``' business, every tick), then ping every connected peer."""
        close_silent_connections(
            self._node._SyncObj__transport, now, self._config.connection_timeout_s, self._counters
        )
        self._ping_peers(now)

    def _ping_peers(self, now: float) -> None:
        """Ping every connected voter: keeps idle links warm (all nodes, every
        ``peer_ping_period_s``) and, on the leader, every ``append_entries_period_s``, renews
        the lease with echoes of our send time (see :meth:`_on_message`)."""
        node = self._node
        self._tick.next_lease_ping_at = now + self._config.append_entries_period_s
        ping = {"type": _PING_TYPE, "sent": now, "term": int(node.raftCurrentTerm)}
        transport = node._SyncObj__transport
        for peer in node._SyncObj__otherNodes:
            if node.isNodeConnected(peer):
                transport.send(peer, ping)

    # ---- pre-vote (hazard 14), all on the Raft thread ----------------------------------------

    def _prevote_won(self) -> bool:
        """The election timer fired: may pysyncobj stand for election now? (The rules:
        :func:`~raftlog.raft.election_rules.prevote_step`.) When a round starts, the requests go
        out here; pysyncobj asks again every tick while its timer stays expired."""
        node, tick = self._node, self._tick
        others = node._SyncObj__otherNodes
        step = prevote_step(
            tick.prevote,
            peers=len(others),
            connected=bool(node._SyncObj__connectedNodes),
            recovering=self._gate.recovering,  # hazard 15: a damaged journal does not stand
            current_term=int(node.raftCurrentTerm),
            now_s=_pso_monotonic(),
            round_s=self._config.prevote_round_s,
            # set by pysyncobj only for a timeout_now of the leader we follow, in our term or
            # newer; cleared when we stand or a newer leader speaks
            transfer_requested=bool(node._SyncObj__transferInProgress),
        )
        tick.prevote = step.round
        if step.lost:
            self._counters.prevotes_lost += 1  # the last round timed out without a majority
        if step.action is PrevoteAction.ASK:
            last_index, last_term = node._SyncObj__raftLog[-1][1:3]
            request = {
                "type": _PREVOTE_TYPE,
                "term": step.round.term,
                "last_log_index": int(last_index),
                "last_log_term": int(last_term),
            }
            transport = node._SyncObj__transport
            for peer in others:
                if node.isNodeConnected(peer):
                    transport.send(peer, request)
        return step.action is PrevoteAction.STAND

    def _answer_prevote(self, peer: Any, request: dict[str, Any]) -> None:
        node, tick = self._node, self._tick
        term, index, log_term = (
            request.get("term"),
            request.get("last_log_index"),
            request.get("last_log_term"),
        )
        if not (isinstance(term, int) and isinstance(index, int) and isinstance(log_term, int)):
            return
        last_index, last_term = node._SyncObj__raftLog[-1][1:3]
        granted = prevote_granted(
            term=term,
            candidate_last=LogPosition(log_term, index),
            current_term=int(node.raftCurrentTerm),
            own_last=LogPosition(int(last_term), int(last_index)),
            is_leader=node._isLeader(),
            recovering=self._gate.recovering,
            now_s=_pso_monotonic(),
            leader_heard_at_s=tick.leader_heard_at,
            election_timeout_min_s=self._config.election_timeout_min_s,
        )
        reply = {"type": _PREVOTE_REPLY_TYPE, "term": term, "granted": granted}
        node._SyncObj__transport.send(peer, reply)

    def _record_prevote_reply(self, peer: Any, reply: dict[str, Any]) -> None:
        self._tick.prevote = record_prevote_reply(
            self._tick.prevote,
            peer=str(peer.id),
            term=reply.get("term"),
            granted=reply.get("granted"),
        )

    def _on_message(self, peer: Any, message: Any) -> None:
        """Every message from a voter passes here first (Raft thread)."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message.get("term", -1) >= self._node.raftCurrentTerm:
            self._tick.leader_heard_at = _pso_monotonic()
            self._pysyncobj_on_message(peer, message)
            self._gate.heard_leader(message.get("commit_index"), message["term"])
        elif kind == "request_vote" and self._gate.recovering:
            self._counters.votes_withheld += 1  # hazard 15: no vote until caught up
        elif kind == _PREVOTE_TYPE:
            self._answer_prevote(peer, message)
        elif kind == _PREVOTE_REPLY_TYPE:
            self._record_prevote_reply(peer, message)
        elif kind == _PING_TYPE:
            pong = {
                "type": _PONG_TYPE,
                "echo": message.get("sent"),
                "term": self._node.raftCurrentTerm,
            }
            self._node._SyncObj__transport.send(peer, pong)
        elif kind == _PONG_TYPE:
            self._record_pong(peer, message)
        else:
            self._pysyncobj_on_message(peer, message)

    def _record_pong(self, peer: Any, pong: dict[str, Any]) -> None:
        # A pong proves the peer was following our term at some instant after we sent the ping
        # it echoes. Receive times prove nothing after a pause: replies buffered while this
        # process was stopped are processed, and would be stamped, as if they were fresh.
        node = self._node
        self._tick.lease = record_lease_ack(
            self._tick.lease,
            peer=str(peer.id),
            echo=pong.get("echo"),
            echo_term=pong.get("term"),
            current_term=int(node.raftCurrentTerm),
            is_leader=node._isLeader(),
        )

    def _membership_changed(self, address: str, node_id: int | None) -> None:
        """A membership entry took effect (Raft thread): learn the id it names."""
        if node_id is not None:
            self._id_by_address.setdefault(address, node_id)
        logger.info(
            "raft quorum node %d: voters now %s",
            self._config.node_id,
            sorted(
                [self._config.self_address, *(str(n.id) for n in self._node._SyncObj__otherNodes)]
            ),
        )

    def _make_view(self, now: float) -> QuorumView:
        return read_view(
            self._node,
            now=now,
            config=self._config,
            id_by_address=self._id_by_address,
            lease=self._tick.lease,
            recovering=self._gate.recovering,
        )

    @staticmethod
    def _join_snapshot_writer(node: Any, timeout_s: float) -> bool:
        serializer = node._SyncObj__serializer
        if isinstance(serializer, BackgroundSerializer) and not serializer.join(timeout_s):
            logger.error("the snapshot writer did not stop within %.1f s", timeout_s)
            return False
        return True

    @staticmethod
    def _close_transmission_files(node: Any) -> None:
        serializer = node._SyncObj__serializer
        transmissions = serializer._Serializer__transmissions
        for transmission in list(transmissions.values()):
            file = transmission.get("file")
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
        transmissions.clear()
