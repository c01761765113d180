"""What a chaos run shows and leaves behind: the live view, the figures, the timeline picture.

Pure except ``write_timeline_png`` (matplotlib, from the ``chaos`` extra, imported lazily with the
Agg backend; when it is not installed the picture is skipped with a note saying what to install)
— ``render_live(snapshot)`` builds a renderable without printing (STYLE.md point 12),
``timeline_from_history`` and ``run_figures`` are functions of the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from raftlog.client.stats import percentile

from .anomalies import CheckResult, render_summary
from .history import Op, OpF, OpType
from .nemesis import FaultRecord

__all__ = [
    "LiveSnapshot",
    "Timeline",
    "acked_not_in_final_log",
    "availability_line",
    "client_line",
    "fault_counts",
    "faults_json",
    "render_live",
    "render_report",
    "run_figures",
    "timeline_from_history",
    "write_timeline_png",
]

EXAMPLES_MAX = 8


# ---- the live view -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """Everything the live view shows, taken by the runner a few times a second."""

    elapsed_s: float
    time_limit_s: float
    phase: str
    sends_ok: int
    sends_fail: int
    sends_info: int
    sends_per_s: float
    polls_ok: int
    records_read: int
    truncations: int
    errors: tuple[tuple[str, int], ...]  # the most common error names
    active_faults: tuple[FaultRecord, ...]
    faults_done: int
    nodes: tuple[tuple[int, str], ...]  # (node, "up" / "paused" / "down")
    seed: int


def render_live(s: LiveSnapshot) -> RenderableType:
    """The live view: a header line, the counters, the faults in force, the nodes."""
    header = Text.assemble(
        ("raftlog chaos ", "bold"),
        (f"seed {s.seed}", "cyan"),
        " · ",
        (s.phase, "bold yellow"),
        f" · {s.elapsed_s:5.1f} / {s.time_limit_s:.0f} s",
    )
    counters = Table.grid(padding=(0, 2))
    for _ in range(4):
        counters.add_column(justify="right")
    counters.add_row(
        Text("ops/s"),
        Text(f"{s.sends_per_s:.0f}", style="bold"),
        Text("acked"),
        Text(f"{s.sends_ok:,}", style="bold green"),
    )
    counters.add_row(
        Text("failed"),
        Text(f"{s.sends_fail:,}", style="red" if s.sends_fail else ""),
        Text("unknown (info)"),
        Text(f"{s.sends_info:,}", style="yellow" if s.sends_info else ""),
    )
    counters.add_row(
        Text("polls"),
        Text(f"{s.polls_ok:,}"),
        Text("records read"),
        Text(f"{s.records_read:,}"),
    )
    if s.truncations:
        counters.add_row(
            Text("consumer truncations"), Text(str(s.truncations), style="bold red"), "", ""
        )
    faults = Text()
    if s.active_faults:
        for f in s.active_faults:
            faults.append("⚡ ", style="bold red")
            faults.append(f"{f.name}", style="bold")
            faults.append(f" since {f.start_s:.1f} s: {f.detail}\n")
    else:
        faults.append("no fault in force", style="green")
    faults.append(f"  ({s.faults_done} done)", style="dim")
    nodes = Text("nodes: ")
    for node, state in s.nodes:
        style = {"up": "green", "paused": "yellow"}.get(state, "red")
        nodes.append(f"{node}:{state} ", style=style)
    parts: list[RenderableType] = [header, counters, faults, nodes]
    if s.errors:
        parts.append(
            Text("errors: " + ", ".join(f"{name} ×{count}" for name, count in s.errors), "dim")
        )
    return Group(*parts)


# ---- figures from the history ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeline:
    """Per-second send outcomes and every send's latency, for the picture."""

    bucket_s: float
    ok: tuple[int, ...]  # sends completed ok in bucket i
    info: tuple[int, ...]
    fail: tuple[int, ...]
    read: tuple[int, ...]  # records returned by polls completed in bucket i
    latencies: tuple[tuple[float, float, str], ...] = field(default=())
    # (completion time s, latency ms, "ok" / "info" / "fail")


def _send_pairs(ops: Iterable[Op]) -> Iterable[tuple[Op, Op]]:
    """(invoke, completion) of every completed send; one op at a time per process."""
    pending: dict[int, Op] = {}
    for op in ops:
        if op.f is not OpF.SEND:
            continue
        if op.type is OpType.INVOKE:
            pending[op.process] = op
        else:
            invoke = pending.pop(op.process, None)
            if invoke is not None:
                yield invoke, op


def timeline_from_history(ops: Sequence[Op], bucket_s: float = 1.0) -> Timeline:
    end_ms = max((op.time_ms for op in ops), default=0.0)
    n = int(end_ms / 1000 / bucket_s) + 1
    ok, info, fail, read = [0] * n, [0] * n, [0] * n, [0] * n
    latencies: list[tuple[float, float, str]] = []
    for invoke, done in _send_pairs(ops):
        i = int(done.time_ms / 1000 / bucket_s)
        {OpType.OK: ok, OpType.INFO: info, OpType.FAIL: fail}[done.type][i] += 1
        latencies.append((done.time_ms / 1000, done.time_ms - invoke.time_ms, done.type.value))
    for op in ops:
        if op.f is OpF.POLL and op.type is OpType.OK:
            records = op.value.get("records", {})
            if isinstance(records, dict):
                count = sum(len(r) for r in records.values() if isinstance(r, list))
                read[int(op.time_ms / 1000 / bucket_s)] += count
    return Timeline(bucket_s, tuple(ok), tuple(info), tuple(fail), tuple(read), tuple(latencies))


def _percentile_ms(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (``raftlog.client.stats``: nearest rank) to 0.01 ms; None when
    there are no samples."""
    return round(percentile(sorted_values, q), 2) if sorted_values else None


def run_figures(ops: Sequence[Op]) -> dict[str, Any]:
    """Counts, rates and latencies of the workload (drains excluded) for ``results.json``."""
    ok_latency: list[float] = []
    counts = {"ok": 0, "info": 0, "fail": 0}
    errors: dict[str, int] = {}
    first = last = None
    for invoke, done in _send_pairs(ops):
        counts[done.type.value] += 1
        if done.type is OpType.OK:
            ok_latency.append(done.time_ms - invoke.time_ms)
        if done.error:
            name = done.error.split(":", 1)[0]
            errors[name] = errors.get(name, 0) + 1
        first = invoke.time_ms if first is None else min(first, invoke.time_ms)
        last = done.time_ms if last is None else max(last, done.time_ms)
    ok_latency.sort()
    span_s = ((last or 0.0) - (first or 0.0)) / 1000
    polls = [op for op in ops if op.f is OpF.POLL and op.type is not OpType.INVOKE]
    return {
        "sends": sum(counts.values()),
        "sends_ok": counts["ok"],
        "sends_info": counts["info"],
        "sends_fail": counts["fail"],
        "acked_per_s": round(counts["ok"] / span_s, 1) if span_s > 0 else 0.0,
        "send_errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "ack_latency_ms": {
            "p50": _percentile_ms(ok_latency, 50),
            "p95": _percentile_ms(ok_latency, 95),
            "p99": _percentile_ms(ok_latency, 99),
            "max": round(ok_latency[-1], 2) if ok_latency else None,
        },
        "polls": len(polls),
        "polls_ok": sum(1 for op in polls if op.type is OpType.OK),
        "consumer_repositions": sum(1 for op in ops if op.f is OpF.ASSIGN and op.type is OpType.OK),
        # a consumer told its log was cut below its position (or its position is past the
        # leader's end): only an unclean election or a bug can do that to committed records
        "consumer_truncations": sum(
            1
            for op in polls
            if op.error is not None and op.error.startswith(("TRUNCATED", "OFFSET_OUT_OF_RANGE"))
        ),
    }


def acked_not_in_final_log(ops: Sequence[Op]) -> dict[str, Any]:
    """Acknowledged values absent from the final leader drain of their key — the plainest
    measure of lost acknowledged writes (the checker splits the same loss into lost-write,
    unseen and lost-on-node by what else was read). Keys with no ok leader drain are left out
    and named."""
    drained: dict[str, set[object]] = {}
    for op in ops:
        if op.f is OpF.DRAIN and op.type is OpType.OK and op.node is None:
            records = op.value.get("records", {})
            if isinstance(records, dict):
                for key, recs in records.items():
                    values = drained.setdefault(key, set())
                    values.update(r[1] for r in recs if isinstance(r, list) and len(r) == 2)
    missing: list[dict[str, Any]] = []
    count = 0
    undrained: set[str] = set()
    for op in ops:
        if op.f is not OpF.SEND or op.type is not OpType.OK:
            continue
        key, value = op.value.get("key"), op.value.get("value")
        if not isinstance(key, str):
            continue
        if key not in drained:
            undrained.add(key)
            continue
        if value not in drained[key]:
            count += 1
            if len(missing) < EXAMPLES_MAX:
                missing.append(
                    {"key": key, "value": value, "offset": op.value.get("offset"), "op": op.index}
                )
    return {"count": count, "examples": missing, "keys_not_drained": sorted(undrained)}


# ---- the final report ------------------------------------------------------------------------


def verdict_of(results: Mapping[str, Any]) -> tuple[str, str]:
    """(verdict, style) of a run from its ``results.json`` fields."""
    if not results["valid"]:
        return "INVALID: anomalies found", "bold red"
    if results.get("interrupted"):
        return "INTERRUPTED", "yellow"
    if not results["complete"]:
        return "INCOMPLETE: no anomaly, but not everything was read", "yellow"
    return "VALID", "bold green"


def availability_line(avail: Mapping[str, Any]) -> Text:
    """One line of ``availability.Availability.to_json()``: recoveries after heals, quiet gaps."""
    worst, p99 = avail["worst_recovery_s"], avail["p99_recovery_s"]
    unrecovered = avail["unrecovered_heals"]
    quiet = avail["longest_quiet_without_fault"]
    text = Text(f"{avail['heals']} heals · recovery ")
    if unrecovered:
        names = sorted({r["name"] for r in avail["recoveries"] if r["max_s"] is None})
        text.append(f"NONE after {unrecovered} ({', '.join(names)})", style="bold red")
        text.append(" · ")
    if p99 is not None:
        text.append(f"p99 {p99} s")
    if worst is not None:
        text.append(f", worst {worst} s", style="red" if worst > 2 else "")
    if quiet:
        text.append(
            f" · longest silence with no fault {quiet['length_s']} s "
            f"({quiet['key']}, {quiet['start_s']}–{quiet['end_s']} s)"
        )
    serving = avail.get("serving_during_faults") or {}
    if serving:
        kinds = ", ".join(
            f"{name} {k['kept_serving']}/{k['keys']}" for name, k in sorted(serving.items())
        )
        text.append(f" · partitions that kept serving through faults (no 2 s gap): {kinds}")
    return text


def client_line(results: Mapping[str, Any]) -> str:
    """How the workload reached the brokers, from results.json's ``client`` ("" if absent)."""
    client = results.get("client")
    if not isinstance(client, Mapping):
        return ""
    name = str(client.get("name", "?"))
    library = client.get("library")
    if isinstance(library, Mapping):
        library = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in library.items())
    parts = [name, str(library) if library else "", str(client.get("producer") or "")]
    if client.get("listener_port"):
        parts.append(f"Kafka listeners on :{client['listener_port']}")
    return " · ".join(p for p in parts if p)


def render_report(result: CheckResult, results: Mapping[str, Any]) -> RenderableType:
    """The end of a run: the checker's table, the figures, the notes, the verdict."""
    w = results["workload"]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    client = client_line(results)
    if client:
        facts.add_row("client", client)
    latency = w["ack_latency_ms"]
    facts.add_row(
        "sends",
        f"{w['sends']:,} (acked {w['sends_ok']:,}, failed {w['sends_fail']:,}, "
        f"unknown {w['sends_info']:,}) · {w['acked_per_s']} acked/s · ack p50 "
        f"{latency['p50']} ms, p99 {latency['p99']} ms",
    )
    by_kind = results["faults"]["by_kind"]
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(by_kind.items()))
    facts.add_row(
        "faults", f"{results['faults']['injected']} injected" + (f" ({kinds})" if kinds else "")
    )
    missing = results["acked_not_in_final_log"]["count"]
    facts.add_row(
        "acked, not in final log", Text(str(missing), style="bold red" if missing else "green")
    )
    avail = results.get("availability")
    if avail:
        facts.add_row("availability", availability_line(avail))
    facts.add_row("run folder", str(results["out_dir"]))
    facts.add_row("replay", str(results["config"]["command"]))
    parts: list[RenderableType] = [render_summary(result), facts]
    parts.extend(Text(f"note: {note}", style="yellow") for note in results["notes"])
    verdict, style = verdict_of(results)
    parts.append(Text(verdict, style=style))
    return Group(*parts)


# ---- the picture -------------------------------------------------------------------------------

_FAULT_COLOURS = (
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
    "#a65628",
    "#f781bf",
    "#999999",
    "#66c2a5",
    "#ffd92f",
)


def write_timeline_png(
    timeline: Timeline,
    faults: Sequence[FaultRecord],
    path: Path,
    *,
    title: str,
    end_s: float | None = None,
    marks: Sequence[tuple[float, float, str]] = (),
) -> str | None:
    """Draw throughput, latency and fault windows (Jepsen's perf graphs) into ``path``, and
    ``marks`` (start, end, label: ``Availability.stretches``) as bars along the top.

    Returns None when written, else a one-line note saying why not and what to install (no
    matplotlib; the run shows it among its notes)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return "the timeline PNG needs matplotlib: pip install 'raftlog[chaos]'"

    fig, (rate_ax, lat_ax) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 6.5), gridspec_kw={"height_ratios": [1, 1.2]}
    )
    try:
        xs = [i * timeline.bucket_s for i in range(len(timeline.ok))]
        per_s = 1.0 / timeline.bucket_s
        rate_ax.plot(xs, [v * per_s for v in timeline.ok], color="#1b9e77", label="send ok")
        rate_ax.plot(xs, [v * per_s for v in timeline.info], color="#d95f02", label="send info")
        rate_ax.plot(xs, [v * per_s for v in timeline.fail], color="#e7298a", label="send fail")
        rate_ax.plot(
            xs, [v * per_s for v in timeline.read], color="#7570b3", lw=0.8, label="records read"
        )
        rate_ax.set_ylabel("per second")
        rate_ax.set_title(title, fontsize=10)
        colours = {"ok": "#1b9e77", "info": "#d95f02", "fail": "#e7298a"}
        for outcome in ("ok", "info", "fail"):
            points = [(t, max(lat, 0.1)) for t, lat, o in timeline.latencies if o == outcome]
            if points:
                lat_ax.scatter(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    s=3,
                    alpha=0.5,
                    color=colours[outcome],
                    label=f"send {outcome}",
                    rasterized=True,
                )
        lat_ax.set_yscale("log")
        lat_ax.set_ylabel("send latency (ms)")
        lat_ax.set_xlabel("seconds since the run started")
        names = sorted({f.name for f in faults})
        colour_of = {n: _FAULT_COLOURS[i % len(_FAULT_COLOURS)] for i, n in enumerate(names)}
        right = end_s if end_s is not None else (xs[-1] if xs else 0.0)
        for fault in faults:
            stop = fault.stop_s if fault.stop_s is not None else right
            for ax in (rate_ax, lat_ax):
                ax.axvspan(fault.start_s, stop, color=colour_of[fault.name], alpha=0.15, lw=0)
        mark_colours = {"no ack after a heal": "#e6ab02", "never recovered": "#d62728"}
        for start, stop, label in marks:
            colour = mark_colours.get(label, "#555555")
            rate_ax.axvspan(start, stop, ymin=0.92, ymax=1.0, color=colour, lw=0)
        handles, labels = rate_ax.get_legend_handles_labels()
        for name in names:
            handles.append(Patch(color=colour_of[name], alpha=0.3))
            labels.append(name)
        for label in sorted({label for _, _, label in marks}):
            handles.append(Patch(color=mark_colours.get(label, "#555555")))
            labels.append(label)
        rate_ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=4)
        if timeline.latencies:
            lat_ax.legend(loc="upper left", fontsize=7, markerscale=3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return None


def faults_json(faults: Iterable[FaultRecord]) -> list[dict[str, Any]]:
    return [f.to_json() for f in faults]


def fault_counts(faults: Iterable[FaultRecord]) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for f in faults:
        out[f.name] = out.get(f.name, 0) + 1
    return out
