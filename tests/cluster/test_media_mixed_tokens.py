"""A cluster with mixed configuration: process one fetches media (it has the WhatsApp
access_token), process two has none (`source.media.hold_reason`). Two's start held every
pending media job of the source, the photo one was downloading too (one's finished
download then failed to record, its file deleted), and the webhooks two took queued their
photos held: nothing released them until a fetching process restarted, so the photos
never reached LeadSquared while one kept running. On a shared buffer a process that cannot
fetch takes no job away: it holds none, and queues its webhooks' jobs pending (with the
reason, for `bridge status`), for a process that can fetch."""

from __future__ import annotations

import hashlib

import pytest

from tests.backends import NO_POSTGRES, POSTGRES, query
from tests.cluster.test_media_killed_holder import downloading, start
from tests.cluster.test_media_second_start import downloads, media_states, slow_photos
from tests.processes import buffer_section, eventually
from tests.whatsapp.test_media import media_message
from tests.whatsapp.test_media_e2e import (
    all_attachments,
    media_webhook,
    post,
)

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)

SIZE, SLOW = 400_000, 40_000  # bytes, bytes a second: a 10-s download
SMALL = 20_000  # the photo posted to the process without a token: half a second


def test_a_process_without_a_token_takes_no_photo_from_one_that_fetches(
        tmp_path, module_simulator):
    lsq, graph, lead, [(first, first_id), (second, second_id)] = slow_photos(
        tmp_path, module_simulator, SIZE, SMALL, slow=SLOW)
    bridges = []
    try:
        with buffer_section("postgresql", tmp_path) as buffer:
            try:
                bridges.append(start(tmp_path, "one", buffer, graph, lsq))
                post(bridges[0], media_webhook("wamid.first", "image", first_id, "image/jpeg",
                                               first))
                assert eventually(lambda: downloading(bridges), timeout=20, every=0.05) \
                    is bridges[0]
                bridges.append(start(tmp_path, "two", buffer, graph, lsq, token=False))
                eventually(lambda: bridges[1].status(), timeout=30)  # two has started
                post(bridges[1], media_webhook("wamid.second", "image", second_id,
                                               "image/jpeg", second))
                # was: both held for good (one keeps running, nothing releases them)
                eventually(lambda: set(media_states(buffer["url"]).values()) == {"fetched"}
                           and len(media_states(buffer["url"])) == 2, timeout=90, every=0.2)
                attached = eventually(lambda: len(all_attachments(lsq, lead)) == 2
                                      and all_attachments(lsq, lead), timeout=60)
                assert sorted(hashlib.sha256(a["Data"]).digest() for a in attached) == \
                    sorted(hashlib.sha256(d).digest() for d in (first, second))
                assert downloads(graph) == 2  # the first one's download was not lost
            finally:
                for bridge in bridges:
                    bridge.kill()
    finally:
        graph.stop()


async def test_on_a_shared_buffer_a_process_that_cannot_fetch_holds_nothing(open_buffers):
    """The buffer's side: the start of a process without a token leaves the jobs (a lease
    in flight too) as they are, and its appends queue jobs pending with its reason, which
    `bridge status` shows while no process fetches them; the fetcher's claim takes them."""
    fetching, blind = await open_buffers(2)
    fetching.media_sources = {"whatsapp": None}
    blind.media_sources = {"whatsapp": "no token here"}
    await fetching.append([media_message(1, "media-1")])
    (taken,) = await fetching.media_claim("whatsapp", 1, 900)
    assert await blind.media_hold("whatsapp", "no token here") == 0
    await blind.append([media_message(2, "media-2")])
    assert (await blind.media_counts())["whatsapp"]["reasons"] == {"no token here": 1}
    assert [j.message_id for j in await fetching.media_claim("whatsapp", 4, 900)] == [2]
    await fetching.media_fetched(taken, "/m/a", 1, "a" * 64, None)  # still its to record
    assert await query(fetching, "SELECT message_id, state FROM media ORDER BY 1") == \
        [(1, "fetched"), (2, "pending")]
