"""The status page's conversation list: pages, orders, filters and search, on a real buffer."""

from __future__ import annotations

import re
from dataclasses import replace

import aiohttp
import pytest

from bridge.buffer import Policy
from bridge.contracts import Outcome
from tests.helpers import message

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)


async def settle(buffer, outcome_for) -> None:
    """Claim everything for "crm" and record `outcome_for(message)` for each message."""
    for claim in await buffer.claim("crm", 1000, 60):
        await buffer.complete(claim, [outcome_for(m) for m in claim.messages], POLICY)


def keys(page) -> list[str]:
    return [row["key"] for row in page["rows"]]


async def test_pages_hold_fifty_newest_first_and_count_every_match(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(n, f"+91{n:010d}", minutes_ago=n) for n in range(120)])
    first = await buffer.conversation_list("crm", limit=50)
    third = await buffer.conversation_list("crm", offset=100, limit=50)
    assert first["total"] == third["total"] == 120
    assert keys(first) == [f"+91{n:010d}" for n in range(50)]  # minutes_ago 0 is newest
    assert keys(third) == [f"+91{n:010d}" for n in range(100, 120)]


async def test_sort_by_pending_then_by_last_synced(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, "+911", minutes_ago=5), message(2, "+912", minutes_ago=4)])
    await settle(buffer, lambda m: Outcome.delivered())  # both synced now
    await buffer.append([message(3, "+913", minutes_ago=3)])
    await buffer.append([message(n, "+911") for n in range(10, 13)])  # +911: 3 pending
    pending = await buffer.conversation_list("crm", sort="pending")
    assert keys(pending) == ["+911", "+913", "+912"]  # +913 has 1 pending, +912 none
    assert [r["pending"] for r in pending["rows"]] == [3, 1, 0]
    synced = await buffer.conversation_list("crm", sort="last_synced")
    assert keys(synced)[2] == "+913"  # never synced: after the synced ones
    # page 2 of one row each walks across the two tiers without repeats or gaps
    walked = [keys(await buffer.conversation_list("crm", sort="pending", offset=n, limit=1))[0]
              for n in range(3)]
    assert walked == ["+911", "+913", "+912"]


async def test_filters_held_dead_and_groups(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, "+911"), message(2, "+912"), message(3, "+913"),
                         message(4, "group-1", extra={"conversation_kind": "group"})])
    await settle(buffer, lambda m: Outcome.held("no lead for this number")
                 if m.conversation == "+911" else Outcome.rejected("too long")
                 if m.conversation == "+912" else Outcome.delivered())
    assert keys(await buffer.conversation_list("crm", show="held")) == ["+911"]
    dead = await buffer.conversation_list("crm", show="dead")
    assert keys(dead) == ["+912"] and dead["rows"][0]["dead"] == 1
    groups = await buffer.conversation_list("crm", show="groups")
    assert keys(groups) == ["group-1"] and groups["rows"][0]["kind"] == "group"
    assert (await buffer.conversation_list("crm"))["total"] == 4


async def test_search_matches_a_number_however_typed_and_a_name_in_any_case(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, "+919876543210"), message(2, "+14155550100"),
                         replace(message(3, "+447700900123"), contact_name="Zoë 100% Real_Name")])
    found = await buffer.conversation_list("crm", search="+91 98765-43210")
    assert keys(found) == ["+919876543210"] and found["total"] == 1
    assert keys(await buffer.conversation_list("crm", search="zoë")) == ["+447700900123"]
    assert keys(await buffer.conversation_list("crm", search="REAL_name")) == ["+447700900123"]
    # LIKE wildcards typed into the box are plain characters
    assert keys(await buffer.conversation_list("crm", search="100%")) == ["+447700900123"]
    assert keys(await buffer.conversation_list("crm", search="_")) == ["+447700900123"]
    assert (await buffer.conversation_list("crm", search="%"))["total"] == 1


async def test_list_refuses_an_unknown_order_or_filter(buffer):
    with pytest.raises(ValueError, match="sort must be one of"):
        await buffer.conversation_list("crm", sort="name")


def _listed(html: str) -> int:
    """Rows of the conversation list (the held chats above it have rows of their own,
    which appear as the sink holds them)."""
    return html.split('<table class="conversations', 1)[1].split("</table>", 1)[0].count(
        "<tr data-key=")


async def test_page_links_paginate_and_bad_parameters_are_400(make_app, serve):
    from tests.helpers import RecordingSink
    base = await serve(make_app([RecordingSink("crm", behaviour=lambda m: Outcome.held("x"))]))
    async with aiohttp.ClientSession() as http:
        items = [{"id": f"m{n}", "conversation": f"+91{n:010d}", "text": "x"} for n in range(60)]
        async with http.post(f"{base}/ingest", json=items) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/") as resp:
            html = await resp.text()
        assert _listed(html) == 50 and "page 1 of 2" in html
        nxt = re.search(r'href="([^"]+)" rel="next"', html)[1].replace("&amp;", "&")
        async with http.get(f"{base}{nxt}") as resp:
            assert _listed(await resp.text()) == 10
        for query, reason in [({"sort": "x"}, "sort must be"), ({"show": "x"}, "show must be"),
                              ({"page": "0"}, "page must be"), ({"page": "1e3"}, "page must")]:
            async with http.get(f"{base}/", params=query) as resp:
                assert resp.status == 400 and reason in await resp.text()
