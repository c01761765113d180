"""Brokers that are not voters: the store's command tail, the fetch route, the observer's apply
rules and the feed's answers (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from raftlog.cluster import metadata_observer
from raftlog.cluster.metadata_observer import FetchRoute, MetadataFeed, MetadataObserver
from raftlog.proto import controller_pb2
from raftlog.raft import store as store_module
from raftlog.raft.commands import RegisterBroker, encode_command
from raftlog.raft.quorum_types import NotLeaderError, Role
from raftlog.raft.store import MetadataStore


def register(broker_id: int, incarnation: int = 1) -> bytes:
    return encode_command(RegisterBroker(broker_id, f"127.0.0.1:{9000 + broker_id}", incarnation))


def voter_store(commands: int) -> MetadataStore:
    store = MetadataStore()
    for i in range(commands):
        store.apply(register(i % 5, i + 1))
    return store


def observer_for(store: MetadataStore) -> MetadataObserver:
    return MetadataObserver(9, store, {1: "127.0.0.1:1", 2: "127.0.0.1:2"}, lambda _: None)


def test_the_tail_gives_the_commands_after_a_version_in_order() -> None:
    voter = voter_store(10)
    assert voter.commands_after(10, 1 << 20) == (10, [])
    assert voter.commands_after(12, 1 << 20) == (10, [])  # asked beyond us: nothing newer
    version, commands = voter.commands_after(3, 1 << 20) or (0, [])
    assert version == 10 and commands == [register(i % 5, i + 1) for i in range(3, 10)]
    # bounded by bytes, but never empty
    _, one = voter.commands_after(3, 1) or (0, [])
    assert one == [register(3, 4)]


def test_the_tail_is_bounded_and_a_restore_restarts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "TAIL_COMMANDS_MAX", 4)
    voter = voter_store(10)
    assert voter.commands_after(5, 1 << 20) is None  # version 6 is gone: take a snapshot
    assert voter.commands_after(6, 1 << 20) == (10, [register(i % 5, i + 1) for i in range(6, 10)])
    restored = MetadataStore()
    restored.restore(voter.snapshot())
    assert restored.version == 10 and restored.commands_after(9, 1 << 20) is None
    restored.apply(register(1, 99))
    assert restored.commands_after(10, 1 << 20) == (11, [register(1, 99)])


def test_an_observer_applies_only_on_top_of_its_version_and_never_goes_back() -> None:
    voter = voter_store(6)
    observer = observer_for(MetadataStore())
    # a first answer from a voter that lost its early commands: the whole state
    snapshot = controller_pb2.FetchMetadataResponse(version=6, snapshot=voter.snapshot())
    assert observer.apply_answer(snapshot) == 0 and observer.store.version == 6
    voter.apply(register(2, 50))
    voter.apply(register(3, 51))
    _, commands = voter.commands_after(6, 1 << 20) or (0, [])
    stale = controller_pb2.FetchMetadataResponse(version=8, from_version=5, commands=commands)
    assert observer.apply_answer(stale) == 0 and observer.store.version == 6
    fresh = controller_pb2.FetchMetadataResponse(version=8, from_version=6, commands=commands)
    assert observer.apply_answer(fresh) == 2
    assert observer.store.snapshot() == voter.snapshot()  # the same state, byte for byte
    older = controller_pb2.FetchMetadataResponse(version=6, snapshot=voter_store(6).snapshot())
    assert observer.apply_answer(older) == 0 and observer.store.version == 8


def test_an_observer_never_leads_and_refuses_commands() -> None:
    observer = observer_for(MetadataStore())
    status = observer.status()
    assert status.role is Role.OBSERVER and not observer.is_leader()
    assert [v.node_id for v in status.voters] == [1, 2]
    errors: list[object] = []
    observer.submit_async(b"x", 1.0, lambda result, error: errors.append(error))
    assert isinstance(errors[0], NotLeaderError)
    observer.close()


def test_the_route_follows_the_named_leader_and_moves_on_from_silence() -> None:
    route = FetchRoute((1, 2, 3))
    assert route.target() == 1
    route.answered(1, 3)
    assert route.target() == 3
    route.failed(3)  # the leader went silent: the next voter
    assert route.leader is None and route.target() == 1
    route.answered(1, -1)  # it knows no leader (or lost its lease): ask the others in turn
    assert route.target() == 2
    route.answered(2, 7)  # not a voter: ignored as a leader
    assert route.leader is None


def test_the_feed_waits_for_a_newer_version_then_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metadata_observer, "FETCH_WAIT_MS", 2000)

    async def scenario() -> None:
        voter = voter_store(3)
        feed = MetadataFeed(voter)
        idle = await feed.answer(3, 50, leader_id=1)
        assert (idle.version, list(idle.commands)) == (3, [])
        waiting = asyncio.ensure_future(feed.answer(3, 2000, leader_id=1))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        voter.apply(register(4, 9))
        feed.changed()  # the broker calls this on the loop after each apply
        answer = await asyncio.wait_for(waiting, 1)
        assert (answer.from_version, list(answer.commands)) == (3, [register(4, 9)])

    asyncio.run(scenario())


def test_the_feed_sends_a_snapshot_when_the_commands_are_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "TAIL_COMMANDS_MAX", 2)

    async def scenario() -> None:
        voter = voter_store(5)
        feed = MetadataFeed(voter)
        answer = await feed.answer(0, 0, leader_id=2)
        assert answer.snapshot == voter.snapshot() and answer.leader_id == 2
        again = await feed.answer(1, 0, leader_id=2)
        assert again.snapshot == answer.snapshot and feed.snapshots_sent == 2  # reused

    asyncio.run(scenario())
