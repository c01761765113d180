"""The status view, rendered from hand-built snapshots to plain text — no cluster needed.

Two hand-built clusters (healthy; and one with a dead, a fenced and an unreachable broker, an
offline, an under-min-ISR and an under-replicated partition, no controller and fetch errors), a
big one for the row bound, and hypothesis-generated snapshots that must render without raising
and survive the JSON round trip.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from raftlog.client.snapshot import (
    BrokerView,
    PartitionView,
    QuorumView,
    ReplicaView,
    StatusSnapshot,
    VoterView,
)
from raftlog.client.status import (
    PARTITION_ROWS_MAX,
    Health,
    partition_health,
    render,
    render_text,
)

TAKEN_AT_MS = 1_717_171_717_123  # 2024-05-31 16:08:37.123 UTC


def broker(
    broker_id: int,
    *,
    alive: bool = True,
    fenced: bool = False,
    reachable: bool = True,
    heartbeat_ms_ago: int = 120,
    role: str = "follower",
    controller: bool = False,
) -> BrokerView:
    return BrokerView(
        broker_id=broker_id,
        address=f"10.0.0.{broker_id}:9092",
        rack=f"rack-{broker_id}",
        fenced=fenced,
        alive=alive,
        reachable=reachable,
        last_heartbeat_ms_ago=heartbeat_ms_ago,
        raft_role=role,
        is_controller=controller,
    )


def partition(
    topic: str,
    index: int,
    *,
    leader: int = 1,
    replicas: tuple[int, ...] = (1, 2, 3),
    isr: tuple[int, ...] | None = None,
    min_isr: int = 2,
    hw: int = 100,
    leo: int = 100,
    lags: dict[int, int] | None = None,
) -> PartitionView:
    """A partition whose replica views follow from its ISR; ``lags`` overrides per replica."""
    isr = replicas if isr is None else isr
    lags = lags or {}
    views = tuple(
        ReplicaView(
            broker_id=r,
            log_end_offset=-1 if lags.get(r, 0) < 0 or leo < 0 else leo - lags.get(r, 0),
            lag=lags.get(r, 0),
            in_sync=r in isr,
        )
        for r in replicas
    )
    return PartitionView(
        topic=topic,
        partition=index,
        leader=leader,
        leader_epoch=4,
        replicas=replicas,
        isr=isr,
        min_insync_replicas=min_isr,
        high_watermark=hw,
        log_start_offset=0,
        log_end_offset=leo,
        size_bytes=2_500_000,
        replica_views=views,
    )


def quorum(leader_id: int = 1, lags: dict[int, int] | None = None) -> QuorumView:
    lags = lags or {}
    return QuorumView(
        leader_id=leader_id,
        term=7,
        commit_index=4_321,
        last_applied=4_321,
        voters=tuple(
            VoterView(
                node_id=n,
                raft_address=f"10.0.0.{n}:7000",
                match_index=-1 if lags.get(n, 0) < 0 else 4_321 - lags.get(n, 0),
                lag=lags.get(n, 0),
            )
            for n in (1, 2, 3)
        ),
    )


def healthy() -> StatusSnapshot:
    return StatusSnapshot(
        taken_at_ms=TAKEN_AT_MS,
        bootstrap="10.0.0.1:9092",
        controller_id=1,
        metadata_version=42,
        brokers=(broker(1, role="leader", controller=True), broker(2), broker(3)),
        quorum=quorum(lags={3: 2}),
        # deliberately out of order: the view sorts by (topic, partition)
        partitions=(partition("orders", 1), partition("orders", 0), partition("audit", 0)),
    )


def troubled() -> StatusSnapshot:
    """Broker 3 dead and unreachable, broker 4 alive but unreachable, broker 5 fenced."""
    return StatusSnapshot(
        taken_at_ms=TAKEN_AT_MS,
        bootstrap="10.0.0.1:9092",
        controller_id=2,
        metadata_version=57,
        brokers=(
            broker(1, role="follower"),
            broker(2, role="leader", controller=True),
            broker(3, alive=False, reachable=False, heartbeat_ms_ago=42_500, role="unknown"),
            broker(4, reachable=False, heartbeat_ms_ago=3_400, role="candidate"),
            broker(5, fenced=True, heartbeat_ms_ago=-1),
        ),
        quorum=replace(quorum(leader_id=2, lags={1: 0, 3: -1}), commit_index=4_400),
        partitions=(
            partition("orders", 0, leader=1),
            partition("orders", 1, leader=2, replicas=(2, 1, 3), isr=(2, 1), lags={3: 15}),
            partition("orders", 2, leader=-1, replicas=(3, 4, 5), isr=(3,), hw=-1),
            partition("payments", 0, leader=2, replicas=(2, 3, 4), isr=(2,), lags={3: 80, 4: -1}),
        ),
        errors=("DescribeReplicas 10.0.0.3:9092: UNAVAILABLE: connection refused",),
    )


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def partition_row(text: str, topic: str, index: int) -> str:
    """The rendered row of one partition (inside the panel's border)."""
    pattern = re.compile(rf"│\s*{re.escape(topic)}\s+{index}\s")
    rows = [line for line in text.splitlines() if pattern.search(line)]
    assert len(rows) == 1, (topic, index, rows)
    return rows[0]


def broker_row(text: str, broker_id: int) -> str:
    rows = [line for line in text.splitlines() if f"10.0.0.{broker_id}:9092 " in line]
    rows = [row for row in rows if "bootstrap" not in row]
    assert len(rows) == 1, (broker_id, rows)
    return rows[0]


# --- the healthy cluster -------------------------------------------------------------------------


def test_healthy_cluster_header_and_totals() -> None:
    text = render_text(healthy())
    assert "bootstrap 10.0.0.1:9092" in text
    assert "controller ★ 1" in text
    assert "metadata v42" in text
    assert "raft term 7 commit 4,321" in text
    assert "2024-05-31 16:08:37.123 UTC" in text
    assert "partitions 3 · offline 0 · under-replicated 0 · under-min-ISR 0 · healthy" in text
    assert "NO CONTROLLER" not in text
    assert "errors" not in text


def test_healthy_cluster_rows_sorted_by_topic_then_partition() -> None:
    text = render_text(healthy())
    rows = [partition_row(text, t, i) for t, i in (("audit", 0), ("orders", 0), ("orders", 1))]
    positions = [text.index(row) for row in rows]
    assert positions == sorted(positions)
    assert "1,2,3" in rows[0]
    assert "2:0 3:0" in rows[0]  # followers' LEO deltas; the leader is left out
    assert "2.4 MiB" in rows[0]
    assert rows[0].rstrip(" │").endswith("ok")


def test_controller_marker_is_on_the_controller_only() -> None:
    text = render_text(healthy())
    assert "★ controller" in broker_row(text, 1)
    assert "controller" not in broker_row(text, 2)
    assert "controller" not in broker_row(text, 3)


def test_broker_row_shows_state_role_heartbeat_and_raft_lag() -> None:
    text = render_text(healthy())
    row = broker_row(text, 3)
    assert "rack-3" in row
    assert "alive" in row
    assert "follower" in row
    assert "120ms" in row
    assert re.search(r"4,319\s+2\b", row), row  # match index and lag of voter 3
    assert "leader" in broker_row(text, 1)


# --- the troubled cluster ------------------------------------------------------------------------


def test_troubled_totals_count_each_problem() -> None:
    snapshot = troubled()
    assert (snapshot.offline_count, snapshot.under_min_isr_count) == (1, 2)
    assert snapshot.under_replicated_count == 3
    text = render_text(snapshot)
    totals = lines_with(text, "partitions 4")
    assert len(totals) == 1
    assert "offline 1 · under-replicated 3 · under-min-ISR 2 · unhealthy" in totals[0]
    assert "Brokers (5: 1 dead, 1 fenced, 2 unreachable)" in text


def test_only_under_replication_or_broker_trouble_is_degraded() -> None:
    lagging = replace(healthy(), partitions=(partition("t", 0, isr=(1, 2)),))
    assert "under-replicated 1 · under-min-ISR 0 · degraded" in render_text(lagging)
    fenced = replace(healthy(), brokers=(*healthy().brokers[:2], broker(3, fenced=True)))
    text = render_text(fenced)
    assert "under-min-ISR 0 · degraded" in text
    assert "Brokers (3: 1 fenced)" in text


def test_offline_partition_says_offline_and_shows_replica_leos() -> None:
    row = partition_row(render_text(troubled()), "orders", 2)
    assert re.search(r"orders\s+2\s+offline\b", row), row
    assert "3,4✗,5✗" in row  # 4 and 5 are assigned but not in the ISR
    assert "3@100 4@100 5@100" in row
    assert row.rstrip(" │").endswith("offline")


def test_lagging_replicas_are_marked_and_their_lag_shown() -> None:
    text = render_text(troubled())
    orders_1 = partition_row(text, "orders", 1)
    assert "2,1,3✗" in orders_1
    assert "1:0 3:-15" in orders_1
    assert "under-replicated" in orders_1
    payments = partition_row(text, "payments", 0)
    assert "2,3✗,4✗" in payments
    assert "3:-80 4:?" in payments
    assert "under-min-ISR" in payments


def test_broker_states_dead_fenced_unreachable_and_unknowns() -> None:
    text = render_text(troubled())
    dead = broker_row(text, 3)
    assert "dead unreachable" in dead
    assert "42s" in dead
    assert re.search(r"\?\s+\?\s*│$", dead), dead  # voter 3: match index and lag unknown
    unreachable = broker_row(text, 4)
    assert "alive unreachable" in unreachable
    assert "candidate" in unreachable
    assert "3.4s" in unreachable
    fenced = broker_row(text, 5)
    assert "fenced" in fenced
    assert re.search(r"fenced\s+follower\s+\?", fenced), fenced  # heartbeat age unknown
    assert re.search(r"-\s+-\s*│$", fenced), fenced  # 5 is not a Raft voter
    assert "★ controller" in broker_row(text, 2)


def test_errors_footer_lists_every_error() -> None:
    text = render_text(troubled())
    assert "errors (1):" in text
    assert "⚠ DescribeReplicas 10.0.0.3:9092: UNAVAILABLE: connection refused" in text


def test_errors_footer_is_bounded() -> None:
    snapshot = replace(troubled(), errors=tuple(f"error number {i}" for i in range(50)))
    text = render_text(snapshot)
    assert "errors (50):" in text
    assert "error number 19" in text
    assert "error number 20" not in text
    assert "… 30 more" in text


def test_no_controller_is_red_and_liveness_unknown() -> None:
    snapshot = replace(
        troubled(),
        controller_id=-1,
        quorum=None,
        brokers=tuple(replace(b, alive=False, is_controller=False) for b in troubled().brokers),
    )
    text = render_text(snapshot)
    assert "NO CONTROLLER" in text
    assert "raft quorum unknown" in text
    assert "★" not in text.split("Partitions")[0].split("NO CONTROLLER")[1]
    assert "unknown" in broker_row(text, 1)  # not "dead": nobody could be asked
    assert "dead" not in broker_row(text, 1)
    assert "unhealthy" in text


def test_no_controller_is_rendered_red() -> None:
    snapshot = replace(healthy(), controller_id=-1)
    out = Console(
        file=io.StringIO(), width=120, color_system="truecolor", force_terminal=True, record=True
    )
    out.print(render(snapshot))
    assert "NO CONTROLLER" in out.export_text(clear=False)
    styled = out.export_html(inline_styles=True)
    assert re.search(r'<span style="[^"]*color: #800000[^"]*">NO CONTROLLER', styled), styled


def test_raft_leader_other_than_controller_is_flagged() -> None:
    snapshot = replace(healthy(), quorum=quorum(leader_id=2))
    assert "(raft leader 2)" in render_text(snapshot)


def test_topic_names_are_not_markup() -> None:
    snapshot = replace(healthy(), partitions=(partition("[bold]evil[/bold]", 0),))
    assert "[bold]evil[/bold]" in render_text(snapshot)


def test_narrow_width_drops_columns_but_keeps_the_essentials() -> None:
    text = render_text(troubled(), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "rack-1" not in text
    assert re.search(r"orders\s+2\s+offline\b", partition_row(text, "orders", 2))
    assert "offline 1" in text


# --- edge cases and the bound --------------------------------------------------------------------


def test_empty_cluster() -> None:
    snapshot = StatusSnapshot(
        taken_at_ms=0,
        bootstrap="localhost:9092",
        controller_id=-1,
        metadata_version=-1,
        brokers=(),
        quorum=None,
        partitions=(),
    )
    text = render_text(snapshot)
    assert "no brokers known" in text
    assert "no partitions" in text
    assert "1970-01-01 00:00:00.000 UTC" in text
    assert "partitions 0 · offline 0" in text


def test_voters_that_are_not_brokers_get_a_row() -> None:
    snapshot = replace(healthy(), brokers=(broker(1, role="leader", controller=True),))
    text = render_text(snapshot)
    assert len(lines_with(text, "not a broker")) == 2
    assert "10.0.0.3:7000" in text


def test_big_cluster_is_truncated_troubled_first() -> None:
    partitions = [partition(f"topic-{i // 100:03d}", i % 100) for i in range(5_000)]
    partitions[4_321] = partition("topic-043", 21, leader=-1, isr=())
    partitions[17] = partition("topic-000", 17, isr=(1,))
    snapshot = replace(healthy(), partitions=tuple(partitions))
    text = render_text(snapshot)
    assert "… 4,800 healthy partitions not shown" in text
    assert "partitions 5,000 · offline 1 · under-replicated 2 · under-min-ISR 2" in text
    offline_at = text.index(partition_row(text, "topic-043", 21))
    under_min_at = text.index(partition_row(text, "topic-000", 17))
    first_healthy_at = text.index(partition_row(text, "topic-000", 0))
    assert offline_at < under_min_at < first_healthy_at
    rows = [line for line in text.splitlines() if re.search(r"│\s*topic-\d{3}\s+\d+\s", line)]
    assert len(rows) == PARTITION_ROWS_MAX


def test_more_troubled_partitions_than_rows() -> None:
    partitions = (*(partition("t", i, leader=-1) for i in range(300)), partition("u", 0))
    text = render_text(replace(healthy(), partitions=partitions))
    assert "… 100 troubled and 1 healthy partitions not shown" in text


def test_partition_health_order() -> None:
    assert partition_health(partition("t", 0)) is Health.HEALTHY
    assert partition_health(partition("t", 0, isr=(1, 2))) is Health.UNDER_REPLICATED
    assert partition_health(partition("t", 0, isr=(1,))) is Health.UNDER_MIN_ISR
    assert partition_health(partition("t", 0, leader=-1, isr=(1,))) is Health.OFFLINE


@pytest.mark.parametrize(
    ("taken_at_ms", "shown"),
    [
        (-1, "1969-12-31 23:59:59.999 UTC"),
        (2**62, f"{2**62} ms since the epoch"),
        (-(2**62), f"{-(2**62)} ms since the epoch"),
    ],
)
def test_snapshot_time_outside_datetime_range_is_shown_raw(taken_at_ms: int, shown: str) -> None:
    assert shown in render_text(replace(healthy(), taken_at_ms=taken_at_ms))


# --- JSON round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [healthy, troubled])
def test_json_round_trip(make: Callable[[], StatusSnapshot]) -> None:
    snapshot = make()
    body = json.loads(json.dumps(snapshot.to_json()))
    assert StatusSnapshot.from_json(body) == snapshot
    assert body["totals"]["partitions"] == len(snapshot.partitions)


# --- random snapshots ----------------------------------------------------------------------------

ids = st.integers(min_value=-1, max_value=8)
counts = st.integers(min_value=-1, max_value=2**63 - 1)
texts = st.text(max_size=30)

broker_views = st.builds(
    BrokerView,
    broker_id=ids,
    address=texts,
    rack=st.none() | texts,
    fenced=st.booleans(),
    alive=st.booleans(),
    reachable=st.booleans(),
    last_heartbeat_ms_ago=counts,
    raft_role=st.sampled_from(["leader", "follower", "candidate", "unknown", ""]) | texts,
    is_controller=st.booleans(),
)
voter_views = st.builds(VoterView, node_id=ids, raft_address=texts, match_index=counts, lag=counts)
quorum_views = st.builds(
    QuorumView,
    leader_id=ids,
    term=counts,
    commit_index=counts,
    last_applied=counts,
    voters=st.lists(voter_views, max_size=5).map(tuple),
)
replica_views = st.builds(
    ReplicaView, broker_id=ids, log_end_offset=counts, lag=counts, in_sync=st.booleans()
)
id_tuples = st.lists(ids, max_size=5).map(tuple)
partition_views = st.builds(
    PartitionView,
    topic=texts,
    partition=st.integers(min_value=-1, max_value=2**31),
    leader=ids,
    leader_epoch=counts,
    replicas=id_tuples,
    isr=id_tuples,
    min_insync_replicas=st.integers(min_value=-1, max_value=5),
    high_watermark=counts,
    log_start_offset=counts,
    log_end_offset=counts,
    size_bytes=counts,
    replica_views=st.lists(replica_views, max_size=5).map(tuple),
)
snapshots = st.builds(
    StatusSnapshot,
    taken_at_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    bootstrap=texts,
    controller_id=ids,
    metadata_version=counts,
    brokers=st.lists(broker_views, max_size=6).map(tuple),
    quorum=st.none() | quorum_views,
    partitions=st.lists(partition_views, max_size=12).map(tuple),
    errors=st.lists(texts, max_size=3).map(tuple),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshots, width=st.sampled_from([40, 80, 120, 200]), rows=st.integers(0, 8))
def test_render_never_raises(snapshot: StatusSnapshot, width: int, rows: int) -> None:
    out = Console(file=io.StringIO(), width=width, color_system="truecolor", force_terminal=True)
    out.print(render(snapshot, width_hint=width, partition_rows_max=rows))
    text = render_text(snapshot, width=width)
    assert f"partitions {len(snapshot.partitions):,} ·" in text


@settings(max_examples=100, deadline=None)
@given(snapshot=snapshots)
def test_json_round_trip_random(snapshot: StatusSnapshot) -> None:
    body = json.loads(json.dumps(snapshot.to_json()))
    assert StatusSnapshot.from_json(body) == snapshot
