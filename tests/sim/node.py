"""Processes, a seeded network and RPCs over it: the simulation's IO layer.

- ``World`` holds what everything shares: the virtual-time loop, the one ``random.Random`` that
  drives every choice, the clocks, the network and the processes by node name.
- ``Process`` is one incarnation of a node's process. Every entry into its code — a timer, a
  message arriving, an RPC answer — goes through its *gate*: nothing runs once it is killed,
  and while it is paused (SIGSTOP) entries wait in order and run when it resumes. A killed
  process's tasks are cancelled; its files are dealt with by its owner.
- ``Network`` delivers one-way messages after a seeded delay (so messages reorder), drops some,
  and drops everything over a cut link — at sending and again at arrival, as packets in flight
  are lost when a partition begins.
- ``Rpc`` is request/answer over the network with a deadline enforced by the caller's gate: a
  lost request or answer is a timeout; a node with no process answers "refused" (a closed
  port); a server killed while handling resets the call (the caller hears it if the link is up).

Bounds: a paused process holds at most ``HELD_MAX`` entries; a link holds whatever is in flight
(every message is delivered or dropped within ``delay_ms_max``). Owned by the simulation's one
thread; not thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from raftlog.segments.clock import MonoMs, WallMs

from .looptime import VirtualTimeLoop

__all__ = [
    "HELD_MAX",
    "Network",
    "Process",
    "Rpc",
    "RpcError",
    "RpcRefused",
    "RpcReset",
    "RpcTimeout",
    "SimClock",
    "World",
]

HELD_MAX = 200_000  # entries a paused process may hold (a pause is seconds long)
_WALL_START_MS = 1_700_000_000_000
_MONO_START_MS = 1_000_000


class RpcError(Exception):
    """The call did not produce an answer."""


class RpcTimeout(RpcError):
    pass


class RpcRefused(RpcError):
    pass


class RpcReset(RpcError):
    pass


class SimClock:
    """A ``raftlog.segments.clock.Clock`` reading the loop's virtual time; ``skew_ms`` moves
    this node's wall clock only (an NTP error), never its monotonic clock."""

    def __init__(self, world: World, skew_ms: int = 0) -> None:
        self._world = world
        self.skew_ms = skew_ms

    def wall_ms(self) -> WallMs:
        return WallMs(_WALL_START_MS + self._world.now_ms() + self.skew_ms)

    def mono_ms(self) -> MonoMs:
        return MonoMs(_MONO_START_MS + self._world.now_ms())


class World:
    """What every part of one simulation shares. ``rng`` is the only source of randomness."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.loop = VirtualTimeLoop()
        self.processes: dict[str, Process] = {}  # node name → its live incarnation
        self.network = Network(self)
        self.rpc = Rpc(self)
        self.clock = SimClock(self)
        self._incarnations = itertools.count(1)
        self.errors: list[str] = []  # exceptions raised in simulated code: each fails the run
        self.tracing = False
        # who wants to hear of protocol moments (the nemesis strikes at some): (event, details)
        self.listeners: list[Callable[[str, dict[str, int]], None]] = []
        self.traced: list[str] = []  # what happened, when tracing (replays of a failing seed)
        self.loop.set_exception_handler(self._on_error)

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        detail = "".join(traceback.format_exception(error)) if error is not None else ""
        self.errors.append(f"{context.get('message')}: {detail}")

    def emit(self, event: str, **details: int) -> None:
        for listener in self.listeners:
            listener(event, details)

    def trace(self, text: str) -> None:
        if self.tracing:
            self.traced.append(f"{self.now_ms():>7} {text}")

    def now_ms(self) -> int:
        return round(self.loop.time() * 1000)

    def at(self, when_ms: int, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_at(when_ms / 1000, fn, *args)

    def later(self, delay_ms: int, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self.at(self.now_ms() + max(0, delay_ms), fn, *args)

    def next_incarnation(self) -> int:
        return next(self._incarnations)

    def process(self, node: str) -> Process | None:
        found = self.processes.get(node)
        return found if found is not None and found.alive else None

    def close(self) -> None:
        for process in list(self.processes.values()):
            process.kill()
        loop = self.loop
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


class Process:
    """One incarnation of a node; see the module docstring."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node
        self.incarnation = world.next_incarnation()
        self.alive = True
        self.paused = False
        self.handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {}
        self._held: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._tasks: dict[asyncio.Task[Any], None] = {}  # insertion-ordered: cancelled in order
        self._inbound: dict[int, Callable[[], None]] = {}  # calls being served → their reset
        world.processes[node] = self

    # ---- the gate --------------------------------------------------------------------------------

    def run(self, fn: Callable[..., None], *args: Any) -> None:
        """Enter the process now (or when it resumes; never once it is dead)."""
        if not self.alive:
            return
        if self.paused:
            if len(self._held) >= HELD_MAX:
                raise AssertionError(f"{self.node}: more than {HELD_MAX} entries held in a pause")
            self._held.append((fn, args))
            return
        fn(*args)

    def call_later(self, delay_ms: int, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self.world.later(delay_ms, self.run, fn, *args)

    def every(self, interval_ms: int, fn: Callable[[], object], *, first_ms: int = -1) -> None:
        """Run ``fn`` every ``interval_ms`` while alive (once after a pause, not once per missed
        interval). Coroutines it returns run as tasks of this process."""

        def tick() -> None:
            result = fn()
            if asyncio.iscoroutine(result):
                self.spawn(result)
            self.call_later(interval_ms, tick)

        self.call_later(interval_ms if first_ms < 0 else first_ms, tick)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if not self.alive:
            coro.close()
            raise RuntimeError(f"{self.node} is dead")
        task = self.world.loop.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            # an exception in simulated code is a bug of the simulation or of the product:
            # never swallow it (the run fails with it)
            self.world.loop.call_exception_handler(
                {"message": f"task of {self.node} failed", "exception": task.exception()}
            )

    def future(self) -> asyncio.Future[Any]:
        return self.world.loop.create_future()

    def resolve(self, future: asyncio.Future[Any], value: Any) -> None:
        """Resolve ``future`` through the gate (a paused process does not wake up)."""
        self.run(_set_result, future, value)

    def fail(self, future: asyncio.Future[Any], error: BaseException) -> None:
        self.run(_set_exception, future, error)

    def timer(self, delay_ms: int) -> asyncio.Future[Any]:
        """A future this process's gate resolves after ``delay_ms`` (to None)."""
        future = self.future()
        self.world.later(delay_ms, self.resolve, future, None)
        return future

    async def sleep(self, delay_ms: int) -> None:
        await self.timer(delay_ms)

    # ---- faults ----------------------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        while self._held and self.alive and not self.paused:
            fn, args = self._held.popleft()
            fn(*args)

    def kill(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.paused = False
        self._held.clear()
        if self.world.processes.get(self.node) is self:
            del self.world.processes[self.node]
        for reset in list(self._inbound.values()):
            reset()
        self._inbound.clear()
        for task in list(self._tasks):
            task.cancel()


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Network:
    """See the module docstring. Links are directed: ``cut(a, b)`` stops a → b only."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._cuts: dict[tuple[str, str], int] = {}  # link → how many faults cut it
        self.drop_p = 0.0
        self.delay_ms_min = 0
        self.delay_ms_max = 5
        self.sent = 0
        self.dropped = 0

    def reachable(self, src: str, dst: str) -> bool:
        return src == dst or (src, dst) not in self._cuts

    def cut(self, links: list[tuple[str, str]]) -> None:
        for link in links:
            self._cuts[link] = self._cuts.get(link, 0) + 1

    def heal(self, links: list[tuple[str, str]]) -> None:
        for link in links:
            left = self._cuts.get(link, 0) - 1
            if left > 0:
                self._cuts[link] = left
            else:
                self._cuts.pop(link, None)

    def heal_all(self) -> None:
        self._cuts.clear()

    @property
    def cut_links(self) -> int:
        return len(self._cuts)

    def send(self, src: str, dst: str, deliver: Callable[[], None]) -> None:
        """Run ``deliver`` (which enters the destination's gate itself) when the message
        arrives, unless it is lost."""
        self.sent += 1
        rng = self.world.rng
        if not self.reachable(src, dst) or (self.drop_p and rng.random() < self.drop_p):
            self.dropped += 1
            return
        delay = 0 if src == dst else rng.randint(self.delay_ms_min, self.delay_ms_max)
        self.world.later(delay, self._arrive, src, dst, deliver)

    def _arrive(self, src: str, dst: str, deliver: Callable[[], None]) -> None:
        if not self.reachable(src, dst):
            self.dropped += 1
            return
        deliver()


class Rpc:
    """Request/answer over the network; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._ids = itertools.count()
        self.calls = 0

    async def call(
        self, caller: Process, dst: str, method: str, request: Any, timeout_ms: int
    ) -> Any:
        """The answer of ``dst``'s handler for ``method``; raises an ``RpcError``."""
        self.calls += 1
        world = self.world
        answer = caller.future()
        call_id = next(self._ids)
        src = caller.node

        def arrive() -> None:
            server = world.process(dst)
            if server is None:
                world.network.send(dst, src, lambda: caller.fail(answer, RpcRefused(dst)))
                return
            server.run(serve, server)

        def serve(server: Process) -> None:
            handler = server.handlers.get(method)
            if handler is None:
                raise AssertionError(f"{dst} has no handler for {method!r}")

            def reset() -> None:
                world.network.send(dst, src, lambda: caller.fail(answer, RpcReset(dst)))

            server._inbound[call_id] = reset
            server.spawn(respond(server, handler))

        async def respond(server: Process, handler: Callable[[Any], Awaitable[Any]]) -> None:
            result = await handler(request)
            server._inbound.pop(call_id, None)
            world.network.send(dst, src, lambda: caller.resolve(answer, result))

        world.network.send(src, dst, arrive)
        deadline = caller.call_later(timeout_ms, caller.fail, answer, RpcTimeout(f"{method} {dst}"))
        try:
            return await answer
        finally:
            deadline.cancel()
