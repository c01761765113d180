"""The ``raftlog status`` view: a pure ``render(snapshot) -> renderable`` (STYLE.md point 12).

One screen that is ``kafka-topics --describe`` and ``rpk cluster health`` together:

- a title with the snapshot time, then a header line: bootstrap address, active controller
  (red ``NO CONTROLLER`` when none), metadata version, Raft term / commit index;
- the brokers: state, Raft role, the ★ controller marker, heartbeat age, and the Raft match
  index and lag of the voter with the same node id;
- the traffic (``status_traffic.py``): per broker and per topic, records and bytes per second in
  and out over the last few seconds, replication bytes, ISR shrinks and expands in the last
  minute and the Raft commit rate;
- the partitions, sorted by (topic, partition): leader, epoch, replicas with the out-of-sync ones
  marked ``✗``, ISR, high watermark, log end offset, each follower's LEO delta, size and a health
  label; offline rows red, under-min-ISR bold red, under-replicated yellow;
- a totals line ending in a verdict (healthy / degraded / unhealthy), and a footer with
  whatever could not be fetched (``snapshot.errors``).

Nothing here does IO or reads a clock: ages and the snapshot time come from the snapshot, so the
view is tested by rendering hand-built snapshots to text (``render_text``). The CLI's ``--watch``
wraps ``render`` in ``rich.live.Live``; this module never does.

Output is bounded: at most ``partition_rows_max`` partition rows (when there are more, troubled
partitions come first, worst first, and the rest are summarised as "… 9,800 healthy partitions
not shown"), ``BROKER_ROWS_MAX`` broker rows and ``ERROR_LINES_MAX`` error lines, so a
10k-partition cluster costs ~20 ms to build and ~150 ms to print, whatever its size. Every
string that comes from the cluster (topic names, addresses, errors) goes into a ``Text``, never
into markup, so a ``[`` in a topic name cannot restyle the view.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from raftlog.client.snapshot import (
    BrokerView,
    PartitionView,
    ReplicaView,
    StatusSnapshot,
    VoterView,
)
from raftlog.client.status_traffic import traffic

__all__ = [
    "BROKER_ROWS_MAX",
    "COMPACT_WIDTH_MAX",
    "ERROR_LINES_MAX",
    "PARTITION_ROWS_MAX",
    "Health",
    "partition_health",
    "render",
    "render_text",
]

PARTITION_ROWS_MAX = 200  # beyond this, healthy partitions are summarised, not listed
BROKER_ROWS_MAX = 500  # a bound, not an expectation: clusters have tens of brokers
ERROR_LINES_MAX = 20
COMPACT_WIDTH_MAX = 99  # at or below this width_hint, drop the least useful columns

OUT_OF_SYNC_MARK = "✗"
CONTROLLER_MARK = "★"
_SEPARATOR = Text(" · ", style="dim")


class Health(IntEnum):
    """A partition's worst problem; the order is the display order of troubled rows."""

    OFFLINE = 0  # no leader: unavailable for produce and consume
    UNDER_MIN_ISR = 1  # acks=all produce fails
    UNDER_REPLICATED = 2  # available, but a replica is behind or gone
    HEALTHY = 3


_HEALTH_LABEL: Mapping[Health, str] = {
    Health.OFFLINE: "offline",
    Health.UNDER_MIN_ISR: "under-min-ISR",
    Health.UNDER_REPLICATED: "under-replicated",
    Health.HEALTHY: "ok",
}
_HEALTH_STYLE: Mapping[Health, str] = {
    Health.OFFLINE: "red",
    Health.UNDER_MIN_ISR: "bold red",
    Health.UNDER_REPLICATED: "yellow",
    Health.HEALTHY: "",
}


def partition_health(partition: PartitionView) -> Health:
    if partition.offline:
        return Health.OFFLINE
    if partition.under_min_isr:
        return Health.UNDER_MIN_ISR
    if partition.under_replicated:
        return Health.UNDER_REPLICATED
    return Health.HEALTHY


# ---------------------------------------------------------------------------------------------
# Entry points


def render(
    snapshot: StatusSnapshot,
    *,
    width_hint: int | None = None,
    partition_rows_max: int = PARTITION_ROWS_MAX,
) -> RenderableType:
    """The whole status view as one rich renderable. Pure: no IO, no clock, never raises on
    well-typed input (unknown values are -1 and show as ``?``).

    ``width_hint`` is the console width the caller expects; at or below ``COMPACT_WIDTH_MAX``
    the rack, leader epoch, log end offset and size columns are dropped so the rest stay
    readable. ``partition_rows_max`` bounds the partition rows (see the module comment).
    """
    compact = width_hint is not None and width_hint <= COMPACT_WIDTH_MAX
    parts: list[RenderableType] = [
        _header(snapshot),
        Text(),
        _brokers(snapshot, compact=compact),
        Text(),
        *_partitions(snapshot, compact=compact, rows_max=max(0, partition_rows_max)),
        Text(),
        _totals(snapshot),
    ]
    moving = traffic(snapshot, compact=compact)
    if moving is not None:
        parts[4:4] = [moving, Text()]  # after the brokers: who carries the load
    if snapshot.errors:
        parts += [Text(), _errors(snapshot.errors)]
    title = Text.assemble(
        ("raftlog status", "bold"), _SEPARATOR, (_timestamp(snapshot.taken_at_ms), "")
    )
    return Panel(
        Group(*parts),
        title=title,
        title_align="left",
        border_style=_border_style(snapshot),
        box=box.ROUNDED,
    )


def render_text(snapshot: StatusSnapshot, width: int = 120) -> str:
    """``render`` as plain text (no colour, no escape codes), for tests and logs."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        force_interactive=False,
        legacy_windows=False,
        highlight=False,
        emoji=False,
    )
    console.print(render(snapshot, width_hint=width))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Header, totals, errors


def _header(snapshot: StatusSnapshot) -> Text:
    header = Text()
    header.append("bootstrap ", style="dim")
    header.append(snapshot.bootstrap, style="bold")
    header.append_text(_SEPARATOR)
    if snapshot.controller_id < 0:
        header.append("NO CONTROLLER", style="bold red")
    else:
        header.append("controller ", style="dim")
        header.append(f"{CONTROLLER_MARK} {snapshot.controller_id}", style="bold cyan")
    header.append_text(_SEPARATOR)
    header.append("metadata v", style="dim")
    header.append(_number(snapshot.metadata_version))
    header.append_text(_SEPARATOR)
    quorum = snapshot.quorum
    if quorum is None:
        header.append("raft quorum unknown", style="yellow")
    else:
        header.append("raft term ", style="dim")
        header.append(_number(quorum.term))
        header.append(" commit ", style="dim")
        header.append(_number(quorum.commit_index))
        if quorum.last_applied != quorum.commit_index:
            header.append(" applied ", style="dim")
            header.append(_number(quorum.last_applied), style="yellow")
        if quorum.leader_id < 0:
            header.append(" (no raft leader)", style="bold red")
        elif quorum.leader_id != snapshot.controller_id:
            header.append(f" (raft leader {quorum.leader_id})", style="yellow")
    return header


def _totals(snapshot: StatusSnapshot) -> Text:
    offline = snapshot.offline_count
    under_replicated = snapshot.under_replicated_count
    under_min_isr = snapshot.under_min_isr_count
    totals = Text()
    totals.append("partitions ", style="dim")
    totals.append(f"{len(snapshot.partitions):,}", style="bold")
    for label, count, style in (
        ("offline", offline, "bold red"),
        ("under-replicated", under_replicated, "bold yellow"),
        ("under-min-ISR", under_min_isr, "bold red"),
    ):
        totals.append_text(_SEPARATOR)
        totals.append(f"{label} ", style="dim")
        totals.append(f"{count:,}", style=style if count else "green")
    totals.append_text(_SEPARATOR)
    if offline or under_min_isr or snapshot.controller_id < 0:
        totals.append("unhealthy", style="bold red")
    elif under_replicated or _broker_trouble(snapshot):
        totals.append("degraded", style="bold yellow")
    else:
        totals.append("healthy", style="bold green")
    return totals


def _broker_trouble(snapshot: StatusSnapshot) -> str:
    """E.g. "1 dead, 1 unreachable"; "" when every broker is alive, unfenced and reachable."""
    liveness_known = snapshot.controller_id >= 0  # else alive=False only means "not asked"
    dead = fenced = unreachable = 0
    for broker in snapshot.brokers:
        dead += liveness_known and not broker.alive
        fenced += broker.fenced
        unreachable += not broker.reachable
    counts = (("dead", dead), ("fenced", fenced), ("unreachable", unreachable))
    return ", ".join(f"{n:,} {label}" for label, n in counts if n)


def _errors(errors: tuple[str, ...]) -> RenderableType:
    """What could not be fetched, one per line, wrapped lines indented under their text."""
    lines = Table.grid(padding=(0, 1, 0, 0))
    lines.add_column(no_wrap=True)
    lines.add_column(overflow="fold")
    for error in errors[:ERROR_LINES_MAX]:
        lines.add_row(Text("  ⚠", style="yellow"), Text(error, style="yellow"))
    if len(errors) > ERROR_LINES_MAX:
        lines.add_row(Text("  …"), Text(f"{len(errors) - ERROR_LINES_MAX:,} more", style="dim"))
    return Group(Text(f"errors ({len(errors):,}):", style="bold yellow"), lines)


def _border_style(snapshot: StatusSnapshot) -> str:
    if snapshot.controller_id < 0 or snapshot.offline_count or snapshot.under_min_isr_count:
        return "red"
    if snapshot.under_replicated_count or snapshot.errors or _broker_trouble(snapshot):
        return "yellow"
    return "green"


# ---------------------------------------------------------------------------------------------
# Brokers


def _brokers(snapshot: StatusSnapshot, *, compact: bool) -> RenderableType:
    voters: dict[int, VoterView] = {}
    raft_leader = -1
    if snapshot.quorum is not None:
        voters = {v.node_id: v for v in snapshot.quorum.voters}
        raft_leader = snapshot.quorum.leader_id
    brokers = sorted(snapshot.brokers, key=lambda b: b.broker_id)
    broker_ids = {b.broker_id for b in brokers}
    voter_only = sorted(
        (v for v in voters.values() if v.node_id not in broker_ids), key=lambda v: v.node_id
    )
    if not brokers and not voter_only:
        return Text("no brokers known", style="yellow")

    title = Text(f"Brokers ({len(brokers):,}")
    trouble = _broker_trouble(snapshot)
    if trouble:
        title.append(": ")
        title.append(trouble, style="yellow")
    title.append(")")
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        expand=False,
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("address", overflow="fold")
    if not compact:
        table.add_column("rack", overflow="fold")
    table.add_column("state")
    table.add_column("role", no_wrap=True)
    table.add_column("ctrl", no_wrap=True)
    table.add_column("heartbeat", justify="right", no_wrap=True)
    if not compact:
        table.add_column("raft match", justify="right", no_wrap=True)
    table.add_column("raft lag", justify="right", no_wrap=True)

    shown = 0
    for broker in brokers:
        if shown >= BROKER_ROWS_MAX:
            break
        shown += 1
        is_controller = broker.is_controller or broker.broker_id == snapshot.controller_id
        cells = [
            Text(str(broker.broker_id), style="bold cyan" if is_controller else ""),
            Text(broker.address),
        ]
        if not compact:
            cells.append(Text(broker.rack or "-", style="" if broker.rack else "dim"))
        voter = voters.get(broker.broker_id)
        cells += [
            _broker_state(broker, liveness_known=snapshot.controller_id >= 0),
            _raft_role(broker.raft_role),
            _controller_mark(is_controller, compact=compact),
            _age(broker.last_heartbeat_ms_ago),
            *_voter_cells(voter, compact=compact),
        ]
        table.add_row(*cells)
    for voter in voter_only:  # a Raft voter that is not (or not known as) a broker
        if shown >= BROKER_ROWS_MAX:
            break
        shown += 1
        role = "leader" if voter.node_id == raft_leader else "voter"
        cells = [Text(str(voter.node_id)), Text(voter.raft_address)]
        if not compact:
            cells.append(Text("-", style="dim"))
        cells += [
            Text("not a broker", style="dim"),
            _raft_role(role),
            Text(),
            Text("-", style="dim"),
            *_voter_cells(voter, compact=compact),
        ]
        table.add_row(*cells)
    hidden = len(brokers) + len(voter_only) - shown
    if hidden > 0:
        table.caption = f"… {hidden:,} more brokers not shown"
    return table


def _broker_state(broker: BrokerView, *, liveness_known: bool) -> Text:
    state = Text()
    if broker.alive:
        if broker.fenced:
            state.append("fenced", style="bold red")
        else:
            state.append("alive", style="green")
    else:
        # Without a controller nobody could say who heartbeats: alive=False means "unknown".
        state.append("dead" if liveness_known else "unknown", style="dim")
        if broker.fenced:
            state.append(" fenced", style="bold red")
    if not broker.reachable:
        state.append(" unreachable", style="yellow")
    return state


def _raft_role(role: str) -> Text:
    match role:
        case "leader":
            return Text("leader", style="bold")
        case "follower" | "voter":
            return Text(role)
        case "candidate":
            return Text("candidate", style="yellow")
        case "observer":
            return Text("observer", style="cyan")
        case _:
            return Text(role or "?", style="dim")


def _controller_mark(is_controller: bool, *, compact: bool) -> Text:
    if not is_controller:
        return Text()
    return Text(CONTROLLER_MARK if compact else f"{CONTROLLER_MARK} controller", "bold cyan")


def _voter_cells(voter: VoterView | None, *, compact: bool) -> list[Text]:
    """Raft match index (unless compact) and lag of the voter with the broker's node id."""
    if voter is None:
        cells = [Text("-", style="dim"), Text("-", style="dim")]
    else:
        lag_style = "yellow" if voter.lag > 0 else ("green" if voter.lag == 0 else "")
        cells = [_unknown_or(voter.match_index), _unknown_or(voter.lag, style=lag_style)]
    return cells[1:] if compact else cells


# ---------------------------------------------------------------------------------------------
# Partitions


def _partitions(snapshot: StatusSnapshot, *, compact: bool, rows_max: int) -> list[RenderableType]:
    if not snapshot.partitions:
        return [Text("no partitions", style="dim")]
    rows, hidden_troubled, hidden_healthy = _select_rows(snapshot.partitions, rows_max)

    table = Table(
        title=Text(f"Partitions ({len(snapshot.partitions):,})"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        expand=False,
    )
    table.add_column("topic", overflow="fold")
    table.add_column("part", justify="right", no_wrap=True)
    table.add_column("leader", justify="right", no_wrap=True)
    if not compact:
        table.add_column("epoch", justify="right", no_wrap=True)
    table.add_column("replicas", overflow="fold")
    if not compact:
        table.add_column("isr", overflow="fold")
    table.add_column("hw", justify="right", no_wrap=True)
    if not compact:
        table.add_column("leo", justify="right", no_wrap=True)
    table.add_column("follower Δ", overflow="fold")
    if not compact:
        table.add_column("size", justify="right", no_wrap=True)
    table.add_column("health", no_wrap=True)

    for partition, health in rows:
        cells = [
            Text(partition.topic),
            Text(str(partition.partition)),
            Text("offline", style="bold red")
            if partition.offline
            else Text(str(partition.leader), style="bold"),
        ]
        if not compact:
            cells.append(_unknown_or(partition.leader_epoch))
        cells += [
            _replicas(partition),
        ]
        if not compact:  # the ✗ marks in the replicas column say the same, less exactly
            cells.append(Text(",".join(map(str, partition.isr)) or "-"))
        cells.append(_unknown_or(partition.high_watermark))
        if not compact:
            cells.append(_unknown_or(partition.log_end_offset))
        cells.append(_follower_deltas(partition))
        if not compact:
            cells.append(_size(partition.size_bytes))
        cells.append(
            Text(_HEALTH_LABEL[health], style=_HEALTH_STYLE[health] or "dim green"),
        )
        table.add_row(*cells, style=_HEALTH_STYLE[health] or None)

    out: list[RenderableType] = [table, _legend(compact=compact)]
    if hidden_troubled or hidden_healthy:
        hidden = []
        if hidden_troubled:
            hidden.append(f"{hidden_troubled:,} troubled")
        if hidden_healthy:
            hidden.append(f"{hidden_healthy:,} healthy")
        out.append(
            Text(
                f"… {' and '.join(hidden)} partitions not shown "
                f"(first {len(rows):,} of {len(snapshot.partitions):,}, troubled first)",
                style="bold yellow" if hidden_troubled else "dim",
            )
        )
    return out


def _legend(*, compact: bool) -> Text:
    legend = Text(style="dim")
    legend.append(OUT_OF_SYNC_MARK, style="red")
    legend.append(" out of sync (a replica, not in the ISR) · follower Δ: its LEO − leader's")
    if not compact:
        legend.append(" (id@LEO when offline)")
    return legend


def _select_rows(
    partitions: tuple[PartitionView, ...], rows_max: int
) -> tuple[list[tuple[PartitionView, Health]], int, int]:
    """The rows to show and how many troubled and healthy partitions are left out.

    All of them, by (topic, partition), when they fit. Otherwise the troubled ones first, worst
    first, then healthy ones by (topic, partition) to fill the rows: O(n log rows_max) for the
    healthy bulk, so 10k partitions cost a few milliseconds.
    """
    rated = [(p, partition_health(p)) for p in partitions]
    if len(rated) <= rows_max:
        rated.sort(key=lambda ph: (ph[0].topic, ph[0].partition))
        return rated, 0, 0
    troubled = [ph for ph in rated if ph[1] is not Health.HEALTHY]
    troubled_shown = heapq.nsmallest(
        rows_max, troubled, key=lambda ph: (ph[1], ph[0].topic, ph[0].partition)
    )
    room = rows_max - len(troubled_shown)
    healthy_count = len(rated) - len(troubled)
    healthy_shown = heapq.nsmallest(
        room,
        (ph for ph in rated if ph[1] is Health.HEALTHY),
        key=lambda ph: (ph[0].topic, ph[0].partition),
    )
    return (
        troubled_shown + healthy_shown,
        len(troubled) - len(troubled_shown),
        healthy_count - len(healthy_shown),
    )


def _replicas(partition: PartitionView) -> Text:
    """Replica ids in assignment order: the leader bold, out-of-sync ones red, struck and ✗."""
    isr = set(partition.isr)
    text = Text()
    for i, replica in enumerate(partition.replicas):
        if i:
            text.append(",")
        if replica not in isr:
            text.append(f"{replica}{OUT_OF_SYNC_MARK}", style="red strike")
        elif replica == partition.leader:
            text.append(str(replica), style="bold")
        else:
            text.append(str(replica))
    return text if partition.replicas else Text("-", style="dim")


def _follower_deltas(partition: PartitionView) -> Text:
    """``2:0 3:-15``: each follower's LEO minus the leader's (its lag, negated), in replica
    order; ``3:?`` when unknown. With no leader there is nothing to lag behind, so each
    replica's own LEO is shown instead (``2@1,200``) — what an operator weighs before an
    unclean election."""
    views: dict[int, ReplicaView] = {v.broker_id: v for v in partition.replica_views}
    order: list[int] = [r for r in partition.replicas if r != partition.leader]
    order += [b for b in views if b not in partition.replicas and b != partition.leader]
    text = Text()
    for i, broker_id in enumerate(order):
        if i:
            text.append(" ")
        view = views.get(broker_id)
        if view is None:
            text.append(f"{broker_id}:?", style="dim")
            continue
        style = "" if view.in_sync else "red"
        if partition.offline:
            leo = "?" if view.log_end_offset < 0 else f"{view.log_end_offset:,}"
            text.append(f"{broker_id}@{leo}", style=style)
        elif view.lag < 0:
            text.append(f"{broker_id}:?", style=style or "dim")
        else:
            text.append(f"{broker_id}:{-view.lag}", style=style or ("yellow" if view.lag else ""))
    return text if order else Text("-", style="dim")


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def _number(n: int) -> str:
    return "?" if n < 0 else f"{n:,}"


def _unknown_or(n: int, *, style: str = "") -> Text:
    return Text("?", style="dim") if n < 0 else Text(f"{n:,}", style=style)


def _age(ms: int) -> Text:
    """A heartbeat age: ``350ms``, ``4.2s``, ``42s``, ``12m05s``, ``3h07m``; ``?`` if unknown."""
    if ms < 0:
        return Text("?", style="dim")
    if ms < 1_000:
        return Text(f"{ms}ms")
    if ms < 10_000:
        return Text(f"{ms / 1000:.1f}s")
    seconds = ms // 1000
    if seconds < 60:
        return Text(f"{seconds}s")
    if seconds < 3600:
        return Text(f"{seconds // 60}m{seconds % 60:02d}s", style="yellow")
    return Text(f"{seconds // 3600:,}h{seconds % 3600 // 60:02d}m", style="yellow")


def _size(size_bytes: int) -> Text:
    if size_bytes < 0:
        return Text("?", style="dim")
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return Text(f"{size_bytes} B" if unit == "B" else f"{value:.1f} {unit}")
        value /= 1024
    raise AssertionError("unreachable: TiB returns")  # pragma: no cover


def _timestamp(taken_at_ms: int) -> str:
    """UTC, to the millisecond; the raw number when it is outside datetime's range."""
    try:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=taken_at_ms)
    except OverflowError:
        return f"{taken_at_ms} ms since the epoch"
    return at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d} UTC"
