"""The active controller's decisions: a pure function of heartbeats, the state and the time.

The active controller is the broker whose quorum member is the Raft leader. Brokers heartbeat it
every ``heartbeat_interval_ms``; it keeps liveness in memory only and commits *decisions* — fence
a broker, unfence it, elect leaders — as metadata commands. Owned by the controller shell
(``cluster``), which holds its lock around every call; not thread-safe. Time comes in as
``now_ms``.

Rules:
- A broker is fenced when no heartbeat of its registered incarnation arrived for
  ``session_timeout_ms`` — or earlier, when its heartbeat is late and the shell's probe found
  nothing listening on its port (``declare_dead``: a crashed process, not a slow or cut-off
  one). A newly active controller knows no heartbeats, so every broker gets one
  full session from the moment it took over before it can be fenced.
- A broker that leads or is in the ISR of more than ``FENCE_PARTITIONS_PER_COMMAND_MAX``
  partitions is fenced in :class:`Steps`: ``FenceBrokerPartitions`` over those partitions in
  bounded chunks, then the ``FenceBroker`` (one command moving 60,000 partitions held the Raft
  thread 0.6-0.9 s, past the election timeout). Meanwhile the backstop elections wait: they
  would elect the broker being fenced (still live in the metadata) where a chunk left it the
  last ISR member.
- A fenced broker is unfenced when it heartbeats with its registered incarnation and has applied
  metadata up to its own registration (it knows its roles).
- Partitions without a live leader that have an electable replica (ISR, ELR, or the last known
  safe ones all back; see the metadata rules) are elected (fence and
  unfence elect in the same command; this catches the rest, e.g. topics created while their
  brokers were down).
- Optionally, every ``leader_rebalance_interval_ms``, leadership moves back to preferred replicas
  — only to one whose heartbeats come direct (a broker heard through a relay may not be applying
  the metadata: it would not learn that it leads).
- **Starved leaders** (a majorities ring, a bridge): every heartbeat names the peers the broker
  reached lately (``cluster/peers.py``); a link counts when both ends name each other in fresh
  reports. A live leader that reaches fewer than ``min.insync.replicas`` of its ISR and ELR
  (itself included) for ``starved_ms_min`` cannot commit; if another ISR or ELR member reaches
  enough of them, leadership moves to the first such member in replica order, with those it
  reaches as the ISR (``MoveLeader``: every ISR and ELR member holds all committed records, so
  this is as safe as a preferred election). A broker heard through a relay learns of the move
  from the controller through that relay (``PartitionStates``: its own quorum member may be cut
  off too). A partition moved this way is not moved again for ``move_cooldown_ms``.
- At most one command per subject is in flight: the shell reports each one's completion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .commands import (
    Command,
    ElectLeader,
    FenceBroker,
    FenceBrokerPartitions,
    MoveLeader,
    UnfenceBroker,
)
from .metadata import FENCE_PARTITIONS_PER_COMMAND_MAX, MetadataState
from .metadata_records import NO_LEADER, PartitionRecord, TopicPartition

__all__ = ["ControllerConfig", "ControllerCore", "Decision", "HeartbeatVerdict", "Steps"]

_ELECT_BATCH_MAX = 1000  # partitions per ElectLeader command


@dataclass(frozen=True, slots=True)
class BrokerLiveness:
    """Subject of a decision to fence or unfence one broker."""

    broker_id: int


@dataclass(frozen=True, slots=True)
class PartitionElection:
    """Subject held while one partition is part of an election in flight."""

    key: TopicPartition


@dataclass(frozen=True, slots=True)
class ElectionBatch:
    """Subject of one ``ElectLeader`` command: the partitions it elects leaders for."""

    keys: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class LeaderMove:
    """Subject of a decision to move leadership off one starved leader."""

    key: TopicPartition


Subject = BrokerLiveness | PartitionElection | ElectionBatch | LeaderMove
"""What a decision is about: one decision per subject is in flight at a time."""


@dataclass(frozen=True, slots=True)
class Steps:
    """Commands to commit one after another, each once the one before it has applied; the
    first that fails or is refused ends the decision (it is decided again from the state then).
    Each one is bounded, and spacing them lets the Raft thread tick between their applies."""

    commands: tuple[Command, ...]


Decision = tuple[Subject, Command | Steps]


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    session_timeout_ms: int = 2000  # broker.session.timeout.ms (Kafka: 9000)
    heartbeat_interval_ms: int = 200  # what brokers are told to use
    leader_rebalance_interval_ms: int | None = 30_000  # None disables preferred elections
    pending_timeout_ms: int = 5000  # forget an in-flight decision after this (retry it)
    election_scan_interval_ms: int = 500  # the backstop scan for offline partitions
    starved_ms_min: int = 200  # a leader reaching too few of its ISR this long is moved
    move_cooldown_ms: int = 2000  # a partition moved off a starved leader stays put this long
    reach_scan_interval_ms: int = 100  # how often reachability reports are looked at


@dataclass(frozen=True, slots=True)
class HeartbeatVerdict:
    """What the controller answers a heartbeat with."""

    known: bool  # False: unknown broker or stale incarnation → the broker must (re)register
    fenced: bool


@dataclass(slots=True)
class _Liveness:
    incarnation: int
    last_heartbeat_ms: int
    metadata_version: int
    reachable: frozenset[int] = frozenset()  # the peers it reached lately (its report)
    direct: bool = True  # False: the heartbeat came through a relay


class ControllerCore:
    """Liveness tracking and decisions of one active-controller term."""

    def __init__(self, config: ControllerConfig, now_ms: int) -> None:
        self.config = config
        self.active_since_ms = now_ms
        self._liveness: dict[int, _Liveness] = {}
        self._dead: dict[int, int] = {}  # broker → an incarnation known to have crashed
        self._pending: dict[Subject, int] = {}  # decision subject → when it was issued
        self._last_rebalance_ms = now_ms
        self._scanned_version = -1
        self._last_scan_ms = now_ms - config.election_scan_interval_ms
        self._starved_since: dict[TopicPartition, int] = {}
        self._moved_ms: dict[TopicPartition, int] = {}
        self._last_reach_scan_ms = now_ms - config.reach_scan_interval_ms
        self._fencing: set[int] = set()  # brokers whose fence is in flight in steps

    def heartbeat(
        self,
        state: MetadataState,
        broker_id: int,
        incarnation: int,
        metadata_version: int,
        now_ms: int,
        reachable: Iterable[int] = (),
        *,
        direct: bool = True,
    ) -> HeartbeatVerdict:
        broker = state.brokers.get(broker_id)
        if broker is None or broker.incarnation != incarnation:
            return HeartbeatVerdict(known=False, fenced=True)
        known = state.brokers  # a report names registered brokers only: bounded by the cluster
        self._liveness[broker_id] = _Liveness(
            incarnation,
            now_ms,
            metadata_version,
            frozenset(b for b in reachable if b in known),
            direct,
        )
        if self._dead.get(broker_id) == incarnation:
            del self._dead[broker_id]  # a heartbeat proves the probe wrong: it lives
        return HeartbeatVerdict(known=True, fenced=broker.fenced)

    def is_alive(self, broker_id: int, incarnation: int, now_ms: int) -> bool:
        if self._dead.get(broker_id) == incarnation:
            return False
        seen = self._liveness.get(broker_id)
        if seen is None or seen.incarnation != incarnation:
            # never heard from it this term: alive until one session after we took over
            return now_ms - self.active_since_ms < self.config.session_timeout_ms
        return now_ms - seen.last_heartbeat_ms < self.config.session_timeout_ms

    def overdue(self, state: MetadataState, now_ms: int) -> list[tuple[int, int]]:
        """(broker, incarnation) of live brokers whose heartbeat is two intervals late: worth a
        probe. A crashed process refuses connections at once; a partitioned one only times out
        (and then only the session timeout may fence it)."""
        late = 2 * self.config.heartbeat_interval_ms
        out = []
        for broker in state.brokers.values():
            if broker.fenced or self._dead.get(broker.broker_id) == broker.incarnation:
                continue
            seen = self._liveness.get(broker.broker_id)
            if seen is not None and seen.incarnation == broker.incarnation:
                overdue = now_ms - seen.last_heartbeat_ms > late
            else:
                # a new controller: the dead broker may be the old controller, never heard from
                # this term — probe it after one interval rather than wait out a session of
                # grace (a live one answers the probe and keeps its grace)
                overdue = now_ms - self.active_since_ms > self.config.heartbeat_interval_ms
            if overdue:
                out.append((broker.broker_id, broker.incarnation))
        return out

    def declare_dead(self, broker_id: int, incarnation: int) -> None:
        """The shell saw the broker's port refuse connections: that incarnation is gone, fence it
        now instead of waiting out the session (a new incarnation registers afresh)."""
        self._dead[broker_id] = incarnation

    def last_heartbeat_ago_ms(self, broker_id: int, now_ms: int) -> int:
        seen = self._liveness.get(broker_id)
        return -1 if seen is None else now_ms - seen.last_heartbeat_ms

    def decisions(self, state: MetadataState, now_ms: int) -> list[Decision]:
        """Commands to submit now, each with its subject (pass it to ``completed``)."""
        self._expire_pending(now_ms)
        out: list[Decision] = []
        for broker in sorted(state.brokers.values(), key=lambda b: b.broker_id):
            alive = self.is_alive(broker.broker_id, broker.incarnation, now_ms)
            subject = BrokerLiveness(broker.broker_id)
            if subject in self._pending:
                continue
            if not broker.fenced and not alive:
                out.append((subject, self._fence(state, broker.broker_id, broker.incarnation)))
            elif broker.fenced and alive:
                seen = self._liveness.get(broker.broker_id)
                if (
                    seen is not None
                    and seen.incarnation == broker.incarnation
                    and seen.metadata_version >= broker.registered_version
                ):
                    out.append((subject, UnfenceBroker(broker.broker_id, broker.incarnation)))
        out.extend(self._elections(state, now_ms))
        out.extend(self._leader_moves(state, now_ms))
        for decided, _ in out:
            self._pending[decided] = now_ms
        return out

    def _fence(self, state: MetadataState, broker_id: int, incarnation: int) -> Command | Steps:
        """FenceBroker, after its roles in bounded chunks if it holds many."""
        fence = FenceBroker(broker_id, incarnation)
        keys = state.roles_of(broker_id)  # O(its roles), under the store's lock
        if len(keys) <= FENCE_PARTITIONS_PER_COMMAND_MAX:
            return fence
        self._fencing.add(broker_id)
        step = FENCE_PARTITIONS_PER_COMMAND_MAX
        chunks = [
            FenceBrokerPartitions(broker_id, incarnation, tuple(keys[i : i + step]))
            for i in range(0, len(keys), step)
        ]
        return Steps((*chunks, fence))

    def _elections(self, state: MetadataState, now_ms: int) -> list[Decision]:
        # fence and unfence elect inline; this is the backstop, so it runs only when the state
        # moved and at most every election_scan_interval_ms
        if self._fencing:  # it would elect a broker being fenced: after the fence
            return []
        rebalance = (
            self.config.leader_rebalance_interval_ms is not None
            and now_ms - self._last_rebalance_ms >= self.config.leader_rebalance_interval_ms
        )
        if not rebalance and (
            state.version == self._scanned_version
            or now_ms - self._last_scan_ms < self.config.election_scan_interval_ms
        ):
            return []
        self._scanned_version = state.version
        self._last_scan_ms = now_ms
        # the state's role lookups: the partitions without a live leader, and (rebalancing)
        # those led by another broker than their first replica — not a scan of every partition
        # under the store's lock (50 ms at 100k partitions, every interval while they change)
        pending = self._pending
        offline = [
            key
            for key in state.offline()
            if PartitionElection(key) not in pending and state.electable(state.partitions[key])
        ]
        preferred: list[TopicPartition] = []
        if rebalance:
            fresh = self._fresh(state, now_ms)
            for key in state.displaced():
                record = state.partitions[key]
                first = record.replicas[0]
                if (
                    PartitionElection(key) not in pending
                    and state.is_live(record.leader)
                    and first in record.isr
                    and state.is_live(first)
                    and self._direct(first, now_ms)
                    and self._reaches_enough(first, record, state, fresh)
                ):
                    preferred.append(key)
        if rebalance:
            self._last_rebalance_ms = now_ms
        out: list[Decision] = []
        for keys, is_preferred in ((offline, False), (preferred, True)):
            for i in range(0, len(keys), _ELECT_BATCH_MAX):
                chunk = tuple(keys[i : i + _ELECT_BATCH_MAX])
                for key in chunk:
                    self._pending[PartitionElection(key)] = now_ms
                out.append((ElectionBatch(chunk), ElectLeader(chunk, preferred=is_preferred)))
        return out

    def _fresh(self, state: MetadataState, now_ms: int) -> dict[int, _Liveness]:
        """Reachability reports of live registered incarnations no older than two heartbeat
        intervals. An empty report says nothing (a broker that heartbeats reaches at least the
        broker that carried it; one just started has pinged nobody yet; an older broker does
        not report): such a broker is left out, as if it reached everyone."""
        limit = 2 * self.config.heartbeat_interval_ms
        return {
            b: seen
            for b, seen in self._liveness.items()
            if seen.reachable
            and now_ms - seen.last_heartbeat_ms <= limit
            and (record := state.brokers.get(b)) is not None
            and record.incarnation == seen.incarnation
            and state.is_live(b)
        }

    def _direct(self, broker_id: int, now_ms: int) -> bool:
        """Heard from lately, and not through a relay (unknown counts as direct: a new
        controller has heard nobody yet)."""
        seen = self._liveness.get(broker_id)
        return seen is None or seen.direct

    @staticmethod
    def _linked(fresh: dict[int, _Liveness], a: int, b: int) -> bool:
        """Both ends reported reaching each other (a broker always reaches itself)."""
        return a == b or (
            a in fresh and b in fresh and b in fresh[a].reachable and a in fresh[b].reachable
        )

    def _reaches_enough(
        self,
        broker: int,
        record: PartitionRecord,
        state: MetadataState,
        fresh: dict[int, _Liveness],
    ) -> bool:
        """Could ``broker`` commit as leader: does it reach ``min.insync.replicas`` of the ISR
        and ELR (itself included)? True while the reports show every live broker reaching every
        other (or there are no reports), so a preferred election moves nobody onto a starved
        replica during a ring or a bridge."""
        if self._fully_connected(fresh):
            return True
        min_isr = state.topics[record.topic].min_insync_replicas
        safe = [b for b in record.replicas if b in record.isr or b in record.elr]
        return sum(self._linked(fresh, broker, b) for b in safe) >= min_isr

    @staticmethod
    def _fully_connected(fresh: dict[int, _Liveness]) -> bool:
        everyone = set(fresh)
        return all(everyone - {b} <= seen.reachable for b, seen in fresh.items())

    def _leader_moves(self, state: MetadataState, now_ms: int) -> list[Decision]:
        """Move leadership off starved leaders (see the module rules)."""
        if now_ms - self._last_reach_scan_ms < self.config.reach_scan_interval_ms:
            return []
        self._last_reach_scan_ms = now_ms
        fresh = self._fresh(state, now_ms)
        if self._fully_connected(fresh):
            self._starved_since.clear()  # nothing to look at
            return []

        def linked(a: int, b: int) -> bool:
            return self._linked(fresh, a, b)

        out: list[Decision] = []
        starved = set()
        for key, record in state.partitions.items():
            leader = record.leader
            if leader == NO_LEADER or leader not in fresh:
                continue
            min_isr = state.topics[record.topic].min_insync_replicas
            safe = [b for b in record.replicas if b in record.isr or b in record.elr]
            if sum(linked(leader, b) for b in safe) >= min_isr:
                continue
            starved.add(key)
            since = self._starved_since.setdefault(key, now_ms)
            subject = LeaderMove(key)
            if (
                now_ms - since < self.config.starved_ms_min
                or subject in self._pending
                or now_ms - self._moved_ms.get(key, -(10**12)) < self.config.move_cooldown_ms
            ):
                continue
            for candidate in safe:
                if candidate == leader or candidate not in fresh:
                    continue
                isr = tuple(b for b in safe if linked(candidate, b))
                if len(isr) >= min_isr:
                    self._moved_ms[key] = now_ms
                    out.append(
                        (subject, MoveLeader(key[0], key[1], record.leader_epoch, candidate, isr))
                    )
                    break
        for key in [k for k in self._starved_since if k not in starved]:
            del self._starved_since[key]
        return out

    def completed(self, subject: Subject) -> None:
        """The command for ``subject`` committed (or failed): it may be decided again."""
        self._pending.pop(subject, None)
        if isinstance(subject, BrokerLiveness):
            self._fencing.discard(subject.broker_id)
        if isinstance(subject, ElectionBatch):
            self._scanned_version = -1  # look again, whatever happened to it
            for key in subject.keys:
                self._pending.pop(PartitionElection(key), None)

    def _expire_pending(self, now_ms: int) -> None:
        limit = self.config.pending_timeout_ms
        for subject in [s for s, t in self._pending.items() if now_ms - t >= limit]:
            del self._pending[subject]
