"""TaskSet: fire-and-forget tasks are held until they end, their failures logged."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from raftlog.cluster.tasks import TaskSet


def test_a_spawned_task_survives_garbage_collection_and_its_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> list[str]:
        tasks = TaskSet("test")
        done: list[str] = []

        async def work() -> None:
            await asyncio.sleep(0.01)
            done.append("ok")

        async def fail() -> None:
            raise RuntimeError("boom")

        tasks.spawn(work())
        tasks.spawn(fail())
        gc.collect()  # nothing else holds the tasks
        await asyncio.sleep(0.05)
        assert len(tasks) == 0
        blocked = tasks.spawn(asyncio.sleep(60))
        await tasks.cancel_all()
        assert blocked.cancelled()
        return done

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == ["ok"]
    assert "a background task failed" in caplog.text
