"""Makes ``tests.sim`` importable however pytest is started: the project runs pytest in importlib
mode, which leaves ``sys.path`` alone, and the simulation's modules import each other by name."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
