"""Every wire error code has exactly one exception class, and the table round-trips."""

from __future__ import annotations

from raftlog.proto import common_pb2
from raftlog.proto.errors import ERRORS_BY_CODE, UnknownServerError, error_for, raise_for


def test_every_error_code_has_its_class() -> None:
    for value in common_pb2.ErrorCode.DESCRIPTOR.values:
        if value.name == "NONE":
            continue
        cls = ERRORS_BY_CODE.get(value.number)
        assert cls is not None, f"no exception class for {value.name}"
        assert cls.name == value.name


def test_unknown_codes_and_none() -> None:
    assert isinstance(error_for(12345, "x"), UnknownServerError)
    raise_for(common_pb2.Error(code=0))  # NONE: nothing raised
    assert error_for("NOT_LEADER_OR_FOLLOWER").retriable
    assert error_for(6).invalid_metadata
    assert not error_for("MESSAGE_TOO_LARGE").retriable
