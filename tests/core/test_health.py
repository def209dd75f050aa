"""The health verdict: the rule (bridge.health) case by case, and on a real running app."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from bridge.contracts import Outcome
from bridge.health import overall, verdict
from bridge.metrics import Metrics
from tests.helpers import RecordingSink, wait_until

NOW = 1_700_000_000.0


def at(seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC)


def sink(**state) -> dict:
    return {"sink": "crm", "enabled": True, "last_sync_at": at(10), "last_error": None,
            "last_error_at": None, "retrying": 0, "retrying_since": None,
            "retry_error": None, "last_delivered_at": at(10), **state}


def judge(state: dict, **kw) -> tuple[str, str]:
    found = verdict(state, now=NOW, **{"running": True, "interval": 180.0,
                                       "started_at": NOW - 3600, **kw})
    return found["state"], found["reason"]


def test_a_sink_that_synced_within_its_interval_is_healthy_with_the_age():
    found = verdict(sink(), running=True, now=NOW, interval=180.0)
    assert found == {"state": "healthy", "reason": "synced 10 s ago", "last_sync_age_s": 10.0}


def test_not_running_is_stopped_whatever_else_holds():
    state = sink(last_error="boom", last_error_at=at(10), last_sync_at=at(10))
    assert judge(state, running=False, why_stopped="the bridge is not running") == (
        "stopped", "the bridge is not running")
    assert judge(sink(enabled=False))[0] == "stopped"  # not in the config any more


def test_a_last_sync_that_raised_is_failing_and_a_later_good_one_clears_it():
    assert judge(sink(last_error="HTTPError: 401", last_error_at=at(10))) == (
        "failing", "the last sync failed: HTTPError: 401")
    assert judge(sink(last_error="HTTPError: 401", last_error_at=at(400)))[0] == "healthy"


def test_retries_with_nothing_delivered_since_they_began_are_failing():
    outage = sink(retrying=3, retrying_since=at(600), retry_error="CRM: HTTP 503",
                  last_delivered_at=at(900))
    state, reason = judge(outage)
    assert state == "failing"
    assert reason == "nothing delivered for 10 min: 3 chats waiting to retry after “CRM: HTTP 503”"
    # one poison chat while the others get through is not "failing"
    assert judge({**outage, "last_delivered_at": at(30)})[0] == "healthy"
    assert judge({**outage, "last_delivered_at": None})[0] == "failing"  # never delivered
    # a lone transient failure, retried on the next sync, is not an outage (yet)
    blip = sink(retrying=1, retrying_since=at(30), retry_error="CRM: HTTP 502",
                last_delivered_at=None)
    assert judge(blip)[0] == "healthy"
    assert judge({**blip, "retrying_since": at(361)})[0] == "failing"


def test_a_late_sync_or_none_since_the_start_is_behind():
    assert judge(sink(last_sync_at=at(361))) == (
        "behind", "last sync 6 min ago (it runs every 3 min)")
    assert judge(sink(last_sync_at=at(359)))[0] == "healthy"
    assert judge(sink(last_sync_at=at(30)), interval=1.0)[0] == "healthy"  # 60 s floor
    assert judge(sink(last_sync_at=None), started_at=NOW - 30) == (
        "healthy", "starting: the first sync is under way")
    assert judge(sink(last_sync_at=None), started_at=NOW - 400)[0] == "behind"
    # a clock set back an hour: a sync "in the future" says nothing of a stuck sink
    assert judge(sink(last_sync_at=at(-3600))) == (
        "behind", "the last sync is stamped 60 min in the future: this machine's clock was "
                  "set back (or the process that synced runs ahead); it cannot tell when the "
                  "sink last synced")
    assert judge(sink(last_sync_at=at(-30)))[0] == "healthy"  # a peer's clock a bit ahead


def test_a_growing_backlog_is_behind():
    assert judge(sink(), growth=(120, 480)) == (
        "behind", "the backlog is growing: 480 waiting, up from 120 6 min ago")


def test_backlog_growth_needs_every_recent_sample_above_every_earlier_one():
    metrics = Metrics(process=False)
    rising = [100, 150, 200, 260, 320, 400, 500, 610, 700, 820, 950, 1100, 1300]
    for minute, waiting in enumerate(rising):
        metrics.sample_backlog([{"sink": "crm", "backlog": waiting + 7, "held": 7}],
                               NOW - 720 + 60 * minute)
    assert metrics.backlog_growth("crm", 360.0, NOW) == (500, 1300)  # held chats apart
    saw = Metrics(process=False)  # fills between syncs and drains at each: not growing
    for minute in range(13):
        saw.sample_backlog([{"sink": "crm", "backlog": [0, 300, 600][minute % 3], "held": 0}],
                           NOW - 720 + 60 * minute)
    assert saw.backlog_growth("crm", 360.0, NOW) is None
    assert Metrics(process=False).backlog_growth("crm", 360.0, NOW) is None  # no samples


def test_the_bridge_verdict_is_its_worst_enabled_sink():
    healthy = {"sink": "a", "enabled": True, "health": {"state": "healthy", "reason": "ok"}}
    behind = {"sink": "b", "enabled": True, "health": {"state": "behind", "reason": "late"}}
    gone = {"sink": "c", "enabled": False, "health": {"state": "stopped", "reason": "off"}}
    assert overall([healthy, behind, gone], running=True) == {"state": "behind",
                                                              "reason": "b: late"}
    assert overall([healthy, gone], running=True)["state"] == "healthy"
    assert overall([], running=False, why="down") == {"state": "stopped", "reason": "down"}
    assert overall([gone], running=True) == {  # one taken out of the config: none is left
        "state": "healthy", "reason": "no sink enabled in the config (plugins:)"}


async def status_of(base: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/status") as resp:
        return (await resp.json())["sinks"][0]


async def test_status_says_failing_while_the_crm_fails_and_healthy_once_it_recovers(make_app,
                                                                                   serve):
    crm = RecordingSink("crm", behaviour=lambda m: Outcome.retry("CRM: HTTP 503"),
                        max_attempts=100)
    base = await serve(make_app([crm]))
    async with aiohttp.ClientSession() as http, http.post(
            f"{base}/ingest", json=[{"id": "a", "conversation": "+911", "text": "x"}]) as resp:
        assert resp.status == 200

    async def failing():
        entry = await status_of(base)
        return entry if entry["health"]["state"] == "failing" else None
    entry = await wait_until(failing, timeout=30)  # under a loaded machine's pace
    assert "waiting to retry after “CRM: HTTP 503”" in entry["health"]["reason"]
    crm.behaviour = None  # the CRM is back

    async def healthy():
        entry = await status_of(base)
        return entry if entry["health"]["state"] == "healthy" else None
    entry = await wait_until(healthy, timeout=30)
    assert entry["health"]["last_sync_age_s"] < 5 and entry["retrying"] == 0


class BrokenStart(RecordingSink):
    async def start(self) -> None:
        raise RuntimeError("the CRM refused the access key")


async def test_a_sink_that_cannot_start_is_failing_with_the_error(make_app, serve):
    base = await serve(make_app([BrokenStart("crm")]))

    async def failing():
        entry = await status_of(base)
        return entry if entry["health"]["state"] == "failing" else None
    entry = await wait_until(failing)
    assert entry["health"]["reason"] == ("the last sync failed: RuntimeError: the CRM refused "
                                         "the access key")


async def test_the_attention_and_health_reads_on_each_backend(buffer):
    """reads.sync_health, previews and overdue_files, and the attention lists built on
    them, on SQLite and PostgreSQL alike."""
    import time

    from bridge.attention import attention
    from bridge.buffer import Policy
    from tests.helpers import message

    policy = Policy(max_attempts=5, retry_delay=lambda attempt: 60.0, held_delay=60.0)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, text="Is the annual plan still 20% off?"),
                         message(2, "+14155550100", text="Do you ship to San Francisco?")])
    for claim in await buffer.claim("crm", 10, 60):
        asha = claim.batch.conversation.key == "+919876543210"
        outcome = Outcome.retry("CRM: HTTP 503") if asha else Outcome.held(
            "no lead with this number (create one, or set create_leads)")
        await buffer.complete(claim, [outcome], policy)
    health = await buffer.sync_health("crm")
    assert health["retrying"] == 1 and health["retry_error"] == "CRM: HTTP 503"
    assert health["retrying_since"] is not None and health["last_delivered_at"] is None
    assert await buffer.overdue_files("crm", time.time(), 5) == (0, [])
    sinks = await buffer.sinks()
    for sink in sinks:
        sink["held_chats"] = await buffer.held_chats(sink["sink"])
    found = await attention(buffer, sinks, "crm")
    (held,) = found["held"]
    assert (held["key"], held["preview"]) == ("+14155550100", "Do you ship to San Francisco?")
    assert held["next"] == "Create one, or set create_leads; it is checked again at every sync."
    assert found["counts"] == {"dead_letters": 0, "held": 1, "overdue": 0, "failed_sends": 0}
    previews = await buffer.previews([], ["+919876543210"])
    assert previews["+919876543210"][1].text == "Is the annual plan still 20% off?"


async def test_an_attachment_waiting_for_its_file_is_overdue_after_a_while(buffer):
    """reads.overdue_files counts targets still waiting for their message's file (the
    sink's WAITING_FOR_FILE reason) since before the given time, oldest first."""
    import time

    from bridge.buffer import Policy
    from bridge.contracts import WAITING_FOR_FILE
    from tests.helpers import message

    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, text="my current bill")])
    (claim,) = await buffer.claim("crm", 10, 60)
    (sent,) = claim.batch.messages
    claim.batch.fail_target(f"{claim.batch.key}:file", "the photo's attachment",
                            f"{WAITING_FOR_FILE}: not fetched yet", [sent.id], 5, final=True)
    await buffer.complete(claim, [Outcome.delivered()],
                          Policy(max_attempts=5, retry_delay=lambda a: 1.0, held_delay=1.0))
    assert await buffer.overdue_files("crm", time.time() - 900, 5) == (0, [])
    count, rows = await buffer.overdue_files("crm", time.time() + 1, 5)
    assert count == 1 and rows[0]["target"] == "the photo's attachment"
    assert rows[0]["message_ids"] == [sent.id] and rows[0]["conversation"] == "+919876543210"
    assert (await buffer.sinks())[0]["dead_targets"] == 0  # waiting, not a dead letter


def test_a_start_under_way_says_what_it_waits_for_and_is_failing_when_calls_fail():
    """While a sink's start() runs (a restart too, whose last sync is old news), the
    verdict is about the start: failing with the sink's own words when its calls keep
    failing (the host named), behind once it has taken a minute, else starting. It used
    to read 'starting: the first sync is under way' (healthy) for the minutes a start
    spent retrying a host that never answered, or 'synced 10 s ago' after a restart."""
    note = "LeadSquared at https://api.example: user_by_access_key failed 3 time(s)"
    assert judge(sink(), starting=(NOW - 20, note)) == (
        "failing", f"starting for 20 s: {note}")
    assert judge(sink(), starting=(NOW - 80, None)) == (
        "behind", "starting: the sink's start has been under way for 80 s")
    assert judge(sink(last_sync_at=None), starting=(NOW - 5, None)) == (
        "healthy", "starting: the first sync is under way")
