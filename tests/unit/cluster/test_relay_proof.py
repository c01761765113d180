"""A relayed controller call proves which broker sent it (issue 21's relays must not let one
broker speak for another: the insider attack of the security tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.client.certs import CertificateAuthority
from raftlog.cluster.relay_proof import (
    ORIGIN_SIGNATURE,
    ORIGIN_TIME,
    PROOF_AGE_MS_MAX,
    OriginSigner,
    origin_broker,
)
from raftlog.proto import controller_pb2

NOW_MS = 1_800_000_000_000
METHOD = "BrokerHeartbeat"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    authority.create()
    for node in (2, 3):
        authority.issue_broker(node, ["127.0.0.1"])
    authority.issue_client("mallory")
    return authority


def signer(ca: CertificateAuthority, node: int) -> OriginSigner:
    pair = ca.broker_pair(node)
    return OriginSigner.from_files(str(pair.cert_file), str(pair.key_file))


def beat(broker_id: int, incarnation: int = 7) -> controller_pb2.BrokerHeartbeatRequest:
    return controller_pb2.BrokerHeartbeatRequest(broker_id=broker_id, incarnation=incarnation)


def test_a_signed_call_proves_its_broker(ca: CertificateAuthority) -> None:
    ca_pem = Path(ca.ca_file).read_bytes()
    headers = signer(ca, 3).headers(METHOD, beat(3), NOW_MS)
    assert origin_broker(headers, METHOD, beat(3), ca_pem, NOW_MS + 5) == 3


def test_a_changed_request_method_or_time_proves_nothing(ca: CertificateAuthority) -> None:
    ca_pem = Path(ca.ca_file).read_bytes()
    headers = signer(ca, 3).headers(METHOD, beat(3), NOW_MS)
    assert origin_broker(headers, METHOD, beat(3, incarnation=1 << 62), ca_pem, NOW_MS) is None
    assert origin_broker(headers, "RegisterBroker", beat(3), ca_pem, NOW_MS) is None
    moved = [(k, str(NOW_MS + 1) if k == ORIGIN_TIME else v) for k, v in headers]
    assert origin_broker(moved, METHOD, beat(3), ca_pem, NOW_MS) is None
    forged = [(k, b"\x30\x00" if k == ORIGIN_SIGNATURE else v) for k, v in headers]
    assert origin_broker(forged, METHOD, beat(3), ca_pem, NOW_MS) is None
    assert origin_broker((), METHOD, beat(3), ca_pem, NOW_MS) is None


def test_an_old_proof_is_refused(ca: CertificateAuthority) -> None:
    ca_pem = Path(ca.ca_file).read_bytes()
    headers = signer(ca, 3).headers(METHOD, beat(3), NOW_MS)
    late = NOW_MS + PROOF_AGE_MS_MAX + 1
    assert origin_broker(headers, METHOD, beat(3), ca_pem, late) is None


def test_another_cas_or_a_clients_certificate_proves_no_broker(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority(tmp_path / "other")
    other.create()
    other.issue_broker(3, ["127.0.0.1"])
    headers = signer(other, 3).headers(METHOD, beat(3), NOW_MS)
    assert origin_broker(headers, METHOD, beat(3), Path(ca.ca_file).read_bytes(), NOW_MS) is None
    pair = ca.client_pair("mallory")
    client = OriginSigner.from_files(str(pair.cert_file), str(pair.key_file))
    headers = client.headers(METHOD, beat(3), NOW_MS)
    assert origin_broker(headers, METHOD, beat(3), Path(ca.ca_file).read_bytes(), NOW_MS) is None
