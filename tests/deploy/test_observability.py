"""Prometheus scrapes every service's metrics port; the Grafana dashboard queries only metrics
and labels the runtime exports."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from services.registry import PRODUCT_SERVICES
from services.runtime.metrics import RpcMetrics
from services.runtime.stalls import StallMonitor
from tests.deploy import manifests as m

DASHBOARD = m.GRAFANA_DIR / "dashboards" / "shoptwin-rpc.json"


@pytest.fixture(scope="module")
def exported() -> tuple[set[str], set[str]]:
    """Sample names and label names the runtime's RPC and stall metrics produce."""
    registry = CollectorRegistry()
    metrics = RpcMetrics.create(registry)
    metrics.requests.labels("s", "m", "OK").inc()
    metrics.latency.labels("s", "m", "OK").observe(0.01)
    metrics.in_flight.labels("s", "m").inc()
    StallMonitor(registry, "s", interval_s=0.025)
    names, labels = set(), set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def test_prometheus_scrapes_every_metrics_port() -> None:
    config = m.load_yaml(m.PROMETHEUS_FILE)
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"{d.name}:{d.default_metrics_port}" for d in PRODUCT_SERVICES}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    return exprs


def test_dashboard_queries_only_exported_metrics(exported: tuple[set[str], set[str]]) -> None:
    names, labels = exported
    for expr in dashboard_expressions():
        used = set(re.findall(r"\bshoptwin_[a-z_]+", expr))
        assert used and used <= names, (expr, used - names)
        grouped = re.findall(r"by \(([^)]*)\)", expr)
        for group in grouped:
            for label in (g.strip() for g in group.split(",")):
                assert label in labels | {"le"}, (expr, label)
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|=)\s*\"", expr):
            assert label in labels, (expr, label)


def test_dashboard_shows_rate_errors_and_latency_per_rpc() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(dashboard_expressions())
    assert "rate(shoptwin_rpc_requests_total" in exprs
    assert 'code!="OK"' in exprs
    assert "histogram_quantile(0.99" in exprs and "shoptwin_rpc_duration_seconds_bucket" in exprs
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if "shoptwin_rpc_" in target["expr"]:
                assert "by (service, method" in target["expr"], "per RPC"
            else:
                assert "by (service" in target["expr"], "per service"


def test_dashboard_shows_each_services_stalls() -> None:
    exprs = " ".join(dashboard_expressions())
    assert "shoptwin_event_loop_lag_seconds_bucket" in exprs
    assert "shoptwin_gc_pause_seconds_sum" in exprs


def test_grafana_provisioning_wires_the_dashboard() -> None:
    datasource = m.load_yaml(m.GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = m.load_yaml(m.GRAFANA_DIR / "provisioning" / "dashboards" / "shoptwin.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
