"""The traffic section of ``raftlog status``: windowed rates per broker and per topic.

Pure, as the rest of the view (``status.py``): it renders what the snapshot carries — each
broker's ``BrokerRates`` from DescribeReplicas (per second over the last few seconds, ISR changes
over the last minute, the Raft commit rate as that voter sees it) and the topics summed over the
brokers. "in" is what leaders appended for producers, "out" what brokers sent to consumers;
replication is shown apart. At most ``TOPIC_ROWS_MAX`` topics, busiest first.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from raftlog.client.snapshot import BrokerRates, StatusSnapshot

__all__ = ["TOPIC_ROWS_MAX", "rate", "throughput", "traffic"]

TOPIC_ROWS_MAX = 10


def rate(per_s: float) -> str:
    """Events per second, short: 0, 12, 1.2k, 340k, 1.5M."""
    if per_s < 1000:
        return f"{per_s:.0f}" if per_s >= 10 or per_s == 0 else f"{per_s:.1f}"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if per_s >= size:
            value = per_s / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def throughput(bytes_per_s: float) -> str:
    """Bytes per second in decimal units, as throughput is usually quoted: 0 B/s, 2.1 MB/s."""
    value = bytes_per_s
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if value < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def traffic(snapshot: StatusSnapshot, *, compact: bool) -> RenderableType | None:
    """The section, or None when no broker reported rates."""
    rated = [(b.broker_id, b.rates) for b in snapshot.brokers if b.rates is not None]
    if not rated:
        return None
    window = max(r.window_s for _, r in rated)
    brokers = Table(
        title=Text(f"Traffic (per second over the last {window:g} s; ISR changes: last minute)"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
    )
    brokers.add_column("broker", justify="right", no_wrap=True)
    for name in ("in rec/s", "in", "out rec/s", "out"):
        brokers.add_column(name, justify="right", no_wrap=True)
    if not compact:
        brokers.add_column("repl in", justify="right", no_wrap=True)
        brokers.add_column("repl out", justify="right", no_wrap=True)
    brokers.add_column("ISR −/+", justify="right", no_wrap=True)
    brokers.add_column("commits/s", justify="right", no_wrap=True)
    for broker_id, r in sorted(rated, key=lambda item: item[0]):
        brokers.add_row(str(broker_id), *_cells(r, compact=compact))
    parts: list[RenderableType] = [brokers]
    topics = snapshot.topic_rates()
    if topics:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
        table.add_column("topic", overflow="fold")
        for name in ("in rec/s", "in", "out rec/s", "out"):
            table.add_column(name, justify="right", no_wrap=True)
        for t in topics[:TOPIC_ROWS_MAX]:
            table.add_row(
                Text(t.topic),
                rate(t.records_in_per_s),
                throughput(t.bytes_in_per_s),
                rate(t.records_out_per_s),
                throughput(t.bytes_out_per_s),
            )
        parts.append(table)
        if len(topics) > TOPIC_ROWS_MAX:
            hidden = len(topics) - TOPIC_ROWS_MAX
            parts.append(Text(f"… {hidden:,} quieter topics not shown", style="dim"))
    return Group(*parts)


def _cells(r: BrokerRates, *, compact: bool) -> list[str]:
    cells = [
        rate(r.records_in_per_s),
        throughput(r.bytes_in_per_s),
        rate(r.records_out_per_s),
        throughput(r.bytes_out_per_s),
    ]
    if not compact:
        cells += [
            throughput(r.replication_bytes_in_per_s),
            throughput(r.replication_bytes_out_per_s),
        ]
    cells += [
        f"{r.isr_shrinks_last_minute}/{r.isr_expands_last_minute}",
        rate(r.raft_commits_per_s),
    ]
    return cells
