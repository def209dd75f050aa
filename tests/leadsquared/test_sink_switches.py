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

Not the whole cross-product: a test runs a setting only where it reads one of that setting's
switches (SWITCHES_READ, measured: the simulator consults each switch at one place, and a
run that never consults a switch is, step for step, the run on the default reading, which
the test's own module makes). Every test still runs all at once ("all-loose"), every
setting still runs on at least one test, and each run checks that the test reads no switch
missing from its line in SWITCHES_READ, so a change that makes a test depend on another
switch fails here (naming it) instead of quietly skipping settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plugins.leadsquared.simulator import Simulator, every_setting
from plugins.leadsquared.simulator.switches import SWITCH_NAMES, Switches
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

# The switches each test reads, on any setting (the sink's start-up reads SETUP: its type,
# fields and user). Measured with a switch-reading probe over the full cross-product
# (300 runs, twice: the same reads in each run both times); kept true by _check_reads.
SETUP = {"activity_setting", "field_types", "opportunity_types", "unique_fields", "user_fields"}
LOOKUP = {"activity_time", "bulk_answer", "field_length", "paging", "phone_match",
          "retrieve_shape"}  # a lead found and posted to
SWITCHES_READ: dict[str, set[str]] = {
    "test_a_chat_with_a_photo_lands_once_on_the_lead_and_only_the_open_deal":
        LOOKUP | {"create_owner", "opportunity_type", "upload_answer"},
    "test_a_deleted_lead_is_forgotten_and_the_new_lead_gets_the_chat": LOOKUP | {"create_owner"},
    "test_a_lead_edited_mid_fill_skips_no_lead": {"recent_sort"},
    "test_a_refused_opportunity_is_a_dead_target_and_the_lead_activity_lands_once":
        LOOKUP | {"create_owner", "opportunity_type"},
    "test_an_old_lead_edited_lately_is_read_whatever_order_the_account_sorts_in":
        {"recent_sort"},
    "test_an_opportunitys_several_activities_share_one_bulk_call_with_the_same_keys":
        LOOKUP | {"opportunity_type"},
    "test_concurrent_deliveries_for_one_new_number_in_one_process_make_one_lead": LOOKUP,
    "test_lost_answers_give_no_duplicates_on_leads_or_opportunities":
        LOOKUP | {"create_owner", "opportunity_type"},
    "test_lost_bulk_answers_and_unreadable_rows_still_post_exactly_once": LOOKUP,
    "test_more_leads_in_one_second_than_a_page_are_all_read": {"recent_sort"},
    "test_one_refused_row_fails_only_its_own_conversation": LOOKUP | {"create_owner"},
    "test_phone_lookups_use_documented_forms_and_quick_search_finds_the_rest":
        LOOKUP | {"quick_search"},
    "test_two_processes_creating_a_lead_for_one_new_number_make_one_lead": LOOKUP,
    "test_unknown_number_is_held_visibly_then_delivered_once_a_lead_exists":
        LOOKUP | {"opportunity_type"},
    "test_validation_error_dead_letters_with_the_message_and_requeue_delivers":
        LOOKUP | {"create_owner"},
}
# A setting no test reads (the sink never sends a '+' to the phone lookup, nor a body that
# is not JSON) still runs once, here
NO_READER = "test_phone_lookups_use_documented_forms_and_quick_search_finds_the_rest"


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


def settings_for(test: str) -> list[dict[str, str]]:
    """The settings `test` runs: all at once, and each that moves a switch it reads (or that
    no test reads, on NO_READER)."""
    read = SETUP | SWITCHES_READ[test]
    anyone = SETUP.union(*SWITCHES_READ.values())
    return [s for s in settings() if _name(s) == "all-loose" or read & set(s)
            or (test == NO_READER and not anyone & set(s))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    name = metafunc.function.__name__
    metafunc.parametrize("sim", settings_for(name), indirect=True, ids=_name)


class _Reading(Switches):
    """The simulator's switches, remembering which were read (by the simulator or the test)."""

    def __getattribute__(self, name: str):
        if name in SWITCH_NAMES:
            object.__getattribute__(self, "_reads").add(name)
        return object.__getattribute__(self, name)


@pytest.fixture
async def sim(request) -> AsyncIterator[Simulator]:
    """The simulator under one switch setting (overrides tests/conftest.py's `sim`)."""
    simulator = Simulator(seed=7, **request.param)
    simulator.store.switches.__class__ = _Reading
    simulator.store.switches._reads = set()
    await simulator.start()
    yield simulator
    await simulator.stop()
    _check_reads(request.function.__name__, simulator.store.switches._reads)


def _check_reads(test: str, reads: set[str]) -> None:
    unlisted = reads - SETUP - SWITCHES_READ[test]
    assert not unlisted, (f"{test} now reads {sorted(unlisted)}: add them to its line in "
                          "SWITCHES_READ, so that it runs their settings")
