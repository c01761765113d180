"""The benchmark drivers and their shared scaffolding (``bench.common``); not part of the
installed library. Each runs from the repository root as ``python -m bench.<driver>``, as the
Makefile's targets do:

- ``storage`` — ``make bench-storage``: ``Log`` append/read against raw writes, recovery time;
- ``quorum_failover`` — ``make bench-quorum``: failover of the metadata quorum alone;
- ``quorum_scale`` — ``make bench-quorum-scale``: 100k partitions in process, 10k through a
  quorum (its voters: ``quorum_scale_voter``; its commands: ``quorum_scale_commands``);
- ``quorum_commit`` — the commit rate of a quorum over a counter (no make target);
- ``cluster`` — ``make bench`` / ``make bench-plaintext``: a local 3-broker cluster end to end
  (with ``cluster_failover``, ``cluster_profile``, ``kafka_producer`` and ``machine``).

Figures go to ``bench-results/*.json``. bench/ may import anything (DESIGN.md); nothing imports
bench/ but its tests.
"""
