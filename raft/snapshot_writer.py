"""The quorum's snapshot file written off the Raft thread (log compaction at scale).

pysyncobj compacts its log by asking its ``Serializer`` for a full dump, on the Raft thread,
and cuts the journal up to the dump's index once the serializer reports success. Writing the
dump there stalled the Raft thread for the whole encoding and fsync — 0.41 s at 100k partitions,
measured, past the 0.15-0.3 s election timeout: a leader that compacted was deposed.
:class:`BackgroundSerializer` replaces pysyncobj's ``Serializer`` (installed process-wide by
:func:`~raftlog.raft.pysyncobj_guards.install_pysyncobj_guards`) and splits the dump in three:

1. **capture**, on the Raft thread, in ``serialize``: the quorum's hook
   (:class:`SnapshotHooks.capture`) copies what the dump will hold — the state machine's
   capture (``snapshot_encoder``: its containers, ~5 ms at 100k partitions), and the log
   entries and voters pysyncobj hands over — at the applied index the dump claims. Nothing
   else runs on the Raft thread in between, so the two agree.
2. **write**, on a writer thread: encode, write ``<dump>.tmp``, fsync. A writer thread at a
   time; while it runs pysyncobj is told ``SERIALIZING`` and starts no other dump.
3. **publish**, back on the Raft thread, in ``checkSerializing`` (every tick): rename the
   temporary file over the dump, fsync the directory, and only then report ``SUCCESS``, after
   which pysyncobj cuts the journal. A power loss before the rename leaves the previous dump
   and the whole journal; after the directory fsync the new dump is durable before a single
   journal entry is dropped.

Renames happen on the Raft thread only, so they are ordered with the other writer of the dump
file: a snapshot *installed* from the leader (pysyncobj renames the received file over the
dump, then loads it through ``deserialize``). A write that was under way when an install
happened holds an older state than the file now does: it is discarded at publish (its
temporary file removed, ``FAILED`` reported, the journal left alone), so the dump never goes
back behind what the journal was cut to.

In-flight transmissions of the dump to followers read the file they opened (the rename does not
change an open file); after a publish they restart from the new dump, as pysyncobj's own
file serializer does, so the leader never pairs an old dump with the log after a new one.

Owned by pysyncobj's ``SyncObj`` (one per quorum). Thread model: every method runs on the Raft
thread; the writer thread touches only its job (:class:`_Job`) and the temporary file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from .journal import fsync_dir

__all__ = ["BackgroundSerializer", "SnapshotHooks", "WriteJob"]

logger = logging.getLogger(__name__)

WriteJob = Callable[[str], None]  # writes and fsyncs the dump at the path it is given
_TMP_SUFFIX: Final = ".tmp"  # pysyncobj's own name for its dump in progress


@dataclass(frozen=True, slots=True)
class SnapshotHooks:
    """What the quorum hands pysyncobj as its ``serializer`` (all but ``capture``'s job run on
    the Raft thread)."""

    # (pysyncobj's data: last entry, previous entry, voters) -> the write job. Raft thread;
    # cheap: it captures, the job encodes and writes.
    capture: Callable[[Any], WriteJob]
    published: Callable[[], None]  # the new dump is durable under its name
    failed: Callable[[BaseException], None]  # the write or the publish failed
    discarded: Callable[[], None]  # a snapshot was installed while the write ran


@dataclass(slots=True)
class _Job:
    index: int  # the log index the dump claims
    installs: int  # the serializer's install count when the job started
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None


class BackgroundSerializer(Serializer):  # type: ignore[misc]
    """pysyncobj's ``Serializer`` (same constructor) with dumps written off the Raft thread,
    when its ``serializer`` is a :class:`SnapshotHooks`; otherwise pysyncobj's own behaviour."""

    def __init__(
        self,
        fileName: str | None,
        transmissionBatchSize: int,
        tryUseFork: bool,
        serializer: Any,
        deserializer: Any,
        serializeChecker: Any,
    ) -> None:
        super().__init__(
            fileName, transmissionBatchSize, tryUseFork, serializer, deserializer, serializeChecker
        )
        self._hooks = serializer if isinstance(serializer, SnapshotHooks) else None
        self._path = fileName
        self._job: _Job | None = None
        self._installs = 0  # snapshots loaded (at start-up or from the leader)

    # ---- pysyncobj's interface, Raft thread ---------------------------------------------------

    def serialize(self, data: Any, id: int) -> None:
        hooks, path = self._hooks, self._path
        if hooks is None or path is None:
            super().serialize(data, id)
            return
        if self._job is not None:
            return
        job = self._job = _Job(index=int(id), installs=self._installs)
        try:
            write = hooks.capture(data[1:])
        except Exception as exc:
            job.error = exc
            job.done.set()
            return
        job.thread = threading.Thread(
            target=self._write, args=(job, write, path + _TMP_SUFFIX), name="raftlog-snapshot"
        )
        job.thread.daemon = True  # close() joins it; a dying process need not wait for it
        job.thread.start()

    def checkSerializing(self) -> tuple[int, int | None]:
        job, hooks, path = self._job, self._hooks, self._path
        if hooks is None or path is None:
            state, index = super().checkSerializing()
            return int(state), index
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if not job.done.is_set():
            return SERIALIZER_STATE.SERIALIZING, job.index
        self._job = None
        tmp_path = path + _TMP_SUFFIX
        if job.error is None and job.installs != self._installs:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            hooks.discarded()
            return SERIALIZER_STATE.FAILED, job.index
        if job.error is None:
            try:
                os.replace(tmp_path, path)
                fsync_dir(os.path.dirname(os.path.abspath(path)))
            except OSError as exc:
                job.error = exc
        if job.error is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            hooks.failed(job.error)
            return SERIALIZER_STATE.FAILED, job.index
        self._restart_transmissions()
        hooks.published()
        return SERIALIZER_STATE.SUCCESS, job.index

    def deserialize(self) -> Any:
        self._installs += 1  # a write under way now holds an older state: discard it
        return super().deserialize()

    # ---- ours ---------------------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        return self._job is not None

    def join(self, timeout_s: float) -> bool:
        """Wait for a write under way (at close: no writer may outlive the data_dir lock)."""
        job = self._job
        if job is None or job.thread is None:
            return True
        job.thread.join(timeout_s)
        return not job.thread.is_alive()

    @staticmethod
    def _write(job: _Job, write: WriteJob, tmp_path: str) -> None:
        try:
            write(tmp_path)
        except BaseException as exc:  # reported on the Raft thread, at publish
            job.error = exc
        finally:
            job.done.set()

    def _restart_transmissions(self) -> None:
        transmissions: dict[Any, dict[str, Any]] = self._Serializer__transmissions
        for transmission in transmissions.values():
            file = transmission.get("file")
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
        transmissions.clear()
