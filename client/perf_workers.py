"""Several producers of one perf run (``raftlog bench produce --producers N``), each a worker
process (this module with ``--worker``), so that N producers are not N threads sharing one GIL.

Each worker gets its share of records and throughput (``split_spec``); all connect first and are
then started together; their records add up over the span from the earliest start to the latest
end, and their latency samples (a file of doubles each) are merged before the percentiles are
taken (``merge_produce``). Workers reach the cluster as the parent does: the ``ClientSecurity``
(CA, certificate and key, or plaintext) travels base64-encoded in their JSON order on stdin,
never on the command line, where ``ps`` would show a private key.

Protocol, one JSON line each: parent → worker ``{bootstrap, security, spec, out}``, then ``go``;
worker → parent ``{"ready": true}``, ``{"progress": [sent, acked]}`` now and then, and one
``{"result": {...}}``. Every wait on a worker is bounded; a worker left running is killed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .perf_engines import PROGRESS_INTERVAL_S, ProgressFn, run_produce_here
from .perf_results import ProduceResult, ProduceSpec, merge_produce, split_spec
from .stats import LatencySummary

if TYPE_CHECKING:
    from .security import ClientSecurity

__all__ = ["main", "run_produce_workers", "worker_main"]

_WORKER_READY_TIMEOUT_S = 60.0


def _security_to_json(security: ClientSecurity) -> dict[str, str] | None:
    """A worker's order carries the PEMs base64-encoded; ``None`` is plaintext."""
    if security.ca_pem is None:
        return None
    pems = {"ca": security.ca_pem, "cert": security.cert_pem, "key": security.key_pem}
    return {k: base64.b64encode(v).decode("ascii") for k, v in pems.items() if v is not None}


def _security_from_json(body: dict[str, str] | None) -> ClientSecurity:
    from .security import ClientSecurity

    if body is None:
        return ClientSecurity.plaintext()
    pems = {k: base64.b64decode(v, validate=True) for k, v in body.items()}
    return ClientSecurity(pems["ca"], pems.get("cert"), pems.get("key"))


# ---- worker processes ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    process: subprocess.Popen[str]
    samples_path: str
    sent: int = 0
    acked: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    reader: threading.Thread | None = None


def _read_worker(worker: _Worker) -> None:
    stdout = worker.process.stdout
    assert stdout is not None  # PIPE was asked for
    for line in stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "ready" in message:
            worker.ready.set()
        elif "progress" in message:
            worker.sent, worker.acked = message["progress"]
        elif "result" in message:
            worker.result = message["result"]
    worker.ready.set()  # the worker ended: nobody waits on it forever


def run_produce_workers(
    bootstrap: str, spec: ProduceSpec, security: ClientSecurity, progress: ProgressFn | None
) -> ProduceResult:
    """``spec.producers`` worker processes, each with its share; their results merged."""
    shares = split_spec(spec)
    tls = _security_to_json(security)
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="raftlog-perf-") as scratch:
        try:
            for i, share in enumerate(shares):
                path = os.path.join(scratch, f"samples-{i}.bin")
                command = [sys.executable, "-m", "raftlog.client.perf_workers", "--worker"]
                order = {
                    "bootstrap": bootstrap,
                    "security": tls,
                    "spec": asdict(share),
                    "out": path,
                }
                body = json.dumps(order)
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
                assert process.stdin is not None
                process.stdin.write(body + "\n")
                process.stdin.flush()
                worker = _Worker(process, path)
                worker.reader = threading.Thread(target=_read_worker, args=(worker,), daemon=True)
                worker.reader.start()
                workers.append(worker)
            deadline = time.monotonic() + _WORKER_READY_TIMEOUT_S
            for worker in workers:
                if not worker.ready.wait(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError("a producer worker did not connect within 60 s")
                if worker.process.poll() is not None:
                    raise RuntimeError(f"a producer worker exited ({worker.process.returncode})")
            for worker in workers:  # all connected: go together
                assert worker.process.stdin is not None
                worker.process.stdin.write("go\n")
                worker.process.stdin.flush()
            while any(w.process.poll() is None for w in workers):
                if progress is not None:
                    progress(sum(w.sent for w in workers), sum(w.acked for w in workers))
                time.sleep(PROGRESS_INTERVAL_S)
            parts: list[tuple[ProduceResult, Sequence[float]]] = []
            for worker in workers:
                if worker.reader is not None:
                    worker.reader.join(timeout=10)
                if worker.result is None:
                    raise RuntimeError(
                        f"a producer worker ended without a result ({worker.process.returncode})"
                    )
                samples = array("d")
                with open(worker.samples_path, "rb") as f:
                    samples.frombytes(f.read())
                parts.append((_result_from_json(worker.result, spec), samples))
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
                for stream in (worker.process.stdin, worker.process.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
    return merge_produce(spec, parts)


def _result_from_json(body: dict[str, Any], spec: ProduceSpec) -> ProduceResult:
    return ProduceResult(
        spec=spec,
        records=int(body["records"]),
        failed=int(body["failed"]),
        elapsed_s=float(body["elapsed_s"]),
        latency=LatencySummary.of(()),  # recomputed from the merged samples
        errors={str(k): int(v) for k, v in body["errors"].items()},
        client_cpu_s=float(body["client_cpu_s"]),
        started_at=float(body["started_at"]),
        batches=int(body["batches"]),
        requests=int(body["requests"]),
    )


def worker_main(stdin: IO[str], stdout: IO[str]) -> int:
    """``--worker``: a JSON line of {bootstrap, security, spec, out} on stdin; prints ready,
    waits for ``go``, produces, writes the samples to ``out`` and a result line."""
    order = json.loads(stdin.readline())
    spec = ProduceSpec(**order["spec"])
    security = _security_from_json(order["security"])
    lock = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with lock:
            stdout.write(json.dumps(message) + "\n")
            stdout.flush()

    def gate() -> None:
        emit({"ready": True})
        if stdin.readline().strip() != "go":
            raise SystemExit(3)  # the parent went away

    def progress(sent: int, acked: int) -> None:
        emit({"progress": [sent, acked]})

    result, samples = run_produce_here(
        order["bootstrap"], spec, security=security, progress=progress, start_gate=gate
    )
    with open(order["out"], "wb") as f:
        samples.tofile(f)
    body = result.to_json()
    body["started_at"] = result.started_at
    body["elapsed_s"] = result.elapsed_s
    emit({"result": body})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--worker"]:
        return worker_main(sys.stdin, sys.stdout)
    print("use `raftlog bench produce --producers N` (this module's --worker is internal)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
