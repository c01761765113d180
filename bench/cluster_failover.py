"""The failover experiment of ``make bench`` (``bench/cluster.py``): a producer at
``FAILOVER_RPS`` records/s, acks=all, spreading records over the partitions explicitly; after
``FAILOVER_BEFORE_S`` the leader of partition 0 is killed with SIGKILL. ``failover_s`` is the
longest gap between consecutive acknowledgements of any partition that broker led (the produce
outage as a client sees it); the time from the kill to the end of that gap, and the longest gap
on the *other* partitions (which lose a follower), are reported too. ``failover_figures`` is the
pure part.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from raftlog.client.perf_results import Throttle
from raftlog.client.producer import Producer

__all__ = [
    "FAILOVER_BEFORE_S",
    "FAILOVER_RPS",
    "FailoverFigures",
    "failover_figures",
    "run_failover",
]

FAILOVER_RPS = 2_000
FAILOVER_BEFORE_S = 3.0
FAILOVER_AFTER_S = 7.0


@dataclass(frozen=True, slots=True)
class FailoverFigures:
    longest_gap_s: float  # over the victim's partitions, from the last ack before the kill on
    recovered_s: float  # kill → the end of that gap: produces succeed again
    other_gap_s: float  # longest gap after the kill on the partitions that kept their leader


def _longest_gap(times: Sequence[float], since: float) -> tuple[float, float]:
    """The longest interval (start, end) between consecutive ``times`` (ascending), counting
    from the last one at or before ``since``; (since, since) when there is none."""
    start = 0
    for i, t in enumerate(times):
        if t <= since:
            start = i
    pairs = list(itertools.pairwise(times[start:]))
    return max(pairs, key=lambda ab: ab[1] - ab[0], default=(since, since))


def failover_figures(
    acks: Iterable[tuple[float, int]], kill_at: float, victims: set[int], end_at: float
) -> FailoverFigures:
    """From (acknowledged at, partition) of every successful record. A partition without an
    acknowledgement after the kill counts as out until ``end_at``. Answers already on their way
    when the leader died may land just after the kill: the outage is the longest gap, and
    "recovered" is its end (not the first acknowledgement after the kill)."""
    by_partition: dict[int, list[float]] = {}
    for at, partition in acks:
        by_partition.setdefault(partition, []).append(at)
    longest = recovered = other = 0.0
    for partition, times in by_partition.items():
        times.sort()
        if times[-1] <= kill_at:
            times.append(end_at)  # never came back
        start, end = _longest_gap(times, kill_at)
        if partition in victims:
            longest = max(longest, end - start)
            recovered = max(recovered, end - kill_at)
        else:
            other = max(other, end - start)
    for _ in victims - set(by_partition):  # never acknowledged at all
        longest = max(longest, end_at - kill_at)
        recovered = max(recovered, end_at - kill_at)
    return FailoverFigures(longest, recovered, other)


def run_failover(cluster: Any, admin: Any, topic: str, console: Console) -> dict[str, Any]:
    """A paced acks=all producer; SIGKILL of partition 0's leader after FAILOVER_BEFORE_S."""
    acks: list[tuple[float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def on_done(partition: int, future: Any) -> None:
        at = time.perf_counter()
        error = future.exception(0)
        with lock:
            if error is None:
                acks.append((at, partition))
            else:
                failures.append(str(error))

    partitions = admin.describe_topic(topic).partitions
    count = len(partitions)
    value = b"F" * 100
    throttle = Throttle(FAILOVER_RPS)
    kill_at = -1.0
    kill_unix_s = 0.0
    victim = controller = -1
    victims: set[int] = set()
    with Producer(
        cluster.bootstrap, acks="all", linger_ms=0, security=cluster.security
    ) as producer:
        started = time.perf_counter()
        i = 0
        while True:
            now = time.perf_counter()
            elapsed = now - started
            if elapsed > FAILOVER_BEFORE_S + FAILOVER_AFTER_S:
                break
            if kill_at < 0 and elapsed >= FAILOVER_BEFORE_S:
                described = admin.describe_topic(topic).partitions
                victim = described[0].leader
                victims = {p.partition for p in described if p.leader == victim}
                controller = admin.describe_cluster().controller_id
                kill_at = time.perf_counter()
                kill_unix_s = time.time()  # to line up with the brokers' logs
                cluster.kill(victim)
                console.print(
                    f"  killed broker {victim} (SIGKILL), leader of partition(s) {sorted(victims)}",
                    highlight=False,
                )
            pause = throttle.delay_s(i, elapsed)
            if pause:
                time.sleep(pause)
            partition = i % count
            future = producer.send(topic, value, partition=partition)
            future.add_done_callback(functools.partial(on_done, partition))
            i += 1
        end_at = time.perf_counter()
        with contextlib.suppress(Exception):  # what is left is counted as not acknowledged
            producer.flush(30.0)
    with lock:
        figures = failover_figures(list(acks), kill_at, victims, end_at)
        failed = len(failures)
        sample_errors = sorted(set(failures))[:5]
    return {
        "figures": figures,
        "victim": victim,
        "kill_unix_s": round(kill_unix_s, 3),
        "victim_was_controller": victim == controller,
        "victim_partitions": sorted(victims),
        "sent": i,
        "acked": len(acks),
        "failed": failed,
        "errors": sample_errors,
    }
