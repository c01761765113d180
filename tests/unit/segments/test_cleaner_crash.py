"""The cleaner's swap against crashes at every step, with and without a power loss.

A pass over a log of several closed segments is run with every file-system call counted; the
k-th call raises (the process dies there). Then either the files stay as they are (kill -9) or
the directory goes back to what was durable (a power loss: names as of the directory's last
fsync, each file's bytes as of its last fsync — renames and unlinks not yet synced undone). The
log is opened again: it must open undamaged, hold no ``*.cleaned`` file, verify clean, and read
as a valid cleaning of what was there: every record at its original offset and value, the latest
record of every key present, nothing the pass would keep missing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raftlog.segments import BatchBuilder, Compression
from raftlog.segments.cleaner import CompactionPolicy
from raftlog.segments.clock import SYSTEM_CLOCK, WallMs
from raftlog.segments.compaction import run_job
from raftlog.segments.log import Log, LogConfig

from .test_cleaner_model import read_all

CONFIG = LogConfig(
    segment_bytes=1024,
    index_interval_bytes=64,
    retention_ms=None,
    cleanup_compact=True,
    cleanup_delete=False,
    compaction=CompactionPolicy(delete_retention_ms=0, min_cleanable_dirty_ratio=0.0),
)


class Crash(Exception):
    pass


class Disk:
    """What a power loss keeps: per inode its bytes at its last fsync, per directory its names
    (and their inodes) at its last fsync. Patches os.fsync; counts the calls that change files
    and raises Crash at the ``crash_at``-th one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.content: dict[int, bytes] = {}
        self.names: dict[str, int] = {}
        self.crash_at: int | None = None
        self.calls = 0
        for entry in directory.iterdir():
            self.content[entry.stat().st_ino] = entry.read_bytes()
            self.names[entry.name] = entry.stat().st_ino

    def _step(self, what: str) -> None:
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise Crash(what)

    @contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        real_fsync, real_rename, real_unlink, real_write = (
            os.fsync,
            os.rename,
            os.unlink,
            os.write,
        )

        def fsync(fd: Any) -> None:
            self._step("fsync")
            real_fsync(fd)
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if os.path.samefile(target, self.directory):
                    self.names = {e.name: e.stat().st_ino for e in os.scandir(target)}
            else:
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    self.content[info.st_ino] = f.read()

        def wrap(real: Callable[..., Any], what: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                self._step(what)
                return real(*args, **kwargs)

            return call

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", fsync)
            patch.setattr(os, "rename", wrap(real_rename, "rename"))
            patch.setattr(os, "unlink", wrap(real_unlink, "unlink"))
            patch.setattr(os, "write", wrap(real_write, "write"))
            yield

    def power_loss(self) -> None:
        for entry in list(self.directory.iterdir()):
            entry.unlink()
        for name, inode in self.names.items():
            (self.directory / name).write_bytes(self.content.get(inode, b""))


def build(directory: Path) -> tuple[dict[int, tuple[bytes, bytes | None]], dict[bytes, int]]:
    """A closed, fsynced log of several segments: keys overwritten, tombstones, codecs."""
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(0))
    produced: dict[int, tuple[bytes, bytes | None]] = {}
    latest: dict[bytes, int] = {}
    codecs = list(Compression)
    for i in range(24):
        builder = BatchBuilder(codecs[i % len(codecs)])
        for j in range(3):
            key = f"k{(i * 3 + j) % 7}".encode()
            builder.append(None if (i + j) % 9 == 0 else f"v{i}.{j}".encode(), key=key,
                           timestamp_ms=i)  # fmt: skip
        info = log.append(builder.build(), leader_epoch=i // 10, now_ms=WallMs(i))
        for j in range(3):
            key = f"k{(i * 3 + j) % 7}".encode()
            produced[info.base_offset + j] = (
                key,
                None if (i + j) % 9 == 0 else f"v{i}.{j}".encode(),
            )
            latest[key] = info.base_offset + j
    log.roll(WallMs(24))
    log.close()
    return produced, latest


def build_cleaned(
    directory: Path,
) -> tuple[dict[int, tuple[bytes, bytes | None]], dict[bytes, int]]:
    """``build``, cleaned once (its segments shrink), then more records and a roll: the next
    pass merges the small segments (``cleaner.merge_groups``)."""
    produced, latest = build(directory)
    log = open_flushed(directory)
    job = log.begin_clean(WallMs(100))
    assert job is not None
    log.finish_clean(job, run_job(job))
    job.close()
    for i in range(24, 30):
        builder = BatchBuilder()
        builder.append(f"v{i}".encode(), key=f"k{i % 7}".encode(), timestamp_ms=i)
        info = log.append(builder.build(), leader_epoch=3, now_ms=WallMs(i))
        produced[info.base_offset] = (f"k{i % 7}".encode(), f"v{i}".encode())
        latest[f"k{i % 7}".encode()] = info.base_offset
    log.roll(WallMs(30))
    log.close()
    return produced, latest


def open_flushed(directory: Path) -> Log:
    """Opened as a broker would have it: without a state store the recovery point starts at 0,
    and only what lies below it is cleaned."""
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(100))
    log.flush()
    return log


def clean_once(log: Log) -> None:
    try:
        job = log.begin_clean(WallMs(100))
        assert job is not None
        try:
            result = run_job(job)
            if result.error is not None and "Crash" in result.error:
                raise Crash(result.error)
            log.finish_clean(job, result)
        finally:
            job.close()
    finally:
        log._segments.clear()  # died: nothing is flushed or closed on the way out


def count_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], Any]
) -> tuple[int, int]:
    """The file-system calls of an uninterrupted pass, and how many segments it merged away."""
    directory = tmp_path / "count" / "t-0"
    make(directory)
    log = open_flushed(directory)
    before = log.segment_count
    disk = Disk(directory)
    with disk.patched(monkeypatch):
        clean_once(log)
    after = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    merged = before - after.segment_count
    after.close()
    return disk.calls, merged


@pytest.mark.parametrize("merging", [False, True], ids=["rewrite", "merge"])
@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
def test_a_crash_at_any_step_of_a_pass_loses_nothing_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, power_loss: bool, merging: bool
) -> None:
    make = build_cleaned if merging else build
    total, merged = count_calls(tmp_path, monkeypatch, make)
    assert total > 20  # writes, fsyncs, renames: the pass has many steps
    assert (merged > 0) == merging, merged  # the second kind of pass merges small segments
    outcomes = set()
    for crash_at in range(1, total + 2):
        directory = tmp_path / f"crash{crash_at}" / "t-0"
        produced, latest = make(directory)
        dying = open_flushed(directory)
        disk = Disk(directory)
        disk.crash_at = crash_at
        with disk.patched(monkeypatch):
            try:
                clean_once(dying)
                outcomes.add("finished")
            except Crash:
                outcomes.add("crashed")
        if power_loss:
            disk.power_loss()
        log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK, now_ms=WallMs(200))
        log.flush()
        try:
            assert not log.recovery.damaged, (crash_at, log.recovery)
            assert not [p for p in os.listdir(directory) if p.endswith(".cleaned")], crash_at
            assert log.verify() is None, crash_at
            assert log.log_end_offset == len(produced)
            records = read_all(log)
            for offset, key, value in records:
                assert produced[offset] == (key, value), (crash_at, offset)
            present = {offset for offset, _, _ in records}
            for key, offset in latest.items():
                if produced[offset][1] is not None:
                    assert offset in present, (crash_at, key)
            # and the log can still be cleaned to the end
            job = log.begin_clean(WallMs(300))
            if job is not None:
                result = run_job(job)
                assert result.error is None
                log.finish_clean(job, result)
                job.close()
            assert log.verify() is None
        finally:
            log.close()
    assert outcomes == {"finished", "crashed"}


def test_leftover_cleaned_files_at_open_are_discarded_or_completed(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    produced, _ = build(directory)
    before = read_all(Log(str(directory), CONFIG, clock=SYSTEM_CLOCK))
    bases = sorted(int(p.name[:20]) for p in directory.glob("*.log"))
    # an unfinished clean: a garbage log and index of the first segment
    (directory / f"{bases[0]:020d}.log.cleaned").write_bytes(b"\x00garbage" * 50)
    (directory / f"{bases[0]:020d}.index.cleaned").write_bytes(b"\x01" * 16)
    # a committed clean whose indexes were not yet renamed: here, indexes that do not fit
    (directory / f"{bases[1]:020d}.index.cleaned").write_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x07")
    (directory / f"{bases[1]:020d}.timeindex.cleaned").write_bytes(b"\x02" * 12)
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    try:
        assert len(log.cleaning_recovered) == 2
        assert not [p for p in os.listdir(directory) if p.endswith(".cleaned")]
        assert not log.recovery.damaged
        assert log.verify() is None
        assert read_all(log) == before
        assert log.log_end_offset == len(produced)
    finally:
        log.close()


def test_a_truncation_during_a_pass_discards_it(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    build(directory)
    log = open_flushed(directory)
    job = log.begin_clean(WallMs(100))
    assert job is not None
    result = run_job(job)
    assert result.cleaned
    log.truncate_to(log.segment_base_offsets[1] + 1)  # a follower cut back meanwhile
    assert log.finish_clean(job, result) == 0
    job.close()
    assert not [p for p in os.listdir(directory) if p.endswith(".cleaned")]
    assert log.verify() is None
    log.close()


def test_a_segment_deleted_by_retention_during_a_pass_is_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    produced, _ = build(directory)
    log = open_flushed(directory)
    job = log.begin_clean(WallMs(100))
    assert job is not None
    result = run_job(job)
    second = log.segment_base_offsets[1]
    log.advance_log_start(second)  # the first segment goes (DeleteRecords, or retention)
    swapped = log.finish_clean(job, result)
    job.close()
    assert swapped == len(result.cleaned) - 1
    assert not [p for p in os.listdir(directory) if p.endswith(".cleaned")]
    assert log.verify() is None
    for offset, key, value in read_all(log):
        assert produced[offset] == (key, value)
    log.close()
