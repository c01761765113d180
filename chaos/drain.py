"""The final drain: read every partition completely, through its leader and on every replica.

Two kinds of drain op go into the history (``history.py``: ``drain`` with and without ``node``):

* **Leader drain** (no ``node``): after the final heal and a quiet period, a fresh consumer
  reads the partition from its log start to the high watermark the leader reports when the
  drain begins (``ListOffsets`` latest), through the leader, like any client. Every producer has
  finished by then, so every acknowledged write sits below that high watermark: a value this
  drain does not return is lost, and the checker calls it ``unseen`` (or ``lost-write``).
  Bounded: ``attempts`` tries of at most ``timeout_s`` each; a truncation or error during a
  drain ends that try as ``info``/``fail`` and the next one starts again from the beginning.

* **Node drain** (``node=<id>``): the Fetch RPC serves only leaders, so a replica's own copy is
  read from disk — after the cluster was stopped cleanly with SIGTERM at the end of the run (a
  broker closes its logs and checkpoints on SIGTERM). The partition directory and the broker's
  state store are copied to a scratch directory first (opening a log may recover or rewrite
  checkpoints; the run folder keeps the evidence untouched), opened with
  ``raftlog.segments.Log`` and read whole: log start offset → log end offset, *including* any
  records above that replica's own high watermark. The replica's checkpointed high watermark is
  reported alongside (``NodeLog.high_watermark``) but does not cut the read. Opening a log
  recovers its active segment as the broker would on restart: a torn or corrupt tail is cut off
  and the bytes cut are reported (``NodeLog.tail_bytes_cut``) — after a clean stop there should
  be none.

**What lost-on-node means here.** The checker compares each node drain with what must be at
each offset it covers: an acknowledged value, or a value the leader drain returned, at
(key, offset o) — which some read returned — must be present and equal in every replica log
whose range reaches o. After the final heal and the quiet period every follower has fetched up
to its leader's log end and truncated whatever diverged (KIP-101/279), so a replica log holding
a different value or a hole at o is a replica that kept a different history than the one
clients were told about — divergence, split brain, or a lost acknowledged write on that node.
A replica whose log merely ends before o (it lagged) is *not* flagged. Records a replica holds
beyond the leader drain's end are not lost-on-node either; ``results.json`` lists each replica's
log end next to the leader drain's end so such a tail is visible.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raftlog.client import ClientSecurity, Consumer, RaftlogError
from raftlog.segments import BrokerStateStore, CorruptRecordError, Log, iter_batches, iter_records
from raftlog.segments.clock import SYSTEM_CLOCK

from .history import OpF, OpType
from .workload import Recorder, decode_value, key_of, records_value

__all__ = ["LeaderDrain", "NodeLog", "drain_leader", "drain_node", "read_node_log"]

READ_BYTES_MAX = 4 << 20  # one read of a node's log
READS_MAX = 1_000_000  # a bound on the reads of one log (each returns at least one batch)


@dataclass(frozen=True, slots=True)
class LeaderDrain:
    """How the leader drain of one partition went."""

    key: str
    ok: bool
    end_offset: int  # the high watermark the drain read up to (-1: never learned)
    records: int
    attempts: int
    error: str | None = None


def drain_leader(
    recorder: Recorder,
    process: int,
    bootstrap: str,
    topic: str,
    partition: int,
    *,
    security: ClientSecurity,
    timeout_s: float = 60.0,
    attempts: int = 3,
) -> LeaderDrain:
    """Read ``topic-partition`` whole through its leader; one drain op per attempt."""
    key = key_of(topic, partition)
    tp = (topic, partition)
    last_error: str | None = None
    end = -1
    for attempt in range(1, attempts + 1):
        op = recorder.invoke(process, OpF.DRAIN)
        collected: list[tuple[int, int | str]] = []
        start = 0
        try:
            with Consumer(
                bootstrap,
                security=security,
                auto_offset_reset="none",
                on_truncation="raise",
                fetch_max_wait_ms=250,
                request_timeout_ms=5000,
            ) as consumer:
                consumer.assign([tp])
                start = consumer.beginning_offsets([tp])[tp]
                end = consumer.end_offsets([tp])[tp]
                consumer.seek(tp, start)
                deadline = time.monotonic() + timeout_s
                while consumer.position(tp) < end and time.monotonic() < deadline:
                    for r in consumer.poll(timeout_ms=500, max_records=5000):
                        collected.append((r.offset, decode_value(r.value)))
                position = consumer.position(tp)
        except RaftlogError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            recorder.complete(op, OpType.INFO, {}, error=last_error)
            time.sleep(1.0)
            continue
        if position < end:
            last_error = f"DRAIN_TIMEOUT: reached {position} of {end} in {timeout_s:.0f} s"
            recorder.complete(op, OpType.INFO, {}, error=last_error)
            continue
        recorder.complete(op, OpType.OK, records_value({key: collected}, {key: start}))
        return LeaderDrain(key, True, end, len(collected), attempt)
    return LeaderDrain(key, False, end, 0, attempts, last_error)


@dataclass(frozen=True, slots=True)
class NodeLog:
    """One replica's whole local log of one partition, read after a clean stop."""

    node: int
    key: str
    log_start_offset: int
    log_end_offset: int
    high_watermark: int | None  # as checkpointed by that broker; None when unknown
    records: tuple[tuple[int, int | str], ...]
    error: str | None = None
    tail_bytes_cut: int = 0  # what opening the log cut off a torn or corrupt tail (recovery)


def read_node_log(data_dir: Path, node: int, topic: str, partition: int) -> NodeLog | None:
    """Read ``<data_dir>/logs/<topic>-<partition>`` whole from a copy; None when the broker
    holds no replica of it. Raises nothing: a log that cannot be read comes back with
    ``error`` set and the records read before the problem."""
    key = key_of(topic, partition)
    source = data_dir / "logs" / key
    if not source.is_dir():
        return None
    records: list[tuple[int, int | str]] = []
    with tempfile.TemporaryDirectory(prefix="raftlog-chaos-drain-") as scratch:
        copy = Path(scratch) / key
        shutil.copytree(source, copy)
        state_dir = data_dir / "state"
        store: BrokerStateStore | None = None
        hw: int | None = None
        start = end = -1
        cut = 0
        try:
            if state_dir.is_dir():
                shutil.copytree(state_dir, Path(scratch) / "state")
                store = BrokerStateStore(str(Path(scratch) / "state"), sync=False)
                hw = store.get_offset("hw", key)
            with Log(str(copy), clock=SYSTEM_CLOCK, state=store, name=key) as log:
                start, end = log.log_start_offset, log.log_end_offset
                cut = log.recovered_bytes_truncated
                offset = start
                for _ in range(READS_MAX):
                    if offset >= end:
                        break
                    result = log.read(offset, READ_BYTES_MAX)
                    data = result.data
                    for position, header in iter_batches(data):
                        batch = data[position : position + header.size_bytes]
                        for record in iter_records(batch):
                            if record.offset >= offset:
                                records.append((record.offset, decode_value(record.value)))
                    if result.next_offset <= offset:
                        raise RuntimeError(f"no progress reading at offset {offset}")
                    offset = result.next_offset
                if log.recovery.damaged:  # opening cut damage: a finding, not a torn tail
                    raise CorruptRecordError(
                        f"damaged log cut at offset {log.recovery.first_bad_offset}: "
                        f"{log.recovery.reason}"
                    )
        except Exception as exc:  # corruption is a finding: report it with what was read
            error = f"{type(exc).__name__}: {exc}"
            return NodeLog(node, key, start, end, hw, tuple(records), error, cut)
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
    return NodeLog(node, key, start, end, hw, tuple(records), None, cut)


def drain_node(
    recorder: Recorder, process: int, data_dir: Path, node: int, topic: str, partition: int
) -> NodeLog | None:
    """One node drain op for a replica's local log (None, and no op, for a non-replica)."""
    log = read_node_log(data_dir, node, topic, partition)
    if log is None:
        return None
    op = recorder.invoke(process, OpF.DRAIN, node=node)
    if log.error is not None:
        recorder.complete(op, OpType.INFO, {}, error=f"NODE_LOG: {log.error}")
        return log
    value = records_value({log.key: log.records}, {log.key: log.log_start_offset})
    recorder.complete(op, OpType.OK, value)
    return log
