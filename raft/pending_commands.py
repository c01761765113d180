"""Commands submitted to the quorum and not yet answered, each with its deadline.

Every submitted command gets exactly one answer through its callback: its result or pysyncobj's
failure (delivered by :class:`~raftlog.raft.quorum.RaftQuorum` from the Raft thread through
:meth:`PendingCommands.complete`), a :class:`~raftlog.raft.quorum_types.QuorumTimeoutError` at
its deadline (fired by this object's own timer thread: the Raft thread may be the one that is
stuck), or the error that closed the quorum. Whichever comes first wins; a later one is dropped
(a result that arrives after the timeout is counted in ``late_results``). Bounded: at most
``pending_max`` commands at once (``max_pending_commands``); beyond that a submit is refused
with :class:`~raftlog.raft.quorum_types.QuorumOverloadedError`.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .quorum_types import (
    QuorumClosedError,
    QuorumCounters,
    QuorumError,
    QuorumOverloadedError,
    QuorumTimeoutError,
)

__all__ = ["Callback", "PendingCommands"]

logger = logging.getLogger(__name__)

Callback = Callable[[bytes | None, QuorumError | None], None]  # (result, None) or (None, error)


@dataclass(slots=True)
class _Pending:
    deadline: float
    callback: Callback


class PendingCommands:
    """The commands one :class:`~raftlog.raft.quorum.RaftQuorum` has in flight.

    Owned by that quorum. Thread-safe: one lock guards the table, the deadline heap and
    ``closed``; callbacks always run outside it. Its daemon timer thread (:meth:`start_timer`)
    only fires deadlines. ``clock`` is the quorum's monotonic clock (seconds);
    ``fatal_reason`` says why the quorum stopped itself, or None.
    """

    def __init__(
        self,
        *,
        pending_max: int,
        counters: QuorumCounters,
        clock: Callable[[], float],
        fatal_reason: Callable[[], str | None],
    ) -> None:
        self._pending_max = pending_max
        self._counters = counters
        self._clock = clock
        self._fatal_reason = fatal_reason
        self._lock = threading.Lock()  # guards _pending, _deadlines, _next_token, _closed
        self._deadline_changed = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}  # len <= pending_max
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, token)
        self._next_token = 0
        self._closed = False
        self._timer: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def start_timer(self, name: str) -> None:
        self._timer = threading.Thread(target=self._run_timer, name=name, daemon=True)
        self._timer.start()

    def close(self) -> bool:
        """Stop taking commands and stop the timer thread; False if already closed. Pending
        commands stay until :meth:`fail_all`."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._deadline_changed.notify_all()
        return True

    def add(self, timeout_s: float, callback: Callback, refusal: QuorumError | None) -> int | None:
        """Register ``callback`` with a deadline ``timeout_s`` from now and return its token;
        or, when the quorum is closed (or stopped), ``refusal`` is given (the caller's own
        reason, e.g. not the leader) or ``pending_max`` commands are in flight, call
        ``callback(None, error)`` on this thread and return None."""
        error: QuorumError | None = None
        token = -1
        with self._lock:
            fatal = self._fatal_reason()
            if self._closed or fatal is not None:
                error = QuorumClosedError(fatal or "quorum closed")
            elif refusal is not None:
                error = refusal
            elif len(self._pending) >= self._pending_max:
                error = QuorumOverloadedError(
                    f"{len(self._pending)} commands in flight (max_pending_commands)"
                )
            else:
                token = self._next_token
                self._next_token += 1
                deadline = self._clock() + timeout_s
                self._pending[token] = _Pending(deadline, callback)
                heapq.heappush(self._deadlines, (deadline, token))
                if self._deadlines[0][1] == token:
                    self._deadline_changed.notify()
        if error is not None:
            callback(None, error)
            return None
        return token

    def complete(self, token: int, result: bytes | None, error: QuorumError | None) -> None:
        """The command's outcome arrived (Raft thread); dropped if it already timed out."""
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is None:
                self._counters.late_results += 1
        if pending is not None:
            _deliver(pending, result, error)

    def expire(self, token: int) -> None:
        """Fail the command with a timeout, unless its outcome is being delivered already."""
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is not None:
                self._counters.submit_timeouts += 1
        if pending is not None:
            _deliver(pending, None, QuorumTimeoutError("no result within the timeout"))

    def fail_all(self, error: QuorumError) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        for item in pending:
            _deliver(item, None, error)

    def _run_timer(self) -> None:
        """The timeout thread: fails each pending command at its deadline."""
        while True:
            due: list[int] = []
            with self._lock:
                while not self._closed:
                    now = self._clock()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        _, token = heapq.heappop(self._deadlines)
                        if token in self._pending:
                            due.append(token)
                    if due:
                        break
                    wait_s = self._deadlines[0][0] - now if self._deadlines else None
                    self._deadline_changed.wait(wait_s)
                if self._closed:
                    return
            for token in due:
                self.expire(token)


def _deliver(pending: _Pending, result: bytes | None, error: QuorumError | None) -> None:
    try:
        pending.callback(result, error)
    except Exception:
        logger.exception("a submit callback raised (ignored)")
