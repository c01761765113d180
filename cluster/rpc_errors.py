"""How every gRPC servicer answers a failure: a typed error value, never a bare gRPC status.

Every response message has an ``error`` field (DESIGN "Errors are values with codes"). ``error``
builds it from an ``ErrorCode``, ``denied`` from an authorizer's refusal, ``result_error`` from a
controller command's result map. No exception leaves a servicer: each unary method is wrapped by
``typed_errors``, which logs what was unexpected and answers UNKNOWN_SERVER_ERROR in the
response's ``error`` field, so a caller always gets a typed error, never a bare gRPC UNKNOWN.
Used by the Broker (``broker_servicer.py``), Controller (``controller_servicer.py``) and Group
(``group_servicer.py``) services.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from raftlog.proto import common_pb2
from raftlog.proto.codes import ErrorCode

from .auth import AuthenticationFailed, Principal
from .request_metrics import RequestMeter, status_of

__all__ = ["Handler", "denied", "error", "result_error", "typed_errors"]

logger = logging.getLogger(__name__)


def error(code: ErrorCode = ErrorCode.NONE, message: str = "") -> common_pb2.Error:
    return common_pb2.Error(code=common_pb2.ErrorCode.ValueType(code), message=message)


Handler = Callable[[Any, Any, Any], Awaitable[Any]]


def typed_errors(response: type[Any]) -> Callable[[Handler], Handler]:
    """Answer ``response(error=UNKNOWN_SERVER_ERROR)`` for anything a handler did not expect;
    meter the call (``request_metrics.py``) when the broker has a request meter."""

    def wrap(handler: Handler) -> Handler:
        rpc = handler.__name__

        @functools.wraps(handler)
        async def guarded(self: Any, request: Any, context: Any) -> Any:
            meter: RequestMeter | None = self.broker.metrics.requests
            started = time.perf_counter()
            try:
                answer = await handler(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError) as exc:
                if meter is not None:
                    meter.failed(rpc, time.perf_counter() - started, status_of(exc, context))
                raise  # the call was cancelled, or the handler chose a gRPC status itself
            except AuthenticationFailed as exc:
                answer = response(error=error(ErrorCode.SASL_AUTHENTICATION_FAILED, str(exc)))
            except Exception as exc:
                logger.exception("%s failed unexpectedly", rpc)
                answer = response(
                    error=error(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
                )
            if meter is not None:
                meter.observe(rpc, time.perf_counter() - started, answer)
            return answer

        return guarded

    return wrap


def denied(principal: Principal, operation: str, resource: str, name: object) -> common_pb2.Error:
    """``principal`` may not do ``operation`` on ``resource`` ``name``: the matching
    *_AUTHORIZATION_FAILED code."""
    code = {
        "topic": ErrorCode.TOPIC_AUTHORIZATION_FAILED,
        "group": ErrorCode.GROUP_AUTHORIZATION_FAILED,
    }.get(resource, ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    return error(code, f"{principal.name} is not allowed {operation} on {resource} {name}")


def result_error(result: dict[str, Any]) -> common_pb2.Error:
    """The error of a controller result map (NONE when it carries none)."""
    if "error" in result:
        return error(result["error"], str(result.get("message", "")))
    return error()
