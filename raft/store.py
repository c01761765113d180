"""The metadata state machine behind a lock, as the quorum's ``StateMachine``.

Thread model: ``apply`` and ``restore`` run on the quorum's Raft thread (on a broker that is not
a voter, on the thread that applies what it fetched from the voters); every other thread reads
through ``read()`` (a context manager holding the lock) or the copying helpers. Observers are
called on that thread after each apply, outside the lock, with what changed; they must be
quick (the broker's observer queues replica events for its own thread).

The store also keeps the last commands it applied (the *tail*, bounded by count and bytes), so a
broker that is not a voter can follow the metadata by asking for the commands after its version
(``commands_after``) and take the whole state only when they are gone. A version names the same
command on every node: it counts applied commands, refused ones too, and a snapshot carries it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .commands import encode_result
from .metadata import MetadataState
from .metadata_records import Applied

__all__ = ["TAIL_BYTES_MAX", "TAIL_COMMANDS_MAX", "CatchingUpMachine", "MetadataStore", "Observer"]

# the applied commands kept for brokers that follow the metadata without voting: enough for a
# broker that was away for minutes of ordinary churn; one that was away longer takes a snapshot
TAIL_COMMANDS_MAX = 100_000
TAIL_BYTES_MAX = 64 << 20

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
        self._tail: deque[bytes] = deque()  # the commands of versions _tail_first, _tail_first+1…
        self._tail_first = 1
        self._tail_bytes = 0

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    # ---- the StateMachine protocol ---------------------------------------------------------

    def apply(self, command: bytes) -> bytes:
        with self._lock:
            applied = self._state.apply(command)
            self._keep(command)
            self._changed.notify_all()
        for observer in self._observers:
            observer(applied, False)
        return encode_result(applied.result)

    def _keep(self, command: bytes) -> None:
        """Add the command just applied (version ``state.version``) to the tail, within bounds."""
        tail = self._tail
        if not tail:
            self._tail_first = self._state.version
        tail.append(command)
        self._tail_bytes += len(command)
        while len(tail) > TAIL_COMMANDS_MAX or (
            self._tail_bytes > TAIL_BYTES_MAX and len(tail) > 1
        ):
            self._tail_bytes -= len(tail.popleft())
            self._tail_first += 1

    def snapshot(self) -> bytes:
        return self.snapshot_encoder()()

    def snapshot_encoder(self) -> Callable[[], bytes]:
        """Raft thread: capture the state now (cheap); the function returned encodes it on any
        thread (``SnapshotCapture`` of the quorum: the snapshot is written off the Raft thread)."""
        with self._lock:
            return self._state.snapshot_encoder()

    def restore(self, data: bytes) -> None:
        self._restore(MetadataState.from_snapshot(data))

    def restore_if_newer(self, data: bytes) -> bool:
        """Take a snapshot fetched from a voter unless it is older than what we applied (a
        follower never goes back: a lagging voter's state is a valid but older one)."""
        state = MetadataState.from_snapshot(data)
        if state.version < self.version:
            return False
        self._restore(state)
        return True

    def _restore(self, state: MetadataState) -> None:
        with self._lock:
            self._state = state
            self.restores += 1
            self._tail.clear()
            self._tail_bytes = 0
            self._tail_first = state.version + 1
            self._changed.notify_all()
        for observer in self._observers:
            observer(None, True)

    # ---- following (brokers that are not voters) -------------------------------------------

    def commands_after(self, version: int, bytes_max: int) -> tuple[int, list[bytes]] | None:
        """(our version, the commands that follow ``version``, at most ``bytes_max`` of them but
        at least one); None when the first of them is no longer kept (take a snapshot). A
        ``version`` at or beyond ours gets no commands: we have nothing newer."""
        with self._lock:
            current = self._state.version
            if version >= current:
                return current, []
            start = version + 1 - self._tail_first
            if start < 0:
                return None
            out: list[bytes] = []
            size = 0
            for command in itertools.islice(self._tail, start, None):
                if out and size + len(command) > bytes_max:
                    break
                out.append(command)
                size += len(command)
            return current, out

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


class CatchingUpMachine:
    """The ``StateMachine`` a Raft member feeds into a store that may be *ahead* of its log.

    A broker that follows the metadata as an observer and then becomes a voter
    (``raftlog quorum add-voter``) starts a Raft member whose log begins empty or at an old
    snapshot, while its store already holds a newer state. Versions name the same command on
    every node (see ``MetadataStore``), so the log's commands are counted (``position``: the
    version the log has delivered) and applied only once they are newer than the store: the
    store never goes back, as an observer never does. Raft thread only, like any machine.

    Example: store at version 40; the leader sends a snapshot at version 25, then commands 26..45:
    the snapshot and commands 26..40 are counted, 41..45 applied.

    While ``position`` is behind the store no snapshot can be taken (it would claim a Raft
    index with a newer state): :meth:`snapshot` raises, and pysyncobj tries again later.
    """

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.position = 0

    def apply(self, command: bytes) -> bytes:
        self.position += 1
        if self.position <= self.store.version:
            return encode_result({"ok": True, "caught_up_by": "observer"})
        return self.store.apply(command)

    def snapshot(self) -> bytes:
        return self.snapshot_encoder()()

    def snapshot_encoder(self) -> Callable[[], bytes]:
        if self.position < self.store.version:
            raise RuntimeError(
                f"catching up: the Raft log is at version {self.position}, "
                f"the store at {self.store.version}"
            )
        return self.store.snapshot_encoder()

    def restore(self, data: bytes) -> None:
        version = MetadataState.from_snapshot(data).version
        self.position = version
        if version >= self.store.version:
            self.store.restore(data)
