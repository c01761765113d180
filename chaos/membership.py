"""The membership nemesis's hands: reassignments and drains through the admin API.

``AdminMembership`` is the ``nemesis.MembershipControl`` of a real run: each call opens a short-
lived ``Admin`` on the cluster (a 10 s budget: the nemesis thread must not hang on a partitioned
cluster), moves one partition of the workload's topic or drains a broker, and returns a line
for the timeline — a refusal or an unreachable controller is a line too, never an exception (a
move that could not start is a fault that did nothing, which the timeline shows). Moves are
throttled (``THROTTLE_BYTES_PER_S`` per new replica) so that copying a partition takes seconds
and overlaps the faults that follow: a move is then under way while leaders die, nodes pause and
the network splits, which is what the nemesis is for.
"""

from __future__ import annotations

from raftlog.client import Admin, ClientSecurity

__all__ = ["THROTTLE_BYTES_PER_S", "AdminMembership"]

THROTTLE_BYTES_PER_S = 100_000


class AdminMembership:
    def __init__(
        self, bootstrap: str, security: ClientSecurity, topic: str, timeout_s: float = 10.0
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.timeout_s = timeout_s

    def _admin(self, timeout_s: float | None = None) -> Admin:
        return Admin(self.bootstrap, timeout_s=timeout_s or self.timeout_s, security=self.security)

    def reassign(self, partition: int, replicas: tuple[int, ...]) -> str:
        try:
            with self._admin() as admin:
                results = admin.reassign_partitions(
                    {(self.topic, partition): replicas}, throttle_bytes_per_s=THROTTLE_BYTES_PER_S
                )
        except Exception as exc:  # a partitioned cluster, no controller: the fault did nothing
            return f"not started ({type(exc).__name__}: {exc})"
        refused = [str(r.error) for r in results if r.error is not None]
        return f"refused ({'; '.join(refused)})" if refused else "started"

    def drain(self, node: int) -> str:
        try:
            with self._admin() as admin:
                results = admin.drain_broker(node, throttle_bytes_per_s=THROTTLE_BYTES_PER_S)
        except Exception as exc:
            return f"not started ({type(exc).__name__}: {exc})"
        refused = [r for r in results if r.error is not None]
        return f"{len(results) - len(refused)} partition(s) moving, {len(refused)} refused"

    def settle(self, timeout_s: float) -> str:
        try:
            with self._admin(timeout_s) as admin:
                admin.wait_for_reassignments(timeout_s=timeout_s)
        except Exception as exc:
            return f"moves still in progress ({type(exc).__name__}: {exc})"
        return "no move in progress"
