"""The delivery steps one by one (resolve, targets, post, attach) and the readers of
answers whose shape the docs leave open; against the real simulator where a call is made."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge import Batch, Conversation, Outcome
from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.api import Upload, bulk_rows, read_upload
from plugins.leadsquared.bulk import read_row
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.resolve import Lead
from plugins.leadsquared.sink import LeadSquaredSink
from tests.leadsquared.test_sink import NUMBER, chat, field, sink_for

# --- readers of open answer shapes (pure) -------------------------------------------------


def test_bulk_rows_read_each_shape_in_item_order():
    assert bulk_rows({"Response": [{"ProspectActivityId": "a"}, {"ProspectActivityId": "b"}]},
                     2) == [{"ProspectActivityId": "a"}, {"ProspectActivityId": "b"}]
    assert bulk_rows({"Response": [{"ProspectActivityId": None}]}, 1) == [
        {"ProspectActivityId": None}]
    flagged = [{"RowNumber": 2, "ProspectActivityId": "b"},
               {"RowNumber": 1, "ProspectActivityId": "a"}]
    assert [r["ProspectActivityId"] for r in bulk_rows({"Response": flagged}, 2)] == ["a", "b"]
    assert bulk_rows([{"ProspectActivityId": "a"}], 1) == [{"ProspectActivityId": "a"}]
    assert bulk_rows({"Status": "Success", "Message": {"Count": 2}}, 2) == [
        {"ActivityCreated": True}] * 2


@pytest.mark.parametrize("answer", [
    {"Response": [{"ProspectActivityId": "a"}]},  # fewer rows than items, no numbers
    {"Response": [{"RowNumber": 1, "ProspectActivityId": "a"}]},  # row 2 missing
    {"Status": "Success"}, "OK", None, {"Response": ["a", "b"]}])
def test_a_bulk_answer_that_cannot_be_matched_to_the_items_leaves_each_row_unknown(answer):
    rows = bulk_rows(answer, 2)
    assert len(rows) == 2
    for row in rows:
        with pytest.raises(LeadSquaredError) as caught:
            read_row(row)
        assert caught.value.kind == "unknown_outcome" and not caught.value.not_created


def test_a_short_count_marks_every_row_as_maybe_not_created():
    for row in bulk_rows({"Status": "Success", "Message": {"Count": 1}}, 3):
        with pytest.raises(LeadSquaredError) as caught:
            read_row(row)
        assert caught.value.not_created and "1 of 3" in caught.value.message


@pytest.mark.parametrize(("row", "not_created"), [
    ({"ProspectActivityId": None}, True),  # the documented shape, refused
    ({"RowNumber": 1, "ActivityCreated": False, "ExceptionMessage": "bad"}, True),
    ({"ProspectActivityId": "a", "ExceptionMessage": "odd"}, True),  # an id and an error
    ({"ProspectActivityId": "a", "ActivityCreated": False}, True),
    ({"ActivityCreated": True}, False),  # created, says the answer, but no id
    ({}, False)])
def test_a_row_without_an_id_and_no_error_is_never_a_refusal(row, not_created):
    with pytest.raises(LeadSquaredError) as caught:
        read_row(row)
    assert caught.value.kind == "unknown_outcome"  # settled by the key check
    assert caught.value.not_created is not_created


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_unnumbered_rows_with_a_refused_one_are_never_read_by_position(order):
    """Nothing documents that unnumbered rows come in item order: read by position, a
    refused item could take a created one's id and be recorded as delivered."""
    made = [{"ProspectActivityId": "a"}, {"ProspectActivityId": None},
            {"ProspectActivityId": "c"}]
    for row in bulk_rows({"Response": [made[i] for i in order]}, 3):
        with pytest.raises(LeadSquaredError) as caught:
            read_row(row)
        assert caught.value.kind == "unknown_outcome" and caught.value.not_created


@pytest.mark.parametrize(("flag", "created"), [
    ("false", False), ("False", False), (0, False), ("0", False),
    ("true", True), (1, True), (True, True)])
def test_a_row_flag_written_as_a_string_or_number_is_read_as_meant(flag, created):
    row = {"RowNumber": "1", "ProspectActivityId": "a", "ActivityCreated": flag}
    (read,) = bulk_rows({"Response": [row]}, 1)  # a RowNumber as text is numbered too
    if created:
        assert read_row(read) == "a"
        return
    with pytest.raises(LeadSquaredError) as caught:
        read_row(read)
    assert caught.value.kind == "unknown_outcome" and caught.value.not_created


def test_a_row_with_an_id_and_no_error_is_created():
    assert read_row({"ProspectActivityId": "a"}) == "a"
    assert read_row({"RowNumber": 1, "ActivityCreated": True, "ProspectActivityId": "a",
                     "ExceptionMessage": None}) == "a"


def test_the_upload_answer_gives_the_s3_url_never_one_of_our_making():
    url = "https://lsq.s3.amazonaws.com/org/photo.jpg"
    assert read_upload({"uploadedFile": "photo.jpg", "s3FilePath": url}) == Upload(
        url, "photo.jpg")
    assert read_upload({"uploadedFile": url}) == Upload(url, url)  # the name is the URL
    assert read_upload({"uploadedFile": "photo.jpg"}) == Upload(None, "photo.jpg")
    assert read_upload({"uploadedFile": "p.jpg", "s3FilePath": "org/p.jpg"}).url is None
    with pytest.raises(LeadSquaredError) as caught:
        read_upload({"Status": "Success"})
    assert caught.value.kind == "unknown_outcome"


# --- the steps against the simulator ------------------------------------------------------


@pytest.fixture
async def started(sim) -> AsyncIterator[LeadSquaredSink]:
    sink = sink_for(sim, opportunities={"status": "any"})
    await sink.start()
    yield sink
    await sink.close()


def batch(*numbers: int, attempt: int = 1, ledger: dict | None = None) -> Batch:
    return Batch(key="b1", sink="leadsquared", attempt=attempt, ledger=dict(ledger or {}),
                 conversation=Conversation(key=NUMBER, contact_name="Asha"),
                 messages=[chat(n) for n in numbers])


async def test_resolve_holds_a_number_without_a_lead_and_keeps_a_cached_one(sim, started):
    people = started.steps.people
    held = await people.lead_for(batch(1))
    assert isinstance(held, Outcome) and held.kind == "held"
    cached = batch(1)
    cached.record_id = "some-lead"
    assert await people.lead_for(cached) == Lead("some-lead", cached=True)
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    assert await people.lead_for(batch(1)) == Lead(lead, cached=False)


async def test_targets_read_the_crm_keys_only_when_an_earlier_try_may_have_posted(
        sim, started):
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    deal = sim.add_opportunity(lead, "Deal", status="Won")
    first = await started.steps.targets.plan(batch(1), Lead(lead, False))
    assert first.opportunities == [deal] and first.existing == {}
    key = first.parts[0].key
    posted = sim.store.post_activity({"RelatedProspectId": lead,
                                      "ActivityEvent": started.account.event,
                                      "Fields": [{"SchemaName": FIELDS["key"], "Value": key}]},
                                     2000).id
    again = await started.steps.targets.plan(batch(1, attempt=2), Lead(lead, False))
    assert again.existing == {key: posted}
    sim.break_endpoint("GetOpportunitiesOfLead")
    started.steps.targets.opportunities.forget(lead)
    unread = await started.steps.targets.plan(batch(1), Lead(lead, False))
    assert unread.opportunities == [] and unread.unread is not None


async def test_post_settles_an_unreadable_bulk_row_by_its_key(sim, started):
    """A row the documented answer shows without an id ("not created") whose key is absent
    is posted again at once, singly, and its exact answer counts; rows a count answer says
    were created, without ids, are found by their keys (the attach step of a file without
    an S3 URL: test_guesses.py's photo test under upload_answer=name_only)."""
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    poster, targets = started.steps.poster, started.steps.targets
    sim.configure(note_limit=50)  # the bulk row is refused: null id
    plan = await targets.plan(b := batch(1), Lead(lead, False))
    results = await poster.on_lead(b, plan)
    creates = [c for c in sim.calls if c.path.endswith("ProspectActivity.svc/Create")]
    assert len(creates) == 1 and results[plan.parts[0].key].kind == "rejected"  # exact
    sim.configure(note_limit=2000, bulk_answer="count")
    plan = await targets.plan(b := batch(2), Lead(lead, False))
    assert await poster.on_lead(b, plan) == {}  # all created: the key check found the id
    (landed,) = sim.activities(lead)
    assert b.ledger == {plan.parts[0].key: landed["Id"]}
    assert field(landed, FIELDS["key"]) == plan.parts[0].key


async def test_the_rows_of_one_bulk_call_share_one_key_check_per_lead(sim):
    """Three notes of one window in one bulk call, answered without ids: one read of the
    lead's keys settles all three (not one read a row)."""
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    sim.configure(bulk_answer="count")
    sink = sink_for(sim, opportunities=False, note_limit=200)
    await sink.start()
    try:
        b = batch(*range(1, 13))  # twelve lines: several notes of at most 200 characters
        plan = await sink.steps.targets.plan(b, Lead(lead, False))
        assert len(plan.parts) >= 3
        assert await sink.steps.poster.on_lead(b, plan) == {}
        assert sink.client.calls["lead_activities"] == 1
    finally:
        await sink.close()
    assert len(sim.activities(lead)) == len(plan.parts) == len(b.ledger)


def test_a_message_in_two_pieces_waits_aside_only_when_both_pieces_are_on_the_lead():
    """A long message is posted in pieces, each a part: when one piece's post on the lead
    waits and the other's deal copy waits, the message is not aside (a later batch of its
    chat must not pass it) and not transient unless both waits are."""
    from plugins.leadsquared.outcomes import per_message
    from plugins.leadsquared.transcript import Part

    message = chat(1)
    batch = Batch(key="k", sink="leadsquared", conversation=Conversation(NUMBER),
                  messages=[message])
    deal = Outcome.retry("opportunity o: 503", transient=True, aside=True)
    lead = Outcome.retry("lead: refused owner, users unread")
    parts = [Part("k:a", messages=[message]), Part("k:b", messages=[message])]
    (both,) = per_message(batch, parts, {"k:a": deal, "k:b": lead})
    assert both.kind == "retry" and not both.aside and not both.transient
    (aside,) = per_message(batch, parts, {"k:a": deal, "k:b": deal})
    assert aside.aside and aside.transient
