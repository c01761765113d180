from __future__ import annotations

import pytest

from raftlog.cluster.partition import log_config
from raftlog.raft.metadata_records import TopicRecord
from raftlog.raft.topic_config import ConfigError, cleanup_policy, validate_configs


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("delete", {"delete"}),
        ("compact", {"compact"}),
        ("compact,delete", {"compact", "delete"}),
        ("delete, compact", {"compact", "delete"}),
        ("", None),
        ("compact,compact", None),
        ("shred", None),
        ("compact,", None),
    ],
)
def test_cleanup_policy_values(value: str, parts: set[str] | None) -> None:
    assert cleanup_policy(value) == (None if parts is None else frozenset(parts))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cleanup.policy", "compact,shred"),
        ("delete.retention.ms", "-5"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "half"),
        ("min.compaction.lag.ms", "x"),
    ],
)
def test_bad_compaction_configs_are_typed_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        validate_configs([(name, value)], 3)


def test_the_log_follows_the_policy() -> None:
    def topic(**configs: str) -> TopicRecord:
        items = tuple(sorted((k.replace("_", "."), v) for k, v in configs.items()))
        return TopicRecord("t", 1, 1, 1, items)

    config = log_config(
        topic(cleanup_policy="compact", delete_retention_ms="5", min_cleanable_dirty_ratio="0.1"),
        segment_bytes=1 << 20,
        flush_messages=-1,
        flush_ms=-1,
    )
    assert config.cleanup_compact and not config.cleanup_delete
    assert config.compaction.delete_retention_ms == 5
    assert config.compaction.min_cleanable_dirty_ratio == 0.1
    both = log_config(
        topic(cleanup_policy="compact,delete"),
        segment_bytes=1 << 20,
        flush_messages=-1,
        flush_ms=-1,
    )
    assert both.cleanup_compact and both.cleanup_delete
