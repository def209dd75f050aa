"""Reps end to end (issue 26 "Done when"): two business numbers mapped to two LeadSquared
users, customers writing to them through a real `bridge run`, the simulator process
recording each activity's owner; an unmapped number follows owner_fallback."""

from __future__ import annotations

import time

import pytest

from plugins.leadsquared.simulator.users import ADMIN_EMAIL
from tests.leadsquared.test_end_to_end import eventually, post
from tests.leadsquared.test_identity_end_to_end import start  # noqa: F401
from tests.whatsapp import payloads as p

# (phone_number_id, display number as the webhook writes it: digits)
PRIYA_NUMBER = ("110000000000001", "919800000001")
ARJUN_NUMBER = ("220000000000002", "919800000002")
SPARE_NUMBER = ("330000000000003", "919800000003")  # mapped to nobody
OWNERS = {"+919800000001": "priya@example.com",  # by display number (E.164)
          ARJUN_NUMBER[0]: "arjun@example.com"}  # by phone_number_id
FIELD = "mx_Custom_6"  # business_field's default


def change(number: tuple[str, str], customer: str, name: str, mid: str, text: str,
           reply: str | None = None) -> dict:
    """A customer's message to one business number, and the rep's reply typed in the
    Business app (smb_message_echoes) when `reply` is given."""
    now = int(time.time())
    metadata = {"display_phone_number": number[1], "phone_number_id": number[0]}
    value = {"messaging_product": "whatsapp", "metadata": metadata,
             "contacts": [p.contact(customer, name)],
             "messages": [p.text_message(mid, customer, text, ts=now - 5)]}
    return {"field": "messages", "value": value}


def echo(number: tuple[str, str], customer: str, mid: str, text: str) -> dict:
    metadata = {"display_phone_number": number[1], "phone_number_id": number[0]}
    return {"field": "smb_message_echoes", "value": {
        "messaging_product": "whatsapp", "metadata": metadata,
        "message_echoes": [p.echo(mid, customer, text, from_=number[1],
                                  timestamp=str(int(time.time()) - 2))]}}


def field(activity: dict, name: str) -> str | None:
    return next((f["Value"] for f in activity["Fields"] if f["SchemaName"] == name), None)


def only(simulator, lead: str) -> dict:
    (activity,) = eventually(lambda: simulator.activities(lead))
    return activity


@pytest.fixture
def team(simulator):
    """Two reps and the owner of one lead; their user ids."""
    return {"priya": simulator.add_user("Priya", "priya@example.com", last="Rao"),
            "arjun": simulator.add_user("Arjun", "arjun@example.com", last="Mehta"),
            "kiran": simulator.add_user("Kiran", "kiran@example.com", last="Das")}


@pytest.mark.parametrize("fallback", ["lead_owner", "api_user"])
def test_each_number_s_activities_are_owned_by_its_rep_and_name_number_and_rep(
        start, simulator, team, fallback):  # noqa: F811
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    ravi = simulator.add_lead(FirstName="Ravi", Mobile="919123456780")
    meera = simulator.add_lead(FirstName="Meera", Mobile="919988776655", OwnerId=team["kiran"])
    bridge = start(owners=OWNERS, owner_fallback=fallback)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.a1", "price please?"),
         echo(PRIYA_NUMBER, "919876543210", "wamid.a2", "sending it now"))
    post(bridge, change(ARJUN_NUMBER, "919123456780", "Ravi", "wamid.r1", "is it in stock?"))
    post(bridge, change(SPARE_NUMBER, "919988776655", "Meera", "wamid.m1", "hello?"))
    bridge.sync_now()

    mine = only(simulator, asha)
    assert mine["Owner"] == "priya@example.com"
    assert field(mine, FIELD) == "Priya Rao (+919800000001)"
    assert "and Priya Rao (+919800000001)" in mine["ActivityNote"].splitlines()[0]
    assert "➡️ Priya Rao (+919800000001): sending it now" in mine["ActivityNote"]
    assert "Business" not in mine["ActivityNote"]

    his = only(simulator, ravi)
    assert his["Owner"] == "arjun@example.com"
    assert field(his, FIELD) == "Arjun Mehta (+919800000002)"

    (sink,) = bridge.status()["sinks"]  # the status page names who owns what
    assert ("+919800000001 → priya@example.com, 220000000000002 → arjun@example.com; other "
            f"numbers: {fallback}") in str(sink)

    spare = only(simulator, meera)
    expected = "kiran@example.com" if fallback == "lead_owner" else ADMIN_EMAIL
    assert spare["Owner"] == expected
    assert field(spare, FIELD) == "Business (+919800000003)"


@pytest.mark.parametrize("create_owner", ["ignored", "owner_email", "owner_field"])
def test_a_rep_s_activity_on_an_open_deal_is_owned_by_the_rep_too(
        start, simulator, team, create_owner):  # noqa: F811
    simulator.configure(create_owner=create_owner)  # how a single Create names an owner
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    deal = simulator.add_opportunity(asha, "Annual plan")
    bridge = start(owners=OWNERS, bulk=False)  # owned posts go as one-row bulk calls
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.o1", "about the plan"))
    bridge.sync_now()
    on_deal = eventually(lambda: simulator.admin("GET", "activities",
                                                 params={"opportunityId": deal}))
    assert [a["Owner"] for a in on_deal] == ["priya@example.com"]
    owners = {a["Owner"] for a in simulator.activities(asha)}
    assert owners == {"priya@example.com"}


@pytest.mark.parametrize("held", [{"phones": "+91-9800000003"}, {"mobile": "9800000003"},
                                  {"mobile": "098000 00003"}])
def test_owners_auto_gives_each_number_to_the_user_holding_it(
        start, simulator, team, held):  # noqa: F811
    """Any of the user's numbers; one kept as the national number (as users type it, as
    leads often hold it: the lead directory reads those too) is still that user's."""
    simulator.add_user("Nisha", "nisha@example.com", last="Iyer", **held)
    meera = simulator.add_lead(FirstName="Meera", Mobile="919988776655")
    bridge = start(owners="auto", owner_fallback="api_user")
    post(bridge, change(SPARE_NUMBER, "919988776655", "Meera", "wamid.n1", "hi Nisha"))
    bridge.sync_now()
    mine = only(simulator, meera)
    assert mine["Owner"] == "nisha@example.com"
    assert field(mine, FIELD) == "Nisha Iyer (+919800000003)"


def test_one_customer_writing_to_two_reps_gets_two_activities_each_owned_by_its_rep(
        start, simulator, team):  # noqa: F811
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    bridge = start(owners=OWNERS)
    # one webhook, one commit: both chats are in the first drain (never two windows by luck)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.t1", "to priya"),
         change(ARJUN_NUMBER, "919876543210", "Asha", "wamid.t2", "to arjun"))
    bridge.sync_now()
    activities = eventually(lambda: len(simulator.activities(asha)) >= 2
                            and simulator.activities(asha), timeout=15)
    by_owner = {a["Owner"]: a for a in activities}
    assert set(by_owner) == {"priya@example.com", "arjun@example.com"}
    assert "to priya" in by_owner["priya@example.com"]["ActivityNote"]
    assert "to arjun" not in by_owner["priya@example.com"]["ActivityNote"]
    assert field(by_owner["arjun@example.com"], FIELD) == "Arjun Mehta (+919800000002)"


@pytest.mark.parametrize("fault", ["dropped", "bulk_429"])
def test_owned_activities_land_once_each_owned_by_the_rep_through_lost_answers_and_429s(
        start, simulator, team, fault):  # noqa: F811
    """Six customers (one with an open deal) write to Priya's number and two (one with
    a deal) to an unmapped number (lead_owner fallback) while every write's answer is
    lost, or the bulk budget answers 429 in waves: each lead and deal gets one activity,
    owned by Priya (or its lead's owner), whichever
    path (bulk row, one-row bulk, lookup by key) settled it."""
    phones = [f"9198765432{i:02d}" for i in range(8)]
    leads = [simulator.add_lead(FirstName=f"C{i}", Mobile=phone,
                                **({"OwnerId": team["kiran"]} if i >= 6 else {}))
             for i, phone in enumerate(phones)]
    deals = {0: simulator.add_opportunity(leads[0], "Plan"),
             6: simulator.add_opportunity(leads[6], "Plan")}
    if fault == "dropped":
        simulator.configure(drop_after_commit_rate=1.0)
    else:
        simulator.configure(bulk_rate_limit="1/1s", rate_limit_signal="both")
    bridge = start(owners=OWNERS)
    post(bridge, *[change(PRIYA_NUMBER if i < 6 else SPARE_NUMBER, phone, f"C{i}",
                          f"wamid.f{i}", f"hello {i}") for i, phone in enumerate(phones)])
    bridge.sync_now()
    for i, deal in deals.items():
        on_deal = eventually(lambda deal=deal: simulator.admin(
            "GET", "activities", params={"opportunityId": deal}))
        assert [a["Owner"] for a in on_deal] == [
            "priya@example.com" if i < 6 else "kiran@example.com"], i
    for i, lead in enumerate(leads):
        if i in deals:
            continue
        mine = only(simulator, lead)
        assert mine["Owner"] == ("priya@example.com" if i < 6 else "kiran@example.com"), i
        assert f"hello {i}" in mine["ActivityNote"]
    time.sleep(3)  # nothing posted twice later either
    simulator.configure(drop_after_commit_rate=0.0, bulk_rate_limit=None)
    bridge.sync_now()
    assert [len(simulator.activities(lead)) for lead in leads] == [
        2 if i in deals else 1 for i in range(8)]  # a deal's chat: on the lead and the deal
    assert [len(simulator.admin("GET", "activities", params={"opportunityId": deal}))
            for deal in deals.values()] == [1, 1]


def test_a_lead_owned_by_an_inactive_user_falls_back_to_the_api_user(
        start, simulator, team):  # noqa: F811
    """The lead_owner fallback, for a lead whose owner has left (inactive) or has no
    owner at all: the API user owns the activity (no owner sent), as for a mapped user
    who is inactive, not an owner LeadSquared would refuse or file to a departed rep."""
    gone = simulator.add_user("Old", "old@example.com", active=False)
    meera = simulator.add_lead(FirstName="Meera", Mobile="919988776655", OwnerId=gone)
    ravi = simulator.add_lead(FirstName="Ravi", Mobile="919123456780")
    bridge = start(owners=OWNERS, owner_fallback="lead_owner")
    post(bridge, change(SPARE_NUMBER, "919988776655", "Meera", "wamid.g1", "anyone?"),
         change(SPARE_NUMBER, "919123456780", "Ravi", "wamid.g2", "hello?"))
    bridge.sync_now()
    assert only(simulator, meera)["Owner"] == ADMIN_EMAIL
    assert only(simulator, ravi)["Owner"] == ADMIN_EMAIL


def test_a_very_long_rep_name_is_cut_in_the_field_keeping_the_number(
        start, simulator):  # noqa: F811
    """A custom activity field holds 200 characters (MaxFieldLength 200 seen, reference
    §2 GetActivityDetails): a rep whose name (commas, emoji) runs past it is cut there,
    the business number kept whole."""
    first, last = "Maria José, 🌟 " + "de la Santísima Trinidad " * 6, "Fernández " * 8
    simulator.add_user(first, "maria@example.com", last=last.strip())
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    bridge = start(owners={"+919800000001": "maria@example.com"})
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.l1", "hola"))
    bridge.sync_now()
    mine = only(simulator, asha)
    value = field(mine, FIELD)
    assert mine["Owner"] == "maria@example.com"
    assert len(value) <= 200 and value.endswith("… (+919800000001)"), value
    assert value.startswith("Maria José, 🌟 de la Santísima")
    assert "and Maria José, 🌟 de la Santísima" in mine["ActivityNote"].splitlines()[0]


def test_a_number_mapped_to_a_missing_or_inactive_user_is_named_in_the_status(
        start, simulator, team):  # noqa: F811
    """Was: the status said `no number mapped; other numbers: lead_owner`, hiding that
    two reps' numbers were configured and set aside (their chats owned by the fallback);
    a manager could not tell why Priya's chats were not hers."""
    simulator.add_user("Old", "old@example.com", active=False)
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    bridge = start(owners={"+919800000001": "ghost@example.com",
                           ARJUN_NUMBER[0]: "OLD@example.com"})
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.gh1", "hello?"))
    bridge.sync_now()
    assert only(simulator, asha)["Owner"] == ADMIN_EMAIL  # the lead has no owner
    (sink,) = bridge.status()["sinks"]
    said = sink["details"]["owners"]
    assert "+919800000001 → ghost@example.com is no user of this account" in said
    assert "220000000000002 → OLD@example.com is inactive" in said


# drained only when asked (sync-now reads the users again); a budget and a delivery time
# that the start's and the asked refreshes' calls never run out
CALM = {"rate_limit": "100/1s", "lease": "20s", "deliver_timeout": "15s"}


def _synced_now(bridge) -> None:
    """sync-now, then wait until that drain has ended (its sync recorded): a chat posted
    after is not taken by it, but by the next sync-now's."""
    before = bridge.status()["sinks"][0]["last_sync_at"]
    bridge.sync_now()
    eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"] != before)


def _owners_line(bridge) -> str:
    (sink,) = bridge.status()["sinks"]
    return sink["details"]["owners"]


def test_a_rep_deactivated_mid_run_stops_owning_new_chats_and_status_says_why(
        start, simulator, team):  # noqa: F811
    """adv42: the reps were read once per start, so a rep deactivated (or whose email
    changed) while the bridge ran kept owning every new chat of their number until a
    restart, and the status still mapped the number to them. Now a person's sync-now (or
    REREAD seconds) reads the users again: the number follows owner_fallback, the status
    says why, and every chat lands once."""
    asha = simulator.add_lead(FirstName="Asha", Mobile="919876543210", OwnerId=team["kiran"])
    ravi = simulator.add_lead(FirstName="Ravi", Mobile="919123456780", OwnerId=team["kiran"])
    bridge = start(owners=OWNERS, owner_fallback="lead_owner", sync_interval="1h",
                   **CALM)
    eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])  # started: chats live
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.d1", "price please?"))
    _synced_now(bridge)
    assert only(simulator, asha)["Owner"] == "priya@example.com"

    simulator.admin("POST", "users/change", json={"id": team["priya"], "active": False})
    post(bridge, change(PRIYA_NUMBER, "919123456780", "Ravi", "wamid.d2", "still there?"))
    bridge.sync_now()
    assert only(simulator, ravi)["Owner"] == "kiran@example.com"  # the lead's owner
    line = _owners_line(bridge)
    assert line.count("+919800000001") == 1  # no longer mapped to her, only set aside:
    assert "+919800000001 → priya@example.com is inactive: follows owner_fallback" in line
    assert len(simulator.activities(asha)) == 1


def test_a_number_moved_to_another_rep_mid_run_is_owned_by_the_new_rep(
        start, simulator, team):  # noqa: F811
    """owners: auto, the number moved from Nisha to Arjun in LeadSquared while the bridge
    ran (and Nisha's email changed): the next chat is Arjun's, the status maps it so."""
    nisha = simulator.add_user("Nisha", "nisha@example.com", phones="+91-9800000003")
    meera = simulator.add_lead(FirstName="Meera", Mobile="919988776655")
    ravi = simulator.add_lead(FirstName="Ravi", Mobile="919123456780")
    bridge = start(owners="auto", owner_fallback="api_user", sync_interval="1h",
                   **CALM)
    eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])  # started: chats live
    post(bridge, change(SPARE_NUMBER, "919988776655", "Meera", "wamid.v1", "hi Nisha"))
    _synced_now(bridge)
    assert only(simulator, meera)["Owner"] == "nisha@example.com"

    simulator.admin("POST", "users/change", json={"id": nisha, "phones": "",
                                                  "email": "nisha.iyer@example.com"})
    simulator.admin("POST", "users/change", json={"id": team["arjun"],
                                                  "phones": "+91-9800000003"})
    post(bridge, change(SPARE_NUMBER, "919123456780", "Ravi", "wamid.v2", "hello?"))
    bridge.sync_now()
    assert only(simulator, ravi)["Owner"] == "arjun@example.com"
    assert "+919800000003 → arjun@example.com" in _owners_line(bridge)
    assert len(simulator.activities(meera)) == 1
