from __future__ import annotations

from collections.abc import Callable

import pytest

from raftlog.segments import build_batch

BatchFactory = Callable[..., bytes]


@pytest.fixture
def make_batch() -> BatchFactory:
    """Batches whose values name their position: make_batch(3, start=10) → v10, v11, v12."""

    def factory(
        count: int = 1, *, start: int = 0, timestamp_ms: int = 1_000, pad: int = 0
    ) -> bytes:
        values = [f"v{start + i}".encode() + b"." * pad for i in range(count)]
        return build_batch(values, timestamp_ms=timestamp_ms)

    return factory
