"""Each node's disk in a chaos run: its data dir, its boot id, and — with lazyfs — the mount that
can lose power; the storage faults a ``NetnsCluster`` injects act here.

Per node ``i`` of the run directory::

    node<i>/         the broker's data_dir; with lazyfs a mount (lazymount.py) of
    lazyfs/node<i>/  live/ and durable/: what the broker wrote, and what survives a power loss
    node<i>.boot_id  the node's boot id (``boot_id_file``): a fresh uuid4 per simulated boot

A power loss (``power_off``) crashes the mount: every write the broker had not made durable is
dropped, decided by lazyfs, not the broker. The next ``boot`` mounts the disk again and writes a
new boot id — how the broker tells a reboot from a process crash. ``damage`` flips or cuts a
file, and also its durable copy on lazyfs, so a later power loss keeps the damage.

Owned by a ``NetnsCluster`` and called under its lock; not thread-safe. Whether the broker runs
is the cluster's business: it kills the broker before a power loss and checks it is stopped
before a file is damaged.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .diskfault import Damage, apply_damage, data_files
from .lazymount import LazyMount, LazyMountError
from .lazystate import durable_path
from .network import NetnsError

__all__ = ["NodeDisks"]

logger = logging.getLogger(__name__)


class NodeDisks:
    """The disks of one run's nodes, under ``run_dir``; lazyfs mounts are named
    ``<fsname_prefix><node>`` (runs.lazyfs_source_prefix), so a crashed run's are found."""

    def __init__(self, run_dir: Path, fsname_prefix: str) -> None:
        self.run_dir = run_dir
        self.fsname_prefix = fsname_prefix
        self._mounts: dict[int, LazyMount] = {}
        self._powered_off: set[int] = set()

    def data_dir(self, node: int) -> Path:
        return self.run_dir / f"node{node}"

    def boot_id_path(self, node: int) -> Path:
        return self.run_dir / f"node{node}.boot_id"

    def lazyfs_backing(self, node: int) -> Path:
        return self.run_dir / "lazyfs" / f"node{node}"

    # -- boot ids and mounts --

    def boot_id(self, node: int) -> str:
        return self.boot_id_path(node).read_text().strip()

    def new_boot_id(self, node: int) -> None:
        path = self.boot_id_path(node)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{uuid.uuid4()}\n")
        os.replace(tmp, path)

    def mount(self, node: int) -> None:
        """Put the node's data dir on a (fresh) lazyfs mount."""
        mount = LazyMount(
            self.lazyfs_backing(node),
            self.data_dir(node),
            fsname=f"{self.fsname_prefix}{node}",
            # durable/ is kept for a *simulated* power loss; the host itself does not lose
            # power in a run, so its page cache holds durable/ safely and fsyncing it there
            # would only put the host disk's latency into every broker fsync
            host_fsync=False,
        )
        self._mounts[node] = mount
        try:
            mount.mount()
        except LazyMountError as exc:
            raise NetnsError(f"node {node}: {exc}") from exc

    def on_lazyfs(self, node: int) -> bool:
        return node in self._mounts

    def unmount_all(self, problems: list[str]) -> None:
        """Clean unmounts (each daemon syncs and exits); a failure aborts that mount instead."""
        for node, mount in sorted(self._mounts.items()):
            try:
                mount.unmount()
            except Exception as exc:
                problems.append(f"lazyfs of node {node}: {exc}")
                mount.close()  # aborts and detaches; never raises
        self._mounts.clear()

    # -- power --

    def is_powered_off(self, node: int) -> bool:
        return node in self._powered_off

    def power_off(self, node: int) -> dict[str, Any]:
        """Drop every write the (stopped) node's disk had not made durable; it stays off until
        ``boot``. Returns what the disk held before and after, for the fault record."""
        try:
            stats = self._mounts[node].crash()
        except Exception as exc:
            raise NetnsError(f"power loss of node {node}: {exc}") from exc
        self._powered_off.add(node)
        logger.info("node %d powered off: %s", node, stats.text())
        return {
            "files_before": stats.live_files,
            "bytes_before": stats.live_bytes,
            "files_after": stats.durable_files,
            "bytes_after": stats.durable_bytes,
        }

    def boot(self, node: int) -> None:
        """Before a broker starts: a powered-off node's disk comes back with a new boot id. A
        lazyfs daemon that died under the broker counts as a power loss first."""
        mount = self._mounts.get(node)
        if node not in self._powered_off and mount is not None and mount.daemon_pid() is None:
            logger.warning("node %d: its lazyfs daemon died; treating it as a power loss", node)
            mount.crash()
            self._powered_off.add(node)
        if node in self._powered_off:
            self.mount(node)
            self.new_boot_id(node)
            self._powered_off.discard(node)
            logger.info("node %d powered on (boot id %s)", node, self.boot_id(node))

    # -- files --

    def data_files(self, node: int) -> list[tuple[str, int]]:
        """(path relative to the data dir, size) of the node's segment logs and indexes; none
        while it is powered off."""
        if node in self._powered_off:
            return []
        return data_files(self.data_dir(node))

    def damage(self, node: int, damage: Damage) -> dict[str, Any]:
        """Apply ``damage`` to a stopped node's file (and to its durable copy on lazyfs)."""
        path = self.data_dir(node) / damage.path
        try:
            changed = apply_damage(path, damage)
            durable = (
                durable_path(self.lazyfs_backing(node), damage.path)
                if node in self._mounts
                else None
            )
            durable_changed = durable is not None and apply_damage(durable, damage)
        except OSError as exc:
            raise NetnsError(f"damaging {path}: {exc}") from exc
        logger.info("node %d: %s (durable copy too: %s)", node, damage.text(), durable_changed)
        return {**damage.to_json(), "changed": changed, "durable_changed": durable_changed}
