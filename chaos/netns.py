"""A real network for chaos runs: N brokers, each in its own Linux network namespace, on one
bridge — ``NetnsCluster``, what the runner and the nemeses drive.

Owned by the harness (the runner's nemesis thread and its main thread); every public method takes
one lock, so two threads may share a cluster, but nothing here is fast: each step runs ``ip``.

The parts it is made of: the network — bridge, namespaces, veths, and partitions as routes —
is network.py's (its docstring has the layout and how a cut is made); which cuts a partition
shape needs, cuts.py's; the run id (claimed with an flock so concurrent runs never collide) and
the clean-up of crashed runs, runs.py's; starting and signalling broker processes,
``raftlog.client.processes`` (shared with ``raftlog cluster``).

**Security**, as deployed: every gRPC listener is mutual TLS. ``open`` makes a CA for the run in
``<run dir>/tls`` (``raftlog.client.certs``), a certificate per broker whose SAN holds the
broker's namespace address (10.213.<r>.<i>: the address clients and the other brokers dial), and
the harness's client certificate ``chaos``, the super user of the configs. Every client and probe
of the harness connects with ``cluster.security``; ``plaintext=True`` turns all of it off.

**Kafka listener.** ``kafka=True`` gives every broker a Kafka-protocol listener too, on
``KAFKA_PORT`` at its namespace address (``kafka_address``, ``kafka_bootstrap``): TLS with the
same broker certificate; a Kafka client presenting the ``chaos`` certificate is ``User:chaos``
(cluster/kafka_listener.py). The harness's own probes, admin calls and drains stay on gRPC.

**Partitions.** ``partition(groups)`` cuts both directions between every pair in different
groups; ``apply_grudge`` takes Jepsen's grudge (node → nodes whose packets it drops) for one-way
cuts such as the majorities ring; ``heal()`` removes every peer route.

Processes: ``ip netns exec <ns> <python> -m raftlog.cluster --config node<i>.toml`` execs the
broker in place (no fork), so the PID we hold *is* the broker's; ``start`` checks that
``/proc/<pid>/cmdline`` became the Python command and that its network namespace differs from
ours before returning. Each broker has its own session (a terminal's Ctrl-C does not reach it)
and is only ever signalled by that PID.

Clean-up: ``close()`` (also from ``__exit__``, ``atexit``, and SIGINT/SIGTERM while inside the
``with``) stops every broker (SIGTERM, then SIGKILL), kills any other process still inside our
namespaces, deletes veths, namespaces and the bridge, and keeps the run directory (configs,
logs, data) unless told otherwise. A run that crashed hard (SIGKILL) leaves its namespaces
behind; ``runs.cleanup_stale()`` removes those of runs whose lock is no longer held, never a live
run's.

Run directory::

    node<i>.toml     the broker's config (validated with raftlog.cluster.config.parse_config)
    tls/             ca.pem/.key, broker-<i>.pem/.key, client-chaos.pem/.key (not with plaintext)
    node<i>.log      stdout+stderr of every incarnation of broker i, with a line per start
    node<i>.boot_id  the node's boot id (``boot_id_file``): a fresh uuid4 per simulated boot
    node<i>/         its data_dir; with ``lazyfs=True`` a lazyfs mount (chaos/lazyfs.py) of
    lazyfs/node<i>/  live/ and durable/: what the broker wrote, and what survives a power loss

**Storage faults.** With ``lazyfs=True`` every data dir is a lazyfs mount (mounted before the
brokers start, unmounted cleanly by ``close``): ``power_off`` SIGKILLs the broker and cuts the
power of its disk (unsynced writes dropped, decided by lazyfs, not the broker); ``start`` of a
powered-off node mounts the disk again, writes a new boot id — how the broker tells a reboot from
a process crash — and starts it. ``damage_file`` applies a ``diskfault.Damage`` to a stopped
broker's file, and also to its durable copy on lazyfs, so a later power loss keeps the damage.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path
from types import TracebackType
from typing import Any

from raftlog.client import ClientSecurity
from raftlog.client.broker_config import Voter, broker_config_text
from raftlog.client.certs import CertificateAuthority
from raftlog.client.processes import (
    BrokerProcess,
    BrokerProcessError,
    log_tail,
    start_broker,
    stop_all,
)
from raftlog.cluster.config import ConfigFileError, parse_config
from raftlog.proto import broker_pb2

from .cuts import cuts_for_groups, cuts_for_grudge
from .diskfault import Damage
from .disks import NodeDisks
from .network import (
    GRPC_PORT,
    KAFKA_PORT,
    NODES_MAX,
    RAFT_PORT,
    NetnsError,
    NetnsUnavailableError,
    PartitionMode,
    RunNetwork,
    check_available,
    host_overlaps,
    links,
    namespaces,
)
from .probes import controller_of, leaders_of, metadata_answers, wait_ready
from .runs import (
    RunLock,
    check_prefix,
    claim_run_id,
    delete_run_resources,
    lazyfs_source_prefix,
    names_by_run,
)
from .signals import exit_on_signals, restore, signals_deferred

__all__ = ["CLIENT_NAME", "NetnsCluster"]

logger = logging.getLogger(__name__)

PROCESS_EXEC_TIMEOUT_S = 5.0  # ip netns exec → python, visible in /proc
CLIENT_NAME = "chaos"  # the harness's certificate: principal User:chaos, the super user


@contextlib.contextmanager
def _process_errors() -> Iterator[None]:
    """A broker process that did not do what a signal asked is the harness's NetnsError."""
    try:
        yield
    except BrokerProcessError as exc:
        raise NetnsError(str(exc)) from exc


class NetnsCluster:
    """N brokers in N namespaces on one bridge; see the module docstring.

    ``with NetnsCluster(3) as cluster:`` builds the network, writes configs and starts every
    broker (it does not wait: call ``wait_ready``); leaving the block tears everything down.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        run_dir: str | Path | None = None,
        python: str = sys.executable,
        session_timeout_ms: int = 1500,
        heartbeat_interval_ms: int = 150,
        replica_lag_ms_max: int = 5000,
        replica_silence_ms_max: int = 1000,
        request_timeout_ms_max: int | None = None,
        storage: Mapping[str, object] | None = None,
        topic_defaults: Mapping[str, object] | None = None,
        testing: Mapping[str, object] | None = None,
        log_level: str = "INFO",
        partition_mode: PartitionMode = PartitionMode.DROP,
        prefix: str = "rl",
        delete_run_dir: bool = False,
        stop_timeout_s: float = 10.0,
        lazyfs: bool = False,
        plaintext: bool = False,
        kafka: bool = False,
    ) -> None:
        if not 1 <= nodes <= NODES_MAX:
            raise ValueError(f"a namespaced cluster has 1 to {NODES_MAX} nodes, not {nodes}")
        check_prefix(prefix)
        self.node_count = nodes
        self.python = python
        self.prefix = prefix
        self.delete_run_dir = delete_run_dir
        self.stop_timeout_s = stop_timeout_s
        self.log_level = log_level
        self.lazyfs = lazyfs
        self.plaintext = plaintext
        self.kafka = kafka  # every broker also serves the Kafka protocol (module docstring)
        self._security: ClientSecurity | None = None  # set by open(): the harness's TLS
        self._requested_run_dir = Path(run_dir) if run_dir is not None else None
        self._tables: dict[str, dict[str, object]] = {
            "timeouts": {
                "session_timeout_ms": session_timeout_ms,
                "heartbeat_interval_ms": heartbeat_interval_ms,
                "replica_lag_ms_max": replica_lag_ms_max,
                "replica_silence_ms_max": replica_silence_ms_max,
            },
            "topic_defaults": {
                "partitions": 3,
                "replication_factor": min(3, nodes),
                "min_insync_replicas": min(2, nodes),
            },
        }
        if request_timeout_ms_max is not None:
            self._tables["timeouts"]["request_timeout_ms_max"] = request_timeout_ms_max
        if storage:
            self._tables["storage"] = dict(storage)
        if topic_defaults:
            self._tables["topic_defaults"].update(topic_defaults)
        if testing:
            self._tables["testing"] = dict(testing)
        self.secret = secrets.token_hex(16)
        self.run_dir = Path()
        self._disks = NodeDisks(self.run_dir, "")  # made again by open(), under the run dir
        self._lock = threading.RLock()
        self._net = RunNetwork(prefix, -1, self.node_ids, partition_mode)  # run id: open()
        self._run_lock: RunLock | None = None
        self._processes: dict[int, BrokerProcess] = {}
        self._opened = False
        self._closed = False
        self._saved_handlers: dict[int, Any] = {}

    # ---- names and addresses -------------------------------------------------------------------

    @property
    def run_id(self) -> int:
        """1..250 once ``open`` claimed it, else -1."""
        return self._net.run_id

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.node_count + 1))

    @property
    def partition_mode(self) -> PartitionMode:
        """How the next cuts stop packets (cuts in force keep theirs until replaced)."""
        return self._net.partition_mode

    @partition_mode.setter
    def partition_mode(self, mode: PartitionMode) -> None:
        self._net.partition_mode = mode

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self._net.subnet

    @property
    def host_ip(self) -> str:
        return self._net.host_ip

    @property
    def bridge(self) -> str:
        return self._net.bridge

    def ip(self, node: int) -> str:
        self._require(node)
        return self._net.ip(node)

    def address(self, node: int) -> str:
        """The broker's gRPC ``host:port``."""
        return f"{self.ip(node)}:{GRPC_PORT}"

    def raft_address(self, node: int) -> str:
        return f"{self.ip(node)}:{RAFT_PORT}"

    def kafka_address(self, node: int) -> str:
        """The broker's Kafka-protocol ``host:port`` (served only when ``kafka=True``)."""
        return f"{self.ip(node)}:{KAFKA_PORT}"

    def namespace(self, node: int) -> str:
        self._require(node)
        return self._net.namespace(node)

    @property
    def bootstrap(self) -> str:
        """Every broker's gRPC address, comma-separated (``raftlog.client`` bootstrap)."""
        return ",".join(self.address(i) for i in self.node_ids)

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker's Kafka address, comma-separated (a Kafka client's bootstrap.servers)."""
        if not self.kafka:
            raise NetnsError("this cluster has no Kafka listeners (kafka=False)")
        return ",".join(self.kafka_address(i) for i in self.node_ids)

    def config_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.toml"

    def log_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.log"

    def data_dir(self, node: int) -> Path:
        return self._disks.data_dir(node)

    def boot_id_path(self, node: int) -> Path:
        return self._disks.boot_id_path(node)

    def lazyfs_backing(self, node: int) -> Path:
        return self._disks.lazyfs_backing(node)

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def security(self) -> ClientSecurity:
        """How the harness reaches the brokers: the run's CA and the super user's certificate
        (``User:chaos``), or plaintext for a ``plaintext`` cluster."""
        if self.plaintext:
            return ClientSecurity.plaintext()
        if self._security is None:
            raise NetnsError("the cluster has no certificates before open()")
        return self._security

    def _require(self, node: int) -> None:
        if node not in self.node_ids:
            raise ValueError(f"no node {node} (nodes: {list(self.node_ids)})")

    # ---- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> NetnsCluster:
        self._saved_handlers = exit_on_signals()
        try:
            self.open()
        except BaseException:
            restore(self._saved_handlers)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.close()
            else:
                try:
                    self.close()
                except NetnsError as cleanup_error:  # do not hide the body's error
                    logger.error("chaos network clean-up incomplete: %s", cleanup_error)
        finally:
            restore(self._saved_handlers)

    def open(self) -> NetnsCluster:
        """Claim a run id, build the network, write configs, start every broker."""
        with self._lock:
            if self._opened:
                raise NetnsError("this NetnsCluster was already opened; make a new one")
            self._opened = True
            check_available()
            atexit.register(self._atexit_close)
            try:
                self._claim_run_id()
                self._make_run_dir()
                self._disks = NodeDisks(
                    self.run_dir, lazyfs_source_prefix(self.prefix, self.run_id)
                )
                if not self.plaintext:
                    self._make_certificates()
                self._net.build()
                for node in self.node_ids:
                    self._disks.new_boot_id(node)
                    if self.lazyfs:
                        self._disks.mount(node)
                    self._write_config(node)
                for node in self.node_ids:
                    self._spawn(node)
            except BaseException:
                self.close()
                raise
            logger.info(
                "chaos network %s up: %d brokers, run dir %s",
                self.bridge,
                self.node_count,
                self.run_dir,
            )
            return self

    def _claim_run_id(self) -> None:
        """A run id whose subnet the host does not use and whose bridge we could create."""

        def usable(run_id: int) -> bool:
            candidate = RunNetwork(self.prefix, run_id, self.node_ids, self.partition_mode)
            if host_overlaps(candidate.subnet):
                return False
            created = candidate.create_bridge()
            if created.returncode != 0:
                if "Operation not permitted" in created.stderr:
                    raise NetnsUnavailableError(
                        f"chaos needs root and iproute2 (ip netns): {created.stderr.strip()}"
                    )
                return False
            return True

        run_id, self._run_lock = claim_run_id(self.prefix, usable)
        self._net.run_id = run_id

    def _make_run_dir(self) -> None:
        if self._requested_run_dir is not None:
            self.run_dir = self._requested_run_dir.resolve()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"raftlog-chaos-{self.run_id}-"))

    def _make_certificates(self) -> None:
        """The run's CA (kept when the run dir is reused), broker certificates for this run's
        addresses (issued anew: the run id, hence the subnet, may differ), the harness's."""
        ca = CertificateAuthority(self.tls_dir)
        ca.create(f"raftlog chaos {self.run_dir.name}")
        for node in self.node_ids:
            ca.issue_broker(node, [self.ip(node)])
        pair = ca.issue_client(CLIENT_NAME)
        self._security = ClientSecurity.from_files(ca.ca_file, pair.cert_file, pair.key_file)

    def _security_table(self, node: int) -> dict[str, object]:
        if self.plaintext:
            return {"protocol": "plaintext"}
        tls = self.tls_dir.relative_to(self.run_dir)
        return {
            "protocol": "tls",
            "ca_file": str(tls / "ca.pem"),
            "cert_file": str(tls / f"broker-{node}.pem"),
            "key_file": str(tls / f"broker-{node}.key"),
            "super_users": [f"User:{CLIENT_NAME}"],
        }

    def _write_config(self, node: int) -> None:
        listen = {"grpc": self.address(node), "raft": self.raft_address(node)}
        if self.kafka:
            listen["kafka"] = self.kafka_address(node)
        text = broker_config_text(
            comment=f"written by raftlog.chaos.netns for run {self.run_id}",
            top={
                "node_id": node,
                "data_dir": f"node{node}",
                "boot_id_file": self.boot_id_path(node).name,
                "cluster_secret": self.secret,
            },
            listen=listen,
            voters=[Voter(i, self.raft_address(i), self.address(i)) for i in self.node_ids],
            tables={**self._tables, "security": self._security_table(node)},
        )
        try:
            parse_config(tomllib.loads(text), base_dir=self.run_dir)
        except (ConfigFileError, tomllib.TOMLDecodeError) as exc:
            raise NetnsError(f"the config for node {node} is invalid: {exc}") from exc
        self.config_path(node).write_text(text)

    # ---- processes -----------------------------------------------------------------------------

    def _spawn(self, node: int) -> None:
        process = start_broker(
            node,
            self.config_path(node),
            self.log_path(node),
            cwd=self.run_dir,
            python=self.python,
            wrapper=("ip", "netns", "exec", self.namespace(node)),
            log_level=self.log_level,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            banner=f"raftlog.chaos.netns: starting node {node}",
        )
        self._processes[node] = process
        self._verify_exec(node, process)

    def _verify_exec(self, node: int, process: BrokerProcess) -> None:
        """Wait until the PID runs our Python inside the node's namespace (ip exec'd it)."""
        assert process.popen is not None  # we started it
        own_netns = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + PROCESS_EXEC_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise NetnsError(
                    f"broker {node} exited at once (code {process.popen.returncode}); its log "
                    f"ends:\n{self.logs(node)}"
                )
            try:
                argv0 = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0", 1)[0]
                netns = os.readlink(f"/proc/{process.pid}/ns/net")
            except OSError:
                argv0, netns = b"", own_netns
            if argv0 == self.python.encode() and netns != own_netns:
                return
            time.sleep(0.01)
        raise NetnsError(
            f"pid {process.pid} did not become broker {node} (python in {self.namespace(node)}) "
            f"within {PROCESS_EXEC_TIMEOUT_S} s"
        )

    def pid(self, node: int) -> int | None:
        """The broker's PID while it runs (paused included), else None."""
        with self._lock:
            self._require(node)
            process = self._processes.get(node)
            if process is None or not process.alive():
                return None
            return process.pid

    def is_running(self, node: int) -> bool:
        """The broker process exists (a paused one counts as running)."""
        return self.pid(node) is not None

    def is_paused(self, node: int) -> bool:
        with self._lock:
            return self.is_running(node) and self._processes[node].paused

    def running(self) -> list[int]:
        return [i for i in self.node_ids if self.is_running(i)]

    def start(self, node: int) -> int:
        """Start a stopped broker (same config and data); return its PID. Does not wait."""
        with self._lock:
            self._require_open()
            if self.is_running(node):
                raise NetnsError(f"broker {node} is already running (pid {self.pid(node)})")
            self._disks.boot(node)  # a powered-off node's disk comes back, with a new boot id
            self._spawn(node)
            pid = self.pid(node)
            if pid is None:
                raise NetnsError(f"broker {node} exited right after starting:\n{self.logs(node)}")
            return pid

    def kill(self, node: int, timeout_s: float = 10.0) -> None:
        """SIGKILL the broker (a crash) and reap it."""
        with self._lock:
            process = self._running_process(node)
            if not process.kill(timeout_s):
                raise NetnsError(
                    f"broker {node} (pid {process.pid}) did not die within {timeout_s} s of SIGKILL"
                )

    def stop(self, node: int, timeout_s: float | None = None) -> bool:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. True when it stopped cleanly."""
        with self._lock, _process_errors():
            process = self._running_process(node)
            return process.stop(self.stop_timeout_s if timeout_s is None else timeout_s)

    def pause(self, node: int) -> None:
        """SIGSTOP the broker (a GC pause / frozen VM); returns once the kernel stopped it."""
        with self._lock, _process_errors():
            self._running_process(node).pause()

    def resume(self, node: int) -> None:
        """SIGCONT a paused broker; returns once it runs again."""
        with self._lock, _process_errors():
            self._running_process(node).resume()

    def _running_process(self, node: int) -> BrokerProcess:
        self._require_open()
        if not self.is_running(node):
            raise NetnsError(f"broker {node} is not running")
        return self._processes[node]

    def _require_open(self) -> None:
        if not self._opened or self._closed:
            raise NetnsError("the chaos cluster is not open")

    def exec_in(
        self, node: int, argv: Sequence[str], timeout_s: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a short helper command inside a node's namespace (killed after ``timeout_s``)."""
        with self._lock:
            self._require_open()
            self._require(node)
        return self._net.exec_in(node, argv, timeout_s)

    def can_connect(
        self, source: int | None, target: int, port: int = GRPC_PORT, timeout_s: float = 1.0
    ) -> bool:
        """Can a TCP connect from ``source``'s namespace (None: the host) reach ``target:port``?"""
        host = self.ip(target)
        if source is None:
            try:
                with socket.create_connection((host, port), timeout=timeout_s):
                    return True
            except OSError:
                return False
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(({host!r}, {port}), timeout={timeout_s}).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        try:
            done = self.exec_in(source, [self.python, "-c", probe], timeout_s=timeout_s + 10)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def logs(self, node: int, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's log (for diagnostics)."""
        return log_tail(self.log_path(node), lines)

    # ---- storage: boot ids, lazyfs, power loss, damaged files (disks.py) ----------------------

    def boot_id(self, node: int) -> str:
        return self._disks.boot_id(node)

    def is_powered_off(self, node: int) -> bool:
        with self._lock:
            self._require(node)
            return self._disks.is_powered_off(node)

    def power_off(self, node: int) -> dict[str, Any]:
        """Power loss: SIGKILL the broker (if running) and drop every write its disk had not
        made durable (lazyfs). The node stays off until ``start`` (= power on). Returns what
        the disk lost, for the fault record."""
        with self._lock:
            self._require_open()
            self._require(node)
            if not self._disks.on_lazyfs(node):
                raise NetnsError("power loss needs the data dirs on lazyfs (lazyfs=True)")
            if self._disks.is_powered_off(node):
                raise NetnsError(f"node {node} is already powered off")
            was_running = self.is_running(node)
            if was_running:
                self.kill(node)
            return {"node": node, "was_running": was_running, **self._disks.power_off(node)}

    def data_files(self, node: int) -> list[tuple[str, int]]:
        """(path relative to the data dir, size) of the node's segment logs and indexes."""
        with self._lock:
            self._require(node)
            return self._disks.data_files(node)

    def damage_file(self, node: int, damage: Damage) -> dict[str, Any]:
        """Apply ``damage`` to a stopped broker's file (and to its durable copy on lazyfs)."""
        with self._lock:
            self._require_open()
            if self.is_running(node):
                raise NetnsError(f"broker {node} must be stopped before its files are damaged")
            if self._disks.is_powered_off(node):
                raise NetnsError(f"node {node} is powered off")
            return self._disks.damage(node, damage)

    # ---- the network: partitions -----------------------------------------------------------------

    @property
    def cuts(self) -> frozenset[tuple[int, int]]:
        """The one-way cuts in force: (a, b) means packets from a to b are stopped."""
        with self._lock:
            return frozenset(self._net.cuts)

    def partition(self, groups: Sequence[Set[int]]) -> None:
        """Nodes in different groups exchange no packets; the host still reaches all of them.

        Groups must be disjoint; nodes named in no group form one more group together (so
        ``partition([{1}])`` isolates node 1). Replaces any partition in force.
        """
        self.apply_cuts(cuts_for_groups(self.node_ids, groups))

    def isolate(self, node: int) -> None:
        self._require(node)
        self.partition([{node}])

    def apply_grudge(self, grudge: Mapping[int, Iterable[int]]) -> None:
        """Jepsen's grudge: node → the nodes whose packets it drops (one-way). Replaces any cut."""
        self.apply_cuts(cuts_for_grudge(self.node_ids, grudge))

    def apply_cuts(self, cuts: Iterable[tuple[int, int]]) -> None:
        """Make exactly these one-way cuts (sender, receiver) the ones in force."""
        wanted = set(cuts)
        for a, b in wanted:
            self._require(a)
            self._require(b)
            if a == b:
                raise ValueError(f"a node cannot be cut from itself ({a})")
        with self._lock:
            self._require_open()
            self._net.set_cuts(wanted)
        logger.info("network cuts now %s", sorted(wanted) or "none")

    def heal(self) -> None:
        """Remove every peer route from every namespace (recorded or not)."""
        with self._lock:
            self._require_open()
            self._net.heal()
        logger.info("network healed")

    # ---- readiness and probes --------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 60.0, nodes: Iterable[int] | None = None) -> None:
        """Until each (given) broker answers Metadata, a controller exists, and the controller
        lists them registered, unfenced and alive. Raises NetnsError (with a log tail) when a
        broker exits or the time runs out."""
        wanted = set(self.node_ids if nodes is None else nodes)

        def not_running() -> list[int]:
            with self._lock:
                return [i for i in wanted if not self.is_running(i)]

        wait_ready(
            self.bootstrap,
            {n: self.address(n) for n in sorted(wanted)},
            self.security,
            timeout_s,
            not_running=not_running,
            logs=self.logs,
        )

    def metadata_answers(
        self, topics: Sequence[str] = (), timeout_s: float = 1.0
    ) -> dict[int, broker_pb2.MetadataResponse]:
        """Each running, unpaused broker's own Metadata answer (the silent ones left out)."""
        with self._lock:
            asked = [n for n in self.node_ids if self.is_running(n) and not self.is_paused(n)]
        addresses = {n: self.address(n) for n in asked}
        return metadata_answers(addresses, self.security, topics, timeout_s)

    def controller(self, timeout_s: float = 1.0) -> int | None:
        """The active controller as the most up-to-date broker reports it (None: unknown)."""
        answers = self.metadata_answers((), timeout_s).values()
        return controller_of(answers, set(self.node_ids))

    def leaders(self, topics: Sequence[str] = (), timeout_s: float = 1.0) -> frozenset[int]:
        """The brokers leading at least one partition of ``topics`` (all topics when empty), as
        the most up-to-date answers say (``probes.leaders_of``)."""
        return leaders_of(self.metadata_answers(topics, timeout_s).values(), set(self.node_ids))

    # ---- teardown --------------------------------------------------------------------------------

    def close(self, delete_run_dir: bool | None = None) -> None:
        """Stop every broker, remove namespaces, veths and the bridge; keep the run dir unless
        told. Idempotent; raises NetnsError if something of this run could not be removed."""
        with self._lock, signals_deferred():
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self._atexit_close)
            problems: list[str] = []
            try:
                for process in stop_all(self._processes.values(), self.stop_timeout_s):
                    problems.append(f"broker {process.node_id} (pid {process.pid}) lives on")
            finally:
                self._disks.unmount_all(problems)
                self._remove_network(problems)
                if self._run_lock is not None:
                    self._run_lock.release()
                    self._run_lock = None
            remove = self.delete_run_dir if delete_run_dir is None else delete_run_dir
            if remove and self.run_dir != Path() and self.run_dir.exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if problems:
                raise NetnsError("chaos network clean-up incomplete: " + "; ".join(problems))
            if self.run_id > 0:
                logger.info("chaos network %s removed (run dir %s)", self.bridge, self.run_dir)

    def _remove_network(self, problems: list[str]) -> None:
        if self.run_id <= 0 or self._run_lock is None:
            return  # never claimed a run id: nothing of ours exists
        ours = names_by_run(self.prefix).get(self.run_id, set()) | self._net.names()
        existing = namespaces() | links()
        delete_run_resources({(kind, name) for kind, name in ours if name in existing})
        left = sorted(name for _, name in names_by_run(self.prefix).get(self.run_id, set()))
        if left:
            problems.append(f"still present: {', '.join(left)}")
        self._net.cuts = set()

    def _atexit_close(self) -> None:
        try:
            self.close()
        except Exception as exc:  # the interpreter is exiting; say it, do not raise
            print(f"raftlog.chaos.netns: {exc}", file=sys.stderr)
