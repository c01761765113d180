# raftlog — one Makefile for setting up, testing, linting and measuring.
# Every target creates the virtual environment (.venv) when it is missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PACKAGES := proto cluster raft segments client chaos
# the benchmark drivers: a top-level package run from the repository root, not installed
BENCH := bench

.PHONY: install test test-all test-slow lint typecheck proto demo demo-storage bench-storage bench-groups bench-quorum bench-quorum-scale bench bench-plaintext clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Every test not marked slow: the pure unit tests, real clusters on loopback (integration), the
## seeded simulation's smoke seeds, and the chaos tests in network namespaces (root; they skip
## without it). This is what CI runs (.ci/run); pytest-timeout fails a hung test after 300 s.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25

## Everything, including slow tests.
test-all: $(STAMP)
	$(PY) -m pytest -q

## Only the slow tests (the longer chaos scenarios: an unclean election the checker must catch,
## recovery after ring and bridge heals, duplicates without idempotence; the slow sim seeds).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=10

## ruff, mypy --strict, and the dependency direction of DESIGN.md (import-linter, pyproject.toml).
lint: $(STAMP) typecheck
	$(VENV)/bin/ruff check $(PACKAGES) $(BENCH) tests
	$(VENV)/bin/ruff format --check $(PACKAGES) $(BENCH) tests
	$(VENV)/bin/lint-imports

# mypy cannot follow setuptools' editable import hook, so it reads the packages through a tree
# of symlinks laid out as they are installed (raftlog/segments -> ../../segments, ...); bench/ is
# a top-level package beside them (bench -> ../bench).
typecheck: $(STAMP)
	@rm -rf .typecheck && mkdir -p .typecheck/raftlog
	@for p in $(PACKAGES); do ln -s ../../$$p .typecheck/raftlog/$$p; done
	@ln -s ../$(BENCH) .typecheck/$(BENCH)
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml $(addprefix -p raftlog.,$(PACKAGES)) -p $(BENCH)

## Regenerate the gRPC/protobuf modules from proto/*.proto (they are committed).
proto: $(STAMP)
	$(PY) -m raftlog.proto.build

## A local 3-node cluster: produce, kill a leader, produce, verify every record, status, stop.
demo: $(STAMP)
	$(VENV)/bin/raftlog demo

## The storage engine alone, killed mid-write and recovered.
demo-storage: $(STAMP)
	$(VENV)/bin/raftlog storage demo

bench-storage: $(STAMP)
	$(PY) -m bench.storage

## Consumer groups: what a join, a leave, a consumer kill and a coordinator kill cost three
## consumers (rebalances, partitions moved, the longest pause of a partition), eager and cooperative.
bench-groups: $(STAMP)
	$(PY) -m bench.groups

## Metadata quorum: failover time of 3 and 5 voters (kill -9 of the Raft leader).
bench-quorum: $(STAMP)
	$(PY) -m bench.quorum_failover

## Metadata quorum at scale: 100k partitions in-process and through 3 voters (commit rate,
## catch-up, failover with the controller, elections a stall caused). ~3 minutes.
bench-quorum-scale: $(STAMP)
	$(PY) -m bench.quorum_scale

## A long chaos run (root + ip netns): 5 brokers in network namespaces, partitions, kills and
## pauses for 5 minutes, then heal, drain, check. The run folder is .raftlog-chaos/<ts>-seed<n>.
.PHONY: chaos
chaos: $(STAMP)
	$(VENV)/bin/raftlog chaos run --nodes 5 --time-limit 300 --nemesis partition,kill,pause

## The seeded whole-cluster simulation (tests/sim): the standard seed set (200 seeds of 60
## simulated seconds) on every core, figures in bench-results/sim.json. SEED=n replays one seed
## (TRACE=file also writes what happened), PLANT=name runs with a planted bug (tests/sim/plants.py).
.PHONY: sim
sim: $(STAMP)
	PYTHONHASHSEED=0 $(PY) -m tests.sim $(if $(SEED),--seed $(SEED)) $(if $(TRACE),--trace $(TRACE)) $(if $(PLANT),--plant $(PLANT))

## lazyfs (the power-loss nemesis's FUSE layer): small appends, with and without an fdatasync
## each, on the plain disk and through a lazyfs mount (root, /dev/fuse, libfuse 3).
.PHONY: bench-lazyfs
bench-lazyfs: $(STAMP)
	@rm -rf .bench-lazyfs && mkdir -p .bench-lazyfs
	$(PY) -m raftlog.chaos.lazyfs bench .bench-lazyfs --seconds 3; status=$$?; rm -rf .bench-lazyfs; exit $$status

## The cluster: acks=all throughput (100 B, 1 KiB, 16 KiB), p99 at 10k records/s, consumer
## throughput, librdkafka's producer through the Kafka listeners (100 B, 16 KiB), failover after
## kill -9 of a leader, raw disk speed; bench-results/cluster.json.
## With mutual TLS, as deployed; bench-plaintext runs the same without TLS (what TLS costs).
bench: $(STAMP)
	$(PY) -m bench.cluster

bench-plaintext: $(STAMP)
	$(PY) -m bench.cluster --plaintext

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .ruff_cache build *.egg-info
