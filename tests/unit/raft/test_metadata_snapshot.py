"""The metadata snapshot written in chunks, and captured for encoding off the Raft thread."""

from __future__ import annotations

import threading
from typing import Any

import cbor2
import pytest

from raftlog.raft import metadata_snapshot
from raftlog.raft.commands import (
    AlterPartition,
    CreateAcls,
    CreateTopic,
    DeleteTopic,
    FenceBroker,
    RegisterBroker,
    UnfenceBroker,
    UpsertScramCredential,
    encode_command,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_snapshot import SnapshotContents
from raftlog.raft.store import MetadataStore

from .test_metadata import ALICE_READS, BOB_DENIED, credential


def _one_shot(contents: SnapshotContents) -> bytes:
    """The snapshot as one ``cbor2.dumps`` of the documented map (the encoding before it was
    written in chunks): the chunked writer must give these bytes exactly."""
    body = {
        "v": metadata_snapshot.SNAPSHOT_VERSION,
        "version": contents.version,
        "next_producer_id": contents.next_producer_id,
        "next_topic_id": contents.next_topic_id,
        "brokers": [
            [
                b.broker_id,
                b.address,
                b.incarnation,
                b.rack,
                b.fenced,
                b.registered_version,
                b.password_address,
                b.kafka_address,
            ]
            for b in contents.brokers
        ],
        "topics": [
            [t.name, t.topic_id, t.partitions, t.replication_factor, [list(c) for c in t.configs]]
            for t in contents.topics
        ],
        "partitions": [
            [
                p.topic,
                p.partition,
                p.topic_id,
                list(p.replicas),
                list(p.isr),
                p.leader,
                p.leader_epoch,
                p.partition_epoch,
                list(p.elr),
                list(p.last_known_elr),
            ]
            for p in contents.partitions
        ],
        "epoch_floor": [[t, p, le, pe] for (t, p), (le, pe) in contents.epoch_floor.items()],
        "acls": [b.to_dict() for b in sorted(contents.acls)],
        "users": [[name, contents.users[name].to_dict()] for name in sorted(contents.users)],
    }
    return bytes(cbor2.dumps(body))


def _contents(state: MetadataState) -> SnapshotContents:
    return SnapshotContents(
        version=state.version,
        next_producer_id=state.next_producer_id,
        next_topic_id=state.next_topic_id,
        brokers=state.brokers.values(),
        topics=state.topics.values(),
        partitions=state.partitions.values(),
        epoch_floor=state._epoch_floor,
        acls=state.acls,
        users=state.users,
    )


def _apply(state: MetadataState | MetadataStore, *commands: Any) -> None:
    for command in commands:
        state.apply(encode_command(command))


def _busy_state(partitions: int) -> MetadataState:
    """Brokers, topics (one with a config, one deleted), ACLs and users: every list non-empty."""
    state = MetadataState()
    for b in (1, 2, 3):
        _apply(
            state, RegisterBroker(b, f"10.0.0.{b}:9092", 10 + b, f"r{b}"), UnfenceBroker(b, 10 + b)
        )
    assignment = tuple((1 + p % 3, 1 + (p + 1) % 3) for p in range(partitions))
    _apply(
        state,
        CreateTopic("gone", ((1, 2),)),
        DeleteTopic("gone"),
        CreateTopic("big", assignment, (("min.insync.replicas", "1"),)),
        CreateTopic("small", ((2, 3, 1),)),
        FenceBroker(3, 13),
        CreateAcls((ALICE_READS, BOB_DENIED)),
        UpsertScramCredential("bob", credential("b")),
    )
    return state


@pytest.mark.parametrize("partitions", [0, 1, 7, 23])
def test_the_chunked_snapshot_is_the_one_shot_encoding_byte_for_byte(
    partitions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metadata_snapshot, "ROWS_PER_CHUNK", 5)  # chunk edges: 0, 1, 5k, 5k+r
    state = _busy_state(partitions)
    data = state.snapshot()
    assert data == _one_shot(_contents(state))
    assert MetadataState.from_snapshot(data).snapshot() == data


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536])
def test_cbor_heads_are_cbor2s_own(length: int) -> None:
    # cbor2 writes a byte string's head as an array's, under another major type (2, not 4)
    data = cbor2.dumps(b"\0" * length)
    expected = bytes([data[0] & 0x1F | 4 << 5]) + data[1 : len(data) - length]
    assert metadata_snapshot._cbor_head(4, length) == expected


def test_cbor_heads_of_32_and_64_bit_lengths() -> None:
    assert metadata_snapshot._cbor_head(4, 2**32 - 1) == b"\x9a\xff\xff\xff\xff"
    assert metadata_snapshot._cbor_head(4, 2**32) == b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00"


def test_a_captured_snapshot_is_the_state_at_capture_whatever_is_applied_after() -> None:
    state = _busy_state(50)
    expected = state.snapshot()
    encode = state.snapshot_encoder()
    record = state.partitions[("big", 0)]
    follower = next(b for b in record.isr if b != record.leader)
    shrunk = tuple(b for b in record.isr if b != follower)
    _apply(
        state,
        AlterPartition(
            "big", 0, record.leader, record.leader_epoch, record.partition_epoch, shrunk
        ),
        CreateTopic("later", ((1, 2),)),
        DeleteTopic("small"),
        FenceBroker(1, 11),
        CreateAcls((BOB_DENIED,)),
        UpsertScramCredential("carol", credential("c")),
    )
    assert state.snapshot() != expected
    assert encode() == expected


def test_a_snapshot_encoded_on_another_thread_under_concurrent_applies_is_its_capture() -> None:
    """What the quorum does: capture on the applying thread, encode on a writer thread while
    applies go on. Each encoding must be the state of its own capture, whole."""
    store = MetadataStore()
    for b in (1, 2, 3):
        _apply(store, RegisterBroker(b, f"10.0.0.{b}:9092", 1), UnfenceBroker(b, 1))
    _apply(store, CreateTopic("t", tuple((1, 2, 3) for _ in range(3000))))
    captures: list[tuple[bytes, Any]] = []
    encoded: list[tuple[bytes, bytes]] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set() or captures:
            if captures:
                expected, encode = captures.pop(0)
                encoded.append((expected, encode()))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(6):
            with store.read() as state:
                expected = state.snapshot()  # the reference, taken at the same instant
            captures.append((expected, store.snapshot_encoder()))
            for p in range(round_ * 200, round_ * 200 + 200):  # every capture sees a new ISR
                with store.read() as state:
                    r = state.partitions[("t", p)]
                _apply(store, AlterPartition("t", p, 1, r.leader_epoch, r.partition_epoch, (1, 2)))
    finally:
        stop.set()
        thread.join(30)
    assert len(encoded) == 6
    for expected, got in encoded:
        assert got == expected
    assert len({got for _, got in encoded}) == 6
