"""The metadata quorum's voters for ``Admin``: add one, remove one, list them.

A voter is added as a broker that already runs (it has joined as an observer): the active
controller tells it to start its Raft member at ``raft_address``, then adds it to the Raft
membership; removing one takes it out (a dead machine's voter, typically). One change at a time.
Only NOT_CONTROLLER is retried here (an election settling, or the controller handing off
leadership to remove itself): after a timeout the change may still commit, so read
:meth:`QuorumAdmin.quorum_voters` before trying again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftlog.proto import broker_pb2
from raftlog.proto.errors import NotControllerError, raise_for

__all__ = ["QuorumAdmin", "QuorumVoter"]

_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class QuorumVoter:
    node_id: int
    raft_address: str
    grpc_address: str


def _voters(rows: Any) -> list[QuorumVoter]:
    return [QuorumVoter(v.node_id, v.raft_address, v.grpc_address) for v in rows]


class QuorumAdmin:
    """A mixin of ``Admin`` (needs ``_call``, ``describe_quorum``)."""

    _call: Callable[..., Any]
    describe_quorum: Callable[[], broker_pb2.DescribeQuorumResponse]

    def _change(self, method: str, request: Any, timeout_s: float) -> list[QuorumVoter]:
        deadline = time.monotonic() + timeout_s
        while True:
            response = self._call(method, request, timeout_s + 10)
            try:
                raise_for(response.error)
            except NotControllerError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_RETRY_S)
                continue
            return _voters(response.voters)

    def add_voter(
        self, node_id: int, raft_address: str, grpc_address: str = "", *, timeout_s: float = 30.0
    ) -> list[QuorumVoter]:
        """Make broker ``node_id`` a voter whose Raft member listens on ``raft_address``; the
        voters after the change."""
        request = broker_pb2.AddVoterRequest(
            node_id=node_id,
            raft_address=raft_address,
            grpc_address=grpc_address,
            timeout_s=timeout_s,
        )
        return self._change("AddVoter", request, timeout_s)

    def remove_voter(self, node_id: int, *, timeout_s: float = 30.0) -> list[QuorumVoter]:
        """Take broker ``node_id`` out of the voters; the voters after the change."""
        request = broker_pb2.RemoveVoterRequest(node_id=node_id, timeout_s=timeout_s)
        return self._change("RemoveVoter", request, timeout_s)

    def quorum_voters(self) -> list[QuorumVoter]:
        """The voters as the answering broker's metadata has them."""
        return _voters(self.describe_quorum().members)
