"""The Broker gRPC service: proto in, a call into the broker's cores, proto out. Nothing else.

One gRPC service, one servicer object, its methods grouped by concept in three modules:

* ``data_rpcs.py`` — Produce, Fetch, ReplicaFetch, ListOffsets, OffsetForLeaderEpoch,
  InitProducerId;
* ``metadata_rpcs.py`` — Metadata, DescribeReplicas, DescribeConfigs, DescribeQuorum;
* ``admin_rpcs.py`` — topics, configs, DescribeCluster, ACLs and users, WhoAmI (authorized here,
  carried out by the active controller); ``partition_admin.py`` (moving partitions) and
  ``voter_admin.py`` (the quorum's voters) likewise.

The Controller service (broker-only calls) is ``controller_servicer.py``, the consumer groups'
service ``group_servicer.py``; every one of them answers failures as typed errors
(``rpc_errors.py``) and runs on the broker loop (grpc.aio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .data_rpcs import DataRpcs
from .metadata_rpcs import MetadataRpcs
from .partition_admin import PartitionAdminRpcs
from .voter_admin import VoterAdminRpcs

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["BrokerServicer"]


class BrokerServicer(DataRpcs, MetadataRpcs, PartitionAdminRpcs, VoterAdminRpcs):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
