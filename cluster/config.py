"""The broker's TOML config: who it is, where it listens, who the voters are, its timeouts.

A documented example (``raftlog broker --config node.toml``)::

    node_id = 1
    data_dir = "/var/lib/raftlog"            # logs, the LMDB state store, the Raft journal
    metrics_address = "10.0.0.1:9644"        # optional: Prometheus /metrics over plain HTTP
                                             # (read-only; bind it where only Prometheus reaches)
    cluster_secret = "change-me"             # or cluster_secret_file = "/etc/raftlog/secret"
    rack = "eu-1a"                           # optional; replicas spread across racks
    boot_id_file = "/proc/sys/kernel/random/boot_id"   # the default: tells a reboot (power
                                             # loss) from a process crash; see broker.py

    [listen]                                 # what this process binds
    grpc = "10.0.0.1:9092"
    raft = "10.0.0.1:9192"

    grpc_password = "10.0.0.1:9093"          # optional: TLS without client certificates, for
                                             # clients with a SCRAM user (`raftlog user add`)
    kafka = "10.0.0.1:9094"                  # optional: the Kafka wire protocol (Kafka clients,
                                             # kcat); TLS with an optional client certificate,
                                             # else SASL PLAIN / SCRAM (cluster/kafka_listener.py)

    [advertised]                             # what others dial (defaults to [listen])
    grpc = "10.0.0.1:9092"
    grpc_password = "10.0.0.1:9093"
    kafka = "10.0.0.1:9094"

    [[voters]]                               # the bootstrap members of the metadata quorum (3
                                             # or 5); once `raftlog quorum add-voter|remove-voter`
                                             # changed them, the Raft log and the metadata rule
    id = 1
    raft = "10.0.0.1:9192"
    grpc = "10.0.0.1:9092"
    # ... one [[voters]] table per member. A broker whose node_id is not among them is an
    # observer: it follows the metadata from the voters (cluster/metadata_observer.py), needs no
    # listen.raft, and serves partitions like any broker

    [timeouts]
    session_timeout_ms = 2000                # the controller fences a broker silent this long
    heartbeat_interval_ms = 200
    replica_lag_ms_max = 10000               # an ISR member not caught up for this long leaves
    replica_silence_ms_max = 2000            # ... and one with no fetch arriving for this long
    request_timeout_ms_max = 30000           # the longest a produce may wait for acks

    [storage]                                # broker-wide defaults; topic configs override
    segment_bytes = 268435456
    flush_messages = -1                      # -1: fsync on segment roll and close only
    flush_ms = -1
    hw_checkpoint_interval_ms = 2000
    log_cleaner_io_bytes_per_s = 10485760    # compaction's reads and writes together
    log_cleaner_interval_ms = 15000          # how often the cleaner looks for a dirty log

    [topic_defaults]                         # what `topic create` uses when not told
    partitions = 3
    replication_factor = 3
    min_insync_replicas = 2

    [security]                               # required; see raftlog.cluster.auth
    protocol = "tls"                         # or "plaintext", which must be said explicitly
    ca_file = "/etc/raftlog/tls/ca.pem"      # the cluster CA: peers and clients must chain to it
    cert_file = "/etc/raftlog/tls/broker-1.pem"   # this broker's certificate (SAN URI
    key_file = "/etc/raftlog/tls/broker-1.key"    #   raftlog://broker/1; `raftlog tls`)
    super_users = ["User:admin"]             # principals every ACL check allows

    [quotas]                                 # bytes/s per principal (-1: none); answers over
    producer_byte_rate = -1                  # it are held (throttle_time_ms), as in Kafka
    consumer_byte_rate = -1
    [quotas.principals."User:batch-loader"]  # per-principal overrides
    producer_byte_rate = 10485760

    [limits]                                 # what one request may cost (refused with a code)
    partitions_per_request_max = 200         # summed over the topics of one CreateTopics
    partitions_per_topic_max = 200           # INVALID_PARTITIONS above it
    partition_replicas_per_broker_max = 4000 # replicas one broker may hold (POLICY_VIOLATION)
    command_bytes_max = 262144               # an encoded metadata command (INVALID_REQUEST)
    requests_in_flight_max = 4096            # calls served at once; more get RESOURCE_EXHAUSTED
    streams_per_connection_max = 256         # concurrent calls one connection may open

Why these limits (measured on a 3-broker loopback cluster, 2 shared cores, load average 7-9):

* Creating a replica costs its broker ~15 ms *on the broker loop* (the log directory, its
  segment and their fsyncs). One request of 500 partitions × RF 3 stalled every broker 7.7 s:
  heartbeats missed the 2 s session, all three were fenced and the controller failed over. 100
  partitions took 1.4 s and fenced nobody. 200 per request keeps a broker's stall near the session
  timeout's half at that load; raise it with faster disks or a longer ``session_timeout_ms``.
  (Kafka has no per-request cap but throttles partition mutations, KIP-599.)
* Each replica holds one file descriptor for its active ``.log`` (measured: 1,000 partitions ×
  RF 3 on 3 brokers = 1,000 more fds per broker; indexes are opened per use) plus one per closed
  segment it keeps loaded (``loaded_indexes_max``). 4,000 replicas per broker is the usual
  Kafka guidance (Confluent) and Redpanda's order of magnitude; the controller lowers it further
  to what its own ``RLIMIT_NOFILE`` can hold (4 fds per replica after 512 reserved: with the
  common soft limit of 1,024 that is 128), and the refusal names both.
* Commands ride pysyncobj's append-entries messages; the quorum adapter refuses commands above
  1 MiB (``max_command_bytes``). 256 KiB is a quarter of that: a 200-partition RF-5 CreateTopic is
  ~2 KiB, so only a hostile or broken request comes near it.

The Raft address of a voter is its identity in the quorum: ``listen.raft`` must be the host:port
this node's own ``[[voters]]`` entry names (or bind a wildcard of it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .quota import QuotaConfig

REPLICA_FETCH_WAIT_MS = 500  # the longest a follower's fetch waits at the leader for new records

__all__ = [
    "BOOT_ID_PATH",
    "BrokerConfig",
    "ConfigFileError",
    "Limits",
    "Security",
    "Voter",
    "load_config",
    "parse_config",
]


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class ConfigFileError(ValueError):
    """A config file that is missing, unreadable or breaks a rule; the message says which."""


@dataclass(frozen=True, slots=True)
class Voter:
    node_id: int
    raft_address: str
    grpc_address: str


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may cost; the ``[limits]`` table (the module docstring says why)."""

    partitions_per_request_max: int = 200  # summed over the topics of one CreateTopics
    partitions_per_topic_max: int = 200  # <= PARTITIONS_PER_TOPIC_MAX of the state machine
    partition_replicas_per_broker_max: int = 4000  # also capped by the fd limit (controller)
    command_bytes_max: int = 256 << 10  # < the quorum adapter's max_command_bytes (1 MiB)
    requests_in_flight_max: int = 4096  # RPCs the broker serves at once (RESOURCE_EXHAUSTED)
    streams_per_connection_max: int = 256  # concurrent calls on one client connection


@dataclass(frozen=True, slots=True)
class Security:
    """The ``[security]`` table: TLS material and super users (``protocol`` "tls"/"plaintext")."""

    protocol: str = "tls"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    super_users: tuple[str, ...] = ()

    @property
    def is_tls(self) -> bool:
        return self.protocol == "tls"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    node_id: int
    data_dir: str
    cluster_secret: str
    grpc_listen: str
    raft_listen: str
    grpc_advertised: str
    voters: tuple[Voter, ...]  # the metadata quorum; a broker not among them observes it
    # the password listener (TLS, no client certificate; SCRAM users): off unless configured
    grpc_password_listen: str | None = None
    grpc_password_advertised: str | None = None
    # the Kafka-protocol listener: off unless configured
    kafka_listen: str | None = None
    kafka_advertised: str | None = None
    metrics_address: str | None = None  # Prometheus /metrics (HTTP); off unless configured
    rack: str | None = None
    # a file whose content changes on every boot of the machine: a restart that finds a new
    # boot id lost the page cache, so unsynced log tails may be gone (the chaos harness points
    # it at a per-node file it rewrites when it simulates a power loss)
    boot_id_path: str = BOOT_ID_PATH
    session_timeout_ms: int = 2000
    heartbeat_interval_ms: int = 200
    replica_lag_ms_max: int = 10_000
    # an ISR member from which no fetch arrived for this long is cut off or dead, not slow (a live
    # follower's fetch waits at most REPLICA_FETCH_WAIT_MS at the leader): it leaves the ISR
    # without waiting out replica_lag_ms_max, so acks=all does not stall that long behind it
    replica_silence_ms_max: int = 2000
    request_timeout_ms_max: int = 30_000
    segment_bytes: int = 256 << 20
    flush_messages: int = -1
    flush_ms: int = -1
    hw_checkpoint_interval_ms: int = 2000
    retention_check_interval_ms: int = 30_000
    # the log cleaner (compacted topics): its IO bound, reads and writes together, and how often
    # it looks for a log dirty enough (Kafka's log.cleaner.io.max.bytes.per.second, backoff.ms)
    log_cleaner_io_bytes_per_s: int = 10 << 20
    log_cleaner_interval_ms: int = 15_000
    # [groups] initial_rebalance_delay_ms: Kafka's group.initial.rebalance.delay.ms — the first
    # round of an empty group waits this long for more members (each arrival extends it again)
    group_initial_rebalance_delay_ms: int = 3000
    # [groups] offsets_retention_ms: Kafka's offsets.retention.minutes (7 days) — how long an
    # empty group keeps its committed offsets (KIP-211); checked every
    # offsets_retention_check_interval_ms (Kafka's offsets.retention.check.interval.ms)
    group_offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    group_offsets_retention_check_interval_ms: int = 600_000
    topic_defaults: Mapping[str, int] = field(
        default_factory=lambda: {"partitions": 3, "replication_factor": 3, "min_insync_replicas": 2}
    )
    limits: Limits = field(default_factory=Limits)
    security: Security = field(default_factory=Security)
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    # testing hooks (chaos / idempotence tests); never set in production configs
    fault_drop_produce_responses: float = 0.0

    @property
    def is_voter(self) -> bool:
        return any(v.node_id == self.node_id for v in self.voters)

    @property
    def voter(self) -> Voter:
        return next(v for v in self.voters if v.node_id == self.node_id)

    def voter_by_id(self, node_id: int) -> Voter | None:
        return next((v for v in self.voters if v.node_id == node_id), None)


def _host_port(value: Any, where: str) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigFileError(f'{where} must be a "host:port" string, not {value!r}')
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigFileError(f"{where}: {value!r} is not host:port")
    return value


def _positive(value: int, what: str) -> int:
    if value < 1:
        raise ConfigFileError(f"{what} must be at least 1, not {value}")
    return value


def _int(table: Mapping[str, Any], name: str, default: int, where: str) -> int:
    value = table.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigFileError(f"{where}.{name} must be an integer, not {value!r}")
    return value


# the state machine refuses larger topics (raft/metadata.py); a limit above it would only move
# the refusal from the controller to the apply
_PARTITIONS_PER_TOPIC_CEILING = 100_000
_COMMAND_BYTES_CEILING = 1 << 20  # the quorum adapter's max_command_bytes


def _limits(table: Any) -> Limits:
    if not isinstance(table, dict):
        raise ConfigFileError("[limits] must be a table")
    defaults = Limits()
    unknown = set(table) - set(Limits.__slots__)
    if unknown:
        raise ConfigFileError(f"limits: unknown setting(s): {', '.join(sorted(unknown))}")
    values = {
        name: _int(table, name, getattr(defaults, name), "limits") for name in Limits.__slots__
    }
    for name, value in values.items():
        if value < 1:
            raise ConfigFileError(f"limits.{name} must be >= 1, not {value}")
    if values["partitions_per_topic_max"] > _PARTITIONS_PER_TOPIC_CEILING:
        raise ConfigFileError(
            f"limits.partitions_per_topic_max must be <= {_PARTITIONS_PER_TOPIC_CEILING}"
        )
    if values["command_bytes_max"] > _COMMAND_BYTES_CEILING:
        raise ConfigFileError(
            f"limits.command_bytes_max must be <= {_COMMAND_BYTES_CEILING} (the quorum's own cap)"
        )
    return Limits(**values)


def _quotas(table: Any) -> QuotaConfig:
    if not isinstance(table, dict):
        raise ConfigFileError("[quotas] must be a table")
    unknown = set(table) - {"producer_byte_rate", "consumer_byte_rate", "principals"}
    if unknown:
        raise ConfigFileError(f"quotas: unknown setting(s): {', '.join(sorted(unknown))}")

    def rate(t: Mapping[str, Any], name: str, where: str) -> int:
        value = _int(t, name, -1, where)
        if value < -1:
            raise ConfigFileError(f"{where}.{name} must be >= 0, or -1 for none")
        return value

    overrides = []
    principals = table.get("principals", {})
    if not isinstance(principals, dict):
        raise ConfigFileError("[quotas.principals] must be a table of principals")
    for principal, values in sorted(principals.items()):
        where = f'quotas.principals."{principal}"'
        if not principal.startswith("User:") or not isinstance(values, dict):
            raise ConfigFileError(f'{where}: a "User:<name>" table')
        extra = set(values) - {"producer_byte_rate", "consumer_byte_rate"}
        if extra:
            raise ConfigFileError(f"{where}: unknown setting(s): {', '.join(sorted(extra))}")
        overrides.append(
            (
                principal,
                rate(values, "producer_byte_rate", where),
                rate(values, "consumer_byte_rate", where),
            )
        )
    return QuotaConfig(
        producer_byte_rate=rate(table, "producer_byte_rate", "quotas"),
        consumer_byte_rate=rate(table, "consumer_byte_rate", "quotas"),
        overrides=tuple(overrides),
    )


def _security(table: Any, base: Path) -> Security:
    if not isinstance(table, dict):
        raise ConfigFileError(
            '[security] is required: protocol = "tls" with ca_file, cert_file and key_file '
            '(`raftlog tls` makes them), or protocol = "plaintext" said explicitly'
        )
    unknown = set(table) - set(Security.__slots__)
    if unknown:
        raise ConfigFileError(f"security: unknown setting(s): {', '.join(sorted(unknown))}")
    protocol = table.get("protocol")
    if protocol not in ("tls", "plaintext"):
        raise ConfigFileError(f'security.protocol must be "tls" or "plaintext", not {protocol!r}')
    super_users = table.get("super_users", [])
    if not isinstance(super_users, list) or not all(
        isinstance(u, str) and u.startswith("User:") and len(u) > 5 for u in super_users
    ):
        raise ConfigFileError('security.super_users must be a list of "User:<name>" strings')
    files: dict[str, str] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        value = table.get(name)
        if protocol == "plaintext":
            if value is not None:
                raise ConfigFileError(f"security.{name} is set but protocol is plaintext")
            continue
        if not isinstance(value, str) or not value:
            raise ConfigFileError(f"security.{name} is required when protocol is tls")
        path = base / value
        if not path.is_file():
            raise ConfigFileError(f"security.{name}: {path} does not exist")
        files[name] = str(path)
    return Security(protocol=protocol, super_users=tuple(super_users), **files)


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> BrokerConfig:
    """Validate a parsed TOML document; relative paths resolve against ``base_dir``."""
    known = {
        "node_id",
        "data_dir",
        "cluster_secret",
        "cluster_secret_file",
        "rack",
        "listen",
        "advertised",
        "voters",
        "timeouts",
        "storage",
        "topic_defaults",
        "testing",
        "boot_id_file",
        "limits",
        "security",
        "quotas",
        "metrics_address",
        "groups",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigFileError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    node_id = data.get("node_id")
    if not isinstance(node_id, int) or node_id < 0:
        raise ConfigFileError("node_id must be an integer >= 0")
    base = base_dir or Path.cwd()
    data_dir = data.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigFileError("data_dir is required")
    secret = data.get("cluster_secret")
    if secret is None and "cluster_secret_file" in data:
        try:
            secret = (base / data["cluster_secret_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigFileError(f"cluster_secret_file: {exc}") from exc
    if not isinstance(secret, str) or not secret:
        raise ConfigFileError("cluster_secret (or cluster_secret_file) is required and non-empty")
    listen = data.get("listen", {})
    grpc_listen = _host_port(listen.get("grpc"), "listen.grpc")
    # a broker that is not among the voters is an observer: it runs no Raft member
    raft_raw = listen.get("raft")
    raft_listen = "" if raft_raw is None else _host_port(raft_raw, "listen.raft")
    advertised = data.get("advertised", {})
    grpc_advertised = _host_port(advertised.get("grpc", grpc_listen), "advertised.grpc")
    password_listen = listen.get("grpc_password")
    password_advertised = None
    if password_listen is not None:
        password_listen = _host_port(password_listen, "listen.grpc_password")
        password_advertised = _host_port(
            advertised.get("grpc_password", password_listen), "advertised.grpc_password"
        )
    kafka_listen = listen.get("kafka")
    kafka_advertised = None
    if kafka_listen is not None:
        kafka_listen = _host_port(kafka_listen, "listen.kafka")
        kafka_advertised = _host_port(advertised.get("kafka", kafka_listen), "advertised.kafka")
    metrics_address = data.get("metrics_address")
    if metrics_address is not None:
        metrics_address = _host_port(metrics_address, "metrics_address")
    voters_raw = data.get("voters")
    if not isinstance(voters_raw, list) or not voters_raw:
        raise ConfigFileError("at least one [[voters]] table is required")
    voters = []
    for i, v in enumerate(voters_raw):
        if not isinstance(v, dict) or not isinstance(v.get("id"), int):
            raise ConfigFileError(f"voters[{i}] needs an integer id")
        voters.append(
            Voter(
                v["id"],
                _host_port(v.get("raft"), f"voters[{i}].raft"),
                _host_port(v.get("grpc"), f"voters[{i}].grpc"),
            )
        )
    ids = [v.node_id for v in voters]
    if len(set(ids)) != len(ids):
        raise ConfigFileError(f"voter ids repeat: {ids}")
    if node_id in ids and not raft_listen:
        raise ConfigFileError(f"node {node_id} is a voter: listen.raft is required")
    boot_id_file = data.get("boot_id_file", BOOT_ID_PATH)
    if not isinstance(boot_id_file, str) or not boot_id_file:
        raise ConfigFileError("boot_id_file must be a path")
    timeouts = data.get("timeouts", {})
    storage = data.get("storage", {})
    defaults = data.get("topic_defaults", {})
    testing = data.get("testing", {})
    limits = _limits(data.get("limits", {}))
    security = _security(data.get("security"), base)
    quotas = _quotas(data.get("quotas", {}))
    groups = data.get("groups", {})
    group_settings = {
        "initial_rebalance_delay_ms",
        "offsets_retention_ms",
        "offsets_retention_check_interval_ms",
    }
    if not isinstance(groups, dict) or set(groups) - group_settings:
        raise ConfigFileError(f"[groups] takes {', '.join(sorted(group_settings))} only")
    initial_delay_ms = _int(groups, "initial_rebalance_delay_ms", 3000, "groups")
    if not 0 <= initial_delay_ms <= 300_000:
        raise ConfigFileError("groups.initial_rebalance_delay_ms must be 0-300000")
    offsets_retention_ms = _int(groups, "offsets_retention_ms", 7 * 24 * 3600 * 1000, "groups")
    if offsets_retention_ms < 1:
        raise ConfigFileError("groups.offsets_retention_ms must be at least 1")
    retention_check_ms = _int(groups, "offsets_retention_check_interval_ms", 600_000, "groups")
    if not 100 <= retention_check_ms <= 86_400_000:
        raise ConfigFileError("groups.offsets_retention_check_interval_ms must be 100-86400000")
    config = BrokerConfig(
        node_id=node_id,
        data_dir=str(base / data_dir),
        cluster_secret=secret,
        grpc_listen=grpc_listen,
        raft_listen=raft_listen,
        grpc_advertised=grpc_advertised,
        voters=tuple(voters),
        grpc_password_listen=password_listen,
        grpc_password_advertised=password_advertised,
        kafka_listen=kafka_listen,
        kafka_advertised=kafka_advertised,
        metrics_address=metrics_address,
        rack=data.get("rack") or None,
        boot_id_path=str(base / boot_id_file),
        session_timeout_ms=_int(timeouts, "session_timeout_ms", 2000, "timeouts"),
        heartbeat_interval_ms=_int(timeouts, "heartbeat_interval_ms", 200, "timeouts"),
        replica_lag_ms_max=_int(timeouts, "replica_lag_ms_max", 10_000, "timeouts"),
        replica_silence_ms_max=_int(timeouts, "replica_silence_ms_max", 2000, "timeouts"),
        request_timeout_ms_max=_int(timeouts, "request_timeout_ms_max", 30_000, "timeouts"),
        segment_bytes=_int(storage, "segment_bytes", 256 << 20, "storage"),
        flush_messages=_int(storage, "flush_messages", -1, "storage"),
        flush_ms=_int(storage, "flush_ms", -1, "storage"),
        hw_checkpoint_interval_ms=_int(storage, "hw_checkpoint_interval_ms", 2000, "storage"),
        retention_check_interval_ms=_int(storage, "retention_check_interval_ms", 30_000, "storage"),
        log_cleaner_io_bytes_per_s=_positive(
            _int(storage, "log_cleaner_io_bytes_per_s", 10 << 20, "storage"),
            "storage.log_cleaner_io_bytes_per_s",
        ),
        log_cleaner_interval_ms=_positive(
            _int(storage, "log_cleaner_interval_ms", 15_000, "storage"),
            "storage.log_cleaner_interval_ms",
        ),
        group_initial_rebalance_delay_ms=initial_delay_ms,
        group_offsets_retention_ms=offsets_retention_ms,
        group_offsets_retention_check_interval_ms=retention_check_ms,
        topic_defaults={
            "partitions": _int(defaults, "partitions", 3, "topic_defaults"),
            "replication_factor": _int(defaults, "replication_factor", 3, "topic_defaults"),
            "min_insync_replicas": _int(defaults, "min_insync_replicas", 2, "topic_defaults"),
        },
        limits=limits,
        security=security,
        quotas=quotas,
        fault_drop_produce_responses=float(testing.get("drop_produce_responses", 0.0)),
    )
    if config.grpc_password_listen is not None and not config.security.is_tls:
        raise ConfigFileError('listen.grpc_password needs security.protocol = "tls"')
    if config.replica_silence_ms_max < 2 * REPLICA_FETCH_WAIT_MS:
        raise ConfigFileError(
            "timeouts: replica_silence_ms_max must be >= "
            f"{2 * REPLICA_FETCH_WAIT_MS} (twice the time a follower's fetch may wait)"
        )
    if config.heartbeat_interval_ms * 2 > config.session_timeout_ms:
        raise ConfigFileError("timeouts: session_timeout_ms must be >= 2 × heartbeat_interval_ms")
    return config


def load_config(path: str | Path) -> BrokerConfig:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data, base_dir=path.parent)
