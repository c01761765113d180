"""Consumer processes for the group tests: each runs a script that prints one JSON event per
line (``{"event": "assign" | "revoke" | "lost", "partitions": [[topic, p], ...]}``, ``{"event":
"record", "p": ..., "o": ..., "v": ...}``, …), and the test reads each member's own timeline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from raftlog.client.local_cluster import LocalCluster

TopicPartition = tuple[str, int]


class ConsumerProcess:
    """``script`` run as ``python -c script <bootstrap> <cluster dir> *args``; it reads the
    cluster's certificates itself."""

    def __init__(self, script: str, cluster: LocalCluster, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, cluster.bootstrap, str(cluster.dir), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

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


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
