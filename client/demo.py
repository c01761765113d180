"""``raftlog demo`` (``make demo``): the product in one minute, checked as it goes.

Starts a local 3-node cluster (mutual TLS, its own CA; the super user ``admin`` sets up ACLs so
that the application principal ``demo-app`` may write and read only topic ``demo``, and shows
that a principal without ACLs is refused), creates a topic with replication factor 3 and min ISR
2, produces 10,000 records with acks=all, kills the leader of a partition with SIGKILL, produces
10,000 more while the cluster fails over, consumes everything and checks that all 20,000 records
are there exactly once and in send order per partition, restarts the killed broker and waits for
it to rejoin every ISR, checks every broker's health service and ``/metrics`` (the failover's
leader election counted, nothing under-replicated), shows the status view, and stops the
cluster. Exit code 0 only when every check passed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .acl_admin import Acl
from .admin import Admin
from .consumer import Consumer, ConsumerRecord
from .errors import TopicAuthorizationFailedError
from .local_cluster import LocalCluster
from .observability import health_status, scrape, sum_of
from .producer import Producer, SendFuture

__all__ = ["run_demo"]

TOPIC = "demo"


def _produce(producer: Producer, start: int, count: int) -> list[SendFuture]:
    return [
        producer.send(TOPIC, f"demo-{i}".encode(), key=f"key-{i % 97}".encode())
        for i in range(start, start + count)
    ]


def run_demo(
    console: Console, directory: str, base_port: int, records: int, *, keep: bool = False
) -> int:
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append((name, ok, detail))
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        console.print(f"   {mark} {name}: {detail}")
        return ok

    demo_dir = Path(directory)
    cluster = LocalCluster(demo_dir)
    if cluster.running():
        console.print(f"stopping the cluster left running in {demo_dir} …")
        cluster.down()
    shutil.rmtree(demo_dir, ignore_errors=True)
    cluster = LocalCluster(demo_dir)
    console.rule("[bold]raftlog demo[/bold]")
    started = time.monotonic()
    console.print(f"1. starting 3 brokers in {demo_dir} (gRPC ports {base_port}-{base_port + 2}) …")
    try:
        cluster.up(3, base_port)
        console.print(
            f"   ready in {time.monotonic() - started:.1f} s: bootstrap {cluster.bootstrap}"
        )
        app = cluster.client_security("demo-app")
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            console.print("2. creating topic 'demo': 3 partitions, replication factor 3, min ISR 2")
            admin.create_topic(TOPIC, 3, 3, min_insync_replicas=2)
            console.print(
                f"   as {admin.whoami().principal} (super user); ACLs: User:demo-app may write "
                "and read topic 'demo', and read any group"
            )
            admin.create_acls(
                [
                    Acl("User:demo-app", "topic", TOPIC, "write"),
                    Acl("User:demo-app", "topic", TOPIC, "read"),
                    Acl("User:demo-app", "group", "*", "read"),
                ]
            )
            refused: BaseException | None = None
            with Producer(
                cluster.bootstrap,
                acks="all",
                linger_ms=5,
                security=cluster.client_security("nobody"),
            ) as intruder:
                try:
                    refused = intruder.send(TOPIC, b"not allowed").exception(timeout=30)
                except TopicAuthorizationFailedError as exc:
                    refused = exc
            check(
                "a principal without ACLs is refused",
                isinstance(refused, TopicAuthorizationFailedError),
                f"User:nobody got {type(refused).__name__}",
            )
            with Producer(cluster.bootstrap, acks="all", linger_ms=5, security=app) as producer:
                console.print(f"3. producing {records:,} records with acks=all …")
                t0 = time.monotonic()
                first = _produce(producer, 0, records)
                producer.flush()
                took = time.monotonic() - t0
                acked_first = [f.result() for f in first]
                console.print(f"   acknowledged in {took:.2f} s ({records / took:,.0f} records/s)")
                victim = admin.describe_topic(TOPIC).partitions[0].leader
                console.print(f"4. killing broker {victim}, the leader of partition 0 (SIGKILL)")
                cluster.kill(victim)
                console.print(f"5. producing {records:,} more while the cluster fails over …")
                t0 = time.monotonic()
                second = _produce(producer, records, records)
                producer.flush()
                errors = [f.exception() for f in second if f.exception() is not None]
                took = time.monotonic() - t0
                console.print(
                    f"   acknowledged in {took:.2f} s, {producer.stats['retries']} retries"
                )
                check("every send acknowledged", not errors, f"{len(errors)} failed")
                acked = acked_first + [f.result() for f in second if f.exception() is None]
            topic = admin.describe_topic(TOPIC)
            leaders = {p.partition: p.leader for p in topic.partitions}
            check(
                "a new leader took over",
                leaders[0] != victim and all(v != victim for v in leaders.values()),
                f"leaders now {leaders}",
            )
            console.print("6. consuming everything from the beginning …")
            with Consumer(
                cluster.bootstrap, auto_offset_reset="earliest", security=app
            ) as consumer:
                consumer.assign_topic(TOPIC)
                got: list[ConsumerRecord] = []
                deadline = time.monotonic() + 60
                while len(got) < 2 * records and time.monotonic() < deadline:
                    got += consumer.poll(timeout_ms=1000)
            values = [int(r.value.decode().split("-")[1]) for r in got if r.value]
            check(
                "all records there exactly once",
                sorted(values) == list(range(2 * records)),
                f"{len(values):,} read, {len(set(values)):,} distinct, {2 * records:,} sent",
            )
            where = {
                (r.partition, r.offset): int(r.value.decode().split("-")[1]) for r in got if r.value
            }
            check(
                "each at its acknowledged offset",
                all(where.get((m.partition, m.offset)) is not None for m in acked),
                f"{len(acked):,} acknowledged offsets looked up",
            )
            in_order = True
            for partition in range(3):
                seq = [
                    int(r.value.decode().split("-")[1])
                    for r in got
                    if r.partition == partition and r.value
                ]
                in_order &= seq == sorted(seq)
            check("in send order per partition", in_order, "offsets and sequence agree")
            console.print(f"7. restarting broker {victim}; it catches up and rejoins the ISRs …")
            cluster.start(victim)
            deadline = time.monotonic() + 30
            rejoined = False
            while time.monotonic() < deadline and not rejoined:
                topic = admin.describe_topic(TOPIC)
                rejoined = all(victim in p.isr for p in topic.partitions)
                time.sleep(0.2)
            check(
                "the restarted broker is back in sync",
                rejoined,
                f"ISRs {[list(p.isr) for p in topic.partitions]}",
            )
            urls = [f"http://{n.metrics}/metrics" for n in cluster.nodes.values()]
            deadline = time.monotonic() + 10  # every broker applies the metadata in its time
            while True:
                pages = [scrape(url) for url in urls]
                lagging = sum(sum_of(p, "raftlog_under_replicated_partitions") for p in pages)
                health = [health_status(n.grpc, cluster.security) for n in cluster.nodes.values()]
                if (lagging == 0 and set(health) == {"SERVING"}) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            elections = sum(sum_of(p, "raftlog_leader_elections_total") for p in pages)
            check(
                "metrics and health tell the story",
                health == ["SERVING"] * 3 and elections >= 1 and lagging == 0,
                f"health {health}; /metrics: {elections:.0f} leader election(s), "
                f"{lagging:.0f} under-replicated (curl {urls[0]})",
            )
            console.print("8. the cluster now (`raftlog status`):")
            from .status import render

            console.print(render(admin.status_snapshot(), width_hint=console.width))
    finally:
        if keep:
            console.print(f"the cluster keeps running: bootstrap {cluster.bootstrap}")
            console.print(f"stop it with: raftlog cluster down --dir {demo_dir}")
        else:
            cluster.down()
            console.print("9. stopped the cluster")
    table = Table(title="demo checks")
    table.add_column("check")
    table.add_column("result")
    for name, ok, detail in checks:
        table.add_row(name, ("[green]ok[/green] " if ok else "[red]FAILED[/red] ") + detail)
    console.print(table)
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        console.print(f"[red]demo failed:[/red] {', '.join(failed)}")
        return 1
    console.print(f"[green]demo passed[/green] in {time.monotonic() - started:.0f} s")
    return 0
