"""Consumer-group members as processes, a record feed, and what their timelines say.

Shared by ``bench/groups.py`` (``make bench-groups``) and the group integration tests. A member
runs ``MEMBER`` (or a test's own script) as ``python -c script <bootstrap> <cluster dir> *args``
and prints one JSON event per line, in its own order: ``assign`` / ``revoke`` (with the result
of the commit made inside it) / ``lost`` with their partitions, ``record`` with partition,
offset, value and wall time, ``commit-failed``. The pure functions read those timelines.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftlog.client import Admin, Producer
from raftlog.client.group_admin import GroupDescription
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import group_pb2, group_pb2_grpc

__all__ = [
    "CALLBACKS",
    "EAGER",
    "MEMBER",
    "ConsumerProcess",
    "Feed",
    "coordinator_of",
    "describe_group",
    "longest_pause",
    "owned_after",
    "records_outside_ownership",
    "wait_until",
]

TopicPartition = tuple[str, int]
CALLBACKS = ("assign", "revoke", "lost")
EAGER = "sticky,range,roundrobin"  # the consumer's default assignors: an eager member

# argv: bootstrap, cluster dir, group, topic, instance id ("" for none), assignors (comma list).
# SIGTERM closes the consumer (a clean leave); commits follow every poll that returned records.
MEMBER = r"""
import inspect, json, signal, sys, time
from raftlog.client import ClientSecurity, Consumer
bootstrap, tls, group, topic, instance, assignors = sys.argv[1:7]
extra = {"group_instance_id": instance} if instance else {}
c = Consumer(bootstrap, group_id=group, session_timeout_ms=3000, heartbeat_interval_ms=300,
             enable_auto_commit=False, auto_offset_reset="earliest",
             assignors=assignors.split(","), security=ClientSecurity.from_dir(tls), **extra)
def say(**event):
    print(json.dumps(event), flush=True)
def on_assign(parts):
    say(event="assign", partitions=sorted(parts), generation=c.group.generation, t=time.time())
def on_revoke(parts):
    try:
        c.commit()  # the member is still in the group: this must succeed
        ok = True
    except Exception as exc:
        ok = str(exc)
    say(event="revoke", partitions=sorted(parts), commit=ok, t=time.time())
def on_lost(parts):
    say(event="lost", partitions=sorted(parts), t=time.time())
callbacks = {"on_assign": on_assign, "on_revoke": on_revoke}
if "on_lost" in inspect.signature(c.subscribe).parameters:  # older consumers have none
    callbacks["on_lost"] = on_lost
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
c.subscribe([topic], **callbacks)
while not stopping:
    records = c.poll(timeout_ms=200)
    for r in records:  # "process" each record, then commit: at-least-once
        say(event="record", p=r.partition, o=r.offset, v=r.value.decode(), t=time.time())
    if records:
        try:
            c.commit()
        except Exception as exc:
            say(event="commit-failed", error=str(exc))
c.close()
say(event="closed", t=time.time())
"""


class ConsumerProcess:
    """One member process; ``events`` fills as it prints them."""

    def __init__(self, script: str, cluster: LocalCluster, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, cluster.bootstrap, str(cluster.dir), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @classmethod
    def member(
        cls,
        cluster: LocalCluster,
        group: str,
        topic: str,
        *,
        instance: str = "",
        assignors: str = EAGER,
    ) -> ConsumerProcess:
        """A process running ``MEMBER``."""
        return cls(MEMBER, cluster, group, topic, instance, assignors)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind]

    @property
    def assignment(self) -> list[TopicPartition]:
        """The partitions this member holds now, by its own callbacks."""
        return sorted(owned_after(list(self.events)))

    def values(self) -> list[str]:
        return [e["v"] for e in self.of("record")]

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one too
            self.process.kill()
        self.process.wait(10)


# ---- what the timelines say (pure) ---------------------------------------------------------------


def owned_after(
    events: Iterable[dict[str, Any]], owned: set[TopicPartition] | None = None
) -> set[TopicPartition]:
    """What a member owns after ``events`` (starting from ``owned``): an assign adds (a
    cooperative member is told only what it gains; an eager one revoked everything first), a
    revoke or loss takes away."""
    owned = set(owned or ())
    for e in events:
        if e["event"] == "assign":
            owned |= {(t, p) for t, p in e["partitions"]}
        elif e["event"] in ("revoke", "lost"):
            owned -= {(t, p) for t, p in e["partitions"]}
    return owned


def records_outside_ownership(events: Sequence[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    """Records a member returned for a partition it did not own at that point of its timeline."""
    bad, since = [], 0
    owned: set[TopicPartition] = set()
    for i, e in enumerate(events):
        if e["event"] in CALLBACKS:
            owned = owned_after(events[since : i + 1], owned)
            since = i + 1
        elif e["event"] == "record" and (topic, e["p"]) not in owned:
            bad.append(e)
    return bad


def longest_pause(times: Iterable[float], start: float, end: float) -> float:
    """The longest gap between processing ``times`` of one partition around [start, end]: from
    the last before ``start`` to the first after ``end`` (the whole window if none in it)."""
    ordered = sorted(times)
    before = [t for t in ordered if t < start][-1:]
    after = [t for t in ordered if t > end][:1]
    window = before + [t for t in ordered if start <= t <= end] + after
    if len(window) < 2:
        return end - start
    return max(b - a for a, b in itertools.pairwise(window))


# ---- asking the cluster about a group ----------------------------------------------------------


def describe_group(cluster: LocalCluster, group: str) -> GroupDescription:
    """DescribeGroup through the brokers that run now."""
    alive = ",".join(n.grpc for i, n in cluster.nodes.items() if cluster.is_running(i))
    with Admin(alive, timeout_s=10, security=cluster.security) as admin:
        return admin.describe_group(group)


def coordinator_of(cluster: LocalCluster, group: str) -> int:
    """The group coordinator's broker id, -1 while none is named."""
    alive = next(n for i, n in cluster.nodes.items() if cluster.is_running(i))
    stub = group_pb2_grpc.GroupCoordinatorStub(cluster.security.channel(alive.grpc))
    answer = stub.FindCoordinator(group_pb2.FindCoordinatorRequest(group_id=group), timeout=10)
    return int(answer.coordinator_id) if not answer.error.code else -1


# ---- waiting and feeding ------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` every 0.1 s; the seconds it took, or AssertionError after the bound."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Feed:
    """Produces records ``0, 1, …`` round-robin over ``partitions`` until stopped, in steps of
    0.1 s, each step acknowledged (acks=all) before the next."""

    def __init__(
        self, cluster: LocalCluster, topic: str, partitions: int, per_second: int = 200
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.per_second = per_second
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with Producer(self.cluster.bootstrap, security=self.cluster.security) as producer:
            while not self._stop.is_set():
                futures = [
                    producer.send(self.topic, f"{i}".encode(), partition=i % self.partitions)
                    for i in range(self.sent, self.sent + self.per_second // 10)
                ]
                for future in futures:
                    future.result(timeout=60)  # acknowledged before it counts as sent
                self.sent += len(futures)
                time.sleep(0.1)

    def stop(self) -> set[str]:
        """Stop; the values acknowledged."""
        self._stop.set()
        self.thread.join(90)
        return {str(i) for i in range(self.sent)}
