"""The controller shell in-process: ``ActiveController`` over a real ``MetadataStore`` and a quorum
that applies at once, its clock passed in. It turns heartbeats and silence into committed fence
and unfence decisions, elects leaders when a leader is fenced, fences a broker at once when the
probe finds its port refusing, and steps down when the quorum's leadership moves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from raftlog.cluster.controller_service import ActiveController, ControllerError, TopicRequest
from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import (
    CancelVoter,
    CreateTopic,
    FenceBrokerPartitions,
    RegisterBroker,
    UnfenceBroker,
    decode_command,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig
from raftlog.raft.metadata_records import NO_LEADER
from raftlog.raft.store import MetadataStore

Callback = Callable[[bytes | None, Any], None]
CONFIG = ControllerConfig()
SESSION_MS = CONFIG.session_timeout_ms


class Quorum:
    """Leader while ``leading``; applies each command to the store at once (one voter)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.leading = True
        self.commands: list[bytes] = []

    def is_leader(self) -> bool:
        return self.leading

    def leader_id(self) -> int | None:
        return 1 if self.leading else 2

    def submit_async(self, command: bytes, timeout_s: float, callback: Callback) -> None:
        self.commands.append(command)
        callback(self.store.apply(command), None)


class Shell:
    def __init__(self, brokers: int = 3, probe: Any = None) -> None:
        self.now = 0
        self.store = MetadataStore()
        for b in range(1, brokers + 1):
            self.store.apply(encode_command(RegisterBroker(b, f"127.0.0.1:{9000 + b}", 100 + b)))
            self.store.apply(encode_command(UnfenceBroker(b, 100 + b)))
        self.quorum = Quorum(self.store)
        self.controller = ActiveController(
            1, self.quorum, self.store, CONFIG, lambda: self.now, probe=probe, fd_limit=1 << 20
        )

    def fenced(self) -> set[int]:
        with self.store.read() as state:
            return {b.broker_id for b in state.brokers.values() if b.fenced}

    def leader(self, topic: str = "t") -> int:
        with self.store.read() as state:
            return state.partitions[(topic, 0)].leader

    async def run(self, until_ms: int, silent: frozenset[int] = frozenset()) -> None:
        """Every broker but ``silent`` heartbeats each interval; the shell ticks every 50 ms."""
        while self.now < until_ms:
            self.now += 50
            if self.now % CONFIG.heartbeat_interval_ms == 0:
                with self.store.read() as state:
                    version = state.version
                    brokers = [(b.broker_id, b.incarnation) for b in state.brokers.values()]
                for broker, incarnation in brokers:
                    if broker not in silent:
                        self.controller.heartbeat(broker, incarnation, version)
            await self.controller.tick()
            await asyncio.sleep(0)  # let the spawned decisions run
            await asyncio.sleep(0)


def test_a_silent_broker_is_fenced_after_a_session_and_its_partitions_move() -> None:
    shell = Shell()

    async def scenario() -> None:
        await shell.run(500)
        created = await shell.controller.create_topic(
            TopicRequest("t", 1, 3, {}), validate_only=False
        )
        assert "error" not in created
        leader = shell.leader()
        await shell.run(400 + SESSION_MS - 100, silent=frozenset({leader}))  # last heard at 400
        assert shell.fenced() == set()  # not yet: within its session
        await shell.run(500 + SESSION_MS + 500, silent=frozenset({leader}))
        assert shell.fenced() == {leader}
        assert shell.leader() not in (leader, -1)  # a live ISR member leads now
        # it comes back (same incarnation) and heartbeats: unfenced again
        await shell.run(500 + 2 * SESSION_MS + 1000)
        assert shell.fenced() == set()

    asyncio.run(scenario())


def test_a_refused_probe_fences_a_late_broker_before_its_session_ends() -> None:
    probed: list[str] = []

    async def probe(address: str) -> bool:
        probed.append(address)
        return False  # connection refused: the process is gone

    shell = Shell(probe=probe)

    async def scenario() -> None:
        await shell.run(500)
        await shell.run(500 + 3 * CONFIG.heartbeat_interval_ms + 200, silent=frozenset({2}))
        assert probed == ["127.0.0.1:9002"]
        await shell.run(shell.now + 200, silent=frozenset({2}))
        assert shell.fenced() == {2}
        assert shell.now < 500 + SESSION_MS  # well before the session would have ended

    asyncio.run(scenario())


def test_it_steps_down_when_the_quorum_leadership_moves() -> None:
    shell = Shell()

    async def scenario() -> None:
        await shell.run(500)
        shell.quorum.leading = False
        submitted = len(shell.quorum.commands)
        await shell.run(500 + 2 * SESSION_MS, silent=frozenset({1, 2, 3}))
        assert len(shell.quorum.commands) == submitted  # a follower decides nothing
        assert shell.fenced() == set()
        with pytest.raises(ControllerError) as refused:
            shell.controller.heartbeat(1, 101, 0)
        assert refused.value.code is ErrorCode.NOT_CONTROLLER

    asyncio.run(scenario())


def test_an_offsets_topic_made_before_compaction_is_compacted_once_per_term() -> None:
    async def scenario() -> None:
        shell = Shell()
        created = await shell.controller.create_topic(
            TopicRequest("__consumer_offsets", 2, 3, {"retention.ms": "1000"}), validate_only=False
        )
        assert "error" not in created
        await shell.run(100)
        with shell.store.read() as state:
            configs = dict(state.topics["__consumer_offsets"].configs)
        assert configs == {"cleanup.policy": "compact", "retention.ms": "1000"}
        commands = len(shell.quorum.commands)
        await shell.run(300)  # checked once per term: nothing more
        assert len(shell.quorum.commands) == commands

    asyncio.run(scenario())


def test_a_new_controller_cancels_a_join_whose_membership_entry_never_went_out() -> None:
    from raftlog.raft.commands import PrepareVoter
    from raftlog.raft.quorum_types import VoterStatus

    async def scenario() -> None:
        shell = Shell()
        members = [VoterStatus(1, "a:1", None, None), VoterStatus(2, "b:1", None, None)]
        shell.quorum.status = lambda: type("S", (), {"voters": members})()  # type: ignore[attr-defined]
        shell.store.apply(encode_command(PrepareVoter(3, "c:1", "c:2")))
        members.append(VoterStatus(3, "c:1", None, None))  # the entry is in the Raft log: kept
        await shell.run(100)
        with shell.store.read() as state:
            assert state.joining_voter is not None
        shell.quorum.leading = False  # a new term …
        await shell.controller.tick()
        shell.quorum.leading = True
        members.pop()  # … whose leader's log holds no membership entry for 3
        await shell.run(300)
        with shell.store.read() as state:
            assert state.joining_voter is None

    asyncio.run(scenario())


def test_a_new_controller_keeps_the_join_of_its_own_add_voter() -> None:
    # add-voter reaching a controller just elected: the core is made on first use by the add
    # itself, whose PrepareVoter can be applied before this term's first tick. That tick must
    # not take it for an earlier term's join and cancel it (the joiner then never listened, and
    # the add timed out after its whole timeout).
    from raftlog.raft.commands import PrepareVoter
    from raftlog.raft.quorum_types import VoterStatus

    async def scenario() -> None:
        shell = Shell()
        members = [VoterStatus(1, "a:1", None, None), VoterStatus(2, "b:1", None, None)]
        shell.quorum.status = lambda: type("S", (), {"voters": members})()  # type: ignore[attr-defined]
        shell.controller.active()  # made by the add-voter's first call, before any tick
        shell.controller.joins_in_flight.add(3)
        await shell.controller.submit(PrepareVoter(3, "c:1", "c:2"))
        await shell.run(300)
        with shell.store.read() as state:
            assert state.joining_voter is not None  # still joining: the add goes on
        assert not any(isinstance(decode_command(c), CancelVoter) for c in shell.quorum.commands)

    asyncio.run(scenario())


def test_a_restarted_broker_with_many_roles_loses_them_in_bounded_steps_before_registering() -> (
    None
):
    # broker 2 restarts before its old incarnation was fenced, in the ISR of 2,500 partitions
    # (leading a third): the old roles go in FenceBrokerPartitions chunks of at most 1000, then
    # the RegisterBroker of the new incarnation finds none left (no long apply on the Raft thread)
    shell = Shell()
    assignment = tuple(tuple(1 + (p + i) % 3 for i in range(3)) for p in range(2500))
    shell.store.apply(encode_command(CreateTopic("big", assignment)))
    with shell.store.read() as state:
        assert len(state.roles_of(2)) == 2500 and len(state.led_by(2)) > 800

    async def scenario() -> None:
        epoch = await shell.controller.register(2, 999, "127.0.0.1:9999", None)
        assert epoch > 0

    shell.quorum.commands.clear()
    asyncio.run(scenario())
    sent = [decode_command(c) for c in shell.quorum.commands]
    chunks = [c for c in sent if isinstance(c, FenceBrokerPartitions)]
    assert [len(c.partitions) for c in chunks] == [1000, 1000, 500]
    assert all(c.incarnation == 102 for c in chunks)  # the old incarnation's roles
    assert isinstance(sent[-1], RegisterBroker) and len(sent) == 4
    with shell.store.read() as state:
        assert state.roles_of(2) == [] and state.brokers[2].incarnation == 999
        assert all(r.leader not in (2, NO_LEADER) for r in state.partitions.values())
        assert list(state.violations()) == []


def test_a_restarted_broker_with_few_roles_registers_in_one_command() -> None:
    shell = Shell()
    shell.store.apply(encode_command(CreateTopic("small", ((1, 2, 3),) * 10)))
    shell.quorum.commands.clear()
    asyncio.run(shell.controller.register(2, 999, "127.0.0.1:9999", None))
    assert [type(decode_command(c)) for c in shell.quorum.commands] == [RegisterBroker]
    with shell.store.read() as state:
        assert state.roles_of(2) == []
