"""The broker's log cleaner: compacts the logs of compacted topics in the background.

Owned by the replica manager, on the broker loop: ``clean_round`` runs there, except for the
heavy part — reading, filtering and writing segments (``segments.compaction.run_job``) — which
runs on the cleaner's own thread, at most ``io_bytes_per_s`` of reads and writes together (a
token bucket shared by every job; Kafka's ``log.cleaner.io.max.bytes.per.second``).

One round cleans at most one log, the dirtiest whose dirty ratio reached its
``min.cleanable.dirty.ratio`` (or whose earliest tombstone delete horizon has passed):

1. on the loop, ``Log.begin_clean`` takes a snapshot of what the pass covers: the closed
   segments below the high watermark and the recovery point (duplicated descriptors, nothing
   shared with the loop) and the producer state's batches whose headers must stay;
2. on the thread, ``run_job`` writes the cleaned segments as ``*.cleaned`` files, fsynced;
3. back on the loop, if the partition still has the same log, ``Log.finish_clean`` swaps them in
   (it discards the result if the log was truncated, emptied or closed meanwhile, and skips a
   segment retention deleted); otherwise the files are removed.

The loop never waits for the thread: appends, reads, truncation, retention and deletion go on
while a job runs, and only step 3 — renames and directory fsyncs — touches the log. A failed job
(a damaged source segment, a full disk) puts the log aside for ``RETRY_MS``; the scrub, not the
cleaner, reports damage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from raftlog.raft.metadata_records import TopicPartition
from raftlog.segments import StorageError
from raftlog.segments.clock import Clock
from raftlog.segments.compaction import CleanJob, JobResult, RateLimiter, run_job

from .partition import Partition

__all__ = ["RETRY_MS", "CleanerCounters", "LogCleaner"]

logger = logging.getLogger(__name__)

RETRY_MS = 60_000  # a log whose pass failed is left alone this long


@dataclass(slots=True)
class CleanerCounters:
    """What ``/metrics`` shows of the cleaner (totals since the broker started)."""

    passes: int = 0
    passes_failed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_removed: int = 0
    segments_swapped: int = 0
    last_pass_ms: int = 0  # how long the last pass took, thread time included
    last_dirty_ratio: float = 0.0


def _abandoned(job: CleanJob, result: JobResult) -> None:
    job.discard(result)
    job.close()


class LogCleaner:
    """See the module docstring. Owned by the replica manager, on the broker loop."""

    def __init__(self, clock: Clock, *, io_bytes_per_s: int, keys_max: int = 1 << 20) -> None:
        self.clock = clock
        self.limiter = RateLimiter(io_bytes_per_s)
        self.keys_max = keys_max  # the offset map's bound: memory per pass
        self.counters = CleanerCounters()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="raftlog-cleaner")
        self._job: CleanJob | None = None
        self._job_key: TopicPartition | None = None
        self._retry_at: dict[TopicPartition, int] = {}  # monotonic ms

    def _choose(self, partitions: Mapping[TopicPartition, Partition]) -> Partition | None:
        now = self.clock.wall_ms()
        mono = self.clock.mono_ms()
        best: tuple[float, Partition] | None = None
        for key, partition in partitions.items():
            log_ = partition.log
            if not log_.config.cleanup_compact or self._retry_at.get(key, 0) > mono:
                continue
            ratio = log_.clean_due(now, max_offset=partition.high_watermark)
            if ratio is not None and (best is None or ratio > best[0]):
                best = (ratio, partition)
        return best[1] if best is not None else None

    async def clean_round(self, partitions: Mapping[TopicPartition, Partition]) -> int:
        """Clean the dirtiest log, if one is due; how many segments were swapped in."""
        partition = self._choose(partitions)
        if partition is None:
            return 0
        log_ = partition.log
        ratio = log_.clean_due(max_offset=partition.high_watermark) or 0.0
        try:
            job = log_.begin_clean(
                max_offset=partition.high_watermark,
                retain_batches=partition.producers.batch_offsets(),
                limiter=self.limiter,
                keys_max=self.keys_max,
            )
        except StorageError as exc:
            logger.error("%s: cannot start cleaning: %s", partition.name, exc)
            self._put_aside(partition.key)
            return 0
        if job is None:
            return 0
        self._job, self._job_key = job, partition.key
        running = self._thread.submit(run_job, job)
        try:
            result = await asyncio.wrap_future(running)
        except asyncio.CancelledError:
            # the broker is stopping: the thread still uses the job's descriptors, so it is
            # the thread that lets them go (an abandoned result is the uncommitted case)
            job.abort.set()
            running.add_done_callback(lambda done: _abandoned(job, done.result()))
            raise
        finally:
            self._job = self._job_key = None
        try:
            return self._finish(partitions, partition, job, result, ratio)
        finally:
            job.close()

    def _finish(
        self,
        partitions: Mapping[TopicPartition, Partition],
        partition: Partition,
        job: CleanJob,
        result: JobResult,
        ratio: float,
    ) -> int:
        counters = self.counters
        counters.passes += 1
        counters.bytes_read += result.stats.bytes_read
        counters.bytes_written += result.stats.bytes_written
        counters.last_pass_ms = result.duration_ms
        counters.last_dirty_ratio = ratio
        if result.error is not None:
            counters.passes_failed += 1
            if result.error != "aborted":
                logger.error("%s: cleaning failed: %s", partition.name, result.error)
                self._put_aside(partition.key)
            return 0
        if partitions.get(partition.key) is not partition:
            job.discard(result)  # the replica went (or was opened again) meanwhile
            return 0
        try:
            swapped = partition.log.finish_clean(job, result)
        except StorageError as exc:
            counters.passes_failed += 1
            logger.error("%s: cleaned segments not swapped in: %s", partition.name, exc)
            self._put_aside(partition.key)
            return 0
        counters.records_removed += result.stats.records_removed
        counters.segments_swapped += swapped
        logger.info(
            "%s: cleaned (dirty ratio %.2f): %d segment(s) rewritten, %d record(s) removed, "
            "%d bytes read, %d written, %d ms",
            partition.name,
            ratio,
            swapped,
            result.stats.records_removed,
            result.stats.bytes_read,
            result.stats.bytes_written,
            result.duration_ms,
        )
        return swapped

    def _put_aside(self, key: TopicPartition) -> None:
        self._retry_at[key] = self.clock.mono_ms() + RETRY_MS

    def abandon(self, key: TopicPartition) -> None:
        """The replica is going (stopped or deleted): a job running for it stops early."""
        if self._job is not None and self._job_key == key:
            self._job.abort.set()
        self._retry_at.pop(key, None)

    def close(self) -> None:
        """Stop the running job, if any, and wait for the thread (before the logs close)."""
        if self._job is not None:
            self._job.abort.set()
        self._thread.shutdown(wait=True)
