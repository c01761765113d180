"""The broker config: the shipped examples parse, and bad configs get one clear error."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

import pytest
from cryptography import x509

from raftlog.client import cli
from raftlog.cluster.config import ConfigFileError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

PLAINTEXT = {"protocol": "plaintext"}
BASE = {
    "node_id": 1,
    "data_dir": "d",
    "cluster_secret": "s",
    "listen": {"grpc": "127.0.0.1:1", "raft": "127.0.0.1:2"},
    "voters": [{"id": 1, "raft": "127.0.0.1:2", "grpc": "127.0.0.1:1"}],
    "security": PLAINTEXT,
}


@pytest.fixture(scope="module")
def example_tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What examples/README.md tells an operator to run: its ``raftlog tls`` lines, as written
    (``--dir tls`` pointed at a temporary directory)."""
    directory = tmp_path_factory.mktemp("tls")
    readme = (EXAMPLES / "README.md").read_text()
    commands = [
        line.split("#")[0] for line in readme.splitlines() if line.startswith("raftlog tls")
    ]
    assert len(commands) == 5, commands  # init, three brokers, the admin
    for command in commands:
        argv = shlex.split(command)[1:]
        argv[argv.index("--dir") + 1] = str(directory)
        assert cli.main(argv) == 0, command
    return directory


@pytest.mark.parametrize("node", [1, 2, 3])
def test_the_example_configs_parse(node: int, tmp_path: Path, example_tls: Path) -> None:
    text = (EXAMPLES / f"node{node}.toml").read_text()
    secret = tmp_path / "secret"
    secret.write_text("x\n")
    path = tmp_path / "node.toml"
    text = text.replace("/etc/raftlog/secret", str(secret))
    path.write_text(text.replace("/etc/raftlog/tls", str(example_tls)))
    config = load_config(path)
    assert config.node_id == node and len(config.voters) == 3
    assert config.voter.grpc_address == f"10.0.0.{node}:9092"
    assert config.metrics_address == f"10.0.0.{node}:9644"
    assert config.kafka_listen == config.kafka_advertised == f"10.0.0.{node}:9094"
    assert config.security.is_tls
    assert config.security.super_users == ("User:admin",)
    # the certificate the config names is this broker's, valid for the address peers dial
    cert = x509.load_pem_x509_certificate(Path(config.security.cert_file).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = config.voter.grpc_address.rsplit(":", 1)[0]
    assert ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
    assert f"raftlog://broker/{node}" in sans.get_values_for_type(x509.UniformResourceIdentifier)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node_id": -1}, "node_id"),
        ({"cluster_secret": ""}, "cluster_secret"),
        ({"listen": {"grpc": "nope", "raft": "127.0.0.1:2"}}, "listen.grpc"),
        ({"voters": []}, "voters"),
        ({"listen": {"grpc": "127.0.0.1:1"}}, "listen.raft is required"),
        ({"surprise": 1}, "unknown setting"),
        ({"metrics_address": "9644"}, "metrics_address"),
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


# ---- the [security] table ----------------------------------------------------------------------


def tls_table(directory: Path, **change: object) -> dict[str, object]:
    table: dict[str, object] = {
        "protocol": "tls",
        "ca_file": "ca.pem",
        "cert_file": "broker-1.pem",
        "key_file": "broker-1.key",
        "super_users": ["User:admin"],
    }
    table.update(change)
    return {k: v for k, v in table.items() if v is not None}


def test_a_config_without_security_is_refused_with_the_way_out() -> None:
    without = {k: v for k, v in BASE.items() if k != "security"}
    with pytest.raises(ConfigFileError, match=r"\[security\] is required") as raised:
        parse_config(without)
    assert '"plaintext"' in str(raised.value) and "raftlog tls" in str(raised.value)


def test_plaintext_must_be_said_and_then_has_no_identities() -> None:
    config = parse_config(BASE)
    assert not config.security.is_tls
    assert config.security.super_users == ()
    with pytest.raises(ConfigFileError, match="protocol"):
        parse_config({**BASE, "security": {}})  # an empty table says nothing


def test_tls_files_resolve_against_the_config_directory(example_tls: Path) -> None:
    config = parse_config({**BASE, "security": tls_table(example_tls)}, base_dir=example_tls)
    assert config.security.is_tls
    assert config.security.ca_file == str(example_tls / "ca.pem")
    assert config.security.cert_file == str(example_tls / "broker-1.pem")
    assert config.security.key_file == str(example_tls / "broker-1.key")
    assert config.security.super_users == ("User:admin",)


@pytest.mark.parametrize("name", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_is_named(name: str, example_tls: Path) -> None:
    table = tls_table(example_tls, **{name: "nowhere.pem"})
    with pytest.raises(ConfigFileError, match=rf"security\.{name}: .*nowhere\.pem does not exist"):
        parse_config({**BASE, "security": table}, base_dir=example_tls)
    unset = tls_table(example_tls, **{name: None})
    with pytest.raises(ConfigFileError, match=rf"security\.{name} is required"):
        parse_config({**BASE, "security": unset}, base_dir=example_tls)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"super_users": "User:admin"}, "super_users"),  # a string, not a list
        ({"super_users": ["admin"]}, "super_users"),  # no User: prefix
        ({"super_users": ["User:"]}, "super_users"),  # no name
        ({"super_users": [1]}, "super_users"),
        ({"protocol": "ssl"}, "tls.*plaintext"),
        ({"protocol": None}, "protocol"),
        ({"sasl": "plain"}, "unknown setting.*sasl"),
    ],
)
def test_bad_security_tables_are_one_clear_error(
    change: dict[str, object], message: str, example_tls: Path
) -> None:
    table = tls_table(example_tls, **change)
    with pytest.raises(ConfigFileError, match=message):
        parse_config({**BASE, "security": table}, base_dir=example_tls)


def test_plaintext_with_tls_files_is_a_contradiction(example_tls: Path) -> None:
    table = {"protocol": "plaintext", "ca_file": "ca.pem"}
    with pytest.raises(ConfigFileError, match="ca_file is set but protocol is plaintext"):
        parse_config({**BASE, "security": table}, base_dir=example_tls)


def test_a_broker_not_among_the_voters_is_an_observer_and_needs_no_raft_listener() -> None:
    config = parse_config(
        {**BASE, "node_id": 4, "listen": {"grpc": "127.0.0.1:5"}}, base_dir=Path("/tmp")
    )
    assert not config.is_voter and config.raft_listen == ""
    assert parse_config(BASE, base_dir=Path("/tmp")).is_voter
