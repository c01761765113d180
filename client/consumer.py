"""The Consumer: assign partitions, seek, poll records from partition leaders.

Not thread-safe (like Kafka's): one thread owns a Consumer. ``poll`` sends one long-poll Fetch per
leader broker for the assigned partitions (in parallel, gRPC futures), decodes the batches, and
returns records in offset order per partition. Only records below the high watermark ever come
back (the broker enforces it).

Leader changes are followed: NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
and transport errors refresh the metadata and the next poll goes to the new leader. Each fetch
carries the epoch of the last batch returned (KIP-320): if the partition's log diverged below our
position (only possible after an unclean election), the leader says where, and the consumer
raises ``LogTruncationError`` (``on_truncation="raise"``) or rewinds to the divergence point
(``"reset"``, the default) and counts it in ``stats`` — it never silently skips.

A batch that does not decode — its CRC holds but its records lie (a producer may store that), its
payload is garbage, or it inflates past ``batch_uncompressed_bytes_max`` (a decompression bomb
stops at that limit, it is never inflated in full) — is never half-delivered and never skipped
silently: ``poll`` first returns every record before it, then raises ``CorruptBatchError``
(code CORRUPT_MESSAGE, not retriable) naming the partition, ``offset`` (the position, which
stays at the bad batch) and ``next_offset`` (where the batch ends). Every poll raises it again
until the application seeks that partition: ``seek(tp, error.next_offset)`` skips the batch,
``seek(tp, error.offset)`` fetches it again. Other partitions' records fetched with it are kept.

In a group (``group_id`` and ``subscribe``), partitions are given up in one of two ways, and the
consumer's contract is Kafka's: ``on_revoke(partitions)`` when a rebalance takes them and this
member is still in the group (a commit there succeeds), ``on_lost(partitions)`` when the
membership is gone (session expired, fenced generation: another member may own them already, so
do not commit). Either way the partitions' positions and every buffered record of them are dropped
before ``poll`` returns again: no record of a revoked or lost partition is ever returned after
its callback, and each partition gets one callback per change. ``group_instance_id`` makes the
member static (KIP-345: a restart within the session timeout takes the same partitions back with
no rebalance; see ``client/group.py``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_incrementing,
)

from raftlog.proto import broker_pb2
from raftlog.proto.errors import LeaderNotAvailableError, RaftlogError, error_for
from raftlog.segments.batch import (
    UNCOMPRESSED_BYTES_MAX,
    CorruptRecordError,
    iter_batches,
    iter_records,
)

from .errors import CorruptBatchError, LogTruncationError, NetworkError, OffsetOutOfRangeError
from .group import GroupMembership
from .metadata import ClusterMetadata
from .metrics import ClientMetrics
from .security import ClientSecurity

__all__ = ["Consumer", "ConsumerRecord"]

TopicPartition = tuple[str, int]
EARLIEST, LATEST, NO_RESET = -2, -1, 0
COMMITTED = -3  # a partition the group just gave us: its committed offset, else the reset policy


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    leader_epoch: int


@dataclass(slots=True)
class _Position:
    offset: int | None  # None: reset by auto_offset_reset before the next fetch
    last_fetched_epoch: int = -1
    reset_to: int = EARLIEST  # what a None offset resets to


class Consumer:
    """See the module docstring, which also says what ``poll`` does with a batch that does not
    decode (good records first, then ``CorruptBatchError`` at the bad offset until a seek).

    ``batch_uncompressed_bytes_max`` bounds the memory one batch may inflate to (default: the
    larger of 64 MiB and ``fetch_max_bytes``, the memory a fetch is already allowed).
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        auto_offset_reset: str = "earliest",
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 << 20,
        partition_fetch_bytes_max: int = 4 << 20,
        request_timeout_ms: int = 30_000,
        on_truncation: str = "reset",
        group_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        assignors: Sequence[str] = ("sticky", "range", "roundrobin"),
        client_id: str = "raftlog-consumer",
        group_instance_id: str | None = None,
        metadata: ClusterMetadata | None = None,
        security: ClientSecurity | None = None,
        batch_uncompressed_bytes_max: int | None = None,
        metrics: ClientMetrics | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset is earliest, latest or none")
        if on_truncation not in ("reset", "raise"):
            raise ValueError("on_truncation is reset or raise")
        self.auto_offset_reset = auto_offset_reset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.partition_fetch_bytes_max = partition_fetch_bytes_max
        self.request_timeout_ms = request_timeout_ms
        self.on_truncation = on_truncation
        self.batch_uncompressed_bytes_max = batch_uncompressed_bytes_max or max(
            UNCOMPRESSED_BYTES_MAX, fetch_max_bytes
        )
        self.metadata = metadata or ClusterMetadata(bootstrap, security=security)
        self._owns_metadata = metadata is None
        self._positions: dict[TopicPartition, _Position] = {}
        self._buffer: deque[ConsumerRecord] = deque()
        # partitions stopped at a batch that does not decode; poll raises once _buffer is empty,
        # until a seek (or a new assignment) forgets the entry
        self._corrupt: dict[TopicPartition, CorruptBatchError] = {}
        self._closed = False
        # leader address → (its fetch in flight, the offset each partition was fetched from,
        # when it was sent)
        self._inflight: dict[str, tuple[Any, dict[TopicPartition, int], float]] = {}
        self._fetched = threading.Event()  # set by a fetch's completion (a gRPC thread)
        self.stats = {"fetches": 0, "records": 0, "truncations": 0, "errors": 0, "refreshes": 0}
        self.client_id = client_id
        self._metrics = metrics  # None: nothing recorded (client/metrics.py)
        self.last_errors: list[str] = []
        self.group: GroupMembership | None = None
        if group_id is not None:
            self.group = GroupMembership(
                self.metadata,
                group_id,
                client_id=client_id,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                assignors=assignors,
                group_instance_id=group_instance_id,
            )
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self._last_auto_commit = time.monotonic()
        self._on_assign: Callable[[list[TopicPartition]], None] | None = None
        self._on_revoke: Callable[[list[TopicPartition]], None] | None = None
        self._on_lost: Callable[[list[TopicPartition]], None] | None = None
        self._owned: set[TopicPartition] = set()  # what the group gave this member
        self._committer: ThreadPoolExecutor | None = None

    # ---- assignment and positions --------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions (positions reset per ``auto_offset_reset``)."""
        wanted = [(str(t), int(p)) for t, p in partitions]
        for topic, partition in wanted:
            count = self.metadata.partition_count(topic, wait_s=5.0)
            if not 0 <= partition < count:
                raise error_for(
                    "UNKNOWN_TOPIC_OR_PARTITION", f"{topic} has no partition {partition}"
                )
        default = {"latest": LATEST, "earliest": EARLIEST}.get(self.auto_offset_reset, NO_RESET)
        self._positions = {
            tp: self._positions.get(tp, _Position(None, reset_to=default)) for tp in wanted
        }
        self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) in self._positions)
        self._corrupt = {tp: e for tp, e in self._corrupt.items() if tp in self._positions}

    def assign_topic(self, topic: str) -> None:
        """Every partition of ``topic``."""
        self.assign((topic, p) for p in range(self.metadata.partition_count(topic, wait_s=5.0)))

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._positions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._position(partition)
        self._positions[partition] = _Position(offset)
        self._drop_buffered(partition)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._positions):
            self._position(tp)
            self._positions[tp] = _Position(None, reset_to=EARLIEST)
            self._drop_buffered(tp)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._positions):
            self._position(tp)
            self._positions[tp] = _Position(None, reset_to=LATEST)
            self._drop_buffered(tp)

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record to be returned (resolving a pending reset)."""
        state = self._position(partition)
        if state.offset is None:
            self._reset_positions([partition])
            state = self._position(partition)  # the reset put a new position in place
        buffered = [r.offset for r in self._buffer if (r.topic, r.partition) == partition]
        if buffered:
            return buffered[0]
        assert state.offset is not None
        return state.offset

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._list_offsets(list(partitions), LATEST)

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._list_offsets(list(partitions), EARLIEST)

    def _position(self, partition: TopicPartition) -> _Position:
        state = self._positions.get(partition)
        if state is None:
            raise ValueError(f"{partition} is not assigned to this consumer")
        return state

    def _drop_buffered(self, partition: TopicPartition) -> None:
        """Forget what was fetched from the old position: buffered records, a bad batch."""
        self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) != partition)
        self._corrupt.pop(partition, None)

    # ---- groups ----------------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_lost: Callable[[list[TopicPartition]], None] | None = None,
    ) -> None:
        """Share ``topics``' partitions with the group's other members (needs ``group_id``).

        ``on_revoke(partitions)`` runs before a rebalance takes partitions away while this member
        is still in the group (commit there for at-least-once: it succeeds); ``on_lost`` when the
        membership is gone (do not commit: the partitions may have a new owner already);
        ``on_assign(partitions)`` after the new ones are set up. Positions start at the group's
        committed offsets, else per ``auto_offset_reset``. Callbacks run in ``poll``, on the
        consumer's thread; nothing of a partition is returned after its revoke or loss.
        """
        if self.group is None:
            raise ValueError("subscribe needs a group_id; use assign() without a group")
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self.group.subscribe(topics)

    def _give_up(
        self,
        callback: Callable[[list[TopicPartition]], None] | None,
        partitions: Iterable[TopicPartition] | None = None,
    ) -> None:
        """Hand owned partitions back (default: all of them): the callback first (a revoke may
        commit the positions), then forget positions, buffered records and bad batches of them."""
        gone = set(self._owned if partitions is None else partitions) & self._owned
        self._owned -= gone
        try:
            if callback is not None and gone:
                callback(sorted(gone))
        finally:
            self._positions = {tp: s for tp, s in self._positions.items() if tp not in gone}
            self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) not in gone)
            self._corrupt = {tp: e for tp, e in self._corrupt.items() if tp not in gone}

    def _revoke(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Give partitions up in a rebalance: commit what was returned (auto-commit), on_revoke
        — or on_lost, when that commit finds the membership gone."""
        group = self.group
        assert group is not None
        if self.enable_auto_commit:
            with contextlib.suppress(RaftlogError):  # the group moved on: redelivery is fine
                self.commit()
        if group.take_lost():  # nothing to revoke: the membership is gone, all is lost
            self._give_up(self._on_lost)
        else:
            self._give_up(self._on_revoke, partitions)

    def _maintain_group(self) -> None:
        group = self.group
        if group is None or not group.topics:
            return
        if group.fenced is not None:
            raise group.fenced
        if group.take_lost():
            self._give_up(self._on_lost)
        if group.cooperative:
            outcome = group.round_outcome()
            if outcome is not None:
                self._take_cooperative(outcome[1])
            group.rejoin_in_background()  # if one is due: keep consuming meanwhile
            return
        if not group.rejoin_needed:
            return
        if self._owned:  # eager: everything goes back before the round
            self._revoke()
        changed = group.ensure_active()
        group.take_lost()  # a failed rejoin: nothing is owned now, there is nothing to lose
        if changed is not None:
            self._take_assigned(changed[1])

    def _take_cooperative(self, assigned: list[TopicPartition]) -> None:
        """A cooperative round's outcome: revoke only what moves away (and ask for the round that
        hands it over), start what is new; what stays never stops."""
        group = self.group
        assert group is not None
        revoked = self._owned - set(assigned)
        if revoked:
            self._revoke(revoked)
            group.assignment = sorted(self._owned)  # the next round's subscription says so
            group.request_rejoin()
        self._take_assigned([tp for tp in assigned if tp not in self._owned])

    def _take_assigned(self, added: list[TopicPartition]) -> None:
        """Start consuming ``added`` at the group's committed offsets (fetched before the next
        fetch, retried on every poll until the coordinator answers), then on_assign."""
        if not added:
            return
        for tp in added:
            self._positions[tp] = _Position(None, reset_to=COMMITTED)
            self._drop_buffered(tp)
        self._owned |= set(added)
        if self._on_assign is not None:
            self._on_assign(list(added))

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit the next offsets to consume (default: the positions of everything returned
        by ``poll`` so far), synchronously: returns once replicated."""
        if self.group is None:
            raise ValueError("commit needs a group_id")
        if offsets is None:
            offsets = {
                tp: state.offset
                for tp, state in self._positions.items()
                if state.offset is not None
            }
            for record in self._buffer:  # returned = up to the first still buffered
                key = (record.topic, record.partition)
                offsets[key] = min(offsets.get(key, record.offset), record.offset)
        self.group.commit(offsets)
        self._last_auto_commit = time.monotonic()

    def commit_async(
        self,
        offsets: dict[TopicPartition, int] | None = None,
        callback: Callable[[BaseException | None], None] | None = None,
    ) -> Future[None]:
        """``commit`` on a background thread; ``callback(error or None)`` when done."""
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="raftlog-commit")
        if offsets is None:
            offsets = {tp: s.offset for tp, s in self._positions.items() if s.offset is not None}
        future = self._committer.submit(self.commit, dict(offsets))
        if callback is not None:
            future.add_done_callback(lambda f: callback(f.exception()))
        return future

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        if self.group is None:
            raise ValueError("committed needs a group_id")
        return self.group.fetch_committed(list(partitions))

    # ---- polling ---------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 1000, max_records: int = 500) -> list[ConsumerRecord]:
        """Records after the current positions: waits up to ``timeout_ms`` for the first.

        Raises ``CorruptBatchError`` once every record fetched before a bad batch has been
        returned, and again on each poll until that partition is sought (class docstring).
        """
        deadline = time.monotonic() + timeout_ms / 1000
        if self.group is not None:
            self._maintain_group()
            if (
                self.enable_auto_commit
                and time.monotonic() - self._last_auto_commit > self.auto_commit_interval_ms / 1000
            ):
                try:
                    self.commit()
                except RaftlogError as exc:
                    self._note_error(exc)
        while True:
            if self._buffer:
                out: list[ConsumerRecord] = []
                while self._buffer and len(out) < max_records:
                    out.append(self._buffer.popleft())
                return out
            if self._corrupt:  # only now: every good record before the bad batch went out
                raise next(iter(self._corrupt.values()))
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._positions:
                return []
            self._fetch_once(min(left_ms, self.fetch_max_wait_ms))

    def __iter__(self) -> Iterator[ConsumerRecord]:
        while not self._closed:
            yield from self.poll()

    def _fetch_once(self, max_wait_ms: int) -> None:
        pending = [tp for tp, s in self._positions.items() if s.offset is None]
        if pending:
            try:
                self._reset_positions(pending)
            except RaftlogError as exc:
                self._note_error(exc)
                time.sleep(min(max_wait_ms, 100) / 1000)
                return
        by_leader: dict[str, list[TopicPartition]] = {}
        for tp in self._positions:
            found = self.metadata.leader_address(*tp)
            if found is None:
                continue
            by_leader.setdefault(found[1], []).append(tp)
        if not by_leader:
            self._refresh()
            time.sleep(min(max_wait_ms, 100) / 1000)
            return
        # one long-poll per leader, kept across polls: answer as soon as *any* leader has data
        # (waiting for every leader's long poll would add its max wait to every poll)
        busy = {tp for _, offsets, _ in self._inflight.values() for tp in offsets}
        for address, tps in by_leader.items():
            if address in self._inflight:
                continue
            tps = [tp for tp in tps if tp not in busy]
            if not tps:
                continue
            parts = [self._fetch_partition(tp) for tp in tps]
            request = broker_pb2.FetchRequest(
                replica_id=-1,
                max_wait_ms=max_wait_ms,
                min_bytes=self.fetch_min_bytes,
                max_bytes=self.fetch_max_bytes,
                partitions=parts,
            )
            self.stats["fetches"] += 1
            call = self.metadata.stub(address).Fetch.future(
                request, timeout=max_wait_ms / 1000 + self.request_timeout_ms / 1000
            )
            call.add_done_callback(lambda _: self._fetched.set())
            self._inflight[address] = (
                call,
                {(p.topic, p.partition): p.fetch_offset for p in parts},
                time.perf_counter(),
            )
        self._fetched.wait(max_wait_ms / 1000 + 0.05)
        self._fetched.clear()
        stale = False
        for address, (call, offsets, sent) in list(self._inflight.items()):
            if not call.done():
                continue
            del self._inflight[address]
            if self._metrics is not None:  # seen done now: includes up to one poll's wait
                self._metrics.request(self.client_id, "Fetch", time.perf_counter() - sent)
            try:
                response = call.result()
            except grpc.RpcError as exc:
                self._note_error(NetworkError(f"fetch failed: {exc.code()}"))
                stale = True
                continue
            for result in response.partitions:
                key = (result.topic, result.partition)
                state = self._positions.get(key)
                if state is None or state.offset != offsets.get(key):
                    continue  # sought elsewhere (or unassigned) while the fetch was out
                stale |= self._handle(result)
        if stale:
            self._refresh()

    def _fetch_partition(self, tp: TopicPartition) -> broker_pb2.FetchPartition:
        state = self._positions[tp]
        info = self.metadata.partition(*tp)
        assert state.offset is not None
        return broker_pb2.FetchPartition(
            topic=tp[0],
            partition=tp[1],
            fetch_offset=state.offset,
            current_leader_epoch=info.leader_epoch if info else -1,
            last_fetched_epoch=state.last_fetched_epoch,
            partition_max_bytes=self.partition_fetch_bytes_max,
        )

    def _handle(self, result: broker_pb2.FetchPartitionResult) -> bool:
        """Buffer one partition's records; True when metadata looks stale."""
        tp = (result.topic, result.partition)
        state = self._positions.get(tp)
        if state is None or state.offset is None or tp in self._corrupt:
            return False
        if result.error.code:
            error = error_for(result.error.code, result.error.message)
            self._note_error(error)
            if isinstance(error, OffsetOutOfRangeError):
                if self.auto_offset_reset == "none":
                    raise error
                state.offset = None
                state.reset_to = LATEST if self.auto_offset_reset == "latest" else EARLIEST
                return False
            return error.invalid_metadata or error.retriable
        if result.HasField("diverging_epoch"):
            self._truncated(tp, state, result.diverging_epoch)
            return False
        data = result.records
        position = state.offset
        topic, partition = tp
        limit = self.batch_uncompressed_bytes_max
        next_offset: int | None = None  # the end of the batch being decoded, if its header reads
        try:
            for start, header in iter_batches(data):
                next_offset = header.next_offset
                epoch = header.leader_epoch
                batch = data[start : start + header.size_bytes]
                # the whole batch or none of it: a bad record discards the list, not the buffer
                records = [
                    ConsumerRecord(
                        topic, partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers, epoch
                    )
                    for r in iter_records(batch, uncompressed_bytes_max=limit)
                    if r.offset >= position  # the batch may begin before our position
                ]
                next_offset = None
                self._buffer.extend(records)
                self.stats["records"] += len(records)
                if self._metrics is not None:
                    self._metrics.consumed(self.client_id, topic, len(records), len(batch))
                state.offset = max(position, header.next_offset)
                position = state.offset
                state.last_fetched_epoch = epoch
        except CorruptRecordError as exc:  # the position stays at the bad batch
            error = CorruptBatchError(
                f"{topic}-{partition}: the batch at offset {position} does not decode ({exc}); "
                "every record before it was returned. Seek to "
                + (f"{next_offset} to skip it" if next_offset is not None else "past it")
                + f", or to {position} to fetch it again",
                topic,
                partition,
                position,
                next_offset,
            )
            self._corrupt[tp] = error
            self._note_error(error)
        return False

    def _truncated(
        self, tp: TopicPartition, state: _Position, diverging: broker_pb2.EpochEndOffset
    ) -> None:
        assert state.offset is not None
        offset = diverging.end_offset if diverging.end_offset >= 0 else 0
        self.stats["truncations"] += 1
        message = (
            f"{tp[0]}-{tp[1]}: the log diverged at offset {offset} (epoch {diverging.epoch}) "
            f"below our position {state.offset}: records were truncated"
        )
        if self.on_truncation == "raise":
            raise LogTruncationError(message, tp[0], tp[1], offset)
        self._note_error(LogTruncationError(message, tp[0], tp[1], offset))
        state.offset = min(offset, state.offset)
        state.last_fetched_epoch = -1

    # ---- offsets ---------------------------------------------------------------------------------

    def _reset_positions(self, partitions: list[TopicPartition]) -> None:
        assigned = [tp for tp in partitions if self._positions[tp].reset_to == COMMITTED]
        if assigned:  # fetched here, on the next poll too if the coordinator does not answer
            assert self.group is not None
            committed = self.group.fetch_committed(assigned)
            default = {"latest": LATEST, "earliest": EARLIEST}.get(self.auto_offset_reset, NO_RESET)
            for tp in assigned:
                offset = committed.get(tp, -1)
                self._positions[tp] = (
                    _Position(offset) if offset >= 0 else _Position(None, reset_to=default)
                )
        partitions = [tp for tp in partitions if self._positions[tp].offset is None]
        unset = [tp for tp in partitions if self._positions[tp].reset_to == NO_RESET]
        if unset:
            raise error_for(
                "OFFSET_OUT_OF_RANGE",
                f"no position for {unset} and auto_offset_reset=none: seek first",
            )
        for reset_to in (EARLIEST, LATEST):
            tps = [tp for tp in partitions if self._positions[tp].reset_to == reset_to]
            if not tps:
                continue
            for tp, offset in self._list_offsets(tps, reset_to).items():
                self._positions[tp] = _Position(offset)

    def _list_offsets(
        self, partitions: list[TopicPartition], which: int
    ) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}

        def ask_leaders() -> dict[TopicPartition, int]:
            missing = [tp for tp in partitions if tp not in out]
            for tp in missing:
                found = self.metadata.leader_address(*tp)
                if found is None:
                    continue
                try:
                    response = self.metadata.stub(found[1]).ListOffsets(
                        broker_pb2.ListOffsetsRequest(
                            replica_id=-1,
                            partitions=[
                                broker_pb2.ListOffsetsPartition(
                                    topic=tp[0],
                                    partition=tp[1],
                                    timestamp=which,
                                    current_leader_epoch=-1,
                                )
                            ],
                        ),
                        timeout=self.request_timeout_ms / 1000,
                    )
                except grpc.RpcError:
                    continue
                answer = response.partitions[0]
                if answer.error.code == 0:
                    out[tp] = answer.offset
            missing = [tp for tp in partitions if tp not in out]
            if missing:
                self._refresh()
                raise error_for("LEADER_NOT_AVAILABLE", f"could not list offsets of {missing}")
            return out

        retrying = Retrying(  # 20 rounds, 50 ms more between each (at most 0.5 s)
            retry=retry_if_exception_type(LeaderNotAvailableError),
            stop=stop_after_attempt(20),
            wait=wait_incrementing(start=0.05, increment=0.05, max=0.5),
            reraise=True,
        )
        return retrying(ask_leaders)

    # ---- the rest ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        self.stats["refreshes"] += 1
        try:
            self.metadata.refresh(force=False)
        except RaftlogError as exc:
            self._note_error(exc)

    def _note_error(self, error: BaseException) -> None:
        self.stats["errors"] += 1
        self.last_errors = [*self.last_errors[-9:], str(error)]

    def close(self) -> None:
        if self.group is not None and not self._closed:
            if self.enable_auto_commit and self._owned:
                with contextlib.suppress(RaftlogError):
                    self.commit()
            self.group.leave()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        self._closed = True
        if self._owns_metadata:
            self.metadata.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
