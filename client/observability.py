"""Reading a broker's observability endpoints from Python: its ``/metrics`` parsed with
prometheus-client's own parser, and its gRPC health answer. Used by ``raftlog demo``; handy in
scripts and tests (``sum_of(scrape(url), "raftlog_under_replicated_partitions")``)."""

from __future__ import annotations

import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from .security import ClientSecurity

__all__ = ["Samples", "health_status", "scrape", "sum_of"]

# (sample name, sorted label pairs) → value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout_s: float = 10.0) -> Samples:
    """Every sample of one ``/metrics`` page."""
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sum_of(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= set(have))


def health_status(
    address: str, security: ClientSecurity, service: str = "", timeout_s: float = 5.0
) -> str:
    """The broker's ``grpc.health.v1`` answer by name: SERVING, NOT_SERVING, or the gRPC
    status name when it did not answer (UNAVAILABLE, NOT_FOUND for an unknown service)."""
    with security.channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
