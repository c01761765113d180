"""lazyfs's model without FUSE: dirty ranges, the live and durable namespaces, and restore on a
backing directory built by hand (what a power loss leaves is decided here, so it is tested
here too, on any machine)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.chaos.diskfault import Damage, DamageKind, apply_damage, data_files
from raftlog.chaos.lazystate import (
    DIR,
    FILE,
    RANGES_MAX,
    ROOT_ID,
    DirtyRanges,
    Entry,
    Tree,
    durable_path,
    read_manifest,
    restore,
    snapshot,
    write_manifest,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 300)), max_size=60))
def test_dirty_ranges_cover_exactly_what_was_written(writes: list[tuple[int, int]]) -> None:
    ranges = DirtyRanges()
    covered: set[int] = set()
    for start, length in writes:
        ranges.add(start, start + length)
        covered |= set(range(start, start + length))
    spans = ranges.spans()
    assert all(s < e for s, e in spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # disjoint, apart
    union = {i for s, e in spans for i in range(s, e)}
    assert union == covered  # below RANGES_MAX spans nothing extra is copied
    assert bool(ranges) == bool(covered)


def test_dirty_ranges_are_bounded_and_then_over_approximate() -> None:
    ranges = DirtyRanges()
    for i in range(RANGES_MAX + 10):
        ranges.add(i * 10, i * 10 + 1)
    spans = ranges.spans()
    assert len(spans) <= RANGES_MAX
    assert spans[0][0] == 0 and spans[-1][1] == (RANGES_MAX + 9) * 10 + 1


def test_names_become_durable_only_with_their_directory() -> None:
    tree = Tree({}, {}, 1)
    d = tree.add("/p-0", DIR, 0o755)
    f = tree.add("/p-0/seg.log", FILE, 0o644)
    tree.sync_dir(d.ino)  # the file's name is durable in p-0, but p-0 is not durable in /
    assert tree.reachable()[0] == {ROOT_ID}
    tree.sync_dir(ROOT_ID)
    assert tree.reachable()[0] == {ROOT_ID, d.ino, f.ino}
    tree.rename("/p-0/seg.log", "/seg.log")
    tree.sync_dir(ROOT_ID)  # only the new parent: both names are durable (one file, two links)
    assert tree.durable[ROOT_ID]["seg.log"] == tree.durable[d.ino]["seg.log"] == f
    tree.remove("/seg.log")
    tree.sync_dir(ROOT_ID)
    tree.sync_dir(d.ino)
    tree.prune(set())
    assert f.ino not in tree.reachable()[0] | tree.reachable()[1]


def make_backing(tmp_path: Path) -> Path:
    """A backing dir by hand: / holds a/ (synced, with x synced and y named but never synced)
    and z (a name whose data is in inode 5); live/ has extra, unsynced things."""
    backing = tmp_path / "backing"
    (backing / "durable" / "inodes").mkdir(parents=True)
    (backing / "live" / "a").mkdir(parents=True)
    (backing / "live" / "a" / "x").write_bytes(b"x-synced+x-unsynced")
    (backing / "live" / "a" / "new").write_bytes(b"never named durably")
    (backing / "durable" / "inodes" / "3").write_bytes(b"x-synced")
    (backing / "durable" / "inodes" / "5").write_bytes(b"zz")
    (backing / "durable" / "inodes" / "9").write_bytes(b"garbage: no durable name")
    tree = Tree(
        {
            ROOT_ID: {
                "a": _entry(DIR, 1, 0o755),
                "z": _entry(FILE, 5, 0o600),
                "z-link": _entry(FILE, 5, 0o600),
            },
            1: {"x": _entry(FILE, 3, 0o644), "y": _entry(FILE, 4, 0o644)},
        },
        {},
        10,
    )
    write_manifest(backing, tree.manifest("mounted"), host_fsync=False)
    return backing


def _entry(kind: str, ino: int, mode: int) -> Entry:
    return Entry(kind, ino, mode)


def test_restore_rebuilds_live_from_the_durable_state(tmp_path: Path) -> None:
    backing = make_backing(tmp_path)
    stats = restore(backing, host_fsync=False)
    live = backing / "live"
    assert sorted(p.relative_to(live).as_posix() for p in live.rglob("*")) == [
        "a",
        "a/x",
        "a/y",
        "z",
        "z-link",
    ]
    assert (live / "a" / "x").read_bytes() == b"x-synced"
    assert (live / "a" / "y").read_bytes() == b""  # named, never fsynced: empty
    assert (live / "z").stat().st_ino == (live / "z-link").stat().st_ino  # a hard link
    assert (live / "z").stat().st_mode & 0o777 == 0o600
    assert not (backing / "durable" / "inodes" / "9").exists()  # unreferenced: deleted
    manifest = read_manifest(backing)
    assert manifest is not None and manifest.state == "clean"
    assert stats.live_bytes > stats.durable_bytes
    assert durable_path(backing, "a/x") == backing / "durable" / "inodes" / "3"
    assert durable_path(backing, "a/y") is None and durable_path(backing, "nope") is None


def test_snapshot_takes_everything_there_as_durable(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    (backing / "live" / "d").mkdir(parents=True)
    (backing / "live" / "d" / "f").write_bytes(b"hello")
    (backing / "live" / "g").symlink_to("d/f")
    (backing / "durable").mkdir()
    tree = snapshot(backing, host_fsync=False)
    write_manifest(backing, tree.manifest("clean"), host_fsync=False)
    (backing / "live" / "d" / "f").write_bytes(b"changed")
    restore(backing, host_fsync=False)
    assert (backing / "live" / "d" / "f").read_bytes() == b"hello"
    assert (backing / "live" / "g").readlink() == Path("d/f")
    raw = json.loads((backing / "durable" / "manifest.json").read_text())
    assert raw["format"] == "raftlog-lazyfs/1"


def test_damage_applies_to_a_file_and_to_its_shorter_durable_copy(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "chaos-0" / "00000000000000000000.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(bytes(100))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "data.mdb").write_bytes(b"lmdb")
    assert data_files(tmp_path) == [("logs/chaos-0/00000000000000000000.log", 100)]
    flip = Damage("logs/chaos-0/00000000000000000000.log", DamageKind.BITFLIP, 42, 100, bit=3)
    assert apply_damage(log, flip)
    assert log.read_bytes()[42] == 8 and sum(log.read_bytes()) == 8
    short = tmp_path / "copy"
    short.write_bytes(bytes(10))
    assert not apply_damage(short, flip)  # past its end: left alone
    cut = Damage(flip.path, DamageKind.TRUNCATE, 7, 100)
    assert apply_damage(log, cut) and log.stat().st_size == 7
    assert apply_damage(short, cut) and short.stat().st_size == 7
