"""An allow-list unpickler for the bytes pysyncobj reads from peers and from its own files.

pysyncobj speaks pickle (protocol 2) on the wire, in log entries and in its journal's ``.meta``
file, and the stock ``pickle.loads`` runs whatever a byte stream names: one framed pickle sent to
a Raft port used to be remote code execution. :mod:`raftlog.raft.pysyncobj_guards` swaps this
module's :func:`loads` / :func:`load` in for pysyncobj's, so every pickle it reads goes through
:class:`AllowListUnpickler`.

What may be named (``find_class``) is only what pysyncobj's own messages need *in our
configuration*; everything else raises :class:`UnpicklingRejected` and is counted. Measured by
running 3 nodes through elections, replication, compaction, a snapshot install, a restart and a
leader change while recording every ``find_class`` call: 555 x ``_codecs.encode``, 3 x
``__builtin__.bytes``, nothing else (tests/integration/raft/test_quorum.py asserts the counter
stays 0 in all such scenarios):

=========================  =================================================================
``_codecs.encode``          how protocol 2 spells a non-empty ``bytes`` object:
                            ``_codecs.encode('<latin-1 text>', 'latin1')``. Replaced by a
                            function that accepts exactly that (str + latin-1), nothing else.
``__builtin__.bytes``       ``b''`` (``bytes()``); ``builtins`` is the protocol-3 spelling.
=========================  =================================================================

Not allowed, on purpose: ``set``/``frozenset`` (no pysyncobj message carries one in our
configuration; only its utility replies and default dumps do), ``pysyncobj.node.TCPNode`` (it
travels in pysyncobj's own membership commands and default snapshot format; ours name the node
by its address string, which pysyncobj accepts, and snapshots are our own cbor2 format), and every
other class or function.

A rejected pickle never gets to call anything: ``find_class`` is the only way a pickle can name a
callable (GLOBAL, STACK_GLOBAL, INST and OBJ go through it; the EXT opcodes resolve through
copyreg's extension registry, empty unless someone calls ``copyreg.add_extension``, then
``find_class``), and ``persistent_load`` raises.

This module is pure (no pysyncobj import); its counter is process-wide and thread-safe.
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
from collections.abc import Callable
from typing import IO, Any, Final

__all__ = [
    "ALLOWED_GLOBALS",
    "AllowListUnpickler",
    "UnpicklingRejected",
    "load",
    "loads",
    "rejected_count",
]

logger = logging.getLogger(__name__)

# Log the first rejections in full, then one in every _LOG_EVERY (an attacker must not be able to
# fill the disk through our log).
_LOG_FIRST: Final = 20
_LOG_EVERY: Final = 1000


class UnpicklingRejected(pickle.UnpicklingError):
    """A pickle named something outside the allow-list (or misused an allowed callable).

    The peer or the file is at fault; nothing it named was called.
    """


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for ``bytes``, and in no other way."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _count_rejection(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        raise UnpicklingRejected("_codecs.encode is only allowed as str -> latin-1 bytes")
    return text.encode("latin-1")


# (module, name) as written in the pickle stream -> the object handed to the unpickler.
ALLOWED_GLOBALS: Final[dict[tuple[str, str], Callable[..., object]]] = {
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): bytes,
    ("builtins", "bytes"): bytes,
}

_lock = threading.Lock()
_rejected = 0


def rejected_count() -> int:
    """How many pickles this process refused since it started (all quorums, all sources)."""
    with _lock:
        return _rejected


def _count_rejection(what: str) -> None:
    global _rejected
    with _lock:
        _rejected += 1
        count = _rejected
    if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
        logger.warning("rejected a pickle naming %s (rejections so far: %d)", what, count)


class AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            _count_rejection(f"{module}.{name}")
            raise UnpicklingRejected(f"global {module}.{name} is not allowed")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        _count_rejection("a persistent id")
        raise UnpicklingRejected("persistent ids are not allowed")


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    # pysyncobj's own loads accepts str too (it encodes it as UTF-8); keep that contract.
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Drop-in for ``pysyncobj.pickle.loads``: decode, or raise :class:`UnpicklingRejected`.

    Unlike pysyncobj's version there is no retry with the pure-Python unpickler on error (that
    fallback exists for Python 2 peers, which we do not have).
    """
    return AllowListUnpickler(io.BytesIO(_as_bytes(data))).load()


def load(file: IO[bytes]) -> Any:
    """Drop-in for ``pysyncobj.pickle.load``."""
    return AllowListUnpickler(file).load()
