"""A history media follow-up (stored as `<id>#media`, extra.upgrades) takes its
placeholder's place for every sink that has not taken the placeholder yet: both are stored
once, the sink gets the media, never the bare placeholder."""

from __future__ import annotations

from dataclasses import replace

from bridge import UPGRADE_SUFFIX, Media
from tests.helpers import message


def placeholder(n: int):
    return replace(message(n, minutes_ago=10), kind="media_placeholder", text="",
                   history=True)


def follow_up(n: int):
    return replace(message(n, minutes_ago=10), provider_id=f"m{n}{UPGRADE_SUFFIX}",
                   kind="image", text="the shelf", history=True,
                   media=Media(id="media-1", mime_type="image/png"),
                   extra={"upgrades": f"m{n}"})


async def claimed_ids(buffer) -> list[str]:
    return [m.provider_id for c in await buffer.claim("crm", 100, 60)
            for m in c.batch.messages]


async def test_the_follow_up_replaces_its_placeholder_in_either_order(buffer):
    await buffer.install_sinks(["crm"])
    assert await buffer.append([placeholder(1)]) == 1
    assert await buffer.append([follow_up(1)]) == 1  # not a duplicate of m1
    assert await buffer.append([follow_up(2)]) == 1  # its placeholder comes after it
    assert await buffer.append([placeholder(2)]) == 1
    assert await buffer.append([follow_up(1), placeholder(2)]) == 0  # retries: stored once
    assert sorted(await claimed_ids(buffer)) == ["m1#media", "m2#media"]
    assert await buffer.count_messages() == 4


async def test_a_placeholder_a_sink_already_took_is_left_to_it(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([placeholder(3)])
    assert await claimed_ids(buffer) == ["m3"]  # batched: its transcript is being written
    await buffer.append([follow_up(3)])
    assert await claimed_ids(buffer) == []  # m3's batch is leased; the follow-up waits for it
