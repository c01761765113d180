"""Consumer-group membership: Kafka's classic rebalance protocol as a pure state machine.

Pure: no IO, no clock (``now_ms`` comes in), no futures — calls return what to answer, and
``poll(now_ms)`` returns the answers that became due (a join round completed, a sync answered,
members expired). Owned by the group coordinator on the broker loop; not thread-safe.

States and rules::

    EMPTY ──join──▶ PREPARING_REBALANCE ──all known members rejoined, or the rebalance
      ▲                  ▲        │          deadline passed (the silent ones are removed)──▶
      │                  │        ▼
      │   join/leave/expiry   COMPLETING_REBALANCE ──the leader's sync──▶ STABLE
      └──last member leaves / expires──────────────────────────────────────────┘

- A join round ends when every current member has (re)joined, or at the rebalance deadline
  (the longest rebalance timeout among members, counted from the round's start); then the
  generation is bumped, the first member to join is the leader, and every waiting join is
  answered (the leader gets the members and their subscriptions).
- The generation id fences stale members: heartbeats, syncs and commits carrying an older
  generation get ILLEGAL_GENERATION; unknown member ids get UNKNOWN_MEMBER_ID; while a rebalance
  runs, heartbeats answer REBALANCE_IN_PROGRESS (rejoin now).
- A member silent for its session timeout is removed, which starts a rebalance.
- Commits are accepted from a member of the current generation, or with generation -1 when the
  group has no members (an admin reset or a consumer without group membership).
- The first round of an empty group waits ``initial_delay_ms`` (Kafka's
  ``group.initial.rebalance.delay.ms``) so the members starting together land in one round instead
  of the first one taking every partition; each member joining in that window extends it by the
  delay again, never past the round's rebalance deadline.
- Static members (``instance_id``, Kafka's ``group.instance.id``, KIP-345) keep their place across
  restarts: a join with a known instance id and no member id takes the old member's place under a
  new member id. In a STABLE group with the same assignors that is no rebalance at all (the answer
  is due at once: same generation, its old assignment at sync); otherwise it joins the round. A
  request naming an instance id whose member id is no longer the current one gets
  FENCED_INSTANCE_ID (the older instance of a replaced member must stop, not rejoin).
- ``snapshot``/``restore``: the membership a coordinator persists at every completed sync, so the
  next coordinator resumes the same generation, members and assignments without a rebalance.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from raftlog.proto.codes import CodedError, ErrorCode

__all__ = [
    "Group",
    "GroupError",
    "GroupState",
    "JoinAnswer",
    "Member",
    "SyncAnswer",
]

MEMBERS_MAX = 1000  # per group: a bound on what one group may hold


class GroupState(Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"


class GroupError(CodedError):
    """An answer with its ErrorCode; the caller's request changed nothing."""


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]  # (assignor name, subscription metadata)
    last_heartbeat_ms: int
    assignment: bytes = b""
    joined: bool = False  # rejoined in the current round
    join_order: int = 0
    instance_id: str = ""  # static membership (group.instance.id); "" for a dynamic member


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    member_id: str
    generation: int
    protocol: str
    leader_id: str
    members: tuple[tuple[str, bytes], ...]  # leader only: (member id, subscription metadata)


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    member_id: str
    assignment: bytes


@dataclass(slots=True)
class Group:
    """One group's membership; see the module docstring."""

    group_id: str
    generation: int = 0  # survives coordinator moves (persisted with the offsets)
    state: GroupState = GroupState.EMPTY
    protocol: str = ""
    leader_id: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    rebalance_deadline_ms: int = 0
    awaiting_sync: set[str] = field(default_factory=set)
    initial_delay_ms: int = 0  # group.initial.rebalance.delay.ms
    initial_until_ms: int = 0  # the first round of an empty group completes no earlier
    static: dict[str, str] = field(default_factory=dict)  # instance id -> its member id
    _ready: list[JoinAnswer] = field(default_factory=list)  # answers due without a round
    # the member ids' unique part, passed in (randomness is IO). It must be unique across
    # coordinators — this default counter would restart at a coordinator that loaded the group
    # and could hand out the id of a member the old coordinator had just admitted — so the
    # coordinator passes uuid4
    unique: Callable[[], str] = field(
        default_factory=lambda: map(str, itertools.count(1)).__next__, repr=False
    )
    _join_counter: int = 0

    # ---- joining ---------------------------------------------------------------------------

    def join(
        self,
        member_id: str,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocols: Sequence[tuple[str, bytes]],
        now_ms: int,
        instance_id: str = "",
    ) -> str:
        """Start or join a round; returns the member id (new ones get one). The answer comes
        from ``poll``: when the round completes, or at once for a static member taking its own
        place back in a stable group."""
        if not protocols:
            raise GroupError(ErrorCode.INVALID_REQUEST, "a member must name at least one assignor")
        if any(not name for name, _ in protocols):
            # "" is what _common_protocol answers for "nothing in common": never a name
            raise GroupError(ErrorCode.INVALID_REQUEST, "an assignor needs a name")
        if not 1000 <= session_timeout_ms <= 300_000:
            raise GroupError(ErrorCode.INVALID_SESSION_TIMEOUT, "session timeout must be 1-300 s")
        if instance_id:
            self._check_instance(member_id, instance_id)
        if member_id and member_id not in self.members:
            raise GroupError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"no member {member_id} in {self.group_id}"
            )
        if self.members and not self._common_protocol(
            [
                tuple(p for p, _ in protocols),
                *(
                    tuple(p for p, _ in m.protocols)
                    for m in self.members.values()
                    if m.member_id != member_id
                ),
            ]
        ):
            raise GroupError(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                "the member shares no assignor with the group's members",
            )
        if not member_id and instance_id in self.static:
            return self._replace_static(
                instance_id, client_id, session_timeout_ms, rebalance_timeout_ms, protocols, now_ms
            )
        if not member_id:
            if len(self.members) >= MEMBERS_MAX:
                raise GroupError(ErrorCode.GROUP_MAX_SIZE_REACHED, f"{self.group_id} is full")
            member_id = self._new_member_id(client_id)
        member = self.members.get(member_id)
        if member is None:
            member = Member(
                member_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                tuple(protocols),
                now_ms,
                instance_id=instance_id,
            )
            self.members[member_id] = member
            if instance_id:
                self.static[instance_id] = member_id
        else:
            member.protocols = tuple(protocols)
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.last_heartbeat_ms = now_ms
        self._enter_round(member, now_ms)
        return member_id

    def _enter_round(self, member: Member, now_ms: int) -> None:
        if self.state is GroupState.EMPTY:
            self._start_rebalance(now_ms)
            self.initial_until_ms = min(now_ms + self.initial_delay_ms, self.rebalance_deadline_ms)
        elif self.state is not GroupState.PREPARING_REBALANCE:
            self._start_rebalance(now_ms)
        elif not member.joined and now_ms < self.initial_until_ms:
            # a member arriving in the initial delay: wait for the next ones too
            self.initial_until_ms = min(now_ms + self.initial_delay_ms, self.rebalance_deadline_ms)
        if not member.joined:
            self._join_counter += 1
            member.joined = True
            member.join_order = self._join_counter

    def _new_member_id(self, client_id: str) -> str:
        return f"{client_id or 'member'}-{self.unique()}"

    def _check_instance(self, member_id: str, instance_id: str) -> None:
        current = self.static.get(instance_id)
        if member_id and current is not None and current != member_id:
            raise GroupError(
                ErrorCode.FENCED_INSTANCE_ID,
                f"instance {instance_id!r} of {self.group_id} is now member {current}",
            )

    def _replace_static(
        self,
        instance_id: str,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocols: Sequence[tuple[str, bytes]],
        now_ms: int,
    ) -> str:
        """A static member back under a new member id: the old id is fenced from now on."""
        old_id = self.static[instance_id]
        member = self.members.pop(old_id)
        new_id = self._new_member_id(client_id)
        same_assignors = [p for p, _ in member.protocols] == [p for p, _ in protocols]
        member.member_id = new_id
        member.client_id = client_id
        member.protocols = tuple(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.last_heartbeat_ms = now_ms
        self.members[new_id] = member
        self.static[instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.awaiting_sync:
            self.awaiting_sync.discard(old_id)
            self.awaiting_sync.add(new_id)
        if self.state is GroupState.STABLE and same_assignors:
            # no rebalance: the member gets the current generation now and its assignment at
            # sync; its new subscription counts from the next round on
            self._ready.append(
                JoinAnswer(new_id, self.generation, self.protocol, self.leader_id, ())
            )
            return new_id
        member.joined = False
        self._enter_round(member, now_ms)
        return new_id

    def rebalance(self, now_ms: int) -> None:
        """Make every member rejoin (the coordinator could not store the membership)."""
        if self.members and self.state is not GroupState.PREPARING_REBALANCE:
            self._start_rebalance(now_ms)

    def _start_rebalance(self, now_ms: int) -> None:
        self.state = GroupState.PREPARING_REBALANCE
        self.awaiting_sync.clear()
        for m in self.members.values():
            m.joined = False
        longest = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self.rebalance_deadline_ms = now_ms + min(longest, 300_000)

    @staticmethod
    def _common_protocol(choices: Sequence[tuple[str, ...]]) -> str:
        """The first assignor of the first member that every member supports."""
        if not choices:
            return ""
        for name in choices[0]:
            if all(name in c for c in choices[1:]):
                return name
        return ""

    def _complete_join(self) -> list[JoinAnswer]:
        for member_id in [m for m, v in self.members.items() if not v.joined]:
            self._remove(member_id)  # did not rejoin in time
        if not self.members:
            self.state = GroupState.EMPTY
            self.generation += 1
            self.leader_id = ""
            return []
        self.generation += 1
        ordered = sorted(self.members.values(), key=lambda m: m.join_order)
        self.leader_id = ordered[0].member_id
        self.protocol = self._common_protocol([tuple(p for p, _ in m.protocols) for m in ordered])
        self.state = GroupState.COMPLETING_REBALANCE
        self.awaiting_sync = set(self.members)
        subscriptions = tuple(
            (m.member_id, dict(m.protocols).get(self.protocol, b"")) for m in ordered
        )
        return [
            JoinAnswer(
                m.member_id,
                self.generation,
                self.protocol,
                self.leader_id,
                subscriptions if m.member_id == self.leader_id else (),
            )
            for m in ordered
        ]

    # ---- syncing and heartbeats ------------------------------------------------------------

    def _check(self, member_id: str, generation: int, instance_id: str = "") -> Member:
        if instance_id:
            self._check_instance(member_id, instance_id)
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"no member {member_id} in {self.group_id}"
            )
        if generation != self.generation:
            raise GroupError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is not the current {self.generation}",
            )
        return member

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: Sequence[tuple[str, bytes]],
        now_ms: int,
        instance_id: str = "",
    ) -> list[SyncAnswer]:
        """A member's sync; the leader's carries everyone's assignment. Returns the answers
        that are due now (all of them when the leader's arrives)."""
        if self.state is GroupState.PREPARING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS, "a new round started: join again")
        member = self._check(member_id, generation, instance_id)
        member.last_heartbeat_ms = now_ms
        if self.state is GroupState.STABLE:
            return [SyncAnswer(member_id, member.assignment)]
        if member_id == self.leader_id:
            given = dict(assignments)
            for m in self.members.values():
                m.assignment = given.get(m.member_id, b"")
            self.state = GroupState.STABLE
            due = [SyncAnswer(m, self.members[m].assignment) for m in sorted(self.awaiting_sync)]
            self.awaiting_sync.clear()
            return due
        return []  # answered when the leader syncs

    def heartbeat(
        self, member_id: str, generation: int, now_ms: int, instance_id: str = ""
    ) -> None:
        member = self._check(member_id, generation, instance_id)
        member.last_heartbeat_ms = now_ms
        if self.state is GroupState.PREPARING_REBALANCE:
            raise GroupError(
                ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing: join again"
            )

    def leave(self, member_id: str, now_ms: int, instance_id: str = "") -> None:
        if instance_id:
            self._check_instance(member_id, instance_id)
        if member_id not in self.members:
            raise GroupError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"no member {member_id} in {self.group_id}"
            )
        self._remove(member_id)
        self._after_departure(now_ms)

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        self.awaiting_sync.discard(member_id)
        if member.instance_id and self.static.get(member.instance_id) == member_id:
            del self.static[member.instance_id]

    def _after_departure(self, now_ms: int) -> None:
        if not self.members:
            self.state = GroupState.EMPTY
            self.leader_id = ""
            self.generation += 1
        elif self.state is not GroupState.PREPARING_REBALANCE:
            self._start_rebalance(now_ms)

    def check_commit(self, member_id: str, generation: int, instance_id: str = "") -> None:
        """May this member commit offsets now?"""
        if generation < 0:
            if self.members:
                raise GroupError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"{self.group_id} has members: commit as one of them",
                )
            return
        # during a rebalance the current generation may still commit (before giving up its
        # partitions, as Kafka consumers do); the new generation is not formed yet
        self._check(member_id, generation)

    # ---- time ----------------------------------------------------------------------------------

    def poll(self, now_ms: int) -> tuple[list[JoinAnswer], list[str]]:
        """Expire silent members and complete a join round that is due.

        Returns (join answers now due, member ids removed for silence).
        """
        expired = [
            m.member_id
            for m in self.members.values()
            if now_ms - m.last_heartbeat_ms > m.session_timeout_ms
            and not (self.state is GroupState.PREPARING_REBALANCE and m.joined)
        ]
        for member_id in expired:
            self._remove(member_id)
        if expired:
            self._after_departure(now_ms)
        ready, self._ready = self._ready, []
        if self.state is GroupState.PREPARING_REBALANCE and (
            (all(m.joined for m in self.members.values()) and now_ms >= self.initial_until_ms)
            or now_ms >= self.rebalance_deadline_ms
        ):
            return ready + self._complete_join(), expired
        return ready, expired

    # ---- persistence (the coordinator stores this with the offsets) ----------------------------

    def snapshot(self) -> list[Any]:
        """The membership as plain lists (cbor-ready): generation, assignor, leader, members."""
        return [
            self.generation,
            self.protocol,
            self.leader_id,
            [
                [
                    m.member_id,
                    m.instance_id,
                    m.client_id,
                    m.session_timeout_ms,
                    m.rebalance_timeout_ms,
                    [[name, data] for name, data in m.protocols],
                    m.assignment,
                ]
                for m in sorted(self.members.values(), key=lambda m: m.join_order)
            ],
        ]

    def restore(self, snapshot: Sequence[Any], now_ms: int, *, stable: bool) -> None:
        """Take over a membership ``snapshot`` wrote (a new coordinator loading the group).

        Every member's session starts now. ``stable``: the snapshot is the group's latest
        generation; otherwise a later round was under way when the old coordinator went, and the
        known members rejoin (their ids stay valid: no UNKNOWN_MEMBER_ID, no lost partitions).
        """
        try:  # all parsed before anything changes: a bad snapshot leaves the group as it was
            generation, protocol, leader_id, members = snapshot
            loaded = [
                Member(
                    str(member_id),
                    str(client_id),
                    int(session),
                    int(rebalance),
                    tuple((str(name), bytes(data)) for name, data in protocols),
                    now_ms,
                    assignment=bytes(given),
                    join_order=order,
                    instance_id=str(instance_id),
                )
                for order, (
                    member_id,
                    instance_id,
                    client_id,
                    session,
                    rebalance,
                    protocols,
                    given,
                ) in enumerate(members, 1)
            ]
            generation = int(generation)
        except (TypeError, ValueError) as exc:
            raise GroupError(
                ErrorCode.CORRUPT_MESSAGE, f"{self.group_id}: unreadable membership: {exc}"
            ) from exc
        self.generation = max(self.generation, generation)
        self.protocol = str(protocol)
        self.leader_id = str(leader_id)
        self.members = {m.member_id: m for m in loaded}
        self.static = {m.instance_id: m.member_id for m in loaded if m.instance_id}
        self._join_counter = len(self.members)
        if not self.members:
            self.state, self.leader_id = GroupState.EMPTY, ""
        elif stable:
            self.state = GroupState.STABLE
        else:
            self._start_rebalance(now_ms)
