"""The allow-list unpickler that replaces pysyncobj's (raft/safe_pickle.py; guards' hazard 1).

Legit messages are built exactly as pysyncobj 0.3.17 builds them: ``pickle.dumps(msg, 2)``
(``pysyncobj.pickle.dumps``), with the shapes syncobj.py / transport.py / journal.py send.
"""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.raft import safe_pickle
from raftlog.raft.pysyncobj_guards import install_pysyncobj_guards
from raftlog.raft.safe_pickle import UnpicklingRejected
from raftlog.raft.snapshot_file import SnapshotFile, decode_snapshot_file, encode_snapshot_file


class _Reducer:
    """Unpickling this calls ``func(*args)`` under an unrestricted loader."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _code_running_pickles(marker: Path) -> list[tuple[str, bytes]]:
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').close()"
    return [
        ("os.system p2", pickle.dumps(_Reducer(os.system, touch), protocol=2)),
        ("os.system p4", pickle.dumps(_Reducer(os.system, touch), protocol=4)),
        ("os.system p0", pickle.dumps(_Reducer(os.system, touch), protocol=0)),
        ("builtins.exec", pickle.dumps(_Reducer(builtins.exec, write), protocol=2)),
        ("builtins.eval", pickle.dumps(_Reducer(builtins.eval, write), protocol=2)),
        ("subprocess", pickle.dumps(_Reducer(subprocess.call, ["touch", str(marker)]), 2)),
        (
            "nested in a legit-looking append_entries",
            pickle.dumps(
                {"type": "append_entries", "term": 1, "entries": [_Reducer(os.system, touch)]}, 2
            ),
        ),
        (
            "as the payload of a handshake tuple",
            pickle.dumps((os.urandom(32), _Reducer(os.system, touch)), 2),
        ),
        # Hand-written opcodes: GLOBAL + INST (protocol 0) and an OBJ on an allowed-looking name.
        ("GLOBAL/REDUCE", b"cposix\nsystem\n(S'" + touch.encode() + b"'\ntR."),
        ("INST", b"(S'" + touch.encode() + b"'\nios\nsystem\n."),
        ("OBJ", b"(cos\nsystem\nS'" + touch.encode() + b"'\no."),
        # An allowed name used for something else: _codecs.encode with another codec.
        (
            "_codecs.encode misuse",
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.",
        ),
        (
            "_codecs.encode on bytes",
            b"\x80\x02c_codecs\nencode\nC\x03abcX\x06\x00\x00\x00latin1\x86R.",
        ),
        ("persistent id", b"\x80\x02X\x01\x00\x00\x00xQ."),
    ]


def test_code_running_pickles_are_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name, payload in _code_running_pickles(marker):
        before = safe_pickle.rejected_count()
        with pytest.raises(UnpicklingRejected):
            safe_pickle.loads(payload)
        assert safe_pickle.rejected_count() == before + 1, name
        assert not marker.exists(), name
    # The stock unpickler really would have run them (the payloads are live).
    pickle.loads(_code_running_pickles(marker)[0][1])
    assert marker.exists()


def test_ext_opcodes_name_nothing() -> None:
    # EXT codes resolve through copyreg's extension registry, which is empty in this process.
    for payload in (
        b"\x80\x02\x82\x01.",
        b"\x80\x02\x83\x01\x01.",
        b"\x80\x02\x84\x01\x00\x00\x00.",
    ):
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            safe_pickle.loads(payload)


def _legit_messages() -> list[Any]:
    command = b"\x00" + pickle.dumps((0, (b"cbor2 command \x00\xff",)), 2)  # a REGULAR entry
    empty = b"\x00" + pickle.dumps((0, (b"",)), 2)
    rand_key = os.urandom(32)
    return [
        rand_key,  # encryption handshake
        "127.0.0.1:7001",  # "who I am"
        (rand_key, "127.0.0.1:7001"),
        {"type": "request_vote", "term": 7, "last_log_index": 42, "last_log_term": 6},
        {"type": "response_vote", "term": 7},
        {
            "type": "append_entries",
            "term": 7,
            "commit_index": 40,
            "entries": [(command, 41, 7), (b"\x01", 42, 7), (empty, 43, 7)],
            "prevLogIdx": 40,
            "prevLogTerm": 6,
        },
        {
            "type": "append_entries",
            "transmission": "process",
            "data": pickle.dumps((command, 44, 7), 2)[:10],
            "term": 7,
            "commit_index": 40,
            "prevLogIdx": 43,
            "prevLogTerm": 7,
        },
        {
            "type": "append_entries",
            "term": 7,
            "commit_index": 40,
            "serialized": (b"RLQ", True, False),
        },
        {"type": "append_entries", "term": 7, "commit_index": 40, "serialized": None},
        {"type": "next_node_idx", "next_node_idx": 44, "reset": False, "success": True},
        {"type": "apply_command", "command": command, "request_id": 3},
        {"type": "apply_command_response", "request_id": 3, "error": 4},
        {"type": "apply_command_response", "request_id": 3, "log_idx": 44, "log_term": 7},
        {"type": "timeout_now", "term": 7},
        {"type": "raftlog_ping"},
        {"raftCommitIndex": 40, "currentTerm": 7, "votedForNodeId": "127.0.0.1:7002"},  # .meta
        (0, (b"cbor2 command",)),  # what __doApplyCommand unpickles
        (0, (b"",)),
    ]


@pytest.mark.parametrize("message", _legit_messages(), ids=lambda m: repr(m)[:40])
def test_legit_pysyncobj_messages_round_trip(message: Any) -> None:
    before = safe_pickle.rejected_count()
    assert safe_pickle.loads(pickle.dumps(message, 2)) == message
    assert safe_pickle.rejected_count() == before


_plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_plain)
def test_plain_data_round_trips(value: Any) -> None:
    assert safe_pickle.loads(pickle.dumps(value, 2)) == value


def test_pysyncobj_loaders_are_patched() -> None:
    # The only place the tests touch pysyncobj: to check what the guards installed there.
    import pysyncobj.journal
    import pysyncobj.pickle
    import pysyncobj.tcp_connection

    install_pysyncobj_guards()
    install_pysyncobj_guards()  # idempotent
    assert pysyncobj.pickle.loads is safe_pickle.loads
    assert pysyncobj.pickle.load is safe_pickle.load
    assert pysyncobj.journal.loads is safe_pickle.loads  # bound at import by `from .pickle`
    parse = pysyncobj.tcp_connection.TcpConnection._TcpConnection__processParseMessage
    assert getattr(parse, "raftlog_guard", False)
    assert getattr(pysyncobj.journal.MetaStorer.storeMeta, "raftlog_guard", False)  # fsyncs
    with pytest.raises(UnpicklingRejected):
        pysyncobj.pickle.loads(pickle.dumps(_Reducer(os.getpid), 2))


def test_snapshot_file_round_trips_and_detects_corruption() -> None:
    snapshot = SnapshotFile(
        last_entry=(b"\x00cmd", 7, 2), prev_entry=(b"\x01", 6, 2), voters=("a:1",), state=b"S"
    )
    blob = encode_snapshot_file(snapshot)
    assert blob[:8] == b"RLQSNAP1"
    assert decode_snapshot_file(blob) == snapshot
    for i in (8, 12, len(blob) - 1):
        corrupt = bytearray(blob)
        corrupt[i] ^= 0x01
        with pytest.raises(Exception, match="checksum"):
            decode_snapshot_file(bytes(corrupt))
    with pytest.raises(Exception, match="magic"):
        decode_snapshot_file(b"\x80\x02" + blob[2:])
