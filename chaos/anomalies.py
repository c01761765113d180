"""The checker's verdict: the anomaly kinds it looks for, each with its meaning, and the result
types ``check`` (checker.py) returns — plus ``render_summary``, the verdict as a rich table.

Pure: frozen data and functions of it; ``render_summary`` builds a table without printing it.
The kinds follow Jepsen's Kafka workload (jepsen/src/jepsen/tests/kafka.clj, its "queue"
anomalies); ``Kind.meaning`` says what each one is, and ``BAD_KINDS`` which
ones make a run invalid. ``CheckResult.to_json`` is the ``checker`` part of results.json.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, assert_never

from rich.table import Table
from rich.text import Text

__all__ = [
    "BAD_KINDS",
    "Anomaly",
    "CheckResult",
    "Example",
    "Kind",
    "Summary",
    "render_summary",
]

Example = Mapping[str, object]  # JSON-ready: str keys; ints, strs, None, lists, dicts


class Kind(enum.Enum):
    """The anomalies the checker looks for: those of Jepsen's Kafka workload, with its names,
    plus ``unseen-undrained`` (unseen but explained). ``meaning`` says what each one is."""

    LOST_WRITE = "lost-write"
    UNSEEN = "unseen"
    UNSEEN_UNDRAINED = "unseen-undrained"
    INCONSISTENT_OFFSETS = "inconsistent-offsets"
    DUPLICATE = "duplicate"
    ABORTED_READ = "aborted-read"
    UNEXPECTED = "unexpected"
    POLL_SKIP = "poll-skip"
    NONMONOTONIC_POLL = "nonmonotonic-poll"
    NONMONOTONIC_SEND = "nonmonotonic-send"
    LOST_ON_NODE = "lost-on-node"

    @property
    def meaning(self) -> str:
        match self:
            case Kind.LOST_WRITE:
                return (
                    "an ok send at (key, offset a) that no read ever returned, although some "
                    "read of that key returned an offset b > a. Split per writer into prefix / "
                    "middle / postfix by whether the same producer's writes to that key below "
                    "and above a were read (NATS's checker)."
                )
            case Kind.UNSEEN:
                return (
                    "an ok send that no read returned although a drain of its key began after "
                    "the ack: the final complete read should have seen it (a loss at the tail)."
                )
            case Kind.UNSEEN_UNDRAINED:
                return (
                    "an ok send that no read returned and no drain of its key began after the "
                    "ack: loss or mere delay, the history cannot tell. Reported, not bad."
                )
            case Kind.INCONSISTENT_OFFSETS:
                return (
                    "one (key, offset) observed with more than one value, across ok sends, "
                    "polls and drains (per-node drains too): replicas diverged, split brain."
                )
            case Kind.DUPLICATE:
                return (
                    "one value at two or more (key, offset) positions within one view (the "
                    "client's, or one node's): a retry stored twice."
                )
            case Kind.ABORTED_READ:
                return "G1a: a value whose every send definitely failed shows up in a read."
            case Kind.UNEXPECTED:
                return (
                    "a read value that was never sent (no send of it at all), or that was read "
                    "first in a key it was not sent to."
                )
            case Kind.POLL_SKIP:
                return (
                    "one consumer's successive polled offsets of a key (no assign between; the "
                    "poll's start position counts) jump over offsets known to hold a value."
                )
            case Kind.NONMONOTONIC_POLL:
                return (
                    "one consumer's next polled offset of a key (or its start position) is at "
                    "or before the last offset it polled: it went backwards or re-read."
                )
            case Kind.NONMONOTONIC_SEND:
                return (
                    "one producer's later ok send to a key (by invoke order) landed at an "
                    "offset <= one of its earlier ok sends to that key."
                )
            case Kind.LOST_ON_NODE:
                return (
                    "a value acked, or read in a leader drain, at (key, offset o) and read "
                    "somewhere, but missing or different in a drain of one node that reached o, "
                    "or in a leader drain begun after it was acked (a leader drain reads to the "
                    "high watermark, so it need not have reached o itself): per-node loss, "
                    "divergence, or an acked tail truncated away."
                )
            case _:
                assert_never(self)


# Every kind but unseen-undrained, which a short final drain explains (Jepsen's lesson: the final
# drain must be long, or records merely unread are counted as lost). A run is valid only when
# none of these was found.
BAD_KINDS: frozenset[Kind] = frozenset(
    {
        Kind.LOST_WRITE,
        Kind.UNSEEN,
        Kind.INCONSISTENT_OFFSETS,
        Kind.DUPLICATE,
        Kind.ABORTED_READ,
        Kind.UNEXPECTED,
        Kind.POLL_SKIP,
        Kind.NONMONOTONIC_POLL,
        Kind.NONMONOTONIC_SEND,
        Kind.LOST_ON_NODE,
    }
)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """All cases of one kind: the full count, the first few examples in history order, and for
    some kinds a breakdown of the count (lost-write by position, unexpected by reason)."""

    kind: Kind
    count: int
    examples: tuple[Example, ...] = ()
    breakdown: Mapping[str, int] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.count > 0 and self.kind in BAD_KINDS

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bad": self.bad,
            "meaning": self.kind.meaning,
            "breakdown": dict(self.breakdown),
            "examples": [dict(e) for e in self.examples],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """What the history held, to judge how much the verdict is worth."""

    ops: int
    sends_attempted: int  # send invocations
    sends_ok: int
    sends_fail: int
    sends_info: int
    sends_unfinished: int  # invoked, never completed (the run ended)
    polls_ok: int
    drains_ok: int
    values_read: int  # distinct values returned by any read
    keys: int
    nodes_drained: tuple[int, ...]
    malformed: int  # values or records the checker could not read and skipped

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "sends_attempted": self.sends_attempted,
            "sends_ok": self.sends_ok,
            "sends_fail": self.sends_fail,
            "sends_info": self.sends_info,
            "sends_unfinished": self.sends_unfinished,
            "polls_ok": self.polls_ok,
            "drains_ok": self.drains_ok,
            "values_read": self.values_read,
            "keys": self.keys,
            "nodes_drained": list(self.nodes_drained),
            "malformed": self.malformed,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on one history: one ``Anomaly`` per ``Kind`` (all present, in ``Kind`` order)
    and a summary. ``valid`` is derived, so it cannot disagree with the counts."""

    anomalies: Mapping[Kind, Anomaly]
    summary: Summary

    def __getitem__(self, kind: Kind) -> Anomaly:
        return self.anomalies[kind]

    @property
    def bad_kinds(self) -> tuple[Kind, ...]:
        return tuple(kind for kind, anomaly in self.anomalies.items() if anomaly.bad)

    @property
    def valid(self) -> bool:
        return not self.bad_kinds

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps``: verdict, summary and every kind."""
        return {
            "valid": self.valid,
            "bad": [kind.value for kind in self.bad_kinds],
            "summary": self.summary.to_json(),
            "anomalies": {kind.value: a.to_json() for kind, a in self.anomalies.items()},
        }


def render_summary(result: CheckResult, *, examples_shown: int = 2) -> Table:
    """A rich table of the verdict: one row per kind, red when bad, yellow when only reported,
    green when clean. Pure: the caller prints it."""
    s = result.summary
    verdict = Text("VALID", style="bold green") if result.valid else Text("INVALID", "bold red")
    table = Table(
        title=Text.assemble("history check: ", verdict),
        caption=(
            f"{s.ops} ops · sends {s.sends_attempted} (ok {s.sends_ok}, fail {s.sends_fail}, "
            f"info {s.sends_info}, unfinished {s.sends_unfinished}) · polls {s.polls_ok} · "
            f"drains {s.drains_ok} · values read {s.values_read} · keys {s.keys}"
            + (f" · malformed {s.malformed}" if s.malformed else "")
        ),
    )
    table.add_column("anomaly")
    table.add_column("count", justify="right")
    table.add_column("first examples", overflow="fold")
    for kind, anomaly in result.anomalies.items():
        style = "red" if anomaly.bad else ("yellow" if anomaly.count else "green")
        lines = [_example_line(e) for e in anomaly.examples[:examples_shown]]
        if anomaly.breakdown:
            lines.insert(0, ", ".join(f"{k}: {n}" for k, n in sorted(anomaly.breakdown.items())))
        table.add_row(
            Text(kind.value, style=style),
            Text(str(anomaly.count), style=style),
            Text("\n".join(lines)),  # Text: examples hold brackets that must not be markup
        )
    return table


def _example_line(example: Example) -> str:
    return " ".join(f"{k}={v}" for k, v in example.items())
