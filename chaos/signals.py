"""The harness's signals: while a chaos cluster is up, SIGINT and SIGTERM must end in its
clean-up, and must not interrupt that clean-up half-way.

``exit_on_signals()`` makes SIGTERM raise SystemExit and SIGINT KeyboardInterrupt (the default
SIGTERM action would skip every ``__exit__`` and ``finally``, leaving namespaces and brokers
behind); ``restore`` undoes it. ``signals_deferred()`` holds both during clean-up (a second
Ctrl-C must not leave half a network) and re-delivers one afterwards. Signal handlers belong to
the main thread: from any other thread these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["exit_on_signals", "restore", "signals_deferred"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def exit_on_signals() -> dict[int, Any]:
    """SIGTERM raises SystemExit(128 + 15) and SIGINT KeyboardInterrupt from now on; returns
    the handlers replaced (for ``restore``)."""
    if not _main_thread():
        return {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    return {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}


def restore(saved: dict[int, Any]) -> None:
    """Put back the handlers ``exit_on_signals`` replaced (and forget them)."""
    for signum, handler in saved.items():
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    saved.clear()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM inside the block; re-deliver one afterwards unless an exception is
    already on its way out."""
    if not _main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    saved = {s: signal.signal(s, remember) for s in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if received and sys.exc_info()[0] is None:
            signal.raise_signal(received[0])
