"""The cleaner's rules one at a time: fetches inside removed ranges, a follower replicating a
compacted leader, codecs, the delete horizon, and which segments a pass takes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.segments import BatchBuilder, Compression, iter_batches, iter_records
from raftlog.segments.batch import read_header
from raftlog.segments.cleaner import (
    RELATIVE_OFFSET_MAX,
    CompactionPolicy,
    SegmentSpan,
    merge_groups,
    plan_clean,
)
from raftlog.segments.clock import SYSTEM_CLOCK, WallMs
from raftlog.segments.compaction import run_job
from raftlog.segments.log import Log, LogConfig

from .test_cleaner_model import read_all

CONFIG = LogConfig(
    segment_bytes=2048,
    retention_ms=None,
    cleanup_compact=True,
    cleanup_delete=False,
    compaction=CompactionPolicy(delete_retention_ms=1_000, min_cleanable_dirty_ratio=0.0),
)


def produce(log: Log, records: list[tuple[bytes, bytes | None]], codec: str = "none") -> int:
    builder = BatchBuilder(codec)
    for key, value in records:
        builder.append(value, key=key, timestamp_ms=5)
    return log.append(builder.build(), leader_epoch=0, now_ms=WallMs(5)).base_offset


def clean(log: Log, now_ms: int) -> None:
    log.flush()
    job = log.begin_clean(WallMs(now_ms))
    assert job is not None
    result = run_job(job)
    assert result.error is None
    log.finish_clean(job, result)
    job.close()


def test_a_fetch_from_a_removed_offset_returns_the_next_kept_record(tmp_path: Path) -> None:
    log = Log(str(tmp_path), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    produce(log, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")])  # 0..2
    for i in range(5):
        produce(log, [(b"a", f"{i}".encode())])  # 3..7: "a" again and again
    produce(log, [(b"b", b"2"), (b"c", b"1")])  # 8..9
    log.roll(WallMs(5))
    produce(log, [(b"z", b"active")])
    clean(log, 100)
    assert [(o, k) for o, k, _ in read_all(log)] == [(7, b"a"), (8, b"b"), (9, b"c"), (10, b"z")]
    for offset in range(0, 8):  # inside the removed range: the next kept record, offset 7
        result = log.read(offset, 1 << 20)
        first = next(
            r.offset
            for p, h in iter_batches(result.data)
            for r in iter_records(result.data[p : p + h.size_bytes])
            if r.offset >= offset
        )
        assert first == 7
        assert result.next_offset > offset
    log.close()


def test_a_follower_replicates_a_compacted_leader(tmp_path: Path) -> None:
    leader = Log(str(tmp_path / "leader"), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    for i in range(60):
        produce(leader, [(f"k{i % 4}".encode(), None if i % 11 == 0 else b"x" * 30)], "lz4")
    leader.roll(WallMs(5))
    clean(leader, 100)
    follower = Log(str(tmp_path / "follower"), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    offset = 0
    while offset < leader.log_end_offset:  # what the fetcher does, small fetches
        result = leader.read(offset, 200)
        follower.append_as_follower(result.data)
        offset = result.next_offset
    assert follower.log_end_offset == leader.log_end_offset
    assert read_all(follower) == read_all(leader)
    assert follower.verify() is None
    follower.close()
    reopened = Log(str(tmp_path / "follower"), CONFIG, clock=SYSTEM_CLOCK)
    assert not reopened.recovery.damaged
    assert read_all(reopened) == read_all(leader)
    reopened.close()
    leader.close()


@pytest.mark.parametrize("codec", list(Compression))
def test_compressed_batches_keep_their_codec_and_records(
    tmp_path: Path, codec: Compression
) -> None:
    log = Log(str(tmp_path), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    produce(log, [(b"a", b"old"), (b"b", b"keep"), (b"a", b"new")], codec.name)
    produce(log, [(b"c", b"x")])
    log.roll(WallMs(5))
    clean(log, 100)
    data = log.read(0, 1 << 20).data
    header = read_header(data)
    assert header.compression is codec
    assert (header.record_count, header.last_offset_delta) == (2, 2)
    assert [(r.offset, r.value) for r in iter_records(data[: header.size_bytes])] == [
        (1, b"keep"),
        (2, b"new"),
    ]
    log.close()


def test_a_tombstone_gets_a_horizon_keeps_its_timestamps_and_goes_after_it(
    tmp_path: Path,
) -> None:
    log = Log(str(tmp_path), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    produce(log, [(b"a", b"1")])
    builder = BatchBuilder()
    builder.append(None, key=b"a", timestamp_ms=7)
    builder.append(b"v", key=b"b", timestamp_ms=9)
    log.append(builder.build(), leader_epoch=0, now_ms=WallMs(9))
    log.roll(WallMs(9))
    clean(log, 100)
    data = log.read(1, 1 << 20).data
    header = read_header(data)
    assert header.has_delete_horizon and header.first_timestamp == 100 + 1_000
    records = list(iter_records(data[: header.size_bytes]))
    assert [(r.offset, r.timestamp_ms, r.value) for r in records] == [(1, 7, None), (2, 9, b"v")]
    assert log.clean_due(WallMs(1_099)) is None  # nothing dirty, the horizon not reached
    assert log.clean_due(WallMs(1_100)) is not None  # the horizon makes a pass due
    clean(log, 1_100)
    data = log.read(0, 1 << 20).data
    assert [(r.offset, r.timestamp_ms) for p, h in iter_batches(data)
            for r in iter_records(data[p : p + h.size_bytes])] == [(2, 9)]  # fmt: skip
    assert not read_header(data[read_header(data).size_bytes :]).has_delete_horizon
    log.close()


def spans(*sizes_and_ts: tuple[int, int]) -> list[SegmentSpan]:
    out, base = [], 0
    for size, ts in sizes_and_ts:
        out.append(SegmentSpan(base, base + 10, size, ts))
        base += 10
    return out


def test_a_pass_waits_for_the_dirty_ratio_and_the_compaction_lag() -> None:
    closed = spans((100, 1), (100, 2), (100, 3), (100, 50))
    policy = CompactionPolicy(min_cleanable_dirty_ratio=0.5)
    plan = plan_clean(closed, first_dirty_offset=20, limit_offset=40, now_ms=60, policy=policy)
    assert plan is not None and plan.dirty_from == 2 and plan.dirty_ratio == 0.5
    # below the ratio: nothing to do
    assert (
        plan_clean(closed, first_dirty_offset=30, limit_offset=40, now_ms=60, policy=policy) is None
    )
    # the high watermark (or recovery point) stops the cleanable range
    plan = plan_clean(closed, first_dirty_offset=20, limit_offset=25, now_ms=60, policy=policy)
    assert plan is None  # only the clean first two segments are below it
    # min.compaction.lag.ms: the last segment's records are too young
    lagged = CompactionPolicy(min_cleanable_dirty_ratio=0.5, min_compaction_lag_ms=20)
    plan = plan_clean(closed, first_dirty_offset=10, limit_offset=40, now_ms=60, policy=lagged)
    assert plan is not None and len(plan.segments) == 3 and plan.dirty_from == 1


def test_compact_only_never_deletes_by_retention_and_compact_delete_does(tmp_path: Path) -> None:
    for delete, expected in ((False, 0), (True, 1)):
        config = LogConfig(
            segment_bytes=1024, retention_ms=10, cleanup_compact=True, cleanup_delete=delete
        )
        log = Log(str(tmp_path / str(delete)), config, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
        produce(log, [(b"a", b"x")])
        log.roll(WallMs(5))
        produce(log, [(b"a", b"y")])
        assert log.delete_retained(WallMs(1_000)) == expected
        log.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=30), st.integers(1, 1024))
def test_merge_groups_covers_every_segment_in_runs_no_larger_than_a_segment(
    sizes: list[int], max_bytes: int
) -> None:
    spans, offset = [], 0
    for size in sizes:
        spans.append((offset, offset + size // 10 + 1, size))
        offset += size // 10 + 1
    runs = merge_groups(spans, max_bytes)
    assert [i for start, end in runs for i in range(start, end)] == list(range(len(spans)))
    for start, end in runs:
        total = sum(size for _, _, size in spans[start:end])
        assert total <= max_bytes or end - start == 1  # one larger segment stays alone
        if end < len(spans):  # greedy: the next one would not have fitted
            assert total + spans[end][2] > max_bytes


def test_merge_groups_keeps_relative_offsets_in_an_index() -> None:
    big = RELATIVE_OFFSET_MAX
    spans = [(0, 10, 1), (10, big, 1), (big, big + 5, 1)]
    assert merge_groups(spans, 1 << 30) == [(0, 2), (2, 3)]
