"""The standard gRPC health service (``grpc.health.v1.Health``) for load balancers and Kubernetes.

A broker answers SERVING only when it can do its job: its metadata has caught up with the
quorum, the metadata holds *this* incarnation's registration, the controller has unfenced it,
and it is not cut off from the controller (a cut-off broker refuses produces: its view may be
stale). Anything else — starting, catching up, registered but still fenced, fenced after a
missed session, cut off, shutting down — is NOT_SERVING. The rule is ``serving`` (pure); the
broker asks it whenever its metadata moves and on a short period, and ``BrokerHealth`` publishes
a change to the overall service ("") and to each raftlog service by name, so ``grpc_health_probe
-service=raftlog.v1.Broker`` works as well as a bare probe. Shutting down is final
(``enter_graceful_shutdown``): no later answer says SERVING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

__all__ = ["BrokerHealth", "serving"]

logger = logging.getLogger(__name__)


def serving(
    *, caught_up: bool, registered: bool, fenced: bool, cut_off: bool, stopping: bool
) -> bool:
    """Whether a broker in this state should tell a load balancer SERVING."""
    return caught_up and registered and not fenced and not cut_off and not stopping


class BrokerHealth:
    """The health servicer, with the overall and per-service statuses moved together."""

    def __init__(self, services: Iterable[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._services = ("", *services)
        self._serving: bool | None = None

    @property
    def is_serving(self) -> bool:
        return bool(self._serving)

    def changed(self, now_serving: bool) -> bool:
        """Record ``now_serving``; True when it differs from what was published last."""
        if now_serving == self._serving:
            return False
        self._serving = now_serving
        return True

    async def publish(self, now_serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if now_serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self._services:
            await self.servicer.set(service, status)

    async def shut_down(self) -> None:
        self._serving = False
        await self.servicer.enter_graceful_shutdown()
