"""lazyfs against the real kernel: a FUSE mount in tmp_path, crashed and remounted.

Each test writes through the mount, cuts the power (``LazyMount.crash``: the daemon SIGKILLed, the
dead mount aborted, ``live/`` rebuilt from ``durable/``), mounts again and looks. Every test has a
half that must *lose* something (an unsynced write, an unsynced name), so a lazyfs that kept
everything would fail here. Writers that map files (LMDB) or hold them open run in a child
process that is SIGKILLed before the crash, as the broker is: touching a mapping of an aborted
FUSE mount would SIGBUS the test process.

Needs root, /dev/fuse, libfuse 3 and mfusepy; skipped with the reason otherwise. About 10 s.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftlog.chaos.diskfault import Damage, DamageKind, apply_damage
from raftlog.chaos.lazyfs import fuse_unavailable
from raftlog.chaos.lazymount import LazyMount, find_mount
from raftlog.chaos.lazystate import durable_path, read_manifest
from raftlog.segments.clock import SYSTEM_CLOCK

UNAVAILABLE = fuse_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyMount]:
    mount = LazyMount(tmp_path / "backing", tmp_path / "mnt", host_fsync=False)
    mount.mount()
    try:
        yield mount
    finally:
        mount.close()
        assert find_mount(mount.mountpoint) is None, "the mount outlived the test"


def power_cycle(mount: LazyMount) -> None:
    mount.crash()
    assert find_mount(mount.mountpoint) is None
    mount.mount()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fdatasync(f.fileno())


def test_an_fsynced_write_survives_and_later_writes_are_lost(lazy: LazyMount) -> None:
    root = lazy.mountpoint
    write(root / "a.log", b"synced", sync=True)
    fsync_path(root)  # the name too
    write(root / "a.log", b"+unsynced", sync=False, mode="ab")
    write(root / "b.log", b"never synced", sync=False)  # a new name, never made durable
    assert (root / "a.log").read_bytes() == b"synced+unsynced"  # before the crash: all there
    power_cycle(lazy)
    assert (root / "a.log").read_bytes() == b"synced"
    assert not (root / "b.log").exists()


def test_a_write_survives_when_only_a_later_fsync_of_another_fd_covers_it(
    lazy: LazyMount,
) -> None:
    path = lazy.mountpoint / "c.log"
    write(path, b"", sync=True)
    fsync_path(lazy.mountpoint)
    write(path, b"written through one fd", sync=False)
    fsync_path(path)  # fsync is per file, not per descriptor
    power_cycle(lazy)
    assert path.read_bytes() == b"written through one fd"


def test_a_truncate_after_the_fsync_is_undone(lazy: LazyMount) -> None:
    path = lazy.mountpoint / "t.log"
    write(path, b"0123456789", sync=True)
    fsync_path(lazy.mountpoint)
    os.truncate(path, 3)
    with open(path, "r+b") as f:  # and a rewrite past the new end
        f.seek(5)
        f.write(b"XY")
    assert path.read_bytes() == b"012\0\0XY"
    power_cycle(lazy)
    assert path.read_bytes() == b"0123456789"
    # and a truncate that *was* synced stays
    os.truncate(path, 4)
    fsync_path(path)
    power_cycle(lazy)
    assert path.read_bytes() == b"0123"


def test_a_new_file_in_an_unsynced_directory_vanishes(lazy: LazyMount) -> None:
    root = lazy.mountpoint
    (root / "p-0").mkdir()
    write(root / "p-0" / "seg.log", b"data", sync=True)  # data synced, names not
    power_cycle(lazy)
    assert not (root / "p-0").exists()

    (root / "p-1").mkdir()
    fsync_path(root)  # p-1 is durable, its entries are not
    write(root / "p-1" / "seg.log", b"data", sync=True)
    power_cycle(lazy)
    assert (root / "p-1").is_dir() and os.listdir(root / "p-1") == []

    write(root / "p-1" / "seg.log", b"data", sync=False)
    fsync_path(root / "p-1")  # the name is durable, the data is not: an empty file
    power_cycle(lazy)
    assert (root / "p-1" / "seg.log").read_bytes() == b""


def test_rename_and_unlink_are_durable_only_with_their_directory(lazy: LazyMount) -> None:
    root = lazy.mountpoint
    write(root / "meta.tmp", b"v1", sync=True)
    fsync_path(root)
    os.rename(root / "meta.tmp", root / "meta")
    power_cycle(lazy)
    assert sorted(os.listdir(root)) == ["meta.tmp"]  # the rename was not made durable

    os.rename(root / "meta.tmp", root / "meta")
    fsync_path(root)
    power_cycle(lazy)
    assert sorted(os.listdir(root)) == ["meta"] and (root / "meta").read_bytes() == b"v1"

    os.unlink(root / "meta")
    power_cycle(lazy)
    assert (root / "meta").read_bytes() == b"v1"  # the unlink was not made durable
    os.unlink(root / "meta")
    fsync_path(root)
    power_cycle(lazy)
    assert os.listdir(root) == []
    manifest = read_manifest(lazy.backing)
    assert manifest is not None and manifest.dirs[0] == {}
    assert list((lazy.backing / "durable" / "inodes").iterdir()) == []  # nothing left behind


def test_disk_damage_to_the_durable_copy_outlives_a_power_loss(lazy: LazyMount) -> None:
    (lazy.mountpoint / "p-0").mkdir()
    seg = lazy.mountpoint / "p-0" / "seg.log"
    write(seg, bytes(64), sync=True)
    fsync_path(lazy.mountpoint / "p-0")
    fsync_path(lazy.mountpoint)
    write(seg, b"tail", sync=False, mode="ab")
    flip = Damage("p-0/seg.log", DamageKind.BITFLIP, 10, 68, bit=0)
    assert apply_damage(seg, flip)  # what the broker sees now
    durable = durable_path(lazy.backing, "p-0/seg.log")
    assert durable is not None and apply_damage(durable, flip)  # what the disk keeps
    assert seg.read_bytes()[10] == 1
    power_cycle(lazy)
    assert seg.read_bytes() == bytes(10) + b"\x01" + bytes(53)  # damaged, tail dropped


def test_mmap_writes_count_only_after_msync(lazy: LazyMount) -> None:
    path = lazy.mountpoint / "journal"
    write(path, b"\0" * 8192, sync=True)
    fsync_path(lazy.mountpoint)
    child = textwrap.dedent(
        f"""
        import mmap, os, sys
        fd = os.open({str(path)!r}, os.O_RDWR)
        m = mmap.mmap(fd, 8192)
        m[0:6] = b"synced"
        m.flush()  # msync
        m[4096:4104] = b"unsynced"
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    power_cycle(lazy)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[0:6] == b"synced"
        assert m[4096:4104] == b"\0" * 8


def run_child_then_kill(source: str, timeout_s: float = 30.0) -> str:
    """Run ``source`` in a child python; it prints a line when done; SIGKILL it then."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line:
            _, err = process.communicate(timeout=timeout_s)
            raise AssertionError(f"child failed: {err.decode()}")
        return line
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout_s)


LMDB_CHILD = """
import os, sys, lmdb
path = {path!r}
os.makedirs(path, exist_ok=True)
env = lmdb.open(path, sync={sync}, map_size=1 << 24)
for parent in (path, os.path.dirname(path)):  # what a careful program does for new names
    fd = os.open(parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
for i in range(50):
    with env.begin(write=True) as txn:
        txn.put(b"k%03d" % i, b"v%d" % i)
print("committed", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("sync", [True, False])
def test_lmdb_keeps_committed_transactions_only_when_it_syncs(lazy: LazyMount, sync: bool) -> None:
    import lmdb

    path = str(lazy.mountpoint / "state")
    assert run_child_then_kill(LMDB_CHILD.format(path=path, sync=sync)) == "committed"
    power_cycle(lazy)
    env = lmdb.open(path, map_size=1 << 24)
    try:
        with env.begin() as txn:
            found = sum(1 for _ in txn.cursor())
    finally:
        env.close()
    if sync:
        assert found == 50
    else:
        assert found < 50  # lmdb.open(sync=False) never fsynced a commit


LOG_CHILD = """
import os, sys
from raftlog.segments import Log, LogConfig
from raftlog.segments.batch import build_batch
from raftlog.segments.clock import SYSTEM_CLOCK
directory = {directory!r}
config = LogConfig(segment_bytes=4096, flush_messages={flush})
log = Log(directory, config, now_ms=0, clock=SYSTEM_CLOCK)
for d in (directory, os.path.dirname(directory)):  # segments/ does not fsync directories
    fd = os.open(d, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
for i in range(30):
    log.append(build_batch([b"value-%d" % i], timestamp_ms=0), leader_epoch=0, now_ms=0)
    if i % 10 == 9:  # rolled segments' names become durable too
        for d in (directory,):
            fd = os.open(d, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
print(log.log_end_offset, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("flush", [1, None])
def test_a_segment_log_recovers_after_a_power_loss(lazy: LazyMount, flush: int | None) -> None:
    from raftlog.segments import Log, LogConfig

    directory = str(lazy.mountpoint / "chaos-0")
    end = run_child_then_kill(LOG_CHILD.format(directory=directory, flush=flush))
    assert end == "30"
    power_cycle(lazy)
    log = Log(directory, LogConfig(segment_bytes=4096), now_ms=0, clock=SYSTEM_CLOCK)
    try:
        if flush == 1:  # every append was fsynced
            assert log.log_end_offset == 30
        else:  # fsync on roll only: the active segment's tail is gone
            assert log.log_end_offset < 30
        data = log.read(0, 1 << 20).data
        assert len(data) > 0 or log.log_end_offset == 0
    finally:
        log.close()
