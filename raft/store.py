"""The metadata state machine behind a lock, as the quorum's ``StateMachine``.

Thread model: ``apply`` and ``restore`` run on the quorum's Raft thread; every other thread reads
through ``read()`` (a context manager holding the lock) or the copying helpers. Observers are
called on the Raft thread after each apply, outside the lock, with what changed; they must be
quick (the broker's observer queues replica events for its own thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .commands import encode_result
from .metadata import MetadataState
from .metadata_records import Applied

__all__ = ["MetadataStore", "Observer"]

# (applied, restored): ``applied`` is what one command changed; ``restored`` is True after a
# snapshot replaced the whole state (then look at everything).
Observer = Callable[[Applied | None, bool], None]


class MetadataStore:
    """Owns the ``MetadataState`` of one node."""

    def __init__(self) -> None:
        self._state = MetadataState()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._observers: list[Observer] = []
        self.restores = 0

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    # ---- the StateMachine protocol ---------------------------------------------------------

    def apply(self, command: bytes) -> bytes:
        with self._lock:
            applied = self._state.apply(command)
            self._changed.notify_all()
        for observer in self._observers:
            observer(applied, False)
        return encode_result(applied.result)

    def snapshot(self) -> bytes:
        return self.snapshot_encoder()()

    def snapshot_encoder(self) -> Callable[[], bytes]:
        """Raft thread: capture the state now (cheap); the function returned encodes it on any
        thread (``SnapshotCapture`` of the quorum: the snapshot is written off the Raft thread)."""
        with self._lock:
            return self._state.snapshot_encoder()

    def restore(self, data: bytes) -> None:
        state = MetadataState.from_snapshot(data)
        with self._lock:
            self._state = state
            self.restores += 1
            self._changed.notify_all()
        for observer in self._observers:
            observer(None, True)

    # ---- reading ---------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[MetadataState]:
        """The live state under the lock: read, copy what you need, and leave quickly."""
        with self._lock:
            yield self._state

    @property
    def version(self) -> int:
        with self._lock:
            return self._state.version

    def wait_for_version(self, version: int, timeout_s: float) -> bool:
        """Block until this node applied ``version`` commands (read-your-writes for admin)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state.version >= version, timeout_s)
