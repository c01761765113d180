"""A hypothesis state machine: the log against a plain in-memory model.

Random appends (leader and follower), reads, truncations, rolls, retention, log-start moves,
clean reopens and kill -9 style reopens (file descriptors dropped, nothing flushed) must give
exactly what the model says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftlog.segments import EpochEntry, build_batch, iter_batches, iter_records
from raftlog.segments.batch import stamp
from raftlog.segments.clock import SYSTEM_CLOCK
from raftlog.segments.log import Log, LogConfig

CONFIG = LogConfig(
    segment_bytes=1024,
    index_interval_bytes=96,
    retention_ms=None,
    retention_bytes=2048,
    loaded_indexes_max=2,
)


@dataclass
class ModelBatch:
    base_offset: int
    values: list[bytes]
    epoch: int

    @property
    def next_offset(self) -> int:
        return self.base_offset + len(self.values)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="raftlog-model-")
        self.directory = os.path.join(self.root, "t-0")
        self.log = Log(self.directory, CONFIG, clock=SYSTEM_CLOCK)
        self.batches: list[ModelBatch] = []
        self.start = 0
        self.end = 0
        self.epoch = 0
        self.counter = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.root)

    def _new_values(self, count: int, size: int) -> list[bytes]:
        self.counter += count
        return [f"{self.counter - count + i}:".encode() + b"x" * size for i in range(count)]

    @rule(count=st.integers(1, 6), size=st.integers(0, 120), bump=st.booleans())
    def append(self, count: int, size: int, bump: bool) -> None:
        if bump:
            self.epoch += 1
        values = self._new_values(count, size)
        info = self.log.append(build_batch(values, timestamp_ms=0), leader_epoch=self.epoch)
        assert info.base_offset == self.end
        self.batches.append(ModelBatch(self.end, values, self.epoch))
        self.end += count

    @rule(count=st.integers(1, 4), batches=st.integers(1, 3))
    def append_as_follower(self, count: int, batches: int) -> None:
        """Batches stamped by another leader, appended with their offsets in one call."""
        self.epoch += 1
        data = bytearray()
        offset = self.end
        staged = []
        for _ in range(batches):
            values = self._new_values(count, 10)
            batch = bytearray(build_batch(values, timestamp_ms=0))
            stamp(batch, offset, self.epoch)
            data += batch
            staged.append(values)
            offset += count
        self.log.append_as_follower(data)
        for values in staged:
            self.batches.append(ModelBatch(self.end, values, self.epoch))
            self.end += len(values)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        target = data.draw(st.integers(self.start, self.end))
        new_end = self.log.truncate_to(target)
        kept = [b for b in self.batches if b.next_offset <= target]
        expected_end = kept[-1].next_offset if kept else self.start
        if target < self.end:
            assert new_end == max(expected_end, self.start)
            self.batches = kept
            self.end = new_end

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def retention(self) -> None:
        self.log.delete_retained()
        self._move_start(self.log.log_start_offset)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def advance_start(self, data: st.DataObject) -> None:
        boundary = data.draw(st.sampled_from([b.base_offset for b in self.batches]))
        self.log.advance_log_start(max(boundary, self.start))
        self._move_start(self.log.log_start_offset)

    def _move_start(self, start: int) -> None:
        assert self.start <= start <= self.end
        self.start = start
        self.batches = [b for b in self.batches if b.next_offset > start]

    @rule()
    def reopen_cleanly(self) -> None:
        self.log.close()
        self.log = Log(self.directory, CONFIG, log_start_offset=self.start, clock=SYSTEM_CLOCK)
        assert self.log.recovered_bytes_truncated == 0

    @rule()
    def reopen_after_kill(self) -> None:
        """As after kill -9: what was written is in the page cache; nothing buffered is."""
        for segment in self.log._segments:
            os.close(segment._fd)
        self.log = Log(self.directory, CONFIG, log_start_offset=self.start, clock=SYSTEM_CLOCK)
        assert self.log.recovered_bytes_truncated == 0

    @rule(data=st.data())
    def read_from_anywhere(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        assert self._read_all(offset) == self._expected(offset)

    def _read_all(self, offset: int) -> list[tuple[int, bytes | None]]:
        out = []
        while offset < self.log.log_end_offset:
            result = self.log.read(offset, 200)
            assert result.data, "a read below the end returned nothing"
            for position, header in iter_batches(result.data):
                batch = result.data[position : position + header.size_bytes]
                out.extend((r.offset, r.value) for r in iter_records(batch) if r.offset >= offset)
            offset = result.next_offset
        return out

    def _expected(self, offset: int) -> list[tuple[int, bytes | None]]:
        return [
            (b.base_offset + i, v)
            for b in self.batches
            for i, v in enumerate(b.values)
            if b.base_offset + i >= offset
        ]

    @invariant()
    def offsets_match(self) -> None:
        assert self.log.log_end_offset == self.end
        assert self.log.log_start_offset == self.start

    @invariant()
    def epochs_match(self) -> None:
        expected: list[EpochEntry] = []
        for batch in self.batches:
            if not expected or expected[-1].epoch != batch.epoch:
                expected.append(EpochEntry(batch.epoch, max(batch.base_offset, self.start)))
        entries = self.log.epochs.entries
        # an epoch whose batches were all truncated away may not be in either
        assert entries == expected, (entries, expected)


LogMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogAgainstModel = LogMachine.TestCase
