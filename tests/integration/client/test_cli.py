"""The `raftlog` command line as a user drives it, against a real local cluster.

``cluster up`` makes a mutual-TLS cluster; the client commands find its CA and the super user's
certificate through ``--dir``, as a user's would through ``./.raftlog``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import free_base_port

pytestmark = pytest.mark.integration

RAFTLOG = [sys.executable, "-m", "raftlog.client.cli"]


def raftlog(
    *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
    env["COLUMNS"] = "160"
    return subprocess.run(
        [*RAFTLOG, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_a_user_session_with_a_leader_kill_in_the_middle(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    up = raftlog(
        "cluster", "up", "--dir", directory, "--base-port", str(free_base_port(3)), "--json"
    )
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        boot = ["--dir", directory]  # the bootstrap and the certificates come from it
        assert [b["id"] for b in info["brokers"]] == [1, 2, 3]
        assert all(b["pid"] for b in info["brokers"])

        created = raftlog("topic", "create", "events", "--partitions", "2",
                          "--replication-factor", "3", "--min-insync-replicas", "2",
                          "--config", "retention.ms=3600000", *boot)  # fmt: skip
        assert created.returncode == 0, created.stderr
        described = json.loads(raftlog("topic", "describe", "events", "--json", *boot).stdout)
        assert described["configs"]["retention.ms"] == "3600000"
        assert described["configs"]["min.insync.replicas"] == "2"
        assert len(described["partitions"]) == 2

        lines = "".join(f"k{i % 4}:value-{i}\n" for i in range(500))
        produced = raftlog(
            "produce", "events", "--key-separator", ":", "--json", *boot, stdin=lines
        )
        assert produced.returncode == 0, produced.stderr
        assert json.loads(produced.stdout)["acknowledged"] == 500

        # kill the leader of partition 0, then keep producing through the failover
        leader = described["partitions"][0]["leader"]
        assert raftlog("cluster", "kill", str(leader), "--dir", directory).returncode == 0
        more = "".join(f"k{i % 4}:value-{i}\n" for i in range(500, 1000))
        produced = raftlog("produce", "events", "--key-separator", ":", "--json", *boot, stdin=more)
        assert produced.returncode == 0, produced.stderr
        assert json.loads(produced.stdout)["acknowledged"] == 500

        consumed = raftlog(
            "consume", "events", "--from-beginning", "--json", "--timeout", "3", *boot
        )
        assert consumed.returncode == 0, consumed.stderr
        records = [json.loads(line) for line in consumed.stdout.splitlines()]
        values = sorted(int(r["value"].split("-")[1]) for r in records)
        assert values == list(range(1000))
        for key in ("k0", "k1", "k2", "k3"):  # one key, one partition, in order
            mine = [r for r in records if r["key"] == key]
            assert len({r["partition"] for r in mine}) == 1
            seq = [int(r["value"].split("-")[1]) for r in mine]
            assert seq == sorted(seq)

        status = raftlog("status", "--json", *boot)
        assert status.returncode == 0, status.stderr
        snapshot = json.loads(status.stdout)
        assert snapshot["totals"]["partitions"] == 2
        assert snapshot["controller_id"] >= 1
        dead = next(b for b in snapshot["brokers"] if b["broker_id"] == leader)
        assert not dead["reachable"]
        text = raftlog("status", *boot)
        assert text.returncode == 0 and "events" in text.stdout

        assert raftlog("cluster", "start", str(leader), "--dir", directory).returncode == 0
        listed = json.loads(raftlog("topic", "list", "--json", *boot).stdout)
        assert listed == ["events"]
        assert raftlog("topic", "delete", "events", *boot).returncode == 0
    finally:
        down = raftlog("cluster", "down", "--dir", directory)
    assert down.returncode == 0 and "stopped 3" in down.stdout


def test_errors_a_person_can_act_on_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    port = free_base_port(1)
    nowhere = str(tmp_path / "nowhere")  # no cluster was made here: no certificates
    no_tls = raftlog("topic", "list", "--bootstrap", f"127.0.0.1:{port}", "--dir", nowhere)
    assert no_tls.returncode == 2, no_tls.stderr
    said = " ".join(no_tls.stderr.split())  # the console wraps long lines
    assert "cannot read the CA certificate" in said and "ca.pem" in said, said
    assert "--plaintext" in said and "Traceback" not in said

    directory = str(tmp_path / "one")
    assert raftlog("cluster", "up", "--nodes", "1", "--dir", directory, "--base-port",
                   str(port)).returncode == 0  # fmt: skip
    try:
        elsewhere = f"127.0.0.1:{free_base_port(1)}"  # the right certificates, nobody there
        unreachable = raftlog("topic", "list", "--bootstrap", elsewhere, "--dir", directory)
        assert unreachable.returncode == 1
        assert "cannot reach the cluster" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr

        boot = ["--bootstrap", f"127.0.0.1:{port}", "--dir", directory]
        too_big = raftlog("topic", "create", "x", "--replication-factor", "3", *boot)
        assert too_big.returncode == 1
        assert "too few brokers" in too_big.stderr and "Traceback" not in too_big.stderr
        unknown = raftlog("topic", "describe", "nope", *boot)
        assert unknown.returncode == 1 and "unknown topic" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        usage = raftlog("topic", "create", "y", "--config", "novalue", *boot)
        assert usage.returncode == 2 and "key=value" in usage.stderr
        again = raftlog(
            "cluster", "up", "--nodes", "1", "--dir", directory, "--base-port", str(port)
        )
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        raftlog("cluster", "down", "--dir", directory)
