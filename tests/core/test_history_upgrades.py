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


async def test_a_sink_that_queues_history_later_gets_the_follow_up_only(buffer):
    """Messages stored before a sink is installed reach it through its backfill (and a
    re-enabled sink's catch-up): those paths must not queue a placeholder its follow-up
    replaced (a bridge restarted mid-history stored the first chunks before its sink was
    installed, and the CRM got 'Media (not synced)' and the photo)."""
    await buffer.append([placeholder(1), follow_up(1), follow_up(2)])
    await buffer.append([placeholder(2), message(3, minutes_ago=10)])
    assert await buffer.install_sinks(["crm"]) == ["crm"]
    assert await buffer.backfill("crm", 0) >= 3
    assert sorted(await claimed_ids(buffer)) == ["m1#media", "m2#media", "m3"]

    await buffer.install_sinks([])  # crm turned off: what comes meanwhile is caught up
    other = "+919800000004"  # another chat: the first one's batch is still leased
    await buffer.append([replace(follow_up(4), conversation=other),
                         replace(placeholder(4), conversation=other)])
    await buffer.install_sinks(["crm"])
    assert sorted(await claimed_ids(buffer)) == ["m4#media"]


def live_photo(n: int):
    return replace(message(n, minutes_ago=10), kind="image", text="the shelf",
                   media=Media(id="media-1", mime_type="image/png"))


async def test_a_photo_that_came_live_is_not_delivered_again_by_the_history_sync(buffer):
    """Phase 0 of a history sync is the last day, so a photo received live after
    onboarding comes again in history: its placeholder is the live message's duplicate,
    and its follow-up must not reach the CRM a second time (invariant 2: backfill
    overlap), whether the live photo was delivered already or still waits."""
    await buffer.install_sinks(["crm"])
    assert await buffer.append([live_photo(1)]) == 1
    assert await claimed_ids(buffer) == ["m1"]  # taken: being written to the CRM
    assert await buffer.append([live_photo(2)]) == 1  # not taken yet
    assert await buffer.append([placeholder(1), placeholder(2)]) == 0
    assert await buffer.append([follow_up(1), follow_up(2)]) == 0  # each stored once
    assert await claimed_ids(buffer) == []  # m1's chat is leased; nothing else is due
    assert await buffer.count_messages() == 2


async def test_a_follow_up_of_a_live_message_without_its_media_is_kept(buffer):
    """A live message that came without its file (unsupported on the Cloud API) is
    upgraded by the history follow-up that carries it: not a copy, kept."""
    await buffer.install_sinks(["crm"])
    assert await buffer.append([replace(message(1, minutes_ago=10), kind="unsupported",
                                        text="")]) == 1
    assert await buffer.append([follow_up(1)]) == 1


async def test_a_follow_up_of_a_live_photo_whose_file_died_is_kept_and_brings_it(buffer):
    """The live photo's file could not be fetched (its media id expired in an outage):
    the history copy carries a fresh one, so it is an upgrade after all."""
    buffer.media_sources = {"test": None}
    await buffer.install_sinks(["crm"])
    assert await buffer.append([live_photo(1)]) == 1
    (job,) = await buffer.media_claim("test", 10, 60)
    await buffer.media_failed(job, "Graph API: gone (code 100)", None)
    assert await buffer.append([follow_up(1)]) == 1
