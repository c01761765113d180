"""The network of one chaos run: a bridge, a namespace per node, and partitions made as routes —
all through iproute2's ``ip``.

Layout of run ``r`` (its id, claimed in runs.py)::

    root namespace                       namespace rl<r>n<i> (one per node i)
    ──────────────                       ──────────────────────────────────────
    bridge rlbr<r>  10.213.<r>.254/24    eth0  10.213.<r>.<i>/24  (veth peer of rl<r>v<i>)
      ├── rl<r>v1 ─────────────────────  lo up
      ├── rl<r>v2 ...                    broker i: gRPC 10.213.<r>.<i>:9092, Raft ...:9192,
      │                                    Kafka ...:9094 (runs with ``--client kafka`` only)
      └── rl<r>v<n>                      neighbour 10.213.<r>.253 → 02:72:6c:00:00:fd (nobody)

The harness stays in the root namespace and reaches every node through the bridge, so clients
keep talking to every node during a partition, as in Jepsen. Brokers bind only to their own
namespace's address; nothing listens on the host.

**How a partition is made** (no iptables/nft on the machine, and ``tc`` here lacks the drop
action): a packet from node a to node b is stopped by a /32 route *in a's namespace* for b's
address — a one-way cut (cuts.py computes which cuts a partition shape needs). The route's kind
is the ``PartitionMode``:

* ``DROP`` (default, like iptables DROP): ``via 10.213.<r>.253``, a next hop whose permanent
  neighbour entry names a MAC nobody owns. The bridge floods the frame, every receiver discards
  it (wrong MAC), the sender's TCP sees silence and times out — the hard case for timeouts.
* ``BLACKHOLE`` / ``PROHIBIT`` / ``UNREACHABLE`` (like iptables REJECT): the sender's own kernel
  refuses at once (EINVAL / EACCES / EHOSTUNREACH), so connects fail fast.

``RunNetwork.heal()`` deletes every /32 peer route in every namespace (it reads the tables back,
so it also removes routes it did not record). The host's routes are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

__all__ = [
    "GRPC_PORT",
    "KAFKA_PORT",
    "NODES_MAX",
    "RAFT_PORT",
    "NetnsError",
    "NetnsUnavailableError",
    "PartitionMode",
    "RunNetwork",
    "check_available",
    "host_overlaps",
    "ip",
    "ip_json",
    "links",
    "namespaces",
    "netns_pids",
]

GRPC_PORT = 9092
RAFT_PORT = 9192
KAFKA_PORT = 9094  # the Kafka-protocol listener (cluster/config.py's example uses the same port)
SUBNET_PREFIX = "10.213"  # run r owns 10.213.<r>.0/24
HOST_SUFFIX = 254  # the bridge's (harness's) address
DROP_HOP_SUFFIX = 253  # the next hop nobody answers for (PartitionMode.DROP)
DROP_HOP_MAC = "02:72:6c:00:00:fd"  # locally administered; no interface has it
NODES_MAX = 9  # node i is 10.213.<r>.<i>, below the two reserved suffixes
IP_TIMEOUT_S = 15.0  # one `ip` command


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


def ip(
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


def ip_json(*args: str) -> list[dict[str, Any]]:
    out = ip("-j", *args).stdout.strip()
    if not out:
        return []
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else []


def namespaces() -> set[str]:
    return {str(entry["name"]) for entry in ip_json("netns", "list") if "name" in entry}


def links() -> set[str]:
    return {str(entry["ifname"]) for entry in ip_json("link", "show") if "ifname" in entry}


def netns_pids(namespace: str) -> list[int]:
    done = ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def check_available() -> None:
    """Raise NetnsUnavailableError (one line) unless we are root and ``ip netns`` works."""
    reason = None
    if os.geteuid() != 0:
        reason = f"running as uid {os.geteuid()}, not root"
    elif shutil.which("ip") is None:
        reason = "`ip` (iproute2) is not on PATH"
    else:
        done = ip("netns", "list", check=False)
        if done.returncode != 0:
            reason = f"`ip netns list` failed: {done.stderr.strip()}"
    if reason is not None:
        raise NetnsUnavailableError(f"chaos needs root and iproute2 (ip netns): {reason}")


def host_overlaps(subnet: ipaddress.IPv4Network) -> bool:
    """True when some host address or route already covers part of ``subnet``."""
    for route in ip_json("-4", "route", "show", "table", "all"):
        dst = str(route.get("dst", ""))
        if dst in ("", "default"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                return True
    for link in ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                if ipaddress.ip_address(info["local"]) in subnet:
                    return True
    return False


# ---- one run's network ------------------------------------------------------------------------


class RunNetwork:
    """The names, addresses and routes of run ``run_id`` with ``prefix``; see the module
    docstring. Owned by a ``NetnsCluster``, which calls it under its lock; not thread-safe.

    ``cuts`` are the one-way cuts in force: ``(a, b)`` means packets from a to b are stopped.
    """

    def __init__(
        self,
        prefix: str,
        run_id: int,
        node_ids: Sequence[int],
        partition_mode: PartitionMode = PartitionMode.DROP,
    ) -> None:
        self.prefix = prefix
        self.run_id = run_id
        self.node_ids = tuple(node_ids)
        self.partition_mode = partition_mode
        self.cuts: set[tuple[int, int]] = set()
        self.built: list[int] = []  # nodes whose namespace creation was attempted

    # -- names and addresses --

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{self.run_id}.0/24")

    @property
    def host_ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.run_id}.{HOST_SUFFIX}"

    @property
    def drop_hop(self) -> str:
        return f"{SUBNET_PREFIX}.{self.run_id}.{DROP_HOP_SUFFIX}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br{self.run_id}"

    def ip(self, node: int) -> str:
        return f"{SUBNET_PREFIX}.{self.run_id}.{node}"

    def namespace(self, node: int) -> str:
        return f"{self.prefix}{self.run_id}n{node}"

    def host_veth(self, node: int) -> str:
        return f"{self.prefix}{self.run_id}v{node}"

    def names(self) -> set[tuple[str, str]]:
        """{("netns"|"link", name)} of everything this network may have created."""
        built = [("netns", self.namespace(n)) for n in self.built]
        built += [("link", self.host_veth(n)) for n in self.built]
        return {("link", self.bridge), *built}

    # -- building --

    def create_bridge(self) -> subprocess.CompletedProcess[str]:
        """``ip link add <bridge> type bridge``, unchecked: claiming a run id tries it."""
        return ip("link", "add", self.bridge, "type", "bridge", check=False)

    def build(self) -> None:
        """The bridge's address, then a namespace and veth per node (the bridge exists)."""
        ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for node in self.node_ids:
            ns, veth = self.namespace(node), self.host_veth(node)
            self.built.append(node)
            done = ip("netns", "add", ns, check=False)
            if done.returncode != 0:
                self.built.remove(node)
                raise NetnsError(f"`ip netns add {ns}` failed: {done.stderr.strip()}")
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", self.bridge)
            ip("link", "set", veth, "up")
            inside = (
                f"link set lo up\naddr add {self.ip(node)}/24 dev eth0\nlink set eth0 up\n"
                f"neigh replace {self.drop_hop} lladdr {DROP_HOP_MAC} dev eth0 nud permanent\n"
            )
            ip("-n", ns, "-batch", "-", stdin=inside)

    def exec_in(
        self, node: int, argv: Sequence[str], timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside a node's namespace (killed after ``timeout_s``)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace(node), *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    # -- cuts --

    def set_cuts(self, wanted: Iterable[tuple[int, int]]) -> None:
        """Make exactly these one-way cuts the ones in force (only the difference is applied)."""
        wanted = set(wanted)
        commands: dict[int, list[str]] = {}
        for a, b in sorted(self.cuts - wanted):
            commands.setdefault(a, []).append(f"route del {self.ip(b)}/32")
        for a, b in sorted(wanted - self.cuts):
            commands.setdefault(a, []).append(f"route replace {self._cut_route(b)}")
        for a, lines in sorted(commands.items()):
            ip("-n", self.namespace(a), "-batch", "-", stdin="\n".join(lines) + "\n")
        self.cuts = wanted

    def _cut_route(self, target: int) -> str:
        dst = f"{self.ip(target)}/32"
        if self.partition_mode is PartitionMode.DROP:
            return f"{dst} via {self.drop_hop} dev eth0"
        return f"{self.partition_mode.value} {dst}"

    def heal(self) -> None:
        """Remove every peer route from every namespace (recorded or not)."""
        peers = {self.ip(i) for i in self.node_ids}
        for node in self.node_ids:
            ns = self.namespace(node)
            routes = ip_json("-n", ns, "-4", "route", "show")
            stale = {str(r.get("dst", "")).removesuffix("/32") for r in routes} & peers
            if stale:
                lines = "".join(f"route del {dst}/32\n" for dst in sorted(stale))
                ip("-n", ns, "-batch", "-", stdin=lines)
        self.cuts = set()
