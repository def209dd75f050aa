"""A rep's chat while the rep changes under it: deactivated between the lead's activity and
its deal's copy, or between two tries of one chat."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("deals", [False, True])
async def test_a_refusal_of_a_deactivated_rep_while_the_users_cannot_be_read_is_no_dead_letter(
        sim, buffer, deals):
    """Priya is deactivated after the sink read the users, and LeadSquared refuses her as
    an owner; the read of the users that follows the refusal fails (a gateway's 503). The
    map read before stays, still naming her active, and the refusal was taken as final:
    the chat (or its deal's copy) dead-lettered. It cannot tell whose fault the refusal
    is: it waits until the users can be read, then goes under owner_fallback."""
    sim.configure(inactive_owner="refused")
    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    deal = sim.add_opportunity(lead, "Deal") if deals else None
    if deal:
        sim.refuse_posts(deal, transient=True)
    # a target's every failed try counts to max_attempts (a passing one too): room for
    # the tries while the users cannot be read
    sink = sink_for(sim, owners={PRIYA: "priya@example.com"}, max_attempts=30,
                    opportunities=deals)

    def users_reads() -> int:
        return sum(c.path.endswith("/Users.Get") for c in sim.calls)

    async def given_up_or_read(reads: int) -> bool:
        return users_reads() >= reads + 10 or bool(await buffer.dead_letters()) \
            or bool(await buffer.dead_targets())

    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        if deal:
            await buffer.append([to_priya(1)])
            await wait_until(lambda: sim.activities(lead), timeout=30)
            sim.refuse_posts(deal, reason="")
        sim.store.users.by_id[priya].active = False
        sim.break_endpoint("Users.Get", 503)
        reads = users_reads()
        if not deal:
            await buffer.append([to_priya(1)])
        await wait_until(lambda: given_up_or_read(reads), timeout=60)
        assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
        sim.mend_endpoint("Users.Get")
        await wait_until(lambda: settled(buffer), timeout=60)
    assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
    posted = [a for a in sim.activities(lead) if "msg-00001" in a["ActivityNote"]]
    assert len(posted) == (2 if deal else 1)
    owners = {a["RelatedOpportunityId"]: a["Owner"] for a in posted}
    assert owners[deal] == "kiran@example.com"


async def test_a_rep_deactivated_after_a_start_that_could_not_list_the_users_loses_no_chat(
        sim, buffer):
    """owners: a fixed map; the sink starts while Users.Get fails (a 503: the emails are
    used unchecked). Later the users can be read, Priya is deactivated, and LeadSquared
    refuses her as an owner. The read after the refusal took the new map but not that the
    users were read (Owners._adopt left users_read False), so can_own() still said yes to
    everyone: the refusal was final, the chat dead-lettered."""
    sim.configure(inactive_owner="refused")
    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    sim.break_endpoint("Users.Get", 503)
    sink = sink_for(sim, opportunities=False, owners={PRIYA: "priya@example.com"},
                    max_attempts=3)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started, timeout=30)
        assert not sink.owners.users_read
        sim.mend_endpoint("Users.Get")
        sim.store.users.by_id[priya].active = False
        await buffer.append([to_priya(1)])
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert activity["Owner"] == "kiran@example.com"


async def test_a_chat_that_finds_its_cached_lead_merged_away_is_owned_by_the_new_lead_s_owner(
        sim, buffer):
    """A number no rep is mapped to follows owner_fallback lead_owner. Asha's lead (Kiran's)
    is merged away; her next chat finds the cached lead gone and lands on the lead that
    holds her number now, Meera's. Its owner was chosen, and pinned, from the lead it
    first tried (Kiran, or nobody once the old lead reads as unknown): the activity on
    Meera's lead was Kiran's."""
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    meera = sim.add_user("Meera", "meera@example.com", last="Iyer")
    old = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    sink = sink_for(sim, opportunities=False, max_attempts=3,
                    owners={"+919800000099": "meera@example.com"})  # not Priya's number
    await buffer.append([to_priya(1)])
    async with running(buffer, [sink]):
        await wait_until(lambda: settled(buffer), timeout=30)
        assert [a["Owner"] for a in sim.activities(old)] == ["kiran@example.com"]
        sim.store.delete_lead(old)  # merged into another lead
        new = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=meera)
        await buffer.append([to_priya(2)])
        await wait_until(lambda: sim.activities(new), timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
    (activity,) = sim.activities(new)
    assert texts_in(activity["ActivityNote"]) == ["msg-00002"]
    assert activity["Owner"] == "meera@example.com"


async def test_a_refused_owned_post_stays_refused_when_the_key_may_not_list_the_users(
        sim, buffer):
    """The other side of waiting while the users cannot be read: a key whose user may not
    list the users (Users.Get refused, MX) will never tell whether a rep is active, so a
    refusal of an owned post is LeadSquared's answer as before: a dead letter naming it,
    not a retry for as long as retry_for lasts."""
    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("Users.Get")  # MXUnAuthorizedAccessException
    sim.refuse_endpoint("ByLeadId", "MXInvalidInputException", "Invalid field (simulated)")
    sink = sink_for(sim, opportunities=False, owners={PRIYA: "priya@example.com"},
                    max_attempts=3)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started, timeout=30)
        assert priya and not sink.owners.users_read
        await buffer.append([to_priya(1)])
        await wait_until(lambda: buffer.dead_letters(), timeout=30)
    (dead,) = await buffer.dead_letters()
    assert "Invalid field" in dead["reason"] or "not create" in dead["reason"], dead["reason"]


async def test_a_deactivated_rep_s_chat_lands_when_reading_the_users_outlasts_a_delivery(
        sim, buffer):
    """owners: auto reads each user's record (one call a user, within the rate budget), so
    a read of a team of 30 at 5 calls a second takes ~6 s; deliver_timeout is 2 s. Priya
    is deactivated after the start, and LeadSquared refuses her as an owner. The read of
    the users after the refusal ran inside the delivery and was cut off with it, every
    retry began it anew, and the chat never landed (owners.refresh_if_due itself says a
    read of the users is never made inside a delivery)."""
    sim.configure(inactive_owner="refused")
    priya = sim.add_user("Priya", "priya@example.com", last="Rao", phones="+91-9800000001")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    for n in range(28):
        sim.add_user(f"Rep{n}", f"rep{n}@example.com")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    # timeout 1 s: a delivery cut off is retried once its write must have settled
    # (3 x timeout), not after the default 90 s
    sink = sink_for(sim, opportunities=False, owners="auto", rate_limit="5/1s",
                    deliver_timeout=2.0, lease=4.0, max_attempts=3, timeout=1.0)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started, timeout=60)
        sim.store.users.by_id[priya].active = False
        await buffer.append([to_priya(1)])
        await wait_until(lambda: settled(buffer), timeout=60)
    assert await buffer.dead_letters() == []
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert activity["Owner"] == "kiran@example.com"
