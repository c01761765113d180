"""The snapshot written off the Raft thread (raft/snapshot_writer.py), driven as pysyncobj drives
it: ``serialize`` at a log compaction, ``checkSerializing`` every tick, ``deserialize`` when a
snapshot is loaded. Files in a temporary directory; the writer thread is real."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import SERIALIZER_STATE

import raftlog.raft.quorum  # noqa: F401  (installs the guards: the serializer is ours)
from raftlog.raft.snapshot_writer import BackgroundSerializer, SnapshotHooks, WriteJob

_DATA = (None, ("last", 7, 2), ("prev", 6, 2), {"127.0.0.1:7001"})


class _Hooks:
    """Records what the serializer reports; its jobs write ``payload`` once ``release`` is set."""

    def __init__(self, payload: bytes = b"new dump", *, fail: bool = False) -> None:
        self.payload = payload
        self.fail = fail
        self.release = threading.Event()
        self.captured: list[Any] = []
        self.events: list[str] = []
        self.capture_thread: threading.Thread | None = None
        self.write_thread: threading.Thread | None = None

    def capture(self, data: Any) -> WriteJob:
        self.captured.append(data)
        self.capture_thread = threading.current_thread()

        def write(path: str) -> None:
            self.write_thread = threading.current_thread()
            assert self.release.wait(5.0)
            if self.fail:
                raise OSError("disk full")
            Path(path).write_bytes(self.payload)

        return write

    def hooks(self) -> SnapshotHooks:
        return SnapshotHooks(
            capture=self.capture,
            published=lambda: self.events.append("published"),
            failed=lambda exc: self.events.append(f"failed: {exc}"),
            discarded=lambda: self.events.append("discarded"),
        )


def _serializer(path: Path, hooks: _Hooks) -> BackgroundSerializer:
    return BackgroundSerializer(str(path), 65536, False, hooks.hooks(), lambda p: (), None)


def _settle(serializer: BackgroundSerializer, timeout_s: float = 5.0) -> tuple[int, int | None]:
    deadline = time.monotonic() + timeout_s
    while (state := serializer.checkSerializing())[0] == SERIALIZER_STATE.SERIALIZING:
        assert time.monotonic() < deadline, "the writer never finished"
        time.sleep(0.005)
    return state


def test_pysyncobj_builds_our_serializer() -> None:
    import pysyncobj.syncobj

    assert pysyncobj.syncobj.Serializer is BackgroundSerializer


def test_the_dump_is_written_on_another_thread_and_published_whole_at_a_later_check(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "raft-snapshot.bin"
    dump.write_bytes(b"old dump")
    hooks = _Hooks()
    serializer = _serializer(dump, hooks)
    assert serializer.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    serializer.serialize(_DATA, 7)
    assert hooks.capture_thread is threading.current_thread()  # captured on "the Raft thread"
    assert hooks.captured == [_DATA[1:]]
    # while the writer works: pysyncobj is told to wait, the old dump stays whole
    for _ in range(3):
        assert serializer.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 7)
    serializer.serialize(_DATA, 9)  # a second compaction meanwhile is not started
    assert len(hooks.captured) == 1
    assert dump.read_bytes() == b"old dump"
    hooks.release.set()
    assert _settle(serializer) == (SERIALIZER_STATE.SUCCESS, 7)
    assert hooks.write_thread is not None and hooks.write_thread is not threading.current_thread()
    assert dump.read_bytes() == b"new dump"
    assert not (tmp_path / "raft-snapshot.bin.tmp").exists()
    assert hooks.events == ["published"]
    assert serializer.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def test_a_write_overtaken_by_an_installed_snapshot_is_discarded(tmp_path: Path) -> None:
    dump = tmp_path / "raft-snapshot.bin"
    dump.write_bytes(b"old dump")
    hooks = _Hooks(b"our older state")
    serializer = _serializer(dump, hooks)
    serializer.serialize(_DATA, 7)
    dump.write_bytes(b"installed from the leader")  # pysyncobj renames the received file ...
    serializer.deserialize()  # ... and loads it
    hooks.release.set()
    assert _settle(serializer) == (SERIALIZER_STATE.FAILED, 7)  # the journal is not cut
    assert dump.read_bytes() == b"installed from the leader"
    assert not (tmp_path / "raft-snapshot.bin.tmp").exists()
    assert hooks.events == ["discarded"]


def test_a_failed_write_leaves_the_old_dump_and_is_reported(tmp_path: Path) -> None:
    dump = tmp_path / "raft-snapshot.bin"
    dump.write_bytes(b"old dump")
    hooks = _Hooks(fail=True)
    serializer = _serializer(dump, hooks)
    serializer.serialize(_DATA, 7)
    hooks.release.set()
    assert _settle(serializer) == (SERIALIZER_STATE.FAILED, 7)
    assert dump.read_bytes() == b"old dump"
    assert hooks.events == ["failed: disk full"]
    # the next compaction starts afresh
    hooks.fail = False
    serializer.serialize(_DATA, 8)
    assert _settle(serializer) == (SERIALIZER_STATE.SUCCESS, 8)
    assert dump.read_bytes() == b"new dump"


def test_a_capture_that_raises_fails_at_the_next_check(tmp_path: Path) -> None:
    hooks = _Hooks()

    def broken(data: Any) -> WriteJob:
        raise RuntimeError("no capture")

    serializer = BackgroundSerializer(
        str(tmp_path / "dump"),
        65536,
        False,
        SnapshotHooks(broken, lambda: None, lambda exc: hooks.events.append(repr(exc)), print),
        lambda p: (),
        None,
    )
    serializer.serialize(_DATA, 3)
    assert serializer.checkSerializing() == (SERIALIZER_STATE.FAILED, 3)
    assert hooks.events == ["RuntimeError('no capture')"]


def test_transmissions_restart_from_the_new_dump(tmp_path: Path) -> None:
    dump = tmp_path / "raft-snapshot.bin"
    dump.write_bytes(b"o" * 100)
    hooks = _Hooks(b"n" * 100)
    serializer = BackgroundSerializer(str(dump), 40, False, hooks.hooks(), lambda p: (), None)
    first = serializer.getTransmissionData("follower")
    assert first == (b"o" * 40, True, False)
    serializer.serialize(_DATA, 7)
    # the follower's transmission goes on from the file it opened while the write runs
    assert serializer.getTransmissionData("follower") == (b"o" * 40, False, False)
    hooks.release.set()
    assert _settle(serializer)[0] == SERIALIZER_STATE.SUCCESS
    assert serializer.getTransmissionData("follower") == (b"n" * 40, True, False)


@pytest.mark.parametrize("written", [True, False])
def test_join_waits_for_the_writer(tmp_path: Path, written: bool) -> None:
    hooks = _Hooks()
    serializer = _serializer(tmp_path / "dump", hooks)
    assert serializer.join(0.01)  # nothing to wait for
    serializer.serialize(_DATA, 7)
    if written:
        hooks.release.set()
        assert serializer.join(5.0)
    else:
        assert not serializer.join(0.05)
        hooks.release.set()
        assert serializer.join(5.0)
