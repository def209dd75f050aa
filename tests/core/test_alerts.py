"""contrib/prometheus/alerts.yml: valid for promtool, and each alert fires on its condition
(after its `for`) and not on a healthy bridge, checked by promtool's own rule tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "alerts.yml"
BRIDGE = {"job": "chatbridge", "instance": "bridge-1:8080"}
SINK = {**BRIDGE, "sink": "leadsquared"}

# alert -> (input series, minutes when it must not fire yet, minutes when it fires,
#           the fired alert's labels (besides alertname and severity), $value)
CASES = {
    "ChatbridgeDown": ({'up{job="chatbridge", instance="bridge-1:8080"}': "0x60"},
                       4, 6, BRIDGE, "0"),
    "ChatbridgeSinkFailing": ({"chatbridge_sink_health": "2x60"}, 9, 11, SINK, "2"),
    "ChatbridgeSinkStopped": ({"chatbridge_sink_health": "3x60",
                               "chatbridge_sink_enabled": "1x60"}, 4, 6, SINK, "3"),
    "ChatbridgeSinkBehind": ({"chatbridge_sink_health": "1x60"}, 14, 16, SINK, "1"),
    "ChatbridgeDeadLetters": ({"chatbridge_dead_letters": "3x60",
                               "chatbridge_sink_enabled": "1x60"}, 9, 11, SINK, "3"),
    "ChatbridgeBufferUnavailable": (
        {'chatbridge_webhooks_total{outcome="unavailable", source="whatsapp"}': "0x5 4x60"},
        4, 7, BRIDGE, None),
    "ChatbridgeWebhooksRefused": (
        {'chatbridge_webhooks_total{outcome="unauthorized", source="whatsapp"}': "0+1x60"},
        3, 10, {**BRIDGE, "source": "whatsapp"}, None),
    "ChatbridgeRateLimited": (
        {'chatbridge_crm_calls_total{outcome="rate_limited", sink="leadsquared", '
         'endpoint="Create", budget="ordinary"}': "0+2x60"}, 14, 31, SINK, None),
}
LATE = 45  # minutes: every rule's `for` has passed
# a healthy bridge: none of the alerts fires
HEALTHY = {'up{job="chatbridge", instance="bridge-1:8080"}': "1x40",
           "chatbridge_sink_health": "0x40", "chatbridge_dead_letters": "0x40",
           'chatbridge_webhooks_total{outcome="stored", source="whatsapp"}': "0+50x40",
           'chatbridge_webhooks_total{outcome="unavailable", source="whatsapp"}': "0x40",
           'chatbridge_crm_calls_total{outcome="ok", sink="leadsquared", endpoint="Create", '
           'budget="ordinary"}': "0+20x40", "chatbridge_sink_enabled": "1x40",
           # a sink taken out of the config: its history (dead letters too) says "stopped"
           'chatbridge_sink_health{sink="retired"}': "3x40",
           'chatbridge_sink_enabled{sink="retired"}': "0x40",
           'chatbridge_dead_letters{sink="retired"}': "4x40"}


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian's prometheus package has it; .ci/run "
                    "extracts it into /usr/local/bin)")
    return found


def series(name: str, labels: dict[str, str]) -> str:
    """A series selector with the base labels added to what `name` already carries."""
    metric, _, inner = name.partition("{")
    given = dict(re.findall(r'(\w+)="([^"]*)"', inner))
    merged = {**labels, **given}
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in merged.items()) + "}"


def annotations(rule: dict, labels: dict[str, str], value: str | None) -> dict[str, str]:
    """The rule's annotations as Prometheus renders these simple templates."""
    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
        return text.replace("{{ $value }}", value or "")
    return {k: render(v) for k, v in rule["annotations"].items()}


def unit_tests() -> dict:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"]}
    assert sorted(rules) == sorted(CASES), "every alert needs a case here"
    tests = []
    for name, (inputs, quiet, fires, labels, value) in CASES.items():
        rule = rules[name]
        base = SINK if "sink" in labels or "sink" in "".join(inputs) else BRIDGE
        tests.append({
            "interval": "1m",
            "input_series": [{"series": series(s, {} if s.startswith("up{") else base),
                              "values": v} for s, v in inputs.items()],
            "alert_rule_test": [
                {"eval_time": f"{quiet}m", "alertname": name, "exp_alerts": []},
                {"eval_time": f"{fires}m", "alertname": name, "exp_alerts": [{
                    "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
                    "exp_annotations": annotations(rule, labels, value)}]},
                # and only it, even after every rule's `for`: a stopped sink is not "failing"
                *({"eval_time": f"{LATE}m", "alertname": other, "exp_alerts": []}
                  for other in CASES if other != name)]})
    tests.append({"interval": "1m",
                  "input_series": [{"series": series(s, {} if s.startswith("up{") else SINK
                                                     if "sink" in s or "health" in s
                                                     or "dead" in s else BRIDGE),
                                    "values": v} for s, v in HEALTHY.items()],
                  "alert_rule_test": [{"eval_time": "35m", "alertname": name, "exp_alerts": []}
                                      for name in CASES]})
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def test_the_alert_rules_pass_promtool_check():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(CASES)} rules found" in done.stdout


def test_each_alert_fires_on_its_condition_and_none_on_a_healthy_bridge(tmp_path):
    tool = promtool()
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump(unit_tests(), sort_keys=False))
    done = subprocess.run([tool, "test", "rules", str(spec)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
