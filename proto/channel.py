"""The gRPC options every raftlog channel and server uses: message size, and link liveness.

Liveness, measured (a 3-node cluster in network namespaces, one follower cut off for 15 s by
a partition that drops packets, then healed): with gRPC's defaults the controller unfenced the
broker 12.3-12.7 s after the heal. Its heartbeat connection stayed "ready" through the cut
while TCP retransmitted with exponential backoff (0.2 s doubling: after a 15 s cut the next try
comes ~10 s after the heal), and a fresh connection would have waited out gRPC's own backoff
(1 s growing to 120 s, 20 s per connect attempt). Kafka clients reconnect within
``reconnect.backoff.max.ms`` (1 s) of a heal; so do ours:

- HTTP/2 keepalive pings every ``KEEPALIVE_TIME_MS``, also on idle connections: a connection
  whose ping is not answered within ``KEEPALIVE_TIMEOUT_MS`` is closed, so a cut link is seen
  as down within ~3 s instead of riding TCP's backoff;
- a connect attempt gets ``CONNECT_TIMEOUT_MS`` and the next one starts at most
  ``RECONNECT_BACKOFF_MAX_MS`` after the last began: while a link is cut a SYN goes out every
  0.4 s, so after a heal it is up again within 0.4 s (a 1 s attempt measured 0.84 s from a
  ring's heal to the follower's ISR proposal; gRPC's default gives every attempt 20 s);
- servers accept pings that often (gRPC servers otherwise answer a client pinging more than
  every 5 minutes with GOAWAY ``too_many_pings``).
"""

from __future__ import annotations

from typing import Any

MESSAGE_BYTES_MAX = 100 << 20  # gRPC's own limit, raised on purpose above max.message.bytes
KEEPALIVE_TIME_MS = 1000
KEEPALIVE_TIMEOUT_MS = 2000
RECONNECT_BACKOFF_INITIAL_MS = 100
RECONNECT_BACKOFF_MAX_MS = 400
CONNECT_TIMEOUT_MS = 400  # gRPC takes its min reconnect backoff as the least connect timeout


def _common(message_bytes_max: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", message_bytes_max),
        ("grpc.max_send_message_length", message_bytes_max),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(message_bytes_max: int = MESSAGE_BYTES_MAX) -> list[tuple[str, Any]]:
    """Options for a client channel (a broker's to its peers and controller, and every client's)."""
    return [
        *_common(message_bytes_max),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
        ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
    ]


def server_options(message_bytes_max: int = MESSAGE_BYTES_MAX) -> list[tuple[str, Any]]:
    """Options for a server: the same limits, and clients' keepalive pings allowed."""
    return [
        *_common(message_bytes_max),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_ping_strikes", 0),
    ]
