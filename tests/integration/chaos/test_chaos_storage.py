"""Chaos runs with the storage nemeses (needs root, ``ip netns``; power loss also needs FUSE).

Two short runs, about 80 s together on 2 cores:

1. ``power-loss`` — every data dir on lazyfs; a minority loses power (unsynced writes dropped)
   and boots with a new boot id;
2. ``disk`` — a bit flip or a truncation in a segment file of one node, which restarts at once.

Each must complete (heal, drain, check) with its faults injected and recorded, and be VALID:
no acknowledged record lost, changed or skipped (DESIGN.md, invariant 7).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from raftlog.chaos.lazyfs import fuse_unavailable
from raftlog.chaos.lazymount import FSTYPE, mounts
from raftlog.chaos.network import NetnsUnavailableError, check_available
from raftlog.chaos.run_config import RunConfig
from raftlog.chaos.runner import EXIT_VALID, run

PREFIX = "rls"  # apart from test_chaos_run's "rlc" and a real run's "rl"


def _unavailable() -> str | None:
    try:
        check_available()
    except NetnsUnavailableError as exc:
        return str(exc)
    return None


UNAVAILABLE = _unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


def storage_run(tmp_path: Path, nemesis: str, seed: int, time_limit_s: float) -> RunConfig:
    return RunConfig(
        nodes=3,
        nemeses=(nemesis,),
        time_limit_s=time_limit_s,
        rate_per_s=60,
        seed=seed,
        out_dir=tmp_path / nemesis,
        fault_interval_s=(2.0, 4.0),
        fault_duration_s=(4.0, 6.0),
        quiet_s=3.0,
        prefix=PREFIX,
        live=False,
    )


def run_and_report(config: RunConfig) -> dict[str, object]:
    outcome = run(config, Console(width=120, force_terminal=False))
    results = dict(outcome.results)
    print(
        f"{','.join(config.nemeses)} run {outcome.out_dir} seed {config.seed}: exit "
        f"{outcome.exit_code}, valid {results['valid']}, bad {results['bad']}, "
        f"notes {results['notes']}"
    )
    # DESIGN invariant 7: power loss and disk damage of a minority lose nothing acknowledged
    assert outcome.exit_code == EXIT_VALID, (results["bad"], results["notes"])
    assert results["acked_not_in_final_log"]["count"] == 0  # type: ignore[index]
    assert not results["interrupted"]
    notes = results["notes"]
    assert isinstance(notes, list)
    assert not any(str(n).startswith("harness error") for n in notes), notes
    assert (outcome.out_dir / "results.json").is_file()
    return results


@pytest.mark.skipif(fuse_unavailable() is not None, reason=fuse_unavailable() or "")
def test_a_power_loss_run_completes_and_records_what_each_disk_dropped(tmp_path: Path) -> None:
    results = run_and_report(storage_run(tmp_path, "power-loss", seed=3, time_limit_s=28))
    faults = results["faults"]
    assert isinstance(faults, dict)
    assert faults["by_kind"].get("power-loss", 0) >= 2, faults
    assert not faults["errors"], faults["errors"]
    for record in faults["records"]:
        assert record["stop_s"] is not None
        for lost in record["facts"]["nodes"].values():
            assert lost["bytes_after"] <= lost["bytes_before"]  # a power loss only drops
    assert results["config"]["lazyfs"] is True  # type: ignore[index]
    mounted = [m for m in mounts() if m.fstype == FSTYPE and str(tmp_path) in m.mountpoint]
    assert mounted == [], "the run left lazyfs mounts behind"
    # the boot ids changed: one file per node, a fresh uuid per boot
    boot_ids = sorted((tmp_path / "power-loss" / "cluster").glob("node*.boot_id"))
    assert len(boot_ids) == 3


def test_a_disk_fault_run_completes_and_records_file_offset_and_kind(tmp_path: Path) -> None:
    results = run_and_report(storage_run(tmp_path, "disk", seed=4, time_limit_s=22))
    faults = results["faults"]
    assert isinstance(faults, dict)
    assert faults["by_kind"].get("disk", 0) >= 2, faults
    for record in faults["records"]:
        facts = record["facts"]
        assert facts["kind"] in ("bitflip", "truncate")
        assert facts["file"].endswith((".log", ".index", ".timeindex"))
        assert 0 <= facts["offset"] < facts["size_bytes"]
        assert facts["changed"] is True
    assert results["config"]["lazyfs"] is False  # type: ignore[index]
