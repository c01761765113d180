"""The committed gRPC/protobuf modules must be exactly what ``make proto`` would write."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.proto import build


def test_generated_modules_match_the_proto_sources(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = build.generate(tmp_path)
    assert written, "no .proto sources found"
    stale = [
        path.name
        for path in written
        if not (build.HERE / path.name).exists()
        or (build.HERE / path.name).read_bytes() != path.read_bytes()
    ]
    assert not stale, f"run `make proto`: {stale} differ from what the .proto files generate"


def test_every_generated_module_has_a_source() -> None:
    sources = {p.stem for p in build.proto_sources()}
    for path in build.HERE.iterdir():
        for suffix in build.GENERATED_SUFFIXES:
            if path.name.endswith(suffix):
                stem = path.name[: -len(suffix)]
                assert stem in sources, f"{path.name} has no {stem}.proto: delete it"
