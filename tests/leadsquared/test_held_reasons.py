"""The LeadSquared sink's held reasons read "<cause> (<fix>)", so the status page's held
chats name the cause under "Why" and the fix under "Next step" (bridge.attention). The
username user's and the recycled number's reasons put their fix after a colon, and the
page showed the whole reason as the cause and "it is checked again at every sync." as the
step, in lower case, with no fix."""

from __future__ import annotations

import pytest

from bridge.attention import held_advice
from bridge.model import Conversation
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.people import NO_FIELD, RECYCLED, not_found

CHECKED = "; it is checked again at every sync."


@pytest.mark.parametrize("reason, fix", [
    (NO_FIELD, "Set plugins.leadsquared.user_id_field to a lead field"),
    (RECYCLED, "Set plugins.leadsquared.user_id_field to find leads by BSUID, or create_leads"),
], ids=["username user", "recycled number"])
def test_a_held_reason_with_a_setting_to_change_names_it_as_the_next_step(reason, fix):
    cause, step = held_advice(reason)
    assert step.startswith(fix) and step.endswith(CHECKED), step
    assert "user_id_field" not in cause, cause


def test_every_not_found_reason_splits_into_a_cause_and_a_capitalised_step():
    config = LeadSquaredConfig(access_key="a", secret_key="s", host="http://127.0.0.1:9")
    by_phone = Conversation(key="+919876543210", phone="+919876543210")
    by_id = Conversation(key="IN.1234567890", phone=None, user_id="IN.1234567890")
    for reason in (not_found(config, by_phone), not_found(
            config.model_copy(update={"user_id_field": "mx_WhatsApp_User_ID"}), by_id)):
        cause, step = held_advice(reason)
        assert step == "Create one, or set create_leads" + CHECKED, (reason, step)
        assert cause.startswith("No lead with this") and "(" not in cause


def test_a_reason_without_a_fix_still_reads_as_a_sentence():
    assert held_advice("waiting for the rep") == ("Waiting for the rep",
                                                  "It is checked again at every sync.")
