"""Which broker's metadata the client believes (client/metadata.py)."""

from __future__ import annotations

from typing import Any

from raftlog.client import ClientSecurity
from raftlog.client.metadata import ClusterMetadata
from raftlog.proto import broker_pb2


def answer(controller_id: int, leader: int, epoch: int) -> broker_pb2.MetadataResponse:
    partition = broker_pb2.PartitionMetadata(partition=0, leader=leader, leader_epoch=epoch)
    topic = broker_pb2.TopicMetadata(name="t", partitions=[partition])
    return broker_pb2.MetadataResponse(controller_id=controller_id, topics=[topic])


class Stub:
    def __init__(self, response: broker_pb2.MetadataResponse, asked: list[str], name: str):
        self.response, self.asked, self.name = response, asked, name

    def Metadata(self, request: Any, timeout: float) -> broker_pb2.MetadataResponse:
        self.asked.append(self.name)
        return self.response


def metadata(answers: dict[str, broker_pb2.MetadataResponse], asked: list[str]) -> Any:
    client = ClusterMetadata(",".join(answers), security=ClientSecurity.plaintext())
    client.candidates = lambda: list(answers)  # type: ignore[method-assign]
    client.stub = lambda address: Stub(answers[address], asked, address)  # type: ignore[method-assign]
    return client


def test_a_broker_that_names_no_controller_is_asked_last() -> None:
    """Issue 21: a minority's broker, cut off from the controller, still named itself leader of
    a partition already led elsewhere; the client kept sending there."""
    asked: list[str] = []
    client = metadata({"a:1": answer(-1, 3, 4), "b:1": answer(5, 4, 5)}, asked)
    assert client.refresh(["t"])
    assert asked == ["a:1", "b:1"]
    assert client.partition("t", 0).leader == 4


def test_without_a_better_answer_the_controllerless_one_is_used() -> None:
    asked: list[str] = []
    client = metadata({"a:1": answer(-1, 3, 4), "b:1": answer(-1, 3, 4)}, asked)
    assert client.refresh(["t"])
    assert asked == ["a:1", "b:1"] and client.partition("t", 0).leader == 3
