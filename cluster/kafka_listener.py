"""The Kafka wire protocol on its own port: framing, headers, authentication, dispatch.

Kafka's protocol (https://kafka.apache.org/protocol) over one TCP (or TLS) connection per client
and broker: each request is an int32 size, a request header (api key, api version, correlation
id, client id; header v2 with tagged fields for a flexible version) and the body; each response
is an int32 size, the correlation id (plus tagged fields for a flexible version, except
ApiVersions, whose response header is always v0 so that any client can read it) and the body.
The bodies are ``raftlog.proto.kafka_codec``'s, the handlers ``kafka_apis.py``'s.

Answers go out in the order the requests came. Produce requests are pipelined (up to
``PRODUCES_IN_FLIGHT_MAX`` at once per connection, appended in arrival order, so an idempotent
producer's in-flight batches keep their sequence order); every other request is served alone, as a
Kafka broker serves all of them (it mutes a connection until its answer is sent) — a commit never
overtakes the join before it. A Produce with ``acks = 0`` gets no answer. Bounds: a request larger
than ``MESSAGE_BYTES_MAX`` closes its connection; at most ``limits.requests_in_flight_max``
connections (each has at most ``PRODUCES_IN_FLIGHT_MAX`` requests in flight); a connection idle for
``IDLE_TIMEOUT_S`` is closed, and a request must arrive whole within ``REQUEST_READ_TIMEOUT_S`` of
its size.

Who is calling (``auth.py``'s rules, the same principals and ACLs as the gRPC listeners):

* ``security.protocol = "plaintext"``: no TLS, every caller is ``User:ANONYMOUS``.
* ``"tls"``: TLS with the broker's certificate; a client certificate is optional. A client that
  presents one signed by the cluster CA is its principal at once (Kafka's ``SSL`` listener); one
  without must authenticate with SASL PLAIN or SCRAM-SHA-256/512 (``SASL_SSL``) as a user of the
  metadata (``kafka_sasl.py``) before any other request — until then only ApiVersions,
  SaslHandshake and SaslAuthenticate are served, anything else closes the connection.

Malformed requests close the connection, as on a Kafka broker (the client reconnects and
retries); an api key or version not in ``SUPPORTED`` does too, except ApiVersions (answered
UNSUPPORTED_VERSION with the supported list, as Kafka does) and the known-but-refused APIs
(answered UNSUPPORTED_VERSION per resource).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from raftlog.proto.channel import MESSAGE_BYTES_MAX
from raftlog.proto.kafka_codec import KafkaCodecError, decode, encode, schema

from .auth import ANONYMOUS, AuthenticationFailed, Principal, principal_from_pem
from .kafka_apis import REFUSED, SUPPORTED, KafkaApis, KafkaCall, ResponseDropped
from .kafka_sasl import MECHANISMS, SaslServer

if TYPE_CHECKING:
    from .broker import Broker
    from .config import Security

__all__ = ["KafkaListener", "kafka_ssl_context"]

logger = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 600.0  # Kafka's connections.max.idle.ms
REQUEST_READ_TIMEOUT_S = 30.0
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, PRODUCE = 18, 17, 36, 0
BEFORE_AUTH = frozenset((API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE))
ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 34, 33, 58
_HEAD = struct.Struct(">hhi")
_API_KEY = struct.Struct(">h")
# produce requests one connection may have in flight: what librdkafka and the Java client allow
# an idempotent producer (max.in.flight.requests.per.connection <= 5)
PRODUCES_IN_FLIGHT_MAX = 5
_SIZE = struct.Struct(">i")


def kafka_ssl_context(security: Security) -> ssl.SSLContext:
    """TLS with the broker's certificate; a client certificate is asked for, not required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(security.cert_file, security.key_file)
    context.load_verify_locations(security.ca_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _flexible(name: str, version: int) -> bool:
    return version in schema(f"{name}Request").flexible


class _ConnectionClosed(Exception):
    """The request cannot be answered: close the connection (Kafka's answer to a bad request)."""


class KafkaListener:
    """The Kafka-protocol server of one broker; runs on the broker loop."""

    def __init__(self, broker: Broker, apis: KafkaApis) -> None:
        self.broker = broker
        self.apis = apis
        self.tls = broker.config.security.is_tls
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._connections_max = broker.config.limits.requests_in_flight_max
        self.pepper = secrets.token_bytes(32)  # keys SCRAM's made-up salts

    async def start(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        context = kafka_ssl_context(self.broker.config.security) if self.tls else None
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), ssl=context, reuse_address=True
        )
        logger.info("broker %s: Kafka listener on %s", self.broker.config.node_id, address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._connections_max:
            logger.warning("Kafka listener: %d connections, refusing one", len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        connection = _Connection(self, reader, writer)
        try:
            await connection.run()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away, or sat idle too long
        except _ConnectionClosed as exc:
            logger.info("Kafka listener: closing %s: %s", connection.peer, exc)
        except asyncio.CancelledError:
            pass  # the listener is closing; a cancelled task here upsets asyncio's streams
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class _Connection:
    def __init__(
        self, listener: KafkaListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.listener = listener
        self.apis = listener.apis
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = peer[0] if isinstance(peer, tuple) else "*"
        self.principal: Principal | None = None if listener.tls else ANONYMOUS
        self.sasl: SaslServer | None = None
        self.close_reason = ""  # set: close once the current answer is sent
        if listener.tls:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der:  # verified against the cluster CA by the handshake (CERT_OPTIONAL)
                pem = ssl.DER_cert_to_PEM_cert(der).encode()
                self.principal = replace(principal_from_pem(pem), host=self.host)

    async def run(self) -> None:
        """Read requests, start them, and let ``_answer_in_order`` send their answers.

        Produce requests are pipelined: up to ``PRODUCES_IN_FLIGHT_MAX`` run at once, and since
        a produce appends before its first await, they append in the order they arrived (what
        an idempotent producer's five in-flight batches need); answers go out in that order.
        Any other request waits until every earlier one is answered, and the next one waits
        for it: everything but produce is served one at a time, as on a Kafka broker."""
        answers: asyncio.Queue[asyncio.Task[bytes | None]] = asyncio.Queue()
        room = asyncio.Semaphore(PRODUCES_IN_FLIGHT_MAX)
        answering = asyncio.create_task(self._answer_in_order(answers, room))
        alone = False  # the request started last must be answered before the next starts
        try:
            while True:
                head = await self._beside(
                    answering, asyncio.wait_for(self.reader.readexactly(4), IDLE_TIMEOUT_S)
                )
                (size,) = _SIZE.unpack(head)
                if not 8 <= size <= MESSAGE_BYTES_MAX:
                    raise _ConnectionClosed(f"request size {size} out of bounds")
                data = await self._beside(
                    answering,
                    asyncio.wait_for(self.reader.readexactly(size), REQUEST_READ_TIMEOUT_S),
                )
                (api_key,) = _API_KEY.unpack_from(data)
                if api_key != PRODUCE or alone:
                    await self._beside(answering, answers.join())
                alone = api_key != PRODUCE
                await self._beside(answering, room.acquire())
                answers.put_nowait(asyncio.create_task(self.handle(memoryview(data))))
        finally:
            answering.cancel()
            started: list[asyncio.Task[Any]] = [answering]
            while not answers.empty():
                started.append(answers.get_nowait())
                started[-1].cancel()
            await asyncio.gather(*started, return_exceptions=True)

    @staticmethod
    async def _beside(answering: asyncio.Task[None], step: Any) -> Any:
        """Await ``step`` unless answering fails first (then raise what it raised)."""
        future = asyncio.ensure_future(step)
        if not future.done():
            await asyncio.wait((future, answering), return_when=asyncio.FIRST_COMPLETED)
        if not future.done():
            future.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await future
            answering.result()  # raises its error
            raise _ConnectionClosed("stopped answering")
        return future.result()

    async def _answer_in_order(
        self, answers: asyncio.Queue[asyncio.Task[bytes | None]], room: asyncio.Semaphore
    ) -> None:
        while True:
            task = await answers.get()
            try:
                answer = await task
            finally:
                room.release()
                answers.task_done()
            if answer is not None:
                self.writer.write(_SIZE.pack(len(answer)) + answer)
                await self.writer.drain()
            if self.close_reason:
                raise _ConnectionClosed(self.close_reason)

    async def handle(self, data: memoryview) -> bytes | None:
        api_key, version, correlation_id = _HEAD.unpack_from(data)
        known = SUPPORTED.get(api_key)
        if known is None and api_key in REFUSED:
            name = REFUSED[api_key]
            if version not in schema(f"{name}Request").valid:
                raise _ConnectionClosed(f"{name} v{version} is not a version of that API")
        elif known is None or not known[1] <= version <= known[2]:
            if api_key == API_VERSIONS:  # answered in v0, which every client reads
                body = encode("ApiVersionsResponse", 0, KafkaApis.api_versions(0, 35))
                return _SIZE.pack(correlation_id) + body
            raise _ConnectionClosed(f"unsupported api key {api_key} version {version}")
        else:
            name = known[0]
        flexible = _flexible(name, version)
        try:
            header, used = decode("RequestHeader", 2 if flexible else 1, data, whole=False)
            # bytes after the body are ignored, as Kafka's own parser does (librdkafka sends
            # three after some Metadata requests)
            request, _ = decode(f"{name}Request", version, data[used:], whole=False)
        except KafkaCodecError as exc:
            raise _ConnectionClosed(
                f"malformed {name} v{version}: {exc} (starts {bytes(data[:64]).hex()})"
            ) from exc
        if self.principal is None and api_key not in BEFORE_AUTH:
            raise _ConnectionClosed(f"{name} before authentication")
        try:
            response = await self._dispatch(api_key, version, request, header["client_id"] or "")
        except ResponseDropped as exc:
            raise _ConnectionClosed(str(exc)) from exc
        except AuthenticationFailed:
            raise
        except Exception as exc:
            logger.exception("Kafka %s v%s failed unexpectedly", name, version)
            raise _ConnectionClosed(f"{name} failed: {type(exc).__name__}") from exc
        if response is None:
            return None
        try:
            body = encode(f"{name}Response", version, response)
        except KafkaCodecError as exc:  # our bug, not the client's: say so in the log
            logger.exception("Kafka %s v%s: the answer does not encode", name, version)
            raise _ConnectionClosed(f"{name} answer failed: {exc}") from exc
        if flexible and api_key != API_VERSIONS:
            return _SIZE.pack(correlation_id) + b"\x00" + body  # header v1: no tagged fields
        return _SIZE.pack(correlation_id) + body

    async def _dispatch(
        self, api_key: int, version: int, request: dict[str, Any], client_id: str
    ) -> dict[str, Any] | None:
        if api_key == API_VERSIONS:
            return KafkaApis.api_versions(version)
        if api_key == SASL_HANDSHAKE:
            return self._handshake(request["mechanism"])
        if api_key == SASL_AUTHENTICATE:
            return self._authenticate(bytes(request["auth_bytes"]))
        assert self.principal is not None
        call = KafkaCall(self.principal, client_id)
        response = await self.apis.handlers[api_key](call, version, request)
        if api_key == PRODUCE and request["acks"] == 0:
            return None  # acks=0: the client expects no answer
        return response

    def _handshake(self, mechanism: str) -> dict[str, Any]:
        if not self.listener.tls:
            return {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": []}
        if self.principal is not None or self.sasl is not None:
            return {"error_code": ILLEGAL_SASL_STATE, "mechanisms": list(MECHANISMS)}
        if mechanism not in MECHANISMS:
            return {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": list(MECHANISMS)}
        broker = self.listener.broker
        self.sasl = SaslServer(
            mechanism,
            broker.passwords,
            broker.scram_credential,
            nonce=secrets.token_bytes(18),
            pepper=self.listener.pepper,
        )
        return {"error_code": 0, "mechanisms": list(MECHANISMS)}

    def _authenticate(self, token: bytes) -> dict[str, Any]:
        if self.sasl is None or self.sasl.done:
            raise _ConnectionClosed("SaslAuthenticate without a SaslHandshake")
        try:
            challenge = self.sasl.step(token)
        except AuthenticationFailed as exc:
            # the answer is sent, then the connection closes (the client sees the message)
            self.sasl = None
            self.close_reason = f"authentication failed: {exc}"
            return {
                "error_code": SASL_AUTHENTICATION_FAILED,
                "error_message": str(exc),
                "auth_bytes": b"",
            }
        if self.sasl.principal is not None:
            self.principal = replace(self.sasl.principal, host=self.host)
        return {"error_code": 0, "auth_bytes": challenge, "session_lifetime_ms": 0}
