"""First-install backfill into LeadSquared: the last N days once, resumable, paced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bridge.buffer import Buffer
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port, message, running, wait_until
from tests.leadsquared.test_end_to_end import SECRET, TOKEN, eventually, key_of, write_config
from tests.leadsquared.test_sink import settled, sink_for, texts_in
from tests.processes import BridgeProcess, SimulatorProcess
from tests.whatsapp import payloads as p


def old_chat(n: int, number: str, hours_ago: float):
    return message(n, number, source="whatsapp", text=f"msg-{n:05d}", minutes_ago=hours_ago * 60)


def five_days(numbers: list[str]) -> list:
    """Two messages per number every 12 hours over 5 days (ids follow the clock)."""
    return [old_chat(i * 100 + j, number, hours_ago=120 - j * 6)
            for i, number in enumerate(numbers) for j in range(20)]


async def test_fresh_sink_gets_exactly_the_last_three_days_once_and_only_once(sim, tmp_path):
    numbers = [f"+9198765400{i:02d}" for i in range(4)]
    for i, number in enumerate(numbers):
        sim.add_lead(FirstName=f"L{i}", Phone=number[3:])
    history = five_days(numbers)
    expected = {m.text for m in history if time.time() - m.sent_at.timestamp() < 3 * 86400}
    buffer = await Buffer.open(tmp_path / "b.db")
    try:
        await buffer.append(history)  # stored before the sink existed
        async with running(buffer, [sink_for(sim, opportunities=False)]):
            await wait_until(lambda: settled(buffer))
        posted = [t for a in sim.activities() for t in texts_in(a["ActivityNote"])]
        assert Counter(posted) == Counter(expected)  # the last 3 days, each once
        (state,) = await buffer.sinks()
        assert state["backfill"]["messages_done"] == state["backfill"]["messages_total"] == len(
            expected)
        assert state["backfill"]["conversations_total"] == len(numbers)

        calls = len(sim.calls)
        async with running(buffer, [sink_for(sim, opportunities=False)]):  # a second start
            await wait_until(lambda: settled(buffer))
        assert len(sim.activities()) == len({a["Id"] for a in sim.activities()})
        assert [c for c in sim.calls[calls:] if c.method == "POST"
                and "Activity" in c.path] == []  # nothing posted again
    finally:
        await buffer.close()


async def test_a_live_message_is_not_stuck_behind_a_paced_backfill(sim, tmp_path):
    numbers = [f"+9198765410{i:02d}" for i in range(30)]
    for i, number in enumerate(numbers):
        sim.add_lead(FirstName=f"L{i}", Phone=number[3:])
    live_number = "+919876541099"
    sim.add_lead(FirstName="Live", Phone=live_number[3:])
    sim.configure(rate_limit="4/1s")
    buffer = await Buffer.open(tmp_path / "b.db")
    try:
        await buffer.append([old_chat(i, n, hours_ago=24) for i, n in enumerate(numbers)])
        sink = sink_for(sim, opportunities=False, rate_limit="4/1s", sync_interval=3)
        async with running(buffer, [sink]):
            await wait_until(lambda: sim.activities(), timeout=20)  # backfill under way
            sent = time.monotonic()
            await buffer.append([message(999, live_number, source="whatsapp", text="msg-00999")])
            await wait_until(lambda: any("msg-00999" in a["ActivityNote"]
                                         for a in sim.activities()), timeout=20)
            took = time.monotonic() - sent
            (state,) = await buffer.sinks()
            left = state["backfill"]["messages_total"] - state["backfill"]["messages_done"]
        assert took < 2 * 3, f"live message took {took:.1f}s (two sync intervals: 6 s)"
        assert left > 0, "the backfill should still be running when the live message lands"
    finally:
        await buffer.close()


async def test_a_backfill_alone_stays_within_both_budgets_posting_each_chat_in_order_once(
        sim, tmp_path):
    """With no live message the backfill does not rest between steps (issue 15), which must
    still keep within both budgets (the simulator answers 429 over either) and post each
    conversation's batches in order, each once."""
    numbers = [f"+9198765420{i:02d}" for i in range(8)]
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=n[3:]) for i, n in enumerate(numbers)]
    sim.configure(rate_limit="4/1s", bulk_rate_limit="2/1s")
    buffer = await Buffer.open(tmp_path / "b.db")
    try:  # six messages a chat, batches of two: three batches per conversation
        await buffer.append([old_chat(i * 100 + j, n, hours_ago=30 - j)
                             for i, n in enumerate(numbers) for j in range(6)])
        sink = sink_for(sim, opportunities=False, rate_limit="4/1s", bulk_rate_limit="2/1s",
                        lead_directory="on", batch_limit=2)
        async with running(buffer, [sink]):
            await wait_until(lambda: settled(buffer), timeout=60)
        assert [c for c in sim.calls if c.status == 429] == []
        assert sim.max_calls_in_window(1.0) <= 4 and sim.max_calls_in_window(1.0, bulk=True) <= 2
        assert len([c for c in sim.calls if c.path.endswith("ByLeadId")]) >= 3  # several steps
        for i, lead in enumerate(leads):  # in posting order: the chat's own order, once
            posted = [t for a in sim.activities(lead) for t in texts_in(a["ActivityNote"])]
            assert posted == [f"msg-{i * 100 + j:05d}" for j in range(6)]
        assert await buffer.dead_letters() == []
    finally:
        await buffer.close()


def post_history(bridge: BridgeProcess, numbers: list[str], now: int) -> list[str]:
    """Messages over the last five days, posted as webhooks; returns the texts in 3 days."""
    recent = []
    for i, number in enumerate(numbers):
        batch = []
        for j in range(10):
            ts = now - (120 - j * 12) * 3600
            text = f"msg-{i * 100 + j:05d}"
            batch.append(p.text_message(f"wamid.h{i}-{j}", number, text, ts=ts))
            if now - ts < 3 * 86400:
                recent.append(text)
        body = json.dumps(p.envelope(p.message_change(batch))).encode()
        response = oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10,
                                headers={"Content-Type": "application/json",
                                         "X-Hub-Signature-256": sign(body, SECRET)})
        assert response.status_code == 200
    return recent


def test_sigkill_mid_backfill_then_restart_leaves_each_message_once(tmp_path, simulator):
    bridge = None
    try:
        numbers = [f"9198765420{i:02d}" for i in range(10)]
        bridge, config, port, recent = _history_without_crm(tmp_path, simulator, numbers)

        # Then LeadSquared is installed: its backfill is slow, and we kill it halfway.
        simulator.configure(latency=0.05, drop_after_commit_rate=0.2)
        # single posts, so there is a "halfway" (bulk posts all ten in one call)
        write_config(config, simulator, port, opportunities=False, bulk=False)
        bridge.start()
        eventually(lambda: len(simulator.activities()) >= 3, timeout=60)
        bridge.kill()
        assert len(simulator.activities()) < len(numbers), "killed too late to prove much"
        bridge.start()
        sinks = eventually(lambda: _backfilled(bridge), timeout=120)
        assert sinks[0]["dead_letters"] == 0

        assert max(Counter(key_of(a) for a in simulator.activities()).values()) == 1
        assert _posted(simulator) == Counter(recent)  # the last three days, each exactly once
    finally:
        if bridge is not None:
            bridge.stop()


def test_sigkill_inside_bulk_calls_then_restart_leaves_each_message_once(tmp_path, simulator):
    """Bulk on (the default): each kill lands while a bulk call is held open by the network
    (the simulator's write_hold), first a ByLeadId call, then a ByOpportunityId one; the
    held write commits after the kill, and the restart finds it by its keys."""
    bridge = None
    try:
        numbers = [f"9198765430{i:02d}" for i in range(10)]
        bridge, config, port, recent = _history_without_crm(tmp_path, simulator, numbers)
        leads = {lead["Phone"]: lead["ProspectID"] for lead in simulator.admin("GET", "leads")}
        with_deals = numbers[:3]
        for number in with_deals:
            simulator.add_opportunity(leads[number[2:]], "Deal")
        simulator.configure(write_hold=2.0)
        # a part per message: six activities per lead, and per opportunity, so each
        # opportunity's go out in a ByOpportunityId call
        write_config(config, simulator, port, granularity="message", rate_limit="50/1s",
                     bulk_rate_limit="10/1s", timeout="3s")  # over the 2 s write_hold
        for endpoint in ("ByLeadId", "ByOpportunityId"):
            bridge.start()
            # (after the first kill, its batches wait out the held write first: ~13 s)
            held = eventually(lambda e=endpoint: _held_bulk(simulator, e), timeout=120)
            before = len(simulator.activities())
            bridge.kill()  # inside the held call: it has not committed yet
            assert len(simulator.activities()) == before
            assert held
            # the hold ends: the held calls commit after the kill (only those: a call the
            # kill cut off mid-body never commits, and never gets a status)
            eventually(lambda h=held: all(simulator.admin("GET", "calls")[i]["status"]
                                          for i in h), timeout=30)
            assert len(simulator.activities()) > before
        simulator.configure(write_hold=0)
        bridge.start()
        sinks = eventually(lambda: _backfilled(bridge), timeout=120)
        assert sinks[0]["dead_letters"] == 0 and sinks[0]["dead_targets"] == 0

        activities = simulator.activities()
        assert max(Counter(key_of(a) for a in activities).values()) == 1
        on_leads = Counter(t for a in activities if not a["RelatedOpportunityId"]
                           for t in texts_in(a["ActivityNote"]))
        assert on_leads == Counter(recent)  # the last three days, each exactly once
        on_deals = Counter(t for a in activities if a["RelatedOpportunityId"]
                           for t in texts_in(a["ActivityNote"]))
        deal_texts = {f"msg-{numbers.index(n) * 100 + j:05d}" for n in with_deals
                      for j in range(10)}
        assert on_deals == Counter(t for t in recent if t in deal_texts)
    finally:
        if bridge is not None:
            bridge.stop()


def _held_bulk(simulator: SimulatorProcess, endpoint: str) -> list[int]:
    """Bulk calls to `endpoint` whose whole body arrived and that have no answer yet
    (held): their places in the simulator's call log. (A call only recorded, on its
    headers, may be cut off mid-body by the kill: it never commits nor gets a status.)"""
    return [n for n, call in enumerate(simulator.admin("GET", "calls"))
            if call["path"].endswith(f"/Add/{endpoint}") and call["held"]
            and call["status"] is None]


def _history_without_crm(tmp_path: Path, simulator: SimulatorProcess, numbers: list[str],
                         without_lead: tuple[str, ...] = ()):
    """A lead per number; a bridge with no CRM stores five days of chats (of `numbers` and
    of the customers `without_lead`, who have none), then stops.

    Returns the (stopped) bridge, its config path and port, and the texts of the last
    three days, which an install backfill must post.
    """
    for i, number in enumerate(numbers):
        simulator.add_lead(FirstName=f"L{i}", Phone=number[2:])
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "server": {"port": port}, "buffer": {"path": str(tmp_path / "bridge.db")},
        "plugins": {"whatsapp": {"verify_token": TOKEN, "app_secret": SECRET}}}))
    bridge = BridgeProcess(config, port).start()
    try:
        recent = post_history(bridge, [*numbers, *without_lead], int(time.time()))
    finally:
        bridge.stop()
    return bridge, config, port, recent


def _backfilled(bridge: BridgeProcess) -> list[dict] | None:
    sinks = bridge.status()["sinks"]
    progress = sinks[0]["backfill"]
    done = progress["messages_total"] and progress["messages_done"] == progress["messages_total"]
    return sinks if done and sinks[0]["backlog"] == 0 else None


async def test_history_messages_arriving_later_are_paced_as_backfill(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, history=True), message(2)])
    (live,) = await buffer.claim("crm", 100, 60, backfill=False)
    (old,) = await buffer.claim("crm", 100, 60, backfill=True)
    assert [m.provider_id for m in live.messages] == ["m2"]
    assert [m.provider_id for m in old.messages] == ["m1"]


def test_backfill_command_widens_the_window_without_posting_twice(tmp_path, simulator):
    bridge = None
    try:
        numbers = [f"9198765430{i:02d}" for i in range(3)]
        bridge, config, port, _ = _history_without_crm(tmp_path, simulator, numbers)
        write_config(config, simulator, port, opportunities=False, backfill_days=1)
        bridge.start()
        eventually(lambda: _backfilled(bridge), timeout=60)
        first = _posted(simulator)
        assert 0 < len(first) < 30  # the install backfill took one day only

        result = subprocess.run(
            [sys.executable, "-m", "bridge", "backfill", "-c", str(config), "--sink",
             "leadsquared", "--days", "6"], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert f"leadsquared: {30 - len(first)} messages of the last 6 days" in result.stdout
        assert "leadsquared: backfill done" in result.stdout
        after = _posted(simulator)
        assert len(after) == 30 and max(after.values()) == 1  # all five days, each once

        bad = subprocess.run([sys.executable, "-m", "bridge", "backfill", "-c", str(config),
                              "--sink", "nope"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert bad.returncode == 1 and "no running sink named 'nope'" in bad.stderr
        tiny = subprocess.run([sys.executable, "-m", "bridge", "backfill", "-c", str(config),
                               "--sink", "leadsquared", "--days", "0.00001"],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)  # sent as 1e-05, refused, before
        assert tiny.returncode == 0, tiny.stderr
        assert "leadsquared: 0 messages of the last 1e-05 days" in tiny.stdout
    finally:
        if bridge is not None:
            bridge.stop()


def test_backfill_command_ends_and_says_so_when_what_is_left_is_held(tmp_path, simulator):
    """A customer with no lead (create_leads off): their chats are held until someone
    creates the lead. `bridge backfill` used to watch for them forever, and status
    promised "about N s left" for them."""
    bridge = None
    try:
        bridge, config, port, _ = _history_without_crm(
            tmp_path, simulator, ["919876543300"], without_lead=("919876543399",))
        write_config(config, simulator, port, opportunities=False, backfill_days=1)
        bridge.start()
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "backfill", "-c", str(config), "--sink",
             "leadsquared", "--days", "6"], capture_output=True, text=True, timeout=90,
            stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert "backfill done except 10 held message(s)" in result.stdout
        progress = bridge.status()["sinks"][0]["backfill"]
        assert progress["messages_held"] == 10
        assert progress["messages_done"] == progress["messages_total"] - 10
        assert progress["eta_seconds"] is None  # nothing left that moves at a pace
        report = subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL).stdout
        (line,) = [line for line in report.splitlines() if "backfill " in line]
        assert "10 held (see Needs attention)" in line and "left" not in line
    finally:
        if bridge is not None:
            bridge.stop()


def test_backfill_command_names_the_messages_that_went_to_dead_letters(tmp_path, simulator):
    """A backfill whose chats the CRM never took (an outage past retry_for): `bridge
    backfill` said "backfill done" and status "done (N messages …)", as if they were in
    LeadSquared; dead letters are settled, not synced. (adv45)"""
    bridge = None
    try:
        bridge, config, port, _ = _history_without_crm(tmp_path, simulator, ["919876543300"])
        write_config(config, simulator, port, opportunities=False, backfill_days=1,
                     retry_for="1s", lead_directory="off")
        bridge.start()
        eventually(lambda: bridge.status()["sinks"][0]["backfill"]["messages_done"] > 0)
        simulator.configure(error_rate=1.0)  # the CRM down from here on
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "backfill", "-c", str(config), "--sink",
             "leadsquared", "--days", "6"], capture_output=True, text=True, timeout=90,
            stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        progress = bridge.status()["sinks"][0]["backfill"]
        dead = progress["messages_dead"]
        assert dead > 0 and progress["messages_done"] == progress["messages_total"]
        assert (f"backfill done; {dead} message(s) went to dead letters: see `bridge "
                "dead-letter list`") in result.stdout
        report = subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL).stdout
        (line,) = [line for line in report.splitlines() if "backfill " in line]
        assert f"; {dead} went to dead letters)" in line
    finally:
        if bridge is not None:
            bridge.stop()


def _posted(simulator: SimulatorProcess) -> Counter:
    return Counter(t for a in simulator.activities()
                   for t in re.findall(r"msg-\d{5}", a["ActivityNote"]))
