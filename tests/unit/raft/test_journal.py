"""The fsync-ing Raft journal (raft/journal.py): format, group commit, damage, migration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from raftlog.raft import safe_pickle
from raftlog.raft.journal import JOURNAL_MAGIC, DurableJournal, encode_record


class SyncRecorder:
    """An injected fdatasync: does the real one, counts it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        os.fdatasync(fd)
        self.calls += 1


def entries(first: int, count: int, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(f"cmd{i}".encode(), i, term) for i in range(first, first + count)]


def test_worked_example_from_the_docstring(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    journal.add(b"\x00", 1, 0)
    journal.add(b"abc", 2, 3)
    journal.sync()
    blob = path.read_bytes()
    assert len(blob) == 60
    assert blob == JOURNAL_MAGIC + encode_record(b"\x00", 1, 0) + encode_record(b"abc", 2, 3)
    assert blob[8:12] == b"\x00\x00\x00\x11" and blob[33:37] == b"\x00\x00\x00\x13"


def test_group_commit_one_fdatasync_for_many_entries(tmp_path: Path) -> None:
    recorder = SyncRecorder()
    journal = DurableJournal(str(tmp_path / "j.bin"), fdatasync=recorder)
    for entry in entries(1, 500):
        journal.add(*entry)
    assert journal.durable_last_index == 0 and journal.dirty  # nothing durable before sync
    assert journal.sync() is True
    assert recorder.calls == 1 and journal.durable_last_index == 500
    assert journal.sync() is False and recorder.calls == 1  # nothing new: no IO
    reopened = DurableJournal(str(tmp_path / "j.bin"))
    assert list(reopened[:]) == entries(1, 500) and reopened.damage is None


def test_cut_then_append_rewrites_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, 10):
        journal.add(*entry)
    journal.sync()
    cuts = journal.cuts
    journal.deleteEntriesFrom(5)  # entries 6.. go (a follower's divergent tail)
    assert journal.cuts == cuts + 1 and journal.durable_last_index == 5
    journal.add(b"new6", 6, 2)
    journal.sync()
    reopened = DurableJournal(str(path))
    assert list(reopened[:]) == [*entries(1, 5), (b"new6", 6, 2)]
    assert reopened.damage is None


def test_prefix_removal_and_clear_are_atomic_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, 10):
        journal.add(*entry)
    journal.sync()
    journal.deleteEntriesTo(7)  # compaction: a snapshot covers 1..7
    assert not (tmp_path / "j.bin.tmp").exists()
    assert [e[1] for e in DurableJournal(str(path))[:]] == [8, 9, 10]
    journal.clear()
    journal.add(b"s1", 20, 3)
    journal.add(b"s2", 21, 3)
    assert journal.durable_last_index == 0
    journal.sync()
    assert list(DurableJournal(str(path))[:]) == [(b"s1", 20, 3), (b"s2", 21, 3)]


def test_torn_tail_is_cut_and_not_suspect(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, 5):
        journal.add(*entry)
    journal.sync()
    journal._destroy()
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # the last record lost its last 3 bytes
    reopened = DurableJournal(str(path))
    assert [e[1] for e in reopened[:]] == [1, 2, 3, 4]
    assert reopened.damage is not None and not reopened.damage.suspect
    assert reopened.damage.last_good_index == 4
    assert path.stat().st_size == reopened.damage.valid_bytes  # cut on disk too
    path.write_bytes(path.read_bytes() + b"\0" * 4096)  # zero-filled blocks: also torn
    again = DurableJournal(str(path))
    assert again.damage is not None and not again.damage.suspect and len(again) == 4


def test_flipped_bit_is_cut_there_and_suspect(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, 5):
        journal.add(*entry)
    journal.sync()
    journal._destroy()
    blob = bytearray(path.read_bytes())
    third = len(JOURNAL_MAGIC) + 2 * len(encode_record(b"cmd1", 1, 1))
    blob[third + 20] ^= 0x01  # inside the third record's body
    path.write_bytes(bytes(blob))
    reopened = DurableJournal(str(path))
    assert [e[1] for e in reopened[:]] == [1, 2]
    assert reopened.damage is not None and reopened.damage.suspect
    assert reopened.damage.reason == "record checksum mismatch"
    assert reopened.damage.bytes_cut == len(blob) - third


def test_garbage_header_loses_everything_but_starts(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    path.write_bytes(b"not a journal at all, just noise")
    journal = DurableJournal(str(path))
    assert len(journal) == 0 and journal.damage is not None and journal.damage.suspect
    assert path.read_bytes() == JOURNAL_MAGIC


def test_pysyncobj_journal_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    old = FileJournal(str(path))
    for entry in entries(1, 20, term=2):
        old.add(*entry)
    old._destroy()
    journal = DurableJournal(str(path))
    assert list(journal[:]) == entries(1, 20, term=2) and journal.damage is None
    assert path.read_bytes().startswith(JOURNAL_MAGIC)


def test_term_and_vote_are_durable_at_once_commit_index_later(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    meta = tmp_path / "j.bin.meta"
    journal = DurableJournal(str(path))
    journal.setCurrentTerm(7, "127.0.0.1:7002")
    assert safe_pickle.loads(meta.read_bytes()) == {
        "currentTerm": 7,
        "votedForNodeId": "127.0.0.1:7002",
    }
    journal.add(b"a", 1, 7)
    journal.setRaftCommitIndex(1)
    assert "raftCommitIndex" not in safe_pickle.loads(meta.read_bytes())
    journal.onOneSecondTimer()
    assert safe_pickle.loads(meta.read_bytes())["raftCommitIndex"] == 1
    reopened = DurableJournal(str(path))
    assert reopened.getCurrentTerm() == 7 and reopened.getVotedForNodeId() == "127.0.0.1:7002"


def test_commit_index_never_beyond_the_log_held(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, 3):
        journal.add(*entry)
    journal.setRaftCommitIndex(9)  # unsynced entries 4..9 were lost with the power
    journal._destroy()
    assert DurableJournal(str(path)).getRaftCommitIndex() == 3


@pytest.mark.parametrize("count", [1, 3])
def test_destroy_syncs(tmp_path: Path, count: int) -> None:
    path = tmp_path / "j.bin"
    journal = DurableJournal(str(path))
    for entry in entries(1, count):
        journal.add(*entry)
    journal._destroy()
    assert len(DurableJournal(str(path))) == count
