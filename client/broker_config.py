"""A broker's TOML config file, as text, for the tools that start brokers on this machine.

``raftlog cluster up`` (``local_cluster.py``) and the chaos harness (``raftlog.chaos.netns``)
both write one per node, through tomli-w; what every setting means is documented once, in
``raftlog.cluster.config``, which parses it. A worked example (``broker_config_text`` with
``top={"node_id": 1, "data_dir": "node1"}``, one voter and a ``timeouts`` table)::

    # written by `raftlog cluster up`; ...
    node_id = 1
    data_dir = "node1"
    voters = [
        { id = 1, raft = "127.0.0.1:9192", grpc = "127.0.0.1:9092" },
    ]

    [listen]
    grpc = "127.0.0.1:9092"
    raft = "127.0.0.1:9192"

    [timeouts]
    session_timeout_ms = 2000
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import tomli_w

__all__ = ["Voter", "broker_config_text"]


@dataclass(frozen=True, slots=True)
class Voter:
    """One entry of ``voters``: a member of the metadata quorum and where it listens."""

    node_id: int
    raft: str  # host:port
    grpc: str  # host:port


def broker_config_text(
    *,
    comment: str,
    top: Mapping[str, object],
    listen: Mapping[str, str],
    voters: Sequence[Voter],
    tables: Mapping[str, Mapping[str, object]],
) -> str:
    """The config: a comment line, the top-level keys, ``voters``, ``[listen]``, the tables.
    TypeError for a value TOML cannot hold (None, an object)."""
    config: dict[str, object] = {
        **top,
        "listen": dict(listen),
        "voters": [{"id": v.node_id, "raft": v.raft, "grpc": v.grpc} for v in voters],
        **{name: dict(values) for name, values in tables.items()},
    }
    return f"# {comment}\n" + tomli_w.dumps(config)
