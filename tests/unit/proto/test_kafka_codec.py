"""The Kafka wire codec: every message of every version round-trips, known bytes decode, bad bytes
give a typed error, and kafka-python's hand-written structs (an independent reading of the
protocol) parse what we write, byte for byte."""

from __future__ import annotations

import importlib
import io
import pkgutil
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlog.proto.kafka_codec import (
    Field,
    KafkaCodecError,
    Versions,
    decode,
    encode,
    schema,
    schema_names,
)

NEVER = Versions.parse("none")

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def values(
    fields: tuple[Field, ...], version: int, flexible: bool, *, tags: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    """A whole value of a struct at ``version``: fields absent from it at their defaults (what
    decode gives back), and, without ``tags``, tagged fields at their defaults too."""
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in fields:
        absent = version not in field.versions
        tagged = flexible and version in field.tagged
        if absent or (tagged and not tags):
            parts[field.name] = st.just(field.default)
        else:
            parts[field.name] = value(field, version, flexible, tags=tags)
    return st.fixed_dictionaries(parts)


def value(field: Field, version: int, flexible: bool, *, tags: bool) -> st.SearchStrategy[Any]:
    if field.is_array:
        element = Field(field.name, field.element, field.versions, NEVER, NEVER, None,
                        field.flexible, None, field.fields)  # fmt: skip
        inner = st.lists(value(element, version, flexible, tags=tags), max_size=3)
    elif field.is_struct:
        inner = values(field.fields, version, flexible, tags=tags)
    elif field.type in _INT_RANGES:
        inner = st.integers(*_INT_RANGES[field.type])
    else:
        inner = {
            "bool": st.booleans(),
            "float64": st.floats(allow_nan=False),
            "string": st.text(max_size=8),
            "bytes": st.binary(max_size=8),
            "records": st.binary(max_size=8),
            "uuid": st.uuids(),
        }[field.type]
    return st.none() | inner if version in field.nullable else inner


CASES = [
    (name, version)
    for name in schema_names()
    for version in range(schema(name).valid.low, schema(name).valid.high + 1)
]


@pytest.mark.parametrize(("name", "version"), CASES, ids=[f"{n}-v{v}" for n, v in CASES])
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_every_version_of_every_message_round_trips(name: str, version: int, data: Any) -> None:
    found = schema(name)
    original = data.draw(values(found.fields, version, version in found.flexible))
    assert decode(name, version, encode(name, version, original)) == original


def test_the_worked_example_and_a_tagged_field() -> None:
    request = {"client_software_name": "kc", "client_software_version": "1"}
    assert encode("ApiVersionsRequest", 3, request).hex() == "036b63023100"
    response = decode("ApiVersionsResponse", 3, encode("ApiVersionsResponse", 3, {
        "error_code": 0, "api_keys": [], "finalized_features_epoch": 7}))  # fmt: skip
    assert response["finalized_features_epoch"] == 7  # a tagged field (tag 1) round-trips
    untagged = encode("ApiVersionsResponse", 3, {"error_code": 0})
    assert untagged.endswith(b"\x00")  # no tagged field differs from its default: count 0


def test_bad_bytes_and_bad_values_are_typed_errors() -> None:
    good = encode("MetadataRequest", 9, {"topics": [{"name": "t"}]})
    with pytest.raises(KafkaCodecError, match="ends at byte"):
        decode("MetadataRequest", 9, good[:-2])
    with pytest.raises(KafkaCodecError, match="after the MetadataRequest"):
        decode("MetadataRequest", 9, good + b"\x00")
    with pytest.raises(KafkaCodecError, match="cannot fit"):
        decode("MetadataRequest", 4, b"\x7f\xff\xff\xff")  # 2**31 - 1 topics in 4 bytes
    with pytest.raises(KafkaCodecError, match="no field"):
        encode("MetadataRequest", 9, {"topicz": []})
    with pytest.raises(KafkaCodecError, match="may not be null"):
        encode("FindCoordinatorRequest", 1, {"key": None})
    with pytest.raises(KafkaCodecError, match="is not a int32"):
        encode("HeartbeatRequest", 0, {"group_id": "g", "generation_id": "x", "member_id": "m"})
    with pytest.raises(KafkaCodecError, match="no version"):
        encode("HeartbeatRequest", 99, {})
    with pytest.raises(KafkaCodecError, match="no Kafka message definition"):
        schema("NoSuchRequest")
    assert decode("FindCoordinatorRequest", 0, b"\x00\x01g") == {
        "key": "g", "key_type": 0, "coordinator_keys": []}  # fmt: skip
    assert isinstance(decode("DescribeClusterResponse", 0, encode(
        "DescribeClusterResponse", 0, {}))["cluster_id"], str)  # fmt: skip
    assert uuid.UUID(int=0) == decode("MetadataResponse", 12, encode("MetadataResponse", 12, {
        "topics": [{"name": "t"}]}))["topics"][0]["topic_id"]  # fmt: skip


# ---- against kafka-python's hand-written structs -------------------------------------------------


def _kafka_python_structs() -> dict[tuple[int, str], list[Any]]:
    """(api key, "Request"/"Response") → kafka-python's struct classes, indexed by version."""
    old = importlib.import_module("kafka.protocol.old")
    found: dict[tuple[int, str], list[Any]] = {}
    for info in pkgutil.iter_modules(old.__path__):
        module = importlib.import_module(f"kafka.protocol.old.{info.name}")
        for attr, obj in vars(module).items():
            if isinstance(obj, list) and obj and hasattr(obj[0], "API_KEY"):
                kind = "Request" if attr.endswith("Request") else "Response"
                found[(obj[0].API_KEY, kind)] = obj
    return found


def _oracle_cases() -> list[tuple[str, int]]:
    structs = _kafka_python_structs()
    cases = []
    for name in schema_names():
        found = schema(name)
        kind = "Request" if name.endswith("Request") else "Response"
        if found.api_key is None or (found.api_key, kind) not in structs:
            continue
        theirs = structs[(found.api_key, kind)]
        for version in range(found.valid.low, min(found.valid.high, len(theirs) - 1) + 1):
            if (name, version) not in _KAFKA_PYTHON_SLIPS:
                cases.append((name, version))
    return cases


# kafka-python 3.0's own mistakes: its AlterConfigsResponse list holds AlterConfigsRequest_v1
_KAFKA_PYTHON_SLIPS = {("AlterConfigsResponse", 1)}


ORACLE = _oracle_cases()


def test_kafka_python_covers_the_apis_we_serve() -> None:
    assert len({name for name, _ in ORACLE}) >= 40 and len(ORACLE) >= 200


@pytest.mark.parametrize(("name", "version"), ORACLE, ids=[f"{n}-v{v}" for n, v in ORACLE])
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_kafka_python_reads_what_we_write(name: str, version: int, data: Any) -> None:
    """kafka-python decodes our bytes, consuming all of them, and writes the same bytes back."""
    found = schema(name)
    kind = "Request" if name.endswith("Request") else "Response"
    theirs = _STRUCTS[(found.api_key, kind)][version]
    flexible = version in found.flexible
    drawn = data.draw(values(found.fields, version, flexible, tags=False))
    if name == "ApiVersionsResponse":
        drawn["error_code"] = 0  # kafka-python reads an error answer as v0 (brokers send it so)
    ours = encode(name, version, drawn)
    stream = io.BytesIO(ours)
    parsed = theirs.decode(stream)
    assert stream.read() == b"", "kafka-python left bytes unread"
    assert bytes(parsed.encode()) == ours


_STRUCTS = _kafka_python_structs()
