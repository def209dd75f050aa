"""A key check that cannot be read is no "key not there": a post whose outcome is unknown
is never sent again on the strength of a failed read (DESIGN.md "Reality first")."""

from __future__ import annotations

import pytest

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in


@pytest.mark.parametrize("fault", ["broken", "garbled"])
async def test_a_bulk_call_refused_whole_after_it_landed_is_not_posted_again_blind(
        sim, buffer, fault):
    """The bulk call lands, then answers an MX Error (refused_whole: each row "not
    created", looked for by key, posted singly when absent). The key check that follows
    fails (a gateway's 503, or an answer with no rows): KeyCheck.after took the failed read
    for "no keys" and the row was posted again at once, singly: two activities."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("ByLeadId", "MXInvalidInputException", "Something failed (simulated)",
                        after_commit=True)
    if fault == "broken":
        sim.break_endpoint("Retrieve", 503)
    else:
        sim.garble_endpoint("Retrieve", {"RecordCount": 1, "Activities": []})
    await buffer.append([chat(1)])

    def checks() -> int:
        return sum(c.path.endswith("/Retrieve") for c in sim.calls)

    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: sim.activities(lead), timeout=30)
        await wait_until(lambda: checks() >= 6 or len(sim.activities(lead)) > 1, timeout=60)
        assert len(sim.activities(lead)) == 1
        sim.mend_endpoint("ByLeadId")
        sim.mend_endpoint("Retrieve")
        await wait_until(lambda: settled(buffer), timeout=60)
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert await buffer.dead_letters() == []


async def test_a_key_check_answered_by_an_untyped_error_is_no_refusal_of_the_chat(sim, buffer):
    """The post commits, its answer is lost; the retry's key check (Retrieve) answers HTTP
    200 with an error envelope that names no exception type (undocumented: LeadSquared
    refuses with 4xx/5xx and an MX type, reference §3). Read as LeadSquared's refusal, the
    chat that had landed went to dead letter; it is an answer the sink cannot read, so
    the chat waits and lands once (as owners.py already reads it on Users.Get)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.configure(drop_after_commit_rate=1.0)
    sim.garble_endpoint("Retrieve", {"Status": "Error", "Message": "Something went wrong"})
    await buffer.append([chat(1)])

    def checks() -> int:
        return sum(c.path.endswith("/Retrieve") for c in sim.calls)

    async def given_up_or_checked() -> bool:
        return checks() >= 3 or bool(await buffer.dead_letters())

    async with running(buffer, [sink_for(sim, opportunities=False, max_attempts=3)]):
        await wait_until(lambda: sim.activities(lead), timeout=30)
        sim.configure(drop_after_commit_rate=0.0)
        await wait_until(given_up_or_checked, timeout=30)
        assert await buffer.dead_letters() == []
        sim.mend_endpoint("Retrieve")
        await wait_until(lambda: settled(buffer), timeout=30)
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert await buffer.dead_letters() == []
