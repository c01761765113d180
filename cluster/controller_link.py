"""How a broker reaches the active controller: directly, or through a peer that can (a relay).

In a ring or a bridge a majority is connected, only not every node to every other: a broker cut
off from the controller may still reach brokers that reach it. Without a relay it would be fenced
after one session and leave every ISR, although every partition it leads could keep
acknowledging with the followers it does reach (KRaft fences it the same way). So the
controller-bound calls — register, heartbeat, AlterPartition, damage reports, producer-id blocks —
take a *route*: direct while that works, else through a relay: another voter's broker, which
forwards the call once, marked with ``RELAY_HEADER``, to the controller it knows (a marked call
is never forwarded again). The relay checks that the caller's certificate is the broker the
request names; the controller checks the relay's certificate and the sender's signature on the
call (``relay_proof.py``), so neither a client nor another broker can speak for a broker through
a relay. Every call is signed, direct ones too: a "direct" call may reach a broker that is no
longer the controller, and that broker relays it.

Heartbeats find the route. Each goes direct; when no answer has come within ``grace_s`` (or the
route is already a relay) it also goes through every relay at once, and the first real answer —
not a transport error, not NOT_CONTROLLER — wins and becomes the route. Everything else follows
the route; a transport failure on a relay sends the next call direct again.

Fault model: a relay changes who carries a call, never what the controller decides — fencing,
ISR changes and elections are still committed by the metadata quorum and checked against its
epochs. A broker in a minority finds no relay that reaches the controller and is fenced as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from raftlog.proto import common_pb2, controller_pb2_grpc

__all__ = ["RELAY_HEADER", "ControllerLink", "ControllerUnreachable", "relayed_by"]

RELAY_HEADER = "x-raftlog-relay"  # gRPC metadata on a forwarded call: the relaying broker's id
NOT_A_BROKER_ID = -2  # what a malformed relay header names: no broker's certificate matches it

StubFor = Callable[[int], controller_pb2_grpc.ControllerStub | None]


class ControllerUnreachable(ConnectionError):
    """No route to the active controller answered."""


def relayed_by(metadata: Sequence[tuple[str, Any]] | None) -> int | None:
    """The relaying broker's id from a call's invocation metadata; None for a direct call."""
    for key, value in metadata or ():
        if key == RELAY_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return NOT_A_BROKER_ID
    return None


def _answered(response: Any) -> bool:
    """A real answer from the controller (even a refusal), not a broker that is not it."""
    return bool(response.error.code != common_pb2.NOT_CONTROLLER)


class ControllerLink:
    """The route this broker's controller calls take (on the broker loop; no lock)."""

    def __init__(
        self,
        node_id: int,
        voter_ids: Sequence[int],
        controller_id: Callable[[], int | None],
        stub_for: StubFor,
        sign: Callable[[str, Any], Sequence[tuple[str, str | bytes]]] | None = None,
    ) -> None:
        self.node_id = node_id
        self.voter_ids = tuple(voter_ids)
        self.controller_id = controller_id
        self.stub_for = stub_for
        self.sign = sign  # the proof of origin (relay_proof.OriginSigner.headers); None: plaintext
        self.route: int | None = None  # None: direct; else the relay that answered last

    def relays(self) -> list[int]:
        controller = self.controller_id()
        return [v for v in self.voter_ids if v not in (self.node_id, controller)]

    async def _send(self, via: int | None, method: str, request: Any, timeout_s: float) -> Any:
        target = self.controller_id() if via is None else via
        stub = self.stub_for(target) if target is not None else None
        if stub is None:
            raise ControllerUnreachable("no active controller is known")
        metadata = self.sign(method, request) if self.sign is not None else None
        return await getattr(stub, method)(request, timeout=timeout_s, metadata=metadata)

    async def call(self, method: str, request: Any, timeout_s: float) -> Any:
        """``method`` by the current route. Raises ``grpc.aio.AioRpcError`` or
        ``ControllerUnreachable``; a relay that failed is dropped from the route."""
        via = self.route
        if via is not None and via == self.controller_id():
            via = self.route = None  # the relay became the controller
        try:
            return await self._send(via, method, request, timeout_s)
        except (grpc.aio.AioRpcError, ControllerUnreachable):
            self.route = None
            raise

    async def discover(self, method: str, request: Any, timeout_s: float, grace_s: float) -> Any:
        """Send ``method`` direct and, if that does not answer within ``grace_s`` (at once when
        the route is a relay), through every relay too; return the first real answer and make
        its sender the route. Raises ``ControllerUnreachable`` when none answered in
        ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        sends: dict[asyncio.Task[Any], int | None] = {}

        def send(via: int | None) -> None:
            remaining = max(deadline - loop.time(), 0.05)
            sends[asyncio.ensure_future(self._send(via, method, request, remaining))] = via

        async def first_answer(until: float) -> Any:
            pending: set[asyncio.Task[Any]] = set(sends)
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=max(until - loop.time(), 0), return_when="FIRST_COMPLETED"
                )
                if not done:
                    return None
                for task in sorted(done, key=lambda t: sends[t] is not None):  # direct first
                    if task.cancelled() or task.exception() is not None:
                        continue
                    response = task.result()
                    if _answered(response):
                        self.route = sends[task]
                        return response
            return None

        try:
            send(None)
            if self.route is None:
                answer = await first_answer(min(loop.time() + grace_s, deadline))
                if answer is not None:
                    return answer
            for relay in self.relays():
                send(relay)
            answer = await first_answer(deadline)
            if answer is None:
                raise ControllerUnreachable(
                    f"no answer from the controller, direct or through {self.relays()}"
                )
            return answer
        finally:
            for task in sends:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # also marks a failure as retrieved
