"""Delayed operations that wait for a condition or a deadline: Kafka's purgatory, as a pure core.

A delayed produce (acks=all) waits until the high watermark passes its last offset; a delayed
fetch waits until enough bytes are readable. Both also wait for a deadline. Following Kafka, the
code separates *what* an operation waits for (``DelayedOperation.try_complete``,
``on_complete``, ``on_expiration``) from *how* it waits (``Purgatory.try_complete_else_watch``,
``check_and_complete``, ``advance_clock``). Deadlines sit on a hierarchical ``TimingWheel``
instead of one timer per request.

Pure: no threads, clocks, sockets or files. Time comes in as ``now_ms`` (a monotonic clock in
milliseconds). Nothing here is thread-safe; see ``Purgatory`` for who holds the lock.

Timing wheel, worked example (``tick_ms=5, wheel_size=20``): wheel 0 covers 100 ms in buckets
of 5 ms, wheel 1 (created when first needed) covers 2 s in buckets of 100 ms, wheel 2 covers 40 s
in buckets of 2 s, and so on. A deadline is first rounded *up* to a whole tick, so a task never
fires early: at ``now_ms=0`` a task due at 1234 ms becomes 1235 and goes into wheel 1's bucket
[1200, 1300). When the clock reaches 1200 that bucket is flushed and the task drops into wheel 0's
bucket 1235, which the first ``advance(now_ms >= 1235)`` returns. So a task is returned by the
first advance whose ``now_ms`` reaches its deadline rounded up to the tick: never before its
deadline, and less than one tick after it when the clock is advanced at least once a tick.
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from raftlog.proto.codes import ErrorCode
from raftlog.segments.clock import MonoMs

__all__ = ["DelayedOperation", "Purgatory", "PurgatoryFullError", "TimingWheel"]

T = TypeVar("T", bound=Hashable)
K = TypeVar("K", bound=Hashable)


def _require(condition: bool, message: str) -> None:
    """Crash on a broken invariant: a bug in this module or in an operation, never bad input."""
    if not condition:
        raise AssertionError(message)


class PurgatoryFullError(Exception):
    """The purgatory holds ``max_operations`` waiting operations; the request is not accepted.

    The broker answers the request with REQUEST_TIMED_OUT (the client retries with backoff)
    instead of letting the purgatory grow without bound.
    """

    code = ErrorCode.REQUEST_TIMED_OUT
    retriable = True


class _Bucket(Generic[T]):
    """The tasks of one tick of one wheel (one slot, reused as the wheel turns)."""

    __slots__ = ("expiration_ms", "tasks")

    def __init__(self) -> None:
        self.expiration_ms: int | None = None  # not None exactly while the bucket is in the heap
        self.tasks: dict[T, int] = {}  # task -> its deadline rounded up to the base tick


class _Wheel(Generic[T]):
    """One level: ``wheel_size`` buckets of ``tick_ms`` each, covering ``interval_ms``."""

    __slots__ = ("buckets", "current_ms", "interval_ms", "tick_ms")

    def __init__(self, tick_ms: int, wheel_size: int, now_ms: int) -> None:
        self.tick_ms = tick_ms
        self.interval_ms = tick_ms * wheel_size
        self.current_ms = now_ms - now_ms % tick_ms  # a multiple of tick_ms; never decreases
        self.buckets: list[_Bucket[T]] = [_Bucket() for _ in range(wheel_size)]


class TimingWheel(Generic[T]):
    """Hierarchical timing wheel (Kafka's ``TimingWheel`` + ``SystemTimer``, minus the thread).

    Owned by one ``Purgatory`` (or any single owner); not thread-safe. Tasks are hashable and
    compared by ``==``; each task is scheduled at most once (adding it again reschedules it).

    Wheel ``n`` has ticks of ``tick_ms * wheel_size**n``; wheels above 0 are created lazily when
    a deadline lies beyond the wheels so far. Instead of Kafka's DelayQueue of buckets, a heap of
    (bucket expiration, bucket) tells ``advance`` which bucket is due next, so an idle gap costs
    nothing per empty tick. Invariant: every bucket of wheel ``n`` that holds tasks (or sits in
    the heap) has an expiration in ``(current_ms, current_ms + interval_ms)`` of that wheel, so
    the ``wheel_size - 1`` possible expirations map to distinct slots.

    Cost, with ``L`` wheels (``L <= 1 + log_wheel_size(longest delay / tick_ms)``) and at most
    ``B = L * wheel_size`` buckets (so at most ``B`` heap entries): ``add`` O(L + log B),
    ``cancel`` O(1), ``advance`` O(L) plus O(log B) per due bucket and O(L) per due task
    (a task moves down at most ``L`` times in its life).
    """

    def __init__(self, *, tick_ms: int = 5, wheel_size: int = 20, start_ms: int = 0) -> None:
        if tick_ms < 1 or wheel_size < 2:
            raise ValueError("tick_ms must be >= 1 and wheel_size >= 2")
        self._wheel_size = wheel_size
        self._now_ms = start_ms  # the latest advance; deadlines <= this are already expired
        self._wheels: list[_Wheel[T]] = [_Wheel(tick_ms, wheel_size, start_ms)]
        self._heap: list[tuple[int, int, _Bucket[T]]] = []  # (expiration_ms, seq, bucket)
        self._seq = itertools.count()  # heap tie-break: buckets do not compare
        self._where: dict[T, _Bucket[T]] = {}  # every scheduled task -> its bucket
        self.bucket_flushes = 0  # buckets visited by advance, ever (a cost meter for tests)

    @property
    def tick_ms(self) -> int:
        return self._wheels[0].tick_ms

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def size(self) -> int:
        """Tasks scheduled and not yet returned or cancelled."""
        return len(self._where)

    @property
    def levels(self) -> int:
        """Wheels created so far (1 + the overflow wheels)."""
        return len(self._wheels)

    def __contains__(self, task: T) -> bool:
        return task in self._where

    def next_expiration_ms(self) -> int | None:
        """When the next ``advance`` may return a task (the earliest bucket that holds one), or
        None when nothing is scheduled: what a caller sleeps until instead of ticking.

        Buckets emptied by ``cancel`` are dropped from the top of the heap here, so an idle
        wheel wakes nobody. Amortised O(log buckets)."""
        heap = self._heap
        while heap and not heap[0][2].tasks:
            _, _, bucket = heapq.heappop(heap)
            bucket.expiration_ms = None
        return heap[0][0] if heap else None

    def add(self, task: T, expiration_ms: int) -> bool:
        """Schedule ``task``; False (and nothing scheduled) if ``expiration_ms <= now_ms``."""
        if expiration_ms <= self._now_ms:
            return False
        self.cancel(task)
        rounded_ms = -(-expiration_ms // self.tick_ms) * self.tick_ms  # round up: never early
        _require(self._place(task, rounded_ms), "a future deadline must land in a bucket")
        return True

    def cancel(self, task: T) -> bool:
        """Unschedule ``task`` in O(1); False if it was not scheduled."""
        bucket = self._where.pop(task, None)
        if bucket is None:
            return False
        del bucket.tasks[task]  # an emptied bucket stays in the heap and is flushed empty
        return True

    def advance(self, now_ms: int) -> list[T]:
        """Move the clock to ``now_ms``; return the tasks now due, by rounded deadline.

        Flushes only the due buckets, in expiration order: tasks of a coarse bucket drop into a
        finer wheel (or come out, if their rounded deadline has come).
        """
        if now_ms < self._now_ms:
            raise ValueError(f"time went backwards: {now_ms} < {self._now_ms}")
        expired: list[T] = []
        while self._heap and self._heap[0][0] <= now_ms:
            expiration_ms, _, bucket = heapq.heappop(self._heap)
            self._set_time(expiration_ms)
            self.bucket_flushes += 1
            tasks, bucket.tasks, bucket.expiration_ms = bucket.tasks, {}, None
            for task, rounded_ms in tasks.items():
                del self._where[task]
                if not self._place(task, rounded_ms):
                    expired.append(task)
        self._set_time(now_ms)
        self._now_ms = now_ms
        return expired

    def _set_time(self, now_ms: int) -> None:
        for wheel in self._wheels:
            wheel.current_ms = max(wheel.current_ms, now_ms - now_ms % wheel.tick_ms)

    def _place(self, task: T, rounded_ms: int) -> bool:
        """Put ``task`` in the finest wheel that spans its deadline; False if it is due."""
        level = 0
        while True:
            wheel = self._wheels[level]
            if rounded_ms < wheel.current_ms + wheel.tick_ms:
                # Due. Only wheel 0 can get here: a task reaches wheel n+1 only when its deadline
                # is >= wheel n's current_ms + interval_ms >= wheel n+1's current_ms + tick_ms.
                return False
            if rounded_ms < wheel.current_ms + wheel.interval_ms:
                virtual_id = rounded_ms // wheel.tick_ms
                bucket = wheel.buckets[virtual_id % self._wheel_size]
                bucket_ms = virtual_id * wheel.tick_ms
                if bucket.expiration_ms is None:
                    bucket.expiration_ms = bucket_ms
                    heapq.heappush(self._heap, (bucket_ms, next(self._seq), bucket))
                _require(bucket.expiration_ms == bucket_ms, "two expirations share a bucket")
                bucket.tasks[task] = rounded_ms
                self._where[task] = bucket
                return True
            level += 1
            if level == len(self._wheels):
                self._wheels.append(_Wheel(wheel.interval_ms, self._wheel_size, wheel.current_ms))


class DelayedOperation(ABC):
    """A request waiting in a purgatory for a condition or for its deadline, whichever is first.

    Created by the request handler, then owned by the ``Purgatory`` it waits in and touched only
    under the purgatory owner's lock; not thread-safe. Hashed and compared by identity: do not
    define ``__eq__``.

    Subclasses say what they wait for: ``try_complete`` checks the condition and, if it holds,
    calls ``force_complete()``. Completion happens exactly once: ``force_complete`` flips
    ``completed`` and runs ``on_complete`` only the first time, whether the cause is the
    condition, the deadline or an explicit force (a leader change, a shutdown). On expiration
    the purgatory calls ``on_complete`` and then ``on_expiration`` (Kafka's order), so
    ``on_complete`` builds the response in every case and ``on_expiration`` is for bookkeeping.
    """

    __slots__ = ("_completed", "_on_done", "deadline_ms")

    def __init__(self, deadline_ms: int) -> None:
        self.deadline_ms = deadline_ms  # expire when the clock reaches this
        self._completed = False
        self._on_done: Callable[[DelayedOperation], None] | None = None  # set while watched

    @property
    def completed(self) -> bool:
        return self._completed

    def force_complete(self) -> bool:
        """Complete now, whatever the condition; True only for the call that completed it.

        The operation leaves its purgatory's timer before ``on_complete`` runs, so a callback
        always sees the purgatory without this operation pending.
        """
        if self._completed:
            return False
        self._completed = True
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)
        self.on_complete()
        return True

    @abstractmethod
    def try_complete(self, now_ms: int) -> bool:
        """If what we wait for has happened, return ``self.force_complete()``; else False."""

    @abstractmethod
    def on_complete(self) -> None:
        """Runs exactly once per operation, whatever completed it: send the response here."""

    @abstractmethod
    def on_expiration(self) -> None:
        """Runs once, after ``on_complete``, when the deadline won; never after a completion."""


def _expire(op: DelayedOperation) -> bool:
    if not op.force_complete():
        return False  # completed first: the deadline lost
    op.on_expiration()
    return True


@dataclass(frozen=True, slots=True)
class _Watch:
    seq: int  # order of watching: breaks ties between equal deadlines
    key_count: int  # distinct keys the operation is watched under


class Purgatory(Generic[K]):
    """Delayed operations watched under keys (e.g. a topic-partition) until done or expired.

    Owned by the replica manager, which holds its own lock around every call, callbacks
    included; the purgatory is not thread-safe and takes no lock. Because of that lock, Kafka's
    second ``try_complete`` after watching (which closes the race with a concurrent append) is
    not needed here: no key can fire between the first try and the watch.

    Callbacks (``on_complete``, ``on_expiration``) run synchronously inside the call that caused
    them, in a stated order, each operation's callbacks before the next operation is looked at:

    - ``try_complete_else_watch``: only the given operation's own callbacks.
    - ``check_and_complete(key)``: watchers of ``key`` in the order they were watched.
    - ``advance_clock``: expired operations by ``deadline_ms``, ties in order of watching.

    A callback may call the purgatory again (a produce completing may wake a fetch); operations
    watched meanwhile are not tried by the call in progress.

    Completed operations leave the timer at once but stay in the watch lists of their other keys
    until those keys are checked or a purge sweeps every list. Every public call ends by purging
    if more than ``purge_interval`` stale entries exist, so after any call there are at most that
    many (cost O(entries), once per ``purge_interval`` stale entries). ``max_operations`` bounds
    the operations waiting at once.
    """

    def __init__(
        self,
        *,
        max_operations: int = 10_000,
        purge_interval: int = 1_000,
        tick_ms: int = 5,
        wheel_size: int = 20,
        start_ms: int = 0,
    ) -> None:
        if max_operations < 1 or purge_interval < 0:
            raise ValueError("max_operations must be >= 1 and purge_interval >= 0")
        self._max_operations = max_operations
        self._purge_interval = purge_interval
        self._timer: TimingWheel[DelayedOperation] = TimingWheel(
            tick_ms=tick_ms, wheel_size=wheel_size, start_ms=start_ms
        )
        self._watchers: dict[K, list[DelayedOperation]] = {}  # may hold completed operations
        self._pending: dict[DelayedOperation, _Watch] = {}  # == the timer's tasks
        self._watch_entries = 0  # sum of len(list) over _watchers
        self._live_entries = 0  # sum of key_count over _pending; <= _watch_entries
        self._seq = itertools.count()

    @property
    def size(self) -> int:
        """Operations waiting (watched, neither completed nor expired)."""
        return len(self._pending)

    @property
    def max_operations(self) -> int:
        return self._max_operations

    def watched(self, key: K) -> int:
        """Entries in ``key``'s watch list, counting completed ones not yet purged (as Kafka)."""
        return len(self._watchers.get(key, ()))

    def try_complete_else_watch(
        self, op: DelayedOperation, keys: Iterable[K], now_ms: MonoMs
    ) -> bool:
        """Complete ``op`` now if it can (True); else watch it under ``keys`` until its deadline.

        An operation whose deadline has passed is expired at once (False). Raises
        ``PurgatoryFullError`` when ``op`` would have to wait and ``max_operations`` already do;
        ``op`` is then left untouched (tried once, not completed) for the caller to answer.
        """
        try:
            return self._complete_else_watch(op, keys, now_ms)
        finally:
            self._maybe_purge()

    def _complete_else_watch(self, op: DelayedOperation, keys: Iterable[K], now_ms: int) -> bool:
        watch_keys = list(dict.fromkeys(keys))
        if not watch_keys:
            raise ValueError("an operation must be watched under at least one key")
        if op.completed or op in self._pending:
            raise ValueError("the operation is already completed or watched")
        if self._try(op, now_ms):
            return True
        if op.deadline_ms <= now_ms:
            _expire(op)
            return False
        if len(self._pending) >= self._max_operations:
            raise PurgatoryFullError(f"{len(self._pending)} operations are already waiting")
        if not self._timer.add(op, op.deadline_ms):  # our clock is past now_ms and the deadline
            _expire(op)
            return False
        op._on_done = self._forget
        self._pending[op] = _Watch(next(self._seq), len(watch_keys))
        for key in watch_keys:
            self._watchers.setdefault(key, []).append(op)
        self._watch_entries += len(watch_keys)
        self._live_entries += len(watch_keys)
        return False

    def check_and_complete(self, key: K, now_ms: MonoMs) -> int:
        """Try every operation watched under ``key``; return how many completed."""
        ops = self._watchers.pop(key, None)
        if ops is None:
            self._maybe_purge()
            return 0
        self._watch_entries -= len(ops)  # the list is out of _watchers while callbacks run
        survivors: list[DelayedOperation] = []
        completed = 0
        for op in ops:
            if op.completed:
                continue  # completed under another key, by force or by expiry: drop lazily
            if self._try(op, now_ms):
                completed += 1
            else:
                survivors.append(op)
        survivors = [op for op in survivors if not op.completed]  # a callback may force some
        merged = survivors + self._watchers.pop(key, [])  # + any watched during callbacks
        if merged:
            self._watchers[key] = merged
        self._watch_entries += len(survivors)
        self._maybe_purge()
        return completed

    def next_expiration_ms(self) -> int | None:
        """The earliest time ``advance_clock`` may expire an operation; None when none waits."""
        return self._timer.next_expiration_ms()

    def advance_clock(self, now_ms: MonoMs) -> int:
        """Expire operations whose deadline has come; return how many expired."""
        due = self._timer.advance(now_ms)
        due.sort(key=lambda op: (op.deadline_ms, self._pending[op].seq))
        expired = sum(1 for op in due if _expire(op))
        self._maybe_purge()
        return expired

    def _try(self, op: DelayedOperation, now_ms: int) -> bool:
        done = op.try_complete(now_ms)
        _require(not done or op.completed, f"{op!r}.try_complete returned True but not completed")
        return op.completed

    def _forget(self, op: DelayedOperation) -> None:
        """``op`` completed (or expired): it stops counting and leaves the timer."""
        self._live_entries -= self._pending.pop(op).key_count
        self._timer.cancel(op)

    def _maybe_purge(self) -> None:
        if self._watch_entries - self._live_entries <= self._purge_interval:
            return
        entries = 0
        for key in list(self._watchers):
            live = [op for op in self._watchers[key] if not op.completed]
            if live:
                self._watchers[key] = live
            else:
                del self._watchers[key]
            entries += len(live)
        self._watch_entries = entries
