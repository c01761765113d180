"""Per-RPC request metrics: a grpc.aio server interceptor that times every call and counts its
outcome (Kafka's RequestMetrics: TotalTimeMs, RequestsPerSec, ErrorsPerSec).

``raftlog_request_duration_seconds{rpc}`` is the time from the handler's start to its answer;
``raftlog_requests_total{rpc,code}`` counts answers by their request-level code (the response's
``error``, NONE when it carries none, or the gRPC status name when the call failed at the
gRPC level: an abort, a cancel); ``raftlog_request_errors_total{rpc,code}`` counts every error
code an answer carries, the request-level one and each partition's (a Produce answered
NOT_LEADER_OR_FOLLOWER for three partitions counts three), as Kafka counts errors per response.
A stream (``ReplicaFetch``) counts each answer as a request, timed from the request it answers.

Cost per call: one dict lookup for the wrapped handler (cached per method), two clock reads, and
the prometheus-client increments (a lock each) on label children cached per (rpc, code). The
health and reflection services are not metered: load balancers poll them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from raftlog.proto.codes import ErrorCode

__all__ = ["UNMETERED_PREFIXES", "RequestMeter", "answer_codes"]

# request latency buckets (seconds): sub-millisecond loopback answers up to acks=all produces
# and long-polling fetches that wait out their max_wait_ms
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

UNMETERED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def answer_codes(response: Any) -> tuple[ErrorCode, list[ErrorCode]]:
    """(the request-level code, every error code ``response`` carries)."""
    top = ErrorCode(response.error.code) if response.HasField("error") else ErrorCode.NONE
    errors: list[ErrorCode] = [top] if top != ErrorCode.NONE else []
    for item in getattr(response, "partitions", ()):
        found = getattr(item, "error", None)
        if found is not None and found.code:
            errors.append(ErrorCode(found.code))
    return top, errors


class RequestMeter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, registry: CollectorRegistry) -> None:
        # counters and histograms without their _created series (a process-wide switch of
        # prometheus-client; the broker process exports nothing else): one series per label set
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._duration = Histogram(
            "raftlog_request_duration_seconds",
            "Time from a request's arrival at its handler to its answer.",
            ["rpc"],
            registry=registry,
            buckets=BUCKETS,
        )
        self._requests = Counter(
            "raftlog_requests",
            "Requests answered, by their request-level code.",
            ["rpc", "code"],
            registry=registry,
        )
        self._errors = Counter(
            "raftlog_request_errors",
            "Error codes in answers, request-level and per partition.",
            ["rpc", "code"],
            registry=registry,
        )
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}
        self._children: dict[tuple[str, str, str], Any] = {}

    def _child(self, metric: str, rpc: str, code: str = "") -> Any:
        key = (metric, rpc, code)
        child = self._children.get(key)
        if child is None:
            if metric == "duration":
                child = self._duration.labels(rpc)
            else:
                child = (self._requests if metric == "requests" else self._errors).labels(rpc, code)
            self._children[key] = child
        return child

    def observe(self, rpc: str, seconds: float, response: Any) -> None:
        """One answer of ``rpc`` that took ``seconds``."""
        top, errors = answer_codes(response)
        self._child("duration", rpc).observe(seconds)
        self._child("requests", rpc, top.name).inc()
        for code in errors:
            self._child("errors", rpc, code.name).inc()

    def failed(self, rpc: str, seconds: float, status: str) -> None:
        """A call of ``rpc`` that ended at the gRPC level (abort, cancel) after ``seconds``."""
        self._child("duration", rpc).observe(seconds)
        self._child("requests", rpc, status).inc()
        self._child("errors", rpc, status).inc()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(details)
        if handler is None or method.startswith(UNMETERED_PREFIXES):
            return handler  # unknown methods are not cached: their number is the caller's
        wrapped = self._wrap(method.rsplit("/", 1)[-1], handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, rpc: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(rpc, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(rpc, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no unary-stream or stream-unary RPCs exist

    def _unary(self, rpc: str, behaviour: Any) -> Any:
        async def metered(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except BaseException as exc:
                self.failed(rpc, time.perf_counter() - start, _status_of(exc, context))
                raise
            self.observe(rpc, time.perf_counter() - start, response)
            return response

        return metered

    def _stream(self, rpc: str, behaviour: Any) -> Any:
        async def metered(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            arrived = time.perf_counter()

            async def timed() -> AsyncIterator[Any]:
                nonlocal arrived
                async for request in requests:
                    arrived = time.perf_counter()
                    yield request

            try:
                async for response in behaviour(timed(), context):
                    self.observe(rpc, time.perf_counter() - arrived, response)
                    yield response
            except BaseException as exc:
                self.failed(rpc, time.perf_counter() - arrived, _status_of(exc, context))
                raise

        return metered


def _status_of(exc: BaseException, context: Any) -> str:
    """The gRPC status a failed call ends with, by name."""
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return str(code.name) if isinstance(code, grpc.StatusCode) else "ABORTED"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"
