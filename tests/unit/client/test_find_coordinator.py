"""``find_coordinator`` (shared by the consumer's group membership and ``Admin``) against a
scripted in-process group coordinator (gRPC on 127.0.0.1, plaintext): which answers it retries,
and that it gives up at its deadline with the last answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from raftlog.client import ClientSecurity, ClusterMetadata
from raftlog.client.errors import CoordinatorNotAvailableError
from raftlog.client.group import find_coordinator
from raftlog.proto import common_pb2, group_pb2, group_pb2_grpc

PLAINTEXT = ClientSecurity.plaintext()
Answer = Callable[[int], tuple[int, str]]  # attempt number → (error code, message)


class ScriptedCoordinator(group_pb2_grpc.GroupCoordinatorServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.address = ""
        self.attempts = 0
        self.lock = threading.Lock()

    def FindCoordinator(self, request: Any, context: Any) -> group_pb2.FindCoordinatorResponse:
        with self.lock:
            self.attempts += 1
            code, message = self.answer(self.attempts)
        if code:
            return group_pb2.FindCoordinatorResponse(
                error=common_pb2.Error(code=code, message=message)
            )
        return group_pb2.FindCoordinatorResponse(coordinator_id=7, address=self.address)


@pytest.fixture
def coordinator(grpc_server: Callable[..., str]) -> Callable[[Answer], ScriptedCoordinator]:
    def start(answer: Answer) -> ScriptedCoordinator:
        servicer = ScriptedCoordinator(answer)
        servicer.address = grpc_server(
            lambda server: group_pb2_grpc.add_GroupCoordinatorServicer_to_server(servicer, server)
        )
        return servicer

    return start


def test_an_error_answer_is_asked_again_until_a_coordinator_is_named(coordinator: Any) -> None:
    scripted = coordinator(
        lambda n: (common_pb2.COORDINATOR_NOT_AVAILABLE, "loading") if n <= 2 else (0, "")
    )
    with closing(ClusterMetadata(scripted.address, security=PLAINTEXT)) as metadata:
        found = find_coordinator(metadata, "g", timeout_s=10)
    assert (found.coordinator_id, found.address) == (7, scripted.address)
    assert scripted.attempts == 3


def test_it_gives_up_at_its_deadline_with_the_last_answer(coordinator: Any) -> None:
    scripted = coordinator(lambda n: (common_pb2.COORDINATOR_NOT_AVAILABLE, f"loading {n}"))
    started = time.monotonic()
    with (
        closing(ClusterMetadata(scripted.address, security=PLAINTEXT)) as metadata,
        pytest.raises(CoordinatorNotAvailableError, match=r"group g: loading \d+"),
    ):
        find_coordinator(metadata, "g", timeout_s=0.5)
    took = time.monotonic() - started
    assert 0.5 <= took < 5
    assert 2 <= scripted.attempts <= 8  # one every 0.1 s, not a busy loop


def test_an_unreachable_broker_is_named_when_it_gives_up() -> None:
    with (
        closing(ClusterMetadata("127.0.0.1:1", security=PLAINTEXT)) as metadata,
        pytest.raises(CoordinatorNotAvailableError, match=r"group g: StatusCode\.UNAVAILABLE"),
    ):
        find_coordinator(metadata, "g", timeout_s=0.3)
