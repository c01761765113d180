"""TaskSet: fire-and-forget tasks are held until they end, their failures logged."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from raftlog.cluster.tasks import DeadlineTimer, TaskSet


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


def test_a_deadline_timer_runs_work_when_due_rearms_for_earlier_and_sleeps_when_idle() -> None:
    """The broker's purgatory expiry: one loop timer for the next deadline, none while idle."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def now_ms() -> int:
            return int(loop.time() * 1000)

        deadlines: list[int] = []  # what the "purgatory" holds
        ran_at: list[int] = []

        def work() -> None:
            now = now_ms()
            ran_at.append(now)
            deadlines[:] = [d for d in deadlines if d > now]

        timer = DeadlineTimer(work, lambda: min(deadlines, default=None), now_ms)
        timer.rearm()  # nothing due: no timer
        await asyncio.sleep(0.05)
        assert timer.firings == 0
        start = now_ms()
        deadlines.append(start + 80)
        timer.rearm()
        deadlines.append(start + 20)  # an earlier deadline re-arms the timer for it
        timer.rearm()
        deadlines.append(start + 60)  # a later one does not
        timer.rearm()
        await asyncio.sleep(0.15)
        assert not deadlines
        assert len(ran_at) == 3  # one firing per deadline: no polling in between
        for fired, due in zip(ran_at, [start + 20, start + 60, start + 80], strict=True):
            assert due <= fired < due + 40  # never early; late by the loop's scheduling only
        timer.close()

    asyncio.run(main())
