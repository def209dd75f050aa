"""The sink's suites under every simulator switch setting (docs/leadsquared-simulator.md):
each switch alone, then all at once (`every_setting()`); their own modules run the
defaults, the documented readings.

The tests are the strong ones of test_guesses.py, test_sink.py, test_sink_reality.py,
test_targets.py, test_stale_lead.py and test_bulk.py (the sink contract's run on the
defaults in test_contract.py), collected again
here with a `sim` fixture that takes each setting. One setting is paired: opportunity types
absent from ActivityTypes.Get (`opportunity_types=absent`) leave the sink nothing to ask
GetOpportunitiesOfLead for unless it answers without a type, so that setting runs with
`opportunity_type=optional`; absent and required together (no opportunity posts, said
plainly) is test_guesses.py's test_no_opportunity_types_found_posts_on_the_lead_and_says_so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plugins.leadsquared.simulator import Simulator, every_setting
from tests.leadsquared.test_bulk import (  # noqa: F401
    test_an_opportunitys_several_activities_share_one_bulk_call_with_the_same_keys,
    test_one_refused_row_fails_only_its_own_conversation,
)
from tests.leadsquared.test_guesses import (  # noqa: F401
    test_a_chat_with_a_photo_lands_once_on_the_lead_and_only_the_open_deal,
    test_a_lead_edited_mid_fill_skips_no_lead,
    test_an_old_lead_edited_lately_is_read_whatever_order_the_account_sorts_in,
    test_concurrent_deliveries_for_one_new_number_in_one_process_make_one_lead,
    test_lost_bulk_answers_and_unreadable_rows_still_post_exactly_once,
    test_more_leads_in_one_second_than_a_page_are_all_read,
    test_two_processes_creating_a_lead_for_one_new_number_make_one_lead,
)
from tests.leadsquared.test_sink import (  # noqa: F401
    test_unknown_number_is_held_visibly_then_delivered_once_a_lead_exists,
    test_validation_error_dead_letters_with_the_message_and_requeue_delivers,
)
from tests.leadsquared.test_sink_reality import (  # noqa: F401
    test_lost_answers_give_no_duplicates_on_leads_or_opportunities,
    test_phone_lookups_use_documented_forms_and_quick_search_finds_the_rest,
)
from tests.leadsquared.test_stale_lead import (  # noqa: F401
    test_a_deleted_lead_is_forgotten_and_the_new_lead_gets_the_chat,
)
from tests.leadsquared.test_targets import (  # noqa: F401
    test_a_refused_opportunity_is_a_dead_target_and_the_lead_activity_lands_once,
)

PAIRED = {"opportunity_types": {"absent": {"opportunity_type": "optional"}}}


def settings() -> list[dict[str, str]]:
    """every_setting() but the default, with the pairings above."""
    out = []
    for setting in every_setting()[1:]:
        extra = {k: v for name, choice in setting.items()
                 for k, v in PAIRED.get(name, {}).get(choice, {}).items()}
        out.append({**setting, **extra} if len(setting) == 1 else setting)
    return out


def _name(setting: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items()) if len(setting) < 3 else "all-loose"


@pytest.fixture(params=settings(), ids=_name)
async def sim(request) -> AsyncIterator[Simulator]:
    """The simulator under one switch setting (overrides tests/conftest.py's `sim`)."""
    simulator = Simulator(seed=7, **request.param)
    await simulator.start()
    yield simulator
    await simulator.stop()
