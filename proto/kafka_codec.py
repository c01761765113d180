"""Kafka's wire format, read from Kafka's own message definitions. Pure: bytes in, dicts out.

The schemas are Apache Kafka's published JSON message definitions
(``kafka_messages/*.json``, Apache License 2.0, from apache/kafka's
``clients/src/main/resources/common/message``): one file per request, response and header, each
field with the versions it appears in, whether it is nullable, tagged, or a nested struct. This
module interprets them — no struct is written by hand — so an API gains a version by updating
its JSON file.

Values are plain dicts keyed by the fields' names in snake_case (``ErrorCode`` → ``error_code``);
arrays of structs are lists of dicts, ``uuid`` is ``uuid.UUID``, ``records`` and ``bytes`` are
bytes (or any buffer). ``encode`` fills a missing field with its default and refuses a field the
schema does not have; ``decode`` returns every field of the schema, defaults for those absent
from the version read. Encoding, as Kafka's protocol guide gives it:

- int8/16/32/64, uint16/32, float64: big-endian; bool: one byte; uuid: 16 bytes;
- classic versions: string = int16 length + UTF-8 (-1: null); bytes/records = int32 length
  (-1: null); array = int32 count (-1: null);
- flexible versions (``flexibleVersions``): the compact forms — lengths and counts as unsigned
  varints of n + 1 (0: null) — and after every struct's fields its tagged fields: an unsigned
  varint count, then per field (in tag order) its tag, its size, its value; only fields whose
  value differs from the default are written, unknown tags are skipped when read.

Worked example: ApiVersionsRequest v3 with client_software_name "kc" and version "1" is
``03 6b 63 02 31 00`` — "kc" as a compact string (length 2 + 1), "1" likewise, no tagged fields.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "KafkaCodecError",
    "Schema",
    "decode",
    "encode",
    "schema",
    "schema_names",
]

_SCHEMA_DIR = "kafka_messages"


class KafkaCodecError(ValueError):
    """Bytes that do not parse as the message, or a value that does not fit its schema."""


# ---- version ranges -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versions:
    low: int
    high: int  # inclusive; a large number for "N+"

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high

    @staticmethod
    def parse(text: str | None) -> Versions:
        if text is None or text == "none":
            return _NONE
        if text.endswith("+"):
            return Versions(int(text[:-1]), 1 << 15)
        low, _, high = text.partition("-")
        return Versions(int(low), int(high or low))


_NONE = Versions(1, 0)  # contains nothing

# ---- the schema ---------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


_PRIMITIVES = frozenset(
    {"bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64", "string", "bytes",
     "uuid", "records"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # snake_case
    type: str  # a primitive, "[]" + element, or a struct's name
    versions: Versions
    nullable: Versions
    tagged: Versions
    tag: int | None
    flexible: Versions | None  # a field's own "flexibleVersions" ("none" for the header's ClientId)
    default: Any
    fields: tuple[Field, ...]  # a struct's (or an array of structs') fields

    @property
    def element(self) -> str:
        return self.type[2:]

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def is_struct(self) -> bool:
        return not self.is_array and self.type not in _PRIMITIVES


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    api_key: int | None
    kind: str  # request, response, header, data
    valid: Versions
    flexible: Versions
    fields: tuple[Field, ...]


def _default(type_: str, given: Any) -> Any:
    if type_.startswith("[]"):
        return []
    if given is not None:
        if given == "null":
            return None
        if type_ == "bool":
            return str(given).lower() == "true"
        if type_ == "float64":
            return float(given)
        if type_ in ("string",):
            return str(given)
        return int(str(given), 0)
    return {
        "bool": False,
        "float64": 0.0,
        "string": "",
        "bytes": b"",
        "uuid": uuid.UUID(int=0),
        "records": None,
    }.get(type_, 0 if type_ in _PRIMITIVES else None)


def _field(spec: Mapping[str, Any], structs: Mapping[str, Any]) -> Field:
    type_ = spec["type"]
    element = type_[2:] if type_.startswith("[]") else type_
    nested = spec.get("fields")
    if nested is None and element not in _PRIMITIVES:
        nested = structs.get(element, {}).get("fields")
        if nested is None:
            raise KafkaCodecError(f"struct {element} has no definition")
    return Field(
        name=_snake(spec["name"]),
        type=type_,
        versions=Versions.parse(spec.get("versions")),
        nullable=Versions.parse(spec.get("nullableVersions")),
        tagged=Versions.parse(spec.get("taggedVersions")),
        tag=spec.get("tag"),
        flexible=Versions.parse(spec["flexibleVersions"]) if "flexibleVersions" in spec else None,
        default=_default(type_, spec.get("default")),
        fields=tuple(_field(f, structs) for f in nested or ()),
    )


def _load(text: str) -> Schema:
    body = json.loads(re.sub(r"^\s*//.*$|\s//.*$", "", text, flags=re.MULTILINE))
    structs = {s["name"]: s for s in body.get("commonStructs", ())}
    return Schema(
        name=body["name"],
        api_key=body.get("apiKey"),
        kind=body["type"],
        valid=Versions.parse(body["validVersions"]),
        flexible=Versions.parse(body.get("flexibleVersions", "none")),
        fields=tuple(_field(f, structs) for f in body["fields"]),
    )


@cache
def schema(name: str) -> Schema:
    """The schema of message ``name`` (e.g. "MetadataRequest", "ResponseHeader")."""
    try:
        text = resources.files(__package__).joinpath(_SCHEMA_DIR, f"{name}.json").read_text()
    except FileNotFoundError as exc:
        raise KafkaCodecError(f"no Kafka message definition {name!r}") from exc
    return _load(text)


def schema_names() -> list[str]:
    folder = resources.files(__package__).joinpath(_SCHEMA_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


# ---- writing ------------------------------------------------------------------------------------

_INTS: dict[str, struct.Struct] = {
    "int8": struct.Struct(">b"),
    "int16": struct.Struct(">h"),
    "uint16": struct.Struct(">H"),
    "int32": struct.Struct(">i"),
    "uint32": struct.Struct(">I"),
    "int64": struct.Struct(">q"),
    "float64": struct.Struct(">d"),
}


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _is_flexible(field: Field, version: int, flexible: bool) -> bool:
    return flexible and (field.flexible is None or version in field.flexible)


def _write_value(out: bytearray, field: Field, version: int, flexible: bool, value: Any) -> None:
    compact = _is_flexible(field, version, flexible)
    if value is None and version not in field.nullable:
        raise KafkaCodecError(f"{field.name} may not be null in version {version}")
    if field.is_array:
        if value is None:
            out += _uvarint(0) if compact else _INTS["int32"].pack(-1)
            return
        out += _uvarint(len(value) + 1) if compact else _INTS["int32"].pack(len(value))
        element = Field(field.name, field.element, field.versions, _NONE, _NONE, None,
                        field.flexible, None, field.fields)  # fmt: skip
        for item in value:
            _write_value(out, element, version, flexible, item)
        return
    if field.is_struct:
        _write_struct(out, field.fields, version, flexible, value, field.name)
        return
    kind = field.type
    try:
        if kind in _INTS:
            out += _INTS[kind].pack(value)
        elif kind == "bool":
            out.append(1 if value else 0)
        elif kind == "uuid":
            out += (value or uuid.UUID(int=0)).bytes
        else:  # string, bytes, records
            data = value.encode() if kind == "string" and value is not None else value
            if data is None:
                out += _uvarint(0) if compact else (_INTS["int16" if kind == "string" else "int32"]
                                                    .pack(-1))  # fmt: skip
            else:
                size = memoryview(data).nbytes
                if compact:
                    out += _uvarint(size + 1)
                else:
                    out += _INTS["int16" if kind == "string" else "int32"].pack(size)
                out += data
    except (struct.error, AttributeError, TypeError) as exc:
        raise KafkaCodecError(f"{field.name}: {value!r} is not a {kind}: {exc}") from exc


def _write_struct(
    out: bytearray,
    fields: tuple[Field, ...],
    version: int,
    flexible: bool,
    value: Mapping[str, Any] | None,
    where: str,
) -> None:
    value = value or {}
    known = {f.name for f in fields}
    unknown = set(value) - known
    if unknown:
        raise KafkaCodecError(f"{where}: no field(s) {sorted(unknown)} in the schema")
    tagged: list[tuple[int, bytes]] = []
    for field in fields:
        if version not in field.versions:
            continue
        item = value.get(field.name, field.default)
        if flexible and version in field.tagged:
            if item != field.default:
                assert field.tag is not None
                body = bytearray()
                _write_value(body, field, version, flexible, item)
                tagged.append((field.tag, bytes(body)))
            continue
        _write_value(out, field, version, flexible, item)
    if flexible:
        out += _uvarint(len(tagged))
        for tag, body in sorted(tagged):
            out += _uvarint(tag) + _uvarint(len(body)) + body


def encode(name: str, version: int, value: Mapping[str, Any]) -> bytes:
    """Message ``name`` at ``version`` (a header's version is its own: 0-2 for requests, 0-1 for
    responses)."""
    found = schema(name)
    if version not in found.valid:
        raise KafkaCodecError(f"{name} has no version {version}")
    out = bytearray()
    _write_struct(out, found.fields, version, version in found.flexible, value, name)
    return bytes(out)


# ---- reading ------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise KafkaCodecError(f"message ends at byte {len(self.data)}: {n} more wanted")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> Any:
        return fmt.unpack(self.take(fmt.size))[0]

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise KafkaCodecError("varint longer than 64 bits")


def _read_value(reader: _Reader, field: Field, version: int, flexible: bool) -> Any:
    compact = _is_flexible(field, version, flexible)
    if field.is_array:
        count = reader.uvarint() - 1 if compact else reader.unpack(_INTS["int32"])
        if count < 0:
            return None
        if count > len(reader.data) - reader.pos:  # every element takes at least a byte
            raise KafkaCodecError(f"{field.name}: {count} elements cannot fit")
        element = Field(field.name, field.element, field.versions, _NONE, _NONE, None,
                        field.flexible, None, field.fields)  # fmt: skip
        return [_read_value(reader, element, version, flexible) for _ in range(count)]
    if field.is_struct:
        return _read_struct(reader, field.fields, version, flexible)
    kind = field.type
    if kind in _INTS:
        return reader.unpack(_INTS[kind])
    if kind == "bool":
        return reader.take(1)[0] != 0
    if kind == "uuid":
        return uuid.UUID(bytes=bytes(reader.take(16)))
    if compact:
        size = reader.uvarint() - 1
    else:
        size = reader.unpack(_INTS["int16" if kind == "string" else "int32"])
    if size < 0:
        return None
    chunk = reader.take(size)
    if kind == "string":
        try:
            return str(chunk, "utf-8")
        except UnicodeDecodeError as exc:
            raise KafkaCodecError(f"{field.name} is not UTF-8") from exc
    return bytes(chunk)


def _read_struct(
    reader: _Reader, fields: tuple[Field, ...], version: int, flexible: bool
) -> dict[str, Any]:
    value: dict[str, Any] = {}
    by_tag: dict[int, Field] = {}
    for field in fields:
        if version not in field.versions:
            value[field.name] = field.default
        elif flexible and version in field.tagged:
            value[field.name] = field.default
            assert field.tag is not None
            by_tag[field.tag] = field
        else:
            value[field.name] = _read_value(reader, field, version, flexible)
    if flexible:
        for _ in range(reader.uvarint()):
            tag, size = reader.uvarint(), reader.uvarint()
            body = reader.take(size)
            field = by_tag.get(tag)
            if field is not None:  # an unknown tag: a newer peer's field, skipped
                inner = _Reader(body)
                value[field.name] = _read_value(inner, field, version, flexible)
    return value


def decode(name: str, version: int, data: bytes | memoryview, *, whole: bool = True) -> Any:
    """Message ``name`` at ``version`` from ``data``; ``whole``: nothing may follow it. With
    ``whole=False``, returns (value, bytes consumed) — for a header followed by its body."""
    found = schema(name)
    if version not in found.valid:
        raise KafkaCodecError(f"{name} has no version {version}")
    reader = _Reader(data)
    value = _read_struct(reader, found.fields, version, version in found.flexible)
    if not whole:
        return value, reader.pos
    if reader.pos != len(reader.data):
        raise KafkaCodecError(f"{len(reader.data) - reader.pos} bytes after the {name}")
    return value
