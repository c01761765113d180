"""A real network for chaos runs: one Linux network namespace per broker, joined by a bridge.

Owned by the harness (the runner's nemesis thread and its main thread); every public method takes
one lock, so two threads may share a cluster, but nothing here is fast: each step runs ``ip``.

Layout of run ``r`` (1..250, claimed with an flock so concurrent runs never collide)::

    root namespace                       namespace rl<r>n<i> (one per node i)
    ──────────────                       ──────────────────────────────────────
    bridge rlbr<r>  10.213.<r>.254/24    eth0  10.213.<r>.<i>/24  (veth peer of rl<r>v<i>)
      ├── rl<r>v1 ─────────────────────  lo up
      ├── rl<r>v2 ...                    broker i: gRPC 10.213.<r>.<i>:9092, Raft ...:9192
      └── rl<r>v<n>                      neighbour 10.213.<r>.253 → 02:72:6c:00:00:fd (nobody)

The harness stays in the root namespace and reaches every node through the bridge, so clients
keep talking to every node during a partition, as in Jepsen. Brokers bind only to their own
namespace's address; nothing listens on the host.

**Security**, as deployed: every gRPC listener is mutual TLS. ``open`` makes a CA for the run in
``<run dir>/tls`` (``raftlog.client.certs``), a certificate per broker whose SAN holds the
broker's namespace address (10.213.<r>.<i>: the address clients and the other brokers dial), and
the harness's client certificate ``chaos``, the super user of the configs. Every client and probe
of the harness connects with ``cluster.security``; ``plaintext=True`` turns all of it off.

**How a partition is made** (no iptables/nft on the machine, and ``tc`` here lacks the drop
action): a packet from node a to node b is stopped by a /32 route *in a's namespace* for b's
address — a one-way cut. ``partition(groups)`` cuts both directions between every pair in
different groups; ``apply_grudge`` takes Jepsen's grudge (node → nodes whose packets it drops) for
one-way cuts such as the majorities ring. The route's kind is the ``PartitionMode``:

* ``DROP`` (default, like iptables DROP): ``via 10.213.<r>.253``, a next hop whose permanent
  neighbour entry names a MAC nobody owns. The bridge floods the frame, every receiver discards
  it (wrong MAC), the sender's TCP sees silence and times out — the hard case for timeouts.
* ``BLACKHOLE`` / ``PROHIBIT`` / ``UNREACHABLE`` (like iptables REJECT): the sender's own kernel
  refuses at once (EINVAL / EACCES / EHOSTUNREACH), so connects fail fast.

``heal()`` deletes every /32 peer route in every namespace (it reads the tables back, so it also
removes routes it did not record). The host's routes are never touched.

Processes: ``ip netns exec <ns> <python> -m raftlog.cluster --config node<i>.toml`` execs the
broker in place (no fork), so the PID we hold *is* the broker's; ``start`` checks that
``/proc/<pid>/cmdline`` became the Python command and that its network namespace differs from
ours before returning. Each broker has its own session (a terminal's Ctrl-C does not reach it)
and is only ever signalled by that PID.

Clean-up: ``close()`` (also from ``__exit__``, ``atexit``, and SIGINT/SIGTERM while inside the
``with``) stops every broker (SIGTERM, then SIGKILL), kills any other process still inside our
namespaces, deletes veths, namespaces and the bridge, and keeps the run directory (configs,
logs, data) unless told otherwise. A run that crashed hard (SIGKILL) leaves its namespaces
behind; ``cleanup_stale()`` removes those of runs whose lock is no longer held, never a live
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
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import grpc

from raftlog.client import Admin, ClientSecurity
from raftlog.client.certs import CertificateAuthority
from raftlog.cluster.config import ConfigFileError, parse_config
from raftlog.proto import broker_pb2, broker_pb2_grpc

from .diskfault import Damage, apply_damage, data_files
from .lazymount import LazyMount, LazyMountError, cleanup_stale_mounts, mounts
from .lazystate import durable_path

__all__ = [
    "CLIENT_NAME",
    "GRPC_PORT",
    "LOCK_DIR",
    "RAFT_PORT",
    "NetnsCluster",
    "NetnsError",
    "NetnsUnavailableError",
    "PartitionMode",
    "check_available",
    "cleanup_stale",
]

logger = logging.getLogger(__name__)

GRPC_PORT = 9092
RAFT_PORT = 9192
SUBNET_PREFIX = "10.213"  # run r owns 10.213.<r>.0/24
HOST_SUFFIX = 254  # the bridge's (harness's) address
DROP_HOP_SUFFIX = 253  # the next hop nobody answers for (PartitionMode.DROP)
DROP_HOP_MAC = "02:72:6c:00:00:fd"  # locally administered; no interface has it
RUN_ID_MAX = 250
NODES_MAX = 9  # node i is 10.213.<r>.<i>, below the two reserved suffixes
IP_TIMEOUT_S = 15.0  # one `ip` command
PROCESS_EXEC_TIMEOUT_S = 5.0  # ip netns exec → python, visible in /proc
SIGNAL_EFFECT_TIMEOUT_S = 5.0  # SIGSTOP/SIGCONT → the state in /proc
LOCK_DIR = Path(tempfile.gettempdir()) / "raftlog-netns-locks"
CLIENT_NAME = "chaos"  # the harness's certificate: principal User:chaos, the super user

_PREFIX_RE = re.compile(r"[a-z]{1,4}")
_PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class NetnsError(Exception):
    """A step of building, driving or tearing down the network failed; the message says which."""


class NetnsUnavailableError(NetnsError):
    """This machine (or user) cannot run namespaced chaos: not root, or no iproute2."""


class PartitionMode(Enum):
    """How a cut route stops packets; see the module docstring."""

    DROP = "drop"  # silent: senders time out
    BLACKHOLE = "blackhole"  # sender gets EINVAL at once
    PROHIBIT = "prohibit"  # sender gets EACCES at once
    UNREACHABLE = "unreachable"  # sender gets EHOSTUNREACH at once


# ---- the `ip` tool ----------------------------------------------------------------------------


def _ip(
    *args: str, check: bool = True, stdin: str | None = None, timeout_s: float = IP_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``ip <args>``; with ``check``, a non-zero exit raises NetnsError with its stderr."""
    try:
        done = subprocess.run(
            ["ip", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`ip {' '.join(args)}` took longer than {timeout_s} s") from exc
    except FileNotFoundError as exc:
        raise NetnsUnavailableError(
            "chaos needs root and iproute2 (ip netns): `ip` not found"
        ) from exc
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip("-j", *args).stdout.strip()
    if not out:
        return []
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else []


def _namespaces() -> set[str]:
    return {str(entry["name"]) for entry in _ip_json("netns", "list") if "name" in entry}


def _links() -> set[str]:
    return {str(entry["ifname"]) for entry in _ip_json("link", "show") if "ifname" in entry}


def _netns_pids(namespace: str) -> list[int]:
    done = _ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def check_available() -> None:
    """Raise NetnsUnavailableError (one line) unless we are root and ``ip netns`` works."""
    reason = None
    if os.geteuid() != 0:
        reason = f"running as uid {os.geteuid()}, not root"
    elif shutil.which("ip") is None:
        reason = "`ip` (iproute2) is not on PATH"
    else:
        done = _ip("netns", "list", check=False)
        if done.returncode != 0:
            reason = f"`ip netns list` failed: {done.stderr.strip()}"
    if reason is not None:
        raise NetnsUnavailableError(f"chaos needs root and iproute2 (ip netns): {reason}")


# ---- run ids: locks and leftovers ------------------------------------------------------------


def _check_prefix(prefix: str) -> None:
    # Interface names are at most 15 bytes: "<prefix>br250" and "<prefix>250v9" stay well inside.
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"prefix must be 1-4 lowercase letters, not {prefix!r}")


class _RunLock:
    """An exclusive flock on ``LOCK_DIR/<prefix><run>.lock``: held for a run's whole life.

    The lock files are never unlinked (unlinking a locked file lets a second process lock a new
    inode of the same name); there are at most ``RUN_ID_MAX`` of them per prefix.
    """

    def __init__(self, prefix: str, run_id: int) -> None:
        self.path = LOCK_DIR / f"{prefix}{run_id}.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _names_by_run(prefix: str) -> dict[int, set[tuple[str, str]]]:
    """run id → {("netns"|"link", name)} of everything named like our runs."""
    p = re.escape(prefix)
    ns_re = re.compile(rf"{p}(\d{{1,3}})n\d+")
    link_re = re.compile(rf"{p}(\d{{1,3}})v\d+|{p}br(\d{{1,3}})")
    found: dict[int, set[tuple[str, str]]] = {}
    for name in _namespaces():
        if m := ns_re.fullmatch(name):
            found.setdefault(int(m.group(1)), set()).add(("netns", name))
    for name in _links():
        if m := link_re.fullmatch(name):
            run = int(m.group(1) or m.group(2))
            found.setdefault(run, set()).add(("link", name))
    return found


def _kill_namespace_processes(namespaces: Iterable[str], timeout_s: float = 5.0) -> list[int]:
    """SIGKILL, by PID, every process inside these (our own) namespaces; wait until gone."""
    me = os.getpid()
    pids = sorted({pid for ns in namespaces for pid in _netns_pids(ns) if pid != me})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    for pid in pids:  # a zombie is dead; whoever started it reaps it (a Popen of ours, or init)
        while not _is_dead(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return pids


def _process_state(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat (R, S, T, Z, ...), None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _is_dead(pid: int) -> bool:
    return _process_state(pid) in (None, "Z", "X")


def _delete_run_resources(names: Set[tuple[str, str]]) -> list[str]:
    """Kill what runs inside, then delete veths, namespaces, bridges; return the names deleted."""
    namespaces = sorted(n for kind, n in names if kind == "netns")
    links = sorted(n for kind, n in names if kind == "link")
    _kill_namespace_processes(namespaces)
    deleted = []
    # veths first (synchronous; deleting a namespace frees its veth only asynchronously), the
    # bridge last; a prefix has no digits, so only veth names end in "v<digits>"
    for name in sorted(links, key=lambda n: re.search(r"v\d+$", n) is None):
        if _ip("link", "del", name, check=False).returncode == 0:
            deleted.append(name)
    for name in namespaces:
        if _ip("netns", "del", name, check=False).returncode == 0:
            deleted.append(name)
    return deleted


def cleanup_stale(prefix: str = "rl") -> list[str]:
    """Remove namespaces, veths and bridges left by crashed runs with this prefix.

    Only names of our exact shapes (``<prefix><r>n<i>``, ``<prefix><r>v<i>``, ``<prefix>br<r>``)
    are considered, and only runs whose lock is free (their owner is gone); processes still
    inside those namespaces (orphaned brokers) are killed by PID first. Returns what was deleted.
    """
    _check_prefix(prefix)
    check_available()
    deleted: list[str] = []
    runs = _names_by_run(prefix)
    for run_id in _lazyfs_runs(prefix):
        runs.setdefault(run_id, set())
    for run_id, names in sorted(runs.items()):
        lock = _RunLock(prefix, run_id)
        if not lock.try_acquire():
            continue  # a live run owns it
        try:
            deleted += cleanup_stale_mounts(_lazyfs_source_prefix(prefix, run_id))
            deleted += _delete_run_resources(names)
        finally:
            lock.release()
    if deleted:
        logger.info("removed stale chaos network objects: %s", ", ".join(deleted))
    return deleted


def _lazyfs_source_prefix(prefix: str, run_id: int) -> str:
    return f"raftlog-lazyfs-{prefix}{run_id}n"


def _lazyfs_runs(prefix: str) -> set[int]:
    """Run ids of this prefix that have lazyfs mounts (by the mounts' source names)."""
    pattern = re.compile(rf"raftlog-lazyfs-{re.escape(prefix)}(\d{{1,3}})n\d+")
    return {int(m.group(1)) for info in mounts() if (m := pattern.fullmatch(info.source))}


def _host_overlaps(subnet: ipaddress.IPv4Network) -> bool:
    """True when some host address or route already covers part of ``subnet``."""
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(route.get("dst", ""))
        if dst in ("", "default"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                return True
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                if ipaddress.ip_address(info["local"]) in subnet:
                    return True
    return False


# ---- the cluster --------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) into a TOML config")


def _toml_table(name: str, values: Mapping[str, object]) -> str:
    body = "".join(f"{key} = {_toml_value(v)}\n" for key, v in values.items())
    return f"[{name}]\n{body}"


@dataclass(slots=True)
class _Node:
    node_id: int
    ip: str
    namespace: str
    host_veth: str
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False


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
    ) -> None:
        if not 1 <= nodes <= NODES_MAX:
            raise ValueError(f"a namespaced cluster has 1 to {NODES_MAX} nodes, not {nodes}")
        _check_prefix(prefix)
        self.node_count = nodes
        self.python = python
        self.prefix = prefix
        self.partition_mode = partition_mode
        self.delete_run_dir = delete_run_dir
        self.stop_timeout_s = stop_timeout_s
        self.log_level = log_level
        self.lazyfs = lazyfs
        self.plaintext = plaintext
        self._security: ClientSecurity | None = None  # set by open(): the harness's TLS
        self._mounts: dict[int, LazyMount] = {}
        self._powered_off: set[int] = set()
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
        self.run_id = -1  # set by open()
        self.run_dir = Path()
        self._lock = threading.RLock()
        self._run_lock: _RunLock | None = None
        self._bridge: str | None = None
        self._nodes: dict[int, _Node] = {}
        self._cuts: set[tuple[int, int]] = set()  # (from, to): packets from → to are stopped
        self._opened = False
        self._closed = False
        self._saved_handlers: dict[int, Any] = {}

    # ---- names and addresses -------------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.node_count + 1))

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{self.run_id}.0/24")

    @property
    def host_ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.run_id}.{HOST_SUFFIX}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br{self.run_id}"

    def ip(self, node: int) -> str:
        self._require(node)
        return f"{SUBNET_PREFIX}.{self.run_id}.{node}"

    def address(self, node: int) -> str:
        """The broker's gRPC ``host:port``."""
        return f"{self.ip(node)}:{GRPC_PORT}"

    def raft_address(self, node: int) -> str:
        return f"{self.ip(node)}:{RAFT_PORT}"

    def namespace(self, node: int) -> str:
        self._require(node)
        return f"{self.prefix}{self.run_id}n{node}"

    @property
    def bootstrap(self) -> str:
        """Every broker's gRPC address, comma-separated (``raftlog.client`` bootstrap)."""
        return ",".join(self.address(i) for i in self.node_ids)

    def config_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.toml"

    def log_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.log"

    def data_dir(self, node: int) -> Path:
        return self.run_dir / f"node{node}"

    def boot_id_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.boot_id"

    def lazyfs_backing(self, node: int) -> Path:
        return self.run_dir / "lazyfs" / f"node{node}"

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
        self._install_signal_handlers()
        try:
            self.open()
        except BaseException:
            self._restore_signal_handlers()
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
            self._restore_signal_handlers()

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
                if not self.plaintext:
                    self._make_certificates()
                self._build_network()
                for node in self.node_ids:
                    self._new_boot_id(node)
                    if self.lazyfs:
                        self._mount(node)
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
        taken = _names_by_run(self.prefix)
        start = (os.getpid() % RUN_ID_MAX) + 1
        for step in range(RUN_ID_MAX):
            run_id = (start + step - 1) % RUN_ID_MAX + 1
            if run_id in taken:
                continue  # leftovers (or a live run): cleanup_stale() removes the former
            lock = _RunLock(self.prefix, run_id)
            if not lock.try_acquire():
                continue
            self.run_id = run_id
            if _host_overlaps(self.subnet):
                lock.release()
                continue
            created = _ip("link", "add", self.bridge, "type", "bridge", check=False)
            if created.returncode != 0:
                lock.release()
                if "Operation not permitted" in created.stderr:
                    raise NetnsUnavailableError(
                        f"chaos needs root and iproute2 (ip netns): {created.stderr.strip()}"
                    )
                continue
            self._run_lock = lock
            self._bridge = self.bridge
            return
        self.run_id = -1
        raise NetnsError(
            f"no free run id among 1..{RUN_ID_MAX} for prefix {self.prefix!r}: "
            "remove leftovers with raftlog.chaos.netns.cleanup_stale()"
        )

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

    def _build_network(self) -> None:
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in self.node_ids:
            record = _Node(
                node, self.ip(node), self.namespace(node), f"{self.prefix}{self.run_id}v{node}"
            )
            self._nodes[node] = record
            ns = record.namespace
            done = _ip("netns", "add", ns, check=False)
            if done.returncode != 0:
                del self._nodes[node]
                raise NetnsError(f"`ip netns add {ns}` failed: {done.stderr.strip()}")
            _ip(
                "link", "add", record.host_veth, "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            _ip("link", "set", record.host_veth, "master", self.bridge)
            _ip("link", "set", record.host_veth, "up")
            drop_hop = f"{SUBNET_PREFIX}.{self.run_id}.{DROP_HOP_SUFFIX}"
            inside = (
                f"link set lo up\naddr add {record.ip}/24 dev eth0\nlink set eth0 up\n"
                f"neigh replace {drop_hop} lladdr {DROP_HOP_MAC} dev eth0 nud permanent\n"
            )
            _ip("-n", ns, "-batch", "-", stdin=inside)

    def _write_config(self, node: int) -> None:
        voters = "".join(
            f'[[voters]]\nid = {i}\nraft = "{self.raft_address(i)}"\ngrpc = "{self.address(i)}"\n\n'
            for i in self.node_ids
        )
        all_tables = {**self._tables, "security": self._security_table(node)}
        tables = "\n".join(_toml_table(name, values) for name, values in all_tables.items())
        text = (
            f"# written by raftlog.chaos.netns for run {self.run_id}\n"
            f"node_id = {node}\n"
            f'data_dir = "node{node}"\n'
            f'boot_id_file = "{self.boot_id_path(node).name}"\n'
            f"cluster_secret = {_toml_value(self.secret)}\n\n"
            f'[listen]\ngrpc = "{self.address(node)}"\nraft = "{self.raft_address(node)}"\n\n'
            f"{voters}{tables}"
        )
        try:
            parse_config(tomllib.loads(text), base_dir=self.run_dir)
        except (ConfigFileError, tomllib.TOMLDecodeError) as exc:
            raise NetnsError(f"the config for node {node} is invalid: {exc}") from exc
        self.config_path(node).write_text(text)

    # ---- processes -----------------------------------------------------------------------------

    def _spawn(self, node: int) -> None:
        record = self._nodes[node]
        config = str(self.config_path(node))
        broker = [self.python, "-m", "raftlog.cluster", "--config", config]
        argv = ["ip", "netns", "exec", record.namespace, *broker, "--log-level", self.log_level]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path(node), "ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"--- raftlog.chaos.netns: starting node {node} at {stamp} ---\n".encode())
            out.flush()
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                env=env,
                start_new_session=True,
            )
        record.process = process
        record.paused = False
        self._verify_exec(node, process)

    def _verify_exec(self, node: int, process: subprocess.Popen[bytes]) -> None:
        """Wait until the PID runs our Python inside the node's namespace (ip exec'd it)."""
        own_netns = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + PROCESS_EXEC_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise NetnsError(
                    f"broker {node} exited at once (code {process.returncode}); its log ends:\n"
                    f"{self.logs(node)}"
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
            process = self._nodes[node].process if node in self._nodes else None
            if process is None or process.poll() is not None:
                return None
            return process.pid

    def is_running(self, node: int) -> bool:
        """The broker process exists (a paused one counts as running)."""
        return self.pid(node) is not None

    def is_paused(self, node: int) -> bool:
        with self._lock:
            return self.is_running(node) and self._nodes[node].paused

    def running(self) -> list[int]:
        return [i for i in self.node_ids if self.is_running(i)]

    def start(self, node: int) -> int:
        """Start a stopped broker (same config and data); return its PID. Does not wait."""
        with self._lock:
            self._require_open()
            if self.is_running(node):
                raise NetnsError(f"broker {node} is already running (pid {self.pid(node)})")
            mount = self._mounts.get(node)
            if node not in self._powered_off and mount is not None and mount.daemon_pid() is None:
                # the lazyfs daemon died under the broker: for the disk, that is a power loss
                logger.warning("node %d: its lazyfs daemon died; treating it as a power loss", node)
                mount.crash()
                self._powered_off.add(node)
            if node in self._powered_off:  # a boot: the disk comes back, with a new boot id
                self._mount(node)
                self._new_boot_id(node)
                self._powered_off.discard(node)
                logger.info("node %d powered on (boot id %s)", node, self.boot_id(node))
            self._spawn(node)
            pid = self.pid(node)
            if pid is None:
                raise NetnsError(f"broker {node} exited right after starting:\n{self.logs(node)}")
            return pid

    def kill(self, node: int, timeout_s: float = 10.0) -> None:
        """SIGKILL the broker (a crash) and reap it."""
        with self._lock:
            record = self._running_record(node)
            assert record.process is not None
            record.process.send_signal(signal.SIGKILL)
            self._reap(record, timeout_s)

    def stop(self, node: int, timeout_s: float | None = None) -> bool:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. True when it stopped cleanly."""
        with self._lock:
            record = self._running_record(node)
            assert record.process is not None
            record.process.send_signal(signal.SIGTERM)
            if record.paused:
                record.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on TERM
                record.paused = False
            try:
                record.process.wait(self.stop_timeout_s if timeout_s is None else timeout_s)
                return True
            except subprocess.TimeoutExpired:
                logger.warning("broker %d ignored SIGTERM; sending SIGKILL", node)
                record.process.send_signal(signal.SIGKILL)
                self._reap(record, 10.0)
                return False

    # ---- storage: boot ids, lazyfs, power loss, damaged files ------------------------------------

    def boot_id(self, node: int) -> str:
        return self.boot_id_path(node).read_text().strip()

    def _new_boot_id(self, node: int) -> None:
        path = self.boot_id_path(node)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{uuid.uuid4()}\n")
        os.replace(tmp, path)

    def _mount(self, node: int) -> None:
        mount = LazyMount(
            self.lazyfs_backing(node),
            self.data_dir(node),
            fsname=f"{_lazyfs_source_prefix(self.prefix, self.run_id)}{node}",
            # durable/ is kept for a *simulated* power loss; the host itself does not lose
            # power in a run, so its page cache holds durable/ safely and fsyncing it there
            # would only put the host disk's latency into every broker fsync
            host_fsync=False,
        )
        self._mounts[node] = mount
        try:
            mount.mount()
        except LazyMountError as exc:
            raise NetnsError(f"node {node}: {exc}") from exc

    def is_powered_off(self, node: int) -> bool:
        with self._lock:
            self._require(node)
            return node in self._powered_off

    def power_off(self, node: int) -> dict[str, Any]:
        """Power loss: SIGKILL the broker (if running) and drop every write its disk had not
        made durable (lazyfs). The node stays off until ``start`` (= power on). Returns what
        the disk lost, for the fault record."""
        with self._lock:
            self._require_open()
            self._require(node)
            if node not in self._mounts:
                raise NetnsError("power loss needs the data dirs on lazyfs (lazyfs=True)")
            if node in self._powered_off:
                raise NetnsError(f"node {node} is already powered off")
            was_running = self.is_running(node)
            if was_running:
                self.kill(node)
            try:
                stats = self._mounts[node].crash()
            except Exception as exc:
                raise NetnsError(f"power loss of node {node}: {exc}") from exc
            self._powered_off.add(node)
            logger.info("node %d powered off: %s", node, stats.text())
            return {
                "node": node,
                "was_running": was_running,
                "files_before": stats.live_files,
                "bytes_before": stats.live_bytes,
                "files_after": stats.durable_files,
                "bytes_after": stats.durable_bytes,
            }

    def power_on(self, node: int) -> int:
        """Boot a powered-off node: its disk mounted again, a new boot id, the broker started."""
        return self.start(node)

    def data_files(self, node: int) -> list[tuple[str, int]]:
        """(path relative to the data dir, size) of the node's segment logs and indexes."""
        with self._lock:
            self._require(node)
            if node in self._powered_off:
                return []
            return data_files(self.data_dir(node))

    def damage_file(self, node: int, damage: Damage) -> dict[str, Any]:
        """Apply ``damage`` to a stopped broker's file (and to its durable copy on lazyfs)."""
        with self._lock:
            self._require_open()
            if self.is_running(node):
                raise NetnsError(f"broker {node} must be stopped before its files are damaged")
            if node in self._powered_off:
                raise NetnsError(f"node {node} is powered off")
            path = self.data_dir(node) / damage.path
            try:
                changed = apply_damage(path, damage)
                durable = (
                    durable_path(self.lazyfs_backing(node), damage.path)
                    if node in self._mounts
                    else None
                )
                durable_changed = durable is not None and apply_damage(durable, damage)
            except OSError as exc:
                raise NetnsError(f"damaging {path}: {exc}") from exc
            logger.info("node %d: %s (durable copy too: %s)", node, damage.text(), durable_changed)
            return {**damage.to_json(), "changed": changed, "durable_changed": durable_changed}

    def pause(self, node: int) -> None:
        """SIGSTOP the broker (a GC pause / frozen VM); returns once the kernel stopped it."""
        with self._lock:
            record = self._running_record(node)
            assert record.process is not None
            record.process.send_signal(signal.SIGSTOP)
            record.paused = True
            self._wait_state(record.process.pid, lambda state: state in ("T", "Z", None))

    def resume(self, node: int) -> None:
        """SIGCONT a paused broker; returns once it runs again."""
        with self._lock:
            record = self._running_record(node)
            assert record.process is not None
            record.process.send_signal(signal.SIGCONT)
            record.paused = False
            self._wait_state(record.process.pid, lambda state: state != "T")

    @staticmethod
    def _wait_state(pid: int, reached: Callable[[str | None], bool]) -> None:
        """Signals land asynchronously; wait (bounded) until /proc shows their effect."""
        deadline = time.monotonic() + SIGNAL_EFFECT_TIMEOUT_S
        while not reached(_process_state(pid)):
            if time.monotonic() >= deadline:
                raise NetnsError(
                    f"pid {pid} still in state {_process_state(pid)} "
                    f"{SIGNAL_EFFECT_TIMEOUT_S} s after the signal"
                )
            time.sleep(0.005)

    def _running_record(self, node: int) -> _Node:
        self._require_open()
        if not self.is_running(node):
            raise NetnsError(f"broker {node} is not running")
        return self._nodes[node]

    def _require_open(self) -> None:
        if not self._opened or self._closed:
            raise NetnsError("the chaos cluster is not open")

    @staticmethod
    def _reap(record: _Node, timeout_s: float) -> None:
        assert record.process is not None
        try:
            record.process.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(
                f"broker {record.node_id} (pid {record.process.pid}) did not die within "
                f"{timeout_s} s of SIGKILL"
            ) from exc
        record.paused = False

    def exec_in(
        self, node: int, argv: Sequence[str], timeout_s: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a short helper command inside a node's namespace (killed after ``timeout_s``)."""
        with self._lock:
            self._require_open()
            namespace = self.namespace(node)
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

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
        try:
            text = self.log_path(node).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- the network: partitions -----------------------------------------------------------------

    @property
    def cuts(self) -> frozenset[tuple[int, int]]:
        """The one-way cuts in force: (a, b) means packets from a to b are stopped."""
        with self._lock:
            return frozenset(self._cuts)

    def partition(self, groups: Sequence[Set[int]]) -> None:
        """Nodes in different groups exchange no packets; the host still reaches all of them.

        Groups must be disjoint; nodes named in no group form one more group together (so
        ``partition([{1}])`` isolates node 1). Replaces any partition in force.
        """
        self.apply_cuts(_cuts_for_groups(self.node_ids, groups))

    def isolate(self, node: int) -> None:
        self._require(node)
        self.partition([{node}])

    def apply_grudge(self, grudge: Mapping[int, Iterable[int]]) -> None:
        """Jepsen's grudge: node → the nodes whose packets it drops (one-way). Replaces any cut."""
        cuts = set()
        for receiver, senders in grudge.items():
            self._require(receiver)
            for sender in senders:
                self._require(sender)
                if sender != receiver:
                    cuts.add((sender, receiver))
        self.apply_cuts(cuts)

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
            commands: dict[int, list[str]] = {}
            for a, b in sorted(self._cuts - wanted):
                commands.setdefault(a, []).append(f"route del {self.ip(b)}/32")
            for a, b in sorted(wanted - self._cuts):
                commands.setdefault(a, []).append(f"route replace {self._cut_route(b)}")
            for a, lines in sorted(commands.items()):
                _ip("-n", self.namespace(a), "-batch", "-", stdin="\n".join(lines) + "\n")
            self._cuts = wanted
        logger.info("network cuts now %s", sorted(wanted) or "none")

    def _cut_route(self, target: int) -> str:
        dst = f"{self.ip(target)}/32"
        if self.partition_mode is PartitionMode.DROP:
            return f"{dst} via {SUBNET_PREFIX}.{self.run_id}.{DROP_HOP_SUFFIX} dev eth0"
        return f"{self.partition_mode.value} {dst}"

    def heal(self) -> None:
        """Remove every peer route from every namespace (recorded or not)."""
        with self._lock:
            self._require_open()
            peers = {self.ip(i) for i in self.node_ids}
            for node in self.node_ids:
                ns = self.namespace(node)
                routes = _ip_json("-n", ns, "-4", "route", "show")
                stale = {str(r.get("dst", "")).removesuffix("/32") for r in routes} & peers
                if stale:
                    lines = "".join(f"route del {dst}/32\n" for dst in sorted(stale))
                    _ip("-n", ns, "-batch", "-", stdin=lines)
            self._cuts = set()
        logger.info("network healed")

    # ---- readiness and probes --------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 60.0, nodes: Iterable[int] | None = None) -> None:
        """Until each (given) broker answers Metadata, a controller exists, and the controller
        lists them registered, unfenced and alive. Raises NetnsError (with a log tail) when a
        broker exits or the time runs out."""
        wanted = set(self.node_ids if nodes is None else nodes)
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        # our own channels, reconnecting every ≤0.5 s: gRPC's default backoff (1 s growing to
        # 120 s) would notice a restarted broker seconds late
        security = self.security
        channels = {
            n: security.channel(self.address(n), options=_PROBE_CHANNEL_OPTIONS) for n in wanted
        }
        with (
            Admin(self.bootstrap, timeout_s=2.0, security=security) as admin,
            contextlib.ExitStack() as stack,
        ):
            for channel in channels.values():
                stack.callback(channel.close)
            while True:
                with self._lock:
                    dead = sorted(i for i in wanted if not self.is_running(i))
                if dead:
                    raise NetnsError(
                        f"broker {dead[0]} is not running; its log ends:\n{self.logs(dead[0])}"
                    )
                try:
                    silent = []
                    for node in sorted(wanted):
                        try:
                            broker_pb2_grpc.BrokerStub(channels[node]).Metadata(
                                broker_pb2.MetadataRequest(), timeout=1.0
                            )
                        except grpc.RpcError:
                            silent.append(node)
                    cluster = admin.describe_cluster()
                    live = {b.broker_id for b in cluster.brokers if not b.fenced and b.alive}
                    if not silent and cluster.controller_id >= 0 and wanted <= live:
                        return
                    last = (
                        f"not answering Metadata: {silent or 'none'}; live brokers "
                        f"{sorted(live)}; controller {cluster.controller_id}"
                    )
                except Exception as exc:  # not up yet: every kind of error means "keep waiting"
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise NetnsError(
                        f"brokers {sorted(wanted)} not ready within {timeout_s:.0f} s ({last})"
                    )
                time.sleep(0.2)

    def metadata_answers(
        self, topics: Sequence[str] = (), timeout_s: float = 1.0
    ) -> dict[int, broker_pb2.MetadataResponse]:
        """Each running, unpaused broker's own Metadata answer (the silent ones left out)."""
        with self._lock:
            asked = [n for n in self.node_ids if self.is_running(n) and not self.is_paused(n)]
        answers = {}
        security = self.security
        for node in asked:
            with security.channel(self.address(node)) as channel:
                try:
                    answers[node] = broker_pb2_grpc.BrokerStub(channel).Metadata(
                        broker_pb2.MetadataRequest(topics=list(topics)), timeout=timeout_s
                    )
                except grpc.RpcError:
                    continue
        return answers

    def controller(self, timeout_s: float = 1.0) -> int | None:
        """The active controller as the most up-to-date broker reports it (None: unknown).

        Every broker is asked: a broker just back from a partition answers from stale metadata
        for a while, so the answer with the highest metadata version wins."""
        answers = [a for a in self.metadata_answers((), timeout_s).values() if a.controller_id >= 0]
        if not answers:
            return None
        controller_id = int(max(answers, key=lambda a: a.metadata_version).controller_id)
        return controller_id if controller_id in self.node_ids else None

    def leaders(self, topics: Sequence[str] = (), timeout_s: float = 1.0) -> frozenset[int]:
        """The brokers leading at least one partition of ``topics`` (all topics when empty).

        Per partition, the answer with the highest leader epoch wins: an isolated or stale
        broker keeps naming an old leader (often itself)."""
        best: dict[tuple[str, int], tuple[int, int]] = {}  # (topic, partition) → (epoch, leader)
        for answer in self.metadata_answers(topics, timeout_s).values():
            for topic in answer.topics:
                for p in topic.partitions:
                    key = (topic.name, p.partition)
                    if p.leader >= 0 and (key not in best or p.leader_epoch > best[key][0]):
                        best[key] = (p.leader_epoch, p.leader)
        return frozenset(leader for _, leader in best.values() if leader in self.node_ids)

    # ---- teardown --------------------------------------------------------------------------------

    def close(self, delete_run_dir: bool | None = None) -> None:
        """Stop every broker, remove namespaces, veths and the bridge; keep the run dir unless
        told. Idempotent; raises NetnsError if something of this run could not be removed."""
        with self._lock, self._signals_deferred():
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self._atexit_close)
            problems: list[str] = []
            try:
                self._stop_all(problems)
            finally:
                self._unmount_all(problems)
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

    def _stop_all(self, problems: list[str]) -> None:
        running = [r for r in self._nodes.values() if r.process and r.process.poll() is None]
        for record in running:
            assert record.process is not None
            with contextlib.suppress(ProcessLookupError):
                record.process.send_signal(signal.SIGTERM)
                if record.paused:
                    record.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + self.stop_timeout_s
        for record in running:
            assert record.process is not None
            try:
                record.process.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                record.process.send_signal(signal.SIGKILL)
                try:
                    record.process.wait(10.0)
                except subprocess.TimeoutExpired:
                    problems.append(f"broker {record.node_id} (pid {record.process.pid}) lives on")
            record.paused = False

    def _unmount_all(self, problems: list[str]) -> None:
        """Clean unmounts (each daemon syncs and exits); a failure aborts that mount instead."""
        for node, mount in sorted(self._mounts.items()):
            try:
                mount.unmount()
            except Exception as exc:
                problems.append(f"lazyfs of node {node}: {exc}")
                mount.close()  # aborts and detaches; never raises
        self._mounts.clear()

    def _remove_network(self, problems: list[str]) -> None:
        if self.run_id <= 0 or self._run_lock is None:
            return  # never claimed a run id: nothing of ours exists
        ours = _names_by_run(self.prefix).get(self.run_id, set())
        ours |= {("netns", r.namespace) for r in self._nodes.values()}
        ours |= {("link", r.host_veth) for r in self._nodes.values()}
        if self._bridge is not None:
            ours.add(("link", self._bridge))
        existing = _namespaces() | _links()
        _delete_run_resources({(kind, name) for kind, name in ours if name in existing})
        left = sorted(name for _, name in _names_by_run(self.prefix).get(self.run_id, set()))
        if left:
            problems.append(f"still present: {', '.join(left)}")
        self._cuts = set()

    def _atexit_close(self) -> None:
        try:
            self.close()
        except Exception as exc:  # the interpreter is exiting; say it, do not raise
            print(f"raftlog.chaos.netns: {exc}", file=sys.stderr)

    # ---- signals ---------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Inside the ``with``: SIGTERM raises SystemExit and SIGINT KeyboardInterrupt, so
        ``__exit__`` always runs (the default SIGTERM action would skip it)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved_handlers[signum] = signal.signal(signum, on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._saved_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._saved_handlers.clear()

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """Hold SIGINT/SIGTERM during clean-up (a second Ctrl-C must not leave half a network);
        re-deliver one afterwards unless an exception is already on its way out."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        received: list[int] = []

        def remember(signum: int, frame: FrameType | None) -> None:
            received.append(signum)

        saved = {s: signal.signal(s, remember) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            if received and sys.exc_info()[0] is None:
                signal.raise_signal(received[0])


def _cuts_for_groups(nodes: Sequence[int], groups: Sequence[Set[int]]) -> set[tuple[int, int]]:
    """Both-direction cuts between every pair of nodes in different groups."""
    seen: set[int] = set()
    components: list[set[int]] = []
    for group in groups:
        group = set(group)
        unknown = group - set(nodes)
        if unknown:
            raise ValueError(f"unknown node(s) {sorted(unknown)} in partition groups")
        if group & seen:
            raise ValueError(f"partition groups overlap on {sorted(group & seen)}")
        seen |= group
        if group:
            components.append(group)
    rest = set(nodes) - seen
    if rest:
        components.append(rest)
    component_of = {n: i for i, c in enumerate(components) for n in c}
    return {(a, b) for a in nodes for b in nodes if component_of[a] != component_of[b]}
