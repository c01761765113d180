"""Topic configs: the names, their defaults and their validation (Kafka's spelling).

Pure: the state machine validates configs with this table when a topic is created or altered, so
every node agrees on what is valid. The broker turns a topic's configs into its storage settings
(``cluster``) and its produce rules (``min.insync.replicas``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "TOPIC_CONFIGS",
    "ConfigError",
    "TopicConfigSpec",
    "cleanup_policy",
    "effective_configs",
    "validate_configs",
]


class ConfigError(ValueError):
    """An unknown config name or a value that breaks its rule."""


@dataclass(frozen=True, slots=True)
class TopicConfigSpec:
    name: str
    default: str
    doc: str
    check: Callable[[str], bool]


def _int_at_least(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            n = int(value)
        except ValueError:
            return False
        return minimum <= n <= maximum

    return check


def _bool(value: str) -> bool:
    return value in ("true", "false")


def _ratio(value: str) -> bool:
    try:
        ratio = float(value)
    except ValueError:
        return False
    return 0.0 <= ratio <= 1.0


def cleanup_policy(value: str) -> frozenset[str] | None:
    """``cleanup.policy``'s parts: {"delete"}, {"compact"} or both (either order, Kafka's
    comma-separated list); None when the value is not one of those."""
    parts = [part.strip() for part in value.split(",")]
    if not parts or len(set(parts)) != len(parts) or not set(parts) <= {"delete", "compact"}:
        return None
    return frozenset(parts)


_SPECS = (
    TopicConfigSpec(
        "min.insync.replicas",
        "1",
        "acks=all needs this many in-sync replicas, else NOT_ENOUGH_REPLICAS",
        _int_at_least(1, 16),
    ),
    TopicConfigSpec(
        "unclean.leader.election.enable",
        "false",
        "elect an out-of-sync replica when no ISR member is alive (loses acknowledged data)",
        _bool,
    ),
    TopicConfigSpec(
        "retention.ms", "604800000", "delete segments older than this; -1 keeps", _int_at_least(-1)
    ),
    TopicConfigSpec(
        "retention.bytes", "-1", "delete old segments beyond this size; -1 keeps", _int_at_least(-1)
    ),
    TopicConfigSpec(
        "segment.bytes", "1073741824", "roll a segment at this size", _int_at_least(1024, 2**31 - 1)
    ),
    TopicConfigSpec("segment.ms", "604800000", "roll a segment at this age", _int_at_least(1)),
    TopicConfigSpec(
        "max.message.bytes", "1048588", "the largest batch accepted", _int_at_least(64, 64 << 20)
    ),
    TopicConfigSpec(
        "flush.messages", "-1", "fsync after this many records; -1: on roll only", _int_at_least(-1)
    ),
    TopicConfigSpec(
        "flush.ms", "-1", "fsync when the last fsync is older; -1: on roll only", _int_at_least(-1)
    ),
    TopicConfigSpec(
        "cleanup.policy",
        "delete",
        "delete (retention removes old segments), compact (keep the latest record per key), "
        "or compact,delete (both)",
        lambda v: cleanup_policy(v) is not None,
    ),
    TopicConfigSpec(
        "delete.retention.ms",
        "86400000",
        "a compacted topic keeps a tombstone this long after the cleaner first kept it",
        _int_at_least(0),
    ),
    TopicConfigSpec(
        "min.cleanable.dirty.ratio",
        "0.5",
        "clean a compacted log once this share of it is not yet cleaned (0 to 1)",
        _ratio,
    ),
    TopicConfigSpec(
        "min.compaction.lag.ms",
        "0",
        "a record stays uncompacted at least this long",
        _int_at_least(0),
    ),
)
TOPIC_CONFIGS: Mapping[str, TopicConfigSpec] = {spec.name: spec for spec in _SPECS}


def validate_configs(configs: Iterable[tuple[str, str]], replication_factor: int) -> None:
    """Raise ConfigError for an unknown name, a bad value, or min ISR above the RF."""
    for name, value in configs:
        spec = TOPIC_CONFIGS.get(name)
        if spec is None:
            raise ConfigError(f"unknown topic config {name!r}")
        if not isinstance(value, str) or not spec.check(value):
            raise ConfigError(f"invalid value {value!r} for {name}: {spec.doc}")
        if name == "min.insync.replicas" and int(value) > replication_factor:
            raise ConfigError(
                f"min.insync.replicas={value} is larger than the replication factor "
                f"{replication_factor}: acks=all could never succeed"
            )


def effective_configs(configs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Every known config: the topic's own values over the defaults."""
    out = {name: spec.default for name, spec in TOPIC_CONFIGS.items()}
    out.update(configs)
    return out
