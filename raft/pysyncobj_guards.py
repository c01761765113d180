"""pysyncobj's hazards and raftlog's guards against them.

raftlog's metadata quorum runs on pysyncobj, pinned to 0.3.17: the guards reach into its
internals and :func:`install_pysyncobj_guards` refuses any other version. This module patches
pysyncobj process-wide (at import, and again before every SyncObj is created): the allow-list
unpickler, bounded frame reads and inflation, handshake checks, fsync-ing journal meta, our own
journal, the refused gzip dump format, and a watch on pysyncobj's log for events it does not
report otherwise. It also holds the per-tick connection hygiene the quorum runs on the Raft
thread. The other guards live where they act: :mod:`raftlog.raft.raft_node` (the SyncObj
subclass's overrides), :mod:`raftlog.raft.quorum` (``RaftQuorum``, the shell),
:mod:`raftlog.raft.election_rules` (the pre-vote and lease rules) and
:mod:`raftlog.raft.journal`.

Hazards of pysyncobj 0.3.17 and their guards (each measured against 0.3.17 itself). Each
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
    unregistered (membership changes come only from ``RaftQuorum.change_voters`` on the
    leader, see :mod:`raftlog.raft.raft_node`; the handshake admits only current members).
    [I: test_wrong_secret_peer_cannot_join, test_config_validation;
    tests/integration/raft/test_membership.py]
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
    hooks write/read our own checksummed cbor2 file (format in :mod:`raftlog.raft.snapshot_file`)
    holding ``machine.snapshot()``, so no pickle and no attribute scraping is involved; a corrupt
    dump or ``.meta`` stops the node instead of silently starting empty; ``data_dir`` is
    flock-ed. At 100k partitions writing the dump on the Raft thread took 0.41 s, past the
    election timeout (a compacting leader was deposed): pysyncobj's ``Serializer`` is replaced
    (``pysyncobj.syncobj.Serializer``) by :class:`~raftlog.raft.snapshot_writer.
    BackgroundSerializer`, which captures the state on the Raft thread, encodes, writes and
    fsyncs it on a writer thread, and renames it into place (then fsyncs the directory) back
    on the Raft thread before pysyncobj may cut the journal; a write overtaken by an installed
    snapshot is discarded (``snapshots_discarded``).
    [U: tests/unit/raft/test_snapshot_writer.py;
    I: test_cluster_survives_kill_all_and_restart, test_kill_leader_..._rejoins_by_snapshot,
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
    message goes out, as before). Three narrow overrides on
    :class:`~raftlog.raft.raft_node.RaftNode` order the rest: ``_onTick`` first makes the
    journal durable, then sends the held answers (so the leader's commit rule, later in the same
    tick, counts only its durable log); ``__sendNextNodeIdx``
    holds every ``next_node_idx`` answer until that point (in order; a success answer made
    before the log was cut is dropped: a lost message to Raft, ``acks_dropped``);
    ``__onBecomeLeader`` syncs a single voter's no-op (it commits it in the same tick; a leader
    with peers wins in a poll and syncs at its next tick, before the commit rule).
    ``leader_applied_before_durable`` counts breaches of the invariant (always 0).
    Log compaction's prefix removal and a snapshot install's clear are atomic rewrites
    (tmp+fsync+rename), no longer in place. Cost (bench.quorum_commit, 3 voters): commit rate
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
    with the keeper, 436-734 ms without). [I: test_kill_leader_...; bench.quorum_failover]
9.  **Stale leader for 30 s** (no check-quorum) -> ``leaderFallbackTimeout`` = 1 s, and
    :meth:`~raftlog.raft.quorum.RaftQuorum.is_leader` additionally requires a *lease*: a majority
    (self included) echoed, in our current term, a ping we sent within the last
    ``leader_lease_s`` (the leader pings every ``append_entries_period_s``), and the Raft thread
    published that within the same bound (the rules: :mod:`raftlog.raft.election_rules`). Send
    times, not receive times: pysyncobj stamps a follower's reply when it *processes* it, so
    replies buffered while the leader's process was paused (SIGSTOP, GC, swap) look fresh on
    resume — that made the first ``is_leader()`` after SIGCONT say True.
    Still not a lease in the Raft sense (pysyncobj grants votes to any higher term at once):
    controller decisions must go through the log as compare-and-set on epochs.
    [U: tests/unit/raft/test_lease.py; I: test_partitioned_leader_steps_down,
    test_sigstopped_leader_is_not_leader_after_sigcont]
10. **``sync=True`` deadlocks on the Raft thread; callbacks never fire for commands forwarded by
    followers** -> never ``sync=True``; :meth:`~raftlog.raft.quorum.RaftQuorum.submit` refuses
    to run on the Raft thread; commands are only appended on the leader (a follower fails them
    with :class:`NotLeaderError` instead of forwarding); every submit has a timeout enforced by
    us, and its callback runs exactly once, timeouts fired by a thread of their own
    (:mod:`raftlog.raft.pending_commands`).
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
    bench.quorum_failover). Withheld rounds are counted (``prevotes_lost``). A leader's
    TimeoutNow (``transfer_leadership``) makes its target stand without one: every peer had
    just heard that leader, so the transfer never happened. The rules:
    :mod:`raftlog.raft.election_rules`. [U: tests/unit/raft/test_prevote.py;
    I: test_a_node_cut_off_from_the_majority_does_not_raise_its_term,
    test_remove_the_active_controller]
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

    Cost: bench.quorum_commit's commit rate unchanged. [P: test_outsider_flood_neither_deposes_the_
    leader_nor_stalls_commits, test_insider_inflation_bomb_is_refused_without_inflating,
    test_a_trickling_connection_is_closed_at_the_handshake_deadline,
    test_connections_in_the_handshake_are_capped_oldest_first,
    test_pysyncobj_gzip_dump_format_is_disabled]
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import struct
import threading
import weakref
import zlib
from collections.abc import Callable
from typing import Any, Final

import pysyncobj.journal as _pso_journal
import pysyncobj.pickle as _pso_pickle
import pysyncobj.serializer as _pso_serializer
import pysyncobj.syncobj as _pso_syncobj
import pysyncobj.tcp_connection as _pso_tcp
import pysyncobj.transport as _pso_transport
import pysyncobj.version as _pso_version
from pysyncobj.monotonic import monotonic as _pso_monotonic

from . import safe_pickle
from .journal import DurableJournal, fsync_dir
from .quorum_types import (
    MAX_FRAME_BYTES,
    MAX_HANDSHAKE_FRAME_BYTES,
    MAX_INFLATED_BYTES,
    MAX_UNAUTHENTICATED_CONNECTIONS,
    QuorumCounters,
    QuorumStorageError,
)
from .snapshot_writer import BackgroundSerializer

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "PYSYNCOBJ_VERSION",
    "close_silent_connections",
    "close_stalled_handshakes",
    "install_pysyncobj_guards",
    "oversized_frame_count",
    "oversized_inflation_count",
    "unwatch_raft_threads",
    "watch_raft_thread",
    "wire_frame",
]

logger = logging.getLogger(__name__)

PYSYNCOBJ_VERSION: Final = "0.3.17"
# pysyncobj connection states (tcp_connection.CONNECTION_STATE).
DISCONNECTED, CONNECTED = 0, 2

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


def _counters_of(transport: Any) -> QuorumCounters | None:
    """The counters of the quorum that owns ``transport`` (set by :class:`RaftNode`)."""
    counters = getattr(transport._syncObj, "_raftlog_counters", None)
    return counters if isinstance(counters, QuorumCounters) else None


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
    counters = _counters_of(transport)
    if counters is not None:
        counters.handshakes_evicted += excess
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
        counters = _counters_of(transport)
        if counters is not None:
            counters.handshakes_refused += 1
        _warn_limited("handshake_refused", "refused a Raft handshake naming no voter")
        transport._unknownConnections.discard(conn)
        conn.disconnect()
        return
    _originals["TCPTransport._onIncomingMessageReceived"](transport, conn, message)
    if conn.state == CONNECTED and conn not in transport._unknownConnections:
        conn._raftlog_authenticated = True


def _outgoing_handshake(transport: Any, conn: Any, message: Any) -> None:
    """Wraps ``TCPTransport._onOutgoingMessageReceived`` (hazard 16): the voter we dialled sent
    its random key in a frame that decrypted with the secret; the connection is authenticated."""
    _originals["TCPTransport._onOutgoingMessageReceived"](transport, conn, message)
    if conn.state == CONNECTED and conn.sendRandKey:
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
    fsync_dir(os.path.dirname(os.path.abspath(path)))


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
        _pso_syncobj.Serializer = BackgroundSerializer
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
        and _pso_syncobj.Serializer is BackgroundSerializer
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
_counters_by_thread: weakref.WeakValueDictionary[int, QuorumCounters] = (
    weakref.WeakValueDictionary()
)


def watch_raft_thread(counters: QuorumCounters) -> None:
    """Count what pysyncobj logs on the calling thread (a quorum's Raft thread) in ``counters``."""
    _counters_by_thread[threading.get_ident()] = counters


def unwatch_raft_threads(counters: QuorumCounters) -> None:
    """Stop counting into ``counters`` (the quorum closed)."""
    for ident, watched in list(_counters_by_thread.items()):
        if watched is counters:
            _counters_by_thread.pop(ident, None)


class _PysyncobjLogWatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        counters = _counters_by_thread.get(record.thread or 0)
        if counters is None or not isinstance(record.msg, str):
            return
        if record.msg.startswith("truncating already-applied"):
            counters.applied_entries_truncated += 1
        elif record.msg.startswith("failed _onTick"):
            counters.tick_errors += 1


def _install_log_watch() -> None:
    pso_logger = logging.getLogger("pysyncobj.syncobj")
    if not any(isinstance(h, _PysyncobjLogWatch) for h in pso_logger.handlers):
        pso_logger.addHandler(_PysyncobjLogWatch(level=logging.ERROR))


# ---- per-tick connection hygiene (hazards 8 and 16), run by the quorum on the Raft thread ----


def close_stalled_handshakes(
    transport: Any, now: float, deadline_s: float, counters: QuorumCounters
) -> None:
    """Hazard 16's deadline, every tick: a connection that has not completed pysyncobj's
    handshake within ``deadline_s`` (``connect_timeout_s``) of its accept or connect() is closed,
    whatever it sent meanwhile (pysyncobj's own timeout, and the keeper's before this, counted
    from the last byte read, so a connection that kept sending never expired). At most
    ``MAX_UNAUTHENTICATED_CONNECTIONS`` incoming plus one outgoing per voter to look at.
    Each is counted (``handshake_timeouts``) before it is closed: whoever sees the close may
    read the counter at once."""
    stalled = [c for c in transport._unknownConnections if now - _opened_at(c) > deadline_s]
    stalled.extend(
        conn
        for conn in transport._connections.values()
        if conn.state != DISCONNECTED
        and not _is_authenticated(conn)
        and now - _opened_at(conn) > deadline_s
    )
    for conn in stalled:
        counters.handshake_timeouts += 1
        transport._unknownConnections.discard(conn)
        conn.disconnect()


def close_silent_connections(
    transport: Any, now: float, timeout_s: float, counters: QuorumCounters
) -> None:
    """Hazard 8's keeper: close every connected peer link that read nothing for ``timeout_s``
    (``connection_timeout_s``), so a vote request never meets a stale connection. Each is
    counted (``connections_closed_by_keeper``) before it is closed."""
    for conn in list(transport._connections.values()):
        silent_s = now - conn._TcpConnection__lastReadTime
        if conn.state == CONNECTED and silent_s > timeout_s:
            counters.connections_closed_by_keeper += 1
            conn.disconnect()


install_pysyncobj_guards()
