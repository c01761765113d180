"""The follower's side of replication in process, without sockets: the replica fetcher builds its
request (``fetcher._Fetcher._request``), the leader's real ``ReplicaManager.fetch`` answers, and
the fetcher applies the answer (``_Fetcher._handle``) — appending the records, following the
leader's HW as min(leader HW, our LEO), truncating on a diverging epoch (KIP-320).

Real logs and LMDB on both brokers; the answer goes through the wire message as the servicer
builds it. The fetcher's own loop idles (it knows no leader address), so each exchange below is
one fetch, driven by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from raftlog.cluster.data_rpcs import fetch_result
from raftlog.cluster.fetcher import FetcherConfig, FetcherManager
from raftlog.cluster.partition import Partition
from raftlog.cluster.replica_manager import ReplicaManager, ReplicaManagerConfig
from raftlog.cluster.replica_rules import FetchSpec
from raftlog.proto.codes import ErrorCode
from raftlog.raft.listener import EventKind, PartitionEvent
from raftlog.raft.metadata_records import PartitionRecord, TopicRecord
from raftlog.segments import build_batch, iter_batches, iter_records
from raftlog.segments.clock import ManualClock
from raftlog.segments.state import BrokerStateStore

TOPIC = TopicRecord("t", 1, 1, 2, (("min.insync.replicas", "1"),))
KEY = ("t", 0)
LEADER, FOLLOWER = 1, 2


def record(epoch: int, isr: tuple[int, ...]) -> PartitionRecord:
    return PartitionRecord("t", 0, 1, (LEADER, FOLLOWER), isr, LEADER, epoch, epoch)


def manager(
    tmp_path: Path,
    broker_id: int,
    clock: ManualClock,
    follower_changed: Callable[[Partition], None],
) -> ReplicaManager:
    replicas = ReplicaManager(
        config=ReplicaManagerConfig(broker_id=broker_id, data_dir=str(tmp_path / f"b{broker_id}")),
        state=BrokerStateStore(str(tmp_path / f"state{broker_id}"), sync=False),
        clock=clock,
        topic_lookup=lambda name: TOPIC if name == "t" else None,
        propose_isr=lambda _partition, _proposal: None,
        follower_changed=follower_changed,
        broker_eligible=lambda _broker: True,
    )
    replicas.ready = True
    return replicas


class Pair:
    """Broker 1 leads partition t-0, broker 2 follows it through a real replica fetcher."""

    def __init__(self, tmp_path: Path, config: FetcherConfig) -> None:
        self.clock = ManualClock()
        self.leader = manager(tmp_path, LEADER, self.clock, lambda _partition: None)
        self.follower = manager(
            tmp_path, FOLLOWER, self.clock, lambda p: self.fetchers.partition_changed(p)
        )
        self.fetchers = FetcherManager(
            self.follower,
            FOLLOWER,
            incarnation=1,
            address_of=lambda _broker: None,  # the fetcher's own loop idles: the test fetches
            channel=_no_channel,
            clock_ms=self.clock.mono_ms,
            config=config,
        )

    def lead(self, epoch: int, isr: tuple[int, ...]) -> None:
        self.leader.apply_events([PartitionEvent(EventKind.BECOME_LEADER, KEY, record(epoch, isr))])

    def follow(self, epoch: int, isr: tuple[int, ...]) -> None:
        self.follower.apply_events(
            [PartitionEvent(EventKind.BECOME_FOLLOWER, KEY, record(epoch, isr))]
        )

    def produce(self, *values: bytes) -> None:
        batch = build_batch(list(values), timestamp_ms=1)
        outcome, _, _ = self.leader.append("t", 0, batch, 1)
        assert outcome.error == ErrorCode.NONE, outcome

    async def exchange(self) -> None:
        """One fetch of the follower's fetcher from the leader, and its answer applied."""
        fetcher = self.fetchers._fetchers[LEADER]
        followed = list(fetcher.partitions.values())
        request = fetcher._request(followed)
        specs = [
            FetchSpec(
                p.topic,
                p.partition,
                p.fetch_offset,
                p.current_leader_epoch,
                p.last_fetched_epoch,
                p.partition_max_bytes,
                p.log_start_offset,
            )
            for p in request.partitions
        ]
        outcomes = await self.leader.fetch(
            request.replica_id,
            specs,
            max_wait_ms=0,
            min_bytes=request.min_bytes,
            max_bytes=request.max_bytes,
            replica_incarnation=request.replica_incarnation,
        )
        for one, outcome in zip(followed, outcomes, strict=True):
            fetcher._handle(one, fetch_result(outcome))

    def replica(self, replicas: ReplicaManager) -> Partition:
        return replicas.partitions[KEY]

    async def close(self) -> None:
        await self.fetchers.close()
        for replicas in (self.leader, self.follower):
            replicas.close()
            replicas.state.close()


def _no_channel(address: str) -> Any:
    raise AssertionError(f"no socket in this test (asked for {address})")


def values(partition: Partition) -> list[bytes | None]:
    data = partition.log.read(partition.log.log_start_offset, 1 << 20).data
    return [
        r.value
        for position, header in iter_batches(data, verify_crc=True)
        for r in iter_records(data[position : position + header.size_bytes])
    ]


def run(tmp_path: Path, config: FetcherConfig, scenario: Callable[[Pair], Awaitable[None]]) -> None:
    async def main() -> None:
        pair = Pair(tmp_path, config)
        try:
            await scenario(pair)
        finally:
            await pair.close()

    asyncio.run(main())


def test_the_follower_appends_what_it_fetched_and_takes_min_of_leader_hw_and_its_leo(
    tmp_path: Path,
) -> None:
    """One batch per fetch (partition_bytes_max=1): the leader's HW is ahead of what the
    follower holds, so the follower's HW is its own log end, never the leader's HW."""

    async def scenario(pair: Pair) -> None:
        pair.lead(epoch=0, isr=(LEADER,))  # the follower is a replica outside the ISR
        pair.follow(epoch=0, isr=(LEADER,))
        for value in (b"a", b"b", b"c"):
            pair.produce(value)
        leader, follower = pair.replica(pair.leader), pair.replica(pair.follower)
        assert leader.high_watermark == 3
        seen = []
        for _ in range(3):
            await pair.exchange()
            seen.append((follower.log.log_end_offset, follower.high_watermark, values(follower)))
        assert seen == [
            (1, 1, [b"a"]),
            (2, 2, [b"a", b"b"]),
            (3, 3, [b"a", b"b", b"c"]),
        ]
        await pair.exchange()  # caught up: nothing more, nothing changes
        assert (follower.log.log_end_offset, follower.high_watermark) == (3, 3)

    run(tmp_path, FetcherConfig(partition_bytes_max=1), scenario)


def test_the_follower_learns_the_hw_one_fetch_after_the_records(tmp_path: Path) -> None:
    """With the follower in the ISR the leader's HW moves only when the follower's next fetch
    proves it holds the records; the follower learns that HW from the answer to that fetch."""

    async def scenario(pair: Pair) -> None:
        pair.lead(epoch=0, isr=(LEADER, FOLLOWER))
        pair.follow(epoch=0, isr=(LEADER, FOLLOWER))
        pair.produce(b"a", b"b")
        leader, follower = pair.replica(pair.leader), pair.replica(pair.follower)
        await pair.exchange()
        assert (follower.log.log_end_offset, follower.high_watermark) == (2, 0)
        assert leader.high_watermark == 0
        await pair.exchange()
        assert (leader.high_watermark, follower.high_watermark) == (2, 2)

    run(tmp_path, FetcherConfig(), scenario)


def test_the_follower_truncates_what_diverges_from_the_leader_then_catches_up(
    tmp_path: Path,
) -> None:
    """The follower wrote offset 2 in epoch 1 (a leadership of its own, never replicated); the
    leader of epoch 2 wrote another record there. The leader answers the follower's fetch with
    the diverging epoch (0, 2): the follower cuts offset 2 and fetches the leader's record."""

    async def scenario(pair: Pair) -> None:
        pair.lead(epoch=0, isr=(LEADER, FOLLOWER))
        pair.follow(epoch=0, isr=(LEADER, FOLLOWER))
        pair.produce(b"a0")
        pair.produce(b"a1")
        await pair.exchange()
        follower = pair.replica(pair.follower)
        follower.log.append(build_batch([b"lost"], timestamp_ms=1), leader_epoch=1)
        pair.lead(epoch=2, isr=(LEADER, FOLLOWER))
        pair.produce(b"new")
        pair.follow(epoch=2, isr=(LEADER, FOLLOWER))
        assert values(follower) == [b"a0", b"a1", b"lost"]
        await pair.exchange()  # answered with a diverging epoch: truncate
        assert (follower.log.log_end_offset, values(follower)) == (2, [b"a0", b"a1"])
        await pair.exchange()  # from offset 2 in epoch 0: the leader's record
        await pair.exchange()  # the HW follows
        leader = pair.replica(pair.leader)
        assert values(follower) == values(leader) == [b"a0", b"a1", b"new"]
        assert follower.log.latest_epoch == 2
        assert (leader.high_watermark, follower.high_watermark) == (3, 3)

    run(tmp_path, FetcherConfig(), scenario)
