"""A sales team's numbers, end to end (issue 26): Meta-shaped webhooks through a real
`bridge run` into the LeadSquared simulator process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests import oneshot
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import eventually, key_of, post, write_config
from tests.processes import BridgeProcess
from tests.whatsapp import payloads as p

ASHA = "919876543210"
REP_A, REP_B = "111000000000001", "222000000000002"  # two business numbers' phone_number_id


@pytest.fixture
def start(tmp_path, simulator):
    """start(**leadsquared settings) -> a running bridge on the simulator."""
    started: list[BridgeProcess] = []

    def run(**settings) -> BridgeProcess:
        port = free_port()
        config = tmp_path / "config.yaml"
        write_config(config, simulator, port, **settings)
        bridge = BridgeProcess(config, port)
        started.append(bridge)
        return bridge.start()

    yield run
    for bridge in started:
        bridge.stop()


def test_a_customer_writing_to_two_numbers_gets_two_activities(start, simulator):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    bridge = start()
    now = int(time.time())
    post(bridge, p.message_change([p.text_message("wamid.a1", ASHA, "hello rep A", ts=now - 30)],
                                  phone_id=REP_A),
         p.message_change([p.text_message("wamid.b1", ASHA, "hello rep B", ts=now - 20)],
                          phone_id=REP_B),
         p.message_change([p.text_message("wamid.a2", ASHA, "again rep A", ts=now - 10)],
                          phone_id=REP_A))
    bridge.sync_now()
    activities = eventually(lambda: len(simulator.activities(lead)) >= 2
                            and simulator.activities(lead))
    time.sleep(1.5)  # one more drain: nothing else is posted
    activities = simulator.activities(lead)
    assert len(activities) == 2
    notes = sorted(a["ActivityNote"] for a in activities)
    a_note = next(n for n in notes if "hello rep A" in n)
    b_note = next(n for n in notes if "hello rep B" in n)
    assert "again rep A" in a_note and "rep B" not in a_note
    assert "rep A" not in b_note
    assert len({key_of(a) for a in activities}) == 2


def _texts(simulator, lead: str) -> list[str]:
    return [line.rsplit(": ", 1)[-1] for a in simulator.activities(lead)
            for line in a["ActivityNote"].splitlines()[1:]]


def test_history_older_than_backfill_days_is_stored_and_posted_only_on_backfill(
        start, simulator, tmp_path):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    bridge = start(backfill_days=3)
    now = int(time.time())
    day = 86400
    post(bridge, p.history_change([p.thread(ASHA, [
        p.text_message("wamid.h1", ASHA, "ten days ago", ts=now - 10 * day),
        p.text_message("wamid.h2", ASHA, "five days ago", ts=now - 5 * day),
        p.text_message("wamid.h3", ASHA, "yesterday", ts=now - day)])], phone_id=REP_A))
    post(bridge, p.message_change([p.text_message("wamid.l1", ASHA, "live now", ts=now)],
                                  phone_id=REP_A))
    bridge.sync_now()
    eventually(lambda: {"yesterday", "live now"} <= set(_texts(simulator, lead)))
    time.sleep(1.5)  # more drains: the old history stays in the bridge
    assert sorted(_texts(simulator, lead)) == ["live now", "yesterday"]
    page = oneshot.get(f"{bridge.url}/conversation", params={"key": "+" + ASHA}, timeout=10).text
    assert "history older than the sink&#39;s backfill_days (3 days)" in page \
        or "history older than the sink's backfill_days (3 days)" in page
    assert "ten days ago" in page  # stored

    def backfill(days: int) -> str:
        done = subprocess.run([sys.executable, "-m", "bridge", "backfill", "-c",
                               str(tmp_path / "config.yaml"), "--sink", "leadsquared",
                               "--days", str(days)], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    backfill(7)  # reaches five days back, not ten
    eventually(lambda: "five days ago" in _texts(simulator, lead))
    time.sleep(1.5)
    assert sorted(_texts(simulator, lead)) == ["five days ago", "live now", "yesterday"]
    backfill(11)
    eventually(lambda: "ten days ago" in _texts(simulator, lead))
    time.sleep(1.5)
    assert sorted(_texts(simulator, lead)) == [
        "five days ago", "live now", "ten days ago", "yesterday"]  # each once


# -- identity: business-scoped ids never merge; a change links them -------------------------

ID_FIELD = "mx_WhatsApp_User_ID"
Y_ID, X_ID, Y_NEW_ID = "IN.1000000000000000001", "IN.2000000000000000002", "IN.3000000003"


def _notes(simulator, lead: str) -> str:
    return "\n".join(a["ActivityNote"] for a in simulator.activities(lead))


def _keys(bridge: BridgeProcess) -> list[str]:
    return sorted(c["key"] for c in bridge.status()["sinks"][0]["conversations"])


def test_a_recycled_number_starts_a_new_person_and_never_reaches_the_old_lead(start, simulator):
    y_lead = simulator.add_lead(FirstName="Yash", Mobile="+91-9876543210",
                                **{ID_FIELD: Y_ID})
    bridge = start(create_leads=True, user_id_field=ID_FIELD)
    now = int(time.time())
    post(bridge, p.message_change([p.text_message("wamid.y1", ASHA, "I am Yash", ts=now - 60)],
                                  contacts=[p.contact(ASHA, "Yash", user_id=Y_ID)]))
    bridge.sync_now()
    eventually(lambda: "I am Yash" in _notes(simulator, y_lead))
    # months later the operator gives Yash's old number to Xena: another BSUID
    post(bridge, p.message_change([p.text_message("wamid.x1", ASHA, "I am Xena", ts=now)],
                                  contacts=[p.contact(ASHA, "Xena", user_id=X_ID)]))
    bridge.sync_now()
    leads = eventually(lambda: len(simulator.admin("GET", "leads")) == 2
                       and simulator.admin("GET", "leads"))
    x_lead = next(lead for lead in leads if lead["ProspectID"] != y_lead)
    eventually(lambda: "I am Xena" in _notes(simulator, x_lead["ProspectID"]))
    assert x_lead[ID_FIELD] == X_ID
    assert "Xena" not in _notes(simulator, y_lead)
    assert _keys(bridge) == sorted(["+" + ASHA, X_ID])
    # the number is Xena's now: a later message with the number alone is hers
    post(bridge, p.message_change([p.text_message("wamid.x2", ASHA, "Xena again", ts=now + 1)],
                                  contacts=[p.contact(ASHA, "Xena")]))
    bridge.sync_now()
    eventually(lambda: "Xena again" in _notes(simulator, x_lead["ProspectID"]))
    assert "Xena" not in _notes(simulator, y_lead)


def test_the_new_holder_of_a_recycled_number_writes_again_and_stays_on_her_own_lead(
        start, simulator):
    y_lead = simulator.add_lead(FirstName="Yash", Mobile="+91-9876543210",
                                **{ID_FIELD: Y_ID})
    bridge = start(create_leads=True, user_id_field=ID_FIELD)
    now = int(time.time())
    post(bridge, p.message_change([p.text_message("wamid.y1", ASHA, "I am Yash", ts=now - 60)],
                                  contacts=[p.contact(ASHA, "Yash", user_id=Y_ID)]))
    bridge.sync_now()
    eventually(lambda: "I am Yash" in _notes(simulator, y_lead))
    for i, text in enumerate(("I am Xena", "Xena again")):  # each webhook: number + BSUID
        post(bridge, p.message_change([p.text_message(f"wamid.x{i}", ASHA, text, ts=now + i)],
                                      contacts=[p.contact(ASHA, "Xena", user_id=X_ID)]))
        bridge.sync_now()
        leads = eventually(lambda: len(simulator.admin("GET", "leads")) == 2
                           and simulator.admin("GET", "leads"))
        x_lead = next(lead["ProspectID"] for lead in leads if lead["ProspectID"] != y_lead)
        eventually(lambda t=text: t in _notes(simulator, x_lead))  # noqa: B023
    time.sleep(1.5)  # one more drain
    assert "Xena" not in _notes(simulator, y_lead)
    assert len(simulator.admin("GET", "leads")) == 2
    assert _keys(bridge) == sorted(["+" + ASHA, X_ID])


def test_user_changed_user_id_links_the_new_id_even_when_from_user_id_holds_the_old(
        start, simulator):
    y_lead = simulator.add_lead(FirstName="Yash", Mobile="+91-9876543210")
    bridge = start(create_leads=True, user_id_field=ID_FIELD)
    now = int(time.time())
    post(bridge, p.message_change([p.text_message("wamid.c1", ASHA, "before", ts=now - 60)],
                                  contacts=[p.contact(ASHA, "Yash", user_id=Y_ID)]))
    change = p.base("wamid.c2", ASHA, "system", ts=now - 30, from_user_id=Y_ID, system={
        "body": "User changed their user id", "type": "user_changed_user_id",
        "user_id": Y_NEW_ID, "previous_user_id": Y_ID})
    post(bridge, p.message_change([change], contacts=[]))
    post(bridge, p.message_change([p.bsuid_text_message("wamid.c3", Y_NEW_ID, "id only",
                                                        timestamp=str(now - 10))],
                                  contacts=[p.contact(None, "Yash", user_id=Y_NEW_ID)]))
    post(bridge, p.message_change([p.text_message("wamid.c4", ASHA, "after", ts=now)],
                                  contacts=[p.contact(ASHA, "Yash", user_id=Y_NEW_ID)]))
    bridge.sync_now()
    eventually(lambda: all(t in _notes(simulator, y_lead) for t in ("before", "id only",
                                                                    "after")))
    assert len(simulator.admin("GET", "leads")) == 1 and _keys(bridge) == ["+" + ASHA]
