"""A lead the bridge creates (create_leads) belongs to the rep whose number the customer
wrote to, as the chat's activity does: through a real `bridge run` and the simulator
process, under each reading of an OwnerId on Lead.Create (switch lead_owner)."""

from __future__ import annotations

import html
import sqlite3

import pytest

from bridge import Batch, Conversation
from plugins.leadsquared.leads import LeadOwner, create_lead
from plugins.leadsquared.owners import Rep
from plugins.leadsquared.simulator.users import ADMIN_EMAIL
from plugins.leadsquared.targets import pinned_reps
from tests import oneshot
from tests.helpers import message
from tests.leadsquared.test_client import client, connect, sim  # noqa: F401
from tests.leadsquared.test_end_to_end import eventually, post
from tests.leadsquared.test_identity_end_to_end import start  # noqa: F401
from tests.leadsquared.test_owners_end_to_end import (
    ARJUN_NUMBER,
    OWNERS,
    PRIYA_NUMBER,
    SPARE_NUMBER,
    change,
    only,
)


def lead_of(simulator, mobile: str) -> dict:  # noqa: F811
    """The one lead holding this number (created by the bridge)."""
    def find():
        found = [lead for lead in simulator.admin("GET", "leads")
                 if mobile in str(lead.get("Mobile") or "").replace("-", "")]
        return found if found else None
    (lead,) = eventually(find)
    return lead


@pytest.fixture
def team(simulator):  # noqa: F811
    return {"priya": simulator.add_user("Priya", "priya@example.com", last="Rao"),
            "arjun": simulator.add_user("Arjun", "arjun@example.com", last="Mehta")}


def admin_id(simulator) -> str:  # noqa: F811
    return next(u["ID"] for u in simulator.admin("GET", "users")
                if u["EmailAddress"] == ADMIN_EMAIL)


def test_a_lead_created_for_a_customer_of_priya_s_number_is_owned_by_priya(
        start, simulator, team):  # noqa: F811
    """...and one of a number mapped to nobody keeps LeadSquared's default owner (no
    OwnerId sent), whatever owner_fallback says for its activities."""
    bridge = start(owners=OWNERS, create_leads=True, owner_fallback="lead_owner")
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.l1", "hello Priya"),
         change(ARJUN_NUMBER, "919123456780", "Ravi", "wamid.l2", "hello Arjun"),
         change(SPARE_NUMBER, "919988776655", "Meera", "wamid.l3", "hello?"))
    bridge.sync_now()
    asha = lead_of(simulator, "919876543210")
    assert asha["OwnerId"] == team["priya"]
    assert only(simulator, asha["ProspectID"])["Owner"] == "priya@example.com"
    ravi = lead_of(simulator, "919123456780")
    assert ravi["OwnerId"] == team["arjun"]
    meera = lead_of(simulator, "919988776655")
    assert meera["OwnerId"] == admin_id(simulator)  # the keys' user: no OwnerId was sent
    assert only(simulator, meera["ProspectID"])["Owner"] == ADMIN_EMAIL  # its lead owner
    creates = [c for c in simulator.admin("GET", "calls") if c["path"].endswith("Lead.Create")]
    assert sum("OwnerId" in str(c["body"]) for c in creates) == 2
    (sink,) = bridge.status()["sinks"]
    assert "new lead" not in str(sink), "nothing went wrong: nothing to say"


def test_a_refused_owner_never_loses_the_lead_and_the_status_says_why(
        start, simulator, team):  # noqa: F811
    simulator.configure(lead_owner="refused")
    bridge = start(owners=OWNERS, create_leads=True)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.l4", "hello Priya"))
    bridge.sync_now()
    asha = lead_of(simulator, "919876543210")  # created without OwnerId: one lead
    assert asha["OwnerId"] == admin_id(simulator)
    assert only(simulator, asha["ProspectID"])["Owner"] == "priya@example.com"
    (sink,) = bridge.status()["sinks"]
    assert "LeadSquared refused a new lead's owner priya@example.com" in sink["details"]["owners"]


def test_an_account_that_ignores_owner_id_is_named_on_the_status_page(
        start, simulator, team):  # noqa: F811
    simulator.configure(lead_owner="ignored")
    bridge = start(owners=OWNERS, create_leads=True)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.l5", "hello Priya"))
    bridge.sync_now()
    asha = lead_of(simulator, "919876543210")
    assert asha["OwnerId"] == admin_id(simulator)
    assert only(simulator, asha["ProspectID"])["Owner"] == "priya@example.com"
    (sink,) = eventually(lambda: [s for s in bridge.status()["sinks"]
                                  if "did not take" in s["details"]["owners"]])
    assert "did not take a new lead's OwnerId (priya@example.com)" in sink["details"]["owners"]


# The create itself, against the simulator in this process over real HTTP.

@pytest.mark.parametrize("reading", ["honoured", "ignored", "refused"])
async def test_a_number_another_creator_took_meanwhile_gives_that_lead_under_each_reading(
        sim, client, reading):  # noqa: F811
    """create_lead with an owner meets the unique Phone (another process created the lead
    between our lookup and our create): whether OwnerId is honoured, ignored or refused
    first, the lead made meanwhile is taken, and no second lead appears."""
    sim.store.switches.lead_owner = reading
    rep = sim.add_user("Priya", "priya@example.com")
    theirs = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    heard: list[str | None] = []
    owner = LeadOwner(rep, "priya@example.com", heard.append)
    assert await create_lead(client, "+919876543210", "Asha", "WhatsApp", owner=owner) == theirs
    assert len(sim.store.leads) == 1


@pytest.mark.parametrize(("reading", "owned_by_rep"), [("honoured", True), ("ignored", False),
                                                       ("refused", False)])
async def test_each_reading_of_owner_id_creates_the_lead_once(sim, client, reading,  # noqa: F811
                                                              owned_by_rep):
    sim.store.switches.lead_owner = reading
    rep = sim.add_user("Priya", "priya@example.com")
    heard: list[str | None] = []
    owner = LeadOwner(rep, "priya@example.com", heard.append, check=True)
    lead = await create_lead(client, "+919876543210", "Asha", "WhatsApp", owner=owner)
    assert list(sim.store.leads) == [lead]
    assert (sim.store.leads[lead]["OwnerId"] == rep) is owned_by_rep
    assert (heard == [None]) is owned_by_rep  # said whenever the rep does not own it


def test_a_chat_s_deal_activity_keeps_the_rep_of_its_lead_activity_when_the_map_changes(
        start, simulator, team):  # noqa: F811
    """owners: auto. The lead's activity lands under Priya, the deal's post fails; Priya's
    number moves to Arjun in LeadSquared and a sync-now reads the users again before the
    deal's retry: the deal's activity is still Priya's (one chat, one owner), not Arjun's
    as the new map would have it."""
    asha, deal = _chat_with_a_failing_deal(simulator, team)
    bridge = start(owners="auto", max_attempts=50, rate_limit="100/1s", lease="20s",
                   deliver_timeout="15s")
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.p1", "about the plan"))
    bridge.sync_now()
    assert only(simulator, asha)["Owner"] == "priya@example.com"

    _move_number_to_arjun(simulator, team)
    bridge.sync_now()  # the users are read again: the number is Arjun's now
    eventually(lambda: "+919800000001 → arjun@example.com" in str(bridge.status()["sinks"]))
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "reason": ""})
    bridge.sync_now()
    on_deal = eventually(lambda: simulator.admin("GET", "activities",
                                                 params={"opportunityId": deal}))
    assert [a["Owner"] for a in on_deal] == ["priya@example.com"]
    assert {a["Owner"] for a in simulator.activities(asha)} == {"priya@example.com"}
    page = html.unescape(oneshot.get(f"{bridge.url}/conversation",
                                     params={"key": "+919876543210"}, timeout=10).text)
    assert "CRM activity" in page and "Priya Rao" not in page  # the kept rep is no activity


def test_the_rep_a_chat_s_first_try_chose_outlives_a_sigkill_and_a_changed_map(
        start, simulator, team, tmp_path):  # noqa: F811
    """As above, but the bridge is killed (SIGKILL) after the lead's activity landed and
    restarted once the number is Arjun's: the buffer kept the chat's rep, the deal's
    activity is Priya's."""
    asha, deal = _chat_with_a_failing_deal(simulator, team)
    settings = {"owners": "auto", "max_attempts": 50, "rate_limit": "100/1s",
                "lease": "2s", "deliver_timeout": "1s"}
    bridge = start(**settings)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.k1", "about the plan"))
    bridge.sync_now()
    assert only(simulator, asha)["Owner"] == "priya@example.com"
    eventually(lambda: ledger_rows(tmp_path / "bridge.db") >= 1)  # the try's outcome kept
    bridge.kill()

    _move_number_to_arjun(simulator, team)
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "reason": ""})
    start(**settings).sync_now()
    on_deal = eventually(lambda: simulator.admin("GET", "activities",
                                                 params={"opportunityId": deal}))
    assert [a["Owner"] for a in on_deal] == ["priya@example.com"]


def _chat_with_a_failing_deal(simulator, team) -> tuple[str, str]:  # noqa: F811
    """Priya holds the business number; Asha's lead has an open deal refusing posts for
    now (a gateway's 503). (lead, deal)"""
    simulator.admin("POST", "users/change", json={"id": team["priya"],
                                                  "phones": "+91-9800000001"})
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    deal = simulator.add_opportunity(asha, "Annual plan")
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "transient": True})
    return asha, deal


def _move_number_to_arjun(simulator, team) -> None:  # noqa: F811
    simulator.admin("POST", "users/change", json={"id": team["priya"], "phones": ""})
    simulator.admin("POST", "users/change", json={"id": team["arjun"],
                                                  "phones": "+91-9800000001"})


def ledger_rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM ledger").fetchone()[0]


@pytest.mark.parametrize(("first_can_own", "owner"), [(True, "priya@example.com"),
                                                      (False, "arjun@example.com")])
def test_a_chat_keeps_its_first_rep_unless_that_rep_can_own_nothing_now(first_can_own, owner):
    """A rep deactivated (or gone) since the chat's first try may be refused as an owner
    by LeadSquared: the rest of the chat goes to today's rep rather than fail for good."""
    messages = [message(1), message(2)]
    batch = Batch(key="b1", sink="leadsquared", conversation=Conversation("+919876543210"),
                  messages=messages)
    first = Rep("priya@example.com", "Priya Rao", "+919800000001")
    pinned_reps(batch, {m.id: first for m in messages})  # the first try
    today = Rep("arjun@example.com", "Arjun Mehta", "+919800000001")
    later = pinned_reps(batch, {m.id: today for m in messages},
                        lambda email: first_can_own or email != "priya@example.com")
    assert {rep.email for rep in later.values()} == {owner}
