"""The broker config text that `raftlog cluster up` and the chaos harness write: the layout of
broker_config.py's worked example, and TOML that parses back to the values written."""

from __future__ import annotations

import tomllib

import pytest

from raftlog.client.broker_config import Voter, broker_config_text


def test_the_worked_example() -> None:
    text = broker_config_text(
        comment="written by a test",
        top={"node_id": 1, "data_dir": "node1"},
        listen={"grpc": "127.0.0.1:9092", "raft": "127.0.0.1:9192"},
        voters=[Voter(1, "127.0.0.1:9192", "127.0.0.1:9092")],
        tables={"timeouts": {"session_timeout_ms": 2000}},
    )
    assert text == (
        "# written by a test\n"
        "node_id = 1\n"
        'data_dir = "node1"\n'
        "voters = [\n"
        '    { id = 1, raft = "127.0.0.1:9192", grpc = "127.0.0.1:9092" },\n'
        "]\n"
        "\n"
        "[listen]\n"
        'grpc = "127.0.0.1:9092"\n'
        'raft = "127.0.0.1:9192"\n'
        "\n"
        "[timeouts]\n"
        "session_timeout_ms = 2000\n"
    )


def test_every_value_reads_back_as_written() -> None:
    values = {
        "flag": True,
        "off": False,
        "count": 3,
        "ratio": 0.25,
        "name": 'a "quoted" \\ name\n',
        "users": ["User:admin", "User:chaos"],
        "mixed": [1, "two"],
    }
    text = broker_config_text(
        comment="values",
        top={"node_id": 2},
        listen={"grpc": "h:1", "raft": "h:2", "grpc_password": "h:3"},
        voters=[Voter(1, "a:2", "a:1"), Voter(2, "h:2", "h:1")],
        tables={"storage": values, "security": {"protocol": "plaintext"}},
    )
    parsed = tomllib.loads(text)
    assert parsed["storage"] == values
    assert parsed["listen"] == {"grpc": "h:1", "raft": "h:2", "grpc_password": "h:3"}
    assert parsed["voters"] == [
        {"id": 1, "raft": "a:2", "grpc": "a:1"},
        {"id": 2, "raft": "h:2", "grpc": "h:1"},
    ]
    assert parsed["node_id"] == 2 and parsed["security"] == {"protocol": "plaintext"}


@pytest.mark.parametrize("value", [None, object()])
def test_a_value_no_config_holds_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="not TOML serializable"):
        broker_config_text(
            comment="bad", top={}, listen={}, voters=[], tables={"storage": {"x": value}}
        )
