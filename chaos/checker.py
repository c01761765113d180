"""The checker: a pure function from a chaos run's history to the anomalies in it.

Pure: no IO, no clock, no sockets — ``check(history)`` reads a sequence of ``Op`` and returns a
frozen ``CheckResult`` (anomalies.py: the kinds, their meanings, the result types and
``render_summary``, which turns a result into a rich table). The semantics follow Jepsen's Kafka
workload (jepsen/src/jepsen/tests/kafka.clj); anomalies.py says what each anomaly means. A
*key* is one topic-partition; sent values are unique, so a value names the one send that wrote
it.

What counts as what:

- *observations* of (key, offset) → value come from ok sends (the acked offset) and from every
  read: ok polls, ok drains through the leader, and ok drains of one node.
- *client view*: ok sends, polls and leader drains. Each drained node is a view of its own.
  Duplicates are looked for inside one view, so a diverged node is reported as divergence
  (inconsistent-offsets, lost-on-node) rather than as a duplicate.
- a value is *read* when any read returned it, wherever it was.

Cost: one pass over the history with dicts keyed by (key, offset) and by value, then a pass over
those dicts; sorting only per key (known offsets) and per producer. No quadratic loops: a history
of a million ops takes seconds.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import assert_never

from .anomalies import Anomaly, CheckResult, Example, Kind, Summary
from .history import Op, OpF, OpType

__all__ = ["EXAMPLES_MAX", "check"]

Key = str
Value = int | str  # sent values are ints; anything else a read returns is kept as its repr()

EXAMPLES_MAX = 8  # examples kept per kind; counts are always complete


def check(history: Iterable[Op], *, examples_max: int = EXAMPLES_MAX) -> CheckResult:
    """Check a history (in index order) for every ``Kind`` of anomaly."""
    analysis = _Analysis(examples_max)
    for op in history:
        analysis.feed(op)
    return analysis.finish()


# -- the analysis -------------------------------------------------------------------------------


class _Found:
    """Counts the cases of one kind and keeps the first ``limit`` examples."""

    __slots__ = ("breakdown", "count", "examples", "limit")

    def __init__(self, limit: int) -> None:
        self.count = 0
        self.limit = limit
        self.examples: list[Example] = []
        self.breakdown: dict[str, int] = {}

    def want(self, label: str | None = None) -> bool:
        """Count one case; True when its example should be built and kept."""
        self.count += 1
        if label is not None:
            self.breakdown[label] = self.breakdown.get(label, 0) + 1
        return len(self.examples) < self.limit


@dataclass(slots=True)
class _Ack:
    key: Key | None
    offset: int | None
    op: int  # index of the ok completion
    invoke: int  # index of its invocation
    process: int


_MISSING = object()


def _is_int(x: object) -> bool:
    return type(x) is int


def _canon(raw: object) -> Value:
    """A read or sent value as the checker compares it: ints and strs as they are, anything
    else (a corrupt record decoded as null, a list, ...) as its repr, which no int equals."""
    if isinstance(raw, int | str) and not isinstance(raw, bool):
        return raw
    return repr(raw)


class _Analysis:
    """The accumulator of one ``check`` call: fed every op in order, then ``finish``ed once.
    Owned by that call; never shared."""

    def __init__(self, examples_max: int) -> None:
        self.found = {kind: _Found(examples_max) for kind in Kind}
        self.ops = 0
        self.malformed = 0
        # sends
        self.sends_attempted = self.sends_ok = self.sends_fail = self.sends_info = 0
        self.polls_ok = self.drains_ok = 0
        self.pending_send: dict[tuple[int, Value], int] = {}  # (process, value) → invoke index
        self.invoke_count: dict[Value, int] = {}
        self.send_key: dict[Value, Key] = {}  # the key of a value's first invocation
        self.send_invoke: dict[Value, int] = {}
        self.fail_count: dict[Value, int] = {}
        self.fail_op: dict[Value, int] = {}
        self.maybe: set[Value] = set()  # completed ok or info at least once: maybe written
        self.sent: set[Value] = set()  # named by any send op at all
        self.acked: dict[Value, _Ack] = {}  # in order of the ok completions
        self.sent_by: dict[tuple[int, Key], list[tuple[int, int, Value, int]]] = {}
        # (process, key) → [(invoke index, offset, value, ok op index)] of ok sends with offsets
        # observations
        self.at: dict[tuple[Key, int], tuple[Value, int, int | None]] = {}  # first (v, op, node)
        self.conflicts: dict[tuple[Key, int], dict[Value, tuple[int, int | None]]] = {}
        self.pos: dict[tuple[int | None, Value], tuple[Key, int, int]] = {}  # per view
        self.dups: dict[tuple[int | None, Value], dict[tuple[Key, int], int]] = {}
        # reads
        self.read_values: set[Value] = set()
        self.first_read: dict[Value, tuple[Key, int, int, int | None]] = {}
        self.read_max: dict[Key, tuple[int, int]] = {}  # key → (highest offset read, its op)
        # polls: process → key → (last offset polled, op index). An assign resets it.
        self.poll_last: dict[int, dict[Key, tuple[int, int]]] = {}
        self.skip_candidates: list[tuple[int, Key, int, int, int, int]] = []
        # (process, key, offset before the jump, offset after it, op before, op after)
        # drains
        self.pending_drain: dict[tuple[int, int | None], int] = {}
        self.drained: dict[Key, tuple[int, int]] = {}  # key → (latest drain invoke, its ok op)
        self.drain_views: list[tuple[int | None, Key, int, list[tuple[int, Value]], int, int]] = []
        # (node or None for the leader, key, start, records, op index, invoke index)
        self.leader_at: dict[tuple[Key, int], tuple[Value, int]] = {}
        self.nodes_drained: set[int] = set()

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, op: Op) -> None:
        self.ops += 1
        match op.f:
            case OpF.SEND:
                self._send(op)
            case OpF.POLL:
                self._poll(op)
            case OpF.ASSIGN:
                self._assign(op)
            case OpF.DRAIN:
                self._drain(op)
            case _:
                assert_never(op.f)

    def _send(self, op: Op) -> None:
        body = op.value
        raw = body.get("value", _MISSING)
        if raw is _MISSING:
            self.malformed += 1
            return
        v = _canon(raw)
        key = body.get("key")
        if not isinstance(key, str):
            key = None
        self.sent.add(v)
        match op.type:
            case OpType.INVOKE:
                self.sends_attempted += 1
                self.pending_send[(op.process, v)] = op.index
                self.invoke_count[v] = self.invoke_count.get(v, 0) + 1
                self.send_invoke.setdefault(v, op.index)
                if key is not None:
                    self.send_key.setdefault(v, key)
            case OpType.OK:
                self.sends_ok += 1
                self.maybe.add(v)
                invoke = self.pending_send.pop((op.process, v), None)
                if invoke is None:
                    invoke = self.send_invoke.get(v, op.index)
                if key is None:
                    key = self.send_key.get(v)
                offset = body.get("offset")
                if not _is_int(offset):
                    offset = None
                if v not in self.acked:
                    self.acked[v] = _Ack(key, offset, op.index, invoke, op.process)
                if key is not None and offset is not None:
                    self._observe(key, offset, v, op.index, None)
                    self.sent_by.setdefault((op.process, key), []).append(
                        (invoke, offset, v, op.index)
                    )
            case OpType.FAIL:
                self.sends_fail += 1
                self.pending_send.pop((op.process, v), None)
                self.fail_count[v] = self.fail_count.get(v, 0) + 1
                self.fail_op.setdefault(v, op.index)
            case OpType.INFO:
                self.sends_info += 1
                self.maybe.add(v)
                self.pending_send.pop((op.process, v), None)
            case _:
                assert_never(op.type)

    def _poll(self, op: Op) -> None:
        match op.type:
            case OpType.INVOKE | OpType.FAIL:
                pass  # a failed poll consumed nothing
            case OpType.INFO:
                # It may have moved the consumer's position by records we never saw: forget it
                # rather than call the next poll a skip (Jepsen gives such a process a new id).
                self.poll_last.pop(op.process, None)
            case OpType.OK:
                self.polls_ok += 1
                reads = self._reads(op, None)
                start = self._start(op)
                last = self.poll_last.setdefault(op.process, {})
                for key, records in reads:
                    self._track(op, last, key, start.pop(key, None), records)
                for key, position in start.items():
                    self._track(op, last, key, position, [])
            case _:
                assert_never(op.type)

    def _assign(self, op: Op) -> None:
        match op.type:
            case OpType.INVOKE | OpType.FAIL:
                pass
            case OpType.INFO:
                self.poll_last.pop(op.process, None)
            case OpType.OK:
                self.poll_last.pop(op.process, None)
                positions = op.value.get("positions")
                if isinstance(positions, dict):
                    # A position is the next offset to read: as if a poll had ended just before.
                    self.poll_last[op.process] = {
                        key: (position - 1, op.index)
                        for key, position in positions.items()
                        if isinstance(key, str) and _is_int(position)
                    }
            case _:
                assert_never(op.type)

    def _drain(self, op: Op) -> None:
        match op.type:
            case OpType.INVOKE:
                self.pending_drain[(op.process, op.node)] = op.index
            case OpType.FAIL:
                self.pending_drain.pop((op.process, op.node), None)
            case OpType.INFO:
                self.pending_drain.pop((op.process, op.node), None)
                self.poll_last.pop(op.process, None)
            case OpType.OK:
                self.drains_ok += 1
                invoke = self.pending_drain.pop((op.process, op.node), op.index)
                self.poll_last.pop(op.process, None)  # a drain re-reads from the start
                if op.node is not None:
                    self.nodes_drained.add(op.node)
                reads = self._reads(op, op.node)
                start = self._start(op)
                for key in [key for key, _ in reads] + list(start):
                    if self.drained.get(key, (-1, -1))[0] < invoke:
                        self.drained[key] = (invoke, op.index)
                for key, records in reads:
                    self.drain_views.append(
                        (op.node, key, start.get(key, 0), records, op.index, invoke)
                    )
                    if op.node is None:
                        for offset, v in records:
                            self.leader_at.setdefault((key, offset), (v, op.index))
            case _:
                assert_never(op.type)

    def _start(self, op: Op) -> dict[Key, int]:
        start = op.value.get("start")
        if start is None:
            return {}
        if not isinstance(start, dict):
            self.malformed += 1
            return {}
        return {k: s for k, s in start.items() if isinstance(k, str) and _is_int(s)}

    def _reads(self, op: Op, node: int | None) -> list[tuple[Key, list[tuple[int, Value]]]]:
        """Parse an ok read's records, observing each; returns them per key, in read order."""
        records = op.value.get("records")
        if records is None:
            return []
        if not isinstance(records, dict):
            self.malformed += 1
            return []
        out: list[tuple[Key, list[tuple[int, Value]]]] = []
        read_values = self.read_values
        first_read = self.first_read
        observe = self._observe
        index = op.index
        for key, recs in records.items():
            if not isinstance(key, str) or not isinstance(recs, list | tuple):
                self.malformed += 1
                continue
            parsed: list[tuple[int, Value]] = []
            top = -1
            for rec in recs:
                if not isinstance(rec, list | tuple) or len(rec) != 2 or type(rec[0]) is not int:
                    self.malformed += 1
                    continue
                offset: int = rec[0]
                raw = rec[1]
                v: Value = raw if type(raw) is int else _canon(raw)  # ints are the common case
                parsed.append((offset, v))
                observe(key, offset, v, index, node)
                read_values.add(v)
                if v not in first_read:
                    first_read[v] = (key, offset, index, node)
                if offset > top:
                    top = offset
            if parsed:
                best = self.read_max.get(key)
                if best is None or best[0] < top:
                    self.read_max[key] = (top, index)
            out.append((key, parsed))
        return out

    def _observe(self, key: Key, offset: int, v: Value, index: int, node: int | None) -> None:
        """One observation of (key, offset) = v, by an ok send or a read of ``node``'s view."""
        ko = (key, offset)
        first = self.at.get(ko)
        if first is None:
            self.at[ko] = (v, index, node)
        elif first[0] != v:
            seen = self.conflicts.get(ko)
            if seen is None:
                seen = self.conflicts[ko] = {first[0]: (first[1], first[2])}
            seen.setdefault(v, (index, node))
        pk = (node, v)
        pos = self.pos.get(pk)
        if pos is None:
            self.pos[pk] = (key, offset, index)
        elif pos[0] != key or pos[1] != offset:
            places = self.dups.get(pk)
            if places is None:
                places = self.dups[pk] = {(pos[0], pos[1]): pos[2]}
            places.setdefault(ko, index)

    def _track(
        self,
        op: Op,
        last: dict[Key, tuple[int, int]],
        key: Key,
        position: int | None,
        records: list[tuple[int, Value]],
    ) -> None:
        """Follow one consumer through one key: each polled offset (and the start position,
        as the offset just before it) must be exactly one past the previous."""
        prev = last.get(key)
        if position is not None:
            if prev is not None and position != prev[0] + 1:
                self._jump(op, key, prev, position)
            prev = (position - 1, op.index)
        for offset, _ in records:
            if prev is not None and offset != prev[0] + 1:
                self._jump(op, key, prev, offset)
            prev = (offset, op.index)
        if prev is not None:
            last[key] = prev

    def _jump(self, op: Op, key: Key, prev: tuple[int, int], offset: int) -> None:
        prev_offset, prev_op = prev
        if offset <= prev_offset:
            found = self.found[Kind.NONMONOTONIC_POLL]
            if found.want():
                found.examples.append(
                    {
                        "process": op.process,
                        "key": key,
                        "prev_offset": prev_offset,
                        "offset": offset,
                        "ops": [prev_op, op.index],
                    }
                )
        else:  # a skip only if some offset in between is known to exist: decided in finish()
            self.skip_candidates.append((op.process, key, prev_offset, offset, prev_op, op.index))

    # -- conclusions --------------------------------------------------------------------------

    def finish(self) -> CheckResult:
        self._check_reads()
        self._check_conflicts()
        self._check_duplicates()
        self._check_acked()
        self._check_nodes()
        self._check_sends()
        self._check_skips()
        anomalies = {
            kind: Anomaly(kind, f.count, tuple(f.examples), MappingProxyType(dict(f.breakdown)))
            for kind, f in self.found.items()
        }
        keys = set(self.send_key.values()) | set(self.read_max) | set(self.drained)
        summary = Summary(
            ops=self.ops,
            sends_attempted=self.sends_attempted,
            sends_ok=self.sends_ok,
            sends_fail=self.sends_fail,
            sends_info=self.sends_info,
            sends_unfinished=len(self.pending_send),
            polls_ok=self.polls_ok,
            drains_ok=self.drains_ok,
            values_read=len(self.read_values),
            keys=len(keys),
            nodes_drained=tuple(sorted(self.nodes_drained)),
            malformed=self.malformed,
        )
        return CheckResult(MappingProxyType(anomalies), summary)

    def _definitely_failed(self, v: Value) -> bool:
        """Every invocation of v completed ``fail``: it was never written."""
        return (
            v in self.fail_op
            and v not in self.maybe
            and self.fail_count[v] >= self.invoke_count.get(v, 0)
        )

    def _check_reads(self) -> None:
        """aborted-read and unexpected, once per value, at its first read."""
        unexpected = self.found[Kind.UNEXPECTED]
        aborted = self.found[Kind.ABORTED_READ]
        for v, (key, offset, index, node) in self.first_read.items():
            where = {"key": key, "offset": offset, "value": v, "read_op": index, "node": node}
            if v not in self.sent:
                if unexpected.want("never sent"):
                    unexpected.examples.append({**where, "reason": "never sent"})
                continue
            sent_key = self.send_key.get(v)
            if sent_key is not None and sent_key != key and unexpected.want("wrong key"):
                unexpected.examples.append({**where, "reason": f"sent to key {sent_key}"})
            if self._definitely_failed(v) and aborted.want():
                aborted.examples.append({**where, "fail_op": self.fail_op[v]})

    def _check_conflicts(self) -> None:
        found = self.found[Kind.INCONSISTENT_OFFSETS]
        for (key, offset), values in self.conflicts.items():
            if found.want():
                found.examples.append(
                    {
                        "key": key,
                        "offset": offset,
                        "values": [
                            {"value": v, "op": index, "node": node}
                            for v, (index, node) in values.items()
                        ],
                    }
                )

    def _check_duplicates(self) -> None:
        found = self.found[Kind.DUPLICATE]
        for (node, v), places in self.dups.items():
            if found.want():
                found.examples.append(
                    {
                        "value": v,
                        "node": node,
                        "positions": [
                            {"key": key, "offset": offset, "op": index}
                            for (key, offset), index in places.items()
                        ],
                    }
                )

    def _check_acked(self) -> None:
        """lost-write, unseen and unseen-undrained: acked values no read returned."""
        lost: list[tuple[Value, Key, int, _Ack, tuple[int, int]]] = []
        unseen = self.found[Kind.UNSEEN]
        undrained = self.found[Kind.UNSEEN_UNDRAINED]
        for v, ack in self.acked.items():
            if v in self.read_values:
                continue
            where = {"key": ack.key, "offset": ack.offset, "value": v, "send_op": ack.op}
            top = self.read_max.get(ack.key) if ack.key is not None else None
            if ack.key is not None and ack.offset is not None and top and top[0] > ack.offset:
                lost.append((v, ack.key, ack.offset, ack, top))
                continue
            drain = self.drained.get(ack.key) if ack.key is not None else None
            if drain is not None and drain[0] > ack.op:
                if unseen.want():
                    unseen.examples.append({**where, "drain_op": drain[1]})
            elif undrained.want():
                undrained.examples.append(where)
        if lost:
            self._report_lost(lost)

    def _report_lost(self, lost: list[tuple[Value, Key, int, _Ack, tuple[int, int]]]) -> None:
        """Place each lost write among its own producer's writes to the key (NATS's split):
        prefix when none of them below it was read, postfix when none above, else middle."""
        found = self.found[Kind.LOST_WRITE]
        # (process, key) → (sorted offsets, seen_below[i] = writes read among offsets[:i])
        orders: dict[tuple[int, Key], tuple[list[int], list[int]]] = {}
        for v, key, offset, ack, top in lost:
            pk = (ack.process, key)
            order = orders.get(pk)
            if order is None:
                sends = sorted(self.sent_by.get(pk, []), key=lambda s: s[1])
                offsets = [s[1] for s in sends]
                seen_below = [0]
                for s in sends:
                    seen_below.append(seen_below[-1] + (s[2] in self.read_values))
                order = orders[pk] = (offsets, seen_below)
            offsets, seen_below = order
            below = seen_below[bisect_left(offsets, offset)]
            above = seen_below[-1] - seen_below[bisect_right(offsets, offset)]
            position = "prefix" if not below else ("postfix" if not above else "middle")
            if found.want(position):
                found.examples.append(
                    {
                        "key": key,
                        "offset": offset,
                        "value": v,
                        "send_op": ack.op,
                        "process": ack.process,
                        "position": position,
                        "read_past": {"offset": top[0], "op": top[1]},
                    }
                )

    def _check_nodes(self) -> None:
        """lost-on-node: compare each node's drain with what must be at each offset it covers,
        and each leader drain with every write acknowledged before it began."""
        expected: dict[Key, dict[int, tuple[Value, int]]] = {}
        for v, ack in self.acked.items():
            if ack.key is not None and ack.offset is not None:
                expected.setdefault(ack.key, {}).setdefault(ack.offset, (v, ack.op))
        for (key, offset), (v, index) in self.leader_at.items():
            expected.setdefault(key, {}).setdefault(offset, (v, index))
        found = self.found[Kind.LOST_ON_NODE]
        reported: set[tuple[int | None, Key, int]] = set()
        for node, key, start, records, index, invoke in self.drain_views:
            must = expected.get(key)
            if not must:
                continue
            got = dict(records)
            offsets: Iterable[int]
            if node is None:
                # the leader drain reads up to the high watermark it learned after it began, and
                # every write acknowledged before then sits below it: one missing past the last
                # record read (a truncated tail nothing was written over) is lost too
                offsets = (o for o, (_, source) in must.items() if o >= start and source < invoke)
            elif not records:
                continue
            else:
                top = max(got)
                # Walk whichever is shorter: the offsets this drain covers, or the expectations.
                if top - start + 1 < len(must):
                    offsets = (o for o in range(start, top + 1) if o in must)
                else:
                    offsets = (o for o in must if start <= o <= top)
            for offset in offsets:
                v, source = must[offset]
                there = got.get(offset, _MISSING)
                # A value no read returned anywhere is lost-write or unseen, not lost on a node.
                if there == v or v not in self.read_values or (node, key, offset) in reported:
                    continue
                reported.add((node, key, offset))
                if found.want():
                    found.examples.append(
                        {
                            "node": node,
                            "key": key,
                            "offset": offset,
                            "value": v,
                            "found": None if there is _MISSING else there,
                            "drain_op": index,
                            "source_op": source,
                        }
                    )

    def _check_sends(self) -> None:
        found = self.found[Kind.NONMONOTONIC_SEND]
        for (process, key), sends in self.sent_by.items():
            sends.sort()  # by invocation index
            best: tuple[int, int, Value, int] | None = None  # the highest offset so far
            for send in sends:
                if best is not None and send[1] <= best[1] and found.want():
                    found.examples.append(
                        {
                            "process": process,
                            "key": key,
                            "prev_offset": best[1],
                            "prev_value": best[2],
                            "prev_op": best[3],
                            "offset": send[1],
                            "value": send[2],
                            "op": send[3],
                        }
                    )
                if best is None or send[1] > best[1]:
                    best = send

    def _check_skips(self) -> None:
        found = self.found[Kind.POLL_SKIP]
        if not self.skip_candidates:
            return
        known: dict[Key, list[int]] = {}
        for key, offset in self.at:
            known.setdefault(key, []).append(offset)
        for offsets in known.values():
            offsets.sort()
        for process, key, before, after, prev_op, index in self.skip_candidates:
            offsets = known.get(key, [])
            lo = bisect_right(offsets, before)
            hi = bisect_left(offsets, after)
            if hi > lo and found.want():
                found.examples.append(
                    {
                        "process": process,
                        "key": key,
                        "prev_offset": before,
                        "offset": after,
                        "skipped": offsets[lo : min(hi, lo + 4)],
                        "skipped_count": hi - lo,
                        "ops": [prev_op, index],
                    }
                )
