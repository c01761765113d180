"""A hypothesis state machine: the log cleaner on a real ``Log`` against a plain dict.

Random produces (keyed values and tombstones, several records a batch, every codec, idempotent
producers among them, leader epochs that rise), rolls, and cleaning passes at an advancing clock.
After every pass, reading the whole log must give:

- every record at its original offset with its original key and value, offsets strictly
  increasing (nothing moved, nothing invented);
- for every key, its latest record — a tombstone only until ``delete.retention.ms`` after the
  pass that first kept it (then it may go, and after a later pass past the horizon it must);
- every record of the active segment (never compacted);
- the header of each idempotent producer's last batch, producer fields intact;
- ``verify`` clean, and the same content after a reopen (recovery accepts what the cleaner wrote).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftlog.segments import BatchBuilder, Compression, iter_batches, iter_records
from raftlog.segments.cleaner import CompactionPolicy
from raftlog.segments.clock import SYSTEM_CLOCK, WallMs
from raftlog.segments.compaction import run_job
from raftlog.segments.log import Log, LogConfig

RETENTION_MS = 1_000
CONFIG = LogConfig(
    segment_bytes=1024,
    index_interval_bytes=128,
    retention_ms=None,
    cleanup_compact=True,
    cleanup_delete=False,
    compaction=CompactionPolicy(delete_retention_ms=RETENTION_MS, min_cleanable_dirty_ratio=0.0),
)
KEYS = [b"a", b"b", b"c", b"d", b"e", b"f"]

Stored = tuple[bytes, bytes | None]  # (key, value) as produced


def read_all(log: Log) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20)
        assert result.next_offset > offset
        for position, header in iter_batches(result.data):
            for record in iter_records(result.data[position : position + header.size_bytes]):
                if record.offset >= offset:
                    out.append((record.offset, record.key, record.value))
        offset = result.next_offset
    return out


class CleanerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="raftlog-cleaner-")
        self.directory = os.path.join(self.root, "t-0")
        self.now = 10_000
        self.log = Log(self.directory, CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(self.now))
        self.produced: dict[int, Stored] = {}  # offset → what was produced there
        self.latest: dict[bytes, int] = {}  # key → offset of its latest record
        self.epoch = 0
        self.sequences: dict[int, int] = {}  # producer id → next sequence
        self.last_batch: dict[int, int] = {}  # producer id → base offset of its last batch
        self.first_kept_ms: dict[int, int] = {}  # tombstone offset → the pass that first kept it
        self.passes = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.root)

    @rule(
        records=st.lists(
            st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.binary(max_size=40))),
            min_size=1,
            max_size=5,
        ),
        codec=st.sampled_from(list(Compression)),
        producer=st.sampled_from([-1, -1, 7, 8]),
    )
    def produce(
        self, records: list[tuple[bytes, bytes | None]], codec: Compression, producer: int
    ) -> None:
        sequence = self.sequences.get(producer, 0) if producer >= 0 else -1
        builder = BatchBuilder(
            codec,
            producer_id=producer,
            producer_epoch=0 if producer >= 0 else -1,
            base_sequence=sequence,
        )
        for key, value in records:
            builder.append(value, key=key, timestamp_ms=self.now)
        info = self.log.append(builder.build(), leader_epoch=self.epoch, now_ms=WallMs(self.now))
        for i, (key, value) in enumerate(records):
            self.produced[info.base_offset + i] = (key, value)
            self.latest[key] = info.base_offset + i
        if producer >= 0:
            self.sequences[producer] = sequence + len(records)
            self.last_batch[producer] = info.base_offset

    @rule()
    def roll(self) -> None:
        self.log.roll(WallMs(self.now))

    @rule()
    def new_epoch(self) -> None:
        self.epoch += 1

    @rule(advance_ms=st.sampled_from([0, 100, 600, 1_500]))
    def clean(self, advance_ms: int) -> None:
        self.now += advance_ms
        self.log.flush()  # the cleaner takes only what is below the recovery point
        before = read_all(self.log)
        job = self.log.begin_clean(
            WallMs(self.now), retain_batches=frozenset(self.last_batch.values())
        )
        if job is None:
            return
        try:
            result = run_job(job)
            assert result.error is None, result.error
            self.log.finish_clean(job, result)
        finally:
            job.close()
        self.passes += 1
        after = read_all(self.log)
        self.check_against_model(before, after, cleaned_below=job.sources[-1].next_offset)
        # the pass that first kept a tombstone (its horizon: then + delete.retention.ms)
        for offset, _key, value in after:
            if value is None and offset < job.sources[-1].next_offset:
                self.first_kept_ms.setdefault(offset, self.now)

    def check_against_model(
        self,
        before: list[tuple[int, bytes | None, bytes | None]],
        after: list[tuple[int, bytes | None, bytes | None]],
        *,
        cleaned_below: int,
    ) -> None:
        offsets = [offset for offset, _, _ in after]
        assert offsets == sorted(set(offsets)), "offsets must strictly increase"
        present = set(offsets)
        for offset, key, value in after:
            assert self.produced[offset] == (key, value), f"offset {offset} changed"
        assert present <= {offset for offset, _, _ in before}, "a record came back"
        for key, offset in self.latest.items():
            value = self.produced[offset][1]
            if value is not None:
                assert offset in present, f"the latest record of {key!r} at {offset} is gone"
                continue
            if offset not in present:  # a deleted tombstone: only past its horizon
                first = self.first_kept_ms.get(offset)
                assert first is not None and self.now >= first + RETENTION_MS, (
                    f"tombstone of {key!r} at {offset} removed before delete.retention.ms"
                )
            elif offset in self.first_kept_ms and offset < cleaned_below:
                # a pass past its horizon that covered it must have removed it
                assert self.now < self.first_kept_ms[offset] + RETENTION_MS, (
                    f"tombstone of {key!r} at {offset} outlived its horizon"
                )
        active = self.log.segment_base_offsets[-1]
        for offset in self.produced:
            if offset >= active:
                assert offset in present, f"offset {offset} of the active segment removed"
        # an idempotent producer's last batch keeps its header
        headers = {h.base_offset: h for h in self.log.iter_headers(self.log.log_start_offset)}
        for producer, base in self.last_batch.items():
            header = headers.get(base)
            assert header is not None and header.producer_id == producer, (producer, base)

    @precondition(lambda self: self.passes > 0)
    @rule()
    def reopen(self) -> None:
        before = read_all(self.log)
        self.log.close()
        self.log = Log(self.directory, CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(self.now))
        assert not self.log.recovery.damaged, self.log.recovery
        assert read_all(self.log) == before

    @invariant()
    def log_is_whole(self) -> None:
        assert self.log.verify() is None
        assert self.log.log_end_offset == len(self.produced)

    def teardown_check(self) -> None:  # pragma: no cover - hypothesis calls teardown only
        pass


CleanerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCleanerModel = CleanerMachine.TestCase


def test_every_key_ends_with_one_record_after_passes_past_the_horizon(tmp_path: str) -> None:
    """Liveness: after a roll and two passes past every horizon, the closed segments hold
    exactly the latest non-tombstone record of each key."""
    log = Log(str(tmp_path), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    for i in range(200):
        key = KEYS[i % len(KEYS)]
        value = None if i % 7 == 0 else f"{i}".encode()
        builder = BatchBuilder()
        builder.append(value, key=key, timestamp_ms=i)
        info = log.append(builder.build(), leader_epoch=0, now_ms=WallMs(i))
        latest[key] = (info.base_offset, value)
    log.roll(WallMs(200))
    log.flush()
    for now in (1_000, 1_000 + RETENTION_MS):
        job = log.begin_clean(WallMs(now))
        assert job is not None
        result = run_job(job)
        log.finish_clean(job, result)
        job.close()
    records = read_all(log)
    expected = sorted(
        (offset, key, value) for key, (offset, value) in latest.items() if value is not None
    )
    assert records == expected
    assert log.size_bytes < 2_000  # 200 single-record batches merged into a few headers
    # the segments the first pass shrank were written as one by the second (Kafka's
    # groupSegmentsBySize), not left holding a descriptor each
    assert log.segment_count <= 3
    log.close()
    log = Log(str(tmp_path), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(3_000))
    assert not log.recovery.damaged and read_all(log) == records and log.segment_count <= 3
    log.close()
