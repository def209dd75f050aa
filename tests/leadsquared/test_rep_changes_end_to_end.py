"""A rep deactivated mid-chat, through a real `bridge run` and the simulator process: the
deal's copy of a chat whose lead activity is already the rep's still lands once."""

from __future__ import annotations

from tests.leadsquared.test_end_to_end import eventually, post
from tests.leadsquared.test_identity_end_to_end import start  # noqa: F401
from tests.leadsquared.test_owners_end_to_end import CALM, OWNERS, PRIYA_NUMBER, change, team

__all__ = ["team"]  # the fixture, used by name


def test_a_rep_deactivated_before_the_deal_copy_goes_leaves_no_dead_target(
        start, simulator, team):  # noqa: F811
    """Priya's chat lands on Asha's lead (hers); the deal's copy meets a gateway's 503;
    Priya is deactivated in LeadSquared, which refuses an inactive owner
    (inactive_owner=refused). The next drain (no sync-now: the users are not read before
    it) posted the deal's copy under Priya, was refused, and gave it up as a dead target;
    now it reads the users, and the copy goes under owner_fallback (Kiran, the lead's
    owner)."""
    simulator.configure(inactive_owner="refused")
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210", OwnerId=team["kiran"])
    deal = simulator.add_opportunity(asha, "Annual plan")
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "transient": True})
    bridge = start(owners=OWNERS, owner_fallback="lead_owner", sync_interval="1s",
                   retry_base="1s", retry_cap="2s", **CALM)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.e1", "about the plan"))
    eventually(lambda: [a for a in simulator.activities(asha)
                        if not a["RelatedOpportunityId"]], timeout=60)
    simulator.admin("POST", "users/change", json={"id": team["priya"], "active": False})
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "reason": ""})
    (sink,) = eventually(lambda: [s for s in bridge.status()["sinks"]
                                  if s["backlog"] == 0 and s["last_sync_at"]
                                  and (s["dead_targets"] or simulator.admin(
                                      "GET", "activities", params={"opportunityId": deal}))],
                         timeout=90)
    assert sink["dead_targets"] == 0 and sink["dead_letters"] == 0
    on_deal = simulator.admin("GET", "activities", params={"opportunityId": deal})
    assert [a["Owner"] for a in on_deal] == ["kiran@example.com"]
    on_lead = [a for a in simulator.activities(asha) if not a["RelatedOpportunityId"]]
    assert [a["Owner"] for a in on_lead] == ["priya@example.com"]
