"""`raftlog storage verify`: offline check of partition directories, exit codes, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.client.cli import main
from raftlog.segments import Log, build_batch
from raftlog.segments.clock import SYSTEM_CLOCK


def test_verify_says_ok_damaged_or_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "t-0"
    with Log(str(directory), clock=SYSTEM_CLOCK) as log_:
        for _ in range(20):
            log_.append(build_batch([b"v" * 50] * 5, timestamp_ms=1), leader_epoch=0)
    assert main(["storage", "verify", str(directory)]) == 0
    assert "OK" in capsys.readouterr().out
    segment = directory / "00000000000000000000.log"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    assert main(["storage", "verify", str(directory)]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert main(["storage", "verify", str(tmp_path / "missing")]) == 2
