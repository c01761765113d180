"""The history of a chaos run: every operation a worker invoked, and how it ended.

Ops are frozen dataclasses, safe to share between threads once built. ``HistoryBuilder`` is owned
by one recorder and is not thread-safe (the runner's recorder holds the lock). Everything here is
pure except ``dump_jsonl`` / ``load_jsonl``, the only file IO.

Jepsen's model of a history: each operation is recorded twice — an ``invoke``, then
``ok`` (it happened), ``fail`` (it definitely did not) or ``info`` (unknown: a timeout, or an
exception). Only ``ok`` sends are acknowledged. A *process* is one worker; producers and consumers
are separate processes, and a process's ops are appended in the order they happened.

``value`` depends on ``f`` (keys are partition keys such as ``"t-0"``; values are ints unique
across the run)::

    f       type            value
    send    invoke          {"key": "t-0", "value": 17}
    send    ok              {"key": "t-0", "value": 17, "offset": 4}
    send    fail / info     {"key": "t-0", "value": 17}               (+ op.error)
    poll    invoke          {}
    poll    ok              {"records": {"t-0": [[4, 17], [5, 21]]}, "start": {"t-0": 4}}
    assign  ok              {"keys": ["t-0"], "positions": {"t-0": 0}}
    drain   ok              like poll ok; a complete read of each key from its start. With
                            op.node set it read that one broker, without it the current leader.

``records`` lists each key's records in the order they were returned; ``start`` (optional) is the
position the consumer fetched from. Readers must tolerate missing fields: an ``info`` send has no
offset, and a broken client may write anything.

File format of ``history.jsonl`` (written by the runner, read by the checker): UTF-8, one op per
line as a JSON object, in index order; ``node`` and ``error`` are left out when absent. Not
checksummed and not rebuildable — it *is* the record of the run. A crash of the runner may leave a
truncated last line (no trailing newline); ``load_jsonl`` drops that line and only that one.
Worked example, a send that was acknowledged at offset 4 and a drain of broker 2::

    {"index": 0, "time_ms": 12.5, "process": 0, "type": "invoke", "f": "send",
     "value": {"key": "t-0", "value": 17}}
    {"index": 1, "time_ms": 19.0, "process": 0, "type": "ok", "f": "send",
     "value": {"key": "t-0", "value": 17, "offset": 4}}
    {"index": 2, "time_ms": 9000.0, "process": 7, "type": "ok", "f": "drain",
     "value": {"records": {"t-0": [[4, 17]]}, "start": {"t-0": 4}}, "node": 2}

(each object is on one line in the file; wrapped here to fit).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "HistoryBuilder",
    "HistoryFormatError",
    "Op",
    "OpF",
    "OpType",
    "assign_value",
    "dump_jsonl",
    "iter_jsonl",
    "load_jsonl",
    "read_value",
    "send_value",
]


class OpType(enum.Enum):
    """How far an op got: invoked, or completed ok / fail (definitely not) / info (unknown)."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class OpF(enum.Enum):
    """What an op does (Jepsen's ``:f``)."""

    SEND = "send"
    POLL = "poll"
    ASSIGN = "assign"  # assign or seek: resets the process's poll position tracking
    DRAIN = "drain"  # the final complete read of keys, through the leader or of one node


class HistoryFormatError(ValueError):
    """A history file or dict that cannot be decoded; names the line (the file's author is at
    fault, not the checker)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One line of the history. ``value`` is plain JSON data (see the module docstring) and is
    treated as read-only; ``index`` is the op's position in the history."""

    index: int  # 0-based, strictly increasing along the history
    time_ms: float  # since the start of the run
    process: int  # worker id
    type: OpType
    f: OpF
    value: Mapping[str, Any] = field(default_factory=dict)
    node: int | None = None  # broker id, for drains that read one specific broker
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one ``history.jsonl`` line."""
        out: dict[str, Any] = {
            "index": self.index,
            "time_ms": self.time_ms,
            "process": self.process,
            "type": self.type.value,
            "f": self.f.value,
            "value": dict(self.value),
        }
        if self.node is not None:
            out["node"] = self.node
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Op:
        """Decode ``to_dict``'s output; raises ``HistoryFormatError`` on a malformed object."""
        try:
            index = data["index"]
            process = data["process"]
            op_type = OpType(data["type"])
            f = OpF(data["f"])
        except (KeyError, ValueError, TypeError) as exc:
            raise HistoryFormatError(f"bad op {data!r}: {exc!r}") from exc
        time_ms = data.get("time_ms", 0.0)
        value = data.get("value")
        node = data.get("node")
        error = data.get("error")
        if not (_is_int(index) and _is_int(process)):
            raise HistoryFormatError(f"bad op {data!r}: index and process must be ints")
        if not isinstance(time_ms, int | float) or isinstance(time_ms, bool):
            raise HistoryFormatError(f"bad op {data!r}: time_ms must be a number")
        if node is not None and not _is_int(node):
            raise HistoryFormatError(f"bad op {data!r}: node must be an int or absent")
        return cls(
            index=index,
            time_ms=float(time_ms),
            process=process,
            type=op_type,
            f=f,
            # A value that is not an object is kept out rather than refused: the checker reads
            # values defensively, and one broken client must not hide the rest of the run.
            value=value if isinstance(value, dict) else {},
            node=node,
            error=None if error is None else str(error),
        )


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -- value constructors: the one place the value shapes of the module docstring are spelled ----


def send_value(key: str, value: int, offset: int | None = None) -> dict[str, Any]:
    """A send's value; ``offset`` only on ``ok``."""
    out: dict[str, Any] = {"key": key, "value": value}
    if offset is not None:
        out["offset"] = offset
    return out


def read_value(
    records: Mapping[str, Iterable[Sequence[int]]],
    start: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A poll's or drain's ``ok`` value: ``records`` maps key → [(offset, value), ...]."""
    out: dict[str, Any] = {
        "records": {key: [[o, v] for o, v in recs] for key, recs in records.items()}
    }
    if start is not None:
        out["start"] = dict(start)
    return out


def assign_value(keys: Iterable[str], positions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """An assign's value: the keys now assigned and, optionally, the position of each."""
    out: dict[str, Any] = {"keys": list(keys)}
    if positions is not None:
        out["positions"] = dict(positions)
    return out


class HistoryBuilder:
    """Appends ops with consecutive indexes; a completion copies its invocation's process, f and
    (by default) value and node. Owned by one recorder; not thread-safe.

    ``time_ms`` is passed in by the caller (the runner's clock); when left out it is the op's
    index, which keeps simulated histories deterministic.
    """

    def __init__(self) -> None:
        self._ops: list[Op] = []

    def invoke(
        self,
        process: int,
        f: OpF,
        value: Mapping[str, Any] | None = None,
        *,
        node: int | None = None,
        time_ms: float | None = None,
    ) -> Op:
        return self._append(process, OpType.INVOKE, f, value or {}, node, None, time_ms)

    def complete(
        self,
        invocation: Op,
        type: OpType,
        value: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        time_ms: float | None = None,
    ) -> Op:
        """Record how ``invocation`` ended; ``value`` defaults to the invocation's."""
        if invocation.type is not OpType.INVOKE or type is OpType.INVOKE:
            raise ValueError(f"complete() pairs an invoke with ok/fail/info, got {type}")
        body = invocation.value if value is None else value
        return self._append(
            invocation.process, type, invocation.f, body, invocation.node, error, time_ms
        )

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(self._ops)

    def _append(
        self,
        process: int,
        type: OpType,
        f: OpF,
        value: Mapping[str, Any],
        node: int | None,
        error: str | None,
        time_ms: float | None,
    ) -> Op:
        index = len(self._ops)
        op = Op(
            index=index,
            time_ms=float(index) if time_ms is None else time_ms,
            process=process,
            type=type,
            f=f,
            value=value,
            node=node,
            error=error,
        )
        self._ops.append(op)
        return op


# -- history.jsonl ----------------------------------------------------------------------------

PathOrFile = str | os.PathLike[str] | IO[str]


def dump_jsonl(ops: Iterable[Op], dest: PathOrFile) -> None:
    """Write ``ops`` as JSON lines to a path (created or truncated) or an open text file."""
    if isinstance(dest, str | os.PathLike):
        with Path(dest).open("w", encoding="utf-8") as out:
            _write(ops, out)
    else:
        _write(ops, dest)


def _write(ops: Iterable[Op], out: IO[str]) -> None:
    for op in ops:
        out.write(json.dumps(op.to_dict(), separators=(",", ":")))
        out.write("\n")


def load_jsonl(src: PathOrFile) -> list[Op]:
    """Read a whole ``history.jsonl`` (see the module docstring for the truncated-tail rule)."""
    if isinstance(src, str | os.PathLike):
        with Path(src).open(encoding="utf-8") as lines:
            return list(iter_jsonl(lines, name=os.fspath(src)))
    return list(iter_jsonl(src))


def iter_jsonl(lines: Iterable[str], *, name: str = "<history>") -> Iterator[Op]:
    """Decode ops line by line; raises ``HistoryFormatError`` naming ``name:line``."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if not line.endswith("\n"):
                return  # the last line, cut short by a crash of the writer
            raise HistoryFormatError(f"{name}:{lineno}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HistoryFormatError(f"{name}:{lineno}: expected a JSON object")
        try:
            yield Op.from_dict(data)
        except HistoryFormatError as exc:
            raise HistoryFormatError(f"{name}:{lineno}: {exc}") from exc
