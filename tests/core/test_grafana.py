"""contrib/grafana/chatbridge.json and contrib/prometheus/alerts.yml query only metrics a
running bridge exposes; the dashboard opens with the stat row and keeps the budgets apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.state import BRIDGE
from tests.helpers import RecordingSink, wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "chatbridge.json"
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
# what the exposition appends to a family's name, per type
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                             "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created", ""), "info": ("_info",)}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "time", "clamp_min",
                "le", "sink", "source", "outcome", "endpoint", "job", "instance", "budget",
                "and", "on"}


class BudgetSink(RecordingSink):
    def rate_budget(self):
        return 25, 5.0

    def bulk_rate_budget(self):
        return 5, 5.0


def queried_metrics(dashboard: dict) -> set[str]:
    """Every metric name in the dashboard's PromQL (panel targets and variable queries)."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return metric_names(exprs)


def alert_metrics() -> set[str]:
    """Every metric the alert rules read (`up` is Prometheus's own)."""
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    return metric_names([r["expr"] for r in rules]) - {"up"}


def metric_names(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        bare = re.sub(r'\{[^}]*\}|\[[^\]]*\]|"[^"]*"', " ", expr)  # selectors, ranges, strings
        names |= {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
                  if w not in PROMQL_WORDS and not w.startswith("label_values")}
    return names


def exposed(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


async def test_every_metric_the_dashboard_and_alerts_query_is_in_metrics(make_app, serve):
    dashboard = json.loads(DASHBOARD.read_text())
    queried = queried_metrics(dashboard)
    assert {"chatbridge_backlog", "chatbridge_crm_calls_total", "chatbridge_sink_health",
            "chatbridge_crm_rate_limit_calls", "process_resident_memory_bytes"} <= queried
    app = make_app([BudgetSink("crm")])
    base = await serve(app)
    app[BRIDGE].metrics.crm_call("crm", "ByLeadId", "ok", 0.01, budget="bulk")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/ingest", json=[{"id": "a", "conversation": "+911",
                                                      "text": "x"}]) as resp:
            assert resp.status == 200

        async def scraped() -> str | None:
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            return text if 'chatbridge_sink_health{sink="crm"} 0.0' in text else None
        text = await wait_until(scraped)  # healthy once its first sync ran
    missing = (queried | alert_metrics()) - exposed(text)
    assert not missing, f"the dashboard or alerts query metrics /metrics lacks: {sorted(missing)}"
    assert ('chatbridge_crm_calls_total{budget="bulk",endpoint="ByLeadId",outcome="ok",'
            'sink="crm"} 1.0') in text
    assert 'chatbridge_crm_rate_limit_calls{budget="ordinary",sink="crm"} 25.0' in text
    assert 'chatbridge_crm_rate_limit_window_seconds{budget="ordinary",sink="crm"} 5.0' in text
    assert 'chatbridge_crm_rate_limit_calls{budget="bulk",sink="crm"} 5.0' in text  # issue 15


def test_dashboard_is_importable_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Chatbridge"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"], panel
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_the_dashboard_opens_with_a_stat_row_and_draws_the_budgets_apart():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    top = sorted((p for p in panels if p["gridPos"]["y"] == 0), key=lambda p: p["gridPos"]["x"])
    assert [(p["type"], p["title"]) for p in top] == [
        ("stat", "Health"), ("stat", "Last sync"), ("stat", "Waiting backlog"),
        ("stat", "Dead letters")]
    for panel in top:  # each with thresholds that turn it from green
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["color"] == "green" and len(steps) >= 2
    shown = {m["text"] for mapping in top[0]["fieldConfig"]["defaults"]["mappings"]
             for m in mapping["options"].values()}
    assert shown == {"Healthy", "Behind", "Failing", "Stopped"}
    calls = [p for p in panels if any("chatbridge_crm_calls_total" in t["expr"]
                                      and "rate_limit" not in t["expr"]
                                      and "outcome" not in t.get("legendFormat", "")
                                      for t in p["targets"])]
    budgets = sorted(re.search(r'budget="(\w+)"', p["targets"][0]["expr"])[1] for p in calls
                     if "budget=" in p["targets"][0]["expr"])
    assert budgets == ["bulk", "ordinary"]
    for panel in calls:  # never one sum of both budgets against one limit
        if "budget=" in panel["targets"][0]["expr"]:
            budget = re.search(r'budget="(\w+)"', panel["targets"][0]["expr"])[1]
            assert all(f'budget="{budget}"' in t["expr"] for t in panel["targets"])
