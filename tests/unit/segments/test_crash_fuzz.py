"""Crash fuzzing: cut the last segment anywhere, flip bytes anywhere, reopen.

After reopen the log must be a prefix of what was appended, and a read must either return
batches that are byte-for-byte what was appended or raise CORRUPT_MESSAGE — never wrong data.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from raftlog.segments import CorruptRecordError, build_batch, iter_batches, iter_records
from raftlog.segments.clock import SYSTEM_CLOCK
from raftlog.segments.log import Log, LogConfig

CONFIG = LogConfig(segment_bytes=8192, index_interval_bytes=300, retention_ms=None)
BATCHES = 120


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A closed log of 120 batches over several segments, and each batch's end offset."""
    directory = tmp_path_factory.mktemp("pristine") / "t-0"
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    ends = []
    rng = random.Random(7)
    for i in range(BATCHES):
        count = rng.randint(1, 4)
        values = [f"{i}/{j}".encode() * rng.randint(1, 20) for j in range(count)]
        ends.append(
            log.append(build_batch(values, timestamp_ms=i), leader_epoch=i // 40).last_offset
        )
    log.close()
    return directory, ends


def _expected_values(ends: list[int]) -> dict[int, bytes]:
    rng = random.Random(7)
    out: dict[int, bytes] = {}
    offset = 0
    for i in range(BATCHES):
        count = rng.randint(1, 4)
        for j in range(count):
            out[offset] = f"{i}/{j}".encode() * rng.randint(1, 20)
            offset += 1
    assert offset == ends[-1] + 1
    return out


def _last_segment(directory: Path) -> Path:
    return sorted(directory.glob("*.log"))[-1]


def _check_prefix(directory: Path, expected: dict[int, bytes]) -> tuple[int, int]:
    """Reopen and read everything; return (log end, corrupt reads). Fail on any wrong byte."""
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    end = log.log_end_offset
    assert end <= len(expected)
    corrupt = 0
    offset = 0
    while offset < end:
        try:
            result = log.read(offset, 1000)
        except CorruptRecordError:
            corrupt += 1
            # skip the unreadable batch the way a replica would re-fetch it: step past it
            offset = _next_batch_offset(log, offset)
            continue
        for position, header in iter_batches(result.data):
            for record in iter_records(result.data[position : position + header.size_bytes]):
                assert record.value == expected[record.offset], record.offset
        # a read below the end either raises or makes progress: never "nothing" forever
        assert result.next_offset > offset, (offset, end)
        offset = result.next_offset
    log.close()
    return end, corrupt


def _next_batch_offset(log: Log, offset: int) -> int:
    while True:
        offset += 1
        if offset >= log.log_end_offset:
            return offset
        try:
            log.read(offset, 1)
            return offset
        except CorruptRecordError:
            continue


def test_cut_the_last_segment_at_every_kind_of_position(
    pristine: tuple[Path, list[int]], tmp_path: Path
) -> None:
    source, ends = pristine
    expected = _expected_values(ends)
    size = _last_segment(source).stat().st_size
    base = int(_last_segment(source).stem)
    # every byte of the last two batches, plus a spread over the whole segment
    positions = sorted(set(range(max(0, size - 400), size + 1)) | set(range(0, size, 97)))
    for cut in positions:
        work = tmp_path / "t-0"
        shutil.copytree(source, work)
        os.truncate(_last_segment(work), cut)
        end, corrupt = _check_prefix(work, expected)
        # the log ends at the last whole batch before the cut
        whole = [e + 1 for e in ends if e + 1 > base]
        data = _last_segment(source).read_bytes()[:cut]
        complete = sum(1 for _ in iter_batches(data))
        assert end == (whole[complete - 1] if complete else base), cut
        assert corrupt == 0
        shutil.rmtree(work)


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bytes_never_come_back_as_data(
    pristine: tuple[Path, list[int]], tmp_path: Path, seed: int
) -> None:
    source, ends = pristine
    expected = _expected_values(ends)
    rng = random.Random(seed)
    for _ in range(40):
        work = tmp_path / "t-0"
        shutil.copytree(source, work)
        target = rng.choice(sorted(work.glob("*.log")))
        raw = bytearray(target.read_bytes())
        for _flip in range(rng.randint(1, 3)):
            position = rng.randrange(len(raw))
            raw[position] ^= 1 << rng.randrange(8)
        target.write_bytes(raw)
        _check_prefix(work, expected)
        shutil.rmtree(work)


def test_garbage_appended_after_the_last_batch_is_cut(
    pristine: tuple[Path, list[int]], tmp_path: Path
) -> None:
    source, ends = pristine
    work = tmp_path / "t-0"
    shutil.copytree(source, work)
    with open(_last_segment(work), "ab") as f:
        f.write(os.urandom(5000))
    log = Log(str(work), CONFIG, clock=SYSTEM_CLOCK)
    assert log.log_end_offset == ends[-1] + 1
    assert log.recovered_bytes_truncated == 5000


@pytest.mark.parametrize("seed", range(4))
def test_any_damage_anywhere_is_cut_at_open_and_leaves_a_whole_prefix(
    pristine: tuple[Path, list[int]], tmp_path: Path, seed: int
) -> None:
    """Without a recovery point every batch is checked at open: whatever was flipped, cut or
    deleted, the log that opens is a whole prefix (verify finds nothing, every read succeeds),
    and the report says damage exactly when a whole batch was lost."""
    source, ends = pristine
    expected = _expected_values(ends)
    batch_ends = {e + 1 for e in ends}
    rng = random.Random(100 + seed)
    for _ in range(25):
        work = tmp_path / "t-0"
        shutil.copytree(source, work)
        files = sorted(work.glob("*.log"))
        target = rng.choice(files)
        kind = rng.choice(["flip", "cut", "delete"] if target != files[0] else ["flip", "cut"])
        raw = bytearray(target.read_bytes())
        if kind == "flip":
            position = rng.randrange(len(raw))
            raw[position] ^= 1 << rng.randrange(8)
            target.write_bytes(raw)
        elif kind == "cut":
            os.truncate(target, rng.randrange(len(raw)))
        else:
            target.unlink()
        log = Log(str(work), CONFIG, clock=SYSTEM_CLOCK)
        end = log.log_end_offset
        assert end in batch_ends or end == 0
        assert log.verify() is None
        assert end < ends[-1] + 1 or (not log.recovery.damaged and kind == "flip")
        if log.recovery.damaged:
            assert log.recovery.first_bad_offset == end
        # a closed segment lost a batch: damage (in the last one a cut, or a flip in the last
        # batch's length, looks exactly like a crash mid-append: no recovery point, no proof)
        if end < ends[-1] + 1 and target != files[-1]:
            assert log.recovery.damaged, (kind, target.name, log.recovery)
        log.close()
        assert _check_prefix(work, expected) == (end, 0)
        shutil.rmtree(work)
