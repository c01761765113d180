"""The traffic section of ``raftlog status``: hand-built snapshots with rates, rendered to text."""

from __future__ import annotations

import json
from dataclasses import replace

from raftlog.client.snapshot import BrokerRates, StatusSnapshot, TopicRates
from raftlog.client.status import render_text
from raftlog.client.status_traffic import TOPIC_ROWS_MAX, rate, throughput

from .test_status import healthy


def rates(*topics: TopicRates, commits: float = 12.0, shrinks: int = 0) -> BrokerRates:
    return BrokerRates(
        window_s=5.0,
        topics=topics,
        replication_bytes_in_per_s=2_000_000.0,
        replication_bytes_out_per_s=1_000_000.0,
        isr_shrinks_last_minute=shrinks,
        isr_expands_last_minute=1,
        raft_commits_per_s=commits,
    )


def busy() -> StatusSnapshot:
    """Brokers 1 and 2 lead partitions of orders; broker 3 answered without rates."""
    snapshot = healthy()
    b1, b2, b3 = snapshot.brokers
    return replace(
        snapshot,
        brokers=(
            replace(
                b1,
                rates=rates(
                    TopicRates("orders", 150_000.0, 15_000_000.0, 300_000.0, 30_000_000.0),
                    TopicRates("audit", 2.5, 250.0, 0.0, 0.0),
                    shrinks=3,
                ),
            ),
            replace(b2, rates=rates(TopicRates("orders", 50_000.0, 5_000_000.0, 0.0, 0.0))),
            b3,
        ),
    )


def test_units_are_short_and_decimal() -> None:
    assert [rate(x) for x in (0, 2.5, 12, 999, 1_234, 150_000, 1_500_000)] == [
        "0",
        "2.5",
        "12",
        "999",
        "1.2k",
        "150k",
        "1.5M",
    ]
    assert [throughput(x) for x in (0, 999, 15_000_000, 2.5e9)] == [
        "0 B/s",
        "999 B/s",
        "15.0 MB/s",
        "2.5 GB/s",
    ]


def test_the_traffic_section_shows_each_broker_and_the_topics_summed() -> None:
    text = render_text(busy(), width=140)
    assert "Traffic (per second over the last 5 s" in text
    lines = [line.strip("│ ") for line in text.splitlines()]
    broker1 = next(line for line in lines if line.startswith("1 ") and "MB/s" in line)
    # 150k + 2.5 records/s in, 15.0 MB/s in, 300k out, 30.0 MB/s out, ISR 3 shrinks / 1 expand
    for cell in ("150k", "15.0 MB/s", "300k", "30.0 MB/s", "2.0 MB/s", "1.0 MB/s", "3/1", "12"):
        assert cell in broker1, (cell, broker1)
    orders = next(line for line in lines if line.startswith("orders") and "MB/s" in line)
    assert "200k" in orders and "20.0 MB/s" in orders  # 150k + 50k, 15 + 5 MB/s
    # the busiest topic first
    assert text.index("orders  ") < text.index("audit  ", text.index("Traffic"))


def test_no_section_without_rates_and_topics_are_bounded() -> None:
    assert "Traffic" not in render_text(healthy())
    many = tuple(TopicRates(f"t{i:02d}", i, i * 100.0, 0.0, 0.0) for i in range(25))
    snapshot = busy()
    snapshot = replace(snapshot, brokers=(replace(snapshot.brokers[0], rates=rates(*many)),))
    text = render_text(snapshot, width=140)
    assert "t24" in text and "t00" not in text
    assert f"{25 - TOPIC_ROWS_MAX} quieter topics not shown" in text


def test_rates_round_trip_through_json_and_old_json_still_loads() -> None:
    snapshot = busy()
    body = json.loads(json.dumps(snapshot.to_json()))
    assert StatusSnapshot.from_json(body) == snapshot
    assert body["topic_rates"][0] == {
        "topic": "orders",
        "records_in_per_s": 200_000.0,
        "bytes_in_per_s": 20_000_000.0,
        "records_out_per_s": 300_000.0,
        "bytes_out_per_s": 30_000_000.0,
    }
    for broker in body["brokers"]:
        broker.pop("rates")  # a snapshot written before the rates existed
    assert all(b.rates is None for b in StatusSnapshot.from_json(body).brokers)
