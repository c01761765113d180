"""One broker process: gRPC server, metadata-quorum member, replica manager, fetchers, controller.

Thread model (DESIGN "Data plane"). The broker loop — the asyncio loop that runs ``Broker.run``
(the main thread's, in ``run_broker``) — owns everything that serves requests: the replica
manager, the purgatories, the fetchers (one task per leader broker), the controller shell, the
group coordinator, the periodic tasks started in ``run`` and the fire-and-forget tasks kept in
``TaskSet`` objects (AlterPartition sends, pings, the controller's decisions and probes). None
of it takes a thread lock (an ``asyncio.Lock`` only orders coroutines: producer-id blocks,
CreateTopics). gRPC is grpc.aio and every handler is a coroutine, so every RPC runs on the loop
too; there is no handler thread pool (gRPC's C core polls its completion queue on a thread of
its own, which runs none of our code). Other threads, and how they meet the loop:

* pysyncobj's Raft thread applies committed metadata into the ``MetadataStore`` (under the
  store's lock, which the loop's ``store.read()`` takes briefly) and hands "something changed"
  to the loop with ``call_soon_threadsafe`` (``_on_applied``, coalesced); the loop turns changes
  into replica events through the ``PartitionListener``. It also runs the callbacks of the
  controller's submitted commands, which resolve their futures on the loop the same way.
* the quorum's timeout thread fails submitted commands that overran their timeout (the same
  callbacks).
* one ``raftlog-fsync`` thread (``_in_background``) fsyncs rolled segments and their
  directories; it reports back to the log under the log's ``_sync_lock``.
* asyncio's default executor prepares a CreateTopic (replica assignment and encoding,
  ``controller_service.py``) and waits out a damage report's metadata version.

Bounds: one in-flight fetch per fetcher; produce and fetch waits bounded by the purgatories'
``max_operations``; RPCs in flight by ``limits.requests_in_flight_max`` (and
``streams_per_connection_max`` per connection); gRPC messages by ``MESSAGE_BYTES_MAX``; one ping
in flight per peer.

Start-up order: open state and decide whether the last stop may have lost unsynced writes
(``restart.py``: a new boot id without a clean shutdown), start the quorum (journal + dump are
replayed), serve gRPC (and the Kafka protocol, ``kafka_listener.py``, when configured), wait until
the local metadata has caught up with the quorum's commit index, register with the controller
(``unclean`` when writes may be lost) and heartbeat. Roles are acted on only once the metadata holds
*this* incarnation's registration: before it, the metadata may still name the previous process as a
leader, and a log that lost its tail in a power loss must never lead (followers would truncate their
intact copies to it). The controller unfences us once we have applied our own registration. Damage
found in a log (at open, on a read, by the background scrub) is reported to the controller, which
moves leadership to an intact replica. SIGTERM: stop serving, cancel the tasks, stop fetchers, wait
for pending fsyncs, checkpoint, close logs and the quorum, and record the clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raftlog.proto import (
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
)
from raftlog.proto.channel import MESSAGE_BYTES_MAX, channel_options, server_options
from raftlog.proto.codes import ErrorCode
from raftlog.raft.acl import AclIndex
from raftlog.raft.commands import AlterPartition, ReplicasDamaged
from raftlog.raft.controller import ControllerConfig
from raftlog.raft.listener import PartitionListener
from raftlog.raft.metadata_records import Applied, TopicRecord
from raftlog.raft.metadata_snapshot import decode_partition_rows
from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import QuorumConfig
from raftlog.raft.scram import ScramCredential
from raftlog.raft.store import CatchingUpMachine, MetadataStore
from raftlog.raft.voters import VoterRecord
from raftlog.segments import BrokerStateStore, makedirs_durable
from raftlog.segments.clock import SYSTEM_CLOCK, Clock

from . import restart
from .auth import Authorizer, PasswordCheck
from .broker_metrics import RATE_SAMPLE_INTERVAL_MS, BrokerMetrics
from .broker_servicer import BrokerServicer
from .config import BrokerConfig, Security
from .controller_link import ControllerLink, ControllerUnreachable
from .controller_service import ActiveController, ControllerError
from .controller_servicer import ControllerServicer
from .coordinator import OFFSETS_PARTITIONS, OFFSETS_TOPIC, GroupCoordinator
from .fetcher import FetcherManager
from .group_servicer import GroupServicer
from .health import BrokerHealth
from .kafka_apis import KafkaApis
from .kafka_listener import KafkaListener
from .metadata_observer import MetadataFeed, MetadataObserver
from .partition import Partition
from .peers import PING_INTERVAL_MS, PING_TIMEOUT_MS, PeerReach
from .quorum_member import MembershipCheck, QuorumMember
from .quota import Quotas
from .relay_proof import OriginSigner
from .replica_manager import ReplicaManager, ReplicaManagerConfig
from .replication import IsrProposal, alter_partition_outcome
from .tasks import DeadlineTimer, TaskSet
from .voter_admin import VoterChanges

__all__ = [
    "MESSAGE_BYTES_MAX",
    "Broker",
    "channel_credentials",
    "grpc_options",
    "run_broker",
    "server_credentials",
]

logger = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000  # producer ids a broker asks the controller for at a time
# how often a broker heard only through a relay asks for its partitions' committed state
RELAYED_STATES_INTERVAL_MS = 200
HEALTH_INTERVAL_MS = 100  # the health service also follows every metadata change at once
# the services this broker serves, by full name: health answers for each, reflection lists them
SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (broker_pb2, "Broker"),
        (controller_pb2, "Controller"),
        (group_pb2, "GroupCoordinator"),
    )
)


def grpc_options() -> list[tuple[str, Any]]:
    """A broker's channels to its peers and the controller (keepalive, bounded reconnects)."""
    return channel_options()


def _read_tls(security: Security) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate, key) PEM bytes; the config checked that the files exist."""
    return (
        Path(security.ca_file).read_bytes(),
        Path(security.cert_file).read_bytes(),
        Path(security.key_file).read_bytes(),
    )


def server_credentials(security: Security) -> grpc.ServerCredentials:
    """Mutual TLS: every caller must present a certificate the cluster CA signed."""
    ca, cert, key = _read_tls(security)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(security: Security) -> grpc.ChannelCredentials:
    """What this broker presents to its peers: its own certificate (its broker identity)."""
    ca, cert, key = _read_tls(security)
    return grpc.ssl_channel_credentials(ca, key, cert)


class Broker:
    """Everything one broker process runs; see the module docstring."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.incarnation = time.time_ns()
        self.cluster_id = "raftlog"
        # one clock, two domains (segments/clock.py): wall time for what is compared with record
        # timestamps (retention, segment.ms, flush.ms, producer expiry), monotonic for the rest
        self.clock: Clock = SYSTEM_CLOCK
        self.clock_ms: Callable[[], int] = self.clock.mono_ms
        # every name on the way must survive a power loss: a voter that reboots into an empty
        # directory would vote again in a term it already voted in
        for sub in ("", "raft", "logs"):
            makedirs_durable(os.path.join(config.data_dir, sub))
        self.state = BrokerStateStore(os.path.join(config.data_dir, "state"))
        self.unclean = restart.begin(self.state, config.boot_id_path)
        self.store = MetadataStore()
        self.listener = PartitionListener(config.node_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metadata_dirty = False
        self._stopping = asyncio.Event()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._broker_stubs: dict[str, broker_pb2_grpc.BrokerStub] = {}
        self._controller_stubs: dict[str, controller_pb2_grpc.ControllerStub] = {}
        self._background_tasks = TaskSet("broker")  # AlterPartition sends and the like
        self._channel_credentials = (
            channel_credentials(config.security) if config.security.is_tls else None
        )
        self.quotas = Quotas(config.quotas)
        self.passwords = PasswordCheck(self.scram_credential, time.monotonic)
        self.authorizer = Authorizer(
            config.security.is_tls, config.security.super_users, self._acl_index, self.passwords
        )
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="raftlog-fsync")
        self._pid_lock = asyncio.Lock()
        self._pid_next = self._pid_end = 0  # the producer-id block in hand: [next, end)
        self.registered_version = -1
        self.fenced = True
        self.replicas = ReplicaManager(
            ReplicaManagerConfig(
                broker_id=config.node_id,
                data_dir=os.path.join(config.data_dir, "logs"),
                replica_lag_ms_max=config.replica_lag_ms_max,
                replica_silence_ms_max=config.replica_silence_ms_max,
                segment_bytes=config.segment_bytes,
                flush_messages=config.flush_messages,
                flush_ms=config.flush_ms,
                log_cleaner_io_bytes_per_s=config.log_cleaner_io_bytes_per_s,
            ),
            self.state,
            self.clock,
            self._topic,
            self._propose_isr,
            self._follower_changed,
            self._broker_eligible,
            background=self._in_background,
        )
        self.coordinator = GroupCoordinator(
            self.replicas,
            self.clock_ms,
            self._create_offsets_topic,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            offsets_retention_ms=config.group_offsets_retention_ms,
            offsets_retention_check_interval_ms=config.group_offsets_retention_check_interval_ms,
            wall_ms=self.clock.wall_ms,
        )
        self.quorum: QuorumMember  # started in run(): a Raft voter, or an observer of them
        self._observer_task: asyncio.Task[None] | None = None
        self._switching = False  # a change of quorum role is under way (quorum_member.py)
        self._joining = False  # our Raft member runs for an add-voter not yet committed
        self._membership_check = MembershipCheck(
            config.node_id, self._describe_quorum_at, time.monotonic
        )
        self.voter_changes = VoterChanges(self)  # add-voter / remove-voter, as the controller
        self.metadata_feed = MetadataFeed(self.store)  # FetchMetadata answers to observers
        self.controller: ActiveController
        self.fetchers: FetcherManager
        self.link: ControllerLink
        self.peers = PeerReach()
        self.metrics = BrokerMetrics(self)
        self.health = BrokerHealth(SERVICES)
        self.controller_contact_ms: int = self.clock.mono_ms()  # the controller's last answer
        self._pinging: set[int] = set()
        self._strays_swept = False

    # ---- wiring ----------------------------------------------------------------------------------

    def _topic(self, name: str) -> TopicRecord | None:
        with self.store.read() as state:
            return state.topics.get(name)

    def scram_credential(self, user: str) -> ScramCredential | None:
        with self.store.read() as state:
            return state.users.get(user)

    def _acl_index(self) -> AclIndex:
        with self.store.read() as state:
            return state.acl_index()

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._channel_credentials is None:
                channel = grpc.aio.insecure_channel(address, options=grpc_options())
            else:
                channel = grpc.aio.secure_channel(
                    address, self._channel_credentials, options=grpc_options()
                )
            self._channels[address] = channel
        return channel

    def broker_address(self, broker_id: int) -> str | None:
        with self.store.read() as state:
            record = state.brokers.get(broker_id)
            return record.address if record else None

    def controller_id(self) -> int:
        """The active controller as we know it; -1 while none is known or we cannot reach it
        (cut off: our metadata may be stale, so clients should ask another broker)."""
        leader = self.quorum.leader_id()
        return -1 if leader is None or self.replicas.cut_off is not None else leader

    def controller_stub(self) -> controller_pb2_grpc.ControllerStub | None:
        leader = self.quorum.leader_id()
        return self.controller_stub_of(leader) if leader is not None else None

    def current_voters(self) -> tuple[VoterRecord, ...]:
        """The metadata quorum's voters: as the applied metadata has them once a membership
        change happened (raft/voters.py), else the config's ``[[voters]]`` (the bootstrap set)."""
        with self.store.read() as state:
            voters = state.voters
        if voters:
            return voters
        return tuple(
            VoterRecord(v.node_id, v.raft_address, v.grpc_address) for v in self.config.voters
        )

    def voter_grpc_address(self, node_id: int) -> str | None:
        return next((v.grpc_address for v in self.current_voters() if v.node_id == node_id), None)

    def controller_stub_of(self, node_id: int) -> controller_pb2_grpc.ControllerStub | None:
        """The Controller service of voter ``node_id`` (the controller, or a relay to it)."""
        address = self.voter_grpc_address(node_id)
        if address is None:
            return None
        stub = self._controller_stubs.get(address)
        if stub is None:  # a stub builds a callable per method: once per address, not per call
            stub = self._controller_stubs[address] = controller_pb2_grpc.ControllerStub(
                self.channel(address)
            )
        return stub

    def broker_stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        """The Broker service at ``address``, over our one (cached) channel to it."""
        stub = self._broker_stubs.get(address)
        if stub is None:
            stub = self._broker_stubs[address] = broker_pb2_grpc.BrokerStub(self.channel(address))
        return stub

    def replica_known(self, broker_id: int, incarnation: int) -> bool:
        """A follower's fetch must come from the incarnation the metadata knows (or a newer
        one we have not applied yet); an older process of that broker is a zombie."""
        with self.store.read() as state:
            record = state.brokers.get(broker_id)
        return record is None or incarnation >= record.incarnation

    def _broker_eligible(self, broker_id: int) -> bool:
        with self.store.read() as state:
            return state.is_live(broker_id)

    def _follower_changed(self, partition: Partition) -> None:
        self.fetchers.partition_changed(partition)

    def _propose_isr(self, partition: Partition, proposal: IsrProposal) -> None:
        self._background_tasks.spawn(self._send_alter_partition(partition, proposal))

    async def _send_alter_partition(self, partition: Partition, proposal: IsrProposal) -> None:
        key = partition.key
        logger.info("%s: proposing ISR %s", partition.name, list(proposal.isr))
        accepted: bool | None = None  # None: no answer, so it may have been committed
        try:
            if self.controller.quorum.is_leader():
                result = await self.controller.alter_partition(
                    AlterPartition(
                        key[0],
                        key[1],
                        self.config.node_id,
                        proposal.leader_epoch,
                        proposal.partition_epoch,
                        proposal.isr,
                        proposal.incarnations,
                    )
                )
                accepted = alter_partition_outcome(result.get("error"))
                if accepted and result.get("leader_epoch", proposal.leader_epoch) == (
                    proposal.leader_epoch
                ):
                    self.replicas.isr_committed(
                        key, proposal.leader_epoch, result["isr"], result["partition_epoch"]
                    )
                else:
                    logger.info("%s: AlterPartition not taken: %s", partition.name, result)
            else:
                response = await self.link.call(
                    "AlterPartition",
                    controller_pb2.AlterPartitionRequest(
                        topic=key[0],
                        partition=key[1],
                        broker_id=self.config.node_id,
                        incarnation=self.incarnation,
                        leader_epoch=proposal.leader_epoch,
                        partition_epoch=proposal.partition_epoch,
                        isr=proposal.isr,
                        isr_incarnations=proposal.incarnations,
                    ),
                    5,
                )
                accepted = alter_partition_outcome(ErrorCode(response.error.code))
                if not accepted:
                    logger.info("%s: AlterPartition not taken: %s", partition.name, response.error)
                if response.isr and response.leader_epoch == proposal.leader_epoch:
                    # committed: ours, or (a stale-epoch refusal) the state that superseded it
                    self.replicas.isr_committed(
                        key, response.leader_epoch, response.isr, response.partition_epoch
                    )
        except Exception as exc:  # the controller moved or died: the next check retries
            logger.info("%s: AlterPartition failed: %s", partition.name, exc)
        finally:
            self.replicas.proposal_done(key, proposal, accepted)

    async def _create_offsets_topic(self) -> None:
        """The internal offsets topic: RF 3 (or the cluster's size), min ISR 2 (or 1)."""
        with self.store.read() as state:
            live = sum(1 for b in state.brokers.values() if not b.fenced)
        rf = max(1, min(3, live))
        request = broker_pb2.CreateTopicsRequest(
            topics=[
                broker_pb2.NewTopic(
                    name=OFFSETS_TOPIC,
                    partitions=OFFSETS_PARTITIONS,
                    replication_factor=rf,
                    # compacted: a group's committed offsets live as long as the group
                    configs={"min.insync.replicas": str(min(2, rf)), "cleanup.policy": "compact"},
                )
            ]
        )
        try:
            if self.controller.quorum.is_leader():
                await ControllerServicer(self).create_topics(request)
            else:
                stub = self.controller_stub()
                if stub is not None:
                    await stub.CreateTopics(request, timeout=10)
        except Exception as exc:  # retried by the next FindCoordinator
            logger.info("creating %s: %s", OFFSETS_TOPIC, exc)

    # ---- producer ids ----------------------------------------------------------------------------

    async def next_producer_id(self) -> int:
        """A producer id from this broker's block; a new block from the controller when used up
        (blocks come from the replicated state machine, so ids never repeat cluster-wide)."""
        async with self._pid_lock:
            if self._pid_next >= self._pid_end:
                if self.controller.quorum.is_leader():
                    result = await self.controller.allocate_producer_ids(
                        self.config.node_id, PRODUCER_ID_BLOCK
                    )
                    start, count = int(result["start"]), int(result["count"])
                else:
                    try:
                        response = await self.link.call(
                            "AllocateProducerIds",
                            controller_pb2.AllocateProducerIdsRequest(
                                broker_id=self.config.node_id,
                                incarnation=self.incarnation,
                                count=PRODUCER_ID_BLOCK,
                            ),
                            5,
                        )
                    except ControllerUnreachable as exc:
                        raise ControllerError(ErrorCode.NOT_CONTROLLER, str(exc)) from exc
                    if response.error.code:
                        raise ControllerError(
                            common_pb2.ErrorCode.Name(response.error.code), response.error.message
                        )
                    start, count = response.start, response.count
                self._pid_next, self._pid_end = start, start + count
            self._pid_next += 1
            return self._pid_next - 1

    # ---- metadata ------------------------------------------------------------------------------

    def _on_applied(self, applied: Applied | None, restored: bool) -> None:
        """On the Raft thread: ask the loop to look at the metadata (coalesced)."""
        self.metrics.applied(applied)
        loop = self._loop
        if loop is None or self._metadata_dirty:
            return
        self._metadata_dirty = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._apply_metadata)

    def _apply_metadata(self) -> None:
        """On the loop: feed what changed to the listener, the events to the replica manager.

        Coalesced and done as a full diff of the current state: the listener ignores what it has
        seen (and regressions), so this is correct whatever happened in between — but a topic
        deleted and re-created meanwhile must still delete the old log: the topic id tells.
        """
        self._metadata_dirty = False
        self.metadata_feed.changed()
        self._check_health()
        self._follow_voters()
        if not self.replicas.ready:
            return
        with self.store.read() as state:
            me = state.brokers.get(self.config.node_id)
            if me is None or me.incarnation != self.incarnation:
                return  # not registered yet: the roles there are a previous process's
            records = list(state.partitions.values())
            current = {key: r.topic_id for key, r in state.partitions.items()}
            if not self._strays_swept:  # once, with this incarnation's caught-up metadata
                self._strays_swept = True
                self.replicas.delete_strays(state.partitions)
        known = self.listener.known
        gone = [
            key
            for key, record in known.items()
            if current.get(key) != record.topic_id and self._deleted_by_command(key)
        ]
        events = self.listener.deleted(gone)
        events += self.listener.changed(records)
        if events:
            self.replicas.apply_events(events)

    def _check_health(self) -> None:
        """Publish a change of the health rule's answer (on the loop, without waiting)."""
        now_serving = self.metrics.is_serving(self._stopping.is_set())
        if self.health.changed(now_serving):
            self._background_tasks.spawn(self.health.publish(now_serving))

    async def _publish_health(self) -> None:
        now_serving = self.metrics.is_serving(self._stopping.is_set())
        if self.health.changed(now_serving):
            await self.health.publish(now_serving)

    def _deleted_by_command(self, key: tuple[str, int]) -> bool:
        """Only a committed DeleteTopic deletes a log — not a snapshot that lacks the partition
        (pysyncobj can roll a follower back; see raft/listener.py). A topic missing from the
        current state whose name is absent was deleted; the epoch floor the state machine keeps
        for deleted partitions proves it."""
        with self.store.read() as state:
            return key in state.deleted_partitions()

    async def _wait_for_metadata(self) -> None:
        """Ready once the local state has caught up with the quorum's commit index."""
        while not self._stopping.is_set():
            status = self.quorum.status()
            if (
                status.leader_id is not None
                and status.commit_index > 0
                and status.last_applied >= status.commit_index
            ):
                break
            await asyncio.sleep(0.05)
        self.replicas.ready = True
        logger.info("metadata caught up at version %s", self.store.version)
        self._apply_metadata()

    # ---- the controller link ---------------------------------------------------------------

    async def _lifecycle(self) -> None:
        """Heartbeat the active controller forever, registering when it does not know this
        incarnation — through a relay when the direct path is cut (``controller_link.py``: the
        heartbeat finds the route, so the registration, sent once, follows it)."""
        interval_s = self.config.heartbeat_interval_ms / 1000
        registered = False
        while not self._stopping.is_set():
            try:
                response_hb = await self.link.discover(
                    "BrokerHeartbeat",
                    controller_pb2.BrokerHeartbeatRequest(
                        broker_id=self.config.node_id,
                        incarnation=self.incarnation,
                        metadata_version=self.store.version,
                        reachable_peers=self.peers.reachable(self.clock_ms()),
                    ),
                    max(interval_s * 4, 1.0),
                    2 * interval_s,
                )
                self.controller_contact_ms = self.clock_ms()
                if response_hb.error.code == common_pb2.NONE and response_hb.should_register:
                    registered = False
                if not registered:
                    response = await self.link.call(
                        "RegisterBroker",
                        controller_pb2.RegisterBrokerRequest(
                            broker_id=self.config.node_id,
                            incarnation=self.incarnation,
                            address=self.config.grpc_advertised,
                            rack=self.config.rack or "",
                            unclean=self.unclean,
                            password_address=self.config.grpc_password_advertised or "",
                            kafka_address=self.config.kafka_advertised or "",
                        ),
                        5,
                    )
                    if response.error.code:
                        raise ConnectionError(response.error.message)
                    self.registered_version = response.broker_epoch
                    registered = True
                    logger.info(
                        "registered (broker epoch %s%s)",
                        response.broker_epoch,
                        ", unclean" if self.unclean else "",
                    )
                    if self.unclean:
                        restart.reported(self.state)
                        self.unclean = False
                    continue  # heartbeat the new registration at once
                if response_hb.error.code == common_pb2.NONE:
                    self.fenced = response_hb.fenced
            except (grpc.aio.AioRpcError, ConnectionError) as exc:
                logger.debug("controller link: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)

    async def _states_through_relay(self) -> None:
        """While the controller answers us only through a relay, our own quorum member may be
        cut off from the Raft leader too, and our metadata stale: a leadership moved to us, or
        to another replica we should follow, would go unseen until the fault heals. So take the
        committed state of our partitions from the controller (through the relay) and act on
        what is newer — the listener ignores what it has seen, and our metadata, once it
        catches up, brings nothing older."""
        if self.link.route is None or not self.replicas.ready:
            return
        with self.store.read() as state:
            me = state.brokers.get(self.config.node_id)
        if me is None or me.incarnation != self.incarnation:
            return  # not registered yet: the roles there are a previous process's
        try:
            response = await self.link.call(
                "PartitionStates",
                controller_pb2.PartitionStatesRequest(
                    broker_id=self.config.node_id, incarnation=self.incarnation
                ),
                2,
            )
        except (grpc.aio.AioRpcError, ControllerUnreachable):
            return
        if response.error.code:
            return
        events = self.listener.changed(decode_partition_rows(response.partitions))
        if events:
            logger.info("acting on %d partition change(s) heard through a relay", len(events))
            self.replicas.apply_events(events)

    def _check_controller_contact(self) -> None:
        """A session without any answer from the controller (direct or relayed): this broker is
        fenced, or soon will be, and its leaderships move — stop taking produces (``set_cut_off``)
        and stop naming a controller in Metadata answers, so clients ask a broker that knows."""
        silent_ms = self.clock_ms() - self.controller_contact_ms
        if silent_ms > self.config.session_timeout_ms:
            self.replicas.set_cut_off(
                f"broker {self.config.node_id} has not reached the controller for {silent_ms} ms "
                "(a session): it may be fenced and its leaderships moved"
            )
        else:
            self.replicas.set_cut_off(None)

    def _ping_peers(self) -> None:
        """Ping every other registered broker, one ping in flight per peer (``peers.py``)."""
        with self.store.read() as state:
            peers = [(b.broker_id, b.address) for b in state.brokers.values()]
        for peer, address in peers:
            if peer != self.config.node_id and peer not in self._pinging:
                self._pinging.add(peer)
                self._background_tasks.spawn(self._ping(peer, address))

    async def _ping(self, peer: int, address: str) -> None:
        try:
            await self.broker_stub(address).WhoAmI(
                broker_pb2.WhoAmIRequest(), timeout=PING_TIMEOUT_MS / 1000
            )
            self.peers.answered(peer, self.clock_ms())
        except grpc.aio.AioRpcError:
            pass  # not answered: it drops out of the reachable set after REACH_WINDOW_MS
        finally:
            self._pinging.discard(peer)

    async def _report_damage(self) -> None:
        """Tell the controller which replicas were cut at damage (periodic, until committed)."""
        keys = sorted(self.replicas.damaged)
        if not keys or self.registered_version < 0:
            return
        partitions = [controller_pb2.TopicPartitionRef(topic=t, partition=p) for t, p in keys]
        if self.controller.quorum.is_leader():
            result = await self.controller.replicas_damaged(
                ReplicasDamaged(self.config.node_id, self.incarnation, tuple(keys))
            )
            if "error" in result:
                logger.warning("damage report refused: %s", result)
                return
            version = self.store.version
        else:
            try:
                response = await self.link.call(
                    "ReportDamagedReplicas",
                    controller_pb2.ReportDamagedReplicasRequest(
                        broker_id=self.config.node_id,
                        incarnation=self.incarnation,
                        partitions=partitions,
                    ),
                    5,
                )
            except ControllerUnreachable:
                return  # reported again in 200 ms
            if response.error.code:
                logger.warning("damage report refused: %s", response.error.message)
                return
            version = response.metadata_version
        logger.info("damaged replicas reported: %s", keys)
        self.replicas.damage_reported(keys)
        await asyncio.get_running_loop().run_in_executor(
            None, self.store.wait_for_version, version, 2.0
        )
        self._apply_metadata()

    # ---- periodic work ---------------------------------------------------------------------------

    async def _every(self, interval_ms: int, work: Any) -> None:
        while not self._stopping.is_set():
            try:
                result = work()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("periodic %s failed", getattr(work, "__name__", work))
            # A plain sleep: run() cancels these tasks on shutdown. wait_for(stopping.wait())
            # made a task and two timer handles per round, most of an idle broker's loop CPU.
            await asyncio.sleep(interval_ms / 1000)

    # ---- running -------------------------------------------------------------------------------

    def _in_background(self, work: Callable[[], None]) -> None:
        """Disk work that must not stall the loop (the fsync of a rolled segment)."""

        def logged() -> None:
            try:
                work()
            except Exception as exc:
                logger.error("background disk work failed: %s", exc)

        self._disk.submit(logged)

    async def _probe(self, address: str) -> bool:
        """False only when ``address`` refuses the connection (nothing listens: the process is
        dead). A timeout, a slow answer or any other error counts as "maybe alive"."""
        host, _, port = address.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 0.5)
        except ConnectionRefusedError:
            return False
        except (OSError, TimeoutError, ValueError):
            return True
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    async def run(self) -> None:
        config = self.config
        self._loop = asyncio.get_running_loop()
        self.store.add_observer(self._on_applied)
        observer: MetadataObserver | None = None
        if config.is_voter and not os.path.exists(self._removed_marker):
            self.quorum = QuorumMember(
                RaftQuorum(
                    QuorumConfig(
                        node_id=config.node_id,
                        voters={v.node_id: v.raft_address for v in config.voters},
                        secret=config.cluster_secret,
                        data_dir=os.path.join(config.data_dir, "raft"),
                        bind_host=config.raft_listen.rpartition(":")[0],
                    ),
                    self.store,
                )
            )
        else:  # not a voter: follow the voters' committed metadata (metadata_observer.py)
            # (one added later by add-voter starts its Raft member once its metadata says so)
            observer = self._new_observer()
            self.quorum = QuorumMember(observer)
        self.controller = ActiveController(
            config.node_id,
            self.quorum,
            self.store,
            ControllerConfig(
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
            ),
            self.clock_ms,
            probe=self._probe,
            limits=config.limits,
        )
        self.link = ControllerLink(
            config.node_id,
            [v.node_id for v in self.current_voters()],
            self.quorum.leader_id,
            self.controller_stub_of,
            (
                OriginSigner.from_files(config.security.cert_file, config.security.key_file).headers
                if config.security.is_tls
                else None
            ),
        )
        self.metrics.counting_elections = True
        self.fetchers = FetcherManager(
            self.replicas,
            config.node_id,
            self.incarnation,
            self.broker_address,
            self.channel,
            self.clock_ms,
        )
        server = grpc.aio.server(
            options=[
                *server_options(),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", config.limits.streams_per_connection_max),
            ],
            maximum_concurrent_rpcs=config.limits.requests_in_flight_max,
        )
        broker_rpcs, group_rpcs = BrokerServicer(self), GroupServicer(self)
        broker_pb2_grpc.add_BrokerServicer_to_server(broker_rpcs, server)
        controller_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(self), server)
        group_pb2_grpc.add_GroupCoordinatorServicer_to_server(group_rpcs, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        await self._publish_health()  # NOT_SERVING until registered, unfenced, caught up
        if config.security.is_tls:
            port = server.add_secure_port(config.grpc_listen, server_credentials(config.security))
        else:
            logger.warning("broker %s: plaintext listener (security.protocol)", config.node_id)
            port = server.add_insecure_port(config.grpc_listen)
        if port == 0:
            raise OSError(f"cannot listen on {config.grpc_listen}")
        if config.grpc_password_listen is not None:
            # TLS without client certificates: callers authenticate with a SCRAM user's name and
            # password on every call (raftlog.cluster.auth)
            _, cert, key = _read_tls(config.security)
            if not server.add_secure_port(
                config.grpc_password_listen, grpc.ssl_server_credentials([(key, cert)])
            ):
                raise OSError(f"cannot listen on {config.grpc_password_listen}")
        self.metrics.start(self._loop)  # a metrics_address in use stops us before we serve
        await server.start()
        logger.info("broker %s serving on %s", config.node_id, config.grpc_listen)
        kafka = None
        if config.kafka_listen is not None:
            # the same servicers behind a second protocol (kafka_listener.py)
            kafka = KafkaListener(self, KafkaApis(broker_rpcs, group_rpcs))
            await kafka.start(config.kafka_listen)
        loop = self._loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        # delayed produces and fetches expire on a timer armed for the next deadline (the 100 ms
        # ``periodic`` advances the purgatories too: a backstop, never the only way)
        expiry = DeadlineTimer(self.replicas.expire, self.replicas.next_expiry_ms, self.clock_ms)
        self.replicas.on_watch = expiry.rearm
        tasks = [
            loop.create_task(self._wait_for_metadata()),
            loop.create_task(self._lifecycle()),
            loop.create_task(self._every(20, self.controller.tick)),
            loop.create_task(self._every(100, self.replicas.periodic)),
            loop.create_task(
                self._every(config.hw_checkpoint_interval_ms, self.replicas.checkpoint)
            ),
            loop.create_task(
                self._every(config.retention_check_interval_ms, self.replicas.enforce_retention)
            ),
            loop.create_task(self._every(60_000, self.replicas.expire_producers)),
            loop.create_task(self._every(config.log_cleaner_interval_ms, self.replicas.clean_logs)),
            loop.create_task(self._every(100, self.coordinator.tick)),
            loop.create_task(self._every(200, self._report_damage)),
            loop.create_task(self._every(PING_INTERVAL_MS, self._ping_peers)),
            loop.create_task(self._every(100, self._check_controller_contact)),
            loop.create_task(self._every(200, self._check_still_voter)),
            loop.create_task(self._every(RELAYED_STATES_INTERVAL_MS, self._states_through_relay)),
            loop.create_task(self._every(1000, self.replicas.scrub)),
            loop.create_task(self._every(HEALTH_INTERVAL_MS, self._publish_health)),
            loop.create_task(self._every(RATE_SAMPLE_INTERVAL_MS, self.metrics.sample_rates)),
        ]
        if observer is not None:
            self._observer_task = loop.create_task(observer.run(self._stopping))
        try:
            await self._stopping.wait()
        finally:
            logger.info("broker %s shutting down", config.node_id)
            await self.health.shut_down()
            self.replicas.ready = False  # new requests are refused from here on
            self.replicas.release_waiters()
            if kafka is not None:
                await kafka.close()
            await server.stop(grace=1.0)
            self.replicas.on_watch = None
            expiry.close()
            if self._observer_task is not None:
                tasks.append(self._observer_task)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._background_tasks.cancel_all()
            await self.controller.tasks.cancel_all()
            await self.coordinator.tasks.cancel_all()
            await self.fetchers.close()
            self.metrics.stop()
            self._disk.shutdown(wait=True)  # pending fsyncs first: they use the logs' files
            self.replicas.close()
            for channel in self._channels.values():
                await channel.close()
            self.quorum.close()
            restart.closed_cleanly(self.state)
            self.state.close()
            logger.info("broker %s stopped", config.node_id)

    def stop(self) -> None:
        self._stopping.set()

    # ---- changing quorum role (quorum_member.py) -------------------------------------------------

    @property
    def _removed_marker(self) -> str:
        # written when this broker leaves the voters: its Raft journal names a membership it is
        # no longer in, so it must not start a Raft member from its config after a restart
        return os.path.join(self.config.data_dir, "raft", "REMOVED")

    def _new_observer(self) -> MetadataObserver:
        return MetadataObserver(
            self.config.node_id,
            self.store,
            {v.node_id: v.raft_address for v in self.current_voters()},
            self.controller_stub_of,
        )

    def _follow_voters(self) -> None:
        """On the loop, after metadata was applied: every broker's routes follow the voter set;
        a broker the metadata names as a voter (or as joining) starts its Raft member, one
        removed from it stops (see quorum_member.py)."""
        voters = self.current_voters()
        ids = tuple(sorted(v.node_id for v in voters))
        if getattr(self, "link", None) is not None and self.link.voter_ids != ids:
            self.link.voter_ids = ids
        member = getattr(self, "quorum", None)
        if member is None or self._switching:
            return
        observer, raft = member.observer, member.raft
        if observer is not None and observer.route.voters != ids:
            observer.voters = {v.node_id: v.raft_address for v in voters}
            observer.route.voters = ids
        if raft is not None:
            raft.learn_voter_ids({v.node_id: v.raft_address for v in voters})
        with self.store.read() as state:
            changed, joining = bool(state.voters), state.joining_voter
        me = next((v for v in voters if v.node_id == self.config.node_id), None)
        if me is not None:
            self._joining = False  # a member now (or all along)
        elif joining is not None and joining.node_id == self.config.node_id:
            me = joining  # add-voter is bringing us in: start before the entry that adds us
            self._joining = True
        if observer is not None:
            if me is not None:
                self._switching = True
                self._background_tasks.spawn(self._become_voter(me, voters))
        elif raft is not None and me is None and (changed or self._joining):
            # removed from the voters, or a join that was cancelled (CancelVoter)
            self._joining = False
            self._switching = True
            self._background_tasks.spawn(self._become_observer())

    async def _describe_quorum_at(self, address: str) -> broker_pb2.DescribeQuorumResponse:
        answer: broker_pb2.DescribeQuorumResponse = await self.broker_stub(address).DescribeQuorum(
            broker_pb2.DescribeQuorumRequest(), timeout=1.0
        )
        return answer

    def _check_still_voter(self) -> None:
        """A Raft member that hears no leader may have been removed without applying it (see
        quorum_member.py): ask, and observe if so."""
        member = self.quorum
        raft = None if self._switching or self._joining else member.raft
        if not self._membership_check.due(None if raft is None else raft.status()):
            return

        async def check() -> None:
            if not await self._membership_check.removed(self.current_voters()):
                return
            if self.quorum.raft is raft and not self._switching and not self._joining:
                self._switching = True
                await self._become_observer()

        self._background_tasks.spawn(check())

    async def _become_voter(self, me: VoterRecord, voters: tuple[VoterRecord, ...]) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        try:
            task, self._observer_task = self._observer_task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            observer = self.quorum.observer
            if observer is not None:
                await loop.run_in_executor(None, observer.close)
            members = {v.node_id: v.raft_address for v in voters}
            members[me.node_id] = me.raft_address
            bind_host = (config.raft_listen or me.raft_address).rpartition(":")[0]
            quorum_config = QuorumConfig(
                node_id=config.node_id,
                voters=members,
                secret=config.cluster_secret,
                data_dir=os.path.join(config.data_dir, "raft"),
                bind_host=bind_host,
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._removed_marker)
            raft = await loop.run_in_executor(
                None, RaftQuorum, quorum_config, CatchingUpMachine(self.store)
            )
            raft.learn_voter_ids(members)
            self.quorum.current = raft
            logger.info(
                "broker %s is now a metadata quorum voter (Raft %s)",
                config.node_id,
                me.raft_address,
            )
        except Exception:
            logger.exception("could not start this broker's Raft member; observing again")
            observer = self._new_observer()
            self.quorum.current = observer
            self._observer_task = loop.create_task(observer.run(self._stopping))
        finally:
            self._switching = False

    async def _become_observer(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            raft = self.quorum.raft
            observer = self._new_observer()
            self.quorum.current = observer
            if raft is not None:
                await loop.run_in_executor(None, raft.close)
            with open(self._removed_marker, "w") as marker:
                marker.write("removed from the metadata quorum's voters\n")
            self._observer_task = loop.create_task(observer.run(self._stopping))
            logger.info("broker %s left the metadata quorum: observing", self.config.node_id)
        finally:
            self._switching = False


def run_broker(config: BrokerConfig) -> int:
    """The foreground broker (``raftlog broker --config``); returns the exit code."""
    broker = Broker(config)
    asyncio.run(broker.run())
    return 0
