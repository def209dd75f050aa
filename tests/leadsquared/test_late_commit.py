"""A write the network holds past the client's timeout, then commits: posted once only."""

from __future__ import annotations

from collections import Counter

import pytest

from plugins.leadsquared.activity_type import FIELDS
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, field, settled, sink_for, texts_in

SINGLE = "/v2/ProspectActivity.svc/Create"
BULK = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId"


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
async def test_an_activity_post_that_commits_after_the_timeout_is_not_posted_again(
        sim, buffer, bulk):
    create = BULK if bulk else SINGLE
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    # timeout 0.5 s, the first post held 1 s (the attack: 30 s and 70 s); quick retries,
    # so only the settle wait keeps the retry from racing the held write
    sink = sink_for(sim, timeout=0.5, opportunities=False, max_attempts=20,
                    bulk=bulk)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.configure(write_hold=1.0)
        await buffer.append([chat(1), chat(2)])  # live: retried at once, not paced
        await wait_until(lambda: any(c.path == create for c in sim.calls))
        sim.configure(write_hold=0)  # only the first post is held
        await wait_until(lambda: sim.activities(lead) and not sim.held_writes)
        await wait_until(lambda: settled(buffer))
    keys = Counter(field(a, FIELDS["key"]) for a in sim.activities(lead))
    assert len(keys) == 1 and max(keys.values()) == 1, keys
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001", "msg-00002"]
    assert [c.status for c in sim.calls if c.path == create] == [200]  # never re-posted
    assert await buffer.dead_letters() == []


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
async def test_a_post_cut_off_by_deliver_timeout_that_commits_late_is_not_posted_again(
        sim, buffer, bulk):
    """deliver_timeout shorter than the sink's own call timeout (both are settings): the
    core cut the delivery with a write in flight and retried after deliver_timeout again,
    but the write could commit until the sink's settle window (3 x timeout after its send):
    the retry's key check came before the commit and the activity was posted twice (adv36,
    with deliver_timeout: 1s and a write held 3 s by the network)."""
    create = BULK if bulk else SINGLE
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, timeout=1.5, deliver_timeout=1, opportunities=False,
                    max_attempts=20, bulk=bulk)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.configure(write_hold=3.0)  # past deliver_timeout, within the sink's timeout x 3
        await buffer.append([chat(1), chat(2)])
        await wait_until(lambda: any(c.path == create for c in sim.calls))
        sim.configure(write_hold=0)  # only the first post is held
        await wait_until(lambda: sim.activities(lead) and not sim.held_writes, timeout=20)
        await wait_until(lambda: settled(buffer), timeout=30)
    keys = Counter(field(a, FIELDS["key"]) for a in sim.activities(lead))
    assert len(keys) == 1 and max(keys.values()) == 1, keys
    assert [c.status for c in sim.calls if c.path == create] == [200]  # never re-posted
    assert await buffer.dead_letters() == []
