"""A broker's data directory survives a power loss on a strict filesystem (lazyfs).

A name is durable only once its directory is fsynced. The first power-loss chaos run found every
node coming back empty — data directory, LMDB state store, Raft journal and all — because no
directory was ever fsynced: an empty stranger that votes again and claims its replicas are fine.
This runs the broker's own start-up code for its directories in a child on a lazyfs mount, cuts
the power, and looks. Needs root and FUSE (skipped otherwise).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.chaos.lazyfs import fuse_unavailable
from raftlog.chaos.lazymount import LazyMount

from .test_lazyfs import lazy, power_cycle, run_child_then_kill

__all__ = ["lazy"]  # the fixture, used by name

UNAVAILABLE = fuse_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]

CHILD = """
import os, sys
from raftlog.cluster import restart
from raftlog.segments import BrokerStateStore, makedirs_durable, write_file_durable
data = {data!r}
for sub in ("", "raft", "logs"):
    makedirs_durable(os.path.join(data, sub))
state = BrokerStateStore(os.path.join(data, "state"))
print(restart.begin(state, "/proc/sys/kernel/random/boot_id"), file=sys.stderr)
restart.reported(state)
partition = os.path.join(data, "logs", "t-0")
makedirs_durable(partition)
write_file_durable(os.path.join(partition, "partition.metadata"), b"7\\n")
with open(os.path.join(data, "logs", "unsynced-name"), "w") as f:
    f.write("x")
    f.flush()
    os.fsync(f.fileno())  # the data, not the name: it must vanish
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_data_directory_and_its_state_outlive_a_power_loss(lazy: LazyMount) -> None:
    from raftlog.cluster import restart
    from raftlog.segments import BrokerStateStore

    data = lazy.mountpoint / "node1" / "data"
    assert run_child_then_kill(CHILD.format(data=str(data))) == "ready"
    power_cycle(lazy)
    assert (data / "raft").is_dir()
    assert (data / "logs" / "t-0" / "partition.metadata").read_bytes() == b"7\n"
    assert not (data / "logs" / "unsynced-name").exists()  # lazyfs does drop unsynced names
    with BrokerStateStore(str(data / "state")) as state:
        # the record of the previous start survived: a crash on the same boot is not unclean
        assert not restart.begin(state, "/proc/sys/kernel/random/boot_id")


def test_without_the_directory_fsyncs_everything_is_gone(lazy: LazyMount, tmp_path: Path) -> None:
    """The same writes with plain os.makedirs: the name of the data directory does not survive
    (what the broker did before; this keeps the test above honest)."""
    data = lazy.mountpoint / "node2"
    source = CHILD.format(data=str(data)).replace(
        "makedirs_durable(os.path.join(data, sub))", "os.makedirs(os.path.join(data, sub))"
    )
    source = source.replace(
        'state = BrokerStateStore(os.path.join(data, "state"))',
        'import lmdb\nenv = lmdb.open(os.path.join(data, "state"), sync=True)\n'
        'with env.begin(write=True) as txn: txn.put(b"k", b"v")\nprint("ready", flush=True)\n'
        "sys.stdin.read()",
    )
    assert run_child_then_kill(source) == "ready"
    power_cycle(lazy)
    assert not data.exists()
