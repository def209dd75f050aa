"""Per-sink drain loops: backfill on first install, claim, filter, deliver, record."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from bridge.buffer import Claim, Deliveries, Policy
from bridge.contracts import LEASE_MARGIN, START_WITHIN, Filter, Outcome, Sink, Source
from bridge.errors import LeaseLost
from bridge.metrics import Metrics
from bridge.model import Message
from bridge.retry import backoff_delay

logger = logging.getLogger(__name__)

BACKFILL_CHUNK = 500
LIVE_POLL = 1.0  # seconds: while backfill is paced, how often live messages are looked for
MIN_SLICE = 30.0  # seconds: a drain running longer records its progress at least this often
RECORD_AGAIN = (0.5, 5.0)  # seconds: first and longest wait between tries of unrecorded outcomes
STOP_WAIT = 1.0  # seconds a called-off start() is given to wind down
START_AGAIN = 5.0  # seconds: first wait after a failed start; doubles up to sync_interval
# seconds between the end of one answered sync request and the next: the asks that come
# meanwhile (a flood of sync-now) share one hurry() after it (LeadSquared: one read of the
# reps and the lead directory, not one per ask)
HURRY_GAP = 1.0


class StartTimedOut(Exception):
    """A sink's start() that did not finish within its bound (start_timeout)."""


class SinkRunner:
    """Drains the buffer into one sink at its interval; survives its own failures."""

    def __init__(self, sink: Sink, buffer: Deliveries, filters: Sequence[Filter] = (),
                 sources: Sequence[Source] = (), metrics: Metrics | None = None) -> None:
        self.sink = sink
        self.metrics = metrics if metrics is not None else Metrics(process=False)
        self.buffer = buffer
        self.filters = list(filters)
        self.sources = list(sources)
        self.settings = sink.settings
        self.policy = Policy(
            max_attempts=self.settings.max_attempts,
            retry_delay=lambda attempt: backoff_delay(
                attempt, base=self.settings.retry_base, cap=self.settings.retry_cap),
            held_delay=self.settings.sync_interval,
            retry_for=self.settings.retry_for,
        )
        # an expired lease's batch waits this long past the lease's end: a write its
        # holder had in flight may land until then (settle_after_lease)
        self.after_lease = settle_after_lease(sink)
        self._wake = asyncio.Event()
        self._retry_now = False  # set by wake(): the next drain hurries waiting retries
        self._hurried_at: float | None = None  # monotonic: when the last hurry ended
        self._backfill_ready_at = 0.0  # monotonic: when the next backfill batch may go
        self._live_batches = 0  # live batches delivered so far
        self._live_mark = 0  # ... when the last backfill step began
        self.started = False
        self.starting_since: float | None = None  # wall time the current start() began
        self._failed_starts = 0  # starts failed in a row: the next waits longer (backoff)
        self.min_slice = MIN_SLICE  # a drain running longer records its progress this often
        self._recorded_at = 0.0
        self.next_sync_at: float | None = None
        self.last_delivered_at: float | None = None  # when this process last recorded outcomes
        self._stop: asyncio.Event | None = None
        # outcomes whose completion failed (the buffer out of reach): recorded again as soon
        # as it answers, so their batches need not wait out the lease (see _record_again)
        self.unrecorded: list[tuple[Claim, list[Outcome | None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Run a drain now instead of waiting for the interval, retrying waiting batches
        now too (a person asked: sync-now, a requeue, a backfill)."""
        self._retry_now = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: only `stop` ends it."""
        self._stop = stop
        while not stop.is_set():
            error = None
            started = time.monotonic()
            try:
                totals = await self.step()
                if totals:
                    logger.info("sink %s synced: %s", self.sink.name,
                                ", ".join(f"{n} {kind}" for kind, n in sorted(totals.items())))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.exception("sync of sink %s failed; will try again", self.sink.name)
            self.metrics.sync_run(self.sink.name, "error" if error else "ok",
                                  time.monotonic() - started)
            pause = self._pause()
            await self._record_sync(pause, error)
            await self._sample_backlog()
            await self._sleep(stop, pause)
        if self._recorder is not None:  # its last try, at the stop: a bounded wait
            with suppress(Exception):
                await asyncio.wait_for(self._recorder, RECORD_AGAIN[1])

    async def _sample_backlog(self) -> None:
        """Feed the page's backlog-over-time chart (at most once a minute); never raises."""
        if not self.metrics.backlog_due():
            return
        try:
            self.metrics.sample_backlog(await self.buffer.sinks())
        except Exception as exc:
            logger.warning("backlog sample for the status page failed: %s", exc)

    async def step(self) -> dict[str, int]:
        """Start the sink if needed, backfill if pending, then drain what is due."""
        if not self.started:
            await self._start()
            if not self.started:  # stopped while starting
                return {}
        if await self.buffer.needs_backfill(self.sink.name):
            await self.backfill(first_install=True)
        return await self.drain()

    async def _start(self) -> None:
        """The sink's start(), within start_timeout(sink): one that hangs (a CRM host that
        takes the connection and never answers) is cut off and fails like one that raised,
        so it is tried again (sooner at first: _pause) and the status says why."""
        if hasattr(self.sink, "use_buffer"):  # a sink that keeps state in the buffer
            self.sink.use_buffer(self.buffer)
        limit = start_timeout(self.sink)
        self.starting_since = time.time()
        try:
            async with asyncio.timeout(limit) as bound:
                # a stop meanwhile calls the start off (a bridge told to stop while its
                # CRM does not answer stops at once, not after the grace period)
                if not await self._unless_stopped(self.sink.start()):
                    return  # stopped first: the start was called off, nothing to record
        except TimeoutError:
            if not bound.expired():
                raise
            self._failed_starts += 1
            note = start_note(self.sink)
            raise StartTimedOut(f"start did not finish within {limit:g}s"
                                + (f" ({note})" if note else "")) from None
        except BaseException:
            self._failed_starts += 1
            raise
        finally:
            self.starting_since = None
        self._failed_starts = 0
        self.started = True

    def _pause(self) -> float:
        """Seconds until the next drain: the interval, or after a failed start a shorter
        wait doubling up to it (chats flow soon after the CRM answers again)."""
        interval = self.settings.sync_interval
        if self.started or not self._failed_starts:
            return interval
        # the exponent capped: 2 ** 1024 overflows a float (a start failing for days)
        return min(interval, START_AGAIN * 2.0 ** min(self._failed_starts - 1, 40))

    async def backfill(self, days: float | None = None, first_install: bool = False) -> int:
        """Queue the last `days` (default backfill_days) of chats; safe to repeat. The first
        install's counts back from when the sink was installed, not from when its start()
        first succeeded: a CRM down (or a token wrong) at first never shortens it."""
        started = time.time()
        anchor = started
        if first_install:
            anchor = min(started, await self.buffer.installed_at(self.sink.name) or started)
        since = anchor - (self.settings.backfill_days if days is None else days) * 86400
        for source in self.sources:
            await self._append_all(source, since, started)
        queued = await self.buffer.backfill(self.sink.name, since)
        logger.info("sink %s: backfill queued %d messages", self.sink.name, queued)
        return queued

    async def _append_all(self, source: Source, since: float, started: float) -> None:
        """Store what `source` recovers since `since`, each chunk paced as backfill."""
        recovered = source.backfill(datetime.fromtimestamp(since, UTC))
        chunk: list[Any] = []
        if inspect.isawaitable(recovered):
            recovered = await recovered
        if hasattr(recovered, "__aiter__"):
            async for message in recovered:
                chunk = await self._flush_if_full(chunk, message, since, started)
        else:
            for message in recovered or ():
                chunk = await self._flush_if_full(chunk, message, since, started)
        if chunk:
            await self._store_recovered(chunk, since, started)

    async def _store_recovered(self, chunk: list[Any], since: float, started: float) -> None:
        """Append a chunk a source recovered and mark it backfill by its messages' keys
        (not by when they were stored: a webhook's message stored meanwhile is live, and
        its chat's later messages must not pass it)."""
        await self.buffer.append(chunk)
        await self.buffer.recovered(self.sink.name, [(m.source, m.provider_id) for m in chunk],
                                    since, started)

    async def _flush_if_full(self, chunk: list[Any], message: Any, since: float,
                             started: float) -> list[Any]:
        chunk.append(message)
        if len(chunk) >= BACKFILL_CHUNK:
            await self._store_recovered(chunk, since, started)
            return []
        return chunk

    async def drain(self) -> dict[str, int]:
        """Deliver due batches, live ones first, backfill paced; return outcome counts."""
        totals: dict[str, int] = {}
        self._recorded_at = time.monotonic()
        while not self._stopping():
            await self._answer_request()
            if await self._drain_live(totals):
                continue
            # one backfill batch at a time, but batches are formed at full size: a smaller
            # claim must not cut the conversations it batches into one activity per message
            started = time.monotonic()
            claims = await self.buffer.claim(self.sink.name, self._concurrency(backfill=True),
                                             self.settings.lease, backfill=True,
                                             batch_size=self.settings.batch_limit,
                                             history_days=self.settings.backfill_days,
                                             after_lease=self.after_lease)
            _claimed_at(claims, started)
            if not claims:
                return totals
            await self._pace_backfill(totals)
            if self._stopping():  # never sent: given back, with nothing to settle
                await self._unclaim(claims)
                break
            started, self._live_mark = time.monotonic(), self._live_batches
            await self._backfill_step(claims, totals)
            self._rest_after_backfill(time.monotonic() - started)
        return totals

    async def _answer_request(self) -> None:
        """A person asked for a sync (wake): the sink's own waits end (hurry) and waiting
        batches are due now. Looked at before every claim, so a request that comes during a
        long drain applies to the chats claimed after it, not only at the next drain. Asks that
        come within HURRY_GAP of the last one answered wait out the rest of it and share one
        hurry (a flood of sync-now: one read of the CRM's users a second, not one per ask)."""
        if not self._retry_now:
            return
        if self._hurried_at is not None:  # a flood of asks: one hurry a HURRY_GAP
            wait = self._hurried_at + HURRY_GAP - time.monotonic()
            if wait > 0:
                await self._unless_stopped(asyncio.sleep(wait))
                if self._stopping():
                    return
        self._retry_now = False  # after the wait: the asks that came in it are answered now
        await self._hurry_sink()
        self._hurried_at = time.monotonic()
        hurried = await self.buffer.retry_now(self.sink.name)
        if hurried:
            logger.info("sink %s: %d waiting batch(es) retried now", self.sink.name, hurried)

    async def _hurry_sink(self) -> None:
        """Tell the sink a person asked for a sync (its optional `hurry()`, plain or async,
        given up to deliver_timeout): waits of its own that are not for safety (e.g. a
        number's recheck delay) end now, and what it reads once (e.g. the reps) is read
        again before the drain."""
        hurry = getattr(self.sink, "hurry", None)
        if hurry is None:
            return
        try:
            async with asyncio.timeout(self.settings.deliver_timeout):
                result = hurry()
                if inspect.isawaitable(result):
                    await self._unless_stopped(result)
        except TimeoutError:
            logger.warning("sink %s: hurry() took longer than deliver_timeout; the drain "
                           "goes on", self.sink.name)
        except Exception:  # the drain goes on with the sink's waits as they were
            logger.exception("sink %s: hurry() failed", self.sink.name)

    async def _unless_stopped(self, work: Any) -> bool:
        """Await `work` unless the loop is told to stop first: then it is called off (a
        start() or hurry() waiting on a CRM that does not answer never holds a stop back)
        and False is returned; True when it finished (its exception, if it raised)."""
        if self._stop is None:  # a runner driven directly (tests, tools)
            await work
            return True
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when a timeout (start_timeout, deliver_timeout) cancels this wait
            for waiter in (task, stopped):
                waiter.cancel()
            await asyncio.wait((task, stopped), timeout=STOP_WAIT)
        if not task.done() or task.cancelled():
            return False
        task.result()  # its exception, if it raised
        return True

    async def _drain_live(self, totals: dict[str, int]) -> bool:
        """Deliver the live batches due now; False when there were none."""
        started = time.monotonic()
        claims = await self.buffer.claim(self.sink.name, self.settings.batch_limit,
                                         self.settings.lease, backfill=False,
                                         batch_size=self.settings.batch_limit,
                                         history_days=self.settings.backfill_days,
                                         after_lease=self.after_lease)
        _claimed_at(claims, started)
        self._live_batches += len(claims)
        await self._deliver_all(claims, totals)
        return bool(claims)

    def _concurrency(self, backfill: bool = False) -> int:
        """Batches the sink takes at once (e.g. to share bulk calls among them); 1 unless
        the sink says more (`concurrency`, and `backfill_concurrency` for backfill)."""
        live = max(1, int(getattr(self.sink, "concurrency", 1)))
        if not backfill:
            return live
        return max(1, min(live, int(getattr(self.sink, "backfill_concurrency", live))))

    async def _backfill_step(self, claims: list[Claim], totals: dict[str, int]) -> None:
        """Deliver backfill claims; a sink taking several batches at once also gets the
        live ones arriving meanwhile, so a long step never holds a live message back."""
        if self._concurrency() == 1:
            await self._deliver_all(claims, totals)
            return
        done = asyncio.Event()

        async def live_meanwhile() -> None:
            while not done.is_set() and not self._stopping():
                if not await self._drain_live(totals):
                    with suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), LIVE_POLL)

        watcher = asyncio.create_task(live_meanwhile())
        try:
            await self._deliver_all(claims, totals)
        finally:
            done.set()
            await watcher

    async def _deliver_all(self, claims: list[Claim], totals: dict[str, int]) -> None:
        """Deliver claims, up to the sink's concurrency at once; each records its own."""
        gate = asyncio.Semaphore(self._concurrency())
        unsent: list[Claim] = []

        async def one(claim: Claim) -> None:
            async with gate:
                if self._stopping():  # never half-recorded: given back unsent
                    unsent.append(claim)
                else:
                    await self._deliver_into(claim, totals)

        await asyncio.gather(*(one(claim) for claim in claims))
        await self._unclaim(unsent)

    async def _unclaim(self, claims: list[Claim]) -> None:
        """Give back claims the sink never saw (stopping): a lease left to the next start
        would wait out a write that may still land (settle_after_lease), and there is
        none. A buffer that cannot do it (or fails) leaves them to that wait."""
        give_back = getattr(self.buffer, "unclaim", None)
        if not claims or give_back is None:
            return
        try:
            await give_back(claims)
        except Exception as exc:
            logger.warning("sink %s: %d unsent claim(s) not given back (%s: %s); they are "
                           "retried once their lease has settled", self.sink.name,
                           len(claims), type(exc).__name__, exc)

    async def _pace_backfill(self, totals: dict[str, int]) -> None:
        """Until backfill's turn comes, keep delivering live messages as they arrive.

        The rest makes room for live messages, so it is kept only when some came since the
        last step began. With none, the next step goes at once: a rest would only leave the
        rate budget idle (the step may have spent its time waiting for that budget, which
        refills while nothing is sent), so a backfill alone uses all of it.
        """
        if self._live_batches == self._live_mark:
            return
        while not self._stopping() and (left := self._backfill_ready_at - time.monotonic()) > 0:
            if not await self._drain_live(totals) and self._stop is not None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(left, LIVE_POLL))

    def _rest_after_backfill(self, spent: float) -> None:
        """Keep backfill to backfill_share of the sink's time while live messages arrive:
        rest in proportion (see _pace_backfill)."""
        share = self.settings.backfill_share
        rest = min(spent * (1 - share) / share, self.settings.lease / 2)
        self._backfill_ready_at = time.monotonic() + rest

    async def _deliver_into(self, claim: Claim, totals: dict[str, int]) -> None:
        for kind, n in (await self.deliver(claim)).items():
            totals[kind] = totals.get(kind, 0) + n
        await self._checkpoint()

    async def _checkpoint(self) -> None:
        """A drain that outlasts a slice (the interval, at least min_slice) records a sync.

        Under a backlog that never empties, `last synced` still moves, and the next sync
        is shown as due now.
        """
        now = time.monotonic()
        if now - self._recorded_at < max(self.settings.sync_interval, self.min_slice):
            return
        self._recorded_at = now
        await self._record_sync(0.0, None)

    async def _record_sync(self, next_in: float, error: str | None) -> None:
        """Note in the buffer that a sync ran now, and when the next one is due."""
        self.next_sync_at = time.time() + next_in
        try:
            await self.buffer.record_sync(self.sink.name, time.time(), self.next_sync_at, error)
        except Exception as exc:  # the drain goes on; only the status line is stale
            logger.warning("sink %s: could not record the sync in the buffer: %s: %s",
                           self.sink.name, type(exc).__name__, exc)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _lease_holds(self, claim: Claim) -> bool:
        """Whether the claim's lease outlasts a delivery starting now (deliver_timeout and
        the margin to record it), renewing it when it would not. A batch that waited its
        turn behind the others of a large claim, or whose process was paused (SIGSTOP, a
        frozen VM) since it was claimed, may have been taken by another drain once its
        lease expired: delivered here too, it would be posted twice (adv31).

        A delivery beginning more than START_WITHIN after its lease began renews it too:
        the lease then says when its writes were sent (by its start + START_WITHIN +
        deliver_timeout), so a killed process's batch is retried once they can no longer
        land and no later (settle_after_lease), and a silent process's lease is freed once
        its delivery has surely ended (cluster.spare)."""
        if claim.claimed_at is None:  # claimed by the caller itself (tests, tools)
            return True
        waited = time.monotonic() - claim.claimed_at
        held = self.settings.lease - waited
        if held >= self.settings.deliver_timeout + LEASE_MARGIN and waited <= START_WITHIN:
            return True
        renewed_at = time.monotonic()
        if await self.buffer.renew(claim, self.settings.lease):
            claim.claimed_at = renewed_at
            return True
        logger.warning("sink %s: lease on batch %s expired before its delivery began; "
                       "another drain took it", self.sink.name, claim.batch.key)
        return False

    async def deliver(self, claim: Claim) -> dict[str, int]:
        """Filter, hand to the sink, record outcomes; a crash of the sink is a retry."""
        if not await self._lease_holds(claim):
            return {}
        batch = claim.batch
        everything = claim.messages
        filtered = [self._filtered(m) for m in everything]
        kept = [m for m in filtered if m is not None]
        outcomes: list[Outcome | None] = [
            None if m is not None else Outcome.skipped("dropped by a filter") for m in filtered
        ]
        if kept:
            batch.messages = kept
            results = iter(await self._call_sink(claim))
            outcomes = [o if o is not None else next(results) for o in outcomes]
        try:
            counts = await self.buffer.complete(claim, outcomes, self.policy)
        except LeaseLost:
            logger.warning("sink %s: lease on batch %s expired before its outcome was recorded",
                           self.sink.name, batch.key)
            return {}
        except Exception:
            self.unrecorded.append((claim, outcomes))
            if self._recorder is None or self._recorder.done():
                self._recorder = asyncio.create_task(self._record_again())
            raise
        self._recorded(counts)
        return counts

    def _recorded(self, counts: dict[str, int]) -> None:
        self.metrics.delivered(self.sink.name, counts)
        self.last_delivered_at = time.time()

    async def _record_again(self) -> None:
        """Record the outcomes whose completion failed as soon as the buffer answers again
        (tried every RECORD_AGAIN seconds, backing off): their batches are done or wait
        for their retry at once, instead of staying leased until the lease runs out. A
        batch whose lease moved on meanwhile (another process freed it) is left alone."""
        wait = RECORD_AGAIN[0]
        while self.unrecorded and not self._stopping():
            if self._stop is None:  # a drain called directly, not under run()
                await asyncio.sleep(wait)
            else:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
            waiting, self.unrecorded = self.unrecorded, []
            results = await asyncio.gather(
                *(self.buffer.complete(claim, outcomes, self.policy)
                  for claim, outcomes in waiting), return_exceptions=True)
            for (claim, outcomes), result in zip(waiting, results, strict=True):
                if isinstance(result, dict):
                    self._recorded(result)
                    logger.info("sink %s: outcomes of batch %s recorded after the buffer "
                                "came back", self.sink.name, claim.batch.key)
                elif not isinstance(result, LeaseLost):
                    self.unrecorded.append((claim, outcomes))
            wait = min(wait * 2, RECORD_AGAIN[1])

    def _filtered(self, message: Message) -> Message | None:
        for item in self.filters:
            message = item.apply(message, self.sink.name)
            if message is None:
                return None
        return message

    async def _call_sink(self, claim: Claim) -> list[Outcome]:
        batch = claim.batch
        try:
            # asyncio.timeout, not wait_for: its expiry cancels this task at once, so a
            # process resumed after a pause past the timeout runs no step of the delivery
            # (wait_for's inner task could run one first, e.g. a post after the reply it
            # awaited came during the pause: adv31)
            async with asyncio.timeout(self.settings.deliver_timeout):
                outcomes = await self.sink.deliver(batch)
        except TimeoutError:
            # Cut off mid-call, the sink may have a CRM write in flight that still commits:
            # wait as long again before the retry (which looks for its keys first), or as
            # long as the sink says such a write may take to land (its `write_settle`: a
            # deliver_timeout shorter than the sink's own call timeout posted twice, adv36)
            claim.uncertain = True
            limit = self.settings.deliver_timeout
            settle = max(limit, float(getattr(self.sink, "write_settle", 0) or 0))
            settled = datetime.fromtimestamp(time.time() + settle, UTC)
            # a CRM too slow to answer is an outage like one that answers 503
            return [Outcome.retry(f"sink timed out after {limit:g}s", not_before=settled,
                                  transient=True)] * len(batch.messages)
        except Exception as exc:
            claim.uncertain = True
            logger.exception("sink %s raised while delivering batch %s", self.sink.name, batch.key)
            return [Outcome.retry(f"sink error: {type(exc).__name__}: {exc}")] * len(batch.messages)
        checked = _checked_outcomes(outcomes, len(batch.messages))
        if isinstance(checked, str):  # a plugin bug; the sink may have posted: say uncertain
            claim.uncertain = True
            return [Outcome.retry(f"{checked} (a bug in the sink plugin)")] * len(batch.messages)
        return checked

    async def _sleep(self, stop: asyncio.Event, pause: float) -> None:
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()


def start_timeout(sink: Sink) -> float:
    """Longest a sink's start() may take: its `start_timeout` (LeadSquared: bounded by its
    own call timeouts), else its deliver_timeout."""
    declared = getattr(sink, "start_timeout", None)
    return float(declared) if declared else float(sink.settings.deliver_timeout)


def start_note(sink: Sink) -> str | None:
    """What a starting sink waits for, in its own words (its optional `start_note()`,
    e.g. the CRM host and the call that keeps failing); None when it says nothing."""
    note = getattr(sink, "start_note", None)
    if note is None:
        return None
    try:
        return note() or None
    except Exception:  # the page's words, never a reason to fail
        logger.exception("sink %s: start_note() failed", getattr(sink, "name", "?"))
        return None


def write_settle(sink: Sink) -> float:
    """Seconds a CRM write may still take to commit after it was sent: the sink's
    `write_settle` (LeadSquared: 3 x its call timeout), else its deliver_timeout."""
    declared = getattr(sink, "write_settle", None)
    return float(declared) if declared is not None else float(sink.settings.deliver_timeout)


def settle_after_lease(sink: Sink) -> float:
    """How long after the end of a lease whose holder is gone (killed: its lease freed at
    a runner's start, by a process seeing it dead, or expired) its batch's retry must
    wait: a write it had in flight may land until then, and the retry's key check would
    miss it and post again. Every write was sent by the lease's start (or renewal) +
    START_WITHIN + deliver_timeout (SinkRunner._lease_holds), and before the lease's end;
    then it may take write_settle to land. Negative: that moment is before the lease's
    end."""
    settings = sink.settings
    sent_by = min(settings.lease - LEASE_MARGIN, START_WITHIN + settings.deliver_timeout)
    return sent_by - settings.lease + write_settle(sink)


def _checked_outcomes(result: Any, n: int) -> list[Outcome] | str:
    """deliver()'s answer as a list of n outcomes, or what is wrong with it (rule 1 of the
    Sink contract: the batch is retried with this as its reason)."""
    try:
        outcomes = list(result or [])
    except TypeError:  # not iterable: e.g. one Outcome instead of a list of them
        return f"sink returned {type(result).__name__}, not a list of one Outcome per message"
    if len(outcomes) != n:
        return f"sink returned {len(outcomes)} outcomes for {n} messages"
    if not all(isinstance(o, Outcome) for o in outcomes):
        wrong = next(o for o in outcomes if not isinstance(o, Outcome))
        return f"sink returned {type(wrong).__name__} where an Outcome belongs"
    return outcomes


def _claimed_at(claims: list[Claim], started: float) -> None:
    """Note when the claims' leases began (time.monotonic() as the claim was asked for:
    the lease counts from no later than that)."""
    for claim in claims:
        claim.claimed_at = started
