"""A single ProspectActivity.svc/Create answered with one of LeadSquared's own (MX) errors.

The reference (shared/reference/leadsquared-api.md §1, §3) calls MX errors application
errors that are not retried, but nowhere says they come before the write: UNSURE. So an MX
answer to a single Create is a refusal only once the key check shows the activity absent;
found, it landed; unreadable, the retry checks before posting again. Against the
simulator's refuse_endpoint (docs row K10, [FAULT]: `after_commit` answers the error after
the activity was stored), over real HTTP."""

from __future__ import annotations

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import assert_exactly_once, chat, settled, sink_for

MX = "MXInvalidInputException"
FAST = {"rate_limit": "1000/0.05s", "bulk_rate_limit": "1000/0.05s"}


def creates(sim) -> int:
    return sum(c.path.endswith("ProspectActivity.svc/Create") for c in sim.calls)


async def test_an_mx_error_after_the_create_stored_the_activity_is_found_not_refused(
        sim, buffer):
    """Before: a dead letter ("LeadSquared MXInvalidInputException ...") for a chat that
    is on the lead."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("Create", MX, "Something failed after saving (simulated)",
                        after_commit=True)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, bulk=False, opportunities=False, **FAST)]):
        await wait_until(lambda: settled(buffer))
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1])
    assert creates(sim) == 1  # found by its key: never posted again


async def test_an_mx_error_after_a_deal_copy_was_stored_is_no_dead_target(sim, buffer):
    """The same on an opportunity's copy (Create with RelatedOpportunityId): before, a
    dead target for a copy the deal holds."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_endpoint("Create", MX, "Something failed after saving (simulated)",
                        after_commit=True)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, bulk=False, **FAST)]):
        await wait_until(lambda: settled(buffer))
    assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
    assert_exactly_once(sim, [lead], [1], with_opportunities=[lead])
    assert len(sim.activities(opportunity_id=deal)) == 1 and creates(sim) == 2


async def test_an_mx_error_whose_key_cannot_be_read_waits_and_lands_once(sim, buffer):
    """The Create stored the activity and answered MX, and the lead's activities cannot be
    read just then: an unknown outcome, not a refusal; the retry reads the keys first,
    finds it, and posts nothing again."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("Create", MX, "Something failed after saving (simulated)",
                        after_commit=True)
    sim.break_endpoint("Retrieve", 503)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, bulk=False, opportunities=False,
                                         max_attempts=50, **FAST)]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: sum(c.path.endswith("/Retrieve") for c in sim.calls) >= 2)
        assert await buffer.dead_letters() == []
        sim.mend_endpoint("Retrieve")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1])
    assert creates(sim) == 1


async def test_an_mx_refusal_that_stored_nothing_is_still_a_refusal_posted_once(
        sim, buffer):
    """LeadSquared refuses the Create and stores nothing: the key check finds nothing, so
    it is a dead letter naming the refusal, posted once (never retried)."""
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("Create", MX, "Invalid Input! Parameter Name: activity")
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, bulk=False, opportunities=False, **FAST)]):
        (dead,) = await wait_until(buffer.dead_letters)
    assert f"LeadSquared {MX}: Invalid Input! Parameter Name: activity" in dead["reason"]
    assert creates(sim) == 1 and sim.activities() == []
