"""The broker's route to the controller: direct while it answers, else the first relay that does
(issue 21: a broker in a ring or a bridge was fenced although a peer could reach the controller)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from raftlog.cluster.controller_link import (
    RELAY_HEADER,
    ControllerLink,
    ControllerUnreachable,
    relayed_by,
)
from raftlog.proto import common_pb2, controller_pb2

CONTROLLER = 1


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "cut"
        )


class FakeStub:
    """One peer's Controller service: answers after ``delay_s``, is cut (hangs), or refuses."""

    def __init__(self, node: int, calls: list[int], behaviour: str = "answer") -> None:
        self.node, self.calls, self.behaviour = node, calls, behaviour

    async def BrokerHeartbeat(self, request: Any, timeout: float, metadata: Any = None) -> Any:
        self.calls.append(self.node)
        if self.behaviour == "cut":
            await asyncio.sleep(timeout)
            raise Unavailable()
        if self.behaviour == "refused":
            raise Unavailable()
        code = common_pb2.NOT_CONTROLLER if self.behaviour == "not-controller" else common_pb2.NONE
        await asyncio.sleep(0.01)
        return controller_pb2.BrokerHeartbeatResponse(error=common_pb2.Error(code=code))


def link(behaviours: dict[int, str], calls: list[int]) -> ControllerLink:
    stubs = {n: FakeStub(n, calls, b) for n, b in behaviours.items()}
    return ControllerLink(3, (1, 2, 3, 4, 5), lambda: CONTROLLER, stubs.get)


def heartbeat(route: ControllerLink) -> Any:
    request = controller_pb2.BrokerHeartbeatRequest(broker_id=3)
    return asyncio.run(route.discover("BrokerHeartbeat", request, 1.0, 0.1))


def test_the_direct_path_is_used_alone_while_it_answers() -> None:
    calls: list[int] = []
    route = link({1: "answer", 2: "answer", 4: "answer", 5: "answer"}, calls)
    assert heartbeat(route).error.code == common_pb2.NONE
    assert calls == [CONTROLLER] and route.route is None


def test_a_cut_controller_is_reached_through_the_first_relay_that_can() -> None:
    """A ring: 3 reaches 2 and 4; 2 cannot reach the controller (it answers NOT_CONTROLLER), 4
    can; 5 is cut from 3 like the controller."""
    calls: list[int] = []
    route = link({1: "cut", 2: "not-controller", 4: "answer", 5: "cut"}, calls)
    assert heartbeat(route).error.code == common_pb2.NONE
    assert route.route == 4 and calls[0] == CONTROLLER and sorted(calls[1:]) == [2, 4, 5]
    calls.clear()
    # on a relay route every path is tried at once: the direct one is back as soon as it heals
    route.stub_for = {1: FakeStub(1, calls), 2: FakeStub(2, calls), 4: FakeStub(4, calls)}.get
    heartbeat(route)
    assert route.route is None and sorted(calls) == [1, 2, 4]
    calls.clear()
    heartbeat(route)
    assert calls == [CONTROLLER]


def test_no_route_raises_and_a_failed_relay_sends_the_next_call_direct() -> None:
    calls: list[int] = []
    route = link({1: "refused", 2: "refused", 4: "not-controller", 5: "refused"}, calls)
    with pytest.raises(ControllerUnreachable):
        heartbeat(route)
    route.route = 4
    request = controller_pb2.BrokerHeartbeatRequest(broker_id=3)
    route.stub_for = {4: FakeStub(4, calls, "refused")}.get
    with pytest.raises(grpc.aio.AioRpcError):
        asyncio.run(route.call("BrokerHeartbeat", request, 1.0))
    assert route.route is None


def test_a_relay_that_became_the_controller_is_called_direct() -> None:
    calls: list[int] = []
    route = link({1: "answer"}, calls)
    route.route = CONTROLLER
    request = controller_pb2.BrokerHeartbeatRequest(broker_id=3)
    asyncio.run(route.call("BrokerHeartbeat", request, 1.0))
    assert route.route is None and calls == [CONTROLLER]


def test_the_relay_header_names_the_relay_and_a_malformed_one_names_no_broker() -> None:
    assert relayed_by(None) is None
    assert relayed_by((("other", "x"),)) is None
    assert relayed_by(((RELAY_HEADER, "4"),)) == 4
    assert relayed_by(((RELAY_HEADER, "four"),)) == -2
