"""A retry re-splits the messages not yet delivered (transcript.split): every message must
still reach the lead and each open opportunity exactly once. Through the simulator over
HTTP, drained from a real buffer (SQLite, and PostgreSQL when it is there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.backends import BACKENDS, fresh_schema_url
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import NUMBER, settled, sink_for, texts_in


@pytest.fixture(params=BACKENDS)
async def buffer_target(request, tmp_path) -> AsyncIterator[str]:
    """Both backends: the ledger and the failed targets a retry re-splits by are stored."""
    if request.param == "sqlite":
        yield str(tmp_path / "buffer.db")
        return
    async with fresh_schema_url() as url:
        yield url


def sized(n: int, length: int, minutes_ago: float):
    """A message whose text is `msg-0000n` padded to `length` characters."""
    text = f"msg-{n:05d} " + "x" * (length - 10)
    return message(n, NUMBER, source="whatsapp", text=text, minutes_ago=minutes_ago)


def texts_on(sim, lead: str, opportunity: str | None) -> Counter:
    return Counter(t for a in sim.activities(lead)
                   if a["RelatedOpportunityId"] == opportunity
                   for t in texts_in(a["ActivityNote"]))


def lead_creates_answered(sim) -> int:
    return sum(1 for c in sim.calls if c.path.endswith("ProspectActivity.svc/Create")
               and isinstance(c.body, dict) and not c.body.get("RelatedOpportunityId")
               and c.status == 200)


async def test_a_note_whose_lead_post_failed_is_not_joined_to_an_earlier_part_after_a_middle_one_lands(  # noqa: E501
        sim, buffer):
    """Three notes (note_limit 1000): m1, a long m2, a short m3. On the lead m1 and m2
    land and m3's post fails (503); on the opportunity m1's post fails (503) and m2's
    lands. m2 is delivered; the retry holds m1 and m3, which now fit in one note. Joined
    under m1's key (in the ledger for the lead), m3's lead post would be skipped: m3
    would never reach the lead."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    await buffer.append([sized(1, 275, 30), sized(2, 675, 20), sized(3, 175, 10)])
    sim.configure(latency=0.3)  # time to queue the faults between two posts
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_answered(sim) == 2, timeout=30)
        # m3's post on the lead, then m1's on the opportunity: a gateway's 503 each
        sim.configure(gateway_errors=[[503, "Create"], [503, "Create"]])
        await wait_until(lambda: texts_on(sim, lead, deal)["msg-00002"], timeout=30)
        assert sim.knobs.gateway_errors == []  # both were used by the first try
        sim.configure(latency=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({"msg-00001": 1, "msg-00002": 1, "msg-00003": 1})
    assert texts_on(sim, lead, None) == wanted
    assert texts_on(sim, lead, deal) == wanted
    assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
    (state,) = await buffer.sinks()
    assert state["failing_targets"] == 0  # the lead's wait is gone once m3 landed


async def test_a_note_landed_on_the_lead_is_not_posted_again_when_its_lines_grew_before_the_retry(  # noqa: E501
        sim, buffer):
    """One note of three messages lands on the lead; its post on the opportunity fails
    (503). Before the retry the customer's WhatsApp name changes (a new message carries
    it): every line of theirs is longer, the three no longer fit in one note, and the
    retry's re-split gave m3 a part (and key) of its own: posted on the lead a second
    time."""
    from dataclasses import replace

    from tests.leadsquared.test_targets import posts_on

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    await buffer.append([sized(n, 230, 30 - n) for n in (1, 2, 3)])
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: posts_on(sim, deal) >= 2, timeout=30)
        renamed = replace(sized(4, 20, 1), contact_name="Asha Kumari Venkataraman-Iyer (Pune)")
        await buffer.append([renamed])
        sim.refuse_posts(deal, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({f"msg-{n:05d}": 1 for n in (1, 2, 3, 4)})
    assert texts_on(sim, lead, deal) == wanted
    assert texts_on(sim, lead, None) == wanted
