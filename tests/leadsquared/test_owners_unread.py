"""Owners against the users API's unusual answers: a Users.Get that fails at start (owners:
auto), and an owner email configured in another case than the account spells it."""

from __future__ import annotations

from bridge import Batch, Conversation
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import settled, sink_for

PRIYA = "+919800000001"  # Priya's business number, held on her user record


def to_priya(n: int):
    return message(n, "+919876543210", source="whatsapp", text=f"msg-{n:05d}",
                   account="110000000000001", extra={"business_number": PRIYA})


async def test_owners_auto_waits_for_the_users_read_rather_than_misfile_the_reps_chats(
        sim, buffer):
    """Users.Get answers a gateway's 503 page at start: no chat is filed under the lead's
    owner meanwhile; once it answers, Priya's chat is hers."""
    sim.add_user("Priya", "priya@example.com", last="Rao", phones="+91-9800000001")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    sim.break_endpoint("Users.Get", 503)
    await buffer.append([to_priya(1)])

    def users_reads() -> int:
        return sum(c.path.endswith("/Users.Get") for c in sim.calls)

    async with running(buffer, [sink_for(sim, owners="auto")]):
        # the start is tried again (its reads retried each time), or a chat was filed
        await wait_until(lambda: users_reads() >= 10 or sim.activities(lead), timeout=30)
        assert sim.activities(lead) == []
        sim.mend_endpoint("Users.Get")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [a["Owner"] for a in sim.activities(lead)] == ["priya@example.com"]


async def test_an_owner_email_configured_in_another_case_is_sent_as_the_account_spells_it(
        sim):
    sim.add_user("Priya", "priya@example.com", last="Rao")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    batch = Batch(key="b1", sink="leadsquared",
                  conversation=Conversation(key="+919876543210", contact_name="Asha"),
                  messages=[to_priya(1)])
    sink = sink_for(sim, bulk=False, owners={PRIYA: "Priya@Example.COM"})
    await sink.start()
    try:
        (outcome,) = await sink.deliver(batch)
    finally:
        await sink.close()
    assert outcome.kind == "delivered"
    sent = [item.get("ActivityOwnerEmail") for c in sim.calls if "Bulk" in c.path
            for item in c.body]
    assert sent == ["priya@example.com"]
    assert [a["Owner"] for a in sim.activities(lead)] == ["priya@example.com"]
