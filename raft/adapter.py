"""The hardened pysyncobj adapter: one Raft group that replicates opaque command bytes.

This is the only module of raftlog that imports pysyncobj (pinned to 0.3.17: the guards below
reach into its internals and :func:`install_pysyncobj_guards` refuses any other version). It is
generic: it replicates ``bytes`` commands into a :class:`StateMachine` it is given and knows
nothing about metadata.

Hazards of pysyncobj 0.3.17 and their guards (measured facts: shared/notes/pysyncobj.md). Each
guard has a regression test, named in brackets (U = tests/unit/raft/test_safe_pickle.py,
I = tests/integration/raft/test_quorum.py, P = tests/integration/raft/test_raft_port_limits.py).

1.  **Unpickles whatever reaches its port** (wire, log entries, journal ``.meta``) -> every
    ``pickle.loads/load`` pysyncobj uses (``pysyncobj.pickle.loads/load``, which syncobj.py,
    tcp_connection.py and serializer.py look up at call time, and ``pysyncobj.journal.loads``,
    bound by ``from .pickle import loads`` at import) is replaced by the allow-list unpickler of
    :mod:`raftlog.raft.safe_pickle` (the wire parser of 16 calls it directly); rejections are
    counted (``rejected_unpickles``).
    [U: test_code_running_pickles_are_rejected, test_pysyncobj_loaders_are_patched;
    I: test_malicious_pickle_executes_nothing]
2.  **No authentication** -> ``secret`` is required (empty -> ``ValueError``) and becomes
    pysyncobj's ``password`` (Fernet over every frame, so a peer without it gets nothing
    unpickled); the admin "utility" commands (status/add/remove/set_version/transfer) are
    unregistered; dynamic membership stays off. [I: test_wrong_secret_peer_cannot_join,
    test_config_validation]
3.  **Replay checks are ``assert`` statements** (gone under ``python -O``) -> refuse to start
    when ``sys.flags.optimize`` is set. [I: test_refuses_to_run_under_python_O]
4.  **Listens on 0.0.0.0** -> ``bindAddress`` is always set: ``bind_host`` or the host of our own
    voter address. [I: test_single_node_commits_and_binds_only_the_configured_interface]
5.  **Unbounded frame length before authentication** (a 4-byte header can make it buffer 2 GiB)
    -> frames longer than :data:`MAX_FRAME_BYTES` close the connection (``oversized_frames``);
    before the handshake the cap is far lower, and a handshake has a deadline: see 16.
    [I: test_malicious_pickle_executes_nothing]
6.  **Journal without full dump loses state; default snapshot = pickle of the attributes created
    after ``SyncObj.__init__``; ``useFork`` forks** -> ``journalFile`` and ``fullDumpFile`` are
    always both set, ``useFork=False``, and pysyncobj's custom ``serializer``/``deserializer``
    hooks write/read our own checksummed cbor2 file (format below) holding
    ``machine.snapshot()``, so no pickle and no attribute scraping is involved; a corrupt dump or
    ``.meta`` stops the node instead of silently starting empty; ``data_dir`` is flock-ed.
    [I: test_cluster_survives_kill_all_and_restart, test_kill_leader_..._rejoins_by_snapshot,
    test_malicious_journal_meta_is_refused, test_corrupt_snapshot_is_refused,
    test_a_data_dir_has_one_owner]
7.  **Never fsyncs; acknowledges before anything is on disk** (its journal is an mmap, never
    synced: a follower answered append_entries and a leader counted its own copy toward the
    commit while the entries were only in the page cache, so a power loss of one voter could
    un-commit what a majority had acknowledged) -> the dump is fsynced (file, then directory
    after pysyncobj's rename); pysyncobj's journal is replaced (``pysyncobj.syncobj.
    createJournal``) by :class:`raftlog.raft.journal.DurableJournal`: ``pwrite`` + one
    ``fdatasync`` per Raft tick for everything appended in it (group commit; a CRC per entry;
    currentTerm/votedFor written tmp+fsync+rename+dir fsync before any vote or term-bearing
    message goes out, as before). Three narrow overrides on :class:`_RaftNode` order the rest:
    ``_onTick`` first makes the journal durable, then sends the held answers (so the leader's
    commit rule, later in the same tick, counts only its durable log); ``__sendNextNodeIdx``
    holds every ``next_node_idx`` answer until that point (in order; a success answer made
    before the log was cut is dropped: a lost message to Raft, ``acks_dropped``);
    ``__onBecomeLeader`` syncs a single voter's no-op (it commits it in the same tick; a leader
    with peers wins in a poll and syncs at its next tick, before the commit rule).
    ``leader_applied_before_durable`` counts breaches of the invariant (always 0).
    Log compaction's prefix removal and a snapshot install's clear are atomic rewrites
    (tmp+fsync+rename), no longer in place. Cost (bench_commit, 3 voters): commit rate
    unchanged, about 0.002 fdatasyncs per command under load.
    [U: tests/unit/raft/test_journal.py; I: test_durability.py
    test_acks_and_leader_commits_wait_for_fdatasync; every cluster test asserts 0
    ``leader_applied_before_durable``]
8.  **Slow failover** (defaults: ~1.4 s; idle follower<->follower connections are closed lazily
    at first use, so the first vote request after a leader dies is dropped) -> tuned timers
    (``raftMinTimeout > 3 x appendEntriesPeriod``, ``connectionTimeout >= raftMaxTimeout``
    validated with ``ValueError``, not ``assert``), plus a keeper on the Raft thread that pings
    every connected peer every ``peer_ping_period_s`` (unknown message types are ignored by
    pysyncobj) and closes silent connections eagerly, so a vote request never meets a stale
    connection however long the cluster was idle (ablation, 7 s idle: 190-243 ms failover
    with the keeper, 436-734 ms without). [I: test_kill_leader_...; bench_failover]
9.  **Stale leader for 30 s** (no check-quorum) -> ``leaderFallbackTimeout`` = 1 s, and
    :meth:`RaftQuorum.is_leader` additionally requires a *lease*: a majority (self included)
    echoed, in our current term, a ping we sent within the last ``leader_lease_s`` (the leader
    pings every ``append_entries_period_s``), and the Raft thread published that within the
    same bound. Send times, not receive times: pysyncobj stamps a follower's reply when it
    *processes* it, so replies buffered while the leader's process was paused (SIGSTOP, GC,
    swap) look fresh on resume — that made the first ``is_leader()`` after SIGCONT say True.
    Still not a lease in the Raft sense (pysyncobj grants votes to any higher term at once):
    controller decisions must go through the log as compare-and-set on epochs.
    [I: test_partitioned_leader_steps_down, test_sigstopped_leader_is_not_leader_after_sigcont]
10. **``sync=True`` deadlocks on the Raft thread; callbacks never fire for commands forwarded by
    followers** -> never ``sync=True``; :meth:`RaftQuorum.submit` refuses to run on the Raft
    thread; commands are only appended on the leader (a follower fails them with
    :class:`NotLeaderError` instead of forwarding); every submit has a timeout enforced by us, and
    its callback runs exactly once, timeouts fired by a thread of their own.
    [I: test_leader_emerges_commands_apply_on_all_and_followers_refuse,
    test_timeout_callback_runs_once_and_late_result_is_dropped,
    test_submit_on_the_raft_thread_is_refused]
11. **Snapshot install can roll applied state back; followers may truncate applied entries**
    -> both are detected and counted (``applied_index_regressions``,
    ``applied_entries_truncated``) and ``on_restored`` is called after every restore; the
    layer above ignores regressions by epoch.
    [I: test_a_snapshot_that_moves_applied_state_back_is_counted; every cluster test asserts
    0 regressions and 0 rejected unpickles]
12. **A machine that raises in ``apply`` is re-applied forever** (pysyncobj retries the tick)
    -> an exception from ``apply``/``restore`` is an invariant violation: the node stops
    (``fatal_error`` in :class:`QuorumStatus`), pending commands fail.
    [I: test_a_machine_that_raises_stops_the_node]
13. **The Raft thread stops when the thread that created the SyncObj exits** -> it is rebound
    to the main thread, so a quorum may be created from a short-lived thread.
    [I: test_quorum_created_in_a_short_lived_thread_keeps_running]
14. **No pre-vote** (a follower stands for election whenever its timer fires and it is
    connected to anyone; a TCP link to an unreachable peer stays "connected" until
    ``connection_timeout_s``): a node cut off from the majority raised its term every election
    timeout, and on healing its higher term deposed a healthy leader (a needless controller
    failover after every partition) -> a pre-vote (Raft thesis 9.6) in our own message types:
    when the timer fires, the node first asks its peers "would you vote for me in term T+1?";
    a peer says yes only if its log is not ahead, T+1 is above its term, it is not the leader
    and it has had no ``append_entries`` for ``election_timeout_min_s``. Only with yeses from a
    majority (itself included) within ``prevote_round_s`` does pysyncobj's election go ahead;
    nobody's term changes before that. Cost: one round trip more per election (measured by
    bench_failover). Withheld rounds are counted (``prevotes_lost``).
    [I: test_a_node_cut_off_from_the_majority_does_not_raise_its_term]
15. **A damaged journal is believed** (pysyncobj's journal has no checksums; a voter whose file
    lost or garbled acknowledged entries still votes, and may elect a leader that lacks a
    committed entry) -> every journal record carries a CRC; start-up cuts the log at the first
    bad record. A torn tail (an incomplete last record, or only zero bytes after the last good
    one) is what power loss leaves of writes that were never fdatasync-ed, hence never
    acknowledged: cut, nothing more. Anything else (a checksum mismatch, a bad length or
    sequence with data behind it) may have lost acknowledged entries: the node is
    ``journal_recovering`` — it does not stand (pre-vote), grants no pre-vote and ignores vote
    requests (``votes_withheld``) until it durably holds, from a leader's append_entries, the
    leader's commit index at the leader's term (a leader commits an entry of its own term only
    after every earlier committed entry, so everything this node ever acknowledged is back).
    Damage on a majority of voters at once leaves the group without a leader (outside the
    fault model; a single-voter group just cuts and goes on).
    [U: test_journal.py test_torn_tail_is_cut_and_not_suspect,
    test_flipped_bit_is_cut_there_and_suspect; I: test_a_voter_with_a_damaged_journal_...]
16. **Hostile traffic on the Raft port** (measured on the code before this guard: 20 outsiders,
    no secret, streaming 16 MiB junk frames at the leader deposed it; an insider's 1 MB frame
    inflated to 1 GiB). pysyncobj reads a readable socket until it would block, growing the
    buffer by ``bytes += bytes`` (quadratic), all on the Raft thread; a frame up to
    ``MAX_FRAME_BYTES`` is buffered whoever sends it; the handshake timeout counted from the
    last byte read, so a connection that kept sending never expired; ``zlib.decompress`` of a
    decrypted frame has no bound -> pysyncobj's read and parse (``TcpConnection.__tryReadBuffer``
    / ``__processParseMessage``) are replaced and its handshake callbacks wrapped:

    * *Authenticated* means pysyncobj's handshake completed on this socket: incoming, a frame
      that decrypted with the secret (the peer's random key), then one naming a known voter
      (its 'readonly' nodes and utility commands are refused, ``handshakes_refused``);
      outgoing, the dialled voter's random key, decrypted.
    * Per state caps: before the handshake a frame, and what it inflates to, may not exceed
      :data:`MAX_HANDSHAKE_FRAME_BYTES` (4 KiB; the real handshake frames measure 232 and 296
      bytes); afterwards :data:`MAX_FRAME_BYTES` and :data:`MAX_INFLATED_BYTES` (16 MiB each;
      legit frames stay near 64 KiB + one command, so ``max_command_bytes`` <= 8 MiB is
      validated). A header above the cap closes the connection as soon as its 4 bytes are in
      (``oversized_frames``).
    * The receive buffer is a bytearray appended in place, frames cut off its front with
      ``del``; one readable event reads at most 1 MiB, and stops once a whole frame of the cap
      can be buffered: a connection holds at most cap + 4 bytes, and no connection keeps the
      Raft thread for more than one bounded read per poll.
    * Inflation is ``zlib.decompressobj().decompress(data, cap + 1)``: more than the cap closes
      the connection (``oversized_inflations``). pysyncobj's only other inflation of what a peer
      could send (gzip of its own dump format, a snapshot from the leader) is never used here
      (hazard 6) and is disabled outright: ``pysyncobj.serializer.gzip`` refuses.
    * Handshake deadline: a connection not authenticated ``connect_timeout_s`` after its accept
      (or connect()) is closed whatever it sends, checked every tick (``handshake_timeouts``).
    * At most :data:`MAX_UNAUTHENTICATED_CONNECTIONS` (64) incoming connections in the
      handshake at once; a new one beyond closes the oldest (``handshakes_evicted``): holding
      slots locks nobody out, an attacker has to open 64 connections within a peer's handshake
      (one round trip).
    * The wire's replay checks (frame timestamps never go back, the session key) are real
      checks, no longer ``assert`` statements.

    Cost: bench_commit's commit rate unchanged. [P: test_outsider_flood_neither_deposes_the_
    leader_nor_stalls_commits, test_insider_inflation_bomb_is_refused_without_inflating,
    test_a_trickling_connection_is_closed_at_the_handshake_deadline,
    test_connections_in_the_handshake_are_capped_oldest_first,
    test_pysyncobj_gzip_dump_format_is_disabled]

Files in ``data_dir`` (one node each; ``raft.lock`` is flock-ed while a quorum owns the
directory, so a second process on the same directory fails with :class:`QuorumStorageError`):

* ``raft-journal.bin`` — the Raft log (entries, a CRC each; format in
  :mod:`raftlog.raft.journal`; rebuilt from the leader if lost, see 7 and 15; a pysyncobj
  journal found here is converted once) and ``raft-journal.bin.meta`` (pickled dict:
  currentTerm, votedForNodeId, raftCommitIndex; read with the allow-list unpickler).
* ``raft-snapshot.bin`` — the full dump, written by this module. Checksummed, not rebuildable::

      offset 0   8 bytes  magic b"RLQSNAP1"
      offset 8   4 bytes  CRC-32 (zlib.crc32, big-endian) of everything after offset 12
      offset 12  cbor2 map {"last": [command, index, term],   # the log entry at the snapshot
                            "prev": [command, index, term],   # the entry before it
                            "voters": ["127.0.0.1:7001", ...],
                            "state": <machine.snapshot() bytes>}

  Worked example: state ``b"S"`` at index 7 (term 2), previous entry index 6 (term 2), one
  voter: bytes 0-7 ``RLQSNAP1``, bytes 8-11 the CRC of the cbor2 map, bytes 12.. ``a4 64 6c 61
  73 74 83 ...`` (a map of 4: "last" -> [h'00...', 7, 2], ...). pysyncobj sends this file as is
  to a follower that needs a snapshot; the follower checks the CRC before restoring.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import heapq
import logging
import math
import os
import struct
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, NamedTuple, Protocol

import cbor2
import pysyncobj.journal as _pso_journal
import pysyncobj.pickle as _pso_pickle
import pysyncobj.serializer as _pso_serializer
import pysyncobj.syncobj as _pso_syncobj
import pysyncobj.tcp_connection as _pso_tcp
import pysyncobj.transport as _pso_transport
import pysyncobj.version as _pso_version
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as _pso_monotonic

from . import safe_pickle
from .journal import DurableJournal

__all__ = [
    "JOURNAL_FILE_NAME",
    "LOCK_FILE_NAME",
    "MAX_FRAME_BYTES",
    "MAX_HANDSHAKE_FRAME_BYTES",
    "MAX_INFLATED_BYTES",
    "MAX_UNAUTHENTICATED_CONNECTIONS",
    "SNAPSHOT_FILE_NAME",
    "NotLeaderError",
    "QuorumClosedError",
    "QuorumConfig",
    "QuorumError",
    "QuorumOverloadedError",
    "QuorumStatus",
    "QuorumStorageError",
    "QuorumTimeoutError",
    "QuorumUnknownOutcomeError",
    "RaftQuorum",
    "Role",
    "SnapshotFile",
    "SnapshotFileError",
    "StateMachine",
    "VoterStatus",
    "WrongThreadError",
    "decode_snapshot_file",
    "encode_snapshot_file",
    "install_pysyncobj_guards",
    "oversized_frame_count",
    "oversized_inflation_count",
    "wire_frame",
]

logger = logging.getLogger(__name__)

PYSYNCOBJ_VERSION: Final = "0.3.17"
JOURNAL_FILE_NAME: Final = "raft-journal.bin"
SNAPSHOT_FILE_NAME: Final = "raft-snapshot.bin"
LOCK_FILE_NAME: Final = "raft.lock"  # flock held while a quorum owns the directory
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

_SNAPSHOT_MAGIC: Final = b"RLQSNAP1"
# Our own peer messages, handled before pysyncobj sees them (it ignores unknown types anyway):
# {"type": "raftlog_ping", "sent": <sender's monotonic s>, "term": n} is answered with
# {"type": "raftlog_pong", "echo": <sent>, "term": <responder's current term>}.
_PING_TYPE: Final = "raftlog_ping"
_PONG_TYPE: Final = "raftlog_pong"
_PREVOTE_TYPE: Final = "raftlog_prevote"  # hazard 14; pysyncobj ignores unknown types
_PREVOTE_REPLY_TYPE: Final = "raftlog_prevote_reply"
_BIND_RETRY_S: Final = 0.1
_DRAIN_PER_TICK_MAX: Final = 10_000
_UTILITY_COMMANDS: Final = ("status", "add", "remove", "set_version", "transfer")
# pysyncobj's numeric states.
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
# pysyncobj connection states (tcp_connection.CONNECTION_STATE).
_DISCONNECTED, _CONNECTED = 0, 2


# ---- errors ---------------------------------------------------------------------------------


class QuorumError(Exception):
    """Base of the adapter's operating errors. ``retriable``: may the caller simply try again?"""

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


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


_ROLES: Final = {_FOLLOWER: Role.FOLLOWER, _CANDIDATE: Role.CANDIDATE, _LEADER: Role.LEADER}


def _check_timer(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _split_address(address: str) -> tuple[str, int]:
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
    tick_period_s: float = 0.01  # Raft thread poll period, <= append_entries_period_s
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
            _split_address(address)
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
        if self.tick_period_s > self.append_entries_period_s:
            raise ValueError("tick_period_s must be <= append_entries_period_s")
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


# ---- the dump file --------------------------------------------------------------------------

Entry = tuple[bytes, int, int]  # pysyncobj log entry: (command, index, term)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    last_entry: Entry
    prev_entry: Entry
    voters: tuple[str, ...]
    state: bytes


class SnapshotFileError(QuorumStorageError):
    pass


def encode_snapshot_file(snapshot: SnapshotFile) -> bytes:
    body = cbor2.dumps(
        {
            "last": list(snapshot.last_entry),
            "prev": list(snapshot.prev_entry),
            "voters": list(snapshot.voters),
            "state": snapshot.state,
        }
    )
    return _SNAPSHOT_MAGIC + struct.pack(">I", zlib.crc32(body)) + body


def _entry(value: object) -> Entry:
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], bytes)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    ):
        return (value[0], value[1], value[2])
    raise SnapshotFileError(f"bad log entry in snapshot file: {value!r:.100}")


def decode_snapshot_file(blob: bytes) -> SnapshotFile:
    if len(blob) < 12 or blob[:8] != _SNAPSHOT_MAGIC:
        raise SnapshotFileError("not a raftlog snapshot file (bad magic)")
    (crc,) = struct.unpack(">I", blob[8:12])
    body = blob[12:]
    if zlib.crc32(body) != crc:
        raise SnapshotFileError("snapshot file checksum mismatch")
    try:
        decoded = cbor2.loads(body)
    except Exception as exc:
        raise SnapshotFileError(f"snapshot file body is not cbor2: {exc}") from exc
    if not isinstance(decoded, dict):
        raise SnapshotFileError("snapshot file body is not a map")
    voters = decoded.get("voters")
    state = decoded.get("state")
    if not isinstance(voters, list) or not all(isinstance(v, str) for v in voters):
        raise SnapshotFileError("bad voters in snapshot file")
    if not isinstance(state, bytes):
        raise SnapshotFileError("bad state in snapshot file")
    return SnapshotFile(
        last_entry=_entry(decoded.get("last")),
        prev_entry=_entry(decoded.get("prev")),
        voters=tuple(voters),
        state=state,
    )


def _lock_data_dir(path: str) -> int:
    """Take ``path``'s lock file (released by ``os.close`` or by the process dying)."""
    fd = os.open(os.path.join(path, LOCK_FILE_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise QuorumStorageError(f"{path} is in use by another process or quorum") from exc
    return fd


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- process-wide guards installed into pysyncobj -------------------------------------------

_guard_lock = threading.Lock()
_oversized_frames = 0  # frames announced above their connection's cap (hazards 5, 16)
_oversized_inflations = 0  # frames whose zlib payload inflates above its cap (hazard 16)
_originals: dict[str, Callable[..., Any]] = {}  # "Class.attribute" -> pysyncobj's own function
_FRAME_HEADER: Final = struct.Struct("i")  # pysyncobj's frame length: native int32
_RECV_BYTES: Final = 64 * 1024  # one recv() call
_READ_EVENT_BYTES_MAX: Final = 1024 * 1024  # read per readable event per connection (hazard 16)
_LOG_EVERY_S: Final = 1.0  # a flood must not become a flood of log lines
_log_next_at: dict[str, float] = {}
_log_suppressed: dict[str, int] = {}


def oversized_frame_count() -> int:
    """Connections this process closed for announcing a frame above the cap of their state
    (:data:`MAX_HANDSHAKE_FRAME_BYTES` before the handshake, :data:`MAX_FRAME_BYTES` after)."""
    with _guard_lock:
        return _oversized_frames


def oversized_inflation_count() -> int:
    """Connections this process closed for a frame inflating above the cap of their state
    (:data:`MAX_HANDSHAKE_FRAME_BYTES` before the handshake, :data:`MAX_INFLATED_BYTES` after)."""
    with _guard_lock:
        return _oversized_inflations


def _warn_limited(kind: str, message: str, *args: object) -> None:
    """``logger.warning`` at most once per ``_LOG_EVERY_S`` per kind, counting the rest."""
    now = _pso_monotonic()
    with _guard_lock:
        if now < _log_next_at.get(kind, -math.inf):
            _log_suppressed[kind] = _log_suppressed.get(kind, 0) + 1
            return
        _log_next_at[kind] = now + _LOG_EVERY_S
        suppressed = _log_suppressed.pop(kind, 0)
    if suppressed:
        message += " (and %d more like it since the last report)"
        args = (*args, suppressed)
    logger.warning(message, *args)


class _InflationTooLarge(Exception):
    pass


def _inflate(data: bytes, inflated_bytes_max: int) -> bytes:
    """``zlib.decompress`` that stops after ``inflated_bytes_max`` + 1 bytes of output."""
    inflater = zlib.decompressobj()
    inflated = inflater.decompress(data, inflated_bytes_max + 1)
    if len(inflated) > inflated_bytes_max:
        raise _InflationTooLarge
    if not inflater.eof or inflater.unused_data:
        raise zlib.error("truncated zlib stream, or bytes after its end")
    return inflated


# Per-connection state, kept as attributes of pysyncobj's TcpConnection objects (hazard 16):
# ``_raftlog_opened_at`` (pysyncobj monotonic s: accepted, or connect() called) and
# ``_raftlog_authenticated`` (pysyncobj's handshake completed on this socket; an outgoing
# connection object is reused across reconnects, and every connect() clears it).


def _is_authenticated(conn: Any) -> bool:
    return getattr(conn, "_raftlog_authenticated", False) is True


def _opened_at(conn: Any) -> float:
    opened_at = getattr(conn, "_raftlog_opened_at", None)
    if not isinstance(opened_at, float):
        opened_at = conn._raftlog_opened_at = _pso_monotonic()
    return opened_at


def _stamp_opened(conn: Any) -> None:
    conn._raftlog_opened_at = _pso_monotonic()
    conn._raftlog_authenticated = False


def _frame_bytes_max(conn: Any) -> int:
    return MAX_FRAME_BYTES if _is_authenticated(conn) else MAX_HANDSHAKE_FRAME_BYTES


def _read_buffer(conn: Any) -> bytearray:
    """The connection's receive buffer as a bytearray: appended in place, frames cut off the
    front with ``del`` (pysyncobj's ``bytes +=`` copied the whole buffer on every recv)."""
    buffer = conn._TcpConnection__readBuffer
    if type(buffer) is not bytearray:
        buffer = conn._TcpConnection__readBuffer = bytearray(buffer)
    return buffer


def _announced_length(conn: Any, buffer: bytearray, frame_bytes_max: int) -> int | None:
    """The length the frame at the front of ``buffer`` (4 bytes or more) announces; None, and
    ``conn`` closed, if that is above its cap."""
    global _oversized_frames
    (length,) = _FRAME_HEADER.unpack_from(buffer)
    if 0 <= length <= frame_bytes_max:
        return int(length)
    with _guard_lock:
        _oversized_frames += 1
    _warn_limited(
        "oversized_frame",
        "closing a Raft connection (%s) that announced a %d-byte frame (cap %d)",
        "authenticated" if _is_authenticated(conn) else "before the handshake",
        length,
        frame_bytes_max,
    )
    conn.disconnect()
    return None


def _bounded_read(conn: Any) -> None:
    """Replaces ``TcpConnection.__tryReadBuffer`` (hazard 16), which read until the socket would
    block. Reads at most ``_READ_EVENT_BYTES_MAX`` per readable event, and only until a whole
    frame of the connection's cap can be buffered; a frame header above the cap closes the
    connection as soon as its 4 bytes are in. The poller is level-triggered: what is left in
    the socket is read at the next poll, after the other connections had their turn."""
    buffer = _read_buffer(conn)
    frame_bytes_max = _frame_bytes_max(conn)
    buffered_bytes_max = _FRAME_HEADER.size + frame_bytes_max  # then a whole frame is in
    sock = conn._TcpConnection__socket
    budget = _READ_EVENT_BYTES_MAX
    while budget > 0 and len(buffer) < buffered_bytes_max:
        try:
            incoming = sock.recv(min(_RECV_BYTES, budget, buffered_bytes_max - len(buffer)))
        except BlockingIOError:
            break
        except OSError:
            conn.disconnect()
            return
        if not incoming:
            conn.disconnect()
            return
        buffer += incoming
        budget -= len(incoming)
        header_in = len(buffer) >= _FRAME_HEADER.size
        if header_in and _announced_length(conn, buffer, frame_bytes_max) is None:
            return
    conn._TcpConnection__lastReadTime = _pso_monotonic()


def _bounded_parse_message(conn: Any) -> Any:
    """Replaces ``TcpConnection.__processParseMessage`` (hazards 5 and 16): the next whole
    frame, decrypted, inflated within the cap of the connection's state, unpickled by the
    allow-list; None when no whole frame is buffered or the connection was closed. The replay
    checks pysyncobj wrote as ``assert`` are real checks here."""
    global _oversized_inflations
    buffer = _read_buffer(conn)
    if len(buffer) < _FRAME_HEADER.size:
        return None
    authenticated = _is_authenticated(conn)
    length = _announced_length(conn, buffer, _frame_bytes_max(conn))
    if length is None:
        return None
    end = _FRAME_HEADER.size + length
    if len(buffer) < end:
        return None
    with memoryview(buffer) as view:
        data = bytes(view[_FRAME_HEADER.size : end])
    del buffer[:end]
    try:
        encryptor = conn.encryptor
        if encryptor:
            timestamp = encryptor.extract_timestamp(data)
            if timestamp < conn.recvLastTimestamp:
                raise ValueError("frame older than the last one (replayed?)")
            conn.recvLastTimestamp = timestamp
            data = encryptor.decrypt(data)
        inflated_bytes_max = MAX_INFLATED_BYTES if authenticated else MAX_HANDSHAKE_FRAME_BYTES
        message = safe_pickle.loads(_inflate(data, inflated_bytes_max))
        if conn.recvRandKey:
            rand_key, message = message
            if rand_key != conn.recvRandKey:
                raise ValueError("wrong session key")
    except _InflationTooLarge:
        with _guard_lock:
            _oversized_inflations += 1
        _warn_limited(
            "oversized_inflation",
            "closing a Raft connection (%s) whose %d-byte frame inflates beyond %d bytes",
            "authenticated" if authenticated else "before the handshake",
            length,
            inflated_bytes_max,
        )
        conn.disconnect()
        return None
    except Exception:  # pysyncobj's own rule: any bad frame closes the connection
        conn.disconnect()
        return None
    return message


def _stamped_connect(conn: Any, host: str, port: int) -> bool:
    """Wraps ``TcpConnection.connect``: the handshake deadline counts from here (hazard 16)."""
    _stamp_opened(conn)
    connected: bool = _originals["TcpConnection.connect"](conn, host, port)
    return connected


def _quorum_of(transport: Any) -> RaftQuorum | None:
    quorum = getattr(transport._syncObj, "_raftlog_quorum", None)
    return quorum if isinstance(quorum, RaftQuorum) else None


def _admit_incoming(transport: Any, conn: Any) -> None:
    """Wraps ``TCPTransport._onNewIncomingConnection`` (hazard 16): stamp the connection and
    keep at most :data:`MAX_UNAUTHENTICATED_CONNECTIONS` in the handshake, closing the oldest."""
    _stamp_opened(conn)
    _originals["TCPTransport._onNewIncomingConnection"](transport, conn)
    unknown = transport._unknownConnections
    excess = len(unknown) - MAX_UNAUTHENTICATED_CONNECTIONS
    if excess <= 0:
        return
    for oldest in heapq.nsmallest(excess, unknown, key=_opened_at):
        unknown.discard(oldest)
        oldest.disconnect()
    quorum = _quorum_of(transport)
    if quorum is not None:
        quorum._counters.handshakes_evicted += excess
    _warn_limited(
        "handshakes_evicted",
        "more than %d Raft connections in the handshake: closed the %d oldest",
        MAX_UNAUTHENTICATED_CONNECTIONS,
        excess,
    )


def _incoming_handshake(transport: Any, conn: Any, message: Any) -> None:
    """Wraps ``TCPTransport._onIncomingMessageReceived`` (hazard 16). After the random key,
    the one message pysyncobj accepts must name a voter: its 'readonly' nodes and utility
    commands (lists) are refused. Marks the connection authenticated once pysyncobj took it."""
    naming_step = conn.sendRandKey or transport._syncObj.encryptor is None
    if naming_step and not (isinstance(message, str) and message in transport._nodeAddrToNode):
        quorum = _quorum_of(transport)
        if quorum is not None:
            quorum._counters.handshakes_refused += 1
        _warn_limited("handshake_refused", "refused a Raft handshake naming no voter")
        transport._unknownConnections.discard(conn)
        conn.disconnect()
        return
    _originals["TCPTransport._onIncomingMessageReceived"](transport, conn, message)
    if conn.state == _CONNECTED and conn not in transport._unknownConnections:
        conn._raftlog_authenticated = True


def _outgoing_handshake(transport: Any, conn: Any, message: Any) -> None:
    """Wraps ``TCPTransport._onOutgoingMessageReceived`` (hazard 16): the voter we dialled sent
    its random key in a frame that decrypted with the secret; the connection is authenticated."""
    _originals["TCPTransport._onOutgoingMessageReceived"](transport, conn, message)
    if conn.state == _CONNECTED and conn.sendRandKey:
        conn._raftlog_authenticated = True


class _RefusedGzip:
    """Stands in for the ``gzip`` module inside ``pysyncobj.serializer`` (hazard 16): pysyncobj's
    own dump format (gzip + pickle, also what it would inflate from a peer's snapshot) is never
    used here — ``fullDumpFile`` and our serializer/deserializer are always set (hazard 6) — and
    this makes that true by construction rather than by configuration."""

    @staticmethod
    def GzipFile(*args: object, **kwargs: object) -> Any:
        raise QuorumStorageError("pysyncobj's gzip dump format is disabled in raftlog")


def _durable_store_meta(storer: Any, meta: dict[str, Any]) -> None:
    """``MetaStorer.storeMeta`` with fsync: currentTerm/votedFor must be durable before use."""
    path = storer.getPath()
    tmp_path = path + ".tmp"
    with open(tmp_path, "wb") as f:
        f.write(_pso_pickle.dumps(meta))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _create_journal(path: str | None) -> DurableJournal:
    """Replaces ``pysyncobj.syncobj.createJournal`` (hazard 7): our fsync-ing journal."""
    if path is None:  # RaftQuorum always sets journalFile (hazard 6)
        raise ValueError("raftlog requires a journal file")
    return DurableJournal(path)


# (owner, attribute, guard): pysyncobj's methods replaced or wrapped, hazards 5 and 16. Wrappers
# find pysyncobj's own function in _originals under "Owner.attribute".
_METHOD_GUARDS: Final[tuple[tuple[type, str, Callable[..., Any]], ...]] = (
    (_pso_tcp.TcpConnection, "_TcpConnection__tryReadBuffer", _bounded_read),
    (_pso_tcp.TcpConnection, "_TcpConnection__processParseMessage", _bounded_parse_message),
    (_pso_tcp.TcpConnection, "connect", _stamped_connect),
    (_pso_transport.TCPTransport, "_onNewIncomingConnection", _admit_incoming),
    (_pso_transport.TCPTransport, "_onIncomingMessageReceived", _incoming_handshake),
    (_pso_transport.TCPTransport, "_onOutgoingMessageReceived", _outgoing_handshake),
)
_durable_store_meta.raftlog_guard = True  # type: ignore[attr-defined]


def install_pysyncobj_guards() -> None:
    """Patch pysyncobj (idempotent; runs at import and before every SyncObj is created)."""
    if _pso_version.VERSION != PYSYNCOBJ_VERSION:
        raise ImportError(
            f"raftlog's pysyncobj guards are written for {PYSYNCOBJ_VERSION}, "
            f"found {_pso_version.VERSION}"
        )
    with _guard_lock:
        _pso_pickle.loads = safe_pickle.loads
        _pso_pickle.load = safe_pickle.load
        _pso_journal.loads = safe_pickle.loads
        _pso_journal.MetaStorer.storeMeta = _durable_store_meta
        _pso_syncobj.createJournal = _create_journal
        _pso_serializer.gzip = _RefusedGzip
        for owner, name, guard in _METHOD_GUARDS:
            current = getattr(owner, name)
            if not getattr(current, "raftlog_guard", False):
                _originals[f"{owner.__name__}.{name}"] = current
                guard.raftlog_guard = True  # type: ignore[attr-defined]
                setattr(owner, name, guard)
    _install_log_watch()
    if not (
        _pso_syncobj.createJournal is _create_journal
        and _pso_pickle.loads is safe_pickle.loads
        and _pso_pickle.load is safe_pickle.load
        and _pso_journal.loads is safe_pickle.loads
        and all(getattr(owner, name) is guard for owner, name, guard in _METHOD_GUARDS)
    ):
        raise RuntimeError("pysyncobj's unpicklers or connection handling could not be replaced")


def wire_frame(payload: bytes, secret: str | None = None, *, deflated: bool = False) -> bytes:
    """One frame as pysyncobj's ``TcpConnection.send`` writes it: native int32 length, then
    ``zlib(payload)``, Fernet-encrypted when a secret is set. ``payload`` is normally a protocol
    2 pickle; ``deflated=True`` takes it as an already compressed zlib stream (to build an
    inflation bomb without holding what it inflates to). For tools and tests that probe a Raft
    port."""
    from pysyncobj.encryptor import getEncryptor

    data = payload if deflated else zlib.compress(payload, 3)
    if secret is not None:
        data = getEncryptor(secret).encrypt_at_time(data, int(_pso_monotonic()))
    return _FRAME_HEADER.pack(len(data)) + data


# pysyncobj logs two events we must count but cannot hook: truncation of applied entries, and
# exceptions swallowed by its tick loop. The records carry the Raft thread's ident.
_quorums_by_thread: weakref.WeakValueDictionary[int, RaftQuorum] = weakref.WeakValueDictionary()


class _PysyncobjLogWatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        quorum = _quorums_by_thread.get(record.thread or 0)
        if quorum is None or not isinstance(record.msg, str):
            return
        if record.msg.startswith("truncating already-applied"):
            quorum._count_truncation()
        elif record.msg.startswith("failed _onTick"):
            quorum._count_tick_error()


def _install_log_watch() -> None:
    pso_logger = logging.getLogger("pysyncobj.syncobj")
    if not any(isinstance(h, _PysyncobjLogWatch) for h in pso_logger.handlers):
        pso_logger.addHandler(_PysyncobjLogWatch(level=logging.ERROR))


install_pysyncobj_guards()


# ---- the SyncObj subclass -------------------------------------------------------------------


class _RaftNode(SyncObj):  # type: ignore[misc]
    """The pysyncobj object. Owned by one :class:`RaftQuorum`; everything here runs on the
    Raft thread except ``raftlog_submit`` (thread-safe queue put).

    No properties here: ``SyncObj.__init__`` calls ``getattr`` on every attribute (``dir``)
    before its own fields exist.
    """

    def __init__(self, quorum: RaftQuorum, self_address: str, others: list[str], conf: Any):
        self._raftlog_quorum = quorum
        # The Raft thread starts inside SyncObj.__init__ and may call back (snapshot restore,
        # fatal stop) before that returns: the quorum must already know its node.
        quorum._node = self
        super().__init__(self_address, others, conf)

    @replicated  # type: ignore[untyped-decorator]
    def _raftlog_apply(self, command: bytes) -> bytes | None:
        return self._raftlog_quorum._apply_committed(self.raftLastApplied + 1, command)

    def raftlog_submit(self, command: bytes, callback: Callable[[Any, int], None]) -> None:
        self._raftlog_apply(command, callback=callback)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Hazard 7: every tick starts with the journal durable (one fdatasync for all that the
        # last tick appended) and only then releases the acknowledgements held meanwhile; the
        # leader's commit rule, which counts its own log, runs after this in the same tick.
        self._raftlog_quorum._make_durable()
        super()._onTick(timeToWait)

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
        self._raftlog_quorum._hold_ack(node, message)

    def _SyncObj__onBecomeLeader(self) -> None:
        SyncObj._SyncObj__onBecomeLeader(self)
        # A single voter wins inside _onTick's election step, and the commit rule later in
        # that same tick counts its no-op: make it durable first. With peers, the win comes
        # from a vote answer handled in the poll at the end of a tick, and the next tick's
        # _make_durable runs before that tick's commit rule; syncing here as well would only
        # hold the new leader's first view (and its first accepted command) behind an
        # fdatasync.
        if not self._SyncObj__otherNodes:
            self._raftlog_quorum._make_durable()

    def _SyncObj__connectedToAnyone(self) -> bool:
        # Overrides SyncObj.__connectedToAnyone (its mangled name). pysyncobj calls it only
        # where a follower's or candidate's election timer has fired, to decide whether to
        # stand: hazard 14 puts the pre-vote there.
        return bool(self._raftlog_quorum._prevote_won())

    def _checkCommandsToApply(self) -> None:
        # Only a leader appends. pysyncobj would forward a follower's commands to the leader,
        # a path whose callbacks were seen never to fire; fail them here instead.
        if self._isLeader():
            super()._checkCommandsToApply()
            return
        queue = self._SyncObj__commandsQueue
        for _ in range(_DRAIN_PER_TICK_MAX):
            try:
                _command, callback = queue.get_nowait()
            except Exception:  # queue.Empty
                return
            self._SyncObj__callErrCallback(FAIL_REASON.NOT_LEADER, callback)


# ---- the quorum -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    deadline: float
    callback: Callable[[bytes | None, QuorumError | None], None]


@dataclass(frozen=True, slots=True)
class _View:
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


@dataclass(slots=True)
class _Counters:
    applied_index_regressions: int = 0
    applied_entries_truncated: int = 0
    snapshot_restores: int = 0
    snapshots_written: int = 0
    snapshot_write_failures: int = 0
    connections_closed_by_keeper: int = 0
    submit_timeouts: int = 0
    late_results: int = 0
    tick_errors: int = 0
    prevotes_lost: int = 0
    acks_dropped: int = 0
    leader_applied_before_durable: int = 0
    votes_withheld: int = 0
    handshake_timeouts: int = 0
    handshakes_evicted: int = 0
    handshakes_refused: int = 0


@dataclass(slots=True)
class _TickState:
    """Owned by the Raft thread."""

    started: bool = False
    next_keeper_at: float = 0.0
    next_lease_ping_at: float = 0.0
    # Leader lease: peer id -> the latest send time of our ping it echoed in our current term.
    lease_term: int = -1
    lease_acks: dict[str, float] = field(default_factory=dict)
    # Hazard 7: next_node_idx answers waiting for the journal's next fdatasync, each with the
    # journal's cut count when it was made (a cut since makes a success answer stale).
    held_acks: list[tuple[Any, dict[str, Any], int]] = field(default_factory=list)
    # Hazard 15: set while a damaged journal keeps this node out of elections; the target is
    # the (commit index, term) of the last append_entries from a leader.
    recovering: bool = False
    recovery_target: tuple[int, int] | None = None
    dir_sync_pending: bool = False
    destroy_requested: bool = False
    applied_index: int | None = None  # last index this node applied (or restored to)
    log_watch_registered: bool = False
    # Hazard 14 (pre-vote). As a voter: when a leader's append_entries last arrived. As a
    # would-be candidate: the round in progress (term asked for, when, who said yes).
    leader_heard_at: float = -math.inf
    prevote_term: int = -1
    prevote_started_at: float = -math.inf
    prevote_grants: set[str] = field(default_factory=set)


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
        self._id_by_address = {address: node_id for node_id, address in config.voters.items()}
        self._lock = threading.Lock()  # guards _pending, _deadlines, _next_token, _closed
        self._deadline_changed = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._next_token = 0
        self._closed = False
        self._fatal: str | None = None
        self._counters = _Counters()
        self._tick = _TickState()
        self._view: _View | None = None
        self._started = threading.Event()
        self._node: Any = None
        self._journal: DurableJournal | None = None  # set by the Raft thread's first tick
        self._journal_bytes_cut = 0
        self._raft_thread: threading.Thread | None = None

        os.makedirs(config.data_dir, exist_ok=True)
        self._lock_fd: int | None = _lock_data_dir(config.data_dir)
        try:
            self._check_data_dir()
        except BaseException:
            os.close(self._lock_fd)
            raise
        node: Any = _RaftNode(self, config.self_address, self._other_addresses(), self._conf())
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
        self._timer = threading.Thread(
            target=self._run_timer, name=f"raftlog-quorum-{config.node_id}-timeouts", daemon=True
        )
        self._timer.start()
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

    def _other_addresses(self) -> list[str]:
        own = self._config.self_address
        return [a for _, a in sorted(self._config.voters.items()) if a != own]

    def _bind_address(self) -> str:
        host, port = _split_address(self._config.self_address)
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
            serializer=self._write_snapshot,
            deserializer=self._read_snapshot,
            logCompactionMinEntries=c.log_compaction_min_entries,
            logCompactionMinTime=c.log_compaction_min_time_s,
            dynamicMembershipChange=False,
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
            self._expire(token)  # no-op if the result is being delivered right now
            done.wait(1.0)
        if not outcome:  # pragma: no cover - the claim above guarantees an outcome
            raise QuorumTimeoutError(f"no result within {timeout_s} s")
        result, error = outcome[0]
        if error is not None:
            raise error
        assert result is not None
        return result

    def submit_async(
        self,
        command: bytes,
        timeout_s: float,
        callback: Callable[[bytes | None, QuorumError | None], None],
    ) -> None:
        """Like :meth:`submit` without blocking: ``callback(result, None)`` or
        ``callback(None, error)`` exactly once: on the Raft thread (results), on the quorum's
        timeout thread (:class:`QuorumTimeoutError`), or on the calling thread when the command
        fails before it is queued (not leader, closed, overloaded)."""
        self._submit(command, timeout_s, callback)

    def is_leader(self) -> bool:
        """Raft leader, and a majority (self included) answered within ``leader_lease_s``, and
        the Raft thread published that within the same bound. Gates controller actions; it is
        not a guarantee that no other leader exists (see the module docstring, hazard 9)."""
        return self._leads(self._view, _pso_monotonic())

    def _leads(self, view: _View | None, now: float) -> bool:
        if view is None or self._closed or self._fatal is not None:
            return False
        lease = self._config.lease_s
        return (
            view.role is Role.LEADER
            and now - view.at <= lease
            and now - view.majority_acked_at <= lease
        )

    def leader_id(self) -> int | None:
        """The last leader this node heard of (may be stale; None during elections)."""
        view = self._view
        return None if view is None else view.leader_id

    def wait_for_leader(self, timeout_s: float) -> int | None:
        deadline = _pso_monotonic() + timeout_s
        while True:
            leader = self.leader_id()
            if leader is not None or self._closed:
                return leader
            if _pso_monotonic() >= deadline:
                return None
            time.sleep(self._config.tick_period_s)

    def status(self) -> QuorumStatus:
        view = self._view
        now = _pso_monotonic()
        counters = self._counters
        if view is None:
            view = _View(now, Role.FOLLOWER, 0, None, 0, 0, 0, 0, -math.inf, False, (), 0, 0)
        is_leader = self._leads(view, now)
        has_quorum = is_leader if view.role is Role.LEADER else view.connected_quorum
        return QuorumStatus(
            node_id=self._config.node_id,
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
            fatal_error=self._fatal,
            journal_durable_index=view.journal_durable_index,
            journal_syncs=view.journal_syncs,
            acks_dropped=counters.acks_dropped,
            leader_applied_before_durable=counters.leader_applied_before_durable,
            journal_bytes_cut=self._journal_bytes_cut,
            journal_recovering=view.recovering,
            votes_withheld=counters.votes_withheld,
            oversized_inflations=oversized_inflation_count(),
            handshake_timeouts=counters.handshake_timeouts,
            handshakes_evicted=counters.handshakes_evicted,
            handshakes_refused=counters.handshakes_refused,
        )

    def force_snapshot(self) -> None:
        """Ask pysyncobj to dump + compact the log at its next tick (tests, operators)."""
        self._node.forceLogCompaction()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the Raft thread, close its sockets and files; fail every pending command."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline_changed.notify_all()
        node, thread = self._node, self._raft_thread
        stopped = node is None or thread is None or not thread.is_alive()
        if node is not None:
            node.destroy()  # the Raft thread closes sockets and the journal, then exits
            if thread is not None and threading.current_thread() is not thread:
                thread.join(timeout_s)
                stopped = not thread.is_alive()
                if stopped:
                    self._close_transmission_files(node)
                else:
                    logger.error("the Raft thread did not stop within %.1f s", timeout_s)
        for ident, quorum in list(_quorums_by_thread.items()):
            if quorum is self:
                _quorums_by_thread.pop(ident, None)
        if stopped and self._lock_fd is not None:  # never unlock under a live journal writer
            os.close(self._lock_fd)
            self._lock_fd = None
        self._fail_all(QuorumClosedError(self._fatal or "quorum closed"))

    # ---- submit machinery (any thread) ------------------------------------------------------

    def _submit(
        self,
        command: bytes,
        timeout_s: float,
        callback: Callable[[bytes | None, QuorumError | None], None],
    ) -> int | None:
        if not isinstance(command, bytes):
            raise TypeError(f"command must be bytes, not {type(command).__name__}")
        if len(command) > self._config.max_command_bytes:
            raise ValueError(f"command of {len(command)} bytes exceeds max_command_bytes")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s!r}")
        error: QuorumError | None = None
        token = -1
        view = self._view
        with self._lock:
            if self._closed or self._fatal is not None:
                error = QuorumClosedError(self._fatal or "quorum closed")
            elif view is None or view.role is not Role.LEADER:
                error = NotLeaderError(None if view is None else view.leader_id)
            elif len(self._pending) >= self._config.max_pending_commands:
                error = QuorumOverloadedError(
                    f"{len(self._pending)} commands in flight (max_pending_commands)"
                )
            else:
                token = self._next_token
                self._next_token += 1
                deadline = _pso_monotonic() + timeout_s
                self._pending[token] = _Pending(deadline, callback)
                heapq.heappush(self._deadlines, (deadline, token))
                if self._deadlines[0][1] == token:
                    self._deadline_changed.notify()
        if error is not None:
            callback(None, error)
            return None

        def on_result(result: Any, err: int) -> None:
            self._on_result(token, result, err)

        self._node.raftlog_submit(command, on_result)
        return token

    def _expire(self, token: int) -> None:
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is not None:
                self._counters.submit_timeouts += 1
        if pending is not None:
            _deliver(pending, None, QuorumTimeoutError("no result within the timeout"))

    def _run_timer(self) -> None:
        """The timeout thread: fails each pending command at its deadline."""
        while True:
            due: list[int] = []
            with self._lock:
                while not self._closed:
                    now = _pso_monotonic()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        _, token = heapq.heappop(self._deadlines)
                        if token in self._pending:
                            due.append(token)
                    if due:
                        break
                    wait_s = self._deadlines[0][0] - now if self._deadlines else None
                    self._deadline_changed.wait(wait_s)
                if self._closed:
                    return
            for token in due:
                self._expire(token)

    def _on_result(self, token: int, result: Any, err: int) -> None:
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is None:
                self._counters.late_results += 1
        if pending is None:
            return
        if err == FAIL_REASON.SUCCESS and isinstance(result, bytes):
            _deliver(pending, result, None)
        elif err == FAIL_REASON.SUCCESS:  # our apply returned None: the node went fatal
            _deliver(pending, None, QuorumClosedError(self._fatal or "apply failed"))
        else:
            _deliver(pending, None, self._error_for(err))

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

    def _fail_all(self, error: QuorumError) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        for item in pending:
            _deliver(item, None, error)

    # ---- Raft thread ------------------------------------------------------------------------

    def _apply_committed(self, index: int, command: bytes) -> bytes | None:
        if self._fatal is not None:
            return None
        tick = self._tick
        journal = self._journal
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

    def _write_snapshot(self, tmp_path: str, data: Any) -> None:
        """pysyncobj's serializer hook (Raft thread): it renames ``tmp_path`` afterwards."""
        try:
            last, prev, cluster = data
            snapshot = SnapshotFile(
                last_entry=(bytes(last[0]), int(last[1]), int(last[2])),
                prev_entry=(bytes(prev[0]), int(prev[1]), int(prev[2])),
                voters=tuple(sorted(str(node.id) for node in cluster)),
                state=self._machine.snapshot(),
            )
            with open(tmp_path, "wb") as f:
                f.write(encode_snapshot_file(snapshot))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self._counters.snapshot_write_failures += 1
            logger.exception("writing the snapshot failed")
            raise
        self._counters.snapshots_written += 1
        self._tick.dir_sync_pending = True

    def _read_snapshot(self, path: str) -> tuple[Entry, Entry, set[str]]:
        """pysyncobj's deserializer hook (Raft thread): at start-up and on snapshot install."""
        try:
            with open(path, "rb") as f:
                snapshot = decode_snapshot_file(f.read())
                os.fsync(f.fileno())  # a received snapshot was written without fsync
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
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
        if self._on_restored is not None:
            try:
                self._on_restored()
            except Exception:
                logger.exception("on_restored raised (ignored)")
        return snapshot.last_entry, snapshot.prev_entry, set(snapshot.voters)

    def _set_fatal(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            logger.critical("raft quorum node %d stops: %s", self._config.node_id, reason)
        if not self._tick.destroy_requested and self._node is not None:
            self._tick.destroy_requested = True
            self._node.destroy()
        self._fail_all(QuorumClosedError(reason))
        self._started.set()  # do not keep __init__ waiting for a node that stopped

    # ---- journal durability (hazards 7 and 15), Raft thread ----------------------------------

    def _hold_ack(self, peer: Any, message: dict[str, Any]) -> None:
        journal = self._node._SyncObj__raftLog
        self._tick.held_acks.append((peer, message, journal.cuts))

    def _make_durable(self) -> None:
        """Group commit: one fdatasync for everything appended since the last call, then send
        the held append_entries answers it covers, in order. Called at the start of every tick
        (and after this node becomes leader)."""
        node, tick = self._node, self._tick
        journal: DurableJournal = node._SyncObj__raftLog
        if self._journal is not journal:
            self._adopt_journal(journal)
        if self._fatal is not None:
            return
        try:
            journal.sync()
        except OSError as exc:
            # Never retry an fdatasync that failed: Linux may have dropped the dirty pages and
            # a second call would report success for data that is gone (PostgreSQL's fsyncgate).
            tick.held_acks.clear()
            self._set_fatal(f"Raft journal write/fdatasync failed: {exc!r}")
            return
        if tick.recovering:
            self._check_recovered(journal)
        if not tick.held_acks:
            return
        held, tick.held_acks = tick.held_acks, []
        durable = journal.durable_last_index
        transport = node._SyncObj__transport
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

    def _adopt_journal(self, journal: Any) -> None:
        if not isinstance(journal, DurableJournal):
            self._set_fatal(f"pysyncobj's journal is {type(journal).__name__}, not ours")
            raise QuorumStorageError("the durable journal is not installed")
        self._journal = journal
        damage = journal.damage
        if damage is not None:
            self._journal_bytes_cut = damage.bytes_cut
            # Hazard 15: this node may have lost entries it acknowledged. Alone, nobody can
            # give them back; with peers, stay out of elections until a leader has.
            self._tick.recovering = damage.suspect and bool(self._other_addresses())

    def _check_recovered(self, journal: DurableJournal) -> None:
        """Caught up once we durably hold the leader's commit index with the leader's term:
        a leader commits an entry of its own term only after every earlier committed entry, so
        every entry this node ever acknowledged and that counted is then back."""
        target = self._tick.recovery_target
        if target is None:
            return
        commit_index, term = target
        first_index = journal[0][1]
        if not first_index <= commit_index <= journal.durable_last_index:
            return
        if journal[commit_index - first_index][2] == term:
            self._tick.recovering = False
            logger.warning(
                "Raft journal recovered from the leader up to index %d (term %d): voting again",
                commit_index,
                term,
            )

    def _count_truncation(self) -> None:
        self._counters.applied_entries_truncated += 1

    def _count_tick_error(self) -> None:
        self._counters.tick_errors += 1

    def _on_tick(self) -> None:
        """Runs on the Raft thread at the end of every pysyncobj tick."""
        try:
            self._tick_once()
        except Exception:
            # Raising would make pysyncobj skip this tick's poll and retry; log and go on.
            self._counters.tick_errors += 1
            logger.exception("the quorum's tick callback raised")

    def _tick_once(self) -> None:
        now = _pso_monotonic()
        node = self._node
        tick = self._tick
        if not tick.log_watch_registered:
            _quorums_by_thread[threading.get_ident()] = self
            tick.log_watch_registered = True
        if tick.dir_sync_pending and not os.path.exists(self._config.snapshot_path + ".tmp"):
            tick.dir_sync_pending = False
            _fsync_dir(self._config.data_dir)
        self._close_stalled_handshakes(now)
        if now >= tick.next_keeper_at:
            tick.next_keeper_at = now + self._config.peer_ping_period_s
            self._keep_connections(now)
        elif node._isLeader() and now >= tick.next_lease_ping_at:
            self._ping_peers(now)
        self._view = self._make_view(now)
        if not tick.started and not node._SyncObj__needLoadDumpFile:
            tick.started = True
            self._started.set()

    def _close_stalled_handshakes(self, now: float) -> None:
        """Hazard 16's deadline, every tick: a connection that has not completed pysyncobj's
        handshake within ``connect_timeout_s`` of its accept or connect() is closed, whatever it
        sent meanwhile (pysyncobj's own timeout, and the keeper's before this, counted from the
        last byte read, so a connection that kept sending never expired). At most
        ``MAX_UNAUTHENTICATED_CONNECTIONS`` incoming plus one outgoing per voter to look at."""
        transport = self._node._SyncObj__transport
        deadline_s = self._config.connect_timeout_s
        stalled = [c for c in transport._unknownConnections if now - _opened_at(c) > deadline_s]
        stalled.extend(
            conn
            for conn in transport._connections.values()
            if conn.state != _DISCONNECTED
            and not _is_authenticated(conn)
            and now - _opened_at(conn) > deadline_s
        )
        for conn in stalled:
            self._counters.handshake_timeouts += 1
            transport._unknownConnections.discard(conn)
            conn.disconnect()

    def _keep_connections(self, now: float) -> None:
        """Ping every connected peer; close links that went silent (handshakes that never
        finish are :meth:`_close_stalled_handshakes`' business)."""
        transport = self._node._SyncObj__transport
        for conn in list(transport._connections.values()):
            silent_s = now - conn._TcpConnection__lastReadTime
            if conn.state == _CONNECTED and silent_s > self._config.connection_timeout_s:
                self._counters.connections_closed_by_keeper += 1
                conn.disconnect()
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
        """The election timer fired: may pysyncobj stand for election now?

        True once a majority (self included) answered yes to this round's pre-vote; else it
        starts a round (when none is running for the next term, or the last one timed out) and
        says no — pysyncobj asks again every tick while its timer stays expired.
        """
        node, tick = self._node, self._tick
        others = node._SyncObj__otherNodes
        if not others:
            return True
        if tick.recovering:
            return False  # hazard 15: a damaged journal does not stand for election
        if not node._SyncObj__connectedNodes:
            return False  # pysyncobj's own rule: nobody to ask
        now = _pso_monotonic()
        term = int(node.raftCurrentTerm) + 1
        running = tick.prevote_term == term and now - tick.prevote_started_at < (
            self._config.prevote_round_s
        )
        if running and 1 + len(tick.prevote_grants) > (len(others) + 1) / 2:
            tick.prevote_term = -1  # spent: the next election needs a round of its own
            return True
        if running:
            return False
        if tick.prevote_term == term:
            self._counters.prevotes_lost += 1  # the round timed out without a majority
        tick.prevote_term, tick.prevote_started_at = term, now
        tick.prevote_grants = set()
        last_index, last_term = node._SyncObj__raftLog[-1][1:3]
        request = {
            "type": _PREVOTE_TYPE,
            "term": term,
            "last_log_index": int(last_index),
            "last_log_term": int(last_term),
        }
        transport = node._SyncObj__transport
        for peer in others:
            if node.isNodeConnected(peer):
                transport.send(peer, request)
        return False

    def _answer_prevote(self, peer: Any, request: dict[str, Any]) -> None:
        node, tick = self._node, self._tick
        term, index, log_term = (
            request.get("term"),
            request.get("last_log_index"),
            request.get("last_log_term"),
        )
        if not all(isinstance(v, int) for v in (term, index, log_term)):
            return
        last_index, last_term = node._SyncObj__raftLog[-1][1:3]
        granted = (
            not tick.recovering
            and term > node.raftCurrentTerm
            and not node._isLeader()
            and _pso_monotonic() - tick.leader_heard_at >= self._config.election_timeout_min_s
            and (log_term, index) >= (last_term, last_index)
        )
        reply = {"type": _PREVOTE_REPLY_TYPE, "term": term, "granted": granted}
        node._SyncObj__transport.send(peer, reply)

    def _record_prevote_reply(self, peer: Any, reply: dict[str, Any]) -> None:
        tick = self._tick
        if reply.get("granted") is True and reply.get("term") == tick.prevote_term:
            tick.prevote_grants.add(str(peer.id))

    def _on_message(self, peer: Any, message: Any) -> None:
        """Every message from a voter passes here first (Raft thread)."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message.get("term", -1) >= self._node.raftCurrentTerm:
            self._tick.leader_heard_at = _pso_monotonic()
            self._pysyncobj_on_message(peer, message)
            commit_index = message.get("commit_index")
            if self._tick.recovering and isinstance(commit_index, int):
                self._tick.recovery_target = (commit_index, int(message["term"]))
        elif kind == "request_vote" and self._tick.recovering:
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
        node, tick = self._node, self._tick
        echo, term = pong.get("echo"), pong.get("term")
        if not node._isLeader() or term != node.raftCurrentTerm or not isinstance(echo, float):
            return
        if tick.lease_term != term:
            tick.lease_term = term
            tick.lease_acks = {}
        key = str(peer.id)
        tick.lease_acks[key] = max(tick.lease_acks.get(key, -math.inf), echo)

    def _make_view(self, now: float) -> _View:
        node = self._node
        state = node._SyncObj__raftState
        role = _ROLES.get(state, Role.FOLLOWER)
        leader = node._SyncObj__raftLeader
        leader_id = None if leader is None else self._id_by_address.get(str(leader.id))
        log = journal = node._SyncObj__raftLog
        first_index, last_index = int(log[0][1]), int(log[-1][1])
        others = node._SyncObj__otherNodes
        term = int(node.raftCurrentTerm)
        majority_acked_at = -math.inf
        voters: list[VoterStatus] = []
        if role is Role.LEADER:
            acks = self._tick.lease_acks if self._tick.lease_term == term else {}
            times = sorted((acks.get(str(peer.id), -math.inf) for peer in others), reverse=True)
            needed = (len(others) + 1) // 2  # echoes from others for a majority with self
            majority_acked_at = now if needed == 0 else times[needed - 1]
            match = node._SyncObj__raftMatchIndex
            for node_id, address in sorted(self._config.voters.items()):
                if node_id == self._config.node_id:
                    voters.append(VoterStatus(node_id, address, last_index, 0))
                    continue
                matched = next((m for p, m in match.items() if p.id == address), None)
                lag = None if matched is None else last_index - int(matched)
                voters.append(VoterStatus(node_id, address, matched, lag))
        else:
            voters = [
                VoterStatus(node_id, address, None, None)
                for node_id, address in sorted(self._config.voters.items())
            ]
        return _View(
            at=now,
            role=role,
            term=term,
            leader_id=leader_id,
            commit_index=int(node.raftCommitIndex),
            last_applied=int(node.raftLastApplied),
            log_first_index=first_index,
            log_last_index=last_index,
            majority_acked_at=majority_acked_at,
            connected_quorum=bool(node.hasQuorum) and leader_id is not None,
            voters=tuple(voters),
            journal_durable_index=journal.durable_last_index,
            journal_syncs=journal.syncs,
            recovering=self._tick.recovering,
        )

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


def _deliver(pending: _Pending, result: bytes | None, error: QuorumError | None) -> None:
    try:
        pending.callback(result, error)
    except Exception:
        logger.exception("a submit callback raised (ignored)")
