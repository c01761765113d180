"""The `raftlog` CLI never shows a traceback: each bad input gets one line and an exit code.

Regression tests for an outside tester's findings: non-UTF-8 stdin to `raftlog produce` and a
malformed `--bootstrap` ended in Python tracebacks; `raftlog cluster up` on a full disk left two
brokers running that `cluster down` missed. Most drive ``raftlog.client.cli.main([...])`` in
this process; the ones that need brokers start real ones on 127.0.0.1 and stop them by PID.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from raftlog.client import cli
from raftlog.client.consumer import Consumer
from raftlog.client.local_cluster import LocalCluster

from ..conftest import ClusterFactory, free_base_port

pytestmark = pytest.mark.integration


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: bytes | None = None
) -> tuple[int, str]:
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out, out
    return code, captured.err


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ---- --bootstrap and usage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bootstrap", ["", "localhost", "host:", "host:abc", "host:70000", ":9092", "a:1,,b:2", " "]
)
@pytest.mark.parametrize("command", [["topic", "list"], ["status"], ["produce", "t"]])
def test_a_malformed_bootstrap_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], bootstrap: str, command: list[str]
) -> None:
    code, err = run(capsys, *command, "--bootstrap", bootstrap, stdin=b"x\n")
    assert code == 2
    assert "--bootstrap" in err and len(err.strip().splitlines()) == 1, err


def test_a_malformed_bootstrap_from_the_environment_is_refused_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLOG_BOOTSTRAP", "nohost")
    code, err = run(capsys, "topic", "list")
    assert code == 2 and "RAFTLOG_BOOTSTRAP" in err


def said(err: str) -> str:
    """What was said, with the console's line wrapping undone."""
    return " ".join(err.split())


def test_missing_tls_material_is_one_error_naming_the_file_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("RAFTLOG_BOOTSTRAP", "RAFTLOG_CA_FILE", "RAFTLOG_CERT_FILE", "RAFTLOG_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    boot = ["--bootstrap", "127.0.0.1:1"]
    code, err = run(capsys, "topic", "list", *boot, "--dir", str(tmp_path))
    assert code == 2 and "CA certificate" in said(err) and "tls/ca.pem" in said(err), err
    missing = tmp_path / "elsewhere" / "ca.pem"
    code, err = run(capsys, "status", *boot, "--ca", str(missing))
    assert code == 2 and "elsewhere/ca.pem" in said(err), err
    monkeypatch.setenv("RAFTLOG_CA_FILE", str(missing))
    code, err = run(capsys, "topic", "list", *boot)
    assert code == 2 and "elsewhere/ca.pem" in said(err), err
    (tmp_path / "ca.pem").write_text("not a certificate, but readable")
    code, err = run(capsys, "topic", "list", *boot, "--ca", str(tmp_path / "ca.pem"),
                    "--cert", str(tmp_path / "client.pem"))  # fmt: skip
    assert code == 2 and "cert and key" in said(err), err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["topic", "create"],
        ["topic", "create", "t", "--partitions", "many"],
        ["consume", "t", "--cooperative", "--bootstrap", "127.0.0.1:1"],  # needs --group
        ["consume", "t", "--group-instance-id", "w1", "--bootstrap", "127.0.0.1:1"],
    ],
)
def test_bad_usage_returns_2_instead_of_raising(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _ = run(capsys, *argv)
    assert code == 2


# ---- produce reads bytes -----------------------------------------------------------------------


class FakeProducer:
    sent: ClassVar[list[tuple[bytes, bytes | None]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> FakeProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def send(self, topic: str, value: bytes, *, key: bytes | None, partition: int | None) -> Any:
        assert isinstance(value, bytes) and (key is None or isinstance(key, bytes))
        self.sent.append((value, key))
        return FakeFuture(topic, len(self.sent) - 1)

    def flush(self) -> None:
        pass


class FakeFuture:
    def __init__(self, topic: str, offset: int) -> None:
        self.topic, self.offset = topic, offset

    def exception(self) -> None:
        return None

    def result(self) -> Any:
        class Meta:
            topic, partition, offset = self.topic, 0, self.offset

        return Meta


def test_produce_sends_non_utf8_stdin_as_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from raftlog.client import producer

    monkeypatch.setattr(producer, "Producer", FakeProducer)
    FakeProducer.sent = []
    data = b"\xff\xfe\x00bin\n\xc3\x28:\x80value\nplain\nno newline at the end"
    # the fake producer opens no connection, so no certificates are needed: --plaintext
    code, err = run(capsys, "produce", "t", "--bootstrap", "127.0.0.1:1", "--plaintext", stdin=data)
    assert code == 0, err
    assert FakeProducer.sent == [
        (b"\xff\xfe\x00bin", None),
        (b"\xc3\x28:\x80value", None),
        (b"plain", None),
        (b"no newline at the end", None),
    ]
    FakeProducer.sent = []
    code, err = run(
        capsys,
        "produce",
        "t",
        "--key-separator",
        ":",
        "--bootstrap",
        "h:1",
        "--plaintext",
        stdin=data,
    )
    assert code == 0, err
    assert FakeProducer.sent[1] == (b"\x80value", b"\xc3\x28")


def test_produce_and_consume_non_utf8_bytes_through_a_cluster(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    values = [bytes([0xFF, 0xFE, 0x80 + i]) + b"\x00tail" for i in range(20)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
    create = [sys.executable, "-m", "raftlog.client.cli", "topic", "create", "bin"]
    boot = ["--bootstrap", cluster.bootstrap, "--dir", str(cluster.dir)]
    done = subprocess.run(
        [*create, "--partitions", "1", "--replication-factor", "1", *boot],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    produced = subprocess.run(
        [sys.executable, "-m", "raftlog.client.cli", "produce", "bin", "--json", *boot],
        input=b"".join(v + b"\n" for v in values),
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert produced.returncode == 0 and b"Traceback" not in produced.stderr, produced.stderr
    assert json.loads(produced.stdout)["acknowledged"] == len(values)
    got: list[bytes] = []
    with Consumer(
        cluster.bootstrap, auto_offset_reset="earliest", security=cluster.security
    ) as consumer:
        consumer.assign_topic("bin")
        deadline = time.monotonic() + 20
        while len(got) < len(values) and time.monotonic() < deadline:
            got += [r.value for r in consumer.poll(timeout_ms=500) if r.value is not None]
    assert got == values


# ---- cluster up that fails part-way; cluster down finds every broker -------------------------


def test_cluster_up_that_fails_part_way_stops_every_broker_it_started(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_spawn = LocalCluster._spawn
    started: list[int] = []

    def spawn(self: LocalCluster, node_id: int) -> None:
        if node_id == 3:  # the disk filled up under the third broker's log file
            raise OSError(errno.ENOSPC, "No space left on device", str(self.log_path(3)))
        real_spawn(self, node_id)
        started.append(self.nodes[node_id].pid)

    monkeypatch.setattr(LocalCluster, "_spawn", spawn)
    directory = str(tmp_path / "c")
    try:
        code, err = run(
            capsys, "cluster", "up", "--dir", directory, "--base-port", str(free_base_port(3))
        )
        assert code == 1
        assert "No space left" in err
        assert len(started) == 2
        assert not any(alive(pid) for pid in started)
    finally:
        kill_all(started)


def test_a_broker_that_exits_at_start_takes_the_others_down_with_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "node2").write_text("a file where broker 2's data directory belongs\n")
    try:
        code, err = run(
            capsys, "cluster", "up", "--dir", str(directory), "--base-port", str(free_base_port(3))
        )
        assert code == 1
        assert "broker 2 exited" in err
        state = json.loads((directory / "cluster.json").read_text())
        pids = [n["pid"] for n in state["nodes"]]
        assert len(pids) == 3 and all(p > 0 for p in pids)  # every broker was recorded
        assert not any(alive(pid) for pid in pids)
    finally:
        with contextlib.suppress(Exception):
            LocalCluster(directory).down(timeout_s=5)


def test_cluster_down_finds_a_broker_whose_record_was_lost(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "c"
    cluster = LocalCluster(directory)
    cluster.up(1, free_base_port(1), timeout_s=60)
    pid = cluster.nodes[1].pid
    try:
        state = json.loads(cluster.state_file.read_text())
        state["nodes"][0]["pid"] = -1  # the record was never written (full disk)
        cluster.state_file.write_text(json.dumps(state))
        code, _ = run(capsys, "cluster", "down", "--dir", str(directory))
        assert code == 0
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            cluster._children[pid].poll()  # reap it: it is this process's child
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        kill_all([pid])
