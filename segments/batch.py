"""The record batch: raftlog's unit of storage, replication and transfer.

Pure: no IO. Builders are owned by one producer thread; views are immutable.

A producer packs records into one batch; the broker validates the fixed header and the CRC,
stamps ``base_offset`` and ``leader_epoch``, and appends the bytes as they are. The broker never
parses records (DESIGN.md, principle 2): its cost per batch is O(1) Python operations.

On-disk and on-wire format (big-endian; this is the one place it is written down)::

    offset size field               meaning
     0     8   base_offset         int64  offset of the first record; stamped by the leader
     8     4   batch_length        int32  bytes after this field (= total size - 12)
    12     4   leader_epoch        int32  epoch of the leader that appended it; stamped
    16     1   magic               int8   format version, always 2
    17     4   crc                 uint32 CRC-32C of bytes [21, end): attributes .. last record
    21     2   attributes          int16  bits 0-2 compression codec, bit 4 transactional,
                                          bit 5 control batch, bit 6 delete horizon (below)
    23     4   last_offset_delta   int32  record_count - 1 (a compacted batch: >= that)
    27     8   first_timestamp     int64  ms since the epoch (the delete horizon if bit 6)
    35     8   max_timestamp       int64  ms since the epoch, >= first_timestamp unless bit 6
    43     8   producer_id         int64  -1 when not idempotent
    51     2   producer_epoch      int16  -1 when not idempotent
    53     4   base_sequence       int32  -1 when not idempotent
    57     4   record_count        int32  >= 1 (a compacted batch: >= 0)
    61     ..  payload             the records, compressed as one block by the codec

The CRC starts after itself, so stamping base_offset and leader_epoch never changes it, and a
follower can check the bytes it fetched against the CRC the producer computed.

Compacted batches (``cleaner.py``, Kafka's log cleaner): a produced batch is dense —
``record_count == last_offset_delta + 1`` and its records hold offset deltas 0, 1, 2, … — and
``validate_batch`` (the produce path) insists on it. The cleaner removes records but never moves
one, so a stored batch may hold fewer: offset deltas strictly increase within
``[0, last_offset_delta]`` with gaps, and ``record_count`` may be 0 (an *empty batch*: a header
alone, kept so offsets stay contiguous from batch to batch and a producer's last sequence
survives). Worked example: the batch at 50 holding keys a, b, a (offsets 50..52) compacts to one
record at offset delta 2 — ``base_offset=50, last_offset_delta=2, record_count=1`` — and a read
of offset 50 or 51 returns it, at offset 52; the next batch still starts at 53. When the cleaner
first keeps a tombstone (a null value) it sets attributes bit 6 and stores the *delete horizon*
(now + ``delete.retention.ms``) in ``first_timestamp``, re-basing the records' timestamp deltas
on it so their timestamps do not change (Kafka's KIP-534); after the horizon the tombstones go.
Readers of stored or fetched bytes (``iter_batches``, recovery, ``iter_records``) accept both.

Each record inside the (decompressed) payload is Kafka's v2 record, so a batch is byte for byte
what a Kafka client produces and reads (varint = zigzag-encoded variable-length integer, as in
protobuf's sint64; -1 encodes as the single byte 0x01)::

    length:varint  attributes:int8 (0)  timestamp_delta:varint  offset_delta:varint
    key_length:varint (-1 = null)  key  value_length:varint (-1 = null)  value
    header_count:varint  then per header: key_length:varint key(UTF-8)  value_length:varint value

``length`` counts the bytes after itself. Worked example: value ``b"hi"``, no key, no headers,
offset delta 1, timestamp delta 0 is ``10 00 00 02 01 04 68 69 00`` — length 8 (zigzag 16 =
0x10), attributes 0, timestamp delta 0, offset delta 1 (0x02), null key (0x01), value length 2
(0x04), "hi", no headers. A batch of 3 records appended when the log end offset is 50 gets
``base_offset=50``, ``last_offset_delta=2``; its records hold offset_delta 0, 1, 2 and are read
back at offsets 50, 51, 52; the next batch starts at 53.

Readers trust nothing but the CRC, and the CRC only says the producer meant these bytes: a
producer may store a header that lies about its records, or garbage under a valid CRC. So
``iter_records`` checks every count, length and offset delta against the payload, and every codec
inflates with a hard limit on its output (``uncompressed_bytes_max``), stopping as soon as it is
passed — a 1 MB gzip batch that inflates to 1 GB costs the reader the limit, not the gigabyte.
Anything that does not add up is a ``CorruptRecordError`` naming the batch's offset.
"""

from __future__ import annotations

import enum
import gzip
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c as _crc32c
import lz4.frame
import snappy
import zstandard

from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    MessageTooLargeError,
    RecordTooLargeError,
)

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "UNCOMPRESSED_BYTES_MAX",
    "BatchBuilder",
    "BatchHeader",
    "Compression",
    # the errors a reader of batches sees, re-exported so a client needs only this module
    "CorruptRecordError",
    "RawRecord",
    "Record",
    "RecordTooLargeError",
    "batch_payload",
    "build_batch",
    "encode_batch",
    "iter_batches",
    "iter_raw_records",
    "iter_records",
    "read_header",
    "rebased_record",
    "stamp",
    "validate_batch",
]

MAGIC = 2
HEADER_BYTES = 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the prefix before batch_length starts counting
CRC_START = 21

_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")  # base_offset, batch_length
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
assert _HEADER.size == HEADER_BYTES

_CODEC_MASK = 0x07
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40  # first_timestamp holds the delete horizon (compacted batches)


class Compression(enum.IntEnum):
    """Codec ids, as stored in bits 0-2 of the attributes (Kafka's numbering)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, name: str | Compression | None) -> Compression:
        if name is None:
            return cls.NONE
        if isinstance(name, Compression):
            return name
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidRecordError(
                f"unknown compression {name!r}; one of: " + ", ".join(c.name.lower() for c in cls)
            ) from None


_ZSTD_COMPRESSOR = zstandard.ZstdCompressor(level=3)
_ZSTD_DECOMPRESSOR = zstandard.ZstdDecompressor()


def _compress(codec: Compression, data: bytes) -> bytes:
    match codec:
        case Compression.NONE:
            return data
        case Compression.GZIP:
            return gzip.compress(data, compresslevel=6, mtime=0)
        case Compression.SNAPPY:
            return bytes(snappy.compress(data))
        case Compression.LZ4:
            return bytes(lz4.frame.compress(data))
        case Compression.ZSTD:
            return bytes(_ZSTD_COMPRESSOR.compress(data))


# The default bound on one batch's inflated payload. A fixed size, not a ratio of the compressed
# size: honest ratios run from 2x (random-ish values) to 1000x (zeros under gzip or zstd), so any
# ratio low enough to stop a bomb refuses honest data, and a ratio bound grows with the size the
# attacker chooses. Our producer cuts batches at batch_bytes_max (256 KiB by default) of
# uncompressed records, so 64 MiB is 256x headroom; a consumer raises it with its fetch budget.
UNCOMPRESSED_BYTES_MAX = 64 << 20
_STREAM_CHUNK_BYTES = 1 << 20  # a frame without a content size: inflate this much per step


def _too_large(codec: Compression, uncompressed_bytes_max: int) -> RecordTooLargeError:
    return RecordTooLargeError(
        f"{codec.name.lower()} payload inflates past the {uncompressed_bytes_max} byte limit "
        "(uncompressed_bytes_max); stopped there"
    )


def _inflate_gzip(data: bytes, limit: int) -> bytes:
    """gzip members, one after another, never producing more than ``limit`` + 1 bytes."""
    chunks: list[bytes] = []
    total = 0
    rest = data
    while rest:  # one pass per member; each member eats >= 18 input bytes, so this ends
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the gzip wrapper only
        out = inflater.decompress(rest, limit - total + 1)  # max_length >= 1 (0 = unbounded)
        total += len(out)
        if total > limit:
            raise _too_large(Compression.GZIP, limit)
        if not inflater.eof:
            raise CorruptRecordError("gzip payload is truncated")
        chunks.append(out)
        rest = inflater.unused_data
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _inflate_lz4(data: bytes, limit: int) -> bytes:
    """LZ4 frames, one after another, never producing more than ``limit`` + 1 bytes."""
    chunks: list[bytes] = []
    total = 0
    rest = data
    while rest:  # one pass per frame; each frame eats >= 7 input bytes, so this ends
        declared = lz4.frame.get_frame_info(rest)["content_size"]  # 0: the frame does not say
        if declared > limit - total:
            raise _too_large(Compression.LZ4, limit)
        inflater = lz4.frame.LZ4FrameDecompressor()
        # max_length is allocated up front: ask for what the frame declares (+1 to see a lie),
        # else a chunk at a time, never the whole limit for a small frame
        step = declared + 1 if declared else _STREAM_CHUNK_BYTES
        out = inflater.decompress(rest, max_length=min(step, limit - total + 1))
        while True:  # ends: every pass adds > 0 bytes to a total bounded by the limit
            total += len(out)
            if total > limit:
                raise _too_large(Compression.LZ4, limit)
            chunks.append(out)
            if inflater.eof or inflater.needs_input or not out:
                break
            out = inflater.decompress(b"", max_length=min(_STREAM_CHUNK_BYTES, limit - total + 1))
        if not inflater.eof:
            raise CorruptRecordError("lz4 payload is truncated")
        rest = inflater.unused_data
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _inflate_zstd(data: bytes, limit: int) -> bytes:
    declared = zstandard.frame_content_size(data)  # -1: the frame does not say
    if declared > limit:
        raise _too_large(Compression.ZSTD, limit)
    if declared >= 0:
        # the fast path (our producer's frames): zstd writes into a buffer of exactly the
        # declared size and fails if the frame holds more, so a lying header cannot inflate it
        return bytes(_ZSTD_DECOMPRESSOR.decompress(data))
    chunks: list[bytes] = []
    total = 0
    with _ZSTD_DECOMPRESSOR.stream_reader(data, read_across_frames=True) as reader:
        while True:  # ends: each read returns > 0 bytes until EOF, and total is bounded
            out = reader.read(min(_STREAM_CHUNK_BYTES, limit - total + 1))
            if not out:
                break
            total += len(out)
            if total > limit:
                raise _too_large(Compression.ZSTD, limit)
            chunks.append(out)
    return b"".join(chunks)


def _snappy_length(data: bytes) -> int:
    """The uncompressed length raw snappy declares in its varint preamble (<= 5 bytes)."""
    length = 0
    for i in range(min(len(data), 5)):
        byte = data[i]
        length |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return length
    raise CorruptRecordError("snappy payload has no length preamble")


_XERIAL_MAGIC = b"\x82SNAPPY\x00"  # snappy-java's stream framing, which Kafka's Java client writes
_XERIAL_HEADER = 16  # the magic, then two int32 versions


def _inflate_snappy(data: bytes, limit: int) -> bytes:
    """Raw snappy (what we write) or xerial-framed blocks (what Kafka's Java client and
    kafka-python write: the magic, versions, then int32-length-prefixed raw blocks)."""
    if not data.startswith(_XERIAL_MAGIC):
        return _inflate_snappy_block(data, limit)
    out = bytearray()
    position = _XERIAL_HEADER
    while position < len(data):
        if position + 4 > len(data):
            raise CorruptRecordError("xerial snappy block length cut short")
        (size,) = _INT32.unpack_from(data, position)
        block = data[position + 4 : position + 4 + size]
        if size < 0 or len(block) != size:
            raise CorruptRecordError(f"xerial snappy block of {size} bytes cut short")
        out += _inflate_snappy_block(block, limit - len(out))
        position += 4 + size
    return bytes(out)


def _inflate_snappy_block(data: bytes, limit: int) -> bytes:
    # raw snappy allocates exactly the length its preamble declares and fails if the stream
    # disagrees, so checking the preamble first bounds the output
    if _snappy_length(data) > limit:
        raise _too_large(Compression.SNAPPY, limit)
    return bytes(snappy.decompress(data))


def _decompress(codec: Compression, data: bytes, uncompressed_bytes_max: int) -> bytes:
    """Inflate ``data``, stopping as soon as the output passes ``uncompressed_bytes_max``.

    Raises RecordTooLargeError past the limit, CorruptRecordError when the codec refuses the
    bytes; never holds more than about the limit in memory, whatever the payload claims.
    """
    try:
        match codec:
            case Compression.NONE:
                return data  # already in memory: the batch's own size bounds it
            case Compression.GZIP:
                return _inflate_gzip(data, uncompressed_bytes_max)
            case Compression.SNAPPY:
                return _inflate_snappy(data, uncompressed_bytes_max)
            case Compression.LZ4:
                return _inflate_lz4(data, uncompressed_bytes_max)
            case Compression.ZSTD:
                return _inflate_zstd(data, uncompressed_bytes_max)
    except CorruptRecordError:
        raise
    except Exception as exc:  # each codec raises its own type; all mean the same thing here
        raise CorruptRecordError(
            f"{codec.name.lower()} payload does not decompress: {exc}"
        ) from exc


class BatchHeader(NamedTuple):
    """The fixed header of one batch, as read from bytes. Invariants hold once validated.

    A named tuple, not a frozen dataclass: every produced, replicated, read and recovered batch
    builds one, and a frozen dataclass's 13 ``object.__setattr__`` calls cost 1.6 µs against the
    tuple's 0.4 µs (measured with ``bench.storage``'s 16 KiB batches).
    """

    base_offset: int
    batch_length: int  # total size = batch_length + 12
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int  # == record_count - 1; >= that in a compacted batch
    first_timestamp: int  # the delete horizon when has_delete_horizon
    max_timestamp: int  # >= first_timestamp unless has_delete_horizon
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int  # >= 1; >= 0 in a compacted batch

    @property
    def size_bytes(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & _CODEC_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & DELETE_HORIZON_FLAG)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF


def read_header(buf: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Parse the header at ``position`` without checking anything but that it is there."""
    if len(buf) - position < HEADER_BYTES:
        raise CorruptRecordError(
            f"batch header needs {HEADER_BYTES} bytes, {len(buf) - position} available"
        )
    return BatchHeader._make(_HEADER.unpack_from(buf, position))


def validate_batch(
    buf: bytes | bytearray | memoryview, batch_bytes_max: int | None = None
) -> BatchHeader:
    """Check that ``buf`` is exactly one well-formed batch; return its header.

    This is everything the broker does to a produced batch: O(1) Python work plus one CRC pass
    at C speed. Records are not decoded.
    """
    size = len(buf)
    if batch_bytes_max is not None and size > batch_bytes_max:
        raise MessageTooLargeError(
            f"batch of {size} bytes is over max.message.bytes={batch_bytes_max}"
        )
    header = read_header(buf)
    if header.magic != MAGIC:
        raise CorruptRecordError(f"unsupported batch magic {header.magic} (expected {MAGIC})")
    if header.batch_length + LOG_OVERHEAD != size:
        raise CorruptRecordError(
            f"batch_length {header.batch_length} does not match the {size} bytes received"
        )
    crc = _crc32c.crc32c(memoryview(buf)[CRC_START:])
    if crc != header.crc:
        raise CorruptRecordError(f"CRC mismatch: header says {header.crc:#010x}, bytes {crc:#010x}")
    _check_fields(header, produced=True)
    return header


_CODEC_MAX = max(c.value for c in Compression)  # computed once: max() over an Enum is slow


def _check_fields(header: BatchHeader, *, produced: bool = False) -> None:
    """The header's own rules. ``produced``: a producer's batch, which must be dense (module
    docstring); stored and fetched batches may be compacted."""
    count = header.record_count
    delta = header.last_offset_delta
    if count != delta + 1 or count < 1:  # not a dense batch: only the cleaner writes these
        if produced:
            if count < 1:
                raise InvalidRecordError(f"batch has record_count {count}; at least 1")
            raise InvalidRecordError(f"last_offset_delta {delta} != record_count - 1 ({count - 1})")
        if count < 0 or delta < 0 or delta < count - 1:
            raise InvalidRecordError(f"record_count {count} does not fit last_offset_delta {delta}")
    if header.attributes & _CODEC_MASK > _CODEC_MAX:
        raise InvalidRecordError(f"unknown compression codec {header.attributes & _CODEC_MASK}")
    if header.attributes & DELETE_HORIZON_FLAG:
        if produced:
            raise InvalidRecordError("a produced batch cannot carry a delete horizon (bit 6)")
    elif header.max_timestamp < header.first_timestamp:
        raise InvalidRecordError("max_timestamp is before first_timestamp")


def stamp(buf: bytearray | memoryview, base_offset: int, leader_epoch: int) -> None:
    """Write base_offset and leader_epoch into a batch in place. The CRC stays valid."""
    _INT64.pack_into(buf, 0, base_offset)
    _INT32.pack_into(buf, 12, leader_epoch)


def stamped_prefix(
    buf: bytes | bytearray | memoryview, base_offset: int, leader_epoch: int
) -> bytes:
    """The first 16 bytes of ``buf`` with new base_offset and leader_epoch.

    Lets the log append ``prefix + buf[16:]`` with one ``writev`` instead of copying the batch.
    """
    (batch_length,) = _INT32.unpack_from(buf, 8)
    return _STAMP_FULL.pack(base_offset, batch_length, leader_epoch)


_STAMP_FULL = struct.Struct(">qii")


def iter_batches(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each whole batch in ``buf``; stop at a partial tail.

    A batch that is complete but fails its checks raises CorruptRecordError: callers that recover
    logs catch it and truncate there.
    """
    view = memoryview(buf)
    position = 0
    end = len(view)
    while end - position >= HEADER_BYTES:
        header = BatchHeader._make(_HEADER.unpack_from(view, position))
        size = header.batch_length + LOG_OVERHEAD
        if header.batch_length < HEADER_BYTES - LOG_OVERHEAD or header.magic != MAGIC:
            raise CorruptRecordError(f"corrupt batch header at byte {position}")
        if end - position < size:
            return
        if verify_crc:
            crc = _crc32c.crc32c(view[position + CRC_START : position + size])
            if crc != header.crc:
                raise CorruptRecordError(f"CRC mismatch in batch at byte {position}")
        try:
            _check_fields(header)
        except InvalidRecordError as exc:  # stored or fetched bytes: that is corruption
            raise CorruptRecordError(f"batch at byte {position}: {exc}") from exc
        yield position, header
        position += size


class _VarintError(ValueError):
    pass


def _zigzag(n: int) -> bytes:
    """``n`` as Kafka's (and protobuf's sint64) zigzag varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_ZIGZAG_TABLE = 1 << 14  # the encodings of 0 .. 16383, looked up on the builder's hot path
_ZIGZAG = [_zigzag(n) for n in range(_ZIGZAG_TABLE)]
_NULL = _zigzag(-1)  # b"\x01": a null key, value or header value


def _read_varint(data: bytes, p: int) -> tuple[int, int]:
    """The zigzag varint at ``p`` and the position after it (IndexError past the end)."""
    b = data[p]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), p + 1
    z = b & 0x7F
    shift = 7
    p += 1
    while True:
        b = data[p]
        p += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), p
        shift += 7
        if shift > 63:
            raise _VarintError("a varint longer than 10 bytes")


class Record(NamedTuple):
    """One record as a consumer sees it (a named tuple: one is built per record read, at half a
    frozen dataclass's cost)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def iter_records(
    batch: bytes | bytearray | memoryview, *, uncompressed_bytes_max: int = UNCOMPRESSED_BYTES_MAX
) -> Iterator[Record]:
    """Decode the records of one whole batch (clients; the broker only to check the keys of a
    produce to a compacted topic, and to load the offsets topic into the group coordinator).

    Trusts nothing past the header's own fields: a record_count, offset delta or length that
    disagrees with the payload, a truncated record, a negative length, a payload that does not
    decompress — each raises CorruptRecordError with ``offset`` = the batch's base offset, and
    a payload inflating past ``uncompressed_bytes_max`` raises its subclass
    RecordTooLargeError. Nothing else escapes (no struct.error, IndexError, MemoryError).
    Records before the bad one have been yielded by then: a caller that treats a batch as a
    unit collects it first (the Consumer does). Does not check the CRC (``iter_batches`` does).
    """
    header = read_header(batch)
    base = header.base_offset
    size = header.size_bytes
    if not HEADER_BYTES <= size <= len(batch):
        raise CorruptRecordError(
            f"batch at offset {base} claims {size} bytes; {len(batch)} given", offset=base
        )
    try:
        _check_fields(header)
    except InvalidRecordError as exc:
        raise CorruptRecordError(f"batch at offset {base}: {exc}", offset=base) from exc
    payload = bytes(memoryview(batch)[HEADER_BYTES:size])
    try:
        data = _decompress(header.compression, payload, uncompressed_bytes_max)
    except CorruptRecordError as exc:  # keeps the class: RecordTooLargeError stays itself
        raise type(exc)(f"batch at offset {base}: {exc}", offset=base) from exc
    position = 0
    end = len(data)
    first_timestamp = header.first_timestamp
    varint = _read_varint
    # Every read below is bounded by ``data`` (IndexError past its end) and every slice by the
    # record's own end; the checks keep each loop moving forward and stop a lying count before it
    # builds objects out of garbage.
    index = 0
    last_delta = header.last_offset_delta
    previous_delta = -1
    try:
        for index in range(header.record_count):  # noqa: B007 (the error names it)
            # each varint below is read inline when it takes one or two bytes (lengths under
            # 8 KiB), through ``varint`` otherwise: the calls were half of a 100-byte record's cost
            b = data[position]
            if b < 0x80:
                length, p = (b >> 1) ^ -(b & 1), position + 1
            elif data[position + 1] < 0x80:
                z = (b & 0x7F) | (data[position + 1] << 7)
                length, p = (z >> 1) ^ -(z & 1), position + 2
            else:
                length, p = varint(data, position)
            record_end = p + length
            if length < 6 or record_end > end:  # 6: attributes + five one-byte varints
                raise _bad_record(base, position, f"length {length} overruns the payload")
            b = data[p + 1]
            if b < 0x80:
                ts_delta, p = (b >> 1) ^ -(b & 1), p + 2
            elif data[p + 2] < 0x80:
                z = (b & 0x7F) | (data[p + 2] << 7)
                ts_delta, p = (z >> 1) ^ -(z & 1), p + 3
            else:
                ts_delta, p = varint(data, p + 1)
            b = data[p]
            if b < 0x80:
                offset_delta, p = (b >> 1) ^ -(b & 1), p + 1
            elif data[p + 1] < 0x80:
                z = (b & 0x7F) | (data[p + 1] << 7)
                offset_delta, p = (z >> 1) ^ -(z & 1), p + 2
            else:
                offset_delta, p = varint(data, p)
            # strictly increasing within [0, last_offset_delta]: dense (== index) unless the
            # batch was compacted, when the cleaner's gaps are allowed
            if not last_delta >= offset_delta > previous_delta:
                raise _bad_record(base, position, f"offset_delta {offset_delta} out of order")
            previous_delta = offset_delta
            b = data[p]
            if b == 1:  # the null key: the common case
                key = None
                p += 1
            else:
                key_len, p = varint(data, p)
                if key_len < 0:
                    raise _bad_record(base, position, f"key length {key_len}")
                if p + key_len > record_end:
                    raise _bad_record(base, position, f"key length {key_len} overruns the record")
                key = data[p : p + key_len]
                p += key_len
            b = data[p]
            if b < 0x80:
                value_len, p = (b >> 1) ^ -(b & 1), p + 1
            elif data[p + 1] < 0x80:
                z = (b & 0x7F) | (data[p + 1] << 7)
                value_len, p = (z >> 1) ^ -(z & 1), p + 2
            else:
                value_len, p = varint(data, p)
            if value_len < 0:
                if value_len != -1:
                    raise _bad_record(base, position, f"value length {value_len}")
                value = None
            else:
                if p + value_len > record_end:
                    raise _bad_record(
                        base, position, f"value length {value_len} overruns the record"
                    )
                value = data[p : p + value_len]
                p += value_len
            headers: tuple[tuple[str, bytes | None], ...] = ()
            if data[p] == 0:  # no headers: the common case
                header_count = 0
                p += 1
            else:
                header_count, p = varint(data, p)
            if header_count:
                # each header takes >= 2 bytes: a count the record cannot hold is a lie
                if not 0 < header_count <= (record_end - p) >> 1:
                    raise _bad_record(base, position, f"header count {header_count}")
                found: list[tuple[str, bytes | None]] = []
                for _h in range(header_count):
                    hk_len, p = varint(data, p)
                    if hk_len < 0 or p + hk_len > record_end:
                        raise _bad_record(base, position, f"header key length {hk_len}")
                    hk = data[p : p + hk_len].decode("utf-8")
                    hv_len, p = varint(data, p + hk_len)
                    if hv_len < -1 or p + hv_len > record_end:
                        raise _bad_record(base, position, f"header value length {hv_len}")
                    hv = None if hv_len < 0 else data[p : p + hv_len]
                    p += max(hv_len, 0)
                    found.append((hk, hv))
                headers = tuple(found)
            if p != record_end:
                raise _bad_record(base, position, f"fields end at {p}, length says {record_end}")
            yield Record(base + offset_delta, first_timestamp + ts_delta, key, value, headers)
            position = record_end
    except (IndexError, UnicodeDecodeError, _VarintError) as exc:
        what = (
            f"record_count {header.record_count} but the payload ends after {index} records"
            if position == end
            else f"records do not decode: {exc}"
        )
        raise CorruptRecordError(f"batch at offset {base}: {what}", offset=base) from exc
    if position != end:
        raise CorruptRecordError(
            f"batch at offset {base}: {end - position} bytes after its "
            f"{header.record_count} records (record_count lies?)",
            offset=base,
        )


def _bad_record(base_offset: int, position: int, what: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"batch at offset {base_offset}: record at payload byte {position}: {what}",
        offset=base_offset,
    )


# ---- the cleaner's view of a batch: records as byte ranges, and a batch rebuilt around them ----


class RawRecord(NamedTuple):
    """One record of a decompressed payload as a byte range, for the cleaner (``cleaner.py``),
    which keeps records byte for byte or drops them — it never re-encodes a record's content."""

    start: int  # the record's length varint in the payload
    end: int  # one past its last byte
    attributes_at: int  # where its attributes byte is (the body after the length)
    after_timestamp: int  # where its offset delta starts (what follows the timestamp delta)
    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    tombstone: bool  # a null value


def batch_payload(
    batch: bytes | bytearray | memoryview,
    header: BatchHeader,
    *,
    uncompressed_bytes_max: int = UNCOMPRESSED_BYTES_MAX,
) -> bytes:
    """The decompressed records of one whole batch (CorruptRecordError if it does not inflate,
    RecordTooLargeError past ``uncompressed_bytes_max``)."""
    payload = bytes(memoryview(batch)[HEADER_BYTES : header.size_bytes])
    return _decompress(header.compression, payload, uncompressed_bytes_max)


def iter_raw_records(header: BatchHeader, data: bytes) -> Iterator[RawRecord]:
    """The records of a decompressed payload ``data`` as byte ranges, checked as ``iter_records``
    checks them (lengths inside the payload, offset deltas strictly increasing within
    ``[0, last_offset_delta]``, exactly ``record_count`` records); CorruptRecordError if not."""
    base = header.base_offset
    position = 0
    previous = -1
    end = len(data)
    try:
        for _ in range(header.record_count):
            length, body = _read_varint(data, position)
            record_end = body + length
            if length < 6 or record_end > end:
                raise _bad_record(base, position, f"length {length} overruns the payload")
            ts_delta, p = _read_varint(data, body + 1)
            after_timestamp = p
            offset_delta, p = _read_varint(data, p)
            if not header.last_offset_delta >= offset_delta > previous:
                raise _bad_record(base, position, f"offset_delta {offset_delta} out of order")
            previous = offset_delta
            key_len, p = _read_varint(data, p)
            key: bytes | None = None
            if key_len >= 0:
                if p + key_len > record_end:
                    raise _bad_record(base, position, f"key length {key_len} overruns the record")
                key = data[p : p + key_len]
                p += key_len
            elif key_len != -1:
                raise _bad_record(base, position, f"key length {key_len}")
            value_len, p = _read_varint(data, p)
            if value_len < -1 or p + max(value_len, 0) > record_end:
                raise _bad_record(base, position, f"value length {value_len}")
            yield RawRecord(
                position, record_end, body, after_timestamp, offset_delta, ts_delta, key,
                value_len == -1,
            )  # fmt: skip
            position = record_end
    except (IndexError, _VarintError) as exc:
        raise CorruptRecordError(
            f"batch at offset {base}: records do not decode: {exc}", offset=base
        ) from exc
    if position != end:
        raise CorruptRecordError(
            f"batch at offset {base}: {end - position} bytes after its records", offset=base
        )


def rebased_record(data: bytes, record: RawRecord, timestamp_delta: int) -> bytes:
    """``record`` with a new timestamp delta (its batch's first timestamp changed), the rest of
    its bytes as they were."""
    body = (
        data[record.attributes_at : record.attributes_at + 1]
        + _zigzag(timestamp_delta)
        + data[record.after_timestamp : record.end]
    )
    return _zigzag(len(body)) + body


def encode_batch(
    header: BatchHeader,
    records: bytes,
    *,
    record_count: int,
    attributes: int,
    first_timestamp: int,
    last_offset_delta: int | None = None,
) -> bytes:
    """A batch with ``header``'s offsets, epoch, producer fields and max timestamp around the
    uncompressed ``records`` (compressed here with the codec ``attributes`` names), its length
    and CRC computed. What the cleaner writes: the records it kept, with their offsets."""
    codec = Compression(attributes & _CODEC_MASK)
    payload = _compress(codec, records) if records else b""
    tail = _TAIL.pack(
        attributes,
        header.last_offset_delta if last_offset_delta is None else last_offset_delta,
        first_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        record_count,
    )
    crc = _crc32c.crc32c(payload, _crc32c.crc32c(tail))
    batch_length = HEADER_BYTES - LOG_OVERHEAD + len(payload)
    return (
        _HEAD.pack(header.base_offset, batch_length, header.leader_epoch, MAGIC, crc)
        + tail
        + payload
    )


class BatchBuilder:
    """Packs records into one batch. Owned by one producer thread; not thread-safe.

    Append with ``append``; ``size_bytes`` estimates the uncompressed size so a producer can cut
    batches at ``batch_bytes_max``; ``build`` returns the finished bytes with base_offset 0 and
    leader_epoch -1 (the broker stamps both).
    """

    __slots__ = (
        "_chunks",
        "_count",
        "_first_ts",
        "_max_ts",
        "_size",
        "base_sequence",
        "compression",
        "producer_epoch",
        "producer_id",
    )

    def __init__(
        self,
        compression: Compression | str | None = Compression.NONE,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> None:
        self.compression = Compression.parse(compression)
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self._chunks: list[bytes] = []
        self._first_ts = -1
        self._max_ts = -1
        self._count = 0
        self._size = HEADER_BYTES

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Uncompressed size of the batch so far (an upper bound on the built size)."""
        return self._size

    def append(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp_ms: int,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> int:
        """Add one record; return its offset delta within the batch."""
        if self._count == 0:
            self._first_ts = timestamp_ms
            self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        ts_delta = timestamp_ms - self._first_ts
        if not -(2**31) <= ts_delta < 2**31:
            raise InvalidRecordError("record timestamps in one batch must lie within 24 days")
        count = self._count
        if not headers and value is not None:
            # the common case: table lookups and one concatenation, no per-record join (a
            # producer's per-record cost is most of what limits small-record throughput)
            value_len = len(value)
            zz = _ZIGZAG
            ts = zz[ts_delta] if 0 <= ts_delta < _ZIGZAG_TABLE else _zigzag(ts_delta)
            off = zz[count] if count < _ZIGZAG_TABLE else _zigzag(count)
            vlen = zz[value_len] if value_len < _ZIGZAG_TABLE else _zigzag(value_len)
            if key is None:
                body_len = len(ts) + len(off) + len(vlen) + value_len + 3
                size = zz[body_len] if body_len < _ZIGZAG_TABLE else _zigzag(body_len)
                head = size + b"\x00" + ts + off + b"\x01" + vlen
            else:
                klen = _zigzag(len(key))
                body_len = len(ts) + len(off) + len(klen) + len(key) + len(vlen) + value_len + 2
                size = zz[body_len] if body_len < _ZIGZAG_TABLE else _zigzag(body_len)
                head = size + b"\x00" + ts + off + klen + key + vlen
            chunks = self._chunks
            chunks.append(head)
            chunks.append(value)
            chunks.append(b"\x00")  # no headers
            self._count = count + 1
            self._size += len(head) + value_len + 1
            return count
        parts = [b"\x00", _zigzag(ts_delta), _zigzag(count)]
        parts.append(_NULL if key is None else _zigzag(len(key)) + key)
        parts.append(_NULL if value is None else _zigzag(len(value)) + value)
        parts.append(_zigzag(len(headers)))
        for hk, hv in headers:
            hk_bytes = hk.encode("utf-8")
            parts.append(_zigzag(len(hk_bytes)) + hk_bytes)
            parts.append(_NULL if hv is None else _zigzag(len(hv)) + hv)
        body = b"".join(parts)
        record = _zigzag(len(body)) + body
        self._chunks.append(record)
        self._count = count + 1
        self._size += len(record)
        return count

    def build(self) -> bytes:
        if self._count == 0:
            raise InvalidRecordError("cannot build an empty batch")
        payload = _compress(self.compression, b"".join(self._chunks))
        attributes = int(self.compression)
        tail = _TAIL.pack(
            attributes,
            self._count - 1,
            self._first_ts,
            self._max_ts,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self._count,
        )
        crc = _crc32c.crc32c(payload, _crc32c.crc32c(tail))
        batch_length = HEADER_BYTES - LOG_OVERHEAD + len(payload)
        return _HEAD.pack(0, batch_length, -1, MAGIC, crc) + tail + payload


_HEAD = struct.Struct(">qiibI")  # base_offset, batch_length, leader_epoch, magic, crc
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count: the CRC-covered header part
assert _HEAD.size + _TAIL.size == HEADER_BYTES


def build_batch(
    values: Sequence[bytes | None],
    *,
    timestamp_ms: int,
    keys: Sequence[bytes | None] | None = None,
    compression: Compression | str | None = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Convenience: one batch of ``values`` (and ``keys``) all stamped ``timestamp_ms``."""
    builder = BatchBuilder(
        compression,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    for i, value in enumerate(values):
        builder.append(value, key=None if keys is None else keys[i], timestamp_ms=timestamp_ms)
    return builder.build()
