"""Fencing a broker with many partitions in bounded commands (FenceBrokerPartitions chunks, then
FenceBroker): the state machine's rule 5 and the controller's plan."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import (
    Command,
    CreateTopic,
    FenceBroker,
    FenceBrokerPartitions,
    RegisterBroker,
    UnfenceBroker,
    decode_command,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig, ControllerCore, Steps
from raftlog.raft.metadata import FENCE_PARTITIONS_PER_COMMAND_MAX, MetadataState
from raftlog.raft.metadata_records import NO_LEADER

CONFIG = ControllerConfig(session_timeout_ms=1000, leader_rebalance_interval_ms=None)


def run(state: MetadataState, command: Command) -> dict[str, Any]:
    return state.apply(encode_command(command)).result


def cluster(partitions: int, *, rf: int = 3, brokers: int = 4) -> MetadataState:
    """Broker 1 replicates every partition and leads a third of them; topics of 500."""
    state = MetadataState()
    for b in range(1, brokers + 1):
        run(state, RegisterBroker(b, f"h:{b}", 10 + b))
        run(state, UnfenceBroker(b, 10 + b))
    for t in range(0, partitions, 500):
        assignment = []
        for p in range(min(500, partitions - t)):
            others = [2 + (p + i) % (brokers - 1) for i in range(rf - 1)]
            replicas = [1, *others] if p % 3 == 0 else [*others[:1], 1, *others[1:]]
            assignment.append(tuple(replicas))
        assert run(state, CreateTopic(f"t{t}", tuple(assignment)))["ok"]
    return state


def test_the_command_round_trips() -> None:
    command = FenceBrokerPartitions(2, 7, (("orders", 0), ("orders", 3)))
    assert decode_command(encode_command(command)) == command


def test_chunks_then_the_fence_leave_every_partition_as_one_fence_does() -> None:
    whole, chunked = cluster(1200, rf=2), cluster(1200, rf=2)
    # a sole-ISR partition: broker 1 stays its last member and it goes offline either way
    for state in (whole, chunked):
        record = state.partitions[("t0", 0)]
        state.partitions[record.key] = replace(record, isr=(1,))
    whole, chunked = (MetadataState.from_snapshot(s.snapshot()) for s in (whole, chunked))
    assert run(whole, FenceBroker(1, 11))["changed"]
    keys = sorted(k for k in chunked.partitions)
    for i in range(0, len(keys), FENCE_PARTITIONS_PER_COMMAND_MAX):
        chunk = tuple(keys[i : i + FENCE_PARTITIONS_PER_COMMAND_MAX])
        result = run(chunked, FenceBrokerPartitions(1, 11, chunk))
        assert result == {"ok": True, "partitions": len(chunk)}
        assert list(chunked.violations()) == []  # every rule holds between chunks
        assert not chunked.brokers[1].fenced
    applied = chunked.apply(encode_command(FenceBroker(1, 11)))
    assert applied.result["changed"] and applied.partitions == frozenset()  # nothing left
    assert chunked.partitions == whole.partitions
    assert chunked.brokers[1].fenced
    assert chunked.partitions[("t0", 0)].leader == NO_LEADER
    assert all(r.leader != 1 for r in chunked.partitions.values())


def test_partitions_the_broker_does_not_replicate_are_ignored() -> None:
    state = cluster(6)
    assert run(state, RegisterBroker(9, "h:9", 19))["ok"]
    before = dict(state.partitions)
    result = run(state, FenceBrokerPartitions(9, 19, (("t0", 0), ("nope", 0))))
    assert result == {"ok": True, "partitions": 0}
    assert state.partitions == before


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (FenceBrokerPartitions(1, 99, (("t0", 0),)), ErrorCode.STALE_BROKER_EPOCH),
        (FenceBrokerPartitions(7, 11, (("t0", 0),)), ErrorCode.BROKER_NOT_AVAILABLE),
        (
            FenceBrokerPartitions(1, 11, (("t0", 0),) * (FENCE_PARTITIONS_PER_COMMAND_MAX + 1)),
            ErrorCode.INVALID_REQUEST,
        ),
        (FenceBrokerPartitions(1, 11, (("t0", 0, 1),)), ErrorCode.INVALID_REQUEST),  # type: ignore[arg-type]
        (FenceBrokerPartitions(1, 11, (("t0", "0"),)), ErrorCode.INVALID_REQUEST),  # type: ignore[arg-type]
    ],
)
def test_bad_chunks_are_refused_and_change_nothing(command: Command, code: ErrorCode) -> None:
    state = cluster(6)
    before = dict(state.partitions)
    assert run(state, command)["error"] == code
    assert state.partitions == before


def test_a_chunk_for_a_fenced_broker_changes_nothing() -> None:
    state = cluster(6)
    run(state, FenceBroker(1, 11))
    before = dict(state.partitions)
    assert run(state, FenceBrokerPartitions(1, 11, (("t0", 1),))) == {"ok": True, "partitions": 0}
    assert state.partitions == before


# ---- the controller's plan -----------------------------------------------------------------


def _heartbeat_all_but(
    controller: ControllerCore, state: MetadataState, dead: int, now: int
) -> None:
    for b in state.brokers:
        if b != dead:
            controller.heartbeat(state, b, 10 + b, state.version, now)


def test_a_broker_with_few_partitions_is_fenced_in_one_command() -> None:
    state = cluster(FENCE_PARTITIONS_PER_COMMAND_MAX)
    controller = ControllerCore(CONFIG, now_ms=0)
    _heartbeat_all_but(controller, state, 1, 1500)
    assert [c for _, c in controller.decisions(state, 1500)] == [FenceBroker(1, 11)]


def test_a_broker_with_many_partitions_is_fenced_in_bounded_steps_moving_every_leadership() -> None:
    state = cluster(2600)
    led = sum(1 for r in state.partitions.values() if r.leader == 1)
    assert led > 800  # more than fits one chunk with the ISR changes
    controller = ControllerCore(CONFIG, now_ms=0)
    _heartbeat_all_but(controller, state, 1, 1500)
    decisions = controller.decisions(state, 1500)
    assert len(decisions) == 1
    subject, steps = decisions[0]
    assert isinstance(steps, Steps)
    *chunks, last = steps.commands
    assert last == FenceBroker(1, 11)
    assert [len(c.partitions) for c in chunks] == [1000, 1000, 600]  # type: ignore[union-attr]
    covered = [k for c in chunks for k in c.partitions]  # type: ignore[union-attr]
    # each partition it holds a role in, once (in no particular order: the plan reads the
    # state's role lookup and does not sort it under the store's lock)
    assert sorted(covered) == sorted(state.partitions) and len(set(covered)) == len(covered)

    # applied one by one: between steps no backstop election picks the broker being fenced
    changed = 0
    for command in steps.commands:
        applied = state.apply(encode_command(command))
        assert "error" not in applied.result
        assert len(applied.partitions) <= FENCE_PARTITIONS_PER_COMMAND_MAX
        changed += len(applied.partitions)
        _heartbeat_all_but(controller, state, 1, 1600)
        assert controller.decisions(state, 1600 + CONFIG.election_scan_interval_ms) == []
    controller.completed(subject)
    assert changed == 2600  # every partition lost broker 1 from its ISR
    assert state.brokers[1].fenced
    assert all(r.leader not in (1, NO_LEADER) and 1 not in r.isr for r in state.partitions.values())
    assert list(state.violations()) == []
    # once the fence completed, the backstop scan runs again (nothing to elect here)
    later = 1600 + 2 * CONFIG.election_scan_interval_ms
    _heartbeat_all_but(controller, state, 1, later)
    assert controller.decisions(state, later) == []
    assert controller._scanned_version == state.version
