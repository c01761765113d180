"""Two clock domains that the type checker keeps apart, and the clocks that give them.

* ``WallMs`` — milliseconds since the Unix epoch, the domain of record timestamps: retention
  (``retention.ms``), segment age (``segment.ms``), ``flush.ms``, producer-id expiry. Two machines
  roughly agree on it; it may jump (NTP, an operator).
* ``MonoMs`` — milliseconds on a monotonic clock that only this process reads: timeouts, ISR lag,
  delays, the purgatory's timing wheel. It never jumps, and means nothing across processes.

They are ``NewType``s of ``int``: free at run time, and ``mypy --strict`` refuses a ``MonoMs``
where a ``WallMs`` is wanted, and a bare ``int`` where either is (the bug this prevents: a broker
handed its monotonic clock to retention, which compared it with record timestamps and so never
deleted anything). Arithmetic on them gives plain ``int``s; wrap a computed instant again
(``WallMs(now - retention_ms)``) where it is one.

One injectable ``Clock`` gives both: ``SystemClock`` in a broker, ``ManualClock`` in tests and the
seeded simulation (time moves only when told).
"""

from __future__ import annotations

import time
from typing import NewType, Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "MonoMs", "SystemClock", "WallMs"]

WallMs = NewType("WallMs", int)
MonoMs = NewType("MonoMs", int)


class Clock(Protocol):
    def wall_ms(self) -> WallMs: ...

    def mono_ms(self) -> MonoMs: ...


class SystemClock:
    """The machine's clocks. Stateless, thread-safe."""

    def wall_ms(self) -> WallMs:
        return WallMs(time.time_ns() // 1_000_000)

    def mono_ms(self) -> MonoMs:
        return MonoMs(time.monotonic_ns() // 1_000_000)


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """Time that moves only when told (``advance``), both domains together; the wall clock can
    also be set on its own (an NTP step). Not thread-safe: one owner."""

    def __init__(self, wall_ms: int = 1_700_000_000_000, mono_ms: int = 1_000_000) -> None:
        self._wall = wall_ms
        self._mono = mono_ms

    def wall_ms(self) -> WallMs:
        return WallMs(self._wall)

    def mono_ms(self) -> MonoMs:
        return MonoMs(self._mono)

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a monotonic clock does not go back")
        self._wall += ms
        self._mono += ms

    def set_wall(self, wall_ms: int) -> None:
        self._wall = wall_ms
