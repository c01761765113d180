"""The controller's side of add-voter / remove-voter (cluster/voter_admin.py) over a fake Raft
member: right after an election the leader refuses membership changes until its term's no-op
is applied; the controller offers the change again meanwhile instead of answering the client
with a refusal that blamed a change "not committed yet" (none was in progress)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from raftlog.cluster.voter_admin import VoterChanges
from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import encode_result
from raftlog.raft.quorum_types import (
    LeaderNotReadyError,
    MembershipChangeRefusedError,
    QuorumError,
    VoterStatus,
)
from raftlog.raft.voters import VoterRecord

V1 = VoterRecord(1, "127.0.0.1:9192", "127.0.0.1:9092")
V2 = VoterRecord(2, "127.0.0.2:9192", "127.0.0.2:9092")
V3 = VoterRecord(3, "127.0.0.3:9192", "127.0.0.3:9092")

Callback = Callable[[bytes | None, QuorumError | None], None]


class Raft:
    """Leader 1 of {1, 2, 3}, everyone answering; ``failures`` are the answers to the first
    membership changes asked (then it commits)."""

    def __init__(self, failures: list[QuorumError]) -> None:
        self.failures = failures
        self.asked = 0
        self.config = SimpleNamespace(leader_fallback_timeout_s=1.0)

    def status(self) -> Any:
        return SimpleNamespace(
            voters=tuple(VoterStatus(v.node_id, v.raft_address, 9, 0, 0.01) for v in (V1, V2, V3))
        )

    def change_voters(self, *, callback: Callback, **_: Any) -> None:
        self.asked += 1
        if self.failures:
            callback(None, self.failures.pop(0))
        else:
            callback(encode_result({"ok": True}), None)


def changes(raft: Raft) -> VoterChanges:
    broker: Any = SimpleNamespace(
        controller=SimpleNamespace(active=lambda: None),
        quorum=SimpleNamespace(raft=raft),
        config=SimpleNamespace(node_id=1),
        store=SimpleNamespace(version=17),
        current_voters=lambda: (V1, V2, V3),
    )
    return VoterChanges(broker)


def test_a_change_right_after_an_election_waits_for_the_leader_instead_of_failing() -> None:
    not_ready = LeaderNotReadyError("the Raft leader elected in term 5 has not applied ...")
    raft = Raft([not_ready, not_ready])
    answer = asyncio.run(changes(raft).remove(3, timeout_s=5.0))
    assert not answer.HasField("error")
    assert raft.asked == 3
    assert answer.metadata_version == 17


def test_a_leader_that_never_gets_ready_is_not_the_controller_and_the_client_retries() -> None:
    raft = Raft([LeaderNotReadyError("not applied its first entry yet")] * 1000)
    answer = asyncio.run(changes(raft).answer_remove(SimpleNamespace(node_id=3, timeout_s=0.1)))
    assert answer.error.code == ErrorCode.NOT_CONTROLLER  # retriable: never appended
    assert "first entry" in answer.error.message


def test_a_change_really_pending_is_refused_with_what_is_pending() -> None:
    pending = MembershipChangeRefusedError("the membership change at log index 43 is not ...")
    raft = Raft([pending])
    answer = asyncio.run(changes(raft).answer_remove(SimpleNamespace(node_id=3, timeout_s=5.0)))
    assert answer.error.code == ErrorCode.POLICY_VIOLATION
    assert "index 43" in answer.error.message
    assert raft.asked == 1
