"""A local cluster of 1–5 brokers on loopback, as background processes under one directory.

``raftlog cluster up|down|kill|start`` and ``make demo`` use it. Layout of ``--dir`` (default
``.raftlog``)::

    cluster.json        bootstrap, base port, plaintext or not, and per node: id, grpc/raft
                        address, pid
    secret              the cluster secret (mode 0600), made once
    tls/                the cluster CA, a certificate per broker and the ``admin`` client
                        certificate (``raftlog.client.certs``), made once; ``User:admin`` is
                        the cluster's super user. ``up(plaintext=True)`` (``cluster up
                        --plaintext``) makes none and configures plaintext listeners.
    node<i>.toml        each broker's config (documented in raftlog.cluster.config)
    node<i>.log         each broker's stdout/stderr
    node<i>/            each broker's data (logs, LMDB state, Raft journal)

Node i listens for gRPC on ``base_port + i - 1``, for Raft on ``base_port + 100 + i - 1`` and for
the Kafka protocol on ``base_port + 400 + i - 1``, all on 127.0.0.1. Processes are started in their
own session so a terminal's Ctrl-C does not reach them; they are stopped by PID, and only after
checking that the PID still runs *our* config (a recycled PID of some other program is never
signalled). Starting, signalling and waiting are ``processes.py``'s, shared with the chaos harness;
the config text is ``broker_config.py``'s.

``up`` records each broker in ``cluster.json`` as soon as it is started, and if anything fails
part-way (a broker that exits at start, a full disk refusing a log or the state file, a timeout)
it stops every broker *it* started, by the PIDs it holds, before reporting the failure. ``down``
stops the recorded brokers and also any process still running one of this directory's
``node<i>.toml`` configs (found in ``/proc``), so a record lost to a full disk leaves no broker
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from .broker_config import Voter, broker_config_text
from .certs import CertificateAuthority
from .processes import (
    BrokerExitedError,
    BrokerNotReadyError,
    BrokerProcess,
    is_dead,
    log_tail,
    port_free,
    start_broker,
    stop_all,
    wait_until_ready,
)
from .security import ClientSecurity

__all__ = ["NODES_MAX", "LocalCluster", "LocalClusterError", "LocalNode"]

NODES_MAX = 9  # loopback ports: base_port + 0..8, + 100.., + 200.., + 300.., + 400..


class LocalClusterError(Exception):
    """Something an operator can act on: a port in use, a cluster already running, ..."""


@dataclass(slots=True)
class LocalNode:
    node_id: int
    grpc: str
    raft: str
    pid: int = -1
    grpc_password: str = ""  # the password listener (base_port + 200 + i - 1), when asked for
    metrics: str = ""  # Prometheus /metrics over HTTP (base_port + 300 + i - 1)
    kafka: str = ""  # the Kafka-protocol listener (base_port + 400 + i - 1)
    voter: bool = True  # a metadata-quorum voter; else an observer (no Raft listener)


class LocalCluster:
    """The brokers of one directory. Not thread-safe: one command at a time."""

    def __init__(self, directory: str | Path = ".raftlog") -> None:
        self.dir = Path(directory).resolve()
        self.nodes: dict[int, LocalNode] = {}
        self.base_port = 9092
        self.plaintext = False
        self._children: dict[int, BrokerProcess] = {}  # pid → what this process started
        self._load()

    # ---- state -----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def bootstrap(self) -> str:
        return ",".join(n.grpc for n in self.nodes.values())

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        try:
            body = json.loads(self.state_file.read_text())
            self.base_port = int(body["base_port"])
            self.plaintext = bool(body.get("plaintext", False))
            self.nodes = {int(n["node_id"]): LocalNode(**n) for n in body["nodes"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalClusterError(f"{self.state_file} is damaged ({exc}); remove it") from exc

    def _save(self) -> None:
        body = {
            "bootstrap": self.bootstrap,
            "base_port": self.base_port,
            "plaintext": self.plaintext,
            "nodes": [asdict(n) for n in self.nodes.values()],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    @property
    def password_bootstrap(self) -> str:
        """The password listeners (``up(password_listener=True)``), for SCRAM users."""
        return ",".join(n.grpc_password for n in self.nodes.values() if n.grpc_password)

    def password_security(self, user: str, password: str) -> ClientSecurity:
        """TLS to the password listeners as SCRAM user ``user`` (``Admin.upsert_user``)."""
        return ClientSecurity.with_password(self.tls_dir / "ca.pem", user, password)

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def security(self) -> ClientSecurity:
        """How a client reaches this cluster: its CA and the super user ``admin``'s
        certificate (or plaintext for a ``--plaintext`` cluster)."""
        return self.client_security("admin")

    def client_security(self, name: str) -> ClientSecurity:
        """The security of client ``name`` (its certificate is made on first use)."""
        if self.plaintext:
            return ClientSecurity.plaintext()
        ca_file, cert_file, key_file = self._client_files(name)
        return ClientSecurity.from_files(ca_file, cert_file, key_file)

    def _client_files(self, name: str) -> tuple[Path, Path, Path]:
        """(CA, certificate, key) files of client ``name``, its certificate made on first use."""
        ca = CertificateAuthority(self.tls_dir)
        pair = ca.client_pair(name)
        if not pair.cert_file.exists():
            pair = ca.issue_client(name)
        return ca.ca_file, pair.cert_file, pair.key_file

    @property
    def kafka_bootstrap(self) -> str:
        """The Kafka-protocol listeners, for Kafka clients (``bootstrap.servers``)."""
        return ",".join(n.kafka for n in self.nodes.values() if n.kafka)

    def kafka_client_config(self, name: str = "admin") -> dict[str, str]:
        """librdkafka-style properties a Kafka client needs to reach this cluster as client
        ``name`` (its certificate is made on first use): ``bootstrap.servers`` and, unless the
        cluster is plaintext, TLS with the cluster CA and the client's certificate (a SCRAM user
        uses ``security.protocol = SASL_SSL`` with ``sasl.mechanism`` and its credentials
        instead of the certificate)."""
        config = {"bootstrap.servers": self.kafka_bootstrap}
        if self.plaintext:
            config["security.protocol"] = "PLAINTEXT"
            return config
        ca_file, cert_file, key_file = self._client_files(name)
        config.update(
            {
                "security.protocol": "SSL",
                "ssl.ca.location": str(ca_file),
                "ssl.certificate.location": str(cert_file),
                "ssl.key.location": str(key_file),
            }
        )
        return config

    def to_json(self) -> dict[str, object]:
        return {
            "bootstrap": self.bootstrap,
            "kafka_bootstrap": self.kafka_bootstrap,
            "kafka_client_config": self.kafka_client_config() if self.kafka_bootstrap else None,
            "dir": str(self.dir),
            "brokers": [
                {
                    "id": n.node_id,
                    "address": n.grpc,
                    "kafka_address": n.kafka or None,
                    "voter": n.voter,
                    "pid": n.pid if self.is_running(n.node_id) else None,
                    "metrics_url": f"http://{n.metrics}/metrics" if n.metrics else None,
                }
                for n in self.nodes.values()
            ],
        }

    # ---- processes -------------------------------------------------------------------------

    def config_path(self, node_id: int) -> Path:
        return self.dir / f"node{node_id}.toml"

    def log_path(self, node_id: int) -> Path:
        return self.dir / f"node{node_id}.log"

    def is_running(self, node_id: int) -> bool:
        """True when the recorded PID is alive *and* runs this node's config."""
        process = self._process(node_id)
        return process is not None and process.alive()

    def _process(self, node_id: int) -> BrokerProcess | None:
        """The recorded broker of a node: our child (asked through its Popen: it may not have
        exec'd yet), or a PID another command started, ours while it runs this node's config."""
        node = self.nodes.get(node_id)
        if node is None or node.pid <= 0:
            return None
        child = self._children.get(node.pid)
        if child is not None:
            return child
        config = str(self.config_path(node_id)).encode()

        def runs_config(pid: int) -> bool:
            try:
                return config in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False

        return BrokerProcess(node_id, node.pid, runs_ours=runs_config)

    def running(self) -> list[int]:
        return [i for i in self.nodes if self.is_running(i)]

    def up(
        self,
        nodes: int = 3,
        base_port: int = 9092,
        *,
        timeout_s: float = 60.0,
        settings: dict[str, dict[str, object]] | None = None,
        plaintext: bool = False,
        password_listener: bool = False,
        metrics: bool = True,
        kafka: bool = True,
        voters: int | None = None,
    ) -> None:
        """Write configs and start ``nodes`` brokers; wait until all are registered and live.

        The first ``voters`` brokers (default: 3, or every broker of a smaller cluster) form the
        metadata quorum; the others observe it (``raftlog.cluster.metadata_observer``).

        Secure by default: mutual TLS with a CA made here; ``plaintext`` only when asked.
        ``password_listener`` also opens each broker's password listener (TLS without client
        certificates, for SCRAM users) on ``base_port + 200 + i - 1``; ``metrics`` (the default)
        serves each broker's Prometheus ``/metrics`` on ``base_port + 300 + i - 1``; ``kafka``
        (the default) opens each broker's Kafka-protocol listener on ``base_port + 400 + i - 1``."""
        if password_listener and plaintext:
            raise LocalClusterError("a password listener needs TLS")
        if not 1 <= nodes <= NODES_MAX:
            raise LocalClusterError(f"a local cluster has 1 to {NODES_MAX} nodes")
        voter_count = min(nodes, 3) if voters is None else voters
        if not 1 <= voter_count <= min(nodes, 5):
            raise LocalClusterError(f"--voters must be 1 to {min(nodes, 5)} (3 or 5 in production)")
        if self.running():
            raise LocalClusterError(
                f"a cluster is already running in {self.dir} (nodes {self.running()}); "
                "run `raftlog cluster down` first"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.nodes and (
            len(self.nodes) != nodes
            or self.base_port != base_port
            or sum(n.voter for n in self.nodes.values()) != voter_count
        ):
            raise LocalClusterError(
                f"{self.dir} holds a {len(self.nodes)}-node cluster "
                f"({sum(n.voter for n in self.nodes.values())} voters) on port "
                f"{self.base_port}: start it with the same --nodes/--voters/--base-port, or use "
                "another --dir"
            )
        self.base_port = base_port
        self.plaintext = plaintext
        self.nodes = {
            i: LocalNode(
                i,
                f"127.0.0.1:{base_port + i - 1}",
                f"127.0.0.1:{base_port + 99 + i}" if i <= voter_count else "",
                grpc_password=f"127.0.0.1:{base_port + 199 + i}" if password_listener else "",
                metrics=f"127.0.0.1:{base_port + 299 + i}" if metrics else "",
                kafka=f"127.0.0.1:{base_port + 399 + i}" if kafka else "",
                voter=i <= voter_count,
            )
            for i in range(1, nodes + 1)
        }
        busy = [
            port
            for n in self.nodes.values()
            for address in (n.grpc, n.raft, n.grpc_password, n.metrics, n.kafka)
            if address
            for port in (int(address.rsplit(":", 1)[1]),)
            if not port_free(port)
        ]
        if busy:
            raise LocalClusterError(
                f"port(s) {busy} on 127.0.0.1 are in use: pick another --base-port"
            )
        try:
            secret_file = self.dir / "secret"
            if not secret_file.exists():
                secret_file.write_text(secrets.token_hex(24) + "\n")
                secret_file.chmod(0o600)
            if not plaintext:
                ca = CertificateAuthority(self.tls_dir)
                ca.create(f"raftlog {self.dir.name}")
                for node in self.nodes.values():
                    ca.issue_broker(node.node_id, ["127.0.0.1", "localhost"])
                ca.issue_client("admin")
            for node in self.nodes.values():
                self.config_path(node.node_id).write_text(self._config(node, settings or {}))
        except OSError as exc:  # nothing started yet
            raise LocalClusterError(
                f"cannot write the cluster's files in {self.dir}: {exc}"
            ) from exc
        started = len(self._children)
        try:
            for node_id in self.nodes:
                self._spawn(node_id)
                self._save()  # recorded at once: `cluster down` finds it whatever happens next
            self.wait_ready(timeout_s)
        except BaseException as exc:
            # a cluster that never became ready is not left running: stop every broker this
            # call started, by PID, even when the state file could not be written
            self._stop_children(list(self._children.values())[started:])
            with contextlib.suppress(OSError):
                self._save()
            if isinstance(exc, OSError):
                raise LocalClusterError(
                    f"starting the cluster failed ({exc}); every broker it started is stopped"
                ) from exc
            raise

    def _stop_children(self, children: list[BrokerProcess], timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``, the processes this object started."""
        stop_all(children, timeout_s, kill_timeout_s=5.0)

    def _config(self, node: LocalNode, settings: dict[str, dict[str, object]]) -> str:
        """A node's TOML; ``settings`` overrides tables, e.g. {"timeouts": {...}}."""
        tables: dict[str, dict[str, object]] = {
            "timeouts": {
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 200,
                "replica_lag_ms_max": 10000,
            },
            "security": (
                {"protocol": "plaintext"}
                if self.plaintext
                else {
                    "protocol": "tls",
                    "ca_file": "tls/ca.pem",
                    "cert_file": f"tls/broker-{node.node_id}.pem",
                    "key_file": f"tls/broker-{node.node_id}.key",
                    "super_users": ["User:admin"],
                }
            ),
            "topic_defaults": {
                "partitions": 3,
                "replication_factor": min(3, len(self.nodes)),
                "min_insync_replicas": min(2, len(self.nodes)),
            },
        }
        for table, values in settings.items():
            tables.setdefault(table, {}).update(values)
        listen = {"grpc": node.grpc}
        if node.voter:
            listen["raft"] = node.raft
        if node.grpc_password:
            listen["grpc_password"] = node.grpc_password
        if node.kafka:
            listen["kafka"] = node.kafka
        return broker_config_text(
            comment="written by `raftlog cluster up`; see raftlog.cluster.config for every setting",
            top={
                "node_id": node.node_id,
                "data_dir": f"node{node.node_id}",
                "cluster_secret_file": "secret",
                **({"metrics_address": node.metrics} if node.metrics else {}),
            },
            listen=listen,
            voters=[Voter(n.node_id, n.raft, n.grpc) for n in self.nodes.values() if n.voter],
            tables=tables,
        )

    def _spawn(self, node_id: int) -> None:
        process = start_broker(
            node_id, self.config_path(node_id), self.log_path(node_id), cwd=self.dir
        )
        self.nodes[node_id].pid = process.pid
        self._children[process.pid] = process

    def wait_ready(self, timeout_s: float = 60.0, *, nodes: list[int] | None = None) -> None:
        """Until every (given) node is registered, unfenced and a controller is active."""
        wanted = set(nodes or self.nodes)
        try:
            wait_until_ready(
                self.bootstrap,
                self.security,
                wanted,
                timeout_s,
                not_running=lambda: [i for i in wanted if not self.is_running(i)],
            )
        except BrokerExitedError as exc:
            tail = self.tail(exc.node_id)
            raise LocalClusterError(f"broker {exc.node_id} exited; its log ends:\n{tail}") from exc
        except BrokerNotReadyError as exc:
            raise LocalClusterError(
                f"the cluster was not ready within {timeout_s:.0f} s ({exc.last})"
            ) from exc

    def tail(self, node_id: int, lines: int = 15) -> str:
        return log_tail(self.log_path(node_id), lines)

    def kill(self, node_id: int) -> None:
        """SIGKILL one broker (a crash, for demos and tests)."""
        self._require(node_id)
        process = self._process(node_id)
        if process is None or not process.alive():
            raise LocalClusterError(f"broker {node_id} is not running")
        process.kill(5.0)

    def start(self, node_id: int, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        self._require(node_id)
        if self.is_running(node_id):
            raise LocalClusterError(f"broker {node_id} is already running")
        self._spawn(node_id)
        self._save()
        if wait:
            self.wait_ready(timeout_s, nodes=[node_id])

    def down(self, timeout_s: float = 15.0) -> list[int]:
        """SIGTERM every running broker, SIGKILL those that do not stop in time.

        Besides the recorded PIDs, any process running one of this directory's node configs
        counts (a broker whose record was lost); its node id is in the returned list.
        """
        found: dict[int, BrokerProcess] = {}
        for node_id in self.running():
            recorded = self._process(node_id)
            assert recorded is not None  # running
            found[node_id] = recorded
        for pid, node_id in self._unrecorded().items():
            process = self._children.get(pid) or BrokerProcess(
                node_id, pid, runs_ours=lambda pid: self._config_owner(pid) is not None
            )
            found.setdefault(node_id, process)
            if found[node_id].pid != pid:  # two processes on one node's config: stop both
                found[-pid] = process
        stop_all(found.values(), timeout_s, kill_timeout_s=5.0)
        return sorted(node_id for node_id in found if node_id >= 0)

    def _config_owner(self, pid: int) -> int | None:
        """The node id whose config this live, non-zombie PID runs (of this directory), or None."""
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if is_dead(pid):
            return None
        prefix, suffix = os.fsencode(self.dir / "node"), b".toml"
        for arg in args:
            if arg.startswith(prefix) and arg.endswith(suffix):
                number = arg[len(prefix) : -len(suffix)]
                if number.isdigit() and b"raftlog.cluster" in args:
                    return int(number)
        return None

    def _unrecorded(self) -> dict[int, int]:
        """PID → node id of processes running this directory's configs (bounded by /proc)."""
        found = {}
        try:
            entries = os.listdir("/proc")
        except OSError:
            return {}
        for entry in entries:
            if entry.isdigit() and int(entry) != os.getpid():
                node_id = self._config_owner(int(entry))
                if node_id is not None:
                    found[int(entry)] = node_id
        return found

    def _require(self, node_id: int) -> None:
        if node_id not in self.nodes:
            raise LocalClusterError(
                f"no node {node_id} in {self.dir} (nodes: {sorted(self.nodes) or 'none'})"
            )
