"""The clients: idempotent acks=all producers and consumers, recording a Jepsen history.

``SimProducer`` is ``client/producer.py``'s sender loop over the simulated network, around the
real ``RecordAccumulator`` (batching, linger, at most 5 batches in flight per partition, retries
back at the front in order) and real ``BatchBuilder`` batches carrying producer id, epoch and
base sequence: a retry sends the very same bytes. Its rules are the Producer's: a duplicate is
success at the original offsets; OUT_OF_ORDER_SEQUENCE_NUMBER behind an unacknowledged batch
waits for it; retriable errors refresh metadata and retry with backoff and jitter until the
delivery timeout; a batch failed for good makes its sequence range a gap, so the producer bumps
its epoch (InitProducerId with its id) once nothing is in flight, re-sequences what was never
sent and fails what was (outcome unknown).

Every value sent is one ``send`` op: ``invoke`` when it is handed to the accumulator, then
``ok`` with its offset, ``info`` (the batch was sent at least once: it may be in the log) or
``fail`` (never sent). ``SimConsumer`` polls assigned keys from their leaders below the high
watermark and records each non-empty poll (``invoke`` and ``ok`` together, at completion: a read
changes nothing, so when it began does not matter to the checker).

Keys in the history are ``"<topic>-<partition>"``; values are ints unique in the run, stored as
their decimal text. Owned by the simulation's one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raftlog.chaos.history import (
    HistoryBuilder,
    Op,
    OpF,
    OpType,
    assign_value,
    read_value,
    send_value,
)
from raftlog.client.accumulator import ProducerBatch, RecordAccumulator
from raftlog.cluster.fetcher import FetcherConfig
from raftlog.cluster.replica_rules import FetchOutcome, FetchSpec
from raftlog.proto.codes import ErrorCode
from raftlog.proto.errors import error_for
from raftlog.raft.metadata_records import NO_LEADER, TopicPartition
from raftlog.segments.batch import CorruptRecordError, iter_batches, iter_records

from .controller import broker_node
from .node import Process, RpcError, World

__all__ = ["ClientConfig", "ClientMetadata", "History", "SimConsumer", "SimProducer", "decode"]

_SEQ_MOD = 1 << 31


@dataclass(frozen=True, slots=True)
class ClientConfig:
    linger_ms: int = 5
    in_flight_per_partition: int = 5
    in_flight_requests_max: int = 5  # per broker
    request_timeout_ms: int = 5000
    delivery_timeout_ms: int = 30_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000
    metadata_refresh_ms_min: int = 100
    send_interval_ms_max: int = 60  # a producer sends a value every [1, this] ms
    poll_interval_ms_max: int = 50
    poll_wait_ms: int = 200


class History:
    """The run's history: ops with the virtual time in ms, plus a counter of unique values."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.builder = HistoryBuilder()
        self._next_value = 0

    def next_value(self) -> int:
        self._next_value += 1
        return self._next_value

    def invoke(
        self, process: int, f: OpF, value: dict[str, Any] | None = None, node: int | None = None
    ) -> Op:
        return self.builder.invoke(process, f, value, node=node, time_ms=float(self.world.now_ms()))

    def complete(
        self,
        op: Op,
        type_: OpType,
        value: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Op:
        return self.builder.complete(
            op, type_, value, error=error, time_ms=float(self.world.now_ms())
        )


def key_name(key: TopicPartition) -> str:
    return f"{key[0]}-{key[1]}"


def decode(records: bytes, start: int) -> list[tuple[int, int]]:
    """(offset, value) of every record at or after ``start`` in whole batches."""
    out = []
    view = memoryview(records)
    for position, header in iter_batches(view):
        for record in iter_records(view[position : position + header.size_bytes]):
            if record.offset >= start and record.value is not None:
                out.append((record.offset, int(record.value)))
    return out


class ClientMetadata:
    """A client's view of partition leaders, asked of a random broker (a lagging view is
    possible: brokers answer from their own applied metadata)."""

    def __init__(self, world: World, proc: Process, brokers: list[int], config: ClientConfig):
        self.world = world
        self.proc = proc
        self.brokers = brokers
        self.config = config
        self.leaders: dict[TopicPartition, tuple[int, int]] = {}
        self._last_refresh_ms = -(10**9)
        self._refreshing = False

    def leader(self, key: TopicPartition) -> tuple[int, int] | None:
        found = self.leaders.get(key)
        if found is None or found[0] == NO_LEADER:
            return None
        return found

    def want_refresh(self) -> None:
        now = self.world.now_ms()
        if self._refreshing or now - self._last_refresh_ms < self.config.metadata_refresh_ms_min:
            return
        self._refreshing = True
        self._last_refresh_ms = now
        self.proc.spawn(self._refresh())

    async def _refresh(self) -> None:
        broker = self.world.rng.choice(self.brokers)
        try:
            view = await self.world.rpc.call(self.proc, broker_node(broker), "metadata", None, 1000)
            for key, (leader, epoch) in view.items():
                old = self.leaders.get(key)
                if old is None or epoch >= old[1]:  # never go back to an older epoch
                    self.leaders[key] = (leader, epoch)
        except RpcError:
            pass
        finally:
            self._refreshing = False


class _Client:
    """What producers and consumers share: their process, keys and metadata view."""

    def __init__(
        self,
        world: World,
        history: History,
        process_id: int,
        keys: list[TopicPartition],
        brokers: list[int],
        config: ClientConfig,
        node: str,
    ) -> None:
        self.world = world
        self.history = history
        self.process_id = process_id  # the history's process
        self.keys = keys
        self.config = config
        self.proc = Process(world, node)
        self.metadata = ClientMetadata(world, self.proc, brokers, config)


class SimProducer(_Client):
    """See the module docstring."""

    def __init__(
        self,
        world: World,
        history: History,
        process_id: int,
        keys: list[TopicPartition],
        brokers: list[int],
        config: ClientConfig,
    ) -> None:
        super().__init__(world, history, process_id, keys, brokers, config, f"p{process_id}")
        self.acc = RecordAccumulator(
            batch_bytes_max=1024,
            linger_ms=config.linger_ms,
            in_flight_max=config.in_flight_per_partition,
        )
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_seq: dict[TopicPartition, int] = {}
        self._acked_seq: dict[TopicPartition, int] = {}
        self._epoch_bump_needed = False
        self._in_flight: dict[int, int] = {}  # broker → requests in flight
        self._ops: dict[ProducerBatch, list[tuple[Op, int]]] = {}  # batch → its sends
        self._wakeup = self.proc.future()
        self.producing = False
        self.stats = {"requests": 0, "retries": 0, "acked": 0, "failed": 0, "unknown": 0}

    def start(self) -> None:
        self.producing = True
        self.proc.spawn(self._generate())
        self.proc.spawn(self._run())

    def pending(self) -> int:
        return self.acc.pending()

    def _wake(self) -> None:
        if not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self, timeout_ms: int) -> None:
        """Until ``_wake`` or ``timeout_ms``, whichever comes first."""
        wakeup = self._wakeup = self.proc.future()
        timer = self.proc.call_later(timeout_ms, self.proc.resolve, wakeup, None)
        try:
            await wakeup
        finally:
            timer.cancel()

    async def _generate(self) -> None:
        rng = self.world.rng
        while True:
            await self.proc.sleep(rng.randint(1, self.config.send_interval_ms_max))
            if not self.producing:  # the run's heal phase stops new values
                break
            key = rng.choice(self.keys)
            value = self.history.next_value()
            op = self.history.invoke(self.process_id, OpF.SEND, send_value(key_name(key), value))
            clock = self.world.clock
            appended = self.acc.append(
                key, None, str(value).encode(), (), clock.wall_ms(), clock.mono_ms()
            )
            assert appended is not None, "the sim's buffer never fills"
            batch, _ = appended
            self._ops.setdefault(batch, []).append((op, value))
            self._wake()

    # ---- the sender loop (Producer._run) --------------------------------------------------------

    async def _run(self) -> None:
        config = self.config
        while True:
            if not await self._ensure_producer_id():
                await self.proc.sleep(config.retry_backoff_ms)
                continue
            now = self.world.clock.mono_ms()
            for batch in self.acc.expired(now, config.delivery_timeout_ms):
                self._finish(batch, None, "delivery timeout")
            ready = [] if self._epoch_bump_needed else self.acc.ready(now)
            by_leader: dict[int, list[ProducerBatch]] = {}
            for batch in ready:
                if batch.base_sequence < 0:
                    self._sequence(batch)
                found = self.metadata.leader(batch.key)
                if (
                    found is None
                    or self._in_flight.get(found[0], 0) >= config.in_flight_requests_max
                ):
                    if found is None:
                        self.metadata.want_refresh()
                    self.acc.requeue(batch, now + config.retry_backoff_ms)
                    continue
                by_leader.setdefault(found[0], []).append(batch)
            for leader_id, batches in sorted(by_leader.items()):
                self._in_flight[leader_id] = self._in_flight.get(leader_id, 0) + 1
                self.proc.spawn(self._send(leader_id, batches))
            if not by_leader:
                # at least a linger: next_ready_ms counts a retry that must wait for its
                # partition's batches in flight as ready now (the real sender spins at 1 ms
                # then); an answer wakes the loop anyway
                wait_ms = max(self.acc.next_ready_ms(now) - now, config.linger_ms)
                if self._epoch_bump_needed:
                    wait_ms = min(wait_ms, config.retry_backoff_ms)
                await self._wait(wait_ms)

    def _sequence(self, batch: ProducerBatch) -> None:
        builder = batch.builder
        base = self._next_seq.get(batch.key, 0)
        builder.producer_id = self.producer_id
        builder.producer_epoch = self.producer_epoch
        builder.base_sequence = base
        batch.base_sequence = base
        batch.producer_epoch = self.producer_epoch
        self._next_seq[batch.key] = (base + batch.record_count) % _SEQ_MOD

    async def _ensure_producer_id(self) -> bool:
        if self.producer_id >= 0 and not self._epoch_bump_needed:
            return True
        if self._epoch_bump_needed and any(self._in_flight.values()):
            return True  # what is in flight comes back first
        broker = self.world.rng.choice(self.metadata.brokers)
        request = (self.producer_id if self._epoch_bump_needed else -1, self.producer_epoch)
        try:
            error, producer_id, epoch = await self.world.rpc.call(
                self.proc,
                broker_node(broker),
                "init_producer_id",
                request,
                self.config.request_timeout_ms,
            )
        except RpcError:
            return False
        if error != ErrorCode.NONE:
            return False
        self.producer_id, self.producer_epoch = producer_id, epoch
        if self._epoch_bump_needed:
            self._restart_sequences()
        self._epoch_bump_needed = False
        return True

    def _restart_sequences(self) -> None:
        self._next_seq.clear()
        self._acked_seq.clear()
        for batch in self.acc.queued():
            if batch.attempts == 0:
                batch.built = None
                batch.base_sequence = -1
                continue
            self.acc.remove(batch)
            self._finish(batch, None, "epoch reset after a failed batch", bump=False)

    async def _send(self, leader_id: int, batches: list[ProducerBatch]) -> None:
        config = self.config
        items = [(b.key[0], b.key[1], b.bytes()) for b in batches]
        for batch in batches:
            batch.attempts += 1
        self.stats["requests"] += 1
        try:
            answers = await self.world.rpc.call(
                self.proc,
                broker_node(leader_id),
                "produce",
                (-1, config.request_timeout_ms, items),
                config.request_timeout_ms + 1000,
            )
        except RpcError as exc:
            answers = None
            error = f"network: {type(exc).__name__}"
        self._in_flight[leader_id] = max(0, self._in_flight.get(leader_id, 0) - 1)
        if answers is None:
            self.metadata.want_refresh()
            for batch in batches:
                self._retry_or_fail(batch, error, retriable=True)
        else:
            for batch, answer in zip(batches, answers, strict=True):
                self._complete(batch, answer)
        self._wake()

    def _complete(self, batch: ProducerBatch, answer: Any) -> None:
        code = answer.error
        if code != ErrorCode.NONE and self.world.tracing:
            values = [v for _, v in self._ops.get(batch, [])]
            self.world.trace(
                f"p{self.process_id} {batch.key} seq {batch.base_sequence} epoch "
                f"{batch.producer_epoch} attempt {batch.attempts} values {values[:3]}... -> "
                f"{code} {answer.base_offset}-{answer.last_offset}"
            )
        if code in (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
            if batch.producer_epoch == self.producer_epoch:
                self._acked_seq[batch.key] = (batch.base_sequence + batch.record_count) % _SEQ_MOD
            self.acc.done(batch)
            self._finish(batch, answer.base_offset, None)
            return
        error = error_for(code, answer.message)
        if code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER and (
            batch.producer_epoch == self.producer_epoch
            and batch.base_sequence != self._acked_seq.get(batch.key, 0)
        ):
            self.stats["retries"] += 1
            self.acc.requeue(batch, self.world.clock.mono_ms() + self.config.retry_backoff_ms)
            return
        if error.retriable:
            self.metadata.want_refresh()
        self._retry_or_fail(batch, code, retriable=error.retriable)

    def _retry_or_fail(self, batch: ProducerBatch, error: str, *, retriable: bool) -> None:
        now = self.world.clock.mono_ms()
        batch.last_error = RuntimeError(error)
        if retriable and now - batch.created_ms < self.config.delivery_timeout_ms:
            backoff = min(
                self.config.retry_backoff_max_ms,
                self.config.retry_backoff_ms * 2 ** max(batch.attempts - 1, 0),
            )
            backoff = int(backoff * self.world.rng.uniform(0.8, 1.2))
            self.stats["retries"] += 1
            self.acc.requeue(batch, now + backoff)
            return
        self.acc.done(batch)
        self._finish(batch, None, error)

    def _finish(
        self, batch: ProducerBatch, base_offset: int | None, error: str | None, *, bump: bool = True
    ) -> None:
        sends = self._ops.pop(batch, [])
        if base_offset is not None:
            self.stats["acked"] += 1
            for index, (op, value) in enumerate(sends):
                key = key_name(batch.key)
                self.history.complete(op, OpType.OK, send_value(key, value, base_offset + index))
            return
        if bump and batch.base_sequence >= 0:
            self._epoch_bump_needed = True
        kind = OpType.INFO if batch.attempts else OpType.FAIL
        self.stats["unknown" if batch.attempts else "failed"] += 1
        for op, _ in sends:
            self.history.complete(op, kind, error=error)


class SimConsumer(_Client):
    """Polls its keys round-robin from their leaders; see the module docstring."""

    def __init__(
        self,
        world: World,
        history: History,
        process_id: int,
        keys: list[TopicPartition],
        brokers: list[int],
        config: ClientConfig,
    ) -> None:
        super().__init__(world, history, process_id, keys, brokers, config, f"c{process_id}")
        self.positions = dict.fromkeys(keys, 0)
        self.polling = False
        self.polls = 0

    def start(self) -> None:
        self.polling = True
        op = self.history.invoke(self.process_id, OpF.ASSIGN)
        names = [key_name(k) for k in self.keys]
        positions = {key_name(k): p for k, p in self.positions.items()}
        self.history.complete(op, OpType.OK, assign_value(names, positions))
        self.proc.spawn(self._run())

    async def _run(self) -> None:
        rng = self.world.rng
        turn = 0
        while self.polling:
            await self.proc.sleep(rng.randint(1, self.config.poll_interval_ms_max))
            key = self.keys[turn % len(self.keys)]
            turn += 1
            await self._poll(key)

    async def _poll(self, key: TopicPartition) -> None:
        found = self.metadata.leader(key)
        if found is None:
            self.metadata.want_refresh()
            return
        leader, epoch = found
        position = self.positions[key]
        spec = FetchSpec(key[0], key[1], position, epoch, -1, 64 << 10)
        wire = FetcherConfig(max_wait_ms=self.config.poll_wait_ms, fetch_bytes_max=64 << 10)
        try:
            error, outcomes = await self.world.rpc.call(
                self.proc, broker_node(leader), "fetch", (-1, 0, [spec], wire), 2000
            )
        except RpcError:
            self.metadata.want_refresh()
            return
        if error != ErrorCode.NONE or not outcomes:
            return
        outcome: FetchOutcome = outcomes[0]
        if outcome.error != ErrorCode.NONE:
            if error_for(outcome.error).invalid_metadata or outcome.error in (
                ErrorCode.FENCED_LEADER_EPOCH,
                ErrorCode.UNKNOWN_LEADER_EPOCH,
            ):
                self.metadata.want_refresh()
            return
        try:
            records = decode(outcome.records, position)
        except CorruptRecordError:
            return  # never: batches are CRC-checked by the broker's read
        if not records:
            return
        self.polls += 1
        name = key_name(key)
        op = self.history.invoke(self.process_id, OpF.POLL, {})
        self.history.complete(op, OpType.OK, read_value({name: records}, {name: position}))
        self.positions[key] = records[-1][0] + 1
