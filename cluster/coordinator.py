"""The group coordinator: consumer groups and their committed offsets, on the offsets topic.

Owned by the broker loop; not thread-safe. A group's coordinator is the leader of partition
``crc32(group_id) % OFFSETS_PARTITIONS`` of the internal topic ``__consumer_offsets`` (created by
the controller on first use, replication factor 3 — fewer on smaller clusters — and min ISR 2).
Committed offsets are records in that partition, appended with acks=all semantics through the
replica manager, so they survive broker failures by the same replication as data; a new leader
rebuilds the coordinator's view by reading the partition (``COORDINATOR_LOAD_IN_PROGRESS`` until
done), and gives up its groups the moment it stops leading (``NOT_COORDINATOR``).

Records of the offsets topic (cbor2 keys and values, the key says which)::

    key ["o", group, topic, partition]   value [next offset, metadata, commit time ms]
    key ["g", group]                     value [generation]   — a round completed: generations
                                                                 only grow
    key ["m", group]                     value [generation, assignor, leader, members]
                                           — the membership (``Group.snapshot``) of a completed
                                             sync, or of a group that became empty

The offsets topic is compacted, so what a coordinator loads must depend only on the latest
record of each key: the membership has a key of its own (under ``["g", group]`` a later
generation record would make compaction drop it; logs written before the split still hold
memberships there, and are read as such). Deleting a group (DeleteGroups, only once it is empty)
writes tombstones for each of its keys in one batch: a load skips the group, before and after the
cleaner has removed the records and, past ``delete.retention.ms``, the tombstones themselves.

Offsets expire as Kafka's do (KIP-211, ``offsets.retention.minutes``): never while the group has
members; once it is empty, all of them ``offsets_retention_ms`` after it became empty (or after
the last commit, when that is later — Kafka counts from the state change alone); a group that
never had members (commits only) loses each offset ``offsets_retention_ms`` after its commit.
A group left with no offsets and no members is deleted. ``expired_offsets`` is the rule; when
it became empty survives a coordinator move as the timestamp of the group's (empty) membership.

Group membership is persisted as Kafka persists it: the leader's sync is answered only once the
group's members and assignments are replicated (acks=all on the offsets partition), and so is a
static member taking its place back. A new coordinator (the old one died, or the offsets
partition's leadership moved) loads the last membership and goes on with the same generation,
member ids and assignments: nobody rebalances and in-flight commits succeed when the client retries
them there. If a later round had completed (a generation record after the last membership), the
loaded members keep their ids and are asked to rejoin. The membership rules are the pure
``group.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from raftlog.proto.codes import CodedError, ErrorCode
from raftlog.segments import BatchBuilder, StorageError, iter_batches, iter_records

from .group import Group, GroupError, GroupState, JoinAnswer, SyncAnswer
from .partition import Partition
from .replica_manager import ReplicaManager
from .tasks import TaskSet

__all__ = ["OFFSETS_PARTITIONS", "OFFSETS_TOPIC", "CoordinatorError", "GroupCoordinator"]

logger = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 8
COMMIT_TIMEOUT_MS = 10_000
# stored times below this (2001-09-09) are not wall-clock: records written before the coordinator
# stored wall-clock time carry a monotonic clock's (an uptime); the load takes them as unknown
WALL_MS_MIN = 10**12
OffsetKey = tuple[str, int]


class CoordinatorError(CodedError):
    """A group coordinator's answer with its ErrorCode."""


def offsets_partition(group_id: str) -> int:
    """Which offsets partition (and so which coordinator) a group lives in: stable everywhere."""
    return zlib.crc32(group_id.encode()) % OFFSETS_PARTITIONS


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return cbor2.dumps(["o", group_id, topic, partition])


def generation_key(group_id: str) -> bytes:
    return cbor2.dumps(["g", group_id])


def membership_key(group_id: str) -> bytes:
    return cbor2.dumps(["m", group_id])


def expired_offsets(
    commit_ms: Mapping[OffsetKey, int],
    *,
    had_members: bool,
    has_members: bool,
    empty_since_ms: int | None,
    now_ms: int,
    retention_ms: int,
) -> set[OffsetKey]:
    """The committed offsets of a group that have expired (see the module docstring)."""
    if has_members:
        return set()
    if had_members and (empty_since_ms is None or now_ms - empty_since_ms < retention_ms):
        return set()
    return {tp for tp, t in commit_ms.items() if now_ms - t >= retention_ms}


def group_keys(group_id: str, partitions: Iterable[OffsetKey]) -> list[bytes]:
    """Every key of a group with offsets of ``partitions``: what deleting it tombstones."""
    keys = [offset_key(group_id, t, p) for t, p in sorted(partitions)]
    return [*keys, membership_key(group_id), generation_key(group_id)]


@dataclass(slots=True)
class _GroupEntry:
    group: Group
    offsets: dict[OffsetKey, tuple[int, str]] = field(default_factory=dict)
    joins: dict[str, asyncio.Future[JoinAnswer]] = field(default_factory=dict)
    syncs: dict[str, asyncio.Future[SyncAnswer]] = field(default_factory=dict)
    persisted_generation: int = 0
    snapshot: list[Any] | None = None  # while loading: the last membership record
    deleting: bool = False  # its tombstones are being replicated: nothing else may touch it
    commit_ms: dict[OffsetKey, int] = field(default_factory=dict)  # when each offset was committed
    empty_since_ms: int | None = None  # when it last had no members (None: it has some)
    snapshot_ms: int = -1  # while loading: the timestamp of the last membership record
    storing: asyncio.Future[None] | None = None  # the membership being replicated
    # commits accepted (their member and generation checked) and still replicating: an offset
    # fetch waits for them, so a member handed a partition in the next generation starts after
    # every commit its previous owner was allowed to make
    committing: set[asyncio.Future[None]] = field(default_factory=set)


@dataclass(slots=True)
class _Loaded:
    leader_epoch: int
    groups: dict[str, _GroupEntry] = field(default_factory=dict)


class GroupCoordinator:
    """See the module docstring."""

    def __init__(
        self,
        replicas: ReplicaManager,
        clock_ms: Callable[[], int],
        create_offsets_topic: Callable[[], Coroutine[Any, Any, None]],
        *,
        initial_rebalance_delay_ms: int = 0,
        offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
        offsets_retention_check_interval_ms: int = 600_000,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.replicas = replicas
        self.clock_ms = clock_ms  # monotonic: sessions, rounds, the check interval
        # wall-clock: what is stored and outlives this process (record timestamps, commit times,
        # when a group became empty) and retention measured against it; a test's one fake clock
        # may serve both
        self.wall_ms = wall_ms if wall_ms is not None else clock_ms
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.offsets_retention_check_interval_ms = offsets_retention_check_interval_ms
        self._last_expiry_check_ms = clock_ms()
        self.tasks = TaskSet("coordinator")  # generation writes in flight
        self._create_offsets_topic = create_offsets_topic
        self._loaded: dict[int, _Loaded] = {}
        self._creating: asyncio.Task[None] | None = None
        self.loads = 0

    # ---- ownership -------------------------------------------------------------------------

    def _leading(self, index: int) -> Partition | None:
        partition = self.replicas.partitions.get((OFFSETS_TOPIC, index))
        return partition if partition is not None and partition.is_leader else None

    def tick(self) -> None:
        """Every ~100 ms: load what we now lead, drop what we lost, run group timers."""
        now = self.clock_ms()
        for index in range(OFFSETS_PARTITIONS):
            partition = self._leading(index)
            loaded = self._loaded.get(index)
            if partition is None:
                if loaded is not None:
                    self._unload(index)
                continue
            if loaded is None or loaded.leader_epoch != partition.leader_epoch:
                if loaded is not None:
                    self._unload(index)
                self._load(index, partition)
        for loaded in self._loaded.values():
            for entry in loaded.groups.values():
                self._poll(entry, now)
        if now - self._last_expiry_check_ms >= self.offsets_retention_check_interval_ms:
            self._last_expiry_check_ms = now
            self._expire(self.wall_ms())

    def _load(self, index: int, partition: Partition) -> None:
        log_ = partition.log
        offset = log_.log_start_offset

        def records() -> Iterator[tuple[bytes | None, bytes | None, int]]:
            nonlocal offset
            try:
                while offset < log_.log_end_offset:
                    result = log_.read(offset, 4 << 20)
                    if not result.data:
                        break
                    for position, header in iter_batches(result.data):
                        batch = result.data[position : position + header.size_bytes]
                        for record in iter_records(batch):
                            yield record.key, record.value, record.timestamp_ms
                    offset = result.next_offset
            except StorageError as exc:
                logger.error("offsets partition %s: load stopped at %s: %s", index, offset, exc)

        loaded = self.load_records(partition.leader_epoch, records(), index)
        self._loaded[index] = loaded
        self.loads += 1
        logger.info("coordinating %d group(s) of offsets partition %s", len(loaded.groups), index)

    def load_records(
        self,
        leader_epoch: int,
        records: Iterable[tuple[bytes | None, bytes | None, int]],
        index: int = -1,
    ) -> _Loaded:
        """The groups an offsets partition's records (key, value, timestamp) describe (pure: no
        IO)."""
        loaded = _Loaded(leader_epoch)
        for key, value, timestamp_ms in records:
            self._replay(loaded, key, value, timestamp_ms)
        self._settle(loaded, index)
        return loaded

    def _settle(self, loaded: _Loaded, index: int) -> None:
        """After the records: forget the groups that hold nothing (deleted, or empty with no
        offsets — Kafka's Dead), restore the others' memberships."""
        now = self.clock_ms()
        for group_id, entry in list(loaded.groups.items()):
            members = entry.snapshot[3] if entry.snapshot is not None else None
            if not entry.offsets and not members:
                del loaded.groups[group_id]
                continue
            if entry.snapshot is not None:
                stable = entry.snapshot[0] == entry.group.generation
                try:
                    entry.group.restore(entry.snapshot, now, stable=stable)
                except GroupError as exc:  # the members rejoin: UNKNOWN_MEMBER_ID, a new round
                    logger.error("offsets partition %s: %s", index, exc.message)
                entry.snapshot = None
            wall = self.wall_ms()
            for tp, t in entry.commit_ms.items():  # unknown: retention counts from this load
                if t < WALL_MS_MIN:
                    entry.commit_ms[tp] = wall
            if not entry.group.members:  # empty since its (empty) membership was stored
                stored = entry.snapshot_ms
                entry.empty_since_ms = stored if stored >= WALL_MS_MIN else wall

    def _new_entry(self, group_id: str) -> _GroupEntry:
        group = Group(
            group_id,
            initial_delay_ms=self.initial_rebalance_delay_ms,
            unique=lambda: str(uuid.uuid4()),
        )
        return _GroupEntry(group)

    def _replay(
        self, loaded: _Loaded, key: bytes | None, value: bytes | None, timestamp_ms: int
    ) -> None:
        if key is None:
            return
        try:
            k = cbor2.loads(key)
            v = cbor2.loads(value) if value is not None else None
        except Exception:  # a record we cannot read is skipped, never fatal
            return
        if not isinstance(k, list) or len(k) < 2:
            return
        try:
            self._apply(loaded, k, v, timestamp_ms)
        except (TypeError, ValueError, IndexError, KeyError):  # a malformed record: skipped
            logger.warning("offsets topic: a record of unexpected shape skipped: %r", k)

    def _apply(self, loaded: _Loaded, k: list[Any], v: Any, timestamp_ms: int) -> None:
        group_id = str(k[1])
        entry = loaded.groups.get(group_id)
        if entry is None:
            if v is None:  # a tombstone of a group not seen: nothing to forget
                return
            entry = loaded.groups[group_id] = self._new_entry(group_id)
        kind = k[0]
        if kind == "o" and len(k) == 4:
            tp = (str(k[2]), int(k[3]))
            if v is None:
                entry.offsets.pop(tp, None)
                entry.commit_ms.pop(tp, None)
            else:
                entry.offsets[tp] = (int(v[0]), str(v[1]))
                entry.commit_ms[tp] = int(v[2]) if len(v) > 2 else timestamp_ms
        elif kind in ("g", "m") and v is None:  # the group was deleted
            if kind == "g":
                entry.group.generation = entry.persisted_generation = 0
            entry.snapshot, entry.snapshot_ms = None, -1
        elif kind in ("g", "m") and isinstance(v, list) and v and isinstance(v[0], int):
            entry.group.generation = max(entry.group.generation, v[0])
            entry.persisted_generation = entry.group.generation
            if len(v) == 4:  # a membership (under "g" in older logs); [generation] alone only
                entry.snapshot, entry.snapshot_ms = v, timestamp_ms  # moves the generation on

    def _unload(self, index: int) -> None:
        loaded = self._loaded.pop(index)
        for entry in loaded.groups.values():
            error = CoordinatorError(ErrorCode.NOT_COORDINATOR, "the coordinator moved")
            for join in entry.joins.values():
                if not join.done():
                    join.set_exception(error)
            for sync in entry.syncs.values():
                if not sync.done():
                    sync.set_exception(error)

    def _entry(self, group_id: str, *, create: bool = True) -> _GroupEntry:
        if not group_id:
            raise CoordinatorError(ErrorCode.INVALID_GROUP_ID, "a group id is required")
        index = offsets_partition(group_id)
        if self._leading(index) is None:
            raise CoordinatorError(
                ErrorCode.NOT_COORDINATOR, f"this broker does not coordinate group {group_id!r}"
            )
        loaded = self._loaded.get(index)
        if loaded is None:
            raise CoordinatorError(
                ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "loading the group's offsets"
            )
        entry = loaded.groups.get(group_id)
        if entry is None:
            if not create:
                raise CoordinatorError(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group_id!r}")
            entry = loaded.groups[group_id] = self._new_entry(group_id)
        elif entry.deleting:
            raise CoordinatorError(
                ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, f"group {group_id!r} is being deleted"
            )
        return entry

    async def find(self, group_id: str) -> int:
        """The offsets partition of a group, creating the offsets topic on first use."""
        if not group_id:
            raise CoordinatorError(ErrorCode.INVALID_GROUP_ID, "a group id is required")
        if self.replicas.topic_lookup(OFFSETS_TOPIC) is None:
            if self._creating is None or self._creating.done():
                self._creating = asyncio.get_running_loop().create_task(
                    self._create_offsets_topic()
                )
            raise CoordinatorError(
                ErrorCode.COORDINATOR_NOT_AVAILABLE, "creating the offsets topic"
            )
        return offsets_partition(group_id)

    # ---- membership ------------------------------------------------------------------------

    def _poll(self, entry: _GroupEntry, now_ms: int) -> None:
        group = entry.group
        before = group.state
        answers, _expired = group.poll(now_ms)
        if group.members:
            entry.empty_since_ms = None
        elif entry.empty_since_ms is None:
            entry.empty_since_ms = self.wall_ms()
        for answer in answers:
            future = entry.joins.pop(answer.member_id, None)
            if future is not None and not future.done():
                future.set_result(answer)
        if group.state is GroupState.PREPARING_REBALANCE and before is not group.state:
            self._fail_syncs(entry)
        for member_id in [m for m in entry.joins if m not in group.members]:
            future = entry.joins.pop(member_id)
            if not future.done():
                future.set_exception(
                    CoordinatorError(ErrorCode.UNKNOWN_MEMBER_ID, "removed from group")
                )
        if group.generation > entry.persisted_generation:
            entry.persisted_generation = group.generation
            # an empty group's record is its (empty) membership: nobody to bring back
            value = group.snapshot() if not group.members else [group.generation]
            self.tasks.spawn(self._persist_quietly(group.group_id, value))

    def _fail_syncs(self, entry: _GroupEntry) -> None:
        for member_id, future in list(entry.syncs.items()):
            if not future.done():
                future.set_exception(
                    CoordinatorError(
                        ErrorCode.REBALANCE_IN_PROGRESS, "a new round started: join again"
                    )
                )
            entry.syncs.pop(member_id, None)

    async def join(
        self,
        group_id: str,
        member_id: str,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocols: list[tuple[str, bytes]],
        instance_id: str = "",
    ) -> JoinAnswer:
        entry = self._entry(group_id)
        group = entry.group
        before = group.state
        try:
            member_id = group.join(
                member_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                self.clock_ms(),
                instance_id,
            )
        except GroupError as exc:
            raise CoordinatorError(exc.code, exc.message) from exc
        if before is not GroupState.PREPARING_REBALANCE:
            self._fail_syncs(entry)
        old = entry.joins.pop(member_id, None)
        if old is not None and not old.done():
            old.set_exception(CoordinatorError(ErrorCode.REBALANCE_IN_PROGRESS, "joined again"))
        future: asyncio.Future[JoinAnswer] = asyncio.get_running_loop().create_future()
        entry.joins[member_id] = future
        self._poll(entry, self.clock_ms())
        if future.done() and not future.exception() and group.state is GroupState.STABLE:
            # a static member took its place back without a round: its new member id must
            # survive a coordinator move before it may use it
            await self._persist_membership(entry, "the static member's new id")
        wait_s = min(rebalance_timeout_ms, 300_000) / 1000 + 5
        try:
            return await asyncio.wait_for(future, wait_s)
        except TimeoutError as exc:
            raise CoordinatorError(
                ErrorCode.REBALANCE_IN_PROGRESS, "the join round timed out"
            ) from exc

    async def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: list[tuple[str, bytes]],
        instance_id: str = "",
    ) -> bytes:
        entry = self._entry(group_id, create=False)
        if entry.storing is not None:  # a sync arriving while the assignment is being stored
            await asyncio.shield(entry.storing)
        before = entry.group.state
        try:
            due = entry.group.sync(member_id, generation, assignments, self.clock_ms(), instance_id)
        except GroupError as exc:
            raise CoordinatorError(exc.code, exc.message) from exc
        if before is GroupState.COMPLETING_REBALANCE and entry.group.state is GroupState.STABLE:
            try:  # nobody learns the assignment before it would survive a coordinator move
                await self._persist_membership(entry, "the assignment")
            except CoordinatorError as exc:
                for answer in due:
                    future = entry.syncs.pop(answer.member_id, None)
                    if future is not None and not future.done():
                        future.set_exception(exc)
                raise
        mine: bytes | None = None
        for answer in due:
            if answer.member_id == member_id:
                mine = answer.assignment
                continue
            future = entry.syncs.pop(answer.member_id, None)
            if future is not None and not future.done():
                future.set_result(answer)
        if mine is not None:
            return mine
        future = asyncio.get_running_loop().create_future()
        entry.syncs[member_id] = future
        try:
            answer = await asyncio.wait_for(future, 60)
        except TimeoutError as exc:
            raise CoordinatorError(
                ErrorCode.REBALANCE_IN_PROGRESS, "the leader never synced"
            ) from exc
        return answer.assignment

    def heartbeat(
        self, group_id: str, member_id: str, generation: int, instance_id: str = ""
    ) -> None:
        entry = self._entry(group_id, create=False)
        try:
            entry.group.heartbeat(member_id, generation, self.clock_ms(), instance_id)
        except GroupError as exc:
            raise CoordinatorError(exc.code, exc.message) from exc

    def leave(self, group_id: str, member_id: str, instance_id: str = "") -> None:
        entry = self._entry(group_id, create=False)
        try:
            entry.group.leave(member_id, self.clock_ms(), instance_id)
        except GroupError as exc:
            raise CoordinatorError(exc.code, exc.message) from exc
        self._fail_syncs(entry)
        self._poll(entry, self.clock_ms())

    # ---- offsets -------------------------------------------------------------------------------

    async def commit(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: list[tuple[str, int, int, str]],
        instance_id: str = "",
    ) -> None:
        """Replicate the commit (acks=all on the offsets partition), then remember it."""
        entry = self._entry(group_id)
        try:
            entry.group.check_commit(member_id, generation, instance_id)
        except GroupError as exc:
            raise CoordinatorError(exc.code, exc.message) from exc
        if not offsets:
            return
        now = self.wall_ms()
        builder = BatchBuilder()
        for topic, partition, offset, metadata in offsets:
            if offset < 0:
                raise CoordinatorError(
                    ErrorCode.INVALID_REQUEST, f"offset {offset} for {topic}-{partition}"
                )
            builder.append(
                cbor2.dumps([offset, metadata, now]),
                key=offset_key(group_id, topic, partition),
                timestamp_ms=now,
            )
        done = asyncio.get_running_loop().create_future()
        entry.committing.add(done)
        try:
            await self._append(group_id, builder.build())
            for topic, partition, offset, metadata in offsets:
                entry.offsets[(topic, partition)] = (offset, metadata)
                entry.commit_ms[(topic, partition)] = now
        finally:
            entry.committing.discard(done)
            done.set_result(None)

    async def fetch_settled(
        self, group_id: str, partitions: list[OffsetKey] | None
    ) -> dict[OffsetKey, tuple[int, str]]:
        """``fetch`` once the commits already accepted for the group have finished (bounded by
        the commit timeout): the race it closes is a member committing during a rebalance while
        the partition's next owner asks where to start."""
        entry = self._existing(group_id)
        if entry is not None and entry.committing:
            await asyncio.wait(set(entry.committing), timeout=COMMIT_TIMEOUT_MS / 1000)
        return self.fetch(group_id, partitions)

    async def _append(self, group_id: str, batch: bytes) -> None:
        index = offsets_partition(group_id)
        outcome = (
            await self.replicas.produce(-1, COMMIT_TIMEOUT_MS, [(OFFSETS_TOPIC, index, batch)])
        )[0]
        if outcome.error != ErrorCode.NONE:
            code = outcome.error
            if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                code = ErrorCode.NOT_COORDINATOR
            raise CoordinatorError(code, f"the commit was not replicated: {outcome.message}")

    async def _persist(self, group_id: str, value: list[Any]) -> None:
        """A generation record ([generation]) or a membership (``Group.snapshot``)."""
        key = generation_key(group_id) if len(value) == 1 else membership_key(group_id)
        builder = BatchBuilder()
        builder.append(cbor2.dumps(value), key=key, timestamp_ms=self.wall_ms())
        await self._append(group_id, builder.build())

    async def delete(self, group_id: str) -> None:
        """DeleteGroups for one group: an empty one only (NON_EMPTY_GROUP otherwise). Waits for
        the commits in flight, then replicates a tombstone of every key the group has (acks=all,
        one batch) before forgetting it; meanwhile the group answers everyone
        COORDINATOR_LOAD_IN_PROGRESS (retriable), so nothing lands between the two."""
        entry = self._entry(group_id, create=False)
        group = entry.group
        if group.members or entry.joins:
            raise CoordinatorError(
                ErrorCode.NON_EMPTY_GROUP,
                f"group {group_id!r} has {len(group.members)} member(s) ({group.state.value})",
            )
        await self._remove(entry, None)

    async def _remove(self, entry: _GroupEntry, expired: set[OffsetKey] | None) -> None:
        """Tombstone the ``expired`` offsets of a group, or all its keys (None: delete it),
        then forget them. The group is closed to everyone meanwhile (``deleting``), after the
        commits in flight: a commit cannot land between the choice and its tombstone."""
        group_id = entry.group.group_id
        entry.deleting = True
        try:
            if entry.committing:
                await asyncio.wait(set(entry.committing), timeout=COMMIT_TIMEOUT_MS / 1000)
            if expired is not None:  # a commit before the close may have renewed some
                now = self.wall_ms()
                retention = self.offsets_retention_ms
                expired = {tp for tp in expired if now - entry.commit_ms.get(tp, now) >= retention}
                if not expired and (entry.offsets or entry.group.members):
                    return
            whole = expired is None or (expired >= set(entry.offsets) and not entry.group.members)
            keys = (
                group_keys(group_id, entry.offsets)
                if whole
                else [offset_key(group_id, t, p) for t, p in sorted(expired or ())]
            )
            builder = BatchBuilder()
            for key in keys:
                builder.append(None, key=key, timestamp_ms=self.wall_ms())
            await self._append(group_id, builder.build())
        finally:
            entry.deleting = False
        loaded = self._loaded.get(offsets_partition(group_id))
        if loaded is None or loaded.groups.get(group_id) is not entry:
            return  # the partition moved meanwhile: the new leader loads the tombstones
        if whole:
            del loaded.groups[group_id]
        for tp in expired or ():
            entry.offsets.pop(tp, None)
            entry.commit_ms.pop(tp, None)
        if expired:
            logger.info("group %s: %d committed offset(s) expired", group_id, len(expired))

    def _expire(self, now_ms: int) -> None:
        """Start removing the offsets retention has expired (``expired_offsets``); ``now_ms``
        is wall-clock time, as the commit times are."""
        for loaded in self._loaded.values():
            for entry in list(loaded.groups.values()):
                if entry.deleting or entry.joins or entry.storing is not None:
                    continue
                group = entry.group
                expired = expired_offsets(
                    entry.commit_ms,
                    had_members=group.generation > 0,
                    has_members=bool(group.members),
                    empty_since_ms=entry.empty_since_ms,
                    now_ms=now_ms,
                    retention_ms=self.offsets_retention_ms,
                )
                forgotten = (  # an empty group with nothing left: Kafka's Dead
                    not entry.offsets
                    and not group.members
                    and entry.empty_since_ms is not None
                    and now_ms - entry.empty_since_ms >= self.offsets_retention_ms
                )
                if expired or forgotten:
                    self.tasks.spawn(self._remove_quietly(entry, expired))

    async def _remove_quietly(self, entry: _GroupEntry, expired: set[OffsetKey]) -> None:
        with contextlib.suppress(CoordinatorError):  # the next check tries again
            await self._remove(entry, expired)

    async def _persist_quietly(self, group_id: str, value: list[Any]) -> None:
        with contextlib.suppress(CoordinatorError):  # the next generation writes it again
            await self._persist(group_id, value)

    async def _persist_membership(self, entry: _GroupEntry, what: str) -> None:
        """Replicate the group's membership now; if that fails, or the group moved on while it
        was written, the members are told to rejoin (CoordinatorError says why)."""
        group = entry.group
        generation = group.generation
        storing = entry.storing = asyncio.get_running_loop().create_future()
        try:
            await self._persist(group.group_id, group.snapshot())
        except CoordinatorError as exc:
            if group.generation == generation and group.state is GroupState.STABLE:
                group.rebalance(self.clock_ms())
            code = exc.code
            if code not in (ErrorCode.NOT_COORDINATOR, ErrorCode.REBALANCE_IN_PROGRESS):
                code = ErrorCode.COORDINATOR_NOT_AVAILABLE  # e.g. the offsets partition's ISR
            raise CoordinatorError(code, f"{what} was not stored: {exc.message}") from exc
        finally:
            storing.set_result(None)
            if entry.storing is storing:
                entry.storing = None
        if group.generation != generation or group.state is not GroupState.STABLE:
            raise CoordinatorError(
                ErrorCode.REBALANCE_IN_PROGRESS, "a new round started: join again"
            )
        entry.persisted_generation = max(entry.persisted_generation, generation)

    def fetch(
        self, group_id: str, partitions: list[OffsetKey] | None
    ) -> dict[OffsetKey, tuple[int, str]]:
        entry = self._existing(group_id)  # asking never creates a group
        offsets = entry.offsets if entry is not None else {}
        if not partitions:
            return dict(offsets)
        return {tp: offsets.get(tp, (-1, "")) for tp in partitions}

    def _existing(self, group_id: str) -> _GroupEntry | None:
        try:
            return self._entry(group_id, create=False)
        except CoordinatorError as exc:
            if exc.code == ErrorCode.GROUP_ID_NOT_FOUND:
                return None
            raise

    # ---- describing --------------------------------------------------------------------------

    def groups(self) -> list[tuple[str, str, int]]:
        out = []
        for loaded in self._loaded.values():
            for group_id, entry in loaded.groups.items():
                out.append((group_id, entry.group.state.value, len(entry.group.members)))
        return sorted(out)

    def committed(self) -> list[tuple[str, int, dict[OffsetKey, int]]]:
        """(group, members, committed offset per partition) of every group coordinated here."""
        return [
            (
                group_id,
                len(entry.group.members),
                {key: offset for key, (offset, _) in entry.offsets.items()},
            )
            for loaded in self._loaded.values()
            for group_id, entry in loaded.groups.items()
        ]

    def describe(self, group_id: str) -> dict[str, Any]:
        entry = self._entry(group_id, create=False)
        group = entry.group
        now = self.clock_ms()
        return {
            "state": group.state.value,
            "generation": group.generation,
            "protocol": group.protocol,
            "leader_id": group.leader_id,
            "members": [
                (m.member_id, m.client_id, m.assignment, now - m.last_heartbeat_ms, m.instance_id)
                for m in group.members.values()
            ],
        }
