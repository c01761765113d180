"""Which brokers this one can reach: the reachability it reports in every heartbeat.

Every ``PING_INTERVAL_MS`` the broker pings each other registered broker (``WhoAmI``, the cheapest
authenticated call; one ping in flight per peer, ``PING_TIMEOUT_MS`` each). A peer that answered
within ``REACH_WINDOW_MS`` is reachable. The controller combines both ends' reports — a link
counts only when each side reached the other — and moves a partition's leadership off a leader
that reaches too few of its ISR to a member that reaches enough (``raft/controller.py``): what a
majorities ring or a bridge otherwise leaves without acknowledgements until it heals.

Pure: time comes in as ``now_ms``; the broker loop owns it (no lock).
"""

from __future__ import annotations

__all__ = ["PING_INTERVAL_MS", "PING_TIMEOUT_MS", "REACH_WINDOW_MS", "PeerReach"]

PING_INTERVAL_MS = 200
PING_TIMEOUT_MS = 500
REACH_WINDOW_MS = 600  # three pings: one lost or slow ping does not make a peer unreachable


class PeerReach:
    def __init__(self, window_ms: int = REACH_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self._answered_ms: dict[int, int] = {}

    def answered(self, peer: int, now_ms: int) -> None:
        self._answered_ms[peer] = max(now_ms, self._answered_ms.get(peer, now_ms))

    def reachable(self, now_ms: int) -> list[int]:
        return sorted(p for p, t in self._answered_ms.items() if now_ms - t <= self.window_ms)
