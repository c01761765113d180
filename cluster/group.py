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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

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
    _next_member: int = 0
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
    ) -> str:
        """Start or join a round; returns the member id (new ones get one). The answer comes
        from ``poll`` when the round completes."""
        if not protocols:
            raise GroupError(ErrorCode.INVALID_REQUEST, "a member must name at least one assignor")
        if any(not name for name, _ in protocols):
            # "" is what _common_protocol answers for "nothing in common": never a name
            raise GroupError(ErrorCode.INVALID_REQUEST, "an assignor needs a name")
        if not 1000 <= session_timeout_ms <= 300_000:
            raise GroupError(ErrorCode.INVALID_SESSION_TIMEOUT, "session timeout must be 1-300 s")
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
        if not member_id:
            if len(self.members) >= MEMBERS_MAX:
                raise GroupError(ErrorCode.GROUP_MAX_SIZE_REACHED, f"{self.group_id} is full")
            self._next_member += 1
            member_id = f"{client_id or 'member'}-{self.generation}-{self._next_member}"
        member = self.members.get(member_id)
        if member is None:
            member = Member(
                member_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                tuple(protocols),
                now_ms,
            )
            self.members[member_id] = member
        else:
            member.protocols = tuple(protocols)
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.last_heartbeat_ms = now_ms
        if self.state is not GroupState.PREPARING_REBALANCE:
            self._start_rebalance(now_ms)
        if not member.joined:
            self._join_counter += 1
            member.joined = True
            member.join_order = self._join_counter
        return member_id

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
            del self.members[member_id]  # did not rejoin in time
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

    def _check(self, member_id: str, generation: int) -> Member:
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
    ) -> list[SyncAnswer]:
        """A member's sync; the leader's carries everyone's assignment. Returns the answers
        that are due now (all of them when the leader's arrives)."""
        if self.state is GroupState.PREPARING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS, "a new round started: join again")
        member = self._check(member_id, generation)
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

    def heartbeat(self, member_id: str, generation: int, now_ms: int) -> None:
        member = self._check(member_id, generation)
        member.last_heartbeat_ms = now_ms
        if self.state is GroupState.PREPARING_REBALANCE:
            raise GroupError(
                ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing: join again"
            )

    def leave(self, member_id: str, now_ms: int) -> None:
        if member_id not in self.members:
            raise GroupError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"no member {member_id} in {self.group_id}"
            )
        del self.members[member_id]
        self.awaiting_sync.discard(member_id)
        self._after_departure(now_ms)

    def _after_departure(self, now_ms: int) -> None:
        if not self.members:
            self.state = GroupState.EMPTY
            self.leader_id = ""
            self.generation += 1
        elif self.state is not GroupState.PREPARING_REBALANCE:
            self._start_rebalance(now_ms)

    def check_commit(self, member_id: str, generation: int) -> None:
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
            del self.members[member_id]
            self.awaiting_sync.discard(member_id)
        if expired:
            self._after_departure(now_ms)
        if self.state is GroupState.PREPARING_REBALANCE and (
            all(m.joined for m in self.members.values()) or now_ms >= self.rebalance_deadline_ms
        ):
            return self._complete_join(), expired
        return [], expired
