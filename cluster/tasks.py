"""Fire-and-forget tasks that are neither forgotten nor lost.

asyncio keeps only a weak reference to a task: one started with ``create_task`` and not held
anywhere may be garbage-collected before it finishes (the documentation's warning), and an
exception in it is reported only when it is collected. ``TaskSet.spawn`` holds every task until
it ends, logs what it raised, and ``cancel_all`` ends them at shutdown. Owned by one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["DeadlineTimer", "TaskSet"]

logger = logging.getLogger(__name__)


class TaskSet:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: a background task failed", self.name, exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class DeadlineTimer:
    """Runs ``work`` when ``next_due()`` (monotonic ms, None: nothing due) comes, and sleeps
    otherwise: one loop timer, re-armed only when an earlier deadline appears (``rearm``).

    Replaces polling a purgatory every 5 ms, which was most of an idle broker's loop wake-ups:
    an idle broker now wakes when a delayed fetch's long poll times out, not 200 times a second.
    Each firing runs ``work`` once and re-arms for what is left; the 1 ms slack keeps a timer
    that asyncio fires a hair early from spinning (``work`` is due at the deadline, not before).
    Owned by one event loop, used only on it.
    """

    SLACK_S = 0.001

    def __init__(
        self,
        work: Callable[[], object],
        next_due: Callable[[], int | None],
        now_ms: Callable[[], int],
    ) -> None:
        self._work = work
        self._next_due = next_due
        self._now_ms = now_ms
        self._handle: asyncio.TimerHandle | None = None
        self._at_ms: int | None = None  # the deadline the armed timer is for
        self.firings = 0  # times ``work`` ran (a meter for tests)

    def rearm(self) -> None:
        """Arm for ``next_due()`` unless already armed for it or for something earlier."""
        due = self._next_due()
        if due is None or (self._at_ms is not None and self._at_ms <= due):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at_ms = due
        delay_s = max(0, due - self._now_ms()) / 1000 + self.SLACK_S
        self._handle = asyncio.get_running_loop().call_later(delay_s, self._fire)

    def _fire(self) -> None:
        self._handle = self._at_ms = None
        self.firings += 1
        try:
            self._work()
        except Exception:
            logger.exception("timed %s failed", getattr(self._work, "__name__", self._work))
        self.rearm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at_ms = None
