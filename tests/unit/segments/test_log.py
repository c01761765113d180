"""The partition log: appends, reads, rolling, indexes, retention, truncation, disk faults."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from raftlog.proto.codes import ErrorCode
from raftlog.segments import (
    BrokerStateStore,
    CorruptRecordError,
    EpochEntry,
    InvalidRecordError,
    LogDirFullError,
    LogOffsetMismatchError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageIOError,
    iter_batches,
    iter_records,
)
from raftlog.segments.clock import SYSTEM_CLOCK
from raftlog.segments.log import Log, LogConfig

BatchFactory = Callable[..., bytes]

SMALL = LogConfig(segment_bytes=2048, index_interval_bytes=256, retention_ms=None)


def values(log: Log, start: int = 0, *, max_offset: int | None = None) -> list[tuple[int, bytes]]:
    """Every (offset, value) from ``start`` on, reading the way a consumer does."""
    out: list[tuple[int, bytes]] = []
    offset = start
    end = log.log_end_offset if max_offset is None else max_offset
    while offset < end:
        result = log.read(offset, 300, max_offset=max_offset)
        if not result.data:
            break
        for position, header in iter_batches(result.data):
            for record in iter_records(result.data[position : position + header.size_bytes]):
                if record.offset >= offset:
                    assert record.value is not None
                    out.append((record.offset, record.value))
        offset = result.next_offset
    return out


def test_offsets_are_assigned_densely_and_read_back(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), SMALL, now_ms=0, clock=SYSTEM_CLOCK)
    infos = [log.append(make_batch(3, start=3 * i), leader_epoch=0, now_ms=0) for i in range(40)]
    assert [(i.base_offset, i.last_offset) for i in infos[:2]] == [(0, 2), (3, 5)]
    assert log.log_end_offset == 120
    per_segment = 2048 // len(make_batch(3, start=117))  # rolled at 2,048 bytes
    assert log.segment_count == -(-40 // per_segment) > 1
    assert values(log) == [(i, f"v{i}".encode()) for i in range(120)]
    assert values(log, 61)[0] == (61, b"v61")  # from the middle of a batch
    log.close()


def test_read_returns_at_least_one_whole_batch_and_respects_max_offset(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), LogConfig(retention_ms=None), clock=SYSTEM_CLOCK)
    big = make_batch(2, pad=5000)
    log.append(big, leader_epoch=0)
    log.append(make_batch(1, start=2), leader_epoch=0)
    result = log.read(0, max_bytes=10)
    assert len(result.data) == len(big) and result.next_offset == 2
    assert log.read(0, 1 << 20, max_offset=2).next_offset == 2  # the HW stops the second batch
    assert log.read(0, 1 << 20, max_offset=1).data == b""  # never half a batch past the HW
    assert log.read(3, 100).data == b""  # at the log end: nothing, no error
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_bad_appends_are_typed_errors_and_change_nothing(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), LogConfig(max_message_bytes=4096), clock=SYSTEM_CLOCK)
    log.append(make_batch(2), leader_epoch=3)
    before = (log.log_end_offset, log.size_bytes)
    corrupt = bytearray(make_batch(1))
    corrupt[-1] ^= 1
    with pytest.raises(CorruptRecordError):
        log.append(corrupt, leader_epoch=3)
    with pytest.raises(MessageTooLargeError):
        log.append(make_batch(1, pad=5000), leader_epoch=3)
    with pytest.raises(InvalidRecordError, match="epoch"):
        log.append(make_batch(1), leader_epoch=2)  # a stale leader
    with pytest.raises(CorruptRecordError):
        log.append(b"\x00" * 10, leader_epoch=3)
    assert (log.log_end_offset, log.size_bytes) == before
    assert values(log) == [(0, b"v0"), (1, b"v1")]


def test_follower_append_keeps_offsets_and_checks_them_all_first(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    leader = Log(str(tmp_path / "leader"), clock=SYSTEM_CLOCK)
    follower = Log(str(tmp_path / "follower"), clock=SYSTEM_CLOCK)
    for epoch in (1, 1, 4):
        leader.append(make_batch(2), leader_epoch=epoch)
    fetched = leader.read(0, 1 << 20).data
    infos = follower.append_as_follower(fetched)
    assert [i.base_offset for i in infos] == [0, 2, 4]
    assert follower.epochs.entries == [EpochEntry(1, 0), EpochEntry(4, 4)]
    assert (
        Path(follower.directory, "00000000000000000000.log").read_bytes()
        == Path(leader.directory, "00000000000000000000.log").read_bytes()
    )
    with pytest.raises(LogOffsetMismatchError):
        follower.append_as_follower(fetched)  # offsets 0.. again
    leader.append(make_batch(1), leader_epoch=4)
    more = bytearray(leader.read(6, 1 << 20).data)
    more[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower(fetched[:0] + bytes(more))
    with pytest.raises(CorruptRecordError, match="partial"):
        follower.append_as_follower(leader.read(6, 1 << 20).data[:-3])
    assert follower.log_end_offset == 6


def test_roll_by_age_uses_the_time_passed_in(tmp_path: Path, make_batch: BatchFactory) -> None:
    log = Log(str(tmp_path / "t-0"), LogConfig(segment_ms=1_000), now_ms=0, clock=SYSTEM_CLOCK)
    log.append(make_batch(1), leader_epoch=0, now_ms=10)
    log.append(make_batch(1), leader_epoch=0, now_ms=999)
    assert log.segment_count == 1
    log.append(make_batch(1), leader_epoch=0, now_ms=1_000)
    assert log.segment_base_offsets == [0, 2]


def test_offset_for_timestamp_through_the_time_index(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), SMALL, clock=SYSTEM_CLOCK)
    timestamps = [100, 300, 200, 400, 400, 500] * 10  # not monotonic, like real producers
    for i, ts in enumerate(timestamps):
        log.append(make_batch(1, start=i, timestamp_ms=ts + i), leader_epoch=0)
    for target in (0, 150, 333, 401, 455, 560):
        expected = next((i for i, ts in enumerate(timestamps) if ts + i >= target), None)
        found = log.offset_for_timestamp(target)
        assert (found[0] if found else None) == expected, target
    assert log.offset_for_timestamp(10_000) is None


def test_retention_by_time_and_size_advances_the_log_start(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    config = LogConfig(segment_bytes=1024, retention_ms=10_000, retention_bytes=None)
    log = Log(str(tmp_path / "t-0"), config, state=store, name="t-0", clock=SYSTEM_CLOCK)
    for i in range(60):
        log.append(make_batch(1, start=i, timestamp_ms=i * 100, pad=40), leader_epoch=0)
    segments = log.segment_count
    assert log.delete_retained(now_ms=5_000) == 0
    deleted = log.delete_retained(now_ms=14_000)  # batches older than 4,000 ms expire
    assert 0 < deleted < segments
    assert log.log_start_offset == log.segment_base_offsets[0] > 0
    assert store.get_offset("log_start", "t-0") == log.log_start_offset
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    # the HW bound: nothing at or above max_offset is deleted even when expired
    assert log.delete_retained(now_ms=10**9, max_offset=log.segment_base_offsets[1]) == 1
    sized = LogConfig(segment_bytes=1024, retention_ms=None, retention_bytes=2048)
    log.close()
    log = Log(str(tmp_path / "t-0"), sized, now_ms=0, state=store, name="t-0", clock=SYSTEM_CLOCK)
    log.delete_retained(now_ms=0)
    assert log.size_bytes <= 2048 + 1024
    assert values(log, log.log_start_offset)[-1] == (59, b"v59" + b"." * 40)
    log.close()
    store.close()


def test_truncate_removes_whole_batches_and_epochs(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), SMALL, clock=SYSTEM_CLOCK)
    for i in range(30):
        log.append(make_batch(3, start=3 * i), leader_epoch=i // 10)
    assert log.end_offset_for_epoch(1) == (1, 60)
    assert log.truncate_to(64) == 63  # 64 is inside the batch 63..65: the batch goes
    assert log.epochs.entries == [EpochEntry(0, 0), EpochEntry(1, 30), EpochEntry(2, 60)]
    assert log.truncate_to(30) == 30
    assert log.epochs.entries == [EpochEntry(0, 0)]
    assert values(log) == [(i, f"v{i}".encode()) for i in range(30)]
    info = log.append(make_batch(1, start=30), leader_epoch=5)
    assert info.base_offset == 30
    assert log.truncate_to(100) == 31  # beyond the end: nothing to do
    log.truncate_fully_and_start_at(500)
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (500, 500, 1)
    assert log.append(make_batch(1), leader_epoch=6).base_offset == 500
    log.close()
    reopened = Log(str(tmp_path / "t-0"), SMALL, clock=SYSTEM_CLOCK)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (500, 501)


def test_epoch_cache_survives_in_lmdb_and_is_rebuilt_without_it(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    log = Log(str(tmp_path / "t-0"), SMALL, state=store, name="t-0", clock=SYSTEM_CLOCK)
    for epoch in (0, 0, 2, 7):
        log.append(make_batch(2), leader_epoch=epoch)
    log.close()
    expected = [EpochEntry(0, 0), EpochEntry(2, 4), EpochEntry(7, 6)]
    assert store.load_epochs("t-0") == expected
    assert (
        Log(
            str(tmp_path / "t-0"), SMALL, state=store, name="t-0", clock=SYSTEM_CLOCK
        ).epochs.entries
        == expected
    )
    assert (
        Log(str(tmp_path / "t-0"), SMALL, clock=SYSTEM_CLOCK).epochs.entries == expected
    )  # rebuilt by a scan
    store.close()


def test_missing_or_garbage_indexes_are_rebuilt(tmp_path: Path, make_batch: BatchFactory) -> None:
    directory = tmp_path / "t-0"
    log = Log(str(directory), LogConfig(index_interval_bytes=128), clock=SYSTEM_CLOCK)
    for i in range(50):
        log.append(make_batch(2, start=2 * i), leader_epoch=0)
    log.close()
    index = directory / "00000000000000000000.index"
    entries = index.stat().st_size // 8
    index.write_bytes(b"\xff" * 40)  # garbage
    log = Log(str(directory), LogConfig(index_interval_bytes=128), clock=SYSTEM_CLOCK)
    assert values(log) == [(i, f"v{i}".encode()) for i in range(100)]
    log.close()
    assert index.stat().st_size // 8 == entries
    index.unlink()
    (directory / "00000000000000000000.timeindex").unlink()
    log = Log(str(directory), LogConfig(index_interval_bytes=128), clock=SYSTEM_CLOCK)
    assert values(log, 77)[0] == (77, b"v77")
    assert index.stat().st_size // 8 == entries


def test_a_closed_segment_that_lost_its_indexes_gets_them_rebuilt(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    """A closed segment below the recovery point is trusted without a scan, but not when its
    indexes are gone: its timestamp would read -1 (never expired by time, skipped by a
    timestamp lookup) and every read in it would walk from byte 0."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = tmp_path / "t-0"
    config = LogConfig(segment_bytes=1024, index_interval_bytes=128, retention_ms=10_000)

    def open_log() -> Log:
        return Log(str(directory), config, now_ms=0, state=store, name="t-0", clock=SYSTEM_CLOCK)

    log = open_log()
    for i in range(60):
        log.append(make_batch(1, start=i, timestamp_ms=1_000 + i, pad=30), leader_epoch=0)
    assert log.segment_count > 3
    segment = log._segments[1]  # ten batches at 1,001..1,010 (segment 0 rolled on its age)
    name = f"{segment.base_offset:020d}"
    before = (segment.next_offset, segment.max_timestamp_ms)
    assert before == (11, 1_010)
    index, time_index = directory / f"{name}.index", directory / f"{name}.timeindex"
    log.close()
    sizes = (index.stat().st_size, time_index.stat().st_size)
    assert store.get_offset("recovery_point", "t-0") == 60  # the reopen trusts segment 1
    lose_the_last_entry = (time_index, sizes[1] - 12)
    for lost in ((index, 0), (time_index, 0), lose_the_last_entry, (index, 0), (time_index, 0)):
        path, size = lost
        with open(path, "r+b") as f:
            f.truncate(size)  # a damaged file
        log = open_log()
        segment = log._segments[1]
        assert (segment.next_offset, segment.max_timestamp_ms) == before, lost
        assert log.offset_for_timestamp(1_005) == (5, 1_005)
        assert values(log, 7)[0] == (7, b"v7" + b"." * 30)
        log.close()
        assert index.stat().st_size == sizes[0]  # rebuilt whole
        assert time_index.stat().st_size >= sizes[1] - 12  # all but the roll's final entry
    log = open_log()
    assert log.delete_retained(now_ms=1_010 + 10_001) >= 2  # expired on time
    log.close()
    store.close()


def test_closed_segment_indexes_in_memory_are_bounded(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    config = LogConfig(segment_bytes=1024, index_interval_bytes=64, loaded_indexes_max=2)
    log = Log(str(tmp_path / "t-0"), config, now_ms=0, clock=SYSTEM_CLOCK)
    for i in range(200):
        log.append(make_batch(1, start=i, pad=30), leader_epoch=0)
    assert log.segment_count > 10
    assert values(log) == [(i, f"v{i}".encode() + b"." * 30) for i in range(200)]
    loaded = [s for s in log._segments[:-1] if s.index.loaded]
    assert len(loaded) <= 2


def test_disk_full_mid_write_rolls_back_the_partial_batch(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    calls = {"n": 0}

    def writev(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
        calls["n"] += 1
        if calls["n"] == 3:  # the third append: write half of it, then the disk is full
            data = b"".join(bytes(b) for b in buffers)
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.writev(fd, buffers)

    log = Log(str(tmp_path / "t-0"), writev=writev, clock=SYSTEM_CLOCK)
    log.append(make_batch(1, start=0), leader_epoch=0)
    log.append(make_batch(1, start=1), leader_epoch=0)
    size = log.size_bytes
    with pytest.raises(LogDirFullError) as info:
        log.append(make_batch(1, start=2), leader_epoch=0)
    assert info.value.code == ErrorCode.KAFKA_STORAGE_ERROR and info.value.retriable
    assert (log.log_end_offset, log.size_bytes) == (2, size)
    assert os.path.getsize(tmp_path / "t-0" / "00000000000000000000.log") == size
    assert log.append(make_batch(1, start=2), leader_epoch=0).base_offset == 2
    assert values(log) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_really_full_disk_leaves_the_log_readable(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "256k"):
        pytest.skip("needs root and mount(8) for a small tmpfs")
    try:
        log = Log(str(mount / "t-0"), LogConfig(retention_ms=None), clock=SYSTEM_CLOCK)
        appended = 0
        with pytest.raises(LogDirFullError):
            for i in range(1000):
                log.append(make_batch(1, start=i, pad=1000), leader_epoch=0)
                appended += 1
        assert log.log_end_offset == appended > 100
        assert [o for o, _ in values(log)] == list(range(appended))
        log.close()
        reopened = Log(str(mount / "t-0"), LogConfig(retention_ms=None), clock=SYSTEM_CLOCK)
        assert reopened.log_end_offset == appended and reopened.recovered_bytes_truncated == 0
        reopened.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_io_errors_are_storage_errors(tmp_path: Path, make_batch: BatchFactory) -> None:
    def broken(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
        raise OSError(errno.EIO, "Input/output error")

    log = Log(str(tmp_path / "t-0"), writev=broken, clock=SYSTEM_CLOCK)
    with pytest.raises(StorageIOError) as info:
        log.append(make_batch(1), leader_epoch=0)
    assert not isinstance(info.value, LogDirFullError)
    assert log.log_end_offset == 0 and log.size_bytes == 0


def test_iter_headers_from_an_offset_across_segments(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(
        str(tmp_path / "t-0"),
        LogConfig(segment_bytes=1024, index_interval_bytes=64),
        clock=SYSTEM_CLOCK,
    )
    for i in range(60):
        log.append(make_batch(2, start=2 * i, pad=20), leader_epoch=0)
    assert log.segment_count > 2
    for start in (0, 1, 37, 64, 119):
        bases = [h.base_offset for h in log.iter_headers(start)]
        assert bases == list(range(start - start % 2, 120, 2)), start
    assert list(log.iter_headers(120)) == []


def test_a_rolled_segment_can_be_fsynced_off_thread(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    pending: list[Callable[[], None]] = []
    log = Log(
        str(tmp_path / "t-0"),
        LogConfig(segment_bytes=1024),
        background=pending.append,
        clock=SYSTEM_CLOCK,
    )
    for i in range(20):
        log.append(make_batch(1, start=i, pad=100), leader_epoch=0)
    assert log.segment_count > 1 and len(pending) == log.segment_count - 1
    for work in pending:
        work()  # what the broker's fsync thread does
    assert log.read(0, 1 << 20).next_offset > 0
    log.close()
