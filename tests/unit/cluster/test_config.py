"""The broker config: the shipped examples parse, and bad configs get one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.cluster.config import ConfigFileError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

BASE = {
    "node_id": 1,
    "data_dir": "d",
    "cluster_secret": "s",
    "listen": {"grpc": "127.0.0.1:1", "raft": "127.0.0.1:2"},
    "voters": [{"id": 1, "raft": "127.0.0.1:2", "grpc": "127.0.0.1:1"}],
}


@pytest.mark.parametrize("node", [1, 2, 3])
def test_the_example_configs_parse(node: int, tmp_path: Path) -> None:
    text = (EXAMPLES / f"node{node}.toml").read_text()
    secret = tmp_path / "secret"
    secret.write_text("x\n")
    path = tmp_path / "node.toml"
    path.write_text(text.replace("/etc/raftlog/secret", str(secret)))
    config = load_config(path)
    assert config.node_id == node and len(config.voters) == 3
    assert config.voter.grpc_address == f"10.0.0.{node}:9092"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node_id": -1}, "node_id"),
        ({"cluster_secret": ""}, "cluster_secret"),
        ({"listen": {"grpc": "nope", "raft": "127.0.0.1:2"}}, "listen.grpc"),
        ({"voters": []}, "voters"),
        ({"node_id": 9}, "not among the voters"),
        ({"surprise": 1}, "unknown setting"),
        ({"timeouts": {"session_timeout_ms": 100, "heartbeat_interval_ms": 200}}, "session"),
    ],
)
def test_bad_configs_are_one_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        parse_config({**BASE, **change})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = [")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_config(bad)
