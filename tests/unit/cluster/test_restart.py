"""Telling a crash from a power loss at start-up (cluster/restart.py)."""

from __future__ import annotations

from pathlib import Path

from raftlog.cluster import restart
from raftlog.cluster.restart import RestartFacts, may_have_lost_data
from raftlog.segments import BrokerStateStore


def facts(
    record: dict[str, object] | None, boot: str | None = "b1", logs: bool = True
) -> RestartFacts:
    return RestartFacts(boot, record, logs)


def test_the_verdicts() -> None:
    assert not may_have_lost_data(facts(None, logs=False))  # a new broker
    assert may_have_lost_data(facts(None, logs=True))  # logs but no record of them
    crash = {"boot_id": "b1", "clean": False, "unclean_pending": False}
    assert not may_have_lost_data(facts(crash))  # kill -9: the page cache kept everything
    assert may_have_lost_data(facts(crash, boot="b2"))  # a reboot without a clean shutdown
    assert may_have_lost_data(facts(crash, boot=None))  # cannot tell: assume the worse
    clean = {**crash, "clean": True}
    assert not may_have_lost_data(facts(clean, boot="b2"))  # flushed, then rebooted
    pending = {**clean, "unclean_pending": True}
    assert may_have_lost_data(facts(pending))  # died before the controller heard of it


def test_the_record_survives_restarts_until_reported(tmp_path: Path) -> None:
    boot = tmp_path / "boot_id"
    logs = tmp_path / "logs"
    (logs / "t-0").mkdir(parents=True)
    boot.write_text("b1\n")
    with BrokerStateStore(str(tmp_path / "state")) as state:
        assert restart.begin(state, str(boot), str(logs))  # logs, no record
        boot.write_text("b1\n")
        assert restart.begin(state, str(boot), str(logs))  # still pending: never reported
        restart.reported(state)
        assert not restart.begin(state, str(boot), str(logs))  # a crash on the same boot
        boot.write_text("b2\n")
        assert restart.begin(state, str(boot), str(logs))  # a reboot
        restart.closed_cleanly(state)  # pending: a clean close does not prove the lost tail
        assert restart.begin(state, str(boot), str(logs))
        restart.reported(state)
        restart.closed_cleanly(state)
        boot.write_text("b3\n")
        assert not restart.begin(state, str(boot), str(logs))  # clean close, then a reboot
