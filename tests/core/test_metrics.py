"""GET /metrics over real HTTP: counters match the traffic sent and the simulator's records."""

from __future__ import annotations

import json
from collections import Counter

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import BRIDGE, create_app
from bridge.metrics import Metrics
from bridge.plugins import get_plugin_manager, load_config
from plugins.whatsapp.signature import sign
from tests.helpers import wait_until
from tests.whatsapp.test_webhook import SECRET, TOKEN, change, envelope, post, text_message

PATH = "/webhooks/whatsapp"
Samples = dict[tuple[str, frozenset], float]


def whatsapp_section() -> str:
    return f"  whatsapp:\n    verify_token: {TOKEN}\n    app_secret: {SECRET}\n"


async def start_bridge(tmp_path, serve, plugins: str, server: str = ""):
    config = tmp_path / "config.yaml"
    config.write_text(f"{server}buffer: {{path: {tmp_path}/b.db}}\nplugins:\n{plugins}")
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    return await serve(app), app


async def scrape(url: str, headers: dict | None = None) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics",
                                                         headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def by_label(samples: Samples, name: str, label: str, **where: str) -> dict[str, float]:
    """{value of `label`: sample value} for the non-zero samples of `name` matching `where`
    (counters a bridge declares at 0 are left out)."""
    found = {}
    for (sample_name, labels), value in samples.items():
        labels = dict(labels)
        if sample_name == name and value and all(labels.get(k) == v
                                                 for k, v in where.items()):
            found[labels[label]] = value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def signed(payload: dict) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, sign(body, SECRET)


async def test_webhook_counters_match_the_traffic_exactly(tmp_path, serve):
    url, app = await start_bridge(tmp_path, serve, whatsapp_section())
    sizes = (2, 3, 4)
    bodies = [signed(envelope([change([text_message(f"w{i}.{n}", f"91987654321{i}")
                                       for n in range(size)])]))
              for i, size in enumerate(sizes)]
    for body, signature in bodies:
        assert (await post(url, body, signature))[0] == 200
    assert (await post(url, *bodies[0]))[0] == 200  # Meta's retry: 2 duplicates
    ignored = signed(envelope([{"field": "account_update", "value": {"event": "VERIFIED"}}]))
    assert (await post(url, *ignored))[0] == 200
    assert (await post(url, bodies[1][0], sign(bodies[1][0], "wrong-secret")))[0] == 401
    assert (await post(url, b"{not json", sign(b"{not json", SECRET)))[0] == 400
    assert (await post(url, bodies[2][0], bodies[2][1], "text/plain"))[0] == 415
    huge = b'{"pad":"' + b"x" * (5 << 20) + b'"}'
    assert (await post(url, huge, sign(huge, SECRET)))[0] == 413
    async with aiohttp.ClientSession() as http:
        for token, status in ((TOKEN, 200), ("guess", 403)):
            params = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "7"}
            async with http.get(url + PATH, params=params) as resp:
                assert resp.status == status

    samples = await scrape(url)
    assert by_label(samples, "chatbridge_webhooks_total", "outcome", source="whatsapp") == {
        "stored": 3, "duplicate": 1, "ignored": 1, "unauthorized": 1, "bad_request": 1,
        "unsupported_media_type": 1, "too_large": 1, "handshake_verified": 1,
        "handshake_refused": 1}
    assert value(samples, "chatbridge_messages_stored_total", source="whatsapp") == sum(sizes)
    assert value(samples, "chatbridge_messages_duplicate_total", source="whatsapp") == sizes[0]
    assert value(samples, "chatbridge_webhook_ack_seconds_count", source="whatsapp") == 5
    assert value(samples, "chatbridge_statuses_total", source="whatsapp") is None
    assert by_label(samples, "chatbridge_webhook_items_ignored_total", "reason",
                    source="whatsapp") == {"field:account_update": 1}
    assert await app[BRIDGE].buffer.count_messages() == sum(sizes)
    assert any(name == "python_info" for name, _ in samples)  # platform and process, too


async def test_a_failed_commit_counts_as_unavailable(tmp_path, serve):
    url, app = await start_bridge(tmp_path, serve, whatsapp_section())
    # at 0 before the first: increase() over a series born at 1 would miss it (the alert)
    assert value(await scrape(url), "chatbridge_webhooks_total", source="whatsapp",
                 outcome="unavailable") == 0
    buffer = app[BRIDGE].buffer
    await buffer.limit_writes(size_cap=True)  # make SQLite report a full disk
    body, signature = signed(envelope([change([text_message("full", body="x" * 200_000)])]))
    assert (await post(url, body, signature))[0] == 503
    await buffer.limit_writes(size_cap=False)
    assert (await post(url, body, signature))[0] == 200

    samples = await scrape(url)
    assert by_label(samples, "chatbridge_webhooks_total", "outcome", source="whatsapp") == {
        "unavailable": 1, "stored": 1}


async def test_metrics_is_an_admin_endpoint(tmp_path, serve):
    url, _ = await start_bridge(tmp_path, serve, whatsapp_section(),
                                server="server: {admin_token: s3cret-admin}\n")
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 401
        async with http.get(url + "/metrics",
                            headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
    samples = await scrape(url, {"Authorization": "Bearer s3cret-admin"})
    assert value(samples, "chatbridge_buffer_commits_total") is not None


async def test_two_bridges_in_one_process_keep_separate_counts(tmp_path, serve):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    url_a, _ = await start_bridge(tmp_path / "a", serve, whatsapp_section())
    url_b, _ = await start_bridge(tmp_path / "b", serve, whatsapp_section())
    assert (await post(url_a, *signed(envelope([change([text_message("only-a")])]))))[0] == 200
    assert value(await scrape(url_a), "chatbridge_messages_stored_total", source="whatsapp") == 1
    assert value(await scrape(url_b), "chatbridge_messages_stored_total", source="whatsapp") \
        is None


def crm_outcome(status: int | None) -> str:
    """What the client must have counted for a call the simulator answered with `status`."""
    if status is None:
        return "connection_error"  # committed, then the connection was dropped
    if status == 200:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "error_5xx"
    return "auth" if status == 401 else "rejected"


@pytest.mark.parametrize("faults", [
    {},
    {"error_rate": 0.25, "drop_after_commit_rate": 0.25, "rate_limit": "6/1s"},
], ids=["clean", "faults"])
async def test_crm_call_counters_match_the_simulators_records(tmp_path, serve, sim, faults):
    numbers = ["+919876543210", "+919876543211", "+14155550100"]
    leads = [sim.add_lead(FirstName=f"L{i}", Mobile=n) for i, n in enumerate(numbers)]
    sim.add_opportunity(leads[0])
    sim.configure(**faults)
    leadsquared = (f"  leadsquared:\n    host: {sim.base_url}\n    access_key: {sim.access_key}\n"
                   f"    secret_key: {sim.secret_key}\n    sync_interval: 0.1\n"
                   "    retry_base: 0.05\n    retry_cap: 0.2\n    rate_limit: 50/1s\n"
                   "    max_attempts: 50\n")
    url, _ = await start_bridge(tmp_path, serve, whatsapp_section() + leadsquared)
    sent = 0
    for i, number in enumerate(numbers):
        messages = [text_message(f"c{i}.{n}", number[1:]) for n in range(i + 2)]
        sent += len(messages)
        assert (await post(url, *signed(envelope([change(messages)]))))[0] == 200

    async def settled() -> bool:
        samples = await scrape(url)
        delivered = value(samples, "chatbridge_deliveries_total", sink="leadsquared",
                          outcome="delivered")
        return (delivered == sent and value(samples, "chatbridge_backlog", sink="leadsquared") == 0)

    await wait_until(settled, timeout=60, every=0.1)
    samples = await scrape(url)

    counted = {(labels["endpoint"], labels["outcome"]): n for labels, n in (
        (dict(key), n) for (name, key), n in samples.items()
        if name == "chatbridge_crm_calls_total")}
    assert all(dict(key)["sink"] == "leadsquared" for (name, key) in samples
               if name == "chatbridge_crm_calls_total")
    expected = Counter((call.path.rsplit("/", 1)[-1], crm_outcome(call.status))
                       for call in sim.calls)
    assert counted == dict(expected)
    assert sum(counted.values()) == len(sim.calls)
    # leads come from the lead directory (issue 15), filled by paging
    assert ("Leads.RecentlyModified", "ok") in counted
    # the lead activities go out in bulk calls (issue 15), ProspectActivity.svc/Create is
    # used for opportunities with a single activity
    assert ("ByLeadId", "ok") in counted
    if faults:
        assert {outcome for _, outcome in counted} > {"ok"}
    assert value(samples, "chatbridge_dead_letters", sink="leadsquared") == 0
    assert value(samples, "chatbridge_sink_enabled", sink="leadsquared") == 1
    assert value(samples, "chatbridge_last_sync_timestamp_seconds", sink="leadsquared")
    assert value(samples, "chatbridge_sync_runs_total", sink="leadsquared", outcome="ok") >= 1
    assert value(samples, "chatbridge_sync_duration_seconds_count", sink="leadsquared") >= 1
    assert value(samples, "chatbridge_crm_call_seconds_count", sink="leadsquared",
                 endpoint="Create") == sum(n for (endpoint, _), n in counted.items()
                                           if endpoint == "Create")


def test_metrics_objects_have_their_own_registries():
    one, two = Metrics(process=False), Metrics(process=False)
    one.webhook("x", "stored")
    assert one.registry.get_sample_value("chatbridge_webhooks_total",
                                         {"source": "x", "outcome": "stored"}) == 1
    assert two.registry.get_sample_value("chatbridge_webhooks_total",
                                         {"source": "x", "outcome": "stored"}) is None


async def test_other_business_numbers_and_unstored_fields_are_counted_not_stored(tmp_path,
                                                                                 serve):
    section = whatsapp_section() + "    phone_number_ids: ['111111111111111']\n"
    url, app = await start_bridge(tmp_path, serve, section)
    other = change([text_message("x1"), text_message("x2")])  # for the default test number
    assert (await post(url, *signed(envelope([other]))))[0] == 200
    field = {"field": "account_update", "value": {"event": "VERIFIED"}}
    assert (await post(url, *signed(envelope([field, field]))))[0] == 200

    samples = await scrape(url)
    assert by_label(samples, "chatbridge_webhook_items_ignored_total", "reason",
                    source="whatsapp") == {"other_business_number": 2,
                                           "field:account_update": 2}
    assert by_label(samples, "chatbridge_webhooks_total", "outcome", source="whatsapp") == {
        "ignored": 2}
    assert await app[BRIDGE].buffer.count_messages() == 0
