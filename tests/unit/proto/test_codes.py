from __future__ import annotations

import pytest

from raftlog.proto import common_pb2, errors
from raftlog.proto.codes import CodedError, ErrorCode


def test_the_error_codes_are_those_of_common_proto() -> None:
    generated = dict(common_pb2.ErrorCode.items())
    assert {code.name: int(code) for code in ErrorCode} == generated


def test_every_code_but_none_has_its_client_exception() -> None:
    for code in ErrorCode:
        if code is ErrorCode.NONE:
            continue
        assert errors.ERRORS_BY_CODE[int(code)].name == code.name


def test_a_coded_error_carries_its_code_and_message() -> None:
    with pytest.raises(CodedError) as caught:
        raise CodedError(ErrorCode.NOT_CONTROLLER, "broker 2 is the controller")
    assert caught.value.code is ErrorCode.NOT_CONTROLLER
    assert caught.value.message == "broker 2 is the controller"
    assert CodedError(ErrorCode.REQUEST_TIMED_OUT).message == "REQUEST_TIMED_OUT"


def test_a_code_this_version_does_not_know_is_an_unknown_server_error() -> None:
    assert ErrorCode(6) is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert ErrorCode(12345) is ErrorCode.UNKNOWN_SERVER_ERROR


def test_a_code_reads_as_its_name_in_logs_and_messages() -> None:
    code = ErrorCode.NOT_LEADER_OR_FOLLOWER
    logged = "%s" % (code,)  # noqa: UP031 (what logging does)
    assert str(code) == f"{code}" == logged == "NOT_LEADER_OR_FOLLOWER"
    assert int(code) == 6
