"""A rep's chat while the rep changes under it: deactivated between the lead's activity and
its deal's copy, or between two tries of one chat."""

from __future__ import annotations

from tests.helpers import running, wait_until
from tests.leadsquared.test_owners_unread import PRIYA, to_priya
from tests.leadsquared.test_sink import settled, sink_for, texts_in


async def test_a_deal_copy_refused_for_a_rep_deactivated_after_the_lead_post_still_lands(
        sim, buffer):
    """Priya's chat lands on the lead (hers); its copy on the open deal fails for a passing
    reason; meanwhile Priya is deactivated, and LeadSquared refuses an inactive owner
    (switch inactive_owner=refused). The deal's copy was given up as a dead target at the
    first refusal: the refusal of an owned post on the lead reads the users again and goes
    under owner_fallback (delivery._owner_gone), the same refusal on a deal did not."""
    sim.configure(inactive_owner="refused")
    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, transient=True)  # the deal's copy waits (a gateway's 503)
    sink = sink_for(sim, owners={PRIYA: "priya@example.com"}, max_attempts=4)
    await buffer.append([to_priya(1)])
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: sim.activities(lead), timeout=30)
        sim.store.users.by_id[priya].active = False
        sim.refuse_posts(deal, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
    (on_lead,) = [a for a in sim.activities(lead) if not a["RelatedOpportunityId"]]
    assert on_lead["Owner"] == "priya@example.com"
    (on_deal,) = sim.activities(opportunity_id=deal)
    assert texts_in(on_deal["ActivityNote"]) == ["msg-00001"]
    assert on_deal["Owner"] == "kiran@example.com"  # owner_fallback: the lead's owner
