"""A broker's TOML config file, as text, for the tools that start brokers on this machine.

``raftlog cluster up`` (``local_cluster.py``) and the chaos harness (``raftlog.chaos.netns``)
both write one per node; what every setting means is documented once, in
``raftlog.cluster.config``, which parses it. Only the values these tools write are supported:
bools, ints, floats, strings and lists of them. A worked example (``broker_config_text`` with
``top={"node_id": 1, "data_dir": "node1"}``, one voter and a ``timeouts`` table)::

    # written by `raftlog cluster up`; ...
    node_id = 1
    data_dir = "node1"

    [listen]
    grpc = "127.0.0.1:9092"
    raft = "127.0.0.1:9192"

    [[voters]]
    id = 1
    raft = "127.0.0.1:9192"
    grpc = "127.0.0.1:9092"

    [timeouts]
    session_timeout_ms = 2000
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Voter", "broker_config_text", "toml_table", "toml_value"]


@dataclass(frozen=True, slots=True)
class Voter:
    """One ``[[voters]]`` entry: a member of the metadata quorum and where it listens."""

    node_id: int
    raft: str  # host:port
    grpc: str  # host:port


def toml_value(value: object) -> str:
    """One TOML value; TypeError for a type a broker config never holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) into a TOML config")


def toml_table(name: str, values: Mapping[str, object]) -> str:
    body = "".join(f"{key} = {toml_value(v)}\n" for key, v in values.items())
    return f"[{name}]\n{body}"


def broker_config_text(
    *,
    comment: str,
    top: Mapping[str, object],
    listen: Mapping[str, str],
    voters: Sequence[Voter],
    tables: Mapping[str, Mapping[str, object]],
) -> str:
    """The config: a comment line, the top-level keys, ``[listen]``, every voter, the tables."""
    head = "".join(f"{key} = {toml_value(v)}\n" for key, v in top.items())
    members = "".join(
        f"[[voters]]\nid = {v.node_id}\nraft = {toml_value(v.raft)}\n"
        f"grpc = {toml_value(v.grpc)}\n\n"
        for v in voters
    )
    rest = "\n".join(toml_table(name, values) for name, values in tables.items())
    return f"# {comment}\n{head}\n{toml_table('listen', listen)}\n{members}{rest}"
