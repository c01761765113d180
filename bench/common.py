"""The scaffolding the benchmark drivers share: their errors, targets and report table, the JSON
files under ``bench-results/``, free loopback ports, the shell around a driver's ``main``, and
child processes — the parent's handle on one, the child's side of their line protocol, and what
the metadata-quorum drivers' children have in common (a counter machine, the leadership probe
after a kill, pipelined submits).

Every driver runs from the repository root as ``python -m bench.<driver>`` (the Makefile's
``bench*`` targets); its children are the same module with ``--child`` and inherit that working
directory. Every wait here is bounded; a child is stopped by its PID, never by name.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import cbor2
from rich.console import Console
from rich.table import Table

from raftlog.client.processes import log_tail, port_free
from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import NotLeaderError, QuorumError

__all__ = [
    "PROBE_DEADLINE_S",
    "REPLY_TIMEOUT_S",
    "BenchError",
    "Bound",
    "Child",
    "Counter",
    "Emitter",
    "FigureReport",
    "Pipelined",
    "Target",
    "agreed_leader",
    "bench_shell",
    "figure_table",
    "first_commit",
    "free_base_port",
    "free_port",
    "leader_answer",
    "measure_and_report",
    "merge_json",
    "pipeline",
    "probe_leadership",
    "require",
    "serve",
    "verdicts",
    "write_json",
]

REPLY_TIMEOUT_S = 30.0  # a quick op of a child (ready, status)
PROBE_DEADLINE_S = 10.0  # a survivor gives up probing for leadership after this
_PROBE_PAUSE_S = 0.002
_PROBE_SUBMIT_TIMEOUT_S = 0.5
# below Linux's ephemeral range (32768-60999), where an outgoing connection may take a port
# between the check and the bind; free_base_port keeps every port of a cluster inside, its
# highest the last broker's Kafka listener (base + 400 + nodes - 1)
_PORT_RANGE = (20_000, 32_700)
_KAFKA_PORT_OFFSET = 400
_LOG_TAIL_LINES = 20


# ---- errors --------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """The benchmark could not produce a trustworthy figure; the message says why."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# ---- targets and the report table (pure) ---------------------------------------------------------


class Bound(enum.Enum):
    AT_LEAST = "≥"
    AT_MOST = "≤"
    BELOW = "<"


@dataclass(frozen=True, slots=True)
class Target:
    """A bound from an issue on one figure."""

    key: str
    bound: float
    kind: Bound

    def met(self, value: float) -> bool:
        match self.kind:
            case Bound.AT_LEAST:
                return value >= self.bound
            case Bound.AT_MOST:
                return value <= self.bound
            case Bound.BELOW:
                return value < self.bound

    def describe(self) -> str:
        return f"{self.kind.value} {self.bound:,g}"


def verdicts(targets: Iterable[Target], figures: Mapping[str, float]) -> dict[str, bool]:
    """Target key → met, for the targets whose figure was measured."""
    return {t.key: t.met(figures[t.key]) for t in targets if t.key in figures}


def figure_table(
    title: str,
    caption: str,
    figures: Mapping[str, Any],
    keys: Iterable[str],
    describe: Callable[[str, Any], str],
    *,
    targets: Sequence[Target] = (),
    reference: tuple[str, Mapping[str, float]] | None = None,
) -> Table:
    """One row for each of ``keys`` that was measured: the figure and its value as ``describe``
    writes it; with ``targets``, the target and ok/MISS; with ``reference`` (a column title and
    figures), that figure where it has one. Pure: no IO."""
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    if targets:
        table.add_column("target", justify="right")
        table.add_column("result")
    if reference is not None:
        table.add_column(reference[0], justify="right")
    by_key = {t.key: t for t in targets}
    for key in keys:
        if key not in figures:
            continue
        row = [key, describe(key, figures[key])]
        if targets:
            target = by_key.get(key)
            if target is None:
                row += ["", ""]
            else:
                met = target.met(figures[key])
                row += [target.describe(), "[green]ok[/green]" if met else "[red]MISS[/red]"]
        if reference is not None:
            value = reference[1].get(key)
            row.append("" if value is None else describe(key, value))
        table.add_row(*row)
    return table


# ---- bench-results/*.json ------------------------------------------------------------------------


def write_json(path: str | Path, body: Mapping[str, Any], *, sort_keys: bool = False) -> None:
    """Write atomically: a ``.tmp`` sibling, then rename (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def merge_json(path: str | Path, figures: Mapping[str, Any]) -> None:
    """Merge ``figures`` into the JSON object at ``path``: keys not written here (another
    driver's, sharing the file) are kept. Keys sorted, written atomically."""
    target = Path(path)
    merged: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    merged.update(figures)
    write_json(target, merged, sort_keys=True)


# ---- the driver's shell --------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


@contextlib.contextmanager
def bench_shell(console: Console, interrupted: str) -> Iterator[None]:
    """Around a driver's measuring: SIGTERM is handled as Ctrl-C, which (once the driver's own
    ``finally`` blocks have cleaned up) prints ``interrupted`` and exits 130; a ``BenchError``
    prints its message and exits 1."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        console.print(f"[yellow]{interrupted}[/yellow]")
        raise SystemExit(130) from None
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        raise SystemExit(1) from None


@dataclass(frozen=True, slots=True)
class FigureReport:
    """Every figure of one run, keyed as in its JSON file, plus how it was measured (``meta``).
    A driver's report names the bounds its figures are held to in ``targets``; ``failures``
    says what the run could not measure trustworthily (its figure is left out, and the run
    exits 1) while the rest of the run still counts."""

    figures: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    failures: tuple[str, ...] = ()
    targets: ClassVar[tuple[Target, ...]] = ()

    def verdicts(self) -> dict[str, bool]:
        """Target key → met, for the targets whose figure this run measured."""
        return verdicts(self.targets, self.figures)

    def to_json(self) -> dict[str, Any]:
        failures = {"failures": list(self.failures)} if self.failures else {}
        return {**self.figures, **failures, "meta": self.meta}


R = TypeVar("R", bound=FigureReport)


def measure_and_report(
    measure: Callable[[argparse.Namespace, Console], R],
    render: Callable[[R], Table],
    args: argparse.Namespace,
    *,
    interrupted: str,
) -> int:
    """A driver's ``main`` once its arguments are parsed: measure (inside ``bench_shell``), print
    the report, write its JSON to ``args.out``, name the missed targets and the failures; the
    exit status (1 on a failure, or when a target was missed and ``args.strict``)."""
    console = Console()
    with bench_shell(console, interrupted):
        report = measure(args, console)
    console.print(render(report))
    write_json(args.out, report.to_json())
    missed = [key for key, ok in report.verdicts().items() if not ok]
    console.print(
        f"wrote {args.out}; "
        + (f"[red]missed targets: {', '.join(missed)}[/red]" if missed else "all targets met")
    )
    for failure in report.failures:
        console.print(f"[red]benchmark failed:[/red] {failure}", highlight=False)
    return 1 if report.failures or (missed and args.strict) else 0


# ---- free loopback ports -------------------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 that the kernel says is free now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_base_port(nodes: int = 3, rng: random.Random | None = None) -> int:
    """A base port of ``raftlog cluster up`` whose gRPC (base..), Raft (base+100..), metrics
    (base+300..) and Kafka (base+400..) ports are all free now, every one inside
    ``_PORT_RANGE``."""
    rng = rng or random.Random()
    low, high = _PORT_RANGE
    for _ in range(200):
        base = rng.randrange(low, high - _KAFKA_PORT_OFFSET - nodes + 1)
        offsets = (0, 100, 300, _KAFKA_PORT_OFFSET)
        ports = [base + offset + i for offset in offsets for i in range(nodes)]
        if all(port_free(p) for p in ports):
            return base
    raise BenchError(f"no free block of ports in {low}-{high}")


# ---- child processes: the parent's side ----------------------------------------------------------


class Child:
    """The parent's handle on one child process, ``python -m <module> --child <spec JSON>``.

    JSON lines both ways: a request is ``{"op": name, ...}``; a reply is a map whose keys name
    what it answers (``{"ready": ...}`` at start, ``{op: value}``, or ``{"error": message}``,
    which fails the run). Replies wait in ``stash`` by key until asked for: every key has at
    most one outstanding reply. The child's stderr goes to ``log_path``. Owned by one thread of
    the parent; a reader thread per process only feeds ``lines``.
    """

    def __init__(self, module: str, node_id: int, spec: dict[str, Any], log_path: Path) -> None:
        self.module = module
        self.node_id = node_id
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stash: dict[str, Any] = {}
        self.spawned_at = 0.0  # time.monotonic() just before the process was started

    def spawn(self, **extra: Any) -> None:
        """Start the process (again), its spec extended by ``extra``; replies of a previous
        process are dropped."""
        spec = {**self.spec, **extra}
        self.lines = queue.Queue()
        self.stash = {}
        self.spawned_at = time.monotonic()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--child", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None  # PIPE was asked for
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def send(self, op: str, **params: Any) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise BenchError(f"child {self.node_id} is not running")
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()

    def _take(self, line: str | None) -> None:
        if line is None:
            raise BenchError(f"child {self.node_id} exited:\n{self.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"child {self.node_id}: {reply['error']}\n{self.log_tail()}")
        self.stash.update(reply)

    def poll(self, key: str) -> tuple[bool, Any]:
        """(True, value) if a reply for ``key`` arrived; never blocks."""
        while key not in self.stash:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return False, None
            self._take(line)
        return True, self.stash.pop(key)

    def expect(self, key: str, timeout_s: float = REPLY_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while key not in self.stash:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"child {self.node_id}: no {key!r} within {timeout_s} s") from None
            self._take(line)
        return self.stash.pop(key)

    def call(self, op: str, timeout_s: float = REPLY_TIMEOUT_S, **params: Any) -> Any:
        self.send(op, **params)
        return self.expect(op, timeout_s)

    def kill(self) -> None:
        """SIGKILL, by PID, if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Ask it to close (5 s), then kill it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired, BenchError):
                self.send("close")
                self.proc.wait(5)
        self.kill()

    def log_tail(self) -> str:
        return log_tail(self.log_path, _LOG_TAIL_LINES)


def agreed_leader(children: Sequence[Child], timeout_s: float) -> Child:
    """The child that leads with every child agreeing (their ``leader`` answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = [child.call("leader") for child in children]
        leaders = [c for c, a in zip(children, answers, strict=True) if a["is_leader"]]
        if len(leaders) == 1 and all(a["leader_id"] == leaders[0].node_id for a in answers):
            return leaders[0]
        time.sleep(0.05)
    raise BenchError(f"no agreed leader within {timeout_s:.0f} s")


def first_commit(survivors: Sequence[Child]) -> tuple[Child | None, dict[int, Any]]:
    """After the leader was killed (each survivor probing: ``probe_leadership``): wait for the
    first survivor whose probe committed, tell the others to stop, and wait for their answers.
    (that survivor, or None when none committed; node id → its probe answer)."""
    winner: Child | None = None
    probes: dict[int, Any] = {}
    deadline = time.monotonic() + PROBE_DEADLINE_S + 5.0
    while winner is None and len(probes) < len(survivors) and time.monotonic() < deadline:
        for child in survivors:
            if child.node_id in probes:
                continue
            found, value = child.poll("probe")
            if found:
                probes[child.node_id] = value
                if value is not None:
                    winner = child
                    break
        else:
            time.sleep(0.001)
    for child in survivors:
        if child is not winner:
            child.send("stop_probe")  # also ends whatever else it started with the probe
            if child.node_id not in probes:
                probes[child.node_id] = child.expect("probe")
    return winner, probes


# ---- child processes: the child's side -----------------------------------------------------------


class Emitter:
    """A child's replies to its parent: one JSON line each on stdout, whole from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, reply: dict[str, Any]) -> None:
        with self._lock:
            print(json.dumps(reply), flush=True)


def serve(handlers: Mapping[str, Callable[[dict[str, Any]], Any]], emit: Emitter) -> None:
    """The child's loop: one request a line on stdin until ``close`` or the end of stdin. What a
    handler returns is the reply ``{op: value}``; None means the op replies by itself (from a
    thread) or not at all. An exception goes to the parent as ``{"error": ...}``."""
    for line in sys.stdin:
        request: dict[str, Any] = json.loads(line)
        op = request.get("op")
        if op == "close":
            return
        try:
            handler = handlers.get(str(op))
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            value = handler(request)
        except Exception as exc:  # reported to the parent, which fails the run
            emit({"error": f"{op}: {exc!r}"})
            continue
        if value is not None:
            emit({str(op): value})


# ---- what the quorum drivers' children share -----------------------------------------------------


class Counter:
    """The lightest state machine a quorum can replicate: it counts its commands. Owned by the
    Raft thread."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: bytes) -> bytes:
        self.value += 1
        return bytes(cbor2.dumps(self.value))

    def snapshot(self) -> bytes:
        return bytes(cbor2.dumps(self.value))

    def restore(self, data: bytes) -> None:
        self.value = int(cbor2.loads(data))


def leader_answer(quorum: RaftQuorum) -> dict[str, Any]:
    """A child's answer to ``leader`` (see ``agreed_leader``)."""
    return {"is_leader": quorum.is_leader(), "leader_id": quorum.leader_id()}


def probe_leadership(
    quorum: RaftQuorum, command: bytes, stop: threading.Event
) -> dict[str, float] | None:
    """Submit ``command`` until it commits here (this node became leader), or until stopped or
    ``PROBE_DEADLINE_S``: ``submitted`` (the start of the accepted submit: this node's view said
    "leader", else NotLeaderError at once) and ``committed``, on ``time.monotonic`` (system-wide
    on Linux, so the parent compares them with its own); None if it never committed."""
    deadline = time.monotonic() + PROBE_DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        submitted_at = time.monotonic()
        try:
            quorum.submit(command, _PROBE_SUBMIT_TIMEOUT_S)
        except NotLeaderError:
            stop.wait(_PROBE_PAUSE_S)
            continue
        except QuorumError:
            continue
        return {"submitted": submitted_at, "committed": time.monotonic()}
    return None


@dataclass(frozen=True, slots=True)
class Pipelined:
    """What ``pipeline`` got back: answers by kind, and the first problem met."""

    elapsed_s: float  # first submit .. last answer (or the deadline)
    count: int
    ok: int
    refused: int  # committed, but the state machine said no
    failed: int  # not committed: timed out, lost to an election, no result
    problem: str | None
    complete: bool  # every command answered before the deadline

    @property
    def answered(self) -> int:
        return self.ok + self.refused + self.failed


def pipeline(
    quorum: RaftQuorum,
    commands: Sequence[bytes],
    inflight_max: int,
    *,
    timeout_s: float,
    submit_timeout_s: float,
    refusal: Callable[[bytes], str | None] | None = None,
) -> Pipelined:
    """Submit every command through ``submit_async``, at most ``inflight_max`` unanswered, and
    wait for the answers until ``timeout_s``. ``refusal`` reads a committed command's result:
    what the state machine refused, or None. Answers come on the Raft thread."""
    slots = threading.BoundedSemaphore(inflight_max)
    tally = {"ok": 0, "refused": 0, "failed": 0}
    problems: list[str] = []  # at most one kept
    lock = threading.Lock()
    finished = threading.Event()
    if not commands:
        finished.set()

    def done(result: bytes | None, error: QuorumError | None) -> None:
        problem = None
        if error is not None or result is None:
            kind, problem = "failed", repr(error) if error is not None else "no result"
        elif refusal is not None and (problem := refusal(result)) is not None:
            kind = "refused"
        else:
            kind = "ok"
        with lock:
            tally[kind] += 1
            if problem is not None and not problems:
                problems.append(problem)
            answered = sum(tally.values())
        slots.release()
        if answered == len(commands):
            finished.set()

    deadline = time.monotonic() + timeout_s
    started = time.perf_counter()
    for data in commands:
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
        quorum.submit_async(data, submit_timeout_s, done)
    complete = finished.wait(max(0.0, deadline - time.monotonic()))
    elapsed = time.perf_counter() - started
    with lock:
        return Pipelined(
            elapsed,
            len(commands),
            tally["ok"],
            tally["refused"],
            tally["failed"],
            problems[0] if problems else None,
            complete,
        )
