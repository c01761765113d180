"""What librdkafka (confluent-kafka) says, as the chaos history records it: a delivery report
and the library's account of each attempt → ok / fail / info; consumed messages → a poll op and
the positions to re-seek. Pure: no library, no sockets, no clock — kafka_workload.py's workers feed
it (they alone import confluent_kafka), and the same checker judges what comes out.

**Why a delivery report alone does not say "definitely not written".** The producer is
librdkafka's idempotent producer (``enable.idempotence=true``, ``acks=all``), which requires
``retries >= 1`` and resends a batch *inside* the library: the report carries only the *last*
attempt's error. A send whose first attempt timed out after the broker appended it and whose
retry was refused NOT_ENOUGH_REPLICAS (the broker checks the ISR before it looks for a
duplicate: cluster/produce.py) comes back as NOT_ENOUGH_REPLICAS — a definite-looking error for a
record that may well be in the log, and a later read of it would be a false aborted read. The
library tracks this (``rd_kafka_message_status``: possibly persisted) but confluent-kafka does not
expose it. So each worker reads librdkafka's own account of every attempt from its debug log
(``debug=msg``, served by ``poll`` in the worker's thread, in order with the delivery reports):

==========================================================  ======================================
librdkafka debug line (facility)                            what it tells
==========================================================  ======================================
``PRODUCE``  ``... Produce MessageSet with 1 message(s)``   one Produce request was sent
``MSGSET``   ``... MessageSet with 1 message(s) (MsgId m,   that request's answer: delivered, or
BaseSeq s) delivered | encountered error: <text>            an error (a broker code, or a local
(actions ...)``                                             one: transport, request timeout)
``DUPSEQ``   (after an error line for code 46)              the retry was a duplicate: librdkafka
                                                            reports success *without* an offset
``GETPID``   ``Acquired PID{...}``                          a producer id (and epoch) was taken
==========================================================  ======================================

Each worker sends one record at a time and waits for its report (Jepsen: a process does one op
at a time), so every line between ``produce`` and the report is about that record. The outcome
(``send_result_from_report``), with the per-attempt table of workload.py (``classify_code``):

=============================================  =======  =====================================
report                                         outcome  why
=============================================  =======  =====================================
no error, offset >= 0                          ok       acknowledged (acks=all) at that offset
no error, no offset (a DUPLICATE_SEQUENCE_     info     written once, but where is unknown:
NUMBER answer, taken as success)                        the checker cannot place it
broker error, every attempt answered with a    fail     each attempt was refused before the
definite code, the last one logged = the                append: nothing of it can be in the log
report's, every request sent was answered
broker error otherwise                         info     some attempt may have been appended,
                                                        or the attempts are not all known
local error (_MSG_TIMED_OUT, _TRANSPORT,       info     when in doubt, unknown
_PURGE_*, _UNKNOWN_TOPIC, _FATAL, ...)
``produce()`` raised (queue full, fatal)       fail     the record never entered the library
no report within the bound                     info     the producer is dropped and made anew
=============================================  =======  =====================================

**The consumer** (kafka_workload.py) assigns every partition at offset 0 (no group membership:
a ``group.id`` is required by the library but nothing is committed) and never repositions
silently: ``auto.offset.reset=error`` turns an offset out of range, and a detected log truncation
(KIP-320, ``OffsetForLeaderEpoch``), into an ``_AUTO_OFFSET_RESET`` event whose text says which
("Partition log truncation detected at ...: broker end offset is N"); either stops that
partition until the worker re-assigns, which it records as an ``assign`` op with the new
positions — as the gRPC consumer worker does (``poll_outcome``, ``reposition_targets``).
Positions are the worker's own (the offset after the last record the library returned), so a
jump inside the library shows as a poll skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from raftlog.proto.errors import ERRORS_BY_CODE

from .history import OpType
from .workload import SendResult, classify_code, combine_attempts, decode_value, key_of

__all__ = [
    "AUTO_OFFSET_RESET",
    "DUPLICATE_SEQUENCE_NUMBER",
    "LOCAL_NAMES",
    "LOG_TRUNCATION",
    "OFFSET_OUT_OF_RANGE",
    "UNKNOWN_ERROR",
    "AttemptLog",
    "PollOutcome",
    "Polled",
    "Reposition",
    "error_name",
    "parse_debug_line",
    "poll_outcome",
    "reposition_targets",
    "send_result_from_report",
    "truncation_end_offset",
]

DUPLICATE_SEQUENCE_NUMBER = 46
LOG_TRUNCATION = -139  # librdkafka's RD_KAFKA_RESP_ERR__LOG_TRUNCATION
AUTO_OFFSET_RESET = -140  # RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET (auto.offset.reset=error)
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_ERROR = -1000  # an error text no librdkafka code has (never definite)

# librdkafka's local error codes (rdkafka.h, ``RD_KAFKA_RESP_ERR_*``) the workload meets
LOCAL_NAMES: Mapping[int, str] = {
    -197: "_DESTROY",
    -196: "_FAIL",
    -195: "_TRANSPORT",
    -193: "_RESOLVE",
    -192: "_MSG_TIMED_OUT",
    -190: "_UNKNOWN_PARTITION",
    -188: "_UNKNOWN_TOPIC",
    -187: "_ALL_BROKERS_DOWN",
    -185: "_TIMED_OUT",
    -184: "_QUEUE_FULL",
    -181: "_SSL",
    -172: "_STATE",
    -166: "_TIMED_OUT_QUEUE",
    -153: "_RETRY",
    -152: "_PURGE_QUEUE",
    -151: "_PURGE_INFLIGHT",
    -150: "_FATAL",
    -149: "_INCONSISTENT",
    AUTO_OFFSET_RESET: "_AUTO_OFFSET_RESET",
    LOG_TRUNCATION: "_LOG_TRUNCATION",
    UNKNOWN_ERROR: "_UNKNOWN_ERROR_TEXT",
}


# ---- pure: error names -----------------------------------------------------------------------


def error_name(code: int) -> str:
    """A librdkafka error code as the history names it: a broker code (> 0) by raftlog's name
    for it (``NOT_LEADER_OR_FOLLOWER``, not librdkafka's ``NOT_LEADER_FOR_PARTITION``), so the
    two clients' histories speak alike; a local one (< 0) by a ``LOCAL_`` + number name."""
    if code == 0:
        return "NONE"
    if code > 0:
        found = ERRORS_BY_CODE.get(code)
        return found.name if found is not None else f"CODE_{code}"
    return LOCAL_NAMES.get(code, f"LOCAL_{-code}")


def _attempt(code: int | None) -> SendResult:
    """One Produce attempt's outcome from its answer (None: delivered), by workload.py's table.
    Local errors (transport, request timeout) and unknown texts are never definite."""
    if code is None:
        return SendResult(OpType.OK)
    if code <= 0:
        return SendResult(OpType.INFO, error=error_name(code))
    name = error_name(code)
    return SendResult(classify_code(name), error=name)


# ---- pure: librdkafka's debug lines ------------------------------------------------------------


@dataclass(slots=True)
class AttemptLog:
    """What librdkafka logged about the one record in flight: requests sent, their answers in
    order (None: delivered; else a librdkafka code), producer ids taken. Owned by one worker."""

    sent: int = 0
    answers: list[int | None] = field(default_factory=list)
    producer_ids: int = 0
    duplicates: int = 0  # DUPSEQ lines: a retry answered "already stored"

    def clear(self) -> None:
        self.sent = 0
        self.answers.clear()
        self.duplicates = 0


_SENT = re.compile(r"Produce MessageSet with \d+ message\(s\)")
_ANSWER = re.compile(
    r"MessageSet with \d+ message\(s\) \(MsgId \d+, BaseSeq -?\d+\) "
    r"(?:(delivered)|encountered error: (.*) \(actions [^)]*\))"
)


def parse_debug_line(
    facility: str, text: str, codes_by_text: Mapping[str, int], log: AttemptLog
) -> None:
    """Fold one librdkafka debug line into ``log`` (the module docstring's table). An error text
    that names no code is recorded as ``UNKNOWN_ERROR``, which is never definite."""
    match facility:
        case "PRODUCE":
            if _SENT.search(text):
                log.sent += 1
        case "MSGSET":
            found = _ANSWER.search(text)
            if found is None:
                return
            if found.group(1):
                log.answers.append(None)
            else:
                log.answers.append(codes_by_text.get(found.group(2).strip(), UNKNOWN_ERROR))
        case "DUPSEQ":
            log.duplicates += 1
        case "GETPID":
            if "Acquired PID" in text:
                log.producer_ids += 1
        case _:
            pass


# ---- pure: a delivery report → the op's outcome ----------------------------------------------


def send_result_from_report(
    error: int | None,
    offset: int | None,
    *,
    sent: int,
    answers: Sequence[int | None],
) -> SendResult:
    """The outcome of one send from its delivery report (``error``: None or the report's
    librdkafka code; ``offset``: the report's) and the attempts librdkafka logged for it
    (``sent`` requests, ``answers`` in order). See the module docstring's table."""
    if error is None:
        if offset is not None and offset >= 0:
            return SendResult(OpType.OK, offset=offset)
        if DUPLICATE_SEQUENCE_NUMBER in answers:
            return SendResult(
                OpType.INFO,
                error="ok without an offset: DUPLICATE_SEQUENCE_NUMBER (the answer to a retry "
                "named no offset)",
                duplicate=True,
            )
        return SendResult(OpType.INFO, error="ok without an offset")
    final = _attempt(error)
    if final.type is OpType.FAIL and (not answers or answers[-1] != error or sent != len(answers)):
        # a definite-looking report whose attempts were not all seen: it may hide an append
        return SendResult(OpType.INFO, error=f"{final.error} (attempts not all known)")
    # every logged answer is one attempt; the report repeats the last one when that one ended it
    attempts = [
        _attempt(a) if a is not None else SendResult(OpType.INFO, error="delivered, then failed")
        for a in answers
    ]
    if not answers or answers[-1] != error:
        attempts.append(final)
    return combine_attempts(attempts)  # no attempt is ok here: fail or info


# ---- pure: polled messages → a poll op ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Polled:
    """One item a ``consume`` call returned: a record, or an error event (``error`` set, a
    librdkafka code; ``partition`` None or < 0 when the event names none)."""

    topic: str | None
    partition: int | None
    offset: int | None
    value: bytes | None
    error: int | None = None
    error_text: str = ""


@dataclass(frozen=True, slots=True)
class Reposition:
    """Why the library stopped fetching one partition until the worker seeks it."""

    truncated: bool  # True: log truncation detected (KIP-320); False: offset out of range
    end_offset: int | None = None  # truncation: the leader's end offset for our epoch, if said
    text: str = ""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """One ``consume`` call as the history sees it."""

    records: dict[str, list[tuple[int, int | str]]]  # key → [(offset, value)] in order returned
    positions: dict[int, int]  # partition → the next offset, after this poll
    repositions: dict[int, Reposition]  # partitions stopped until re-assigned
    errors: tuple[str, ...] = ()  # other error events ("NAME: text"): informational

    @property
    def error(self) -> str | None:
        """The op's error text when partitions must be repositioned (the report counts polls
        whose error starts with TRUNCATED / OFFSET_OUT_OF_RANGE as consumer truncations)."""
        if not self.repositions:
            return None
        parts = []
        for partition, why in sorted(self.repositions.items()):
            name = "TRUNCATED" if why.truncated else "OFFSET_OUT_OF_RANGE"
            parts.append(f"{name}: partition {partition}: {why.text}".rstrip(": "))
        return "; ".join(parts)


_TRUNCATION_END = re.compile(r"broker end offset is (-?\d+)")


def truncation_end_offset(text: str) -> int | None:
    """The leader's end offset for the consumer's epoch, from librdkafka's _LOG_TRUNCATION text
    ("Partition log truncation detected at ...: broker end offset is 42 (...)")."""
    found = _TRUNCATION_END.search(text)
    if found is None:
        return None
    offset = int(found.group(1))
    return offset if offset >= 0 else None


def poll_outcome(items: Sequence[Polled], topic: str, positions: Mapping[int, int]) -> PollOutcome:
    """Fold one ``consume`` call's items into the poll op: records per key in the order
    returned (each moves its partition's position to offset + 1), the partitions the library
    stopped (truncation, out of range; an event naming no partition stops them all), and every
    other error event as text."""
    records: dict[str, list[tuple[int, int | str]]] = {}
    after = dict(positions)
    repositions: dict[int, Reposition] = {}
    errors: list[str] = []
    for item in items:
        if item.error is None:
            if item.topic is None or item.partition is None or item.offset is None:
                errors.append("MALFORMED: a record without topic, partition or offset")
                continue
            key = key_of(item.topic, item.partition)
            records.setdefault(key, []).append((item.offset, decode_value(item.value)))
            if item.topic == topic:
                after[item.partition] = item.offset + 1
            continue
        if item.error in (LOG_TRUNCATION, AUTO_OFFSET_RESET, OFFSET_OUT_OF_RANGE):
            # with auto.offset.reset=error both arrive as _AUTO_OFFSET_RESET; the text tells
            truncated = item.error == LOG_TRUNCATION or "truncation" in item.error_text.lower()
            why = Reposition(
                truncated,
                truncation_end_offset(item.error_text) if truncated else None,
                item.error_text,
            )
            named = item.partition is not None and item.partition >= 0
            targets = [item.partition] if named and item.partition is not None else list(after)
            for partition in targets:
                repositions[partition] = why
            continue
        errors.append(f"{error_name(item.error)}: {item.error_text}")
    return PollOutcome(records, after, repositions, tuple(errors))


def reposition_targets(
    positions: Mapping[int, int],
    repositions: Mapping[int, Reposition],
    watermarks: Mapping[int, tuple[int, int]],
) -> dict[int, int]:
    """Where each stopped partition goes (every other stays): after a truncation, back to the
    leader's end for our epoch (or its high watermark, when the text named no end) if that is
    below the position; out of range, into [log start, high watermark]. A partition whose
    watermarks are unknown keeps its position (the next poll asks again)."""
    out = dict(positions)
    for partition, why in repositions.items():
        position = positions.get(partition, 0)
        marks = watermarks.get(partition)
        if why.truncated:
            end = why.end_offset if why.end_offset is not None else (marks[1] if marks else None)
            if end is not None:
                out[partition] = max(0, min(position, end))
        elif marks is not None:
            low, high = marks
            out[partition] = max(low, min(position, high))
    return out
