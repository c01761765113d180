"""Disk faults for the ``disk`` nemesis: a bit flip or a truncation in one file of a broker's
data dir — what a failing disk or a firmware bug does silently, below the broker.

Choosing is pure (``choose_damage``: the files, their sizes and an rng in, one ``Damage`` out);
``data_files`` lists a data dir and ``apply_damage`` changes one file — the only IO here, run by
the harness while the broker is dead (the nemesis SIGKILLs it first).

Which files: segment logs (``.../<topic>-<partition>/<base offset:020d>.log``) three times as often
as their indexes (``.index``, ``.timeindex``); never LMDB's files or the Raft journal, whose
damage the fault model leaves out (they are not the replicated data). Empty files are skipped.
Worked example: with files ``chaos-0/00000000000000000000.log`` (4096 B) and its ``.index``
(16 B), the log is chosen with probability 6/7; a bit flip picks a byte offset in [0, 4096) and
a bit in [0, 8); a truncation picks the new size in [0, 4096).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "Damage",
    "DamageKind",
    "apply_damage",
    "choose_damage",
    "data_files",
]

_SEGMENT_FILE = re.compile(r"(?:.*/)?[^/]+-\d+/\d{20}\.(log|index|timeindex)")
_WEIGHTS = {"log": 3, "index": 1, "timeindex": 1}
FILES_MAX = 100_000  # a bound on the listing of one data dir


class DamageKind(Enum):
    BITFLIP = "bitflip"  # one bit of one byte inverted
    TRUNCATE = "truncate"  # the file cut at ``offset``


@dataclass(frozen=True, slots=True)
class Damage:
    """One fault in one file; ``path`` is relative to the broker's data dir."""

    path: str
    kind: DamageKind
    offset: int  # bitflip: the byte; truncate: the new size (0 <= offset < size_bytes)
    size_bytes: int  # the file's size when chosen
    bit: int = 0  # bitflip only: 0..7

    def text(self) -> str:
        if self.kind is DamageKind.BITFLIP:
            return f"bit flip in {self.path} at byte {self.offset} (bit {self.bit})"
        return f"truncated {self.path} from {self.size_bytes} to {self.offset} B"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "file": self.path,
            "offset": self.offset,
            "size_bytes": self.size_bytes,
        }
        if self.kind is DamageKind.BITFLIP:
            out["bit"] = self.bit
        return out


def data_files(data_dir: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every segment log and index under ``data_dir`` (in partition
    dirs at any depth, e.g. ``logs/chaos-0/``), sorted; at most ``FILES_MAX`` entries seen."""
    out: list[tuple[str, int]] = []
    seen = 0
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for name in sorted(files):
            seen += 1
            if seen > FILES_MAX:
                return out
            path = Path(root) / name
            rel = path.relative_to(data_dir).as_posix()
            if _SEGMENT_FILE.fullmatch(rel):
                try:
                    out.append((rel, path.stat().st_size))
                except FileNotFoundError:  # deleted meanwhile (retention)
                    continue
    return out


def choose_damage(files: Sequence[tuple[str, int]], rng: random.Random) -> Damage | None:
    """One damage to one non-empty segment file (logs preferred); None when there is none."""
    candidates = [(p, s) for p, s in sorted(files) if s > 0 and _SEGMENT_FILE.fullmatch(p)]
    if not candidates:
        return None
    weights = [_WEIGHTS[p.rsplit(".", 1)[1]] for p, _ in candidates]
    path, size = rng.choices(candidates, weights=weights)[0]
    kind = rng.choice(list(DamageKind))
    offset = rng.randrange(size)
    bit = rng.randrange(8) if kind is DamageKind.BITFLIP else 0
    return Damage(path, kind, offset, size, bit)


def apply_damage(path: Path, damage: Damage) -> bool:
    """Apply ``damage`` to the file at ``path`` (which may be a copy of the damaged file with
    another size: bytes past its end are left alone). True when the file changed."""
    size = path.stat().st_size
    if damage.kind is DamageKind.TRUNCATE:
        if damage.offset >= size:
            return False
        os.truncate(path, damage.offset)
        return True
    if damage.offset >= size:
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, damage.offset)
        os.pwrite(fd, bytes([old[0] ^ (1 << damage.bit)]), damage.offset)
    finally:
        os.close(fd)
    return True
