"""An asyncio event loop whose clock is virtual: time moves only when nothing is ready to run.

The "looptime" technique: ``time()`` returns a virtual clock, and the selector never blocks —
when the loop would wait for ``timeout`` seconds it instead jumps the clock to the next scheduled
callback. So ``asyncio.sleep(60)`` returns at once in wall time and exactly 60 s later in loop
time, and a simulation of minutes runs in the CPU time its callbacks take. Nothing may do real
IO through the loop (no sockets, no threads, no ``call_soon_threadsafe``): a loop with nothing
ready and nothing scheduled has deadlocked, and says so (``SimulationStalled``) instead of
sleeping forever.

Determinism: callbacks run in the order asyncio gives them (FIFO for ready ones, heap order of
``(when, insertion)`` for timers), which is the same in every run that schedules the same
callbacks in the same order. Owned by the one thread that runs it; not thread-safe.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["SimulationStalled", "VirtualTimeLoop"]


class SimulationStalled(RuntimeError):
    """The loop has nothing to run and nothing scheduled: every task waits on something that no
    callback will ever deliver (a bug in the simulation, not in the code under test)."""


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class _NullSelector(selectors.BaseSelector):
    """Keeps registrations (the loop registers its self-pipe) but never reports an event; a
    wait becomes a jump of the loop's virtual clock."""

    def __init__(self) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(_fd(fileobj))

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        self.loop._wait(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """See the module docstring. ``time()`` starts at 0.0 seconds."""

    def __init__(self) -> None:
        self._virtual_s = 0.0
        selector = _NullSelector()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_s

    def _wait(self, timeout: float | None) -> None:
        """Instead of blocking for ``timeout`` seconds: jump to the next timer."""
        if timeout is None:
            raise SimulationStalled("nothing is ready and nothing is scheduled")
        if timeout > 0:
            # _run_once computed the timeout from the head of its timer heap (cancelled heads
            # already popped): jump exactly there, so the timer is due in this very iteration
            scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
            self._virtual_s = max(self._virtual_s, scheduled[0].when())
