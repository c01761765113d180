"""The metadata quorum's vocabulary: its errors, configuration, status and limits.

What a caller of :class:`raftlog.raft.quorum.RaftQuorum` needs to name — the
:class:`QuorumConfig` it builds, the :class:`QuorumStatus` it reads, the :class:`StateMachine` it
hands over and the :class:`QuorumError` family it catches — without importing pysyncobj (the
modules that do: :mod:`raftlog.raft.quorum`, :mod:`raftlog.raft.raft_node` and
:mod:`raftlog.raft.pysyncobj_guards`, whose docstring lists the hazards the numbers below refer
to). Plain data; no IO.

Files in ``data_dir`` (one node each; ``raft.lock`` is flock-ed while a quorum owns the
directory, so a second process on the same directory fails with :class:`QuorumStorageError`):

* ``raft-journal.bin`` — the Raft log (entries, a CRC each; format in
  :mod:`raftlog.raft.journal`; rebuilt from the leader if lost, see hazards 7 and 15; a
  pysyncobj journal found here is converted once) and ``raft-journal.bin.meta`` (pickled dict:
  currentTerm, votedForNodeId, raftCommitIndex; read with the allow-list unpickler).
* ``raft-snapshot.bin`` — the full dump; format in :mod:`raftlog.raft.snapshot_file`.
  Checksummed, not rebuildable.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "JOURNAL_FILE_NAME",
    "LOCK_FILE_NAME",
    "MAX_FRAME_BYTES",
    "MAX_HANDSHAKE_FRAME_BYTES",
    "MAX_INFLATED_BYTES",
    "MAX_UNAUTHENTICATED_CONNECTIONS",
    "SNAPSHOT_FILE_NAME",
    "LeaderNotReadyError",
    "MembershipChangeRefusedError",
    "MetadataQuorum",
    "NotLeaderError",
    "QuorumClosedError",
    "QuorumConfig",
    "QuorumCounters",
    "QuorumError",
    "QuorumOverloadedError",
    "QuorumStatus",
    "QuorumStorageError",
    "QuorumTimeoutError",
    "QuorumUnknownOutcomeError",
    "Role",
    "SnapshotCapture",
    "StateMachine",
    "VoterStatus",
    "WrongThreadError",
    "split_address",
]

JOURNAL_FILE_NAME: Final = "raft-journal.bin"
SNAPSHOT_FILE_NAME: Final = "raft-snapshot.bin"
LOCK_FILE_NAME: Final = "raft.lock"  # flock held while a quorum owns the directory

# ---- limits of the Raft port (hazards 5 and 16; enforced by raftlog.raft.pysyncobj_guards) ---
# Legit frames are bounded by appendEntriesBatchSizeBytes / logCompactionBatchSize (64 KiB) plus
# one entry (a command of up to max_command_bytes; larger single entries go in 64 KiB chunks),
# pickle, zlib and Fernet overhead; 16 MiB leaves a wide margin.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# What one frame may inflate to (zlib): the same bound holds for the pickled message itself.
MAX_INFLATED_BYTES: Final = MAX_FRAME_BYTES
# Before pysyncobj's handshake completes, a connection may only carry handshake messages: a
# random key, then (incoming) the sender's address. Measured, Fernet included: 232 bytes and 296
# bytes (a 41-character address). Both the frame and what it inflates to are capped at this.
MAX_HANDSHAKE_FRAME_BYTES: Final = 4 * 1024
# Incoming connections in the handshake at once; beyond, the oldest is closed (hazard 16).
MAX_UNAUTHENTICATED_CONNECTIONS: Final = 64
# max_command_bytes may not exceed this: a batch (64 KiB + one command) must inflate below
# MAX_INFLATED_BYTES and, incompressible and Fernet-encoded (x 4/3), stay below MAX_FRAME_BYTES.
_COMMAND_BYTES_CEILING: Final = MAX_INFLATED_BYTES // 2


# ---- errors ---------------------------------------------------------------------------------


class QuorumError(Exception):
    """Base of the quorum's operating errors. ``retriable``: may the caller simply try again?"""

    retriable: ClassVar[bool] = False


class NotLeaderError(QuorumError):
    """This node is not the Raft leader; the command was *not* applied. Retry on ``leader_id``."""

    retriable: ClassVar[bool] = True

    def __init__(self, leader_id: int | None, message: str | None = None) -> None:
        super().__init__(message or f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class QuorumUnknownOutcomeError(QuorumError):
    """The command may or may not commit later (Jepsen's ``info``): read before retrying."""

    retriable: ClassVar[bool] = True


class QuorumTimeoutError(QuorumUnknownOutcomeError):
    """No result within ``timeout_s``; the command may still commit."""


class QuorumOverloadedError(QuorumError):
    """Too many commands in flight (``max_pending_commands``); not applied."""

    retriable: ClassVar[bool] = True


class QuorumClosedError(QuorumError):
    """The quorum was closed, or stopped itself after a fatal error (see ``status()``)."""


class MembershipChangeRefusedError(QuorumError):
    """The Raft leader refused to append a membership change (another one is not committed
    yet, the node is already / not a member, or the leader would remove itself)."""


class LeaderNotReadyError(MembershipChangeRefusedError):
    """A leader just elected has not applied the no-op of its term yet, and appends no
    membership change before (``raft/voters.py`` rule 1): retry in a moment."""

    retriable: ClassVar[bool] = True


class QuorumStorageError(QuorumError):
    """The data directory holds a file we cannot trust (corrupt dump or journal meta)."""


class WrongThreadError(QuorumError, RuntimeError):
    """A blocking call was made on the Raft thread (it would deadlock). A programming error."""


# ---- interface types ------------------------------------------------------------------------


class StateMachine(Protocol):
    """What the quorum replicates into. All three run on the Raft thread only."""

    def apply(self, command: bytes) -> bytes:
        """Deterministic; never raises for bad input (encodes an error result instead)."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class SnapshotCapture(Protocol):
    """A :class:`StateMachine` whose snapshot can be encoded off the Raft thread: the quorum
    then writes its dumps on a writer thread (:mod:`raftlog.raft.snapshot_writer`); a machine
    without it is snapshotted on the Raft thread and only the file is written elsewhere."""

    def snapshot_encoder(self) -> Callable[[], bytes]:
        """Raft thread: capture the state as it is now, cheaply; the function returned encodes
        that capture — what :meth:`StateMachine.snapshot` returned now — on any thread, later,
        while ``apply`` goes on."""
        ...


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    OBSERVER = "observer"  # a broker that follows the metadata without voting


def _check_timer(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); ``ValueError`` for anything else."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Raft address must be 'host:port', got {address!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class QuorumConfig:
    """One node's view of the Raft group. Validated on construction (``ValueError``)."""

    node_id: int
    voters: Mapping[int, str]  # node id -> "host:port" Raft address; includes node_id
    secret: str  # cluster secret (pysyncobj password); required, non-empty
    data_dir: str  # journal and full dump live here (always both)
    bind_host: str | None = None  # default: host of our voter address; 0.0.0.0 only if asked
    # Timers (seconds). Election: a follower waits U(min, max) without a heartbeat.
    election_timeout_min_s: float = 0.15  # > 3 x append_entries_period_s
    election_timeout_max_s: float = 0.3
    append_entries_period_s: float = 0.03  # leader heartbeat / batch period
    # The Raft thread's longest sleep: its timers (heartbeat, election deadline, pings) wake it
    # on time and messages and submitted commands at once; this bounds the checks that have no
    # timer of their own (redials, stalled handshakes). < election_timeout_min_s / 2.
    tick_period_s: float = 0.05
    # No byte read for this long -> the connection is dead (closed eagerly, see the keeper).
    # (2 s: a link cut silently is closed and redialled instead of waiting on TCP's backoff)
    connection_timeout_s: float = 2.0  # >= election_timeout_max_s, > 2 x peer_ping_period_s
    # TCP connect + handshake must finish within this; it is also the redial cadence of a cut
    # link, so after a heal a peer is back within ~0.4 s (1 s measured 1.1-1.2 s for an
    # isolated controller's broker to be unfenced after the heal; 0.4 s: see issue 21's note)
    connect_timeout_s: float = 0.4
    connection_retry_s: float = 0.25  # min gap between connection attempts to one peer
    peer_ping_period_s: float = 0.5  # keep-warm ping on every connected peer link
    prevote_round_s: float = 0.05  # a pre-vote round waits this long for answers (hazard 14)
    leader_fallback_timeout_s: float = 1.0  # leader without majority answers steps down
    leader_lease_s: float | None = None  # is_leader() window; None -> election_timeout_min_s
    log_compaction_min_entries: int = 5000  # dump + truncate the journal after this many
    log_compaction_min_time_s: float = 300.0  # ... or this long since the last dump
    max_command_bytes: int = 1024 * 1024
    max_pending_commands: int = 10_000  # submitted, not yet answered
    bind_timeout_s: float = 5.0
    startup_timeout_s: float = 10.0  # bind + load dump + replay the journal

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not self.secret:
            raise ValueError("secret is required: pysyncobj without a password runs any pickle")
        if not self.data_dir:
            raise ValueError("data_dir is required")
        voters = dict(self.voters)
        if self.node_id not in voters:
            raise ValueError(f"node_id {self.node_id} is not among the voters {sorted(voters)}")
        addresses = [voters[node_id] for node_id in sorted(voters)]
        for address in addresses:
            split_address(address)
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"voter addresses must be distinct: {addresses}")
        object.__setattr__(self, "voters", MappingProxyType(voters))
        for name in (
            "election_timeout_min_s",
            "election_timeout_max_s",
            "append_entries_period_s",
            "tick_period_s",
            "connection_timeout_s",
            "connect_timeout_s",
            "connection_retry_s",
            "peer_ping_period_s",
            "prevote_round_s",
            "leader_fallback_timeout_s",
            "log_compaction_min_time_s",
            "bind_timeout_s",
            "startup_timeout_s",
        ):
            _check_timer(name, getattr(self, name))
        if self.leader_lease_s is not None:
            _check_timer("leader_lease_s", self.leader_lease_s)
        if self.tick_period_s >= self.election_timeout_min_s / 2:
            raise ValueError("tick_period_s must be < election_timeout_min_s / 2")
        if self.election_timeout_min_s <= 3 * self.append_entries_period_s:
            raise ValueError("election_timeout_min_s must be > 3 x append_entries_period_s")
        if self.election_timeout_max_s <= self.election_timeout_min_s:
            raise ValueError("election_timeout_max_s must be > election_timeout_min_s")
        if self.connection_timeout_s < self.election_timeout_max_s:
            raise ValueError("connection_timeout_s must be >= election_timeout_max_s")
        if self.connection_timeout_s <= 2 * self.peer_ping_period_s:
            raise ValueError("connection_timeout_s must be > 2 x peer_ping_period_s")
        if self.prevote_round_s >= self.election_timeout_min_s:
            raise ValueError("prevote_round_s must be < election_timeout_min_s")
        if self.leader_fallback_timeout_s <= self.append_entries_period_s:
            raise ValueError("leader_fallback_timeout_s must be > append_entries_period_s")
        if self.lease_s <= self.append_entries_period_s:
            raise ValueError("leader_lease_s must be > append_entries_period_s")
        if self.log_compaction_min_entries < 2:
            raise ValueError("log_compaction_min_entries must be >= 2")
        if self.max_command_bytes <= 0 or self.max_pending_commands <= 0:
            raise ValueError("max_command_bytes and max_pending_commands must be positive")
        if self.max_command_bytes > _COMMAND_BYTES_CEILING:
            raise ValueError(
                f"max_command_bytes must be <= {_COMMAND_BYTES_CEILING} (one batch, one frame)"
            )

    @property
    def self_address(self) -> str:
        return self.voters[self.node_id]

    @property
    def lease_s(self) -> float:
        return self.election_timeout_min_s if self.leader_lease_s is None else self.leader_lease_s

    @property
    def journal_path(self) -> str:
        return os.path.join(self.data_dir, JOURNAL_FILE_NAME)

    @property
    def snapshot_path(self) -> str:
        return os.path.join(self.data_dir, SNAPSHOT_FILE_NAME)


class VoterStatus(NamedTuple):
    node_id: int
    address: str
    match_index: int | None  # known on the leader only
    lag: int | None  # leader's last log index - match_index; leader only
    answered_s_ago: float | None = None  # leader only: since its last append_entries answer


@dataclass(frozen=True, slots=True)
class QuorumStatus:
    """A consistent picture published by the Raft thread (at most one tick old) + counters.

    ``rejected_unpickles``, ``oversized_frames`` and ``oversized_inflations`` are process-wide
    (the guards sit below any one quorum); every other counter belongs to this quorum.
    """

    node_id: int
    role: Role
    term: int
    leader_id: int | None
    is_leader: bool  # the gated answer of RaftQuorum.is_leader()
    has_quorum: bool  # leader: a majority answered within the lease; else: connected + leader
    commit_index: int
    last_applied: int
    log_first_index: int  # entries below were compacted into the snapshot
    log_last_index: int
    voters: tuple[VoterStatus, ...]
    view_age_s: float
    rejected_unpickles: int
    oversized_frames: int
    applied_index_regressions: int
    applied_entries_truncated: int
    snapshot_restores: int
    snapshots_written: int
    snapshot_write_failures: int
    connections_closed_by_keeper: int
    submit_timeouts: int
    late_results: int  # results that arrived after their submit had timed out
    tick_errors: int  # exceptions pysyncobj caught in its tick loop
    prevotes_lost: int  # pre-vote rounds that found no majority: elections not held
    fatal_error: str | None
    # Hazard 7 / 15 (journal durability). journal_durable_index <= log_last_index.
    journal_durable_index: int = 0  # last entry known to be fdatasync-ed
    journal_syncs: int = 0  # fdatasync calls (one per tick that changed the log)
    acks_dropped: int = 0  # held append_entries answers gone stale (the log was cut meanwhile)
    leader_applied_before_durable: int = 0  # invariant: always 0
    journal_bytes_cut: int = 0  # damaged journal tail cut at start-up
    journal_recovering: bool = False  # damaged journal: out of elections until caught up
    votes_withheld: int = 0  # vote requests ignored while recovering
    # Hazard 16 (hostile traffic on the Raft port): connections closed for ...
    oversized_inflations: int = 0  # ... a frame inflating above its cap
    handshake_timeouts: int = 0  # ... no completed handshake within connect_timeout_s
    handshakes_evicted: int = 0  # ... being the oldest of too many in the handshake
    handshakes_refused: int = 0  # ... a handshake naming no voter
    ticks: int = 0  # Raft-thread ticks: timers and messages wake it, not a fixed period
    # The longest the Raft thread went between two ticks (an idle one sleeps up to
    # tick_period_s): a stall past election_timeout_min_s on a leader deposes it.
    tick_gap_ms_max: float = 0.0
    snapshots_discarded: int = 0  # writes dropped: a snapshot was installed meanwhile


class MetadataQuorum(Protocol):
    """What a broker uses of its metadata quorum member: a voter's ``RaftQuorum``, or the
    observer of a broker that is not a voter (``raftlog.cluster.metadata_observer``), which never
    leads and refuses every command with :class:`NotLeaderError`."""

    def is_leader(self) -> bool: ...

    def leader_id(self) -> int | None: ...

    def status(self) -> QuorumStatus: ...

    def submit_async(
        self,
        command: bytes,
        timeout_s: float,
        callback: Callable[[bytes | None, QuorumError | None], None],
    ) -> None: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass(slots=True, weakref_slot=True)
class QuorumCounters:
    """One quorum's event counters (``QuorumStatus`` reports them). Incremented on the Raft
    thread, except ``submit_timeouts`` and ``late_results`` (under the pending commands' lock);
    read by any thread (an int read is atomic)."""

    applied_index_regressions: int = 0
    applied_entries_truncated: int = 0  # counted by the guards' pysyncobj log watch
    snapshot_restores: int = 0
    snapshots_written: int = 0
    snapshot_write_failures: int = 0
    connections_closed_by_keeper: int = 0
    submit_timeouts: int = 0
    late_results: int = 0
    tick_errors: int = 0  # some counted by the guards' pysyncobj log watch
    prevotes_lost: int = 0
    acks_dropped: int = 0
    leader_applied_before_durable: int = 0
    votes_withheld: int = 0
    handshake_timeouts: int = 0
    handshakes_evicted: int = 0  # counted by the guards
    handshakes_refused: int = 0  # counted by the guards
    ticks: int = 0
    tick_gap_s_max: float = 0.0
    snapshots_discarded: int = 0
