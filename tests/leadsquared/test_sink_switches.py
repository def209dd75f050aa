"""The sink's suite under every simulator switch setting (docs/leadsquared-simulator.md).

The tests are test_sink.py's, test_sink_reality.py's, test_targets.py's,
test_stale_lead.py's and the sink contract's, collected again here with a `sim` fixture
that takes each setting other than the default (their own modules run the default). The
429 storm is left to test_sink.py: it is about the rate budget, which no switch touches,
and takes 25 s a run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plugins.leadsquared.simulator import Simulator
from plugins.leadsquared.simulator.switches import every_setting
from tests.leadsquared.test_contract import TestLeadSquaredContract  # noqa: F401
from tests.leadsquared.test_sink import (  # noqa: F401
    test_activity_type_is_created_once_with_the_key_fields,
    test_chat_lands_once_on_the_lead_and_each_open_opportunity,
    test_dropped_connections_after_commit_still_give_exactly_once,
    test_host_simulator_runs_the_bundled_simulator_with_demo_leads,
    test_long_transcript_is_split_across_activities_never_cut,
    test_unknown_number_creates_a_lead_when_enabled,
    test_unknown_number_is_held_visibly_then_delivered_once_a_lead_exists,
    test_validation_error_dead_letters_with_the_message_and_requeue_delivers,
)
from tests.leadsquared.test_sink_reality import (  # noqa: F401
    test_a_failed_opportunity_read_posts_the_lead_activity_and_retries_the_rest,
    test_a_quick_search_hit_that_is_another_number_is_not_taken,
    test_activity_type_is_created_with_string_fields_and_attachments_allowed,
    test_configured_opportunity_types_are_the_only_ones_asked,
    test_lost_answers_give_no_duplicates_on_leads_or_opportunities,
    test_opportunities_are_asked_per_type_looked_up_once_from_the_account,
    test_phone_lookups_use_documented_forms_and_quick_search_finds_the_rest,
)
from tests.leadsquared.test_stale_lead import (  # noqa: F401
    test_a_deleted_lead_is_forgotten_and_the_new_lead_gets_the_chat,
    test_a_deleted_lead_without_successor_is_held_and_its_id_forgotten,
)
from tests.leadsquared.test_targets import (  # noqa: F401
    test_a_failing_opportunity_does_not_hold_back_the_others,
    test_a_failing_opportunity_is_retried_alone_then_dead_lettered,
    test_a_refused_opportunity_is_a_dead_target_and_the_lead_activity_lands_once,
    test_an_opportunity_that_cannot_be_checked_waits_alone,
    test_requeue_retries_only_the_dead_target,
)

SETTINGS = every_setting()[1:]


def _name(setting: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items()) if len(setting) < 3 else "all-loose"


@pytest.fixture(params=SETTINGS, ids=_name)
async def sim(request) -> AsyncIterator[Simulator]:
    """The simulator under one switch setting (overrides tests/conftest.py's `sim`)."""
    simulator = Simulator(seed=7, **request.param)
    await simulator.start()
    yield simulator
    await simulator.stop()
