"""Windowed rates from cumulative counters: what ``raftlog status`` shows as "per second, lately".

Kafka's metrics library (Tehuti) keeps a windowed ``Rate`` per sensor, bumped on every record.
Here the hot paths only bump plain counters (``traffic.py``) and the broker samples them once a
second into a ``CounterHistory``; a rate is then the difference between the newest sample and
the oldest one inside the window, over the time between them. Nothing runs per record, and any
window up to the history's span can be asked for afterwards (5 s for throughput, a minute for
ISR changes).

Pure: the sample times are passed in (the broker's monotonic clock). A counter missing from an
older sample counts as 0 there (a topic first written meanwhile); a counter that went down was
reset (a partition moved away and back, a process restarted) and counts from its new value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["HISTORY_SPAN_MS", "CounterHistory", "Key"]

HISTORY_SPAN_MS = 70_000  # a minute of ISR changes, and a margin for a late sample

Key = tuple[str, str]  # (counter, topic or "")
_Ends = tuple[int, dict[Key, int], int, dict[Key, int]]


@dataclass(slots=True)
class CounterHistory:
    span_ms: int = HISTORY_SPAN_MS
    _samples: deque[tuple[int, dict[Key, int]]] = field(default_factory=deque)

    def sample(self, now_ms: int, values: Mapping[Key, int]) -> None:
        """Record the counters' values at ``now_ms`` (non-decreasing); drop what is too old to
        matter, keeping one sample at or beyond the span so a full window stays answerable."""
        self._samples.append((now_ms, dict(values)))
        while len(self._samples) > 2 and now_ms - self._samples[1][0] >= self.span_ms:
            self._samples.popleft()

    def _window(self, window_ms: int, now_ms: int) -> _Ends | None:
        """(oldest time, its values, newest time, its values) of the samples in the window."""
        if len(self._samples) < 2:
            return None
        newest_ms, newest = self._samples[-1]
        oldest_ms, oldest = newest_ms, newest
        for at_ms, values in reversed(self._samples):
            if now_ms - at_ms > window_ms:
                break
            oldest_ms, oldest = at_ms, values
        if oldest_ms == newest_ms:
            return None
        return oldest_ms, oldest, newest_ms, newest

    def _grown(self, key: Key, window_ms: int, now_ms: int) -> tuple[int, int]:
        """(how much ``key`` grew within the window, over how many ms); (0, 0) when unknown."""
        found = self._window(window_ms, now_ms)
        if found is None:
            return 0, 0
        oldest_ms, oldest, newest_ms, newest = found
        end = newest.get(key, 0)
        start = oldest.get(key, 0)
        return (end - start if end >= start else end), newest_ms - oldest_ms

    def increase(self, key: Key, window_ms: int, now_ms: int) -> int:
        """How much ``key`` grew within the last ``window_ms`` (0 when unknown)."""
        return self._grown(key, window_ms, now_ms)[0]

    def rate(self, key: Key, window_ms: int, now_ms: int) -> float:
        """``key``'s growth per second over the last ``window_ms`` (0.0 when unknown)."""
        grown, span_ms = self._grown(key, window_ms, now_ms)
        return grown * 1000 / span_ms if span_ms else 0.0

    def keys(self) -> set[Key]:
        """Every counter of the newest sample."""
        return set(self._samples[-1][1]) if self._samples else set()
