"""contrib/grafana/chatbridge.json queries only metrics a running bridge exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import RecordingSink

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "chatbridge.json"
# what the exposition appends to a family's name, per type
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                             "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created", ""), "info": ("_info",)}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "time", "clamp_min",
                "le", "sink", "source", "outcome", "endpoint", "job"}


class BudgetSink(RecordingSink):
    def rate_budget(self):
        return 25, 5.0

    def bulk_rate_budget(self):
        return 5, 5.0


def queried_metrics(dashboard: dict) -> set[str]:
    """Every metric name in the dashboard's PromQL (panel targets and variable queries)."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
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


async def test_every_metric_the_dashboard_queries_is_in_metrics(make_app, serve):
    dashboard = json.loads(DASHBOARD.read_text())
    queried = queried_metrics(dashboard)
    assert {"chatbridge_backlog", "chatbridge_crm_calls_total",
            "chatbridge_crm_rate_limit_calls", "process_resident_memory_bytes"} <= queried
    base = await serve(make_app([BudgetSink("crm")]))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/ingest", json=[{"id": "a", "conversation": "+911",
                                                      "text": "x"}]) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    missing = queried - exposed(text)
    assert not missing, f"the dashboard queries metrics /metrics lacks: {sorted(missing)}"
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
