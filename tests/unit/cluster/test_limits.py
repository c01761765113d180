"""What one request may cost: refused with a typed error before any work, never on the loop.

Regression tests for an outside tester's findings: a CreateTopics of 1,000,000 partitions ran the
replica assignment on the controller's loop for ~8 s and then failed with an unhandled
ValueError (command too large); 3,000 partitions × RF 3 cost every broker 3,000 file descriptors.
The controller runs here over a real ``MetadataStore`` and a fake quorum that applies at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from raftlog.cluster import controller_service
from raftlog.cluster.auth import Authorizer
from raftlog.cluster.broker_servicer import BrokerServicer
from raftlog.cluster.config import ConfigFileError, Limits, parse_config
from raftlog.cluster.controller_service import (
    ActiveController,
    ControllerError,
    TopicRequest,
    fd_replica_budget,
)
from raftlog.cluster.controller_servicer import ControllerServicer
from raftlog.cluster.request_metrics import RequestMeter
from raftlog.proto import broker_pb2, common_pb2
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import AclIndex
from raftlog.raft.commands import RegisterBroker, UnfenceBroker, encode_command
from raftlog.raft.controller import ControllerConfig
from raftlog.raft.quorum_types import NotLeaderError, QuorumTimeoutError
from raftlog.raft.store import MetadataStore

Callback = Callable[[bytes | None, Any], None]

# A plaintext broker's authorizer: every caller is User:ANONYMOUS and every check passes, so the
# servicers below meet the limits, not ACLs (those are tested in tests/unit/raft/test_acl.py).
PLAINTEXT_AUTHORIZER = Authorizer(False, (), lambda: AclIndex(()))


class FakeQuorum:
    """Always the leader; applies each command to the store at once (like one voter)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.submitted: list[bytes] = []

    def is_leader(self) -> bool:
        return True

    def leader_id(self) -> int | None:
        return 1

    def submit_async(self, command: bytes, timeout_s: float, callback: Callback) -> None:
        self.submitted.append(command)
        callback(self.store.apply(command), None)


class RaisingQuorum(FakeQuorum):
    """The real adapter raises for a command above its max_command_bytes (1 MiB)."""

    def submit_async(self, command: bytes, timeout_s: float, callback: Callback) -> None:
        raise ValueError(f"command of {len(command)} bytes exceeds max_command_bytes")


def cluster(brokers: int = 3) -> MetadataStore:
    store = MetadataStore()
    for b in range(1, brokers + 1):
        store.apply(encode_command(RegisterBroker(b, f"127.0.0.1:{9000 + b}", 100 + b)))
        store.apply(encode_command(UnfenceBroker(b, 100 + b)))
    return store


def controller(
    store: MetadataStore,
    limits: Limits | None = None,
    *,
    quorum: FakeQuorum | None = None,
    fd_limit: int | None = 1 << 20,
) -> ActiveController:
    return ActiveController(
        1,
        quorum or FakeQuorum(store),
        store,
        ControllerConfig(),
        lambda: 0,
        limits=limits,
        fd_limit=fd_limit,
    )


def create(
    ctrl: ActiveController, name: str, partitions: int, rf: int = 3, **configs: str
) -> dict[str, Any]:
    request = TopicRequest(name, partitions, rf, configs)
    return asyncio.run(ctrl.create_topic(request, validate_only=False))


def no_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the assignment ran for a request that had to be refused first")

    monkeypatch.setattr(controller_service, "assign_replicas", refuse)


# ---- partitions per topic and per request ----------------------------------------------------


def test_a_million_partitions_is_refused_before_any_assignment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = cluster()
    quorum = FakeQuorum(store)
    ctrl = controller(store, quorum=quorum)
    no_assignment(monkeypatch)
    result = create(ctrl, "huge", 1_000_000)
    assert result["error"] == ErrorCode.INVALID_PARTITIONS
    assert "limits.partitions_per_topic_max" in result["message"]
    assert "200" in result["message"]
    assert quorum.submitted == []


def test_partitions_per_topic_follow_the_config() -> None:
    store = cluster()
    ctrl = controller(store, Limits(partitions_per_topic_max=5, partitions_per_request_max=50))
    assert create(ctrl, "six", 6)["error"] == ErrorCode.INVALID_PARTITIONS
    assert "error" not in create(ctrl, "five", 5)


def test_partitions_per_request_add_up_over_its_topics() -> None:
    store = cluster()
    quorum = FakeQuorum(store)
    ctrl = controller(store, Limits(partitions_per_request_max=10), quorum=quorum)
    broker = SimpleNamespace(
        controller=ctrl,
        config=SimpleNamespace(limits=ctrl.limits),
        authorizer=PLAINTEXT_AUTHORIZER,
        metrics=SimpleNamespace(requests=None),  # no /metrics: nothing metered
    )
    servicer = ControllerServicer(broker)  # type: ignore[arg-type]
    request = broker_pb2.CreateTopicsRequest(
        topics=[
            broker_pb2.NewTopic(name=f"t{i}", partitions=4, replication_factor=3) for i in range(3)
        ]
    )
    response = asyncio.run(servicer.CreateTopics(request, None))  # type: ignore[arg-type]
    assert response.error.code == common_pb2.POLICY_VIOLATION
    assert "limits.partitions_per_request_max" in response.error.message
    assert [t.error.code for t in response.topics] == [common_pb2.POLICY_VIOLATION] * 3
    assert quorum.submitted == []  # not even the first topic


# ---- replicas per broker -----------------------------------------------------------------------


def test_replicas_per_broker_are_capped() -> None:
    store = cluster()
    ctrl = controller(store, Limits(partition_replicas_per_broker_max=10))
    assert "error" not in create(ctrl, "a", 6)  # 6 replicas on each of the 3 brokers
    result = create(ctrl, "b", 5)  # would make 11
    assert result["error"] == ErrorCode.POLICY_VIOLATION
    assert "limits.partition_replicas_per_broker_max" in result["message"]
    assert "error" not in create(ctrl, "c", 4)  # exactly 10


def test_an_impossible_replica_count_is_refused_before_assigning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = cluster()
    ctrl = controller(store, Limits(partition_replicas_per_broker_max=10))
    no_assignment(monkeypatch)
    assert create(ctrl, "b", 11)["error"] == ErrorCode.POLICY_VIOLATION


def test_the_cap_is_lowered_to_what_the_open_file_limit_holds() -> None:
    assert fd_replica_budget(1024) == (1024 - 512) // 4
    store = cluster()
    ctrl = controller(store, fd_limit=512 + 4 * 5)  # room for 5 replicas a broker
    result = create(ctrl, "t", 6)
    assert result["error"] == ErrorCode.POLICY_VIOLATION
    assert "open-file limit" in result["message"]
    assert "error" not in create(ctrl, "u", 5)


def test_concurrent_creations_cannot_both_pass_the_cap() -> None:
    store = cluster()
    ctrl = controller(store, Limits(partition_replicas_per_broker_max=10))

    async def both() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                ctrl.create_topic(TopicRequest("x", 6, 3, {}), validate_only=False),
                ctrl.create_topic(TopicRequest("y", 6, 3, {}), validate_only=False),
            )
        )

    results = asyncio.run(both())
    assert sorted("error" in r for r in results) == [False, True]


# ---- the loop, the command size, typed errors ------------------------------------------------


def test_the_assignment_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    store = cluster()
    ctrl = controller(store)
    seen: list[threading.Thread] = []
    real = controller_service.assign_replicas

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(controller_service, "assign_replicas", spy)
    assert "error" not in create(ctrl, "t", 100)
    assert seen and seen[0] is not threading.main_thread()


def test_a_command_above_the_size_limit_is_refused_with_a_code() -> None:
    store = cluster()
    quorum = FakeQuorum(store)
    ctrl = controller(store, Limits(command_bytes_max=256), quorum=quorum)
    with pytest.raises(ControllerError) as raised:
        create(ctrl, "t", 100)  # ~420 bytes encoded
    assert raised.value.code == ErrorCode.INVALID_REQUEST
    assert "limits.command_bytes_max" in raised.value.message
    assert quorum.submitted == []


def test_a_quorum_that_raises_at_submission_gives_a_typed_error() -> None:
    store = cluster()
    ctrl = controller(store, quorum=RaisingQuorum(store))
    with pytest.raises(ControllerError) as raised:
        create(ctrl, "t", 3)
    assert raised.value.code == ErrorCode.INVALID_REQUEST


class FailingQuorum(FakeQuorum):
    """Reports every command as failed with ``error``, as the adapter's callback does."""

    def __init__(self, store: MetadataStore, error: Exception) -> None:
        super().__init__(store)
        self.error = error

    def submit_async(self, command: bytes, timeout_s: float, callback: Callback) -> None:
        callback(None, self.error)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotLeaderError(2), ErrorCode.NOT_CONTROLLER),  # not applied: the client retries elsewhere
        (QuorumTimeoutError("no result"), ErrorCode.REQUEST_TIMED_OUT),  # may still commit
    ],
)
def test_a_failed_submission_gives_the_code_of_its_cause(error: Exception, code: str) -> None:
    store = cluster()
    ctrl = controller(store, quorum=FailingQuorum(store, error))
    with pytest.raises(ControllerError) as raised:
        create(ctrl, "t", 3)
    assert raised.value.code == code
    assert type(error).__name__ in raised.value.message


def test_an_unexpected_exception_in_a_servicer_becomes_a_typed_error() -> None:
    class Exploding:
        limits = Limits()

        def check_create_request(self, topics: Any) -> None:
            return None

        async def create_topic(self, request: Any, *, validate_only: bool) -> Any:
            raise RuntimeError("boom")

    registry = CollectorRegistry(auto_describe=False)
    broker = SimpleNamespace(
        controller=Exploding(),
        config=SimpleNamespace(limits=Limits()),
        authorizer=PLAINTEXT_AUTHORIZER,
        metrics=SimpleNamespace(requests=RequestMeter(registry)),
    )
    servicer = ControllerServicer(broker)  # type: ignore[arg-type]
    request = broker_pb2.CreateTopicsRequest(
        topics=[broker_pb2.NewTopic(name="t", partitions=1, replication_factor=1)]
    )
    response = asyncio.run(servicer.CreateTopics(request, None))  # type: ignore[arg-type]
    assert response.error.code == common_pb2.UNKNOWN_SERVER_ERROR
    assert "RuntimeError: boom" in response.error.message
    # the typed answer is what the request meter counts
    labels = {"rpc": "CreateTopics", "code": "UNKNOWN_SERVER_ERROR"}
    assert registry.get_sample_value("raftlog_requests_total", labels) == 1
    assert registry.get_sample_value("raftlog_request_errors_total", labels) == 1
    assert (
        registry.get_sample_value("raftlog_request_duration_seconds_count", {"rpc": "CreateTopics"})
        == 1
    )

    class BrokenStore:
        def read(self) -> Any:
            raise OSError("disk gone")

    data = BrokerServicer(
        SimpleNamespace(  # type: ignore[arg-type]
            store=BrokenStore(),
            controller_id=lambda: 1,
            authorizer=PLAINTEXT_AUTHORIZER,
            metrics=SimpleNamespace(requests=None),
        )
    )
    answer = asyncio.run(data.Metadata(broker_pb2.MetadataRequest(), None))  # type: ignore[arg-type]
    assert answer.error.code == common_pb2.UNKNOWN_SERVER_ERROR


# ---- the [limits] table ------------------------------------------------------------------------

BASE = {
    "node_id": 1,
    "data_dir": "d",
    "cluster_secret": "s",
    "listen": {"grpc": "127.0.0.1:1", "raft": "127.0.0.1:2"},
    "voters": [{"id": 1, "raft": "127.0.0.1:2", "grpc": "127.0.0.1:1"}],
    "security": {"protocol": "plaintext"},
}


def test_the_limits_table_is_read_and_defaults_hold() -> None:
    assert parse_config(BASE).limits == Limits()
    config = parse_config({**BASE, "limits": {"partitions_per_request_max": 50}})
    assert config.limits.partitions_per_request_max == 50
    assert config.limits.partition_replicas_per_broker_max == 4000


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"partitions_per_request": 5}, "unknown"),
        ({"partitions_per_request_max": 0}, ">= 1"),
        ({"partitions_per_topic_max": 1_000_000}, "100000"),
        ({"command_bytes_max": 1 << 30}, "quorum"),
        ({"command_bytes_max": "big"}, "integer"),
    ],
)
def test_bad_limits_get_one_clear_error(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        parse_config({**BASE, "limits": limits})
