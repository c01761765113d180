"""The Kafka-client workload (``raftlog chaos run --client kafka``) without a cluster: how
librdkafka's debug lines become a record's attempts, how a delivery report and its attempts become
ok / fail / info (the same table as the gRPC workload's), how consumed messages become a poll op
and where a stopped partition is re-assigned (kafka_outcomes.py); the producer worker against a
scripted stand-in for the library; the run's options and its report line."""

from __future__ import annotations

import logging
import random
import shlex
import threading
from collections.abc import Callable
from typing import Any

import pytest

from raftlog.chaos.cli import _parser as chaos_parser
from raftlog.chaos.history import OpType
from raftlog.chaos.kafka_outcomes import (
    AUTO_OFFSET_RESET,
    DUPLICATE_SEQUENCE_NUMBER,
    LOG_TRUNCATION,
    UNKNOWN_ERROR,
    AttemptLog,
    Polled,
    Reposition,
    error_name,
    parse_debug_line,
    poll_outcome,
    reposition_targets,
    send_result_from_report,
    truncation_end_offset,
)
from raftlog.chaos.kafka_workload import KafkaProducerWorker, LibraryLog, kafka_config
from raftlog.chaos.report import client_line, run_figures
from raftlog.chaos.run_config import RunConfig
from raftlog.chaos.workload import (
    DEFINITE_FAIL_CODES,
    Recorder,
    SendResult,
    ValueSource,
    classify_code,
)
from raftlog.client import ClientSecurity
from raftlog.proto.errors import ERRORS_BY_NAME

# librdkafka's codes (rdkafka.h) and the broker codes the tables name
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
NOT_LEADER = 6
REQUEST_TIMED_OUT = 7
UNKNOWN_TOPIC_OR_PARTITION = 3
LOCAL_TIMED_OUT = -185  # a request without an answer in time: maybe appended
LOCAL_TRANSPORT = -195
MSG_TIMED_OUT = -192

# what librdkafka 2.16 prints (debug=msg), as captured in a run against the Kafka listener
SENT = (
    "[thrd:ssl://10.213.23.1:9094/1]: ssl://10.213.23.1:9094/1: chaos [0]: Produce MessageSet "
    "with 1 message(s) (79 bytes, ApiVersion 7, MsgVersion 2, MsgId 38, BaseSeq 37, "
    "PID{Id:0,Epoch:0}, uncompressed)"
)
NOT_LEADER_LINE = (
    "[thrd:ssl://10.213.23.1:9094/1]: ssl://10.213.23.1:9094/1: chaos [0]: MessageSet with 1 "
    "message(s) (MsgId 38, BaseSeq 37) encountered error: Broker: Not leader for partition "
    "(actions Refresh,MsgNotPersisted)"
)
DELIVERED_LINE = (
    "[thrd:ssl://10.213.23.2:9094/2]: ssl://10.213.23.2:9094/2: chaos [0]: MessageSet with 1 "
    "message(s) (MsgId 355, BaseSeq 354) delivered"
)
TEXTS = {
    "Broker: Not leader for partition": NOT_LEADER,
    "Broker: Not enough in-sync replicas": NOT_ENOUGH_REPLICAS,
    "Broker: Broker received a duplicate sequence number": DUPLICATE_SEQUENCE_NUMBER,
    "Local: Timed out": LOCAL_TIMED_OUT,
}


def error_line(text: str) -> str:
    return (
        "ssl://10.213.23.1:9094/1: chaos [0]: MessageSet with 1 message(s) (MsgId 5, BaseSeq 4) "
        f"encountered error: {text} (actions Retry,MsgPossiblyPersisted)"
    )


# ---- librdkafka's debug lines → attempts --------------------------------------------------------


def test_debug_lines_fold_into_the_attempts_of_the_record_in_flight() -> None:
    log = AttemptLog()
    parse_debug_line("PRODUCE", SENT, TEXTS, log)
    parse_debug_line("MSGSET", NOT_LEADER_LINE, TEXTS, log)
    parse_debug_line("PRODUCE", SENT, TEXTS, log)
    parse_debug_line("MSGSET", error_line("Broker: Broker received a something new"), TEXTS, log)
    parse_debug_line("PRODUCE", SENT, TEXTS, log)
    parse_debug_line("MSGSET", DELIVERED_LINE, TEXTS, log)
    parse_debug_line("GETPID", "[thrd:main]: Acquired PID{Id:0,Epoch:0}", TEXTS, log)
    parse_debug_line("DUPSEQ", "ProduceRequest for chaos [0] ... duplicate sequence", TEXTS, log)
    parse_debug_line("DRAIN", "chaos [0] beginning partition drain", TEXTS, log)
    assert log.sent == 3
    assert log.answers == [NOT_LEADER, UNKNOWN_ERROR, None]
    assert (log.producer_ids, log.duplicates) == (1, 1)
    log.clear()
    assert (log.sent, log.answers, log.duplicates, log.producer_ids) == (0, [], 0, 1)


def test_the_library_s_own_error_texts_name_its_codes() -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from raftlog.chaos.kafka_workload import _codes_by_text

    codes = _codes_by_text()
    for text, code in TEXTS.items():
        assert codes[text] == code, text
    assert codes[confluent_kafka.KafkaError(MSG_TIMED_OUT).str()] == MSG_TIMED_OUT
    log = AttemptLog()
    parse_debug_line("MSGSET", NOT_LEADER_LINE, codes, log)
    assert log.answers == [NOT_LEADER]


def test_the_library_log_counts_warnings_and_caps_the_lines_it_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = AttemptLog()
    sink = LibraryLog("chaos-kafka-producer-0", attempts)
    sink.log(logging.DEBUG, "%s [%s] %s", "PRODUCE", "rdkafka#producer-1", SENT)
    with caplog.at_level(logging.INFO, logger="raftlog.chaos.kafka_workload"):
        for _ in range(LibraryLog.LINES_MAX + 30):
            sink.log(logging.ERROR, "%s [%s] %s", "PROTOERR", "rdkafka#consumer-2", "parse failure")
    assert attempts.sent == 1
    assert sink.counts == {"PROTOERR": LibraryLog.LINES_MAX + 30}
    assert len(caplog.records) == LibraryLog.LINES_MAX + 1  # and one "counted only" line


# ---- a delivery report → the op's outcome -------------------------------------------------------


def test_a_delivered_record_is_ok_at_its_offset() -> None:
    result = send_result_from_report(None, 41, sent=1, answers=[None])
    assert (result.type, result.offset, result.error) == (OpType.OK, 41, None)


def test_a_duplicate_answer_without_an_offset_cannot_be_placed() -> None:
    """librdkafka takes DUPLICATE_SEQUENCE_NUMBER as success with no offset (the listener sends
    none): the record is written once, somewhere — info, never an ok without a position."""
    answers = [LOCAL_TIMED_OUT, DUPLICATE_SEQUENCE_NUMBER]
    result = send_result_from_report(None, -1001, sent=2, answers=answers)
    assert result.type is OpType.INFO and result.duplicate
    assert result.error is not None and "DUPLICATE_SEQUENCE_NUMBER" in result.error
    plain = send_result_from_report(None, None, sent=1, answers=[None])
    assert plain.type is OpType.INFO and not plain.duplicate


def test_a_send_every_attempt_of_which_was_refused_before_the_append_failed() -> None:
    answers = [NOT_ENOUGH_REPLICAS] * 4
    result = send_result_from_report(NOT_ENOUGH_REPLICAS, -1001, sent=4, answers=answers)
    assert (result.type, result.error) == (OpType.FAIL, "NOT_ENOUGH_REPLICAS")


def test_a_refusal_after_an_attempt_that_may_have_been_appended_is_unknown() -> None:
    """The case the module docstring names: the first attempt timed out (maybe appended), the
    retry was refused NOT_ENOUGH_REPLICAS; the report says only the last."""
    for first in (LOCAL_TIMED_OUT, LOCAL_TRANSPORT, REQUEST_TIMED_OUT, NOT_LEADER, 20):
        answers = [first, NOT_ENOUGH_REPLICAS]
        result = send_result_from_report(NOT_ENOUGH_REPLICAS, -1001, sent=2, answers=answers)
        assert result.type is OpType.INFO, first


def test_a_definite_looking_report_whose_attempts_were_not_all_seen_is_unknown() -> None:
    for sent, answers in (
        (0, []),  # no attempt logged at all
        (2, [NOT_ENOUGH_REPLICAS]),  # a request sent without a logged answer
        (1, [UNKNOWN_TOPIC_OR_PARTITION]),  # the last logged answer is not the report's
        (2, [None, NOT_ENOUGH_REPLICAS]),  # "delivered", then failed: something is off
    ):
        result = send_result_from_report(NOT_ENOUGH_REPLICAS, -1001, sent=sent, answers=answers)
        assert result.type is OpType.INFO, (sent, answers)


def test_local_errors_are_unknown() -> None:
    for code in (MSG_TIMED_OUT, LOCAL_TRANSPORT, -150, -151, -152, -188, -190, -12345):
        result = send_result_from_report(code, -1001, sent=1, answers=[LOCAL_TIMED_OUT])
        assert result.type is OpType.INFO, code
    assert error_name(MSG_TIMED_OUT) == "_MSG_TIMED_OUT"
    assert error_name(-12345) == "LOCAL_12345"


@pytest.mark.parametrize("name", sorted(ERRORS_BY_NAME))
def test_one_answered_attempt_is_judged_as_the_grpc_workload_judges_it(name: str) -> None:
    """The same table for both clients: a report of broker code c after one attempt answered c
    ends as the gRPC workload's ``classify_code`` says (and DUPLICATE_SEQUENCE_NUMBER as an
    error is never ok: the library turns the real one into a success)."""
    code = ERRORS_BY_NAME[name].code
    if code <= 0 or code == DUPLICATE_SEQUENCE_NUMBER:
        return
    result = send_result_from_report(code, -1001, sent=1, answers=[code])
    expected = OpType.FAIL if name in DEFINITE_FAIL_CODES else OpType.INFO
    assert result.type is expected is classify_code(name)
    assert result.error == name
    assert error_name(code) == name


# ---- consumed messages → a poll op --------------------------------------------------------------


def record(partition: int, offset: int, value: bytes | None) -> Polled:
    return Polled("chaos", partition, offset, value)


TRUNCATION_TEXT = (
    "Partition log truncation detected at offset 12 (leader epoch 3): broker end offset is 10 "
    "(offset leader epoch 2). Reset to INVALID.: Local: Partition log truncation detected "
    "(broker 2)"
)
OUT_OF_RANGE_TEXT = (
    "fetch failed due to requested offset not available on the broker: Broker: Offset out of "
    "range (broker 1)"
)


def test_records_group_by_partition_and_move_the_positions() -> None:
    items = [record(0, 4, b"17"), record(1, 0, b"3"), record(0, 5, b"x"), record(0, 6, None)]
    outcome = poll_outcome(items, "chaos", {0: 4, 1: 0, 2: 7})
    assert outcome.records == {"chaos-0": [(4, 17), (5, "x"), (6, "<null>")], "chaos-1": [(0, 3)]}
    assert outcome.positions == {0: 7, 1: 1, 2: 7}
    assert outcome.repositions == {} and outcome.errors == () and outcome.error is None


def test_a_truncation_stops_its_partition_with_the_leader_s_end() -> None:
    items = [
        record(1, 8, b"1"),
        Polled("chaos", 0, 12, None, AUTO_OFFSET_RESET, TRUNCATION_TEXT),
        Polled("chaos", 2, 40, None, AUTO_OFFSET_RESET, OUT_OF_RANGE_TEXT),
        Polled(None, None, None, None, LOCAL_TRANSPORT, "ssl://...: Disconnected"),
    ]
    outcome = poll_outcome(items, "chaos", {0: 12, 1: 8, 2: 40})
    assert outcome.positions == {0: 12, 1: 9, 2: 40}
    assert outcome.repositions[0] == Reposition(True, 10, TRUNCATION_TEXT)
    assert outcome.repositions[2] == Reposition(False, None, OUT_OF_RANGE_TEXT)
    assert outcome.errors == ("_TRANSPORT: ssl://...: Disconnected",)
    assert outcome.error is not None
    assert outcome.error.startswith("TRUNCATED: partition 0")
    assert "OFFSET_OUT_OF_RANGE: partition 2" in outcome.error
    assert truncation_end_offset(TRUNCATION_TEXT) == 10
    assert truncation_end_offset("No epoch found ...: broker end offset is -1 (...)") is None
    assert truncation_end_offset(OUT_OF_RANGE_TEXT) is None
    # the library's own code says it too, and an event naming no partition stops them all
    own = poll_outcome([Polled("chaos", -1, None, None, LOG_TRUNCATION, "")], "chaos", {0: 1, 1: 2})
    assert set(own.repositions) == {0, 1} and all(r.truncated for r in own.repositions.values())


def test_the_report_counts_a_stopped_poll_as_a_consumer_truncation() -> None:
    """report.run_figures counts polls whose error starts TRUNCATED / OFFSET_OUT_OF_RANGE: the
    Kafka consumer's text must start the same way as the gRPC consumer's."""
    from raftlog.chaos.history import HistoryBuilder, OpF

    outcome = poll_outcome(
        [Polled("chaos", 0, 12, None, AUTO_OFFSET_RESET, TRUNCATION_TEXT)], "chaos", {0: 12}
    )
    history = HistoryBuilder()
    op = history.invoke(5, OpF.POLL, None, time_ms=1.0)
    history.complete(op, OpType.FAIL, {}, error=outcome.error, time_ms=2.0)
    assert run_figures(history.ops)["consumer_truncations"] == 1


def test_a_stopped_partition_goes_back_to_where_the_leader_s_log_agrees() -> None:
    positions = {0: 12, 1: 50, 2: 3, 3: 9}
    repositions = {
        0: Reposition(True, 10),  # truncated below our position: back to the end named
        1: Reposition(True, None),  # no end named: the high watermark, when lower
        2: Reposition(False),  # out of range below the log start: up to it
        3: Reposition(False),  # watermarks unknown: keep it, ask again next poll
    }
    watermarks = {1: (0, 45), 2: (5, 20)}
    targets = reposition_targets(positions, repositions, watermarks)
    assert targets == {0: 10, 1: 45, 2: 5, 3: 9}
    past_end = reposition_targets({0: 30}, {0: Reposition(False)}, {0: (0, 25)})
    assert past_end == {0: 25}


# ---- the client's settings, the run's options, the report ---------------------------------------


def test_the_client_authenticates_with_the_harness_certificate() -> None:
    tls = ClientSecurity(b"CA", b"CERT", b"KEY")
    config = kafka_config("10.0.0.1:9094", tls, "p0", request_timeout_ms=2000)
    assert config["security.protocol"] == "ssl"
    assert (config["ssl.ca.pem"], config["ssl.certificate.pem"], config["ssl.key.pem"]) == (
        "CA",
        "CERT",
        "KEY",
    )
    assert config["socket.timeout.ms"] > 2000  # the broker answers a produce timeout first
    plain = kafka_config("h:1", ClientSecurity.plaintext(), "c", request_timeout_ms=2000)
    assert plain["security.protocol"] == "plaintext" and "ssl.ca.pem" not in plain
    with pytest.raises(ValueError, match="certificate"):
        kafka_config(
            "h:1", ClientSecurity(b"CA", username="u", password="p"), "c", request_timeout_ms=1
        )


def test_the_client_option_replays_and_is_checked() -> None:
    config = RunConfig(client="kafka", time_limit_s=300, seed=5)
    assert config.to_json()["client"] == "kafka"
    assert config.producer_label == "librdkafka-idempotent"
    args = chaos_parser().parse_args(shlex.split(config.command_line())[2:])
    assert args.client == "kafka" and args.producer == "once"
    assert "--client" not in RunConfig().command_line()
    assert chaos_parser().parse_args(["run"]).client == "grpc"
    with pytest.raises(ValueError, match="--client"):
        RunConfig(client="http")
    with pytest.raises(ValueError, match="idempotent producer"):
        RunConfig(client="kafka", producer_mode="retry")


def test_the_report_names_the_client() -> None:
    kafka = {
        "client": {
            "name": "kafka",
            "library": {"confluent_kafka": "2.16.2", "librdkafka": "2.16.0"},
            "producer": "librdkafka-idempotent",
            "listener_port": 9094,
        }
    }
    assert client_line(kafka) == (
        "kafka · confluent-kafka 2.16.2, librdkafka 2.16.0 · librdkafka-idempotent · "
        "Kafka listeners on :9094"
    )
    grpc = {"client": {"name": "grpc", "library": "raftlog.client", "producer": "chaos workload"}}
    assert client_line(grpc) == "grpc · raftlog.client · chaos workload"
    assert client_line({}) == ""


# ---- the producer worker's shell, against a scripted stand-in for the library --------------------


class ScriptedProducer:
    """Plays one send: ``steps`` are what each ``poll`` does — debug lines for the worker's
    library log, a fatal error raised (as confluent-kafka raises it from poll), or the report."""

    def __init__(self, worker: KafkaProducerWorker, steps: list[Any]) -> None:
        self.worker = worker
        self.steps = steps
        self.on_delivery: Callable[[Any, Any], None] | None = None
        self.purged = False

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.on_delivery = kwargs["on_delivery"]

    def poll(self, timeout: float) -> int:
        confluent_kafka = pytest.importorskip("confluent_kafka")
        if not self.steps:
            return 0
        step = self.steps.pop(0)
        if step == "fatal":
            error = confluent_kafka.KafkaError(45, "sequence desynchronization", fatal=True)
            raise confluent_kafka.KafkaException(error)
        if isinstance(step, tuple) and step[0] == "log":
            self.worker.library_log.log(logging.DEBUG, "%s [%s] %s", step[1], "p", step[2])
            return 0
        code, offset = step
        error = None if code is None else confluent_kafka.KafkaError(code)
        message = confluent_kafka.Message(topic="chaos", partition=1, offset=offset, error=error)
        assert self.on_delivery is not None
        self.on_delivery(error, message)
        return 1

    def purge(self, **kwargs: object) -> None:
        self.purged = True

    def flush(self, timeout: float) -> int:
        return 0


def producer_worker() -> KafkaProducerWorker:
    pytest.importorskip("confluent_kafka")
    return KafkaProducerWorker(
        0,
        Recorder(lambda: 0.0),
        "10.0.0.1:9094",
        "chaos",
        3,
        ValueSource(),
        10.0,
        threading.Event(),
        random.Random(0),
        security=ClientSecurity.plaintext(),
        own=[1],
    )


def send_through(
    worker: KafkaProducerWorker, steps: list[Any]
) -> tuple[SendResult, ScriptedProducer]:
    fake = ScriptedProducer(worker, steps)
    worker._producer = fake  # type: ignore[assignment]  # stands in for the library handle
    return worker._send(1, 99), fake


def test_the_worker_judges_a_report_by_the_attempts_the_library_logged() -> None:
    worker = producer_worker()
    refused = ("log", "MSGSET", error_line("Broker: Not enough in-sync replicas"))
    sent = ("log", "PRODUCE", SENT)
    result, _ = send_through(worker, [sent, refused, sent, refused, (NOT_ENOUGH_REPLICAS, -1001)])
    assert result.type is OpType.FAIL
    timed_out = ("log", "MSGSET", error_line("Local: Timed out"))
    result, _ = send_through(worker, [sent, timed_out, sent, refused, (NOT_ENOUGH_REPLICAS, -1001)])
    assert result.type is OpType.INFO
    result, _ = send_through(worker, [sent, ("log", "MSGSET", DELIVERED_LINE), (None, 17)])
    assert (result.type, result.offset) == (OpType.OK, 17)
    assert worker.stats.attempts == 5 and worker.stats.retried_ops == 2


def test_a_fatal_error_raised_from_poll_ends_the_op_as_unknown_and_drops_the_producer() -> None:
    """confluent-kafka raises the idempotent producer's fatal error from poll (after an unclean
    election the new leader lacks the producer's last batches); the worker must not die of it:
    the op ends info and the next op gets a new producer (a new producer id)."""
    worker = producer_worker()
    sent = ("log", "PRODUCE", SENT)
    desync = (
        "log",
        "MSGSET",
        error_line("Broker: Broker received an out of order sequence number"),
    )
    result, fake = send_through(worker, [sent, desync, "fatal", (45, -1001)])
    assert result.type is OpType.INFO
    assert result.error == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert worker._fatal
    worker._drop_producer()
    assert fake.purged and worker._producer is None
