"""What a group coordinator loads from the offsets topic does not change when the topic is
compacted: the cleaner keeps only the latest record of each key (and, past
``delete.retention.ms``, drops tombstones), so the load must depend on nothing else. A model of
the coordinator's writes — commits, generation records, memberships, deletions — is replayed
whole, compacted, and compacted without tombstones; the three loads agree, and agree with the
model."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.cluster.coordinator import (
    GroupCoordinator,
    expired_offsets,
    generation_key,
    group_keys,
    membership_key,
    offset_key,
)
from raftlog.cluster.group import Group

Record = tuple[bytes, bytes | None, int]  # key, value, timestamp (its position when written)
GROUPS = ("a", "b", "c")

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("commit"), st.sampled_from(GROUPS), st.integers(0, 2), st.integers(0, 99)
        ),
        st.tuples(st.just("round"), st.sampled_from(GROUPS)),
        st.tuples(st.just("members"), st.sampled_from(GROUPS), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.sampled_from(GROUPS)),
    ),
    max_size=40,
)


def _membership(group_id: str, generation: int, count: int) -> list[Any]:
    group = Group(group_id, initial_delay_ms=0, unique=lambda: "unused")
    group.generation = generation
    snapshot = group.snapshot()
    snapshot[1], snapshot[2] = ("range", "m0") if count else ("", "")
    snapshot[3] = [
        [f"m{i}", "", "client", 10_000, 30_000, [["range", b""]], b"assigned"] for i in range(count)
    ]
    return snapshot


WRITTEN_MS = 1_700_000_000_000  # the wall clock of the coordinator that wrote the log (2023)


def _write(
    operations: list[tuple[Any, ...]], base_ms: int = WRITTEN_MS
) -> tuple[list[Record], dict[str, Any]]:
    """The records the coordinator would write for ``operations`` (it writes a generation
    record when a round with members completes, a membership at each completed sync or when the
    group empties, tombstones of all its keys on a delete of an empty group), and the model:
    per live group, its offsets and members."""
    log: list[Record] = []

    def write(key: bytes, value: Any) -> None:
        log.append((key, None if value is None else cbor2.dumps(value), base_ms + len(log)))

    generation = dict.fromkeys(GROUPS, 0)
    offsets: dict[str, dict[tuple[str, int], int]] = {g: {} for g in GROUPS}
    members = dict.fromkeys(GROUPS, 0)
    for op in operations:
        g = op[1]
        if op[0] == "commit":
            offsets[g][("t", op[2])] = op[3]
            write(offset_key(g, "t", op[2]), [op[3], "", base_ms + len(log)])
        elif op[0] == "round":
            generation[g] += 1
            write(generation_key(g), [generation[g]])
        elif op[0] == "members":
            generation[g] += 1
            members[g] = op[2]
            write(membership_key(g), _membership(g, generation[g], op[2]))
        elif op[0] == "delete" and members[g] == 0:  # only an empty group may be deleted
            for key in group_keys(g, offsets[g]):
                write(key, None)
            generation[g], offsets[g] = 0, {}
    model = {
        g: (offsets[g], members[g]) for g in GROUPS if offsets[g] or members[g]
    }  # a group holding nothing is not a group (Kafka's Dead)
    return log, model


def _compact(log: list[Record], *, drop_tombstones: bool) -> list[Record]:
    latest = {key: i for i, (key, _, _) in enumerate(log)}
    return [
        record
        for i, record in enumerate(log)
        if latest[record[0]] == i and not (drop_tombstones and record[1] is None)
    ]


LOAD_MS = 1_800_000_000_000  # the loading coordinator's wall clock: after every stored time


def _load(log: list[Record]) -> dict[str, Any]:
    coordinator = GroupCoordinator(
        None,  # type: ignore[arg-type]
        lambda: 7,  # monotonic: this process's own, unrelated to what the log stores
        None,  # type: ignore[arg-type]
        wall_ms=lambda: LOAD_MS,
    )
    loaded = coordinator.load_records(0, log)
    return {
        g: (
            {tp: offset for tp, (offset, _) in entry.offsets.items()},
            sorted(entry.group.members),
            entry.group.generation,
            entry.group.state.value,
            entry.commit_ms,
            entry.empty_since_ms,
        )
        for g, entry in loaded.groups.items()
    }


@settings(max_examples=300, deadline=None)
@given(ops)
def test_a_compacted_offsets_partition_loads_the_same_groups(
    operations: list[tuple[Any, ...]],
) -> None:
    log, model = _write(operations)
    whole = _load(log)
    assert _load(_compact(log, drop_tombstones=False)) == whole
    assert _load(_compact(log, drop_tombstones=True)) == whole
    assert {g: (o, len(m)) for g, (o, m, *_) in whole.items()} == model


def test_a_membership_survives_a_later_generation_record_when_compacted() -> None:
    """The case the separate membership key exists for: a completed sync, then a round that
    started (a generation record). Compaction keeps both; the members are loaded and asked to
    rejoin with their ids (the round in progress), none forgotten."""
    log, _ = _write([("members", "a", 2), ("round", "a")])
    loaded = _load(_compact(log, drop_tombstones=True))
    assert loaded["a"][1] == ["m0", "m1"] and loaded["a"][2] == 2


def test_an_older_log_with_memberships_under_the_generation_key_still_loads() -> None:
    snapshot = _membership("a", 3, 1)
    log = [(generation_key("a"), cbor2.dumps(snapshot), 0)]
    assert _load(log)["a"][1:4] == (["m0"], 3, "Stable")


def test_an_empty_group_counts_its_emptiness_from_its_stored_membership() -> None:
    """A new coordinator learns when the group became empty from the empty membership's
    timestamp, and when each offset was committed from the commit: retention goes on counting
    across a coordinator move instead of starting again."""
    log, _ = _write([("commit", "a", 0, 5), ("members", "a", 2), ("members", "a", 0)])
    _, _, _, state, commit_ms, empty_since = _load(log)["a"]
    assert (state, commit_ms, empty_since) == ("Empty", {("t", 0): WRITTEN_MS}, WRITTEN_MS + 2)
    log, _ = _write([("commit", "b", 1, 5)])  # never had members
    assert _load(log)["b"][5] == LOAD_MS  # empty as far as anyone knows: since the load


DAY = 24 * 3600 * 1000


def _expired(commits: dict[int, int], **kw: Any) -> set[int]:
    found = expired_offsets(
        {("t", p): t for p, t in commits.items()}, now_ms=10 * DAY, retention_ms=7 * DAY, **kw
    )
    return {p for _, p in found}


def test_offsets_expire_as_kafka_expires_them() -> None:
    old, recent = {0: 0, 1: 0}, {0: 0, 1: 9 * DAY}
    # a group with members keeps everything, however old
    assert _expired(old, had_members=True, has_members=True, empty_since_ms=None) == set()
    # an empty group: nothing until it has been empty for the retention, then what is old
    assert _expired(old, had_members=True, has_members=False, empty_since_ms=4 * DAY) == set()
    assert _expired(old, had_members=True, has_members=False, empty_since_ms=3 * DAY) == {0, 1}
    assert _expired(recent, had_members=True, has_members=False, empty_since_ms=0) == {0}
    # a group that never had members (commits only): each offset from its own commit
    assert _expired(recent, had_members=False, has_members=False, empty_since_ms=0) == {0}


def test_stored_times_that_are_not_wall_clock_count_from_the_load() -> None:
    """Records written before the coordinator stored wall-clock time carry an uptime: taken as
    is, every such offset would expire at the first check after an upgrade."""
    log, _ = _write([("commit", "a", 0, 5), ("members", "a", 0)], base_ms=0)  # uptimes
    _, _, _, _, commit_ms, empty_since = _load(log)["a"]
    assert (commit_ms, empty_since) == ({("t", 0): LOAD_MS}, LOAD_MS)
