"""ActivityDateTime of a chat whose last message a wrong clock stamped in the future
(adv38): whether LeadSquared takes a future time is not documented (reference §7.9, switch
activity_time); the activity is dated no later than its post, on either reading, and the
line keeps the time the message carries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from plugins.leadsquared.simulator import Simulator
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in


@pytest.mark.parametrize("reading", ["any", "not_future"])
async def test_a_message_stamped_years_ahead_lands_with_its_chat_dated_now(reading, buffer):
    sim = Simulator(seed=7, activity_time=reading)
    await sim.start()
    try:
        lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
        ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=730)
        messages = [chat(1, minutes_ago=2), dataclasses.replace(chat(2), sent_at=ahead)]
        await buffer.append(messages)
        async with running(buffer, [sink_for(sim, opportunities=False)]):
            await wait_until(lambda: settled(buffer))
        assert await buffer.dead_letters("leadsquared") == []
        (activity,) = sim.activities(lead)
        assert texts_in(activity["ActivityNote"]) == ["msg-00001", "msg-00002"]
        # the time it carries, in the account's zone (at 18:30 UTC and after, India's date
        # is the next day: a UTC date failed here every evening)
        local = ahead.astimezone(ZoneInfo(sim.knobs.timezone))
        assert f"[{local:%Y-%m-%d %H:%M}]" in activity["ActivityNote"]
        posted = datetime.strptime(activity["ActivityDateTime"], "%Y-%m-%d %H:%M:%S")
        assert posted.replace(tzinfo=UTC) <= datetime.now(UTC)
    finally:
        await sim.stop()
