"""Fixtures shared by the client's unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

AddServicers = Callable[[grpc.Server], None]


@pytest.fixture
def grpc_server() -> Iterator[Callable[[AddServicers], str]]:
    """``grpc_server(add)`` starts an in-process gRPC server on 127.0.0.1 (plaintext: a test
    double, not the product's broker) with the servicers ``add(server)`` registers, and returns
    its address; every server started is stopped at the end of the test."""
    servers: list[grpc.Server] = []

    def start(add: AddServicers) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)
