"""The purgatory core: the hierarchical timing wheel and delayed operations watched under keys.

Everything is driven by explicit ``now_ms``; no test sleeps or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from raftlog.cluster.purgatory import (
    DelayedOperation,
    Purgatory,
    PurgatoryFullError,
    TimingWheel,
)
from raftlog.proto.codes import ErrorCode

TICK_MS = 5
WHEEL_SIZE = 4  # small, so modest delays already need three or four wheels


def rounded_up(deadline_ms: int, tick_ms: int = TICK_MS) -> int:
    return -(-deadline_ms // tick_ms) * tick_ms


# --- timing wheel -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 1_500), min_size=1, max_size=40))
def test_wheel_fires_each_task_within_one_tick_of_its_deadline(deadlines: list[int]) -> None:
    """Advancing 1 ms at a time, every task comes out in [deadline, deadline + tick)."""
    wheel: TimingWheel[int] = TimingWheel(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE)
    for task, deadline_ms in enumerate(deadlines):
        assert wheel.add(task, deadline_ms)
    fired_at: dict[int, int] = {}
    for now_ms in range(1, max(deadlines) + TICK_MS + 1):
        for task in wheel.advance(now_ms):
            assert task not in fired_at, "a task fired twice"
            fired_at[task] = now_ms
    assert set(fired_at) == set(range(len(deadlines)))
    for task, deadline_ms in enumerate(deadlines):
        assert deadline_ms <= fired_at[task] < deadline_ms + TICK_MS
    assert wheel.size == 0
    assert wheel.levels >= 3 or max(deadlines) < TICK_MS * WHEEL_SIZE**2


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 10_000),
    st.lists(st.integers(1, 200_000), min_size=1, max_size=40),
    st.lists(st.integers(0, 60_000), min_size=1, max_size=30),
)
def test_wheel_fires_at_the_first_advance_past_the_rounded_deadline(
    start_ms: int, delays: list[int], steps: list[int]
) -> None:
    """With arbitrary jumps, across many wheel levels: a task comes out exactly at the first
    advance whose now_ms reaches its deadline rounded up to the tick — never before its deadline,
    never at a later advance."""
    wheel: TimingWheel[int] = TimingWheel(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE, start_ms=start_ms)
    deadlines = {task: start_ms + delay for task, delay in enumerate(delays)}
    for task, deadline_ms in deadlines.items():
        assert wheel.add(task, deadline_ms)
    previous_ms = start_ms
    now_ms = start_ms
    pending = dict(deadlines)
    for step in [*steps, max(delays) + TICK_MS]:
        now_ms += step
        fired = wheel.advance(now_ms)
        expected = {t for t, d in pending.items() if previous_ms < rounded_up(d) <= now_ms}
        assert set(fired) == expected
        assert len(fired) == len(expected)
        assert [rounded_up(deadlines[t]) for t in fired] == sorted(
            rounded_up(deadlines[t]) for t in fired
        )
        for task in fired:
            del pending[task]
        previous_ms = now_ms
        assert wheel.size == len(pending)
    assert not pending


def test_wheel_cancel_removes_the_task() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE)
    assert wheel.add("near", 7)
    assert wheel.add("far", 5_000)  # in an overflow wheel
    assert wheel.add("kept", 5_000)
    assert wheel.size == 3
    assert wheel.cancel("near") and wheel.cancel("far")
    assert not wheel.cancel("far")
    assert not wheel.cancel("never-added")
    assert wheel.size == 1 and "far" not in wheel and "kept" in wheel
    assert wheel.advance(10_000) == ["kept"]
    assert wheel.size == 0


def test_wheel_add_again_reschedules() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE)
    assert wheel.add("t", 1_000)
    assert wheel.add("t", 20)
    assert wheel.size == 1
    assert wheel.advance(20) == ["t"]
    assert wheel.advance(2_000) == []


def test_wheel_add_of_an_expired_deadline_returns_false() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE, start_ms=100)
    assert not wheel.add("at-now", 100)
    assert not wheel.add("past", 3)
    wheel.advance(152)
    assert not wheel.add("just-past", 152)
    assert wheel.size == 0
    assert wheel.add("next-ms", 153)  # due within the current tick, still in the future
    assert wheel.advance(154) == []
    assert wheel.advance(155) == ["next-ms"]


def test_wheel_long_idle_gap_visits_only_due_buckets() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=1, wheel_size=20)
    wheel.advance(10**12)  # nothing scheduled: a trillion ticks for free
    assert wheel.bucket_flushes == 0
    assert wheel.add("soon", 10**12 + 3)
    assert wheel.add("later", 10**12 + 10**9)
    assert wheel.advance(10**12 + 2 * 10**9) == ["soon", "later"]
    # Each task drops at most once per wheel; one tick at a time would be 2e9 visits.
    assert wheel.bucket_flushes <= 2 * wheel.levels
    assert wheel.levels >= 7


def test_wheel_rejects_time_going_backwards() -> None:
    wheel: TimingWheel[str] = TimingWheel()
    wheel.advance(50)
    with pytest.raises(ValueError):
        wheel.advance(49)


# --- delayed operations -----------------------------------------------------------------------


class Op(DelayedOperation):
    """Completes once ``ready``; records every callback in a shared log."""

    def __init__(self, name: str, deadline_ms: int, log: list[tuple[str, str]]) -> None:
        super().__init__(deadline_ms)
        self.name = name
        self.ready = False
        self.log = log
        self.completions = 0
        self.expirations = 0

    def try_complete(self, now_ms: int) -> bool:
        return self.force_complete() if self.ready else False

    def on_complete(self) -> None:
        self.completions += 1
        self.log.append(("complete", self.name))

    def on_expiration(self) -> None:
        self.expirations += 1
        self.log.append(("expire", self.name))


@pytest.fixture
def log() -> list[tuple[str, str]]:
    return []


def make_purgatory(**kwargs: int) -> Purgatory[str]:
    return Purgatory(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE, **kwargs)


def test_op_watched_under_two_keys_completes_once(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 100, log)
    assert not purgatory.try_complete_else_watch(op, ["a", "b"], now_ms=0)
    assert purgatory.size == 1 and purgatory.watched("a") == purgatory.watched("b") == 1
    assert purgatory.check_and_complete("a", now_ms=10) == 0  # not ready: stays
    op.ready = True
    assert purgatory.check_and_complete("b", now_ms=20) == 1
    assert purgatory.check_and_complete("a", now_ms=20) == 0
    assert purgatory.check_and_complete("b", now_ms=20) == 0
    assert purgatory.advance_clock(1_000) == 0  # it left the timer too
    assert op.completed and op.completions == 1 and op.expirations == 0
    assert log == [("complete", "p")]
    assert purgatory.size == 0 and purgatory.watched("a") == 0 and purgatory.watched("b") == 0


def test_op_that_can_complete_now_is_never_watched(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 100, log)
    op.ready = True
    assert purgatory.try_complete_else_watch(op, ["a"], now_ms=0)
    assert purgatory.size == 0 and purgatory.watched("a") == 0
    assert log == [("complete", "p")]


def test_expiration_runs_once_and_completion_cannot_follow(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 52, log)
    purgatory.try_complete_else_watch(op, ["a", "b"], now_ms=0)
    assert purgatory.advance_clock(51) == 0
    assert purgatory.advance_clock(54) == 0  # never before the tick boundary after the deadline
    assert not op.completed
    assert purgatory.advance_clock(55) == 1
    assert log == [("complete", "p"), ("expire", "p")]  # on_complete, then on_expiration
    assert purgatory.advance_clock(10_000) == 0
    op.ready = True
    assert purgatory.check_and_complete("a", now_ms=10_001) == 0
    assert not op.force_complete() and not op.try_complete(10_001)
    assert op.completions == 1 and op.expirations == 1
    assert purgatory.size == 0


def test_completion_first_means_no_expiration(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 50, log)
    purgatory.try_complete_else_watch(op, ["a"], now_ms=0)
    op.ready = True
    assert purgatory.check_and_complete("a", now_ms=70) == 1  # past the deadline, clock not yet
    assert purgatory.advance_clock(100) == 0
    assert op.expirations == 0 and log == [("complete", "p")]


def test_deadline_already_passed_expires_at_once(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 10, log)
    assert not purgatory.try_complete_else_watch(op, ["a"], now_ms=10)
    assert log == [("complete", "p"), ("expire", "p")]
    assert purgatory.size == 0 and purgatory.watched("a") == 0


def test_force_complete_from_outside_leaves_the_timer(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 100, log)
    purgatory.try_complete_else_watch(op, ["a"], now_ms=0)
    assert op.force_complete()  # e.g. the partition lost its leadership
    assert purgatory.size == 0
    assert purgatory.advance_clock(1_000) == 0
    assert log == [("complete", "p")]


def test_expirations_come_in_deadline_order(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    deadlines = {"e": 2_000, "b": 13, "d": 400, "a": 11, "c": 13, "f": 2_000}
    for name, deadline_ms in deadlines.items():
        purgatory.try_complete_else_watch(Op(name, deadline_ms, log), [name], now_ms=0)
    assert purgatory.advance_clock(5_000) == 6
    expired = [name for kind, name in log if kind == "expire"]
    assert expired == ["a", "b", "c", "d", "e", "f"]  # by deadline, ties in order of watching


def test_check_and_complete_goes_in_watch_order(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    ops = [Op(name, 100, log) for name in "xyz"]
    for op in ops:
        purgatory.try_complete_else_watch(op, ["k"], now_ms=0)
        op.ready = True
    assert purgatory.check_and_complete("k", now_ms=1) == 3
    assert log == [("complete", "x"), ("complete", "y"), ("complete", "z")]


def test_bound_raises_when_full(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory(max_operations=2)
    first, second, third = Op("1", 100, log), Op("2", 100, log), Op("3", 100, log)
    purgatory.try_complete_else_watch(first, ["a"], now_ms=0)
    purgatory.try_complete_else_watch(second, ["a"], now_ms=0)
    with pytest.raises(PurgatoryFullError) as raised:
        purgatory.try_complete_else_watch(third, ["a"], now_ms=0)
    assert raised.value.code == ErrorCode.REQUEST_TIMED_OUT and raised.value.retriable
    assert purgatory.size == 2 and purgatory.watched("a") == 2 and not third.completed
    ready = Op("ready", 100, log)
    ready.ready = True
    assert purgatory.try_complete_else_watch(ready, ["a"], now_ms=0)  # needs no room
    first.ready = True
    purgatory.check_and_complete("a", now_ms=1)
    assert not purgatory.try_complete_else_watch(third, ["a"], now_ms=1)  # room again
    assert purgatory.size == 2


def test_purge_removes_completed_ops_from_other_watch_lists(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory(purge_interval=3)
    ops = [Op(str(i), 100, log) for i in range(4)]
    for op in ops:
        purgatory.try_complete_else_watch(op, ["a", "b"], now_ms=0)
        op.ready = True
    completed_via_a = purgatory.check_and_complete("a", now_ms=1)
    assert completed_via_a == 4
    # Four stale entries in "b" exceed purge_interval=3: the sweep has emptied it.
    assert purgatory.watched("b") == 0 and purgatory.watched("a") == 0


def test_below_the_purge_threshold_stale_entries_wait(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory(purge_interval=3)
    ops = [Op(str(i), 100, log) for i in range(3)]
    for op in ops:
        purgatory.try_complete_else_watch(op, ["a", "b"], now_ms=0)
        op.ready = True
    assert purgatory.check_and_complete("a", now_ms=1) == 3
    assert purgatory.watched("b") == 3  # lazily kept: 3 stale entries do not exceed 3
    assert purgatory.check_and_complete("b", now_ms=1) == 0
    assert purgatory.watched("b") == 0  # checking the key drops them


def test_any_call_purges_after_outside_force(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory(purge_interval=1)
    ops = [Op(str(i), 100, log) for i in range(2)]
    for op in ops:
        purgatory.try_complete_else_watch(op, ["a"], now_ms=0)
        op.force_complete()  # not a purgatory call: nothing is swept yet
    assert purgatory.watched("a") == 2
    assert purgatory.check_and_complete("unwatched", now_ms=1) == 0
    assert purgatory.watched("a") == 0


def test_expired_ops_are_purged_too(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory(purge_interval=1)
    for i in range(2):
        purgatory.try_complete_else_watch(Op(str(i), 10, log), ["a"], now_ms=0)
    assert purgatory.watched("a") == 2
    assert purgatory.advance_clock(10) == 2
    assert purgatory.watched("a") == 0


def test_callback_may_reenter_the_purgatory(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    follower = Op("follower", 200, log)

    class Chain(Op):
        def on_complete(self) -> None:
            super().on_complete()
            purgatory.try_complete_else_watch(follower, ["k"], now_ms=1)
            purgatory.check_and_complete("k", now_ms=1)  # the list is out: tries nothing

    head, waiter = Chain("head", 100, log), Op("waiter", 100, log)
    purgatory.try_complete_else_watch(head, ["k"], now_ms=0)
    purgatory.try_complete_else_watch(waiter, ["k"], now_ms=0)
    head.ready = True
    assert purgatory.check_and_complete("k", now_ms=1) == 1
    assert purgatory.size == 2 and purgatory.watched("k") == 2  # waiter and follower both kept
    follower.ready = waiter.ready = True
    assert purgatory.check_and_complete("k", now_ms=2) == 2
    assert log == [("complete", "head"), ("complete", "waiter"), ("complete", "follower")]
    assert purgatory.size == 0 and purgatory.advance_clock(1_000) == 0


def test_misuse_is_rejected(log: list[tuple[str, str]]) -> None:
    purgatory = make_purgatory()
    op = Op("p", 100, log)
    with pytest.raises(ValueError):
        purgatory.try_complete_else_watch(op, [], now_ms=0)
    purgatory.try_complete_else_watch(op, ["a"], now_ms=0)
    with pytest.raises(ValueError):
        purgatory.try_complete_else_watch(op, ["b"], now_ms=0)

    class Liar(Op):
        def try_complete(self, now_ms: int) -> bool:
            return True  # claims completion without force_complete()

    with pytest.raises(AssertionError):
        purgatory.try_complete_else_watch(Liar("liar", 100, log), ["a"], now_ms=0)


# --- state machine against a model ------------------------------------------------------------

MAX_OPERATIONS = 6
PURGE_INTERVAL = 4
KEYS = ("p0", "p1", "p2")


@dataclass
class Model:
    """What the purgatory should do, written the plain way."""

    now_ms: int = 0
    state: dict[str, str] = field(default_factory=dict)  # pending | completed | expired | rejected
    keys: dict[str, frozenset[str]] = field(default_factory=dict)


class PurgatoryMachine(RuleBasedStateMachine):
    ops = Bundle("ops")

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []
        self.purgatory: Purgatory[str] = Purgatory(
            max_operations=MAX_OPERATIONS,
            purge_interval=PURGE_INTERVAL,
            tick_ms=TICK_MS,
            wheel_size=WHEEL_SIZE,
        )
        self.model = Model()
        self.by_name: dict[str, Op] = {}
        self.unpurged_entries = 0  # stale entries made by force(), which does not purge

    def pending(self) -> list[str]:
        return [name for name, state in self.model.state.items() if state == "pending"]

    @rule(
        target=ops,
        keys=st.sets(st.sampled_from(KEYS), min_size=1),
        delay_ms=st.integers(-5, 700),
        ready=st.booleans(),
    )
    def watch(self, keys: set[str], delay_ms: int, ready: bool) -> str:
        name = f"op{len(self.by_name)}"
        op = Op(name, self.model.now_ms + delay_ms, self.log)
        op.ready = ready
        self.by_name[name] = op
        self.model.keys[name] = frozenset(keys)
        if ready:
            expected = "completed"
        elif delay_ms <= 0:
            expected = "expired"
        elif len(self.pending()) >= MAX_OPERATIONS:
            expected = "rejected"
        else:
            expected = "pending"
        try:
            done = self.purgatory.try_complete_else_watch(op, sorted(keys), self.model.now_ms)
        except PurgatoryFullError:
            assert expected == "rejected"
        else:
            assert done == (expected == "completed")
            assert expected != "rejected"
        self.unpurged_entries = 0  # every purgatory call ends with the purge check
        self.model.state[name] = expected
        return name

    @rule(name=ops)
    def make_ready(self, name: str) -> None:
        self.by_name[name].ready = True  # the condition holds; nothing is told yet

    @rule(key=st.sampled_from(KEYS))
    def check(self, key: str) -> None:
        expected = [
            n
            for n in self.pending()
            if key in self.model.keys[n] and self.by_name[n].ready and not self.by_name[n].completed
        ]
        before = len(self.log)
        assert self.purgatory.check_and_complete(key, self.model.now_ms) == len(expected)
        assert self.log[before:] == [("complete", n) for n in expected]  # in watch order
        for n in expected:
            self.model.state[n] = "completed"
        self.unpurged_entries = 0

    @rule(step_ms=st.integers(0, 400))
    def advance(self, step_ms: int) -> None:
        self.model.now_ms += step_ms
        due = [
            n
            for n in self.pending()
            if rounded_up(self.by_name[n].deadline_ms) <= self.model.now_ms
        ]
        due.sort(key=lambda n: (self.by_name[n].deadline_ms, int(n[2:])))
        before = len(self.log)
        assert self.purgatory.advance_clock(self.model.now_ms) == len(due)
        assert self.log[before:] == [e for n in due for e in (("complete", n), ("expire", n))]
        for n in due:
            self.model.state[n] = "expired"
        self.unpurged_entries = 0

    @rule(name=consumes(ops))
    def force(self, name: str) -> None:
        was_open = self.model.state[name] in ("pending", "rejected")
        assert self.by_name[name].force_complete() == was_open
        if self.model.state[name] == "pending":
            self.unpurged_entries += len(self.model.keys[name])
        if was_open:
            self.model.state[name] = "completed"

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.purgatory.size == len(self.pending())
        for name, state in self.model.state.items():
            op = self.by_name[name]
            expected_calls = {
                "pending": (0, 0),
                "rejected": (0, 0),
                "completed": (1, 0),
                "expired": (1, 1),
            }[state]
            assert (op.completions, op.expirations) == expected_calls, (name, state)
            assert op.completed == (state in ("completed", "expired"))
        stale = 0
        for key in KEYS:
            live = sum(1 for n in self.pending() if key in self.model.keys[n])
            assert self.purgatory.watched(key) >= live
            stale += self.purgatory.watched(key) - live
        assert stale <= PURGE_INTERVAL + self.unpurged_entries  # the purge bounds stale entries

    @invariant()
    def next_expiration_is_never_late(self) -> None:
        """What the broker's expiry timer sleeps until: nothing while nothing waits, and never
        after the earliest pending deadline (rounded up to the tick), never in the past."""
        next_ms = self.purgatory.next_expiration_ms()
        pending = self.pending()
        if not pending:
            assert next_ms is None
        else:
            earliest = min(rounded_up(self.by_name[n].deadline_ms) for n in pending)
            assert next_ms is not None and self.model.now_ms < next_ms <= earliest


def test_advancing_only_when_next_expiration_says_expires_every_operation_on_time() -> None:
    """The broker's expiry timer wakes only at ``next_expiration_ms``: every deadline is still
    met within one tick, through the cascade of the coarser wheels, and an idle purgatory
    asks for no wake-up at all (cancelled operations leave no empty bucket to wake for)."""
    purgatory: Purgatory[str] = Purgatory(tick_ms=TICK_MS, wheel_size=WHEEL_SIZE)
    log: list[tuple[str, str]] = []
    deadlines = {f"op{i}": d for i, d in enumerate([7, 33, 160, 161, 900, 2_345])}
    ops = {name: Op(name, d, log) for name, d in deadlines.items()}
    for op in ops.values():
        purgatory.try_complete_else_watch(op, ["k"], 0)
    cancelled = Op("cancelled", 50, log)
    purgatory.try_complete_else_watch(cancelled, ["k"], 0)
    cancelled.ready = True
    purgatory.check_and_complete("k", 0)  # completes (and leaves the timer)
    wakeups = 0
    while (next_ms := purgatory.next_expiration_ms()) is not None:
        wakeups += 1
        purgatory.advance_clock(next_ms)
        for name, op in ops.items():
            if op.expirations:
                assert op.completions == 1
            else:
                assert next_ms < rounded_up(deadlines[name])  # not expired yet: not due yet
    assert all(op.expirations == 1 for op in ops.values())
    assert wakeups <= 3 * len(ops)  # a few cascade steps per operation, not one per tick
    assert ("expire", "cancelled") not in log


TestPurgatoryMachine = PurgatoryMachine.TestCase
TestPurgatoryMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
