"""Generate the protobuf and gRPC modules from ``proto/*.proto``.

``python -m raftlog.proto.build`` (or ``make proto``) rewrites the committed ``*_pb2.py``,
``*_pb2.pyi`` and ``*_pb2_grpc.py`` beside the sources; ``generate(out_dir)`` writes them elsewhere
so a test can check that the committed modules match the sources.

protoc names a generated module after the path of its .proto relative to the include root, and
writes cross-file imports the same way. The sources live in ``proto/`` but are imported as
``raftlog.proto``, so they are compiled from a temporary root in which ``raftlog/proto`` holds
copies of them: the generated code then says ``from raftlog.proto import common_pb2``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_sources() -> list[Path]:
    return sorted(HERE.glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto into ``out_dir``; return the files written."""
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package_dir = root / "raftlog" / "proto"
        package_dir.mkdir(parents=True)
        for source in proto_sources():
            shutil.copy(source, package_dir / source.name)
        gen = root / "gen"
        gen.mkdir()
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={gen}",
            f"--pyi_out={gen}",
            f"--grpc_python_out={gen}",
            *(f"raftlog/proto/{s.name}" for s in proto_sources()),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        out_dir.mkdir(parents=True, exist_ok=True)
        for produced in sorted((gen / "raftlog" / "proto").iterdir()):
            target = out_dir / produced.name
            shutil.copy(produced, target)
            written.append(target)
        return written


def main() -> int:
    for path in generate(HERE):
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
