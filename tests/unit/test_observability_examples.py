"""examples/prometheus and examples/grafana stay true to what /metrics exports: every metric they
name is one the broker has (``METRIC_NAMES``, itself checked against a real exposition in
tests/unit/cluster/test_metrics.py), the YAML parses, the dashboard is importable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from raftlog.cluster.metrics import METRIC_NAMES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DASHBOARD = EXAMPLES / "grafana" / "raftlog-dashboard.json"
PROMETHEUS = EXAMPLES / "prometheus" / "prometheus.yml"
ALERTS = EXAMPLES / "prometheus" / "alerts.yml"

_NAME = re.compile(r"\braftlog_[a-z_]+")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def named_metrics(text: str) -> set[str]:
    names = set()
    for name in _NAME.findall(text):
        for suffix in _HISTOGRAM_SERIES:
            if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return exprs + [r["expr"] for r in rules]


def test_every_metric_the_examples_use_is_exported() -> None:
    used: set[str] = set()
    for expr in expressions():
        used |= named_metrics(expr)
    unknown = {n for n in used if n not in METRIC_NAMES and not n.startswith("raftlog_client_")}
    assert not unknown, f"not exported by /metrics: {sorted(unknown)}"
    # the panels an on-call engineer looks at first are there
    for wanted in (
        "raftlog_under_replicated_partitions",
        "raftlog_offline_partitions",
        "raftlog_request_duration_seconds",
        "raftlog_bytes_in_total",
        "raftlog_bytes_out_total",
        "raftlog_active_controller",
    ):
        assert wanted in used, wanted


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid) and grid["x"] + grid["w"] <= 24, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"] for t in p["targets"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"DS_PROMETHEUS", "instance"}
    # the top row is partition health
    top = sorted((p for p in panels if p["gridPos"]["y"] == 0), key=lambda p: p["gridPos"]["x"])
    assert top[0]["title"] == "Under-replicated partitions"


def test_the_scrape_config_targets_the_local_clusters_metrics_ports() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    # `raftlog cluster up` on its default base port 9092 serves /metrics on base + 300 + i - 1
    assert targets == [f"127.0.0.1:{9092 + 300 + i}" for i in range(3)]
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert all(r["alert"].startswith("Raftlog") and r["annotations"]["summary"] for r in rules)
