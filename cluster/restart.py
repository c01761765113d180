"""How did this broker last stop: a clean shutdown, a process crash, or a power loss?

A process crash (kill -9, OOM) keeps the kernel's page cache: every write the broker made is
still there, synced or not. A power loss (or a kernel panic, a VM reset) drops every write that
was not fsynced — the tails of the logs after their last flush — and, by default, the log does
not fsync per append (durability comes from replication). So a replica that comes back from a
power loss may lack records that were acknowledged; the metadata must not elect it while a
replica that cannot have lost them exists (rule 7 in ``raft/metadata.py``). This module tells
the two apart; the broker carries the verdict into its registration (``unclean``).

The decision is a pure function of what the broker finds at start (``RestartFacts``): the kernel's
boot id now (``/proc/sys/kernel/random/boot_id``, new on every boot; the chaos harness gives each
simulated machine its own file) and what the previous process recorded in the state store. The
shell (``begin``, ``reported``, ``closed_cleanly``) keeps one record, ``meta/restart`` in the
broker's LMDB store (synced on every write)::

    {"boot_id": "<the boot id when this process started>",
     "clean": <true once everything was fsynced at a clean shutdown>,
     "unclean_pending": <true from an unclean start until the controller committed it>}

Worked example: a broker killed with SIGKILL restarts on the same boot id, without "clean": a
crash — nothing lost. After a power loss the boot id differs: unclean. If that process dies again
before its registration committed, "unclean_pending" keeps the verdict for the next start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from raftlog.segments import BrokerStateStore

__all__ = [
    "RestartFacts",
    "begin",
    "closed_cleanly",
    "may_have_lost_data",
    "read_boot_id",
    "reported",
]

logger = logging.getLogger(__name__)

_KEY = "restart"


@dataclass(frozen=True, slots=True)
class RestartFacts:
    boot_id: str | None  # the machine's boot id now; None when it cannot be read
    recorded: dict[str, object] | None  # the previous process's record; None on a fresh store


def may_have_lost_data(facts: RestartFacts) -> bool:
    """True when unsynced writes of the previous run may be gone (see the module docstring)."""
    record = facts.recorded
    if record is None:
        # a first start, or a data directory that lost everything (a power loss before its
        # names were synced, a replaced disk): the controller may know replicas of ours we no
        # longer hold, so say unclean — for a new broker with no replicas it changes nothing
        return True
    if record.get("unclean_pending"):
        return True  # an unclean start whose registration never committed
    if record.get("clean"):
        return False  # everything was fsynced before the previous process exited
    previous = record.get("boot_id")
    if facts.boot_id is None or not isinstance(previous, str):
        return True  # cannot tell a crash from a reboot: assume the worse
    return previous != facts.boot_id


def read_boot_id(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            value = f.read(128).strip()
    except OSError as exc:
        logger.warning("cannot read the boot id from %s: %s", path, exc)
        return None
    return value or None


def begin(state: BrokerStateStore, boot_id_path: str) -> bool:
    """At start, before any log is opened: decide, record this start (synced), return the
    verdict (True: register as unclean)."""
    boot_id = read_boot_id(boot_id_path)
    recorded = state.get_blob("meta", _KEY)
    facts = RestartFacts(boot_id, recorded if isinstance(recorded, dict) else None)
    unclean = may_have_lost_data(facts)
    state.put_blob(
        "meta", _KEY, {"boot_id": boot_id or "", "clean": False, "unclean_pending": unclean}
    )
    if unclean:
        logger.warning(
            "unclean start (boot id %s, previous record %s): replicas may have lost unsynced "
            "records; registering so that none of them leads until caught up",
            boot_id,
            facts.recorded,
        )
    return unclean


def reported(state: BrokerStateStore) -> None:
    """The controller committed our unclean registration: later starts need not repeat it."""
    record = state.get_blob("meta", _KEY)
    if isinstance(record, dict) and record.get("unclean_pending"):
        state.put_blob("meta", _KEY, {**record, "unclean_pending": False})


def closed_cleanly(state: BrokerStateStore) -> None:
    """Every log is flushed and closed: the next start, on any boot, has lost nothing."""
    record = state.get_blob("meta", _KEY)
    if isinstance(record, dict) and not record.get("unclean_pending"):
        state.put_blob("meta", _KEY, {**record, "clean": True})
