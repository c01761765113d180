"""raftlog.chaos: the Jepsen-style harness — histories, the checker, nemeses and the runner.

Nothing else of raftlog imports this package (the CLI loads it lazily for ``raftlog chaos``).
"""

from .anomalies import BAD_KINDS, Anomaly, CheckResult, Kind, Summary, render_summary
from .checker import check
from .history import (
    HistoryBuilder,
    HistoryFormatError,
    Op,
    OpF,
    OpType,
    dump_jsonl,
    load_jsonl,
)

__all__ = [
    "BAD_KINDS",
    "Anomaly",
    "CheckResult",
    "HistoryBuilder",
    "HistoryFormatError",
    "Kind",
    "Op",
    "OpF",
    "OpType",
    "Summary",
    "check",
    "dump_jsonl",
    "load_jsonl",
    "render_summary",
]
