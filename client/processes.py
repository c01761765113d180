"""Broker processes on this machine: start one with its log, signal it by PID, wait for a cluster
of them to be ready.

Shared by the two tools that run brokers as child processes: ``raftlog cluster`` / ``make demo``
(``local_cluster.py``, brokers on loopback) and the chaos harness (``raftlog.chaos.netns``,
brokers in network namespaces). Each broker runs ``python -m raftlog.cluster --config <toml>``
in its own session (a terminal's Ctrl-C does not reach it), with stdout and stderr appended to
its log file.

A broker is only ever signalled by its PID, and only while that PID is still *our* broker: for a
process this program started, its ``Popen`` says so (and reaps it); for one another command
started (``raftlog cluster down`` after ``cluster up``), a check of ``/proc/<pid>`` given by the
caller does, so a recycled PID of some other program is never signalled. Signals land
asynchronously: ``pause`` and ``resume`` return once ``/proc`` shows their effect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from pathlib import Path

from .admin import Admin
from .security import ClientSecurity

__all__ = [
    "SIGNAL_EFFECT_TIMEOUT_S",
    "BrokerExitedError",
    "BrokerNotReadyError",
    "BrokerProcess",
    "BrokerProcessError",
    "is_dead",
    "log_tail",
    "port_free",
    "process_state",
    "start_broker",
    "stop_all",
    "wait_until_ready",
]

logger = logging.getLogger(__name__)

SIGNAL_EFFECT_TIMEOUT_S = 5.0  # SIGSTOP/SIGCONT → the state in /proc
_POLL_S = 0.05  # how often a wait for a foreign PID looks again


class BrokerProcessError(Exception):
    """A broker process did not do what a signal or a start asked in time; the message says
    which."""


class BrokerExitedError(BrokerProcessError):
    """A broker we wait for is not running (it exited, or was never started)."""

    def __init__(self, node_id: int) -> None:
        super().__init__(f"broker {node_id} is not running")
        self.node_id = node_id


class BrokerNotReadyError(BrokerProcessError):
    """The cluster was not ready in time; ``last`` says what the last look saw."""

    def __init__(self, last: str) -> None:
        super().__init__(f"not ready ({last})")
        self.last = last


# ---- /proc ------------------------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat (R, S, T, Z, ...), None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def is_dead(pid: int) -> bool:
    """No such process, or a zombie (dead; whoever started it reaps it)."""
    return process_state(pid) in (None, "Z", "X")


def wait_state(pid: int, reached: Callable[[str | None], bool]) -> None:
    """Until ``reached(state)`` holds for the PID's state; BrokerProcessError after
    ``SIGNAL_EFFECT_TIMEOUT_S``."""
    deadline = time.monotonic() + SIGNAL_EFFECT_TIMEOUT_S
    while not reached(process_state(pid)):
        if time.monotonic() >= deadline:
            raise BrokerProcessError(
                f"pid {pid} still in state {process_state(pid)} "
                f"{SIGNAL_EFFECT_TIMEOUT_S} s after the signal"
            )
        time.sleep(0.005)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on (or holds) ``host:port`` now; a probe, not a reservation."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a broker's log (for diagnostics)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# ---- one broker -------------------------------------------------------------------------------


class BrokerProcess:
    """One broker process, addressed by PID. Owned by whoever holds it; not thread-safe.

    ``popen`` is set when this program started it: its exit is read from the ``Popen``, which
    also reaps it. Otherwise ``runs_ours(pid)`` says whether the PID still runs our broker.
    ``paused`` is what we did to it (SIGSTOP without SIGCONT since), not what /proc says.
    """

    def __init__(
        self,
        node_id: int,
        pid: int,
        *,
        popen: subprocess.Popen[bytes] | None = None,
        runs_ours: Callable[[int], bool] | None = None,
    ) -> None:
        self.node_id = node_id
        self.pid = pid
        self.popen = popen
        self._runs_ours = runs_ours
        self.paused = False

    def alive(self) -> bool:
        """The process exists and is ours (a paused one counts; a zombie does not)."""
        if self.popen is not None:
            return self.popen.poll() is None
        if is_dead(self.pid):
            return False
        return self._runs_ours is None or self._runs_ours(self.pid)

    def signal(self, signum: int) -> None:
        """Send ``signum`` while it is alive; a gone (or no longer ours) PID is left alone."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait_gone(self, timeout_s: float) -> bool:
        """Until it is gone (reaped, when ours), at most ``timeout_s``; True when it is."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def kill(self, timeout_s: float) -> bool:
        """SIGKILL (a crash); True once it is gone within ``timeout_s``."""
        self.signal(signal.SIGKILL)
        gone = self.wait_gone(timeout_s)
        if gone:
            self.paused = False
        return gone

    def terminate(self) -> None:
        """SIGTERM; then SIGCONT when paused, since a stopped process cannot act on TERM."""
        self.signal(signal.SIGTERM)
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False

    def stop(self, timeout_s: float, kill_timeout_s: float = 10.0) -> bool:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. True when it stopped cleanly;
        BrokerProcessError when even SIGKILL did not end it within ``kill_timeout_s``."""
        self.terminate()
        if self.wait_gone(timeout_s):
            return True
        logger.warning("broker %d ignored SIGTERM; sending SIGKILL", self.node_id)
        if not self.kill(kill_timeout_s):
            raise BrokerProcessError(
                f"broker {self.node_id} (pid {self.pid}) did not die within "
                f"{kill_timeout_s} s of SIGKILL"
            )
        return False

    def pause(self) -> None:
        """SIGSTOP (a GC pause / frozen VM); returns once the kernel stopped it."""
        self.signal(signal.SIGSTOP)
        self.paused = True
        wait_state(self.pid, lambda state: state in ("T", "Z", None))

    def resume(self) -> None:
        """SIGCONT; returns once it runs again."""
        self.signal(signal.SIGCONT)
        self.paused = False
        wait_state(self.pid, lambda state: state != "T")


def start_broker(
    node_id: int,
    config: Path,
    log: Path,
    *,
    cwd: Path,
    python: str = sys.executable,
    wrapper: Sequence[str] = (),
    log_level: str | None = None,
    env: Mapping[str, str] | None = None,
    banner: str | None = None,
) -> BrokerProcess:
    """Start ``python -m raftlog.cluster --config <config>`` (after ``wrapper``, e.g.
    ``ip netns exec <ns>``) in its own session, appending its output to ``log`` (after a line
    ``--- <banner> at <time> ---`` when given). Does not wait for it to serve."""
    argv = [*wrapper, python, "-m", "raftlog.cluster", "--config", str(config)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    with open(log, "ab") as out:
        if banner is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"--- {banner} at {stamp} ---\n".encode())
            out.flush()
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    return BrokerProcess(node_id, popen.pid, popen=popen)


def stop_all(
    processes: Iterable[BrokerProcess], timeout_s: float, *, kill_timeout_s: float = 10.0
) -> list[BrokerProcess]:
    """SIGTERM every live one at once, wait up to ``timeout_s`` for all of them together, SIGKILL
    the rest. Returns those still alive ``kill_timeout_s`` after their SIGKILL."""
    running = [p for p in processes if p.alive()]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    lives_on = []
    for process in running:
        if not process.wait_gone(max(0.1, deadline - time.monotonic())):
            process.signal(signal.SIGKILL)
            if not process.wait_gone(kill_timeout_s):
                lives_on.append(process)
        process.paused = False
    return lives_on


# ---- a cluster of them ------------------------------------------------------------------------


def wait_until_ready(
    bootstrap: str,
    security: ClientSecurity,
    wanted: Set[int],
    timeout_s: float,
    *,
    not_running: Callable[[], Iterable[int]],
    silent: Callable[[], list[int]] | None = None,
) -> None:
    """Until a controller is active and lists every ``wanted`` broker registered, unfenced and
    alive (and ``silent()``, a caller's own probe, names none). Raises BrokerExitedError as
    soon as ``not_running()`` names a wanted broker, BrokerNotReadyError when time runs out."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with Admin(bootstrap, timeout_s=2.0, security=security) as admin:
        while True:
            dead = sorted(not_running())
            if dead:
                raise BrokerExitedError(dead[0])
            try:
                quiet = silent() if silent is not None else []
                cluster = admin.describe_cluster()
                live = {b.broker_id for b in cluster.brokers if not b.fenced and b.alive}
                if not quiet and cluster.controller_id >= 0 and wanted <= live:
                    return
                last = f"live brokers {sorted(live)}; controller {cluster.controller_id}"
                if silent is not None:
                    last = f"not answering Metadata: {quiet or 'none'}; {last}"
            except Exception as exc:  # not up yet: every kind of error means "keep waiting"
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise BrokerNotReadyError(last)
            time.sleep(0.2)
