"""raftlog.cluster: the broker — replication rules, purgatory, replica manager, fetchers, the
controller shell and the gRPC servicers. ``python -m raftlog.cluster --config node.toml`` (or
``raftlog broker --config``) runs one.

Pure cores: ``replication`` (HW, ISR, truncation), ``replica_rules`` (which answer a produce or a
fetch gets), ``produce`` (a produce's batches) and ``purgatory`` (timing wheel, delayed
operations). The rest is the asyncio shell described in ``broker.py``.
"""

from .config import BrokerConfig, ConfigFileError, load_config, parse_config
from .purgatory import DelayedOperation, Purgatory, PurgatoryFullError, TimingWheel
from .replication import IsrProposal, LeaderReplication, divergence_truncation_offset

__all__ = [
    "BrokerConfig",
    "ConfigFileError",
    "DelayedOperation",
    "IsrProposal",
    "LeaderReplication",
    "Purgatory",
    "PurgatoryFullError",
    "TimingWheel",
    "divergence_truncation_offset",
    "load_config",
    "parse_config",
]
