"""Phone variants through every lookup path, end to end (issue 26 point 4): a lead stored
under one form of a number, WhatsApp sending the other (Brazil with/without the ninth
digit, Argentina with/without the 9 after 54, Mexico with/without the 1 after 52), lands
on that lead through a real `bridge run` and the simulator process, and makes no second
lead. The paths: the single lookup (lead_directory: off), the lead directory, and the
directory's remote fallback (a lead created after the directory was filled)."""

from __future__ import annotations

import time

import pytest

from tests.leadsquared.test_end_to_end import eventually, post
from tests.leadsquared.test_identity_end_to_end import notes, start  # noqa: F401
from tests.processes import BridgeProcess
from tests.whatsapp import payloads as p

# (stored in LeadSquared, as WhatsApp sends it). Stored as digits with the country code:
# the form the simulator's exact phone lookup (its default reading) can match.
VARIANTS = {
    "brazil_whatsapp_without_ninth_digit": ("5511987654321", "551187654321"),
    "brazil_whatsapp_with_ninth_digit": ("551187654321", "5511987654321"),
    "argentina_whatsapp_with_nine": ("541123456789", "5491123456789"),
    "argentina_whatsapp_without_nine": ("5491123456789", "541123456789"),
    "mexico_whatsapp_without_one": ("5215512345678", "525512345678"),
    "mexico_whatsapp_with_one": ("525512345678", "5215512345678"),
}
PATHS = {
    "single_lookup": {"lead_directory": "off", "create_leads": True},
    "directory": {"lead_directory": "on", "create_leads": True},
    "directory_fallback": {"lead_directory": "on"},  # the lead comes after the fill
}


def filled(bridge: BridgeProcess) -> BridgeProcess:
    """The bridge once its lead directory is filled: a lead added later is one only the
    remote fallback can find (added during the fill, the fill could read one lead of two)."""
    eventually(lambda: (bridge.status()["sinks"][0].get("directory") or {}).get("filled_at"))
    return bridge


def _params() -> list:
    out = []
    for name, variant in VARIANTS.items():
        stored, sent = variant.values[:2] if hasattr(variant, "values") else variant
        marks = variant.marks if hasattr(variant, "marks") else ()
        out.extend(pytest.param(stored, sent, path, marks=marks, id=f"{name}-{path}")
                   for path in PATHS)
    return out


@pytest.mark.parametrize(("stored", "sent", "path"), _params())
def test_the_other_form_of_the_number_lands_on_the_stored_lead(start, simulator,  # noqa: F811
                                                               stored, sent, path):
    before = path != "directory_fallback"
    lead = simulator.add_lead(FirstName="Lucia", Mobile=stored) if before else None
    bridge = start(**PATHS[path])
    if not before:
        filled(bridge)
        lead = simulator.add_lead(FirstName="Lucia", Mobile=stored)
    post(bridge, p.message_change([p.text_message("wamid.v1", sent, "hola, soy yo",
                                                  ts=int(time.time()))]))
    bridge.sync_now()
    eventually(lambda: "hola, soy yo" in notes(simulator, lead))
    leads = simulator.admin("GET", "leads")
    assert [x["ProspectID"] for x in leads] == [lead], "a second lead was made"
    assert len(simulator.activities()) == 1
    if path == "directory":  # found in the directory itself: no remote lookup at all
        lookups = [c["path"] for c in simulator.admin("GET", "calls")
                   if c["path"].endswith(("RetrieveLeadByPhoneNumber", "Leads.GetByQuickSearch"))]
        assert lookups == []


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("sent", "other"), [("551187654321", "5511987654321"),
                                             ("5511987654321", "551187654321"),
                                             ("5491123456789", "541123456789")],
                         ids=["brazil_without_ninth", "brazil_with_ninth", "argentina_nine"])
def test_when_both_forms_are_leads_the_exact_form_wins(start, simulator,  # noqa: F811
                                                       sent, other, path):
    """Two leads, one under each form of the number: the chat lands on the lead holding
    the form WhatsApp sent, whichever was made first, on every lookup path."""
    before = path != "directory_fallback"
    made = []
    if before:
        made = [simulator.add_lead(FirstName="Other", Mobile=other),
                simulator.add_lead(FirstName="Exact", Mobile=sent)]
    bridge = start(**PATHS[path])
    if not before:
        filled(bridge)
        made = [simulator.add_lead(FirstName="Other", Mobile=other),
                simulator.add_lead(FirstName="Exact", Mobile=sent)]
    post(bridge, p.message_change([p.text_message("wamid.w1", sent, "which one?",
                                                  ts=int(time.time()))]))
    bridge.sync_now()
    eventually(lambda: "which one?" in notes(simulator))
    assert "which one?" in notes(simulator, made[1]), "filed on the other form's lead"
    assert len(simulator.activities()) == 1
