"""Drain loops against real buffers: fan-out, isolation, filters, backfill, failures."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import suppress
from dataclasses import replace

import pytest

from bridge.contracts import Outcome
from bridge.sync import SinkRunner
from tests.backends import query
from tests.helpers import PostSource, RecordingSink, message, running, wait_until


async def test_two_sinks_each_receive_every_message(buffer):
    a, b = RecordingSink("a"), RecordingSink("b")
    async with running(buffer, [a, b]):
        await asyncio.gather(*[buffer.append([message(i, f"+1415555{i % 7:04d}")])
                               for i in range(50)])
        await wait_until(lambda: len(a.delivered) == 50 and len(b.delivered) == 50)
    expected = {f"m{i}" for i in range(50)}
    assert set(a.delivered) == expected and set(b.delivered) == expected
    assert len(a.delivered) == len(set(a.delivered))  # and each exactly once


async def test_batches_hold_one_conversation_oldest_first(buffer):
    sink = RecordingSink()
    await buffer.append([message(2, minutes_ago=1), message(1, minutes_ago=9),
                         message(3, "+14155550100")])
    async with running(buffer, [sink]):
        await wait_until(lambda: len(sink.delivered) == 3)
    for batch in sink.batches:
        assert {m.conversation for m in batch.messages} == {batch.conversation.key}
        times = [m.sent_at for m in batch.messages]
        assert times == sorted(times)


async def test_slow_sink_does_not_slow_appends(buffer):
    sink = RecordingSink(delay=4, deliver_timeout=30)
    async with running(buffer, [sink]) as (runner,):
        await buffer.append([message(0)])
        await wait_until(lambda: runner.started)
        await asyncio.sleep(0.2)  # the sink is now inside its 4-s deliver
        started = time.monotonic()
        await asyncio.gather(*[buffer.append([message(i)]) for i in range(1, 501)])
        elapsed = time.monotonic() - started
        assert sink.batches == []  # still sleeping on the first batch
        assert elapsed < 3, f"500 appends took {elapsed:.1f}s behind a sleeping sink"
        assert await buffer.count_messages() == 501


async def test_message_that_always_fails_dead_letters_others_delivered(buffer):
    def behaviour(m):
        return Outcome.retry("CRM says no") if m.provider_id == "m3" else Outcome.delivered()

    sink = RecordingSink(behaviour=behaviour, max_attempts=4)
    async with running(buffer, [sink]):
        await buffer.append([message(i) for i in range(6)])
        await wait_until(lambda: buffer.dead_letters())
    assert sorted(sink.delivered) == ["m0", "m1", "m2", "m4", "m5"]
    (dead,) = await buffer.dead_letters()
    assert dead["provider_id"] == "m3" and dead["reason"] == "gave up after 4 attempts: CRM says no"


async def test_sink_exception_is_retried_not_lost(buffer):
    calls = {"n": 0}

    def behaviour(m):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionError("CRM unreachable")
        return Outcome.delivered()

    sink = RecordingSink(behaviour=behaviour)
    async with running(buffer, [sink]):
        await buffer.append([message(1)])
        await wait_until(lambda: sink.delivered == ["m1"])
    assert calls["n"] == 3


async def test_wrong_number_of_outcomes_is_a_retry_with_a_reason(buffer):
    sink = RecordingSink(max_attempts=1)

    async def broken(batch):
        return [Outcome.delivered()]  # one outcome for two messages

    sink.deliver = broken
    async with running(buffer, [sink]):
        await buffer.append([message(1), message(2)])
        await wait_until(lambda: buffer.dead_letters())
    reasons = {d["reason"] for d in await buffer.dead_letters()}
    assert reasons == {"gave up after 1 attempts: sink returned 1 outcomes for 2 messages "
                       "(a bug in the sink plugin)"}


class DropPersonal:
    name = "drop-personal"

    def apply(self, m, sink):
        if m.conversation == "+10000000000":
            return None
        return replace(m, text=m.text.replace("secret", "[redacted]"))


async def test_filters_drop_and_redact_before_sinks_see_messages(buffer):
    sink = RecordingSink()
    async with running(buffer, [sink], filters=[DropPersonal()]):
        await buffer.append([message(1, text="my secret code"), message(2, "+10000000000")])
        await wait_until(lambda: sink.delivered == ["m1"])
        await wait_until(lambda: _backlog(buffer, 0))
    assert sink.batches[0].messages[0].text == "my [redacted] code"
    states = await query(buffer, "SELECT message_id, state FROM deliveries ORDER BY message_id")
    assert states == [(1, "done"), (2, "skipped")]


async def _backlog(buffer, n):
    return (await buffer.sinks())[0]["backlog"] == n


async def test_first_install_backfills_the_window_once_with_source_history(buffer):
    await buffer.append([message(1, minutes_ago=5 * 1440), message(2, minutes_ago=2 * 1440)])
    source = PostSource(history=[message(3, minutes_ago=60), message(4, minutes_ago=4 * 1440)])
    sink = RecordingSink(backfill_days=3)
    async with running(buffer, [sink], sources=[source]):
        await wait_until(lambda: len(sink.delivered) == 2)
        await asyncio.sleep(0.2)
    assert sorted(sink.delivered) == ["m2", "m3"]
    (state,) = await buffer.sinks()
    assert state["backfill_done_at"] is not None and state["backfill_total"] == 2
    async with running(buffer, [sink], sources=[source]):  # second start: no second backfill
        await asyncio.sleep(0.3)
    assert sorted(sink.delivered) == ["m2", "m3"]


class AsksHistory(PostSource):
    """A source whose backfill() takes its time (a history API answering slowly): it says
    when it was asked, and answers its history only once told to."""

    def __init__(self, history: list) -> None:
        super().__init__(history=history)
        self.asked, self.answer = asyncio.Event(), asyncio.Event()

    async def backfill(self, since):
        self.asked.set()
        await self.answer.wait()
        return super().backfill(since)


async def test_a_webhook_stored_while_the_first_backfill_asks_the_sources_stays_in_order(
        buffer):
    """A live message stored while the first install's backfill waits for its sources is
    live, not recovered history: the chat's later messages never go to the CRM before it.
    Its delivery was marked backfill (pending and stored since the backfill began, the
    mark meant for what the sources recovered), so the live messages after it passed it
    (live goes before backfill never tried). race62: on main a bridge run posted a
    customer's 2nd and 3rd messages, and not the 1st, when its webhook came as the first
    sync began. What the sources did recover is still backfill (paced, and counted)."""
    source = AsksHistory([message(0, "+14155550100", minutes_ago=60, text="recovered")])
    sink = RecordingSink(backfill_days=3)
    await buffer.install_sinks([sink.name])
    runner = SinkRunner(sink, buffer, (), [source])
    backfill = asyncio.create_task(runner.backfill(first_install=True))
    await source.asked.wait()
    await buffer.append([message(1, minutes_ago=2, text="first")])  # a webhook meanwhile
    source.answer.set()
    queued = await backfill
    await buffer.append([message(2, minutes_ago=1, text="second")])  # same chat, later
    await runner.drain()
    assert [m for m in sink.delivered if m != "m0"] == ["m1", "m2"]
    # the recovered message is backfill: counted, and paced behind the live ones
    assert queued == 1
    assert [[m.provider_id for m in b.messages] for b in sink.batches][-1] == ["m0"]


class StartsLate(RecordingSink):
    """A sink whose CRM is unreachable at first (or its token wrong): start() raises until
    `up_in` seconds have passed, as a real sink's start() does when its lookup fails."""

    def __init__(self, up_in: float, **settings: object) -> None:
        super().__init__(**settings)
        self.up_at = time.monotonic() + up_in

    async def start(self) -> None:
        if time.monotonic() < self.up_at:
            raise RuntimeError("the CRM is unreachable")
        await super().start()


async def test_first_install_backfill_counts_back_from_install_not_from_a_late_start(buffer):
    """A sink installed at T whose start() first succeeds at T+3s still gets the chats of
    backfill_days before T (here 4 s: a chat sent 2 s before T). It used to count back from
    T+3s, so a CRM down for a day at first install silently lost that day's oldest chats."""
    await buffer.append([message(1, minutes_ago=2 / 60)])
    sink = StartsLate(up_in=3.0, backfill_days=4 / 86400)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        await wait_until(lambda: sink.delivered == ["m1"], timeout=5)
    (state,) = await buffer.sinks()
    assert state["backfill_total"] == 1


class AnswersBadlyOnce(RecordingSink):
    """Posts, then answers its first call with `first` (not a list of outcomes), as a
    plugin's deliver() with a bug does; answers correctly after that."""

    def __init__(self, first: object, **settings: object) -> None:
        super().__init__(**settings)
        self.first, self.calls = first, 0

    async def deliver(self, batch):
        self.calls += 1
        outcomes = await super().deliver(batch)
        return self.first if self.calls == 1 else outcomes


@pytest.mark.parametrize(("first", "reason"), [
    (Outcome.delivered(), "sink returned Outcome, not a list of one Outcome per message"),
    (["delivered"], "sink returned str where an Outcome belongs"),
    ([], "sink returned 0 outcomes for 1 messages"),
])
async def test_a_deliver_answer_that_is_not_a_list_of_outcomes_is_retried_with_its_reason(
        buffer, first, reason):
    """Rule 1 of the Sink contract: the whole batch is retried (marked uncertain: the sink
    may have posted) and the mistake is its reason. One Outcome instead of a list used to
    raise inside the drain: no reason anywhere, and the batch waited out its 5-minute lease."""
    sink = AnswersBadlyOnce(first, retry_base=0.5, retry_cap=0.5)
    async with running(buffer, [sink]):
        await buffer.append([message(1)])
        state = await wait_until(lambda: _retrying(buffer))
        await wait_until(lambda: len(sink.batches) == 2, timeout=5)
        await wait_until(lambda: _backlog(buffer, 0))
    assert state["retry_error"] == f"{reason} (a bug in the sink plugin)"
    first_try, retry = sink.batches
    assert retry.key == first_try.key and retry.uncertain and retry.attempt == 2


async def _retrying(buffer):
    health = await buffer.sync_health("memory")
    return health if health["retrying"] else None


async def test_sync_now_wakes_a_sleeping_loop(buffer):
    sink = RecordingSink(sync_interval=3600)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.next_sync_at is not None)
        await buffer.append([message(1)])
        await asyncio.sleep(0.2)
        assert sink.delivered == []
        runner.wake()
        await wait_until(lambda: sink.delivered == ["m1"], timeout=5)


async def test_loop_survives_a_failing_sink_start(buffer):
    sink = RecordingSink()
    attempts = {"n": 0}
    original = sink.start

    async def flaky_start():
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("activity type lookup failed")
        await original()

    sink.start = flaky_start
    async with running(buffer, [sink]):
        await buffer.append([message(1)])
        await wait_until(lambda: sink.delivered == ["m1"])
    (state,) = await buffer.sinks()
    assert "activity type lookup failed" in state["last_error"]


async def test_a_backlog_that_never_empties_still_records_each_sync(buffer):
    sink = RecordingSink(delay=0.05, sync_interval=0.5)
    feeding = True

    async def feed() -> None:  # new chats arrive faster than the slow sink drains
        n = 0
        while feeding:
            await buffer.append([message(n, f"+1415555{n:04d}")])
            n += 1
            await asyncio.sleep(0.01)

    async with running(buffer, [sink]) as (runner,):
        runner.min_slice = 0.5
        feeder = asyncio.create_task(feed())
        await wait_until(lambda: buffer.sinks(), timeout=5)
        syncs = set()

        async def recorded_syncs() -> bool:
            (state,) = await buffer.sinks()
            syncs.add(state["last_sync_at"])
            return len(syncs - {None}) >= 3
        await wait_until(recorded_syncs, timeout=20)
        (state,) = await buffer.sinks()
        feeding = False
        await feeder
    assert state["backlog"] > 0, "the feed should outpace the sink"
    # each slice is recorded, and the next one is due at once: no interval wait on a backlog
    assert state["next_sync_at"] <= state["last_sync_at"]


async def test_a_backfilled_conversation_goes_out_as_one_batch_not_one_per_message(buffer):
    await buffer.append([message(n, minutes_ago=600 - n) for n in range(5)])  # one chat
    sink = RecordingSink(backfill_days=3)
    async with running(buffer, [sink]):
        await wait_until(lambda: len(sink.delivered) == 5)
    assert [[m.provider_id for m in b.messages] for b in sink.batches] == [
        ["m0", "m1", "m2", "m3", "m4"]]  # one window: one CRM activity


async def test_a_small_backfill_claim_never_cuts_a_live_conversation(buffer):
    """Two messages of one chat, then claim(limit=1, backfill=True): still one batch."""
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, minutes_ago=2), message(2, minutes_ago=1)])
    assert await buffer.claim("crm", 1, 60, backfill=True) == []  # no backfill batch
    claims = await buffer.claim("crm", 100, 60, backfill=False)
    assert [[m.provider_id for m in c.messages] for c in claims] == [["m1", "m2"]]


async def test_messages_arriving_between_the_live_and_backfill_claims_stay_one_batch(buffer):
    """Messages arrive (a real append) just before the next backfill claim."""
    arrivals = [message(1, minutes_ago=2), message(2, minutes_ago=1)]
    claim = buffer.claim

    async def arriving_claim(*args, **kwargs):
        if kwargs.get("backfill") and arrivals:
            await buffer.append(arrivals)
            arrivals.clear()
        return await claim(*args, **kwargs)

    buffer.claim = arriving_claim
    await buffer.install_sinks(["memory"])
    await buffer.backfill("memory", time.time())  # installed, nothing to backfill
    sink = RecordingSink()
    runner = SinkRunner(sink, buffer)
    for _ in range(3):
        await runner.drain()
    assert not arrivals  # they did arrive between the claims
    assert [[m.provider_id for m in b.messages] for b in sink.batches] == [["m1", "m2"]]


async def test_a_sync_that_cannot_be_recorded_is_logged_not_dropped(buffer, caplog, monkeypatch):
    async def full_disk(*args):  # no real disk fills up here: the buffer's error, raised
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(buffer, "record_sync", full_disk)
    sink = RecordingSink()
    await buffer.append([message(1)])
    with caplog.at_level(logging.WARNING, logger="bridge.sync"):
        async with running(buffer, [sink]):
            await wait_until(lambda: sink.delivered == ["m1"])  # the drain goes on
            await wait_until(lambda: [r for r in caplog.records if "record" in r.getMessage()])
    (line, *_) = [r.getMessage() for r in caplog.records if "record" in r.getMessage()]
    assert line == ("sink memory: could not record the sync in the buffer: "
                    "OperationalError: database or disk is full")


async def test_a_sink_cut_off_by_deliver_timeout_is_not_retried_before_its_writes_settle(buffer):
    """A deliver() cancelled mid-call may have a CRM write in flight that commits later:
    its retry (which checks the key first) waits as long as the timeout itself."""
    sink = RecordingSink(delay=5, deliver_timeout=0.2, retry_base=0.01, retry_cap=0.01)
    runner = SinkRunner(sink, buffer)
    await buffer.install_sinks([sink.name])
    await buffer.append([message(0)])
    (claim,) = await buffer.claim(sink.name, 10, 60)
    cut_off = time.time()
    assert (await runner.deliver(claim))["retry"] == 1
    assert await buffer.claim(sink.name, 10, 60, now=cut_off + 0.15) == []
    await buffer.retry_now(sink.name, now=cut_off + 0.15)  # what sync-now does
    assert await buffer.claim(sink.name, 10, 60, now=cut_off + 0.15) == []
    (again,) = await buffer.claim(sink.name, 10, 60, now=cut_off + 0.5)
    assert again.batch.uncertain and again.batch.key == claim.batch.key


class TimedSink(RecordingSink):
    """Records when each batch's delivery ran, and whether it held backfill messages."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.runs: list[tuple[float, float, bool]] = []  # (start, end, backfill)

    async def deliver(self, batch):
        start = time.monotonic()
        outcomes = await super().deliver(batch)
        old = all(m.provider_id.startswith("m") for m in batch.messages)
        self.runs.append((start, time.monotonic(), old))
        return outcomes


async def test_a_backfill_with_no_live_message_due_does_not_rest(buffer):
    """A step that spent its time waiting on the CRM's budget is not followed by an idle
    rest: the budget refills meanwhile and nothing else wants it (issue 15)."""
    await buffer.append([message(n, f"+14155550{n:03d}", minutes_ago=600) for n in range(4)])
    # share 0.1: a paced rest would be 9 times each 0.3-s step
    sink = TimedSink(delay=0.3, backfill_days=3, backfill_share=0.1)
    async with running(buffer, [sink]):
        await wait_until(lambda: len(sink.delivered) == 4, timeout=30)
    gaps = [b[0] - a[1] for a, b in zip(sink.runs, sink.runs[1:], strict=False)]
    assert len(sink.runs) == 4 and max(gaps) < 1.0, gaps  # 2.7 s each when rested


async def test_a_backfill_still_rests_while_live_messages_arrive(buffer):
    """backfill_share still holds with live traffic: once live messages come, each
    backfill step is followed by a rest in proportion (room for the live ones)."""
    await buffer.append([message(n, f"+14155550{n:03d}", minutes_ago=600) for n in range(4)])
    sink = TimedSink(delay=0.2, backfill_days=3, backfill_share=0.1)  # rest: 9 x 0.2 s
    feeding = True

    async def feed() -> None:  # a live message every 0.3 s: the sink is not saturated
        n = 0
        while feeding:
            n += 1
            await buffer.append([replace(message(n, f"+1415556{n:04d}"),
                                         provider_id=f"live{n}")])
            await asyncio.sleep(0.3)

    async with running(buffer, [sink]):
        feeder = asyncio.create_task(feed())
        await wait_until(lambda: sum(1 for run in sink.runs if run[2]) == 4, timeout=30)
        feeding = False
        await feeder
    live_from = min(end for _, end, old in sink.runs if not old)
    old = [run for run in sink.runs if run[2]]
    gaps = [b[0] - a[1] for a, b in zip(old, old[1:], strict=False) if b[0] > live_from]
    assert gaps and min(gaps) > 1.0, gaps  # 1.8-s rests; none without the live messages


class _PausedMidCall(RecordingSink):
    """Awaits a reply (the shared budget's, a lookup's) that comes while the process is
    paused, then posts."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.posted: list[str] = []

    async def deliver(self, batch):  # noqa: ANN001, ANN201 - the Sink protocol
        reply = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.2, reply.set_result, None)
        await reply
        self.posted.append(batch.key)  # the CRM post
        return [Outcome.delivered() for _ in batch.messages]


async def test_a_delivery_resumed_past_its_deliver_timeout_posts_nothing(buffer):
    """A process paused (SIGSTOP, here the event loop blocked) while its delivery awaited a
    reply that came meanwhile: resumed past deliver_timeout, the delivery ran on one step
    and posted before asyncio.wait_for cut it off (the reply's wake-up ran before the
    timeout's), though another process may have taken the batch once its lease ran out
    (adv31). The timeout cancels the delivery itself, before that step."""
    await buffer.install_sinks(["memory"])
    await buffer.append([message(1)])
    sink = _PausedMidCall(deliver_timeout=1.0, lease=2.0)
    runner = SinkRunner(sink, buffer)
    (claim,) = await buffer.claim("memory", 1, 2.0)
    delivery = asyncio.ensure_future(runner.deliver(claim))
    await asyncio.sleep(0.1)
    time.sleep(1.5)  # paused past deliver_timeout; the reply came during the pause
    await delivery
    assert sink.posted == []


class HangsAtFirst(RecordingSink):
    """A sink whose first start() never returns (a CRM host that takes the connection and
    never answers); later starts succeed. start_note() says what it waits for."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            await asyncio.Event().wait()  # forever
        await super().start()

    def start_note(self) -> str | None:
        return "crm.example: login unanswered" if self.starts == 1 else None


async def test_a_start_that_hangs_is_cut_off_recorded_and_retried_before_the_interval(buffer):
    """start() is bounded (the sink's start_timeout, else its deliver_timeout): a hung one
    fails like one that raised, its reason is recorded, and it is tried again after a short
    backoff, not an hour's sync_interval. It used to hang forever: 'starting', then behind,
    never retried, and no chat reached the CRM until a restart."""
    sink = HangsAtFirst(sync_interval=3600, deliver_timeout=1, lease=5)
    async with running(buffer, [sink]) as (runner,):
        await buffer.append([message(1)])
        await wait_until(lambda: runner.starting_since is not None)
        await wait_until(lambda: sink.starts == 2, timeout=15)
        await wait_until(lambda: sink.delivered == ["m1"], timeout=5)
    (state,) = await buffer.sinks()
    assert state["last_error"] == ("StartTimedOut: start did not finish within 1s "
                                   "(crm.example: login unanswered)")


async def test_a_stop_during_a_hung_start_ends_the_loop_at_once(buffer):
    """Told to stop (SIGTERM) while its start() waits on a CRM that never answers, the loop
    calls the start off and ends; it used to wait for the start, so `bridge run` sat out
    its stop grace and then cancelled the task."""
    sink = HangsAtFirst(deliver_timeout=600, lease=700)
    await buffer.install_sinks([sink.name])
    stop = asyncio.Event()
    runner = SinkRunner(sink, buffer)
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.starting_since is not None)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not runner.started and runner.starting_since is None
    (state,) = await buffer.sinks()
    assert state["last_error"] is None  # a called-off start is not a failure


class Hurried(RecordingSink):
    """Records, in order, each batch delivered and each hurry() (a person's sync-now); each
    delivery waits until `released` is set."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.events: list[str] = []
        self.released = asyncio.Event()
        self.delivering: list[str] = []  # the provider ids of each batch given to deliver()

    async def hurry(self) -> None:
        self.events.append("hurry")

    async def deliver(self, batch):
        self.delivering.extend(m.provider_id for m in batch.messages)
        await self.released.wait()
        outcomes = await super().deliver(batch)
        self.events.extend(m.provider_id for m in batch.messages)
        return outcomes


async def test_a_sync_now_during_a_drain_applies_to_the_chats_claimed_after_it(buffer):
    """A sync-now that comes while a drain is delivering is answered before its next claim:
    the sink's hurry() (LeadSquared: the reps read again, unknown numbers searched again)
    comes before the chat that arrived with it. It used to wait for the end of the drain,
    so that chat went out under the old reps (a deactivated rep still owned it)."""
    sink = Hurried(sync_interval=3600, deliver_timeout=10, lease=20)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.next_sync_at is not None)
        await buffer.append([message(1)])
        runner.wake()
        await wait_until(lambda: sink.delivering == ["m1"])  # m1 is being delivered now
        assert sink.events == ["hurry"]
        await buffer.append([message(2, "+14155550100")])
        runner.wake()
        # m1's delivery ends only now (it had a fixed 1 s: on a loaded machine the append
        # above took longer, the drain claimed m2 before the wake and the test failed)
        sink.released.set()
        await wait_until(lambda: len(sink.events) == 4, timeout=10)
    assert sink.events == ["hurry", "m1", "hurry", "m2"]


class HurryHangs(RecordingSink):
    """A third-party sink whose hurry() waits on something that never answers."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.hurrying = False

    async def hurry(self) -> None:
        self.hurrying = True
        await asyncio.Event().wait()  # forever


async def test_a_stop_during_a_hanging_hurry_ends_the_loop_at_once(buffer):
    """Told to stop while a sync-now's hurry() waits (LeadSquared: the reps read again on a
    host that does not answer), the loop calls it off and ends; it used to sit out the
    hurry's deliver_timeout bound (here 600 s), so `bridge run` waited its stop grace."""
    sink = HurryHangs(deliver_timeout=600, lease=700, sync_interval=3600)
    await buffer.install_sinks([sink.name])
    stop = asyncio.Event()
    runner = SinkRunner(sink, buffer)
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.next_sync_at is not None)
    runner.wake()
    await wait_until(lambda: sink.hurrying)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_flood_of_sync_requests_shares_a_few_hurries(buffer):
    """50 sync-nows within half a second (a script, a stuck button) are answered by two
    hurry() calls: the first, and one after HURRY_GAP for the asks that came meanwhile.
    Each ask used to get its own (LeadSquared: one read of the account's users and of the
    lead directory per ask, 17 for 50 asks in 0.08 s, spending the rate budget the chats
    need)."""
    sink = Hurried(sync_interval=3600, deliver_timeout=10, lease=20)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.next_sync_at is not None)
        started = time.monotonic()
        for _ in range(50):
            runner.wake()
            await asyncio.sleep(0.01)
        allowed = 2 + int(time.monotonic() - started)  # one a HURRY_GAP (1 s) after the first
        await wait_until(lambda: not runner._retry_now and sink.events, timeout=10)
        await asyncio.sleep(0.2)  # another hurry, were there one, would start now
    assert set(sink.events) == {"hurry"} and 2 <= len(sink.events) <= allowed


class HurryDeaf(RecordingSink):
    """A third-party sink whose hurry() swallows its cancellation and waits on."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.hurries = 0
        self.released = asyncio.Event()  # the test's end: it stops waiting then

    async def hurry(self) -> None:
        self.hurries += 1
        while not self.released.is_set():
            with suppress(asyncio.CancelledError):  # deaf: waits on
                await self.released.wait()


async def test_a_hurry_that_ignores_its_cutoff_does_not_hold_the_drain(buffer):
    """A hurry() that swallows the cancellation deliver_timeout sends it used to hold the
    drain for good (it ran inside the drain's own task): no chat reached the sink again.
    The drain now gives it STOP_WAIT after the cut-off and goes on."""
    sink = HurryDeaf(sync_interval=3600, deliver_timeout=1, lease=5)
    await buffer.install_sinks([sink.name])
    stop = asyncio.Event()
    runner = SinkRunner(sink, buffer)
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: runner.next_sync_at is not None)
        await buffer.append([message(1)])
        runner.wake()
        await wait_until(lambda: sink.delivered == ["m1"], timeout=15)
        assert sink.hurries == 1
    finally:
        stop.set()
        sink.released.set()
        await asyncio.wait_for(task, 5)


class NeverStarts(RecordingSink):
    """A sink whose start() always fails (wrong keys, the CRM down for days)."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        raise RuntimeError("the CRM refused the keys")


async def test_a_start_failing_for_days_keeps_being_tried(buffer):
    """The backoff after failed starts was START_AGAIN * 2 ** (failures - 1): from the
    1025th failure in a row (17 hours of a CRM down at a one-minute sync_interval) the
    float overflowed, run() raised OverflowError outside its try, and the sink's loop
    died for good: no start again, no chat synced until a restart. (adv45)"""
    sink = NeverStarts(sync_interval=1)
    await buffer.install_sinks([sink.name])
    stop = asyncio.Event()
    runner = SinkRunner(sink, buffer)
    runner._failed_starts = 1100  # as after that many failures in a row
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: sink.starts >= 2 or task.done(), timeout=10)
        assert not task.done(), task.exception()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
