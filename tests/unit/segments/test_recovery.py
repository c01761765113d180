"""Damage is found and named: at open (above the recovery point, and structural damage below it),
by scrub and verify when it happens while the log is open, and by reads, which return the good
prefix and then raise CorruptRecordError with the first bad offset. The recovery point moves only
after the fsyncs it stands for."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from raftlog.proto.codes import ErrorCode
from raftlog.segments import BrokerStateStore, CorruptRecordError, StorageIOError, iter_batches
from raftlog.segments import recovery_point as recovery_point_module
from raftlog.segments.batch import stamp
from raftlog.segments.clock import SYSTEM_CLOCK
from raftlog.segments.log import Log, LogConfig
from raftlog.segments.tool import verify as verify_tool

BatchFactory = Callable[..., bytes]
CONFIG = LogConfig(segment_bytes=1024, index_interval_bytes=128, retention_ms=None)
BATCHES = 40  # of 2 records: offsets 0..79, about 5 batches a segment, 8 segments
DAMAGES = ["flip", "cut_mid", "cut_boundary", "delete_middle", "flip_active"]


def fill(log: Log, make_batch: BatchFactory, batches: int = BATCHES) -> None:
    for i in range(batches):
        # 175-byte batches (two records of ~50 bytes): the geometry the scenarios below count on
        log.append(make_batch(2, start=2 * i, pad=47), leader_epoch=i // 10)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def batches_of(path: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of each batch in a segment file."""
    return [(p, h.base_offset, h.size_bytes) for p, h in iter_batches(path.read_bytes())]


def damage(directory: Path, kind: str) -> int:
    """Damage the log's files; return the first offset that is no longer whole."""
    files = segment_files(directory)
    if kind == "delete_middle":
        victim = files[2]
        base = int(victim.stem)
        for suffix in (".log", ".index", ".timeindex"):
            victim.with_suffix(suffix).unlink(missing_ok=True)
        return base
    target = files[-1] if kind == "flip_active" else files[1]
    position, base, size = batches_of(target)[2]  # a middle batch
    raw = bytearray(target.read_bytes())
    if kind in ("flip", "flip_active"):
        raw[position + size - 3] ^= 0x10  # a record byte: only the CRC can tell
        target.write_bytes(raw)
    elif kind == "cut_mid":
        os.truncate(target, position + size // 2)
    elif kind == "cut_boundary":
        os.truncate(target, position)
    else:
        raise AssertionError(kind)
    return base


def read_until_error(log: Log, start: int = 0) -> tuple[int, CorruptRecordError | None]:
    """Read on from ``start`` like a consumer; (where the good data ended, the error)."""
    offset = start
    while offset < log.log_end_offset:
        try:
            result = log.read(offset, 300)
        except CorruptRecordError as exc:
            return offset, exc
        assert result.next_offset > offset
        offset = result.next_offset
    return offset, None


def closed_log(tmp_path: Path, make_batch: BatchFactory, store: BrokerStateStore | None) -> Path:
    directory = tmp_path / "t-0"
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    fill(log, make_batch)
    assert log.segment_count == 8
    log.close()
    return directory


def killed_log(tmp_path: Path, make_batch: BatchFactory, store: BrokerStateStore | None) -> Path:
    """As after kill -9 or a power loss with the page cache intact: nothing closed."""
    directory = tmp_path / "t-0"
    log = Log(
        str(directory),
        CONFIG,
        state=store,
        name="t-0",
        background=lambda work: None,
        clock=SYSTEM_CLOCK,
    )
    fill(log, make_batch)
    for segment in log._segments:
        os.close(segment._fd)
    return directory


# ---- found at open ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DAMAGES)
def test_damage_above_the_recovery_point_is_cut_at_open(
    tmp_path: Path, make_batch: BatchFactory, kind: str
) -> None:
    """No state store: nothing is known durable, so every batch is checked."""
    directory = closed_log(tmp_path, make_batch, None)
    bad = damage(directory, kind)
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    report = log.recovery
    assert report.damaged, report
    assert report.first_bad_offset == bad == log.log_end_offset
    assert report.truncated_bytes > 0 or kind == "cut_boundary"
    assert report.truncated_bytes == log.recovered_bytes_truncated
    assert len(segment_files(directory)) == log.segment_count  # later segments are gone
    assert read_until_error(log) == (bad, None)
    assert log.verify() is None
    log.close()


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_killed_broker_checks_what_its_recovery_point_does_not_cover(
    tmp_path: Path, make_batch: BatchFactory, kind: str
) -> None:
    """The rolls' fsyncs never ran (background work dropped), so the recovery point stayed at
    0: every segment is checked, with a state store too."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = killed_log(tmp_path, make_batch, store)
    assert store.get_offset("recovery_point", "t-0") in (None, 0)
    bad = damage(directory, kind)
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert (log.recovery.damaged, log.recovery.first_bad_offset) == (True, bad)
    assert log.log_end_offset == bad
    log.close()
    store.close()


@pytest.mark.parametrize("kind", ["cut_mid", "cut_boundary", "delete_middle"])
def test_a_cut_or_missing_segment_below_the_recovery_point_is_found_at_open(
    tmp_path: Path, make_batch: BatchFactory, kind: str
) -> None:
    """Below the recovery point segments are opened cheaply, but a cut and a gap still show."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = closed_log(tmp_path, make_batch, store)
    assert store.get_offset("recovery_point", "t-0") == 80  # == the LEO after close()
    bad = damage(directory, kind)
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert (log.recovery.damaged, log.recovery.first_bad_offset) == (True, bad)
    assert log.log_end_offset == bad
    assert log.recovery_point == bad == store.get_offset("recovery_point", "t-0")
    assert read_until_error(log) == (bad, None)
    log.close()
    store.close()


def test_a_clean_close_is_not_rescanned_and_the_scrub_finds_what_lies_below(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    """After close() the recovery point is the LEO: open trusts the batches below it (a flipped
    record byte there is not seen at open — the proof that nothing was rescanned); reads,
    verify and the scrub find it."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = closed_log(tmp_path, make_batch, store)
    bad = damage(directory, "flip")
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert not log.recovery.damaged and log.recovery.truncated_bytes == 0
    assert log.log_end_offset == 80
    good_end, error = read_until_error(log)
    assert good_end == bad and error is not None and error.offset == bad
    assert log.verify() == bad
    assert scrub_until_damage(log) == bad
    log.close()
    store.close()


# ---- found while open ---------------------------------------------------------------------------


def scrub_until_damage(log: Log, max_bytes: int = 300) -> int | None:
    total = 0
    for _ in range(100):
        result = log.scrub(max_bytes)
        assert result.bytes_checked <= max(max_bytes, 61)
        total += result.bytes_checked
        if result.damaged_offset is not None:
            return result.damaged_offset
        if total > 3 * log.size_bytes:
            return None
    return None


@pytest.mark.parametrize("kind", DAMAGES)
def test_damage_while_open_is_found_by_verify_scrub_and_reads(
    tmp_path: Path, make_batch: BatchFactory, kind: str
) -> None:
    log = Log(str(tmp_path / "t-0"), CONFIG, clock=SYSTEM_CLOCK)
    fill(log, make_batch)
    assert log.verify() is None and scrub_until_damage(log) is None
    bad = damage(tmp_path / "t-0", kind)
    assert log.verify() == bad
    if kind != "flip_active":  # the scrub checks closed segments only
        assert scrub_until_damage(log) == bad
    if kind != "delete_middle":  # an unlinked file stays readable through its descriptor
        good_end, error = read_until_error(log)
        assert error is not None, "a read returned damaged data"
        assert (good_end, error.offset) == (bad, bad)
        with pytest.raises(CorruptRecordError) as again:
            log.read(bad, 1 << 20)
        assert again.value.offset == bad
    log.close()


def test_a_read_in_the_middle_returns_the_good_prefix_first(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    log = Log(str(tmp_path / "t-0"), LogConfig(retention_ms=None), clock=SYSTEM_CLOCK)
    fill(log, make_batch, 10)
    path = segment_files(tmp_path / "t-0")[0]
    position, base, size = batches_of(path)[6]
    raw = bytearray(path.read_bytes())
    raw[position + size - 1] ^= 1
    path.write_bytes(raw)
    result = log.read(0, 1 << 20)
    assert result.next_offset == base == 12  # six good batches, then the bad one is left out
    with pytest.raises(CorruptRecordError) as info:
        log.read(result.next_offset, 1 << 20)
    assert info.value.offset == 12 and info.value.code == ErrorCode.CORRUPT_MESSAGE
    assert len(list(log.iter_headers(0))) == 10  # headers only: no CRC checks there
    log.close()


def test_iter_headers_names_a_gap(tmp_path: Path, make_batch: BatchFactory) -> None:
    log = Log(str(tmp_path / "t-0"), CONFIG, clock=SYSTEM_CLOCK)
    fill(log, make_batch)
    bad = damage(tmp_path / "t-0", "cut_boundary")
    with pytest.raises(CorruptRecordError) as info:
        for _ in log.iter_headers(0):
            pass
    assert info.value.offset == bad
    log.close()


def test_the_scrub_is_bounded_resumes_and_wraps(tmp_path: Path, make_batch: BatchFactory) -> None:
    log = Log(str(tmp_path / "t-0"), CONFIG, clock=SYSTEM_CLOCK)
    fill(log, make_batch)
    closed_bytes = log.size_bytes - log._segments[-1].size_bytes
    seen = []
    total = 0
    while total < 2 * closed_bytes:
        result = log.scrub(100)
        assert result.damaged_offset is None and 0 < result.bytes_checked <= 100
        seen.append(result.position)
        total += result.bytes_checked
    assert (log.segment_base_offsets[0], 0) in seen  # it came back to the start
    full = log.scrub(1 << 30)  # one round at most, from where it stood
    assert full.damaged_offset is None and 0 < full.bytes_checked <= closed_bytes
    log.close()


# ---- torn tails are not damage ----------------------------------------------------------------


def test_a_torn_tail_after_a_crash_is_not_damage(tmp_path: Path, make_batch: BatchFactory) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = killed_log(tmp_path, make_batch, store)
    whole = bytearray(make_batch(2, start=80, pad=30))
    stamp(whole, 80, 3)  # as the append wrote it, cut by the crash
    half = bytes(whole[:70])
    with open(segment_files(directory)[-1], "ab") as f:
        f.write(half)
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert log.recovery.damaged is False and log.recovery.first_bad_offset is None
    assert log.recovery.truncated_bytes == 70 and log.log_end_offset == 80
    assert "torn" in log.recovery.reason
    log.close()
    # a few bytes only (less than a header) are a torn tail too
    with open(segment_files(directory)[-1], "ab") as f:
        f.write(half[:20])
    reopened = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    assert (reopened.recovery.damaged, reopened.recovery.truncated_bytes) == (False, 20)
    reopened.close()
    store.close()


def test_a_cut_below_the_recovery_point_is_damage_even_at_the_end(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    """close() made everything durable: a last batch cut short afterwards lost fsynced data."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = closed_log(tmp_path, make_batch, store)
    last = segment_files(directory)[-1]
    position, base, size = batches_of(last)[-1]
    os.truncate(last, position + size - 5)
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert (log.recovery.damaged, log.recovery.first_bad_offset) == (True, base)
    log.close()
    store.close()


def test_a_damaged_length_that_looks_torn_is_damage(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    """A flipped high bit in a middle batch's length makes it run past the end of the file —
    like a torn write — but good batches follow it: that is damage."""
    directory = killed_log(tmp_path, make_batch, None)
    last = segment_files(directory)[-1]
    position, base, _ = batches_of(last)[1]
    raw = bytearray(last.read_bytes())
    raw[position + 9] ^= 0x40  # batch_length's second byte: +4 MiB
    last.write_bytes(raw)
    log = Log(str(directory), CONFIG, clock=SYSTEM_CLOCK)
    assert (log.recovery.damaged, log.recovery.first_bad_offset) == (True, base)
    log.close()


# ---- the recovery point -----------------------------------------------------------------------


def test_the_recovery_point_waits_for_background_fsyncs_in_roll_order(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    pending: list[Callable[[], None]] = []
    log = Log(
        str(tmp_path / "t-0"),
        CONFIG,
        state=store,
        name="t-0",
        background=pending.append,
        clock=SYSTEM_CLOCK,
    )
    fill(log, make_batch, 12)  # two rolls
    assert len(pending) == 2
    bases = log.segment_base_offsets
    assert log.recovery_point == 0 and store.get_offset("recovery_point", "t-0") is None
    pending[1]()  # the later roll's fsync finishes first: the earlier segment is not yet durable
    assert log.recovery_point == 0 and store.get_offset("recovery_point", "t-0") is None
    pending[0]()
    assert log.recovery_point == bases[2] == store.get_offset("recovery_point", "t-0")
    log.flush()
    assert log.recovery_point == log.log_end_offset == store.get_offset("recovery_point", "t-0")
    log.close()
    store.close()


def test_a_failed_fsync_does_not_move_the_recovery_point(
    tmp_path: Path, make_batch: BatchFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    log = Log(str(tmp_path / "t-0"), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    fill(log, make_batch, 3)
    log.flush()
    assert log.recovery_point == 6 == store.get_offset("recovery_point", "t-0")
    log.append(make_batch(2), leader_epoch=0)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StorageIOError):
        log.flush()
    assert log.recovery_point == 6 == store.get_offset("recovery_point", "t-0")
    monkeypatch.undo()
    log.flush()
    assert log.recovery_point == 8 == store.get_offset("recovery_point", "t-0")
    log.close()
    store.close()


def test_the_directory_is_fsynced_before_the_recovery_point_covers_a_new_segment(
    tmp_path: Path, make_batch: BatchFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real = recovery_point_module.fsync_directory

    def spy(path: str) -> None:
        events.append(f"dir {os.path.basename(path)}")
        real(path)

    monkeypatch.setattr(recovery_point_module, "fsync_directory", spy)
    store = BrokerStateStore(str(tmp_path / "state"))
    save = store.save_offsets

    def saving(db: str, offsets: dict[str, int]) -> None:
        if db == "recovery_point":
            events.append(f"point {offsets['t-0']}")
        save(db, offsets)

    monkeypatch.setattr(store, "save_offsets", saving)
    log = Log(str(tmp_path / "t-0"), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    fill(log, make_batch, 6)  # one roll, inline fsync
    first_point = next(i for i, e in enumerate(events) if e.startswith("point"))
    assert "dir t-0" in events[:first_point]
    events.clear()
    log.truncate_to(2)  # deletes the second segment
    assert events[0] == "point 0" and "dir t-0" in events  # lowered first, then the delete synced
    log.close()
    store.close()


def test_truncation_lowers_the_saved_recovery_point_first(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    store = BrokerStateStore(str(tmp_path / "state"))
    log = Log(str(tmp_path / "t-0"), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    fill(log, make_batch)
    log.flush()
    assert store.get_offset("recovery_point", "t-0") == 80
    log.truncate_to(33)
    saved = store.get_offset("recovery_point", "t-0")
    assert saved is not None and saved <= log.log_end_offset == 32
    log.close()
    reopened = Log(str(tmp_path / "t-0"), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert not reopened.recovery.damaged and reopened.log_end_offset == 32
    reopened.close()
    store.close()


# ---- the operator's tool ------------------------------------------------------------------------


def test_storage_verify_names_each_partition(
    tmp_path: Path, make_batch: BatchFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    good = closed_log(tmp_path / "a", make_batch, None)
    bad_dir = closed_log(tmp_path / "b", make_batch, None)
    bad = damage(bad_dir, "cut_boundary")
    console = Console(width=300, no_color=True)
    assert verify_tool([str(good)], console=console) == 0
    assert verify_tool([str(good), str(bad_dir)], console=console) == 1
    assert verify_tool([str(tmp_path / "missing")], console=console) == 2
    out = capsys.readouterr().out
    assert f"DAMAGED at offset {bad}" in out and "OK" in out and "not a directory" in out
    with open(segment_files(good)[-1], "ab") as f:
        f.write(make_batch(1)[:30])  # a torn tail is not damage
    assert verify_tool([str(good)], console=console) == 0


def test_the_scrub_checks_a_batch_larger_than_its_budget_across_calls(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    config = LogConfig(segment_bytes=16384, retention_ms=None)
    log = Log(str(tmp_path / "t-0"), config, clock=SYSTEM_CLOCK)
    for i in range(6):
        log.append(make_batch(1, start=i, pad=6000), leader_epoch=0)  # 2 a segment
    assert log.segment_count == 3
    assert scrub_until_damage(log, max_bytes=1000) is None
    path = segment_files(tmp_path / "t-0")[1]
    position, base, size = batches_of(path)[1]
    raw = bytearray(path.read_bytes())
    raw[position + size // 2] ^= 4
    path.write_bytes(raw)
    assert scrub_until_damage(log, max_bytes=1000) == base == 3
    log.close()


def test_a_log_ending_below_its_recovery_point_is_damaged(
    tmp_path: Path, make_batch: BatchFactory
) -> None:
    """The last segment cut exactly at a batch boundary: every batch left is whole, but the
    recovery point says fsynced offsets are missing."""
    store = BrokerStateStore(str(tmp_path / "state"))
    directory = closed_log(tmp_path, make_batch, store)
    last = segment_files(directory)[-1]
    position, base, _ = batches_of(last)[1]
    os.truncate(last, position)
    log = Log(str(directory), CONFIG, state=store, name="t-0", clock=SYSTEM_CLOCK)
    assert (log.recovery.damaged, log.recovery.first_bad_offset) == (True, base)
    assert log.recovery.truncated_bytes == 0 and log.log_end_offset == base
    assert log.recovery_point == base == store.get_offset("recovery_point", "t-0")
    log.close()
    store.close()
