"""Telling a crash from a power loss at start-up (cluster/restart.py)."""

from __future__ import annotations

from pathlib import Path

from raftlog.cluster import restart
from raftlog.cluster.restart import RestartFacts, may_have_lost_data
from raftlog.segments import BrokerStateStore


def facts(record: dict[str, object] | None, boot: str | None = "b1") -> RestartFacts:
    return RestartFacts(boot, record)


def test_the_verdicts() -> None:
    # a new broker, or one whose data directory lost everything: unclean either way (a new
    # broker holds no replicas, so for it that changes nothing)
    assert may_have_lost_data(facts(None))
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
    boot.write_text("b1\n")
    with BrokerStateStore(str(tmp_path / "state")) as state:
        assert restart.begin(state, str(boot))  # no record: a new or emptied data directory
        boot.write_text("b1\n")
        assert restart.begin(state, str(boot))  # still pending: never reported
        restart.reported(state)
        assert not restart.begin(state, str(boot))  # a crash on the same boot
        boot.write_text("b2\n")
        assert restart.begin(state, str(boot))  # a reboot
        restart.closed_cleanly(state)  # pending: a clean close does not prove the lost tail
        assert restart.begin(state, str(boot))
        restart.reported(state)
        restart.closed_cleanly(state)
        boot.write_text("b3\n")
        assert not restart.begin(state, str(boot))  # clean close, then a reboot
