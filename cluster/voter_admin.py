"""Adding and removing metadata quorum voters: ``raftlog quorum add-voter|remove-voter``.

The Broker service's AddVoter / RemoveVoter need ALTER on the cluster (plaintext: anyone) and
are forwarded to the active controller (``admin_rpcs.py``), whose Controller service answers
them through :class:`VoterChanges` (the Controller-service methods accept only brokers, as for
every forwarded admin call). The controller changes one voter at a time (one change in flight,
``asyncio.Lock``; the Raft leader also refuses a second uncommitted membership entry, and any
before it has applied its own term's no-op: right after an election the controller offers the
change again every ``LEADER_READY_POLL_S`` until then, ``raft/voters.py`` rule 1):

* **add** ``N`` at Raft ``host:port``: ``N`` must be a registered, unfenced broker and neither its
  id nor the address a voter's (DUPLICATE_VOTER). The controller commits ``PrepareVoter``;
  broker ``N`` applies it and starts its Raft member (``quorum_member.py``); once ``N``'s Raft
  port accepts connections, the leader appends the membership entry that adds ``N``, carrying
  ``SetVoters`` (the metadata's voter set, with gRPC addresses), and answers when it commits.
  Starting ``N`` first matters: from the moment the entry is appended the new set's majority
  counts ``N`` (with a dead voter 3 of {1, 2, 3}, {1, 2, 3, 4} needs 1, 2 and 4).
* **remove** ``N``: VOTER_NOT_FOUND unless it is a voter. The leader cannot remove itself
  (pysyncobj cannot): it hands leadership to the most caught-up voter and answers NOT_CONTROLLER
  (retriable; the client retries on the new controller). A removal that would leave fewer voters
  answering the leader than the new set's majority is refused (POLICY_VIOLATION): it could never
  commit.

Answers carry the voter set after the change and its metadata version. A timeout
(REQUEST_TIMED_OUT) leaves the outcome unknown: read ``raftlog quorum describe`` and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc

from raftlog.proto import broker_pb2
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import Operation
from raftlog.raft.commands import (
    CancelVoter,
    PrepareVoter,
    SetVoters,
    decode_result,
    encode_command,
)
from raftlog.raft.quorum_types import (
    LeaderNotReadyError,
    MembershipChangeRefusedError,
    NotLeaderError,
    QuorumError,
    split_address,
)
from raftlog.raft.voters import (
    VoterRecord,
    check_add,
    check_remove,
    voters_after_add,
    voters_after_remove,
)

from .admin_rpcs import AdminRpcs
from .controller_service import ControllerError
from .rpc_errors import error, typed_errors

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["CHANGE_TIMEOUT_S", "VoterAdminRpcs", "VoterChanges"]

logger = logging.getLogger(__name__)

CHANGE_TIMEOUT_S = 30.0  # the default bound of one add or remove
JOINER_POLL_S = 0.05  # how often the controller looks whether the new voter's Raft port is open
LEADER_READY_POLL_S = 0.02  # a leader just elected: how often to offer the change again


class VoterChanges:
    """The controller's side (broker loop). One per broker; acts only as the active controller."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._lock = asyncio.Lock()

    async def answer_add(
        self, request: broker_pb2.AddVoterRequest
    ) -> broker_pb2.VoterChangeResponse:
        try:
            return await self.add(
                request.node_id,
                request.raft_address,
                request.grpc_address,
                request.timeout_s or CHANGE_TIMEOUT_S,
            )
        except ControllerError as exc:
            return broker_pb2.VoterChangeResponse(error=error(exc.code, exc.message))

    async def answer_remove(
        self, request: broker_pb2.RemoveVoterRequest
    ) -> broker_pb2.VoterChangeResponse:
        try:
            return await self.remove(request.node_id, request.timeout_s or CHANGE_TIMEOUT_S)
        except ControllerError as exc:
            return broker_pb2.VoterChangeResponse(error=error(exc.code, exc.message))

    def _response(self, version: int) -> broker_pb2.VoterChangeResponse:
        return broker_pb2.VoterChangeResponse(
            voters=[
                broker_pb2.QuorumVoter(
                    node_id=v.node_id, raft_address=v.raft_address, grpc_address=v.grpc_address
                )
                for v in self.broker.current_voters()
            ],
            metadata_version=version,
        )

    def _raft(self) -> Any:
        controller = self.broker.controller
        controller.active()
        raft = self.broker.quorum.raft
        if raft is None:  # an observer never leads; a lease cannot hold without a Raft member
            raise ControllerError(ErrorCode.NOT_CONTROLLER, "this broker is not a voter")
        return raft

    async def add(
        self, node_id: int, raft_address: str, grpc_address: str, timeout_s: float
    ) -> broker_pb2.VoterChangeResponse:
        try:
            split_address(raft_address)
        except ValueError as exc:
            raise ControllerError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
        async with self._lock:
            self._raft()
            with self.broker.store.read() as state:
                record = state.brokers.get(node_id)
            if record is None or record.fenced:
                raise ControllerError(
                    ErrorCode.BROKER_NOT_AVAILABLE,
                    f"broker {node_id} is not a registered, live broker: start it (it joins as "
                    "an observer) before making it a voter",
                )
            new = VoterRecord(node_id, raft_address, grpc_address or record.address)
            voters = self.broker.current_voters()
            why = check_add(voters, new)
            if why is not None:
                raise ControllerError(ErrorCode.DUPLICATE_VOTER, why)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            in_flight = self.broker.controller.joins_in_flight
            in_flight.add(new.node_id)  # the controller's tick must not cancel this join
            try:
                return await self._prepare_and_add(new, voters, deadline)
            finally:
                in_flight.discard(new.node_id)

    async def _prepare_and_add(
        self, new: VoterRecord, voters: tuple[VoterRecord, ...], deadline: float
    ) -> broker_pb2.VoterChangeResponse:
        prepared = await self.broker.controller.submit(
            PrepareVoter(new.node_id, new.raft_address, new.grpc_address)
        )
        if "error" in prepared:
            raise ControllerError(prepared["error"], str(prepared.get("message", "")))
        after = voters_after_add(voters, new)
        try:
            await self._wait_listening(new, deadline)
            return await self._change(True, new, after, deadline)
        except ControllerError as exc:
            # the membership entry was never appended (the joiner did not listen in time,
            # the change was refused, or we are no longer the leader): the joiner observes
            # again. A timeout after the entry went out may still commit: left alone.
            if exc.code in (ErrorCode.POLICY_VIOLATION, ErrorCode.NOT_CONTROLLER) or (
                "did not open its Raft port" in exc.message
            ):
                await self._cancel(new)
            raise

    async def _cancel(self, new: VoterRecord) -> None:
        try:
            await self.broker.controller.submit(CancelVoter(new.node_id))
        except ControllerError as exc:  # the next controller cancels it (controller_service.py)
            logger.warning("cancelling the join of broker %s: %s", new.node_id, exc)

    async def remove(self, node_id: int, timeout_s: float) -> broker_pb2.VoterChangeResponse:
        async with self._lock:
            raft = self._raft()
            voters = self.broker.current_voters()
            leaving = next((v for v in voters if v.node_id == node_id), None)
            if leaving is None:
                raise ControllerError(
                    ErrorCode.VOTER_NOT_FOUND,
                    f"broker {node_id} is not a voter (voters: {[v.node_id for v in voters]})",
                )
            me = self.broker.config.node_id
            if node_id == me:
                raft.transfer_leadership()
                raise ControllerError(
                    ErrorCode.NOT_CONTROLLER,
                    f"voter {node_id} is the active controller, which cannot remove itself: "
                    "leadership is moving to another voter; retry",
                )
            fresh_s = raft.config.leader_fallback_timeout_s
            answering = {
                v.node_id
                for v in raft.status().voters
                if v.answered_s_ago is not None and v.answered_s_ago <= fresh_s
            }
            why = check_remove(voters, node_id, leader_id=me, answering=answering | {me})
            if why is not None:
                raise ControllerError(ErrorCode.POLICY_VIOLATION, why)
            deadline = asyncio.get_running_loop().time() + timeout_s
            return await self._change(
                False, leaving, voters_after_remove(voters, node_id), deadline
            )

    async def _wait_listening(self, new: VoterRecord, deadline: float) -> None:
        """Until ``new``'s Raft member listens (it starts on applying PrepareVoter)."""
        loop = asyncio.get_running_loop()
        host, port = split_address(new.raft_address)
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
            except (OSError, TimeoutError):
                if loop.time() >= deadline:
                    raise ControllerError(
                        ErrorCode.REQUEST_TIMED_OUT,
                        f"broker {new.node_id} did not open its Raft port {new.raft_address} in "
                        "time (is it running, and can it bind that address?); nothing changed",
                    ) from None
                await asyncio.sleep(JOINER_POLL_S)
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return

    async def _change(
        self, add: bool, voter: VoterRecord, after: tuple[VoterRecord, ...], deadline: float
    ) -> broker_pb2.VoterChangeResponse:
        """Append the membership entry and wait for it to commit. Right after an election the
        leader refuses it until its term's no-op is applied (a round trip or two,
        ``LeaderNotReadyError``): offered again until then, within ``deadline``."""
        loop = asyncio.get_running_loop()
        while True:
            result, failure = await self._append_change(add, voter, after, deadline)
            if not isinstance(failure, LeaderNotReadyError) or loop.time() >= deadline:
                break
            await asyncio.sleep(LEADER_READY_POLL_S)
        verb = "add" if add else "remove"
        if isinstance(failure, LeaderNotReadyError):  # never appended; the client retries
            raise ControllerError(ErrorCode.NOT_CONTROLLER, f"{verb} voter: {failure}")
        if isinstance(failure, MembershipChangeRefusedError):
            raise ControllerError(ErrorCode.POLICY_VIOLATION, str(failure))
        if isinstance(failure, NotLeaderError):
            raise ControllerError(ErrorCode.NOT_CONTROLLER, f"{verb} voter: {failure}")
        if failure is not None or result is None:
            raise ControllerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"{verb} voter {voter.node_id}: {failure} (it may still commit: see "
                "`raftlog quorum describe`)",
            )
        outcome = decode_result(result)
        if "error" in outcome:
            raise ControllerError(outcome["error"], str(outcome.get("message", "")))
        return self._response(self.broker.store.version)

    async def _append_change(
        self, add: bool, voter: VoterRecord, after: tuple[VoterRecord, ...], deadline: float
    ) -> tuple[bytes | None, QuorumError | None]:
        loop = asyncio.get_running_loop()
        raft = self._raft()
        future: asyncio.Future[tuple[bytes | None, QuorumError | None]] = loop.create_future()

        def done(result: bytes | None, failure: QuorumError | None) -> None:
            def resolve() -> None:
                if not future.done():
                    future.set_result((result, failure))

            loop.call_soon_threadsafe(resolve)

        command = encode_command(SetVoters(tuple(v.as_row() for v in after)))
        raft.change_voters(
            add=add,
            node_id=voter.node_id,
            address=voter.raft_address,
            command=command,
            timeout_s=max(deadline - loop.time(), 1.0),
            callback=done,
        )
        return await future


class VoterAdminRpcs(AdminRpcs):
    """AddVoter and RemoveVoter of ``BrokerServicer``: ALTER on the cluster, then forwarded."""

    @typed_errors(broker_pb2.VoterChangeResponse)
    async def AddVoter(
        self, request: broker_pb2.AddVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.VoterChangeResponse:
        refusal = self._cluster_refusal(context, Operation.ALTER)
        if refusal is not None:
            return broker_pb2.VoterChangeResponse(error=refusal)
        timeout_s = (request.timeout_s or CHANGE_TIMEOUT_S) + 5
        return await self._forward(
            lambda: self.broker.voter_changes.answer_add(request),
            lambda stub: stub.AddVoter(request, timeout=timeout_s),
            lambda e: broker_pb2.VoterChangeResponse(error=e),
        )

    @typed_errors(broker_pb2.VoterChangeResponse)
    async def RemoveVoter(
        self, request: broker_pb2.RemoveVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> broker_pb2.VoterChangeResponse:
        refusal = self._cluster_refusal(context, Operation.ALTER)
        if refusal is not None:
            return broker_pb2.VoterChangeResponse(error=refusal)
        timeout_s = (request.timeout_s or CHANGE_TIMEOUT_S) + 5
        return await self._forward(
            lambda: self.broker.voter_changes.answer_remove(request),
            lambda stub: stub.RemoveVoter(request, timeout=timeout_s),
            lambda e: broker_pb2.VoterChangeResponse(error=e),
        )
