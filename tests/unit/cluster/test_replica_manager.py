"""The leader's read path in process (real logs and LMDB, no sockets): what a follower's fetch
may count as progress.

Found by a 30-minute chaos run (seed 2612): a follower that had replicated a deposed leader's
uncommitted tail fetched from past it; the new leader counted that offset as the follower's log
end, so the HW took records the follower did not have, the follower was let back into the ISR,
a preferred-leader election made it leader, and acknowledged records were truncated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftlog.cluster.replica_manager import ReplicaManager, ReplicaManagerConfig
from raftlog.cluster.replica_rules import CONSUMER, FetchOutcome, FetchSpec
from raftlog.cluster.replication import IsrProposal
from raftlog.proto.codes import ErrorCode
from raftlog.raft.listener import EventKind, PartitionEvent
from raftlog.raft.metadata_records import PartitionRecord, TopicRecord
from raftlog.segments import build_batch, iter_batches, iter_records
from raftlog.segments.clock import MonoMs, WallMs
from raftlog.segments.state import BrokerStateStore

TOPIC = TopicRecord("t", 1, 1, 2, (("min.insync.replicas", "1"),))
KEY = ("t", 0)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.now_ms = 1_000
        self.proposals: list[IsrProposal] = []
        self.state = BrokerStateStore(str(tmp_path / "state"), sync=False)
        self.manager = ReplicaManager(
            config=ReplicaManagerConfig(broker_id=1, data_dir=str(tmp_path / "data")),
            state=self.state,
            clock=self,  # mono_ms / wall_ms below: time moves when a test moves now_ms
            topic_lookup=lambda name: TOPIC if name == "t" else None,
            propose_isr=lambda _partition, proposal: self.proposals.append(proposal),
            follower_changed=lambda _partition: None,
            broker_eligible=lambda _broker: True,
        )
        self.manager.ready = True

    def mono_ms(self) -> MonoMs:
        return MonoMs(self.now_ms)

    def wall_ms(self) -> WallMs:
        return WallMs(1_700_000_000_000 + self.now_ms)

    def lead(self, *, isr: tuple[int, ...], epoch: int) -> None:
        record = PartitionRecord("t", 0, 1, (1, 2), isr, 1, epoch, epoch)
        self.manager.apply_events([PartitionEvent(EventKind.BECOME_LEADER, KEY, record)])

    def append(self, value: bytes, epoch: int) -> None:
        log = self.manager.partitions[KEY].log
        log.append(build_batch([value], timestamp_ms=self.now_ms), leader_epoch=epoch)

    def follower_fetch(
        self, offset: int, last_fetched_epoch: int, current_epoch: int
    ) -> FetchOutcome:
        spec = FetchSpec("t", 0, offset, current_epoch, last_fetched_epoch)
        return self.manager.read_one(spec, 2, 1 << 20)

    @property
    def high_watermark(self) -> int:
        return self.manager.partitions[KEY].high_watermark


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.manager.close()
    h.state.close()


def follower_leo(h: Harness) -> int:
    leader = h.manager.partitions[KEY].leader
    assert leader is not None
    return leader.followers[2].log_end_offset


def history(h: Harness) -> None:
    """Offsets 0-1 written in epoch 0; we lead epoch 2 and wrote offset 2 in it."""
    h.lead(isr=(1, 2), epoch=0)
    h.append(b"a", 0)
    h.append(b"b", 0)
    h.lead(isr=(1, 2), epoch=2)
    h.append(b"c", 2)


def test_a_diverged_followers_fetch_offset_does_not_move_the_hw(harness: Harness) -> None:
    history(harness)
    agreed = harness.follower_fetch(2, last_fetched_epoch=0, current_epoch=2)
    assert harness.high_watermark == 2 and agreed.diverging_epoch is None
    # the follower replicated offsets 2-3 from a leader of epoch 1 that we never followed
    diverged = harness.follower_fetch(4, last_fetched_epoch=1, current_epoch=2)
    assert diverged.diverging_epoch == (0, 2)  # it must cut back to offset 2
    assert harness.high_watermark == 2  # offset 2 is only on the leader
    assert follower_leo(harness) == 2
    # after truncating and fetching our epoch-2 record, it counts again
    harness.follower_fetch(3, last_fetched_epoch=2, current_epoch=2)
    assert harness.high_watermark == 3


def test_a_diverged_follower_is_not_proposed_back_into_the_isr(harness: Harness) -> None:
    history(harness)
    harness.lead(isr=(1,), epoch=3)  # follower 2 was removed meanwhile
    harness.now_ms += 10
    harness.follower_fetch(4, last_fetched_epoch=1, current_epoch=3)
    assert not any(2 in p.isr for p in harness.proposals), harness.proposals
    assert harness.high_watermark == 3  # the sole ISR member's own log end


def test_a_fetch_from_past_our_log_end_is_not_progress(harness: Harness) -> None:
    history(harness)
    harness.follower_fetch(9, last_fetched_epoch=-1, current_epoch=2)  # no epoch to compare
    assert harness.high_watermark == 0
    assert follower_leo(harness) < 0


def test_a_producer_snapshot_above_a_truncation_is_not_trusted_after_a_crash(
    tmp_path: Path,
) -> None:
    """Found by the simulation: a producer snapshot taken at offset 4 outlived a truncation to
    2; the log grew past 4 again with other batches, and after a crash the rebuild took the
    snapshot for the truth, so producer 7's lost batch (seq 2-3) would be answered as a
    duplicate of records no replica holds."""
    h = Harness(tmp_path)
    h.lead(isr=(1,), epoch=0)

    def produce(producer_id: int, base_sequence: int, count: int) -> None:
        batch = build_batch(
            [b"x"] * count,
            timestamp_ms=h.now_ms,
            producer_id=producer_id,
            producer_epoch=0,
            base_sequence=base_sequence,
        )
        outcome, _, _ = h.manager.append("t", 0, batch, 1)
        assert outcome.error == ErrorCode.NONE, outcome

    produce(7, 0, 2)  # offsets 0-1
    produce(7, 2, 2)  # offsets 2-3
    assert h.manager.snapshot_producers() == 1  # at offset 4
    partition = h.manager.partitions[KEY]
    h.manager.truncate(partition, 2)  # a new leader never had 2-3
    h.lead(isr=(1,), epoch=1)
    produce(8, 0, 4)  # offsets 2-5: the log passes the old snapshot's offset again
    for p in h.manager.partitions.values():  # a crash: no checkpoint, no snapshot round
        p.log.close()
    h.state.close()

    again = Harness(tmp_path)
    try:
        again.lead(isr=(1,), epoch=1)
        producers = again.manager.partitions[KEY].producers
        seven, eight = producers.entry(7), producers.entry(8)
        assert seven is not None and seven.last_seq == 1  # its batch 2-3 is gone
        assert eight is not None and eight.last_seq == 3
    finally:
        again.manager.close()
        again.state.close()


def test_the_committed_isr_in_an_alter_partition_answer_takes_effect_at_once(
    harness: Harness,
) -> None:
    """Issue 21: a leader that reaches the controller only through a relay may not see its
    metadata move until the fault heals; it acts on the ISR the controller's answer carries (as
    Kafka's leader does) — for its own leader epoch only."""
    harness.lead(isr=(1, 2), epoch=4)
    harness.append(b"a", 4)
    assert harness.high_watermark == 0  # follower 2 has not fetched: the HW waits for it
    harness.manager.isr_committed(KEY, leader_epoch=3, isr=(1,), partition_epoch=5)
    assert harness.high_watermark == 0  # an answer for another leader epoch changes nothing
    harness.manager.isr_committed(KEY, leader_epoch=4, isr=(1,), partition_epoch=5)
    assert harness.high_watermark == 1
    leader = harness.manager.partitions[KEY].leader
    assert leader is not None and (leader.isr, leader.partition_epoch) == ((1,), 5)
    harness.manager.isr_committed(KEY, leader_epoch=4, isr=(1, 2), partition_epoch=4)
    assert leader.isr == (1,)  # an older partition epoch never rolls the ISR back


def test_a_broker_cut_off_from_the_controller_answers_produces_not_leader(
    harness: Harness,
) -> None:
    """Issue 21, seed-4242 run: a minority's leader, fenced by the controller but not knowing
    it, held every produce until the client's timeout (2 s, twice), so its partition went 4 s
    without an acknowledgement though a new leader served after 1.5 s. Cut off for a session,
    it answers waiting and new produces NOT_LEADER_OR_FOLLOWER at once."""
    harness.lead(isr=(1, 2), epoch=4)
    records = build_batch([b"x"], timestamp_ms=harness.now_ms)

    async def scenario() -> tuple[str, str, str]:
        waiting = asyncio.ensure_future(harness.manager.produce(-1, 10_000, [("t", 0, records)]))
        await asyncio.sleep(0)
        assert not waiting.done()  # follower 2 has not fetched it
        harness.manager.set_cut_off("broker 1 has not reached the controller")
        (answered,) = await asyncio.wait_for(waiting, 1)
        (refused,) = await harness.manager.produce(1, 10_000, [("t", 0, records)])
        harness.manager.set_cut_off(None)
        (taken,) = await harness.manager.produce(1, 10_000, [("t", 0, records)])
        return answered.error, refused.error, taken.error

    assert asyncio.run(scenario()) == (
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.NONE,
    )


# ---- the leader's fetch: leader epochs and the delayed fetch -----------------------------------


def values_of(records: bytes) -> list[bytes | None]:
    """The record values of whole batches, back to back (as a fetch returns them)."""
    return [
        r.value
        for position, header in iter_batches(records, verify_crc=True)
        for r in iter_records(records[position : position + header.size_bytes])
    ]


def produce(h: Harness, *values: bytes) -> None:
    """Append one batch through the leader's produce path (which wakes waiting fetches)."""
    batch = build_batch(list(values), timestamp_ms=h.now_ms)
    outcome, _, _ = h.manager.append("t", 0, batch, 1)
    assert outcome.error == ErrorCode.NONE, outcome


async def consume(
    h: Harness, offset: int, *, min_bytes: int, max_wait_ms: int, epoch: int = -1
) -> FetchOutcome:
    (outcome,) = await h.manager.fetch(
        CONSUMER,
        [FetchSpec("t", 0, offset, current_leader_epoch=epoch)],
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        replica_incarnation=-1,
    )
    return outcome


def test_a_fetch_from_an_older_leader_epoch_is_fenced_and_from_a_newer_one_unknown(
    harness: Harness,
) -> None:
    """KIP-320: a fetcher that names another leader epoch than ours gets nothing, and its fetch
    offset does not count as its progress."""
    harness.lead(isr=(1, 2), epoch=4)
    harness.append(b"a", 4)
    older = harness.follower_fetch(1, last_fetched_epoch=4, current_epoch=3)
    newer = harness.follower_fetch(1, last_fetched_epoch=4, current_epoch=5)
    assert (older.error, newer.error) == (
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
    )
    assert older.records == newer.records == b""
    assert (older.leader_epoch, newer.leader_epoch) == (4, 4)  # what the fetcher should know
    assert follower_leo(harness) < 0 and harness.high_watermark == 0
    same = harness.follower_fetch(1, last_fetched_epoch=4, current_epoch=4)
    assert same.error == ErrorCode.NONE and harness.high_watermark == 1


def test_a_consumer_fetch_naming_another_leader_epoch_is_answered_at_once(
    harness: Harness,
) -> None:
    """The error comes back without waiting out max_wait_ms (the clock never moves here)."""
    harness.lead(isr=(1,), epoch=4)

    async def scenario() -> list[str]:
        answers = []
        for epoch in (3, 5):
            fetch = consume(harness, 0, min_bytes=1, max_wait_ms=10_000, epoch=epoch)
            answers.append((await asyncio.wait_for(fetch, 1)).error)
        return answers

    assert asyncio.run(scenario()) == [
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
    ]


def test_a_fetch_below_min_bytes_waits_until_max_wait_then_returns_what_there_is(
    harness: Harness,
) -> None:
    harness.lead(isr=(1,), epoch=0)

    async def scenario() -> FetchOutcome:
        waiting = asyncio.ensure_future(consume(harness, 0, min_bytes=1 << 20, max_wait_ms=500))
        await asyncio.sleep(0)
        produce(harness, b"small")  # readable, but far below min_bytes: it keeps waiting
        harness.now_ms += 499
        harness.manager.expire()
        await asyncio.sleep(0)
        assert not waiting.done()
        harness.now_ms += 1  # max_wait_ms is up
        harness.manager.expire()
        return await asyncio.wait_for(waiting, 1)

    outcome = asyncio.run(scenario())
    assert outcome.error == ErrorCode.NONE and values_of(outcome.records) == [b"small"]


def test_an_append_wakes_a_waiting_fetch_before_max_wait(harness: Harness) -> None:
    harness.lead(isr=(1,), epoch=0)
    produce(harness, b"old")

    async def scenario() -> FetchOutcome:
        waiting = asyncio.ensure_future(consume(harness, 1, min_bytes=1, max_wait_ms=10_000))
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing past offset 1 yet
        produce(harness, b"new")  # no time passes: only the append can complete it
        return await asyncio.wait_for(waiting, 1)

    outcome = asyncio.run(scenario())
    assert outcome.error == ErrorCode.NONE and values_of(outcome.records) == [b"new"]


def test_a_fetch_that_has_min_bytes_returns_at_once(harness: Harness) -> None:
    harness.lead(isr=(1,), epoch=0)
    produce(harness, b"a", b"b")
    produce(harness, b"c")

    async def scenario() -> FetchOutcome:
        fetch = consume(harness, 0, min_bytes=1, max_wait_ms=10_000)
        return await asyncio.wait_for(fetch, 1)  # the clock never moves: no wait can end

    outcome = asyncio.run(scenario())
    assert values_of(outcome.records) == [b"a", b"b", b"c"]


# ---- producer state after a truncation ----------------------------------------------------------


def test_after_a_truncation_a_retry_of_a_cut_batch_is_appended_not_deduplicated(
    harness: Harness,
) -> None:
    """The producer state is rebuilt when the log is cut: it must not remember sequences of the
    batches that went, or a retry of the lost batch would be answered as a duplicate of records
    no replica holds (and the producer would count it as stored)."""
    harness.lead(isr=(1,), epoch=0)

    def send(base_sequence: int, *values: bytes) -> tuple[str, int]:
        batch = build_batch(
            list(values),
            timestamp_ms=harness.now_ms,
            producer_id=7,
            producer_epoch=0,
            base_sequence=base_sequence,
        )
        outcome, _, _ = harness.manager.append("t", 0, batch, 1)
        return outcome.error, outcome.base_offset

    assert send(0, b"a0", b"a1") == (ErrorCode.NONE, 0)
    assert send(2, b"b0", b"b1") == (ErrorCode.NONE, 2)
    assert send(2, b"b0", b"b1") == (ErrorCode.DUPLICATE_SEQUENCE_NUMBER, 2)  # stored: deduplicated
    partition = harness.manager.partitions[KEY]
    harness.manager.truncate(partition, 2)  # a new leader never had offsets 2-3
    seven = partition.producers.entry(7)
    assert seven is not None and seven.last_seq == 1
    harness.lead(isr=(1,), epoch=1)
    assert send(2, b"b0", b"b1") == (ErrorCode.NONE, 2)  # the retry is stored again, at 2-3
    result = partition.log.read(0, 1 << 20)
    assert values_of(result.data) == [b"a0", b"a1", b"b0", b"b1"]


# ---- traffic counters (read by /metrics and the status view's rates) --------------------------


def test_traffic_counts_what_producers_appended_and_consumers_and_followers_fetched(
    harness: Harness,
) -> None:
    harness.lead(isr=(1,), epoch=0)  # alone in the ISR: what it appends is readable at once
    first = build_batch([b"a", b"b"], timestamp_ms=harness.now_ms)
    second = build_batch([b"c"], timestamp_ms=harness.now_ms)
    for batch in (first, second):
        outcome, _, _ = harness.manager.append("t", 0, batch, 1)
        assert outcome.error == ErrorCode.NONE
    traffic = harness.manager.traffic
    row = traffic.topics["t"]
    assert (row.records_in, row.bytes_in) == (3, len(first) + len(second))

    fetched = asyncio.run(consume(harness, 0, min_bytes=1, max_wait_ms=0))
    assert (row.records_out, row.bytes_out) == (3, len(fetched.records))
    assert traffic.replication_bytes_out == 0  # a consumer's fetch is not replication

    async def follower() -> None:
        await harness.manager.fetch(
            2,
            [FetchSpec("t", 0, 0, 0, -1)],
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=1 << 20,
            replica_incarnation=1,
        )

    asyncio.run(follower())
    assert traffic.replication_bytes_out == len(first) + len(second)
    assert (row.records_out, row.bytes_out) == (3, len(fetched.records))  # unchanged


def test_traffic_counts_isr_shrinks_and_expands_of_a_led_partition(harness: Harness) -> None:
    harness.lead(isr=(1, 2), epoch=0)
    traffic = harness.manager.traffic
    harness.manager.isr_committed(KEY, 0, (1,), 2)
    assert (traffic.isr_shrinks, traffic.isr_expands) == (1, 0)
    # the same change arriving again with the metadata counts nothing
    record = PartitionRecord("t", 0, 1, (1, 2), (1,), 1, 0, 2)
    harness.manager.apply_events([PartitionEvent(EventKind.LEADER_UPDATE, KEY, record)])
    assert (traffic.isr_shrinks, traffic.isr_expands) == (1, 0)
    record = PartitionRecord("t", 0, 1, (1, 2), (1, 2), 1, 0, 3)
    harness.manager.apply_events([PartitionEvent(EventKind.LEADER_UPDATE, KEY, record)])
    assert (traffic.isr_shrinks, traffic.isr_expands) == (1, 1)
