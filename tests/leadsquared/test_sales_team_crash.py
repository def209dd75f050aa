"""A sales team through SIGKILLs: a rep's long chat split into several notes, the bridge
killed while the notes are in flight (the account commits them, the bridge never reads
the answers), then restarted with the number given to another rep. The retry finds the
notes by their keys; it must cover each message exactly once, whatever the new rep's
name does to the lines' lengths (and so to where a note would be cut now)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from tests.backends import BACKENDS
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import _drained, post, write_config
from tests.leadsquared.test_owners_end_to_end import PRIYA_NUMBER, change, echo
from tests.processes import BridgeProcess, buffer_section, eventually

ASHA = "919876543210"
WRITES = ("Add/ByLeadId", "ProspectActivity.svc/Create")


def priya_then(tmp_path, simulator, renamed: str, bulk: bool, buffer: dict | None = None,
               deals: bool = False):
    """Asha's lead; a bridge (started, posting on the lead's deals too when `deals`) whose
    business number is Priya's, each write held by the account (it lands after a kill);
    and the config change giving the number to the user `renamed`. Returns (lead, bridge,
    that change)."""
    simulator.add_user("Priya", "priya@example.com", last="Rao")
    simulator.add_user(renamed, "next@example.com")
    lead = simulator.add_lead(FirstName="Asha", Mobile=ASHA)
    port = free_port()
    config = tmp_path / "config.yaml"
    settings = {"opportunities": deals, "note_limit": 400, "bulk": bulk}

    def owned_by(email: str) -> None:
        write_config(config, simulator, port, buffer, owners={"+919800000001": email},
                     **settings)
    owned_by("priya@example.com")
    simulator.configure(write_hold=1.5)
    return lead, BridgeProcess(config, port).start(), lambda: owned_by("next@example.com")


def killed_while_held(bridge, simulator, lead, meanwhile=lambda: None, restart=lambda: None):
    """Drain with the account holding each write (it lands after the kill), SIGKILL the
    bridge once a write went out (sent, not answered, not acked), let the held writes
    commit, then start it again (after `restart`: a new config) and drain; the sink's
    status. `meanwhile`: what arrives after the write went out, before the kill. `lead`:
    the lead a held write lands on (None: any lead, when the first write out may be any
    customer's, as the bulk call takes whichever chats the claim gave it first)."""
    bridge.sync_now()
    # held: its whole body arrived (a kill once the call was only recorded, on its
    # headers, cut the body off on a starved CPU: that write never committed)
    eventually(lambda: [c for c in simulator.admin("GET", "calls")
                        if c["path"].endswith(WRITES) and c["held"]], timeout=60)
    meanwhile()
    bridge.kill()
    simulator.configure(write_hold=0.0)
    eventually(lambda: simulator.activities(lead), timeout=30)
    time.sleep(2)  # every held write has committed
    restart()
    bridge.start()
    bridge.sync_now()
    (sink,) = eventually(lambda: _drained(bridge), timeout=90)
    return sink


@pytest.fixture
def buffer(request, tmp_path):
    with buffer_section(request.param, tmp_path) as section:
        yield section


@pytest.mark.parametrize("buffer", BACKENDS, indirect=True)
@pytest.mark.parametrize("bulk", [True, False])
@pytest.mark.parametrize("renamed", ["Li", "Venkatanarasimha Raghavendra Subramanian"])
def test_a_killed_drain_retried_under_another_rep_covers_each_message_once(
        tmp_path, module_simulator, buffer, bulk, renamed):
    """Shorter lines now: the landed first note would take in the next messages and
    mark them delivered (lost); longer: its last messages would start a new note (posted
    twice). Found by killing `bridge run` with the bulk call (or single post) held."""
    simulator = module_simulator.fresh()
    lead, bridge, hand_over = priya_then(tmp_path, simulator, renamed, bulk, buffer)
    texts = [f"m-{n:02d}" for n in range(16)]
    try:
        changes = []
        for n, text in enumerate(texts):  # the customer and the rep, turn about
            made = (change(PRIYA_NUMBER, ASHA, "Asha", f"wamid.c{n}", text) if n % 2 == 0
                    else echo(PRIYA_NUMBER, ASHA, f"wamid.c{n}", text))
            stamp = int(time.time()) - 100 + n
            for item in made["value"].get("messages") or made["value"]["message_echoes"]:
                item["timestamp"] = str(stamp)
            changes.append(made)
        post(bridge, *changes)
        sink = killed_while_held(bridge, simulator, lead, restart=hand_over)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    seen = Counter(t for a in simulator.activities(lead)
                   for t in re.findall(r"m-\d{2}", a["ActivityNote"]))
    assert seen == Counter(list(texts))  # each message once: none twice, none lost


def test_a_killed_drain_retried_after_the_customer_renamed_covers_each_message_once(
        tmp_path, module_simulator):
    """The same through the contact's name (in every incoming line): the customer's new
    WhatsApp profile name arrives while the first note's post is in flight."""
    simulator = module_simulator.fresh()
    lead = simulator.add_lead(FirstName="Asha", Mobile=ASHA)
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, opportunities=False, note_limit=400, bulk=False)
    simulator.configure(write_hold=1.5)
    bridge = BridgeProcess(config, port).start()
    texts = [f"m-{n:02d}" for n in range(12)]
    try:
        post(bridge, *[change(PRIYA_NUMBER, ASHA, "Asha Venkataraman-Krishnamurthy",
                              f"wamid.n{n}", text) for n, text in enumerate(texts)])
        killed_while_held(bridge, simulator, lead, meanwhile=lambda: post(  # a new name
            bridge, change(PRIYA_NUMBER, ASHA, "A", "wamid.n99", "m-99")))
    finally:
        bridge.stop()
    seen = Counter(t for a in simulator.activities(lead)
                   for t in re.findall(r"m-\d{2}", a["ActivityNote"]))
    assert seen == Counter([*texts, "m-99"])


@pytest.mark.parametrize("bulk", [False, True])
@pytest.mark.parametrize("renamed", ["Li", "Venkatanarasimha Raghavendra Subramanian"])
def test_a_long_message_killed_in_flight_and_retried_under_another_rep_is_posted_exactly_once(
        tmp_path, module_simulator, renamed, bulk):
    """A rep's message longer than a note goes out in pieces; the bridge is killed while
    the first one's post is held (it lands), then restarted with the number given to a
    rep with a shorter or longer name (in the line's label). Was: the retry cut the line
    again at offsets that counted the label, so where the name's length changed the next
    piece began elsewhere: characters lost at the cut (`…0037,0` then `9,0040…`) or
    posted twice. Found by an adversary's sales-team run. In bulk every piece goes in one
    held call: the retry finds them all by their keys and posts none again."""
    simulator = module_simulator.fresh()
    lead, bridge, hand_over = priya_then(tmp_path, simulator, renamed, bulk)
    body = "".join(f"{n:04d}," for n in range(150))  # 750 characters, each token unique
    try:
        post(bridge, echo(PRIYA_NUMBER, ASHA, "wamid.long", body))
        sink = killed_while_held(bridge, simulator, lead, restart=hand_over)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    first, *rest = [a["ActivityNote"].split("\n", 1)[1] for a in simulator.activities(lead)]
    assert rest and all(piece.startswith("… ") for piece in rest)
    assert re.sub(r"^\[[^]]*\] ➡️ [^:]*: ", "", first) + "".join(
        piece.removeprefix("… ") for piece in rest) == body  # every character once


def test_a_long_message_killed_in_flight_and_retried_after_the_customer_renamed_is_posted_exactly_once(  # noqa: E501
        tmp_path, module_simulator):
    """The same through the contact's name (the label of every incoming line): the
    customer's new WhatsApp profile name arrives while the first piece's post is held."""
    simulator = module_simulator.fresh()
    lead = simulator.add_lead(FirstName="Asha", Mobile=ASHA)
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, opportunities=False, note_limit=400, bulk=False)
    simulator.configure(write_hold=1.5)
    bridge = BridgeProcess(config, port).start()
    body = "".join(f"{n:04d}," for n in range(150))
    try:
        post(bridge, change(PRIYA_NUMBER, ASHA, "Asha Venkataraman-Krishnamurthy",
                            "wamid.long", body))
        sink = killed_while_held(bridge, simulator, lead, meanwhile=lambda: post(  # new name
            bridge, change(PRIYA_NUMBER, ASHA, "A", "wamid.n99", "m-99")))
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    notes = [a["ActivityNote"].split("\n", 1) for a in simulator.activities(lead)]
    first, *rest = [text for header, text in notes if "continued across notes" in header]
    assert rest and all(piece.startswith("… ") for piece in rest)
    assert re.sub(r"^\[[^]]*\] ⬅️ [^:]*: ", "", first) + "".join(
        piece.removeprefix("… ") for piece in rest) == body
    assert sum("m-99" in text for _, text in notes) == 1


@pytest.mark.parametrize("buffer", BACKENDS, indirect=True)
def test_two_reps_chats_killed_in_flight_land_once_each_owned_by_its_rep(
        tmp_path, module_simulator, buffer):
    """Four customers (two writing to both reps, one with an open deal), the reps
    answering from the Business app (echoes), `bridge run` SIGKILLed while the account
    holds the first writes: after a restart every message is on its lead once (and on
    the deal once), in the activity of its rep's number owned by that rep, the leads'
    owner untouched, and the status says when each number last synced."""
    from tests.leadsquared.test_owners_end_to_end import ARJUN_NUMBER, OWNERS

    simulator = module_simulator.fresh()
    reps = {PRIYA_NUMBER[0]: "priya@example.com", ARJUN_NUMBER[0]: "arjun@example.com"}
    simulator.add_user("Priya", "priya@example.com", last="Rao")
    simulator.add_user("Arjun", "arjun@example.com", last="Mehta")
    kiran = simulator.add_user("Kiran", "kiran@example.com")
    phones = [f"9198765432{i:02d}" for i in range(4)]
    leads = [simulator.add_lead(FirstName=f"C{i}", Mobile=phone, OwnerId=kiran)
             for i, phone in enumerate(phones)]
    deal = simulator.add_opportunity(leads[2], "Plan")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, buffer, owners=OWNERS, note_limit=400)
    simulator.configure(write_hold=1.5)
    bridge = BridgeProcess(config, port).start()
    changes, texts = [], {}  # text -> (customer, phone_number_id)
    for i, phone in enumerate(phones):
        for n in range(6):
            for number in ([PRIYA_NUMBER, ARJUN_NUMBER] if i >= 2 else
                           [(PRIYA_NUMBER, ARJUN_NUMBER)[i]]):
                text = f"t{i}-{number[0][:2]}-{n:02d}"
                made = (change(number, phone, f"C{i}", f"wamid.{text}", text) if n % 2 == 0
                        else echo(number, phone, f"wamid.{text}", text))
                for item in made["value"].get("messages") or made["value"]["message_echoes"]:
                    item["timestamp"] = str(int(time.time()) - 100 + len(changes))
                changes.append(made)
                texts[text] = (i, number[0])
    try:
        post(bridge, *changes)
        sink = killed_while_held(bridge, simulator, None)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    seen, on_deal = Counter(), Counter()
    for i, lead in enumerate(leads):
        for activity in simulator.activities(lead):
            for text in re.findall(r"t\d-\d\d-\d\d", activity["ActivityNote"]):
                assert activity["Owner"] == reps[texts[text][1]], text
                assert texts[text][0] == i, text
                (on_deal if activity.get("RelatedOpportunityId") == deal else seen)[text] += 1
    assert seen == Counter(list(texts))  # each message once on its lead: none twice, none lost
    assert on_deal == Counter(t for t, (i, _) in texts.items() if i == 2)
    assert {lead["OwnerId"] for lead in simulator.admin("GET", "leads")} == {kiran}
    numbers = {row["account"]: row for row in sink["numbers"]}
    assert all(numbers[n]["last_synced_at"] and numbers[n]["open"] == 0 for n in reps)


@pytest.mark.parametrize("buffer", BACKENDS, indirect=True)
def test_a_chat_killed_before_its_first_outcomes_keeps_its_first_rep_on_the_deal(
        tmp_path, module_simulator, buffer):
    """`bridge run` SIGKILLed while the lead's activity is in flight (the account commits
    it, owned by Priya), before the outcomes, and so the rep pinned with them, were
    committed; restarted with Priya's number given to another rep. Was: the retry found
    the lead's note by its key, but pinned today's rep, so the same chat on the lead's
    deal was owned by the other rep (one chat, two owners). The pin is now committed
    before the first post."""
    simulator = module_simulator.fresh()
    lead, bridge, hand_over = priya_then(tmp_path, simulator, "Li", False, buffer, deals=True)
    deal = simulator.add_opportunity(lead, "Plan")
    try:
        post(bridge, change(PRIYA_NUMBER, ASHA, "Asha", "wamid.o1", "o-01"),
             echo(PRIYA_NUMBER, ASHA, "wamid.o2", "o-02"))
        sink = killed_while_held(bridge, simulator, lead, restart=hand_over)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    posted = sorted((a.get("RelatedOpportunityId") or "", a["Owner"])
                    for a in simulator.activities(lead) if "o-01" in a["ActivityNote"])
    assert posted == sorted([("", "priya@example.com"), (deal, "priya@example.com")])
