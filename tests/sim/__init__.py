"""A deterministic, seeded simulation of a whole raftlog cluster in one process.

TigerBeetle's VOPR and FoundationDB's simulator, for raftlog: one ``random.Random(seed)`` drives
every choice, time is virtual (``looptime``), and a failing seed replays bit for bit
(``make sim SEED=n``; ``TRACE=file`` writes what happened).

Real code under test: ``ReplicaManager`` (produce, fetch, purgatories, ISR and high-watermark
rules, truncation, idempotent-producer dedupe, checkpoints) over real ``segments`` logs and
LMDB state in a temporary directory; recovery at open; ``cluster.restart``'s clean / crash /
power-loss verdict; the metadata state machine (``MetadataState``) and the controller's
decisions (``ControllerCore``); each broker's ``PartitionListener``; the follower's decision
(``replication.follower_decision``); the producer's ``RecordAccumulator`` and ``BatchBuilder``;
``chaos.checker.check`` as the judge.

Simulated around it: the Raft group (a sequencer with per-broker apply lag, ``controller.py``),
the gRPC servicers and the fetcher and producer loops (restated over a seeded network that
delays, reorders, drops and partitions, ``node.py``), processes that crash, pause and lose power
(unsynced writes dropped, from a record of every fsync, ``disk.py``), and the faults
(``nemesis.py``).

Modules: ``looptime`` (virtual-time asyncio loop), ``node`` (processes, network, RPC),
``disk`` (durability and power loss), ``controller`` (quorum and controller), ``broker``,
``follower``, ``workload`` (clients and history), ``nemesis``, ``sim`` (one run),
``plants`` (bugs planted on purpose), ``__main__`` (``make sim``).
"""
