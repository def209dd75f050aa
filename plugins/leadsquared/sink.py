"""The LeadSquared sink: a chat window becomes an activity on the lead and its opportunities."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import Batch, Outcome
from bridge.metrics import Metrics
from bridge.model import is_group
from plugins.leadsquared.activity_type import FIELDS, resolve_event
from plugins.leadsquared.attachments import attach_files, follow_ups, held_line
from plugins.leadsquared.bulk import BULK_MAX, BulkPoster, OpportunityBulk
from plugins.leadsquared.client import (
    LeadSquaredClient,
    LeadSquaredError,
    activity_item,
    opportunity_item,
)
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig, bulk_rate, files_base
from plugins.leadsquared.directory import LeadDirectory
from plugins.leadsquared.groups import contact_label, deliver_group
from plugins.leadsquared.opportunities import opportunity_types, pick_opportunities
from plugins.leadsquared.people import (
    follow_number_change,
    not_found,
    phone_of,
    resolve,
    unreachable,
)
from plugins.leadsquared.phones import lookup_candidates
from plugins.leadsquared.ratelimit import RateLimiter, parse_rate
from plugins.leadsquared.transcript import Part, lsq_time, note, split, transcript_lines

logger = logging.getLogger(__name__)

SEVERITY = {"delivered": 0, "retry": 1, "rejected": 2}
WRITE_SETTLE = 3  # times the timeout after its send, a write with no answer has settled


@dataclass
class _Posting:
    """What one delivery learned: keys already in the CRM, outcomes per part."""

    existing: dict[str, str] = field(default_factory=dict)
    results: dict[str, Outcome] = field(default_factory=dict)
    stop: Outcome | None = None  # a rate limit or outage: do not try further parts
    opportunity_stop: str | None = None  # rate-limited on an opportunity: try no more now
    last_kind: str | None = None  # the kind of the last failed post's error
    unchecked: dict[str, str] = field(default_factory=dict)  # opportunity -> why not checked
    cached_lead: bool = False  # the lead id came from the buffer's mapping, may be stale


class LeadSquaredSink:
    """Posts each conversation window as an activity of one dedicated type."""

    name = "leadsquared"

    def __init__(self, config: LeadSquaredConfig, metrics: Metrics | None = None) -> None:
        self.settings = config
        self.metrics = metrics
        self.client: LeadSquaredClient | None = None
        calls, per = parse_rate(config.rate_limit)
        self.limiter = RateLimiter(calls, per)
        self.bulk_limiter = RateLimiter.from_text(bulk_rate(config))
        self.bulk = BulkPoster(lambda: self.client, self.bulk_limiter) if config.bulk else None
        # set at start when bulk is on and the key's user has an email (see start())
        self.opportunity_bulk: OpportunityBulk | None = None
        self.owner_email: str | None = None
        # deliveries the core may run at once: bulk calls gather rows across them
        self.concurrency = BULK_MAX if config.bulk else 1
        # Back off in step with the account's rate window: a refused call waits one window
        # (5 s at the default 10/5s), other transient failures a fifth of it, then doubling.
        self._backoff_base = per / 5
        self.event: int | None = None
        self.tz: tzinfo = UTC
        self.app_host: str | None = None
        self._scheme = "https"
        self._opportunities: dict[str, tuple[float, list[str]]] = {}
        self._opportunity_types: list[int] | None = None  # from config, or looked up once
        self._types_lock = asyncio.Lock()
        self._simulator: Any = None  # the bundled simulator when host is "simulator"
        self.simulated = "LeadSquared" if config.host == SIMULATOR else None  # Sink contract
        self.files_base = ""  # where File Upload goes (config.files_base)
        self.allow_attachments = True  # the activity type's Allow Attachments setting
        self._rows: Any = None  # the buffer's directory rows for this sink (use_buffer)
        self.directory: LeadDirectory | None = None

    @property
    def backfill_concurrency(self) -> int:
        """Backfill batches at once: all a bulk call holds when leads come from the
        directory; few when each needs remote lookups, so the ordinary budget's queue
        stays short and a live message is not stuck behind it."""
        if self.bulk is None:
            return 1
        return BULK_MAX if self.directory is not None and self.directory.enabled else 4

    def use_buffer(self, buffer: Any) -> None:
        """The buffer that holds the lead directory and the unknown numbers (issue 15), and
        on PostgreSQL the rate budgets every bridge process shares (issue 18)."""
        self._rows = buffer.directory(self.name)
        if hasattr(buffer, "shared_budget"):  # PostgreSQL: one budget for every process
            self.limiter.share(buffer.shared_budget(self.name, "ordinary"))
            self.bulk_limiter.share(buffer.shared_budget(self.name, "bulk"))

    async def start(self) -> None:
        """Find the host and the activity type (created if missing); once per run."""
        cfg = self.settings
        await self.close()  # a failed earlier start may have left a client
        base = await self._base_url()
        self.client = LeadSquaredClient(base, cfg.access_key, cfg.secret_key,
                                        limiter=self.limiter, timeout=cfg.timeout,
                                        backoff_base=self._backoff_base,
                                        metrics=self.metrics, sink=self.name,
                                        bulk_limiter=self.bulk_limiter)
        user = await self.client.user_by_access_key()
        self.tz = _zone(user.get("TimeZone"))
        # ByOpportunityId requires ActivityOwnerEmail on every row (reference §2e); the
        # reference does not say whose email it must be. We send the email of the access
        # key's user (UserByAccessKey.Get's EmailAddress, which the reference does not list
        # among that answer's fields: unconfirmed). Without one, opportunity posts go singly.
        self.owner_email = user.get("EmailAddress") or None
        if self.bulk is not None and self.owner_email:
            self.opportunity_bulk = OpportunityBulk(lambda: self.client)
        self.app_host = (user.get("LSQCommonServiceURLs") or {}).get("app")
        self._scheme = base.split("://", 1)[0]
        self.event = await resolve_event(self.client, cfg.activity_type, cfg.activity_event)
        self.files_base = files_base(base, cfg.files_host)
        self.allow_attachments = await self._allows_attachments()
        if self._rows is not None and cfg.lead_directory != "off":
            self.directory = LeadDirectory(self.client, self._rows, mode=cfg.lead_directory,
                                           limit=cfg.lead_directory_max,
                                           refresh_every=cfg.lead_directory_refresh)
            await self.directory.start()
        logger.info("LeadSquared sink ready: activity event %s on %s", self.event, base)

    async def _allows_attachments(self) -> bool:
        """The type's AllowAttachments; unknown (not said, or unreadable) counts as allowed,
        and Attachment/Add's refusal is then the attachment's dead letter, with the reason."""
        try:
            allowed = (await self.client.activity_setting(self.event)).get("AllowAttachments")
        except LeadSquaredError as exc:
            logger.warning("could not read whether the activity type allows attachments: %s",
                           exc)
            return True
        if allowed is not None and str(allowed) not in ("1", "True", "true"):
            logger.warning("the activity type does not allow attachments: media files stay in "
                           "the bridge (turn on Allow Attachments in LeadSquared)")
            return False
        return True

    async def _base_url(self) -> str:
        if self.settings.host == SIMULATOR:
            return await self._start_simulator()
        return self.settings.host if self.settings.host != "auto" else await self._discover()

    async def _start_simulator(self) -> str:
        """The bundled simulator on a loopback port, with demo leads: nothing leaves here."""
        from plugins.leadsquared.simulator import Simulator, add_demo_data

        self._simulator = Simulator(self.settings.access_key, self.settings.secret_key)
        add_demo_data(self._simulator)
        await self._simulator.start("127.0.0.1", 0)
        logger.warning("plugins.leadsquared.host is 'simulator': chats go to the bundled "
                       "LeadSquared simulator at %s, not to a real account",
                       self._simulator.base_url)
        return self._simulator.base_url

    async def _discover(self) -> str:
        probe = LeadSquaredClient(self.settings.discovery_url, self.settings.access_key,
                                  self.settings.secret_key, limiter=self.limiter,
                                  timeout=self.settings.timeout, backoff_base=self._backoff_base,
                                  metrics=self.metrics, sink=self.name)
        try:
            user = await probe.user_by_access_key()
        finally:
            await probe.close()
        api = (user.get("LSQCommonServiceURLs") or {}).get("api")
        if not api:
            raise RuntimeError("UserByAccessKey.Get returned no API host; set host explicitly")
        scheme = self.settings.discovery_url.split("://", 1)[0]
        return f"{scheme}://{api}"

    def record_url(self, record_id: str) -> str | None:
        """The lead's page in the LeadSquared web app (host from UserByAccessKey.Get)."""
        # The reference gives the web-app host but not the page path; LeadDetails?LeadID=
        # is the lead page's address in the web app as users see it. Unconfirmed by the docs.
        if not self.app_host:
            return None
        return f"{self._scheme}://{self.app_host}/LeadManagement/LeadDetails?LeadID={record_id}"

    def rate_budget(self) -> tuple[int, float]:
        """The CRM's rate limit as (calls, per seconds): the page charts calls against it."""
        return self.limiter.calls, self.limiter.per

    def bulk_rate_budget(self) -> tuple[int, float] | None:
        """The bulk calls' own budget (reference §3), when bulk posts are on."""
        return (self.bulk_limiter.calls, self.bulk_limiter.per) if self.bulk else None

    def describe(self) -> dict[str, Any]:
        """Live state for the status page: both rate limits and how full their windows are."""
        state, bulk = self.limiter.state, self.bulk_limiter.state
        return {"rate_limit": self.settings.rate_limit, "calls_in_window": state["in_window"],
                "waiting_calls": state["waiting"],
                "throttled_for_s": round(state["paused_for"], 1),
                "bulk_rate_limit": bulk_rate(self.settings) if self.bulk else "off",
                "bulk_calls_in_window": bulk["in_window"],
                "bulk_throttled_for_s": round(bulk["paused_for"], 1),
                "lead_directory": "on" if self.directory and self.directory.enabled
                else "off",
                "activity_event": self.event, "opportunity_types": self._opportunity_types,
                "attachments": "allowed" if self.allow_attachments else
                "not allowed by the activity type: media files are held in the bridge"}

    async def close(self) -> None:
        if self.bulk is not None:
            await self.bulk.close()
        if self.opportunity_bulk is not None:
            await self.opportunity_bulk.close()
            self.opportunity_bulk = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._simulator is not None:
            await self._simulator.stop()
            self._simulator = None

    async def deliver(self, batch: Batch) -> list[Outcome]:
        """One outcome per message: delivered when every part holding it is posted."""
        if self.bulk is None:
            return await self._deliver(batch)
        with self.bulk.delivering():
            return await self._deliver(batch)

    async def _deliver(self, batch: Batch) -> list[Outcome]:
        if is_group(batch.conversation.key):
            return await deliver_group(self, batch)
        reason = unreachable(self.settings, batch.conversation)
        if reason:
            return _all(batch, Outcome.held(reason))
        cached = batch.record_id is not None
        sent = time.time()
        try:
            lead = batch.record_id or await self._resolve(batch)
        except LeadSquaredError as exc:  # an unknown outcome here is a lead create
            return _all(batch, self._late_write_retry(exc, sent) or _outcome(exc))
        if lead is None:
            return _all(batch, Outcome.held(not_found(self.settings, batch.conversation)))
        batch.record_id = lead
        try:
            await follow_number_change(self.client, self.settings, lead, batch.messages)
        except LeadSquaredError as exc:
            return _all(batch, await self._forget_if_gone(exc, batch, lead, cached)
                        or _outcome(exc))
        outcomes = await self._post_batch(batch, lead, cached)
        if cached and batch.record_id is None:
            # The cached lead was merged or deleted: look the number up again, now (the
            # second pass has no cached lead, so it cannot come back here).
            logger.info("cached lead of a conversation no longer exists; looking it up again")
            return await self._deliver(batch)
        return outcomes

    async def _resolve(self, batch: Batch) -> str | None:
        """The lead: from the directory, else remote (one lookup when the directory is
        on), never again for a number that matched nothing within unknown_recheck."""
        phone = phone_of(batch.conversation)
        if self.directory is not None:
            try:
                await self.directory.refresh_if_due()
            except LeadSquaredError as exc:  # the directory is a shortcut, never a blocker
                logger.warning("lead directory refresh failed: %s", exc)
            if phone and (lead := await self.directory.find(phone)):
                return lead
        if phone and self._rows is not None and not self.settings.create_leads:
            checked = await self._rows.unknown_checked_at(phone)
            if checked is not None and time.time() - checked < self.settings.unknown_recheck:
                return None
        if phone and self.directory is not None and self.directory.enabled \
                and not self.settings.create_leads:
            leads = await self.client.leads_by_phone(lookup_candidates(phone)[0])
            lead = str(leads[0]["ProspectID"]) if leads else None
        else:
            lead = await resolve(self.client, self.settings, batch.conversation, batch.messages)
        if phone and self._rows is not None:
            if lead is None:
                await self._rows.note_unknown(phone, time.time())
            else:
                await self._rows.forget_unknown(phone)
        return lead

    async def _post_batch(self, batch: Batch, lead: str, cached: bool) -> list[Outcome]:
        posting = _Posting(existing=dict(batch.ledger), cached_lead=cached)
        unread: LeadSquaredError | None = None
        try:
            opportunities = await self._opportunities_of(lead)
        except LeadSquaredError as exc:
            # Never "no opportunities", and never a reason to hold back the lead's activity.
            opportunities, unread = [], exc
        again = batch.uncertain or batch.attempt > 1  # an earlier try may have posted
        try:
            if again:
                posting.existing.update(await self._keys_in_crm(lead, []))
        except LeadSquaredError as exc:
            return _all(batch, await self._forget_if_gone(exc, batch, lead, cached)
                        or _outcome(exc))
        for opportunity in opportunities if again else []:
            try:  # each opportunity's own check: a failed one waits alone
                posting.existing.update(await self._keys_in_crm(lead, [opportunity], False))
            except LeadSquaredError as exc:
                posting.unchecked[opportunity] = (
                    f"could not check it for earlier posts: {_outcome(exc).reason}")
        follow = follow_ups(batch)  # texts already posted whose files come now
        parts = self._parts(batch, [m for m in batch.messages if m.id not in follow])
        parts += [Part(key, [], [m]) for m in batch.messages if (key := follow.get(m.id))]
        if self.bulk is None:
            for part in parts:
                await self._post_part(batch, part, lead, posting)
        else:  # all the parts' rows at once, so they share bulk calls
            await asyncio.gather(*(self._post_part(batch, part, lead, posting)
                                   for part in parts))
        landed = [part for part in parts if part.key not in posting.results]
        waiting = await self._post_opportunities(batch, landed, lead, opportunities, posting)
        for part in landed:
            waiting[part.key] += await attach_files(self, batch, part, posting.existing[part.key],
                                                    posting.existing)
            posting.results[part.key] = (Outcome.retry("; ".join(waiting[part.key]))
                                         if waiting[part.key] else Outcome.delivered())
        if unread is not None:
            _unread_opportunities(posting, unread)
        return _per_message(batch, parts, posting.results)

    def _parts(self, batch: Batch, messages: list) -> list[Part]:
        if not messages:
            return []
        contact = contact_label(batch.conversation)
        lines = transcript_lines(messages, self.tz, contact, self.settings.business_name)
        if not self.allow_attachments:
            lines = [held_line(line, m) for m, line in zip(messages, lines, strict=True)]
        if self.settings.granularity == "message":
            return [p for m, line in zip(messages, lines, strict=True)
                    for p in split(batch.key, [m], [line], self.settings.note_limit)]
        return split(batch.key, messages, lines, self.settings.note_limit)

    async def _post_part(self, batch: Batch, part: Part, lead: str, posting: _Posting) -> None:
        """The part's activity on the lead; a failure is the part's result (it waits or
        fails), else the part goes on to its opportunities and files."""
        if part.failed is not None:  # its message cannot be rendered: it fails alone
            posting.results[part.key] = Outcome.rejected(part.failed)
            return
        if posting.stop is not None:
            posting.results[part.key] = posting.stop
            return
        outcome = await self._post_target(batch, part, lead, None, posting)
        if outcome is not None:  # the lead's own activity failed: the part waits or fails
            posting.results[part.key] = outcome
            if outcome.kind == "retry":
                posting.stop = Outcome.retry(f"not attempted after: {outcome.reason}")

    async def _post_opportunities(self, batch: Batch, parts: list[Part], lead: str,
                                  opportunities: list[str],
                                  posting: _Posting) -> dict[str, list[str]]:
        """Each opportunity's activities, as targets of their own: a failing opportunity
        never holds back, rejects or re-posts the lead's activity. With bulk on, the parts'
        rows for one opportunity are handed in together, so several share ByOpportunityId
        calls; why each part still waits, by part key."""
        waiting: dict[str, list[str]] = {part.key: [] for part in parts}

        async def one(part: Part, opportunity: str) -> None:
            if reason := await self._opportunity(batch, part, lead, opportunity, posting):
                waiting[part.key].append(reason)

        for opportunity in opportunities:
            if self.opportunity_bulk is None or self.bulk is None:
                for part in parts:
                    await one(part, opportunity)
                continue
            with self.bulk.aside():  # no lead rows from this delivery meanwhile
                await asyncio.gather(*(one(part, opportunity) for part in parts))
        return waiting

    async def _opportunity(self, batch: Batch, part: Part, lead: str, opportunity: str,
                           posting: _Posting) -> str | None:
        """Post on one opportunity; why it still waits, or None when it is settled (landed,
        or given up as a dead letter of its own)."""
        key = f"{part.key}@{opportunity}"
        earlier = batch.targets.get(key)
        if key in posting.existing or (earlier is not None and earlier.dead):
            return None
        if opportunity in posting.unchecked:
            outcome = Outcome.retry(posting.unchecked[opportunity])
        elif posting.opportunity_stop is not None:
            outcome = Outcome.retry(f"not attempted after: {posting.opportunity_stop}")
        else:
            outcome = await self._post_target(batch, part, lead, opportunity, posting)
            if outcome is None:
                return None
        failure = batch.fail_target(
            key, f"opportunity {opportunity}", outcome.reason, [m.id for m in part.messages],
            self.settings.max_attempts, final=outcome.kind == "rejected")
        if failure.dead:
            logger.warning("gave up posting on an opportunity after %d tries: %s",
                           failure.attempts, failure.reason)
            return None
        if posting.opportunity_stop is None and posting.last_kind == "rate_limited":
            posting.opportunity_stop = outcome.reason  # the budget is spent: spare the rest
        return f"opportunity {opportunity}: {outcome.reason}"

    async def _post_target(self, batch: Batch, part: Part, lead: str, target: str | None,
                           posting: _Posting) -> Outcome | None:
        """Post the part on the lead (target None) or an opportunity; None once it is in
        the CRM (now, or found there after an unknown outcome), else the failure."""
        key = part.key if target is None else f"{part.key}@{target}"
        if key in posting.existing:
            return None
        sent = time.time()
        try:
            activity = await self._post(batch, part, lead, target, key)
        except LeadSquaredError as exc:
            posting.last_kind = exc.kind
            return await self._after_failure(exc, batch, lead, target, key, posting, sent)
        batch.remember(key, activity)
        posting.existing[key] = activity
        return None

    async def _post(self, batch: Batch, part: Part, lead: str, target: str | None,
                    key: str) -> str:
        contact = contact_label(batch.conversation)
        fields = {FIELDS["key"]: key, FIELDS["count"]: str(len(part.messages)),
                  FIELDS["first"]: lsq_time(part.first_at), FIELDS["last"]: lsq_time(part.last_at),
                  FIELDS["number"]: batch.conversation.key}
        text = note(part, contact, batch.conversation.key)
        if target is None and self.bulk is not None:
            return await self.bulk.post(activity_item(lead, self.event, text, part.last_at,
                                                      fields))
        if target is not None and self.opportunity_bulk is not None:
            item = opportunity_item(self.event, text, part.last_at, fields, self.owner_email)
            if activity := await self.opportunity_bulk.post(target, item):
                return activity  # else no other row came with it: posted singly below
        return await self.client.post_activity(lead, self.event, text, part.last_at, fields,
                                               opportunity_id=target)

    async def _after_failure(self, exc: LeadSquaredError, batch: Batch, lead: str,
                             target: str | None, key: str, posting: _Posting,
                             sent: float) -> Outcome | None:
        """None when the post turns out to have landed after all; else the outcome."""
        if exc.kind == "unknown_outcome":
            found = await _once(exc, ("keys", lead, target),
                                lambda: self._find_keys(lead, target))
            found = found.get(key)
            if found:
                batch.remember(key, found)
                posting.existing[key] = found
                return None
            return self._late_write_retry(exc, sent) or _outcome(exc)
        return await self._forget_if_gone(exc, batch, lead, posting.cached_lead) \
            or _outcome(exc)

    def _late_write_retry(self, exc: LeadSquaredError, sent: float) -> Outcome | None:
        """A write that timed out may still be on its way and commit late: its retry (which
        looks for the key before posting again) waits until it must have landed or died.

        A request cannot commit much after the client gave up unless something holds it
        (a proxy, a congested link); we allow twice the timeout more (so 90 s after the
        send at the default 30 s timeout; a 70 s hold was seen to post twice).
        """
        if exc.kind != "unknown_outcome" or not exc.in_flight:
            return None
        settled = sent + WRITE_SETTLE * self.settings.timeout
        return Outcome.retry(f"{_outcome(exc).reason} (looked for again before a re-post)",
                             not_before=datetime.fromtimestamp(settled, UTC))

    async def _forget_if_gone(self, exc: LeadSquaredError, batch: Batch, lead: str,
                              cached: bool) -> Outcome | None:
        """A refusal on a cached lead that no longer exists: forget it (the retry outcome)."""
        if exc.kind != "rejected" or not cached or await _once(
                exc, ("lead", lead), lambda: self._lead_exists(lead)):
            return None
        batch.record_id = None  # merged or deleted: the number is looked up again
        self._opportunities.pop(lead, None)
        if self._rows is not None:
            await self._rows.drop(lead)
        return Outcome.retry("the cached lead no longer exists; it will be looked up again")

    async def _find_keys(self, lead: str, target: str | None) -> dict[str, str]:
        """The keys on the lead (target None) or the opportunity; none when unreadable."""
        try:
            return await self._keys_in_crm(lead, [target] if target else [], lead_too=not target)
        except LeadSquaredError:
            return {}

    async def _lead_exists(self, lead: str) -> bool:
        try:
            return await self.client.lead_by_id(lead) is not None
        except LeadSquaredError:
            return True  # cannot tell: keep the mapping

    async def _keys_in_crm(self, lead: str, opportunities: list[str],
                           lead_too: bool = True) -> dict[str, str]:
        """Idempotency keys already on the lead and opportunities -> activity ids."""
        found: dict[str, str] = {}
        if lead_too:
            for activity in await self.client.lead_activities(lead, self.event):
                if key := _field(activity, FIELDS["key"]):
                    found[key] = str(activity.get("Id") or activity.get("ProspectActivityId"))
        for opportunity in opportunities:
            for activity in await self.client.opportunity_activities(
                    opportunity, self.event, columns=(FIELDS["key"],)):
                if key := _field(activity, FIELDS["key"]):
                    found[key] = str(activity.get("Id") or activity.get("ProspectActivityId"))
        return found

    async def _opportunities_of(self, lead: str) -> list[str]:
        """Ids of the lead's opportunities that get the activity too, asked per type
        (a live account refuses GetOpportunitiesOfLead without opportunityType)."""
        choice = self.settings.opportunities
        if choice is False:
            return []
        cached = self._opportunities.get(lead)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        rows = []
        for kind in await self._types():
            rows.extend(await self.client.opportunities_of_lead(lead, kind))
        rule = None if choice is True else choice.model_copy(update={"types": None})
        ids = pick_opportunities(rows, rule)
        self._opportunities[lead] = (time.monotonic() + self.settings.opportunity_cache, ids)
        return ids

    async def _types(self) -> list[int]:
        """The opportunity type codes: from config, else looked up once from the account."""
        async with self._types_lock:  # concurrent deliveries look them up once
            if self._opportunity_types is None:
                choice = self.settings.opportunities
                configured = None if isinstance(choice, bool) else choice.types
                self._opportunity_types = configured or opportunity_types(
                    await self.client.activity_types())
        return self._opportunity_types


async def _once(exc: LeadSquaredError, spot: tuple, check: Callable[[], Awaitable[Any]]) -> Any:
    """One check per failed call and spot: the rows of a failed bulk call share its error,
    so they share the look that follows it (one read of the opportunity, not one a row)."""
    checks = exc.__dict__.setdefault("checks", {})
    if spot not in checks:
        checks[spot] = asyncio.ensure_future(check())
    return await asyncio.shield(checks[spot])


def _unread_opportunities(posting: _Posting, exc: LeadSquaredError) -> None:
    """Parts whose lead activity landed wait for the opportunities that could not be read."""
    why = f"opportunities of the lead could not be read: {_outcome(exc).reason}"
    for key, outcome in posting.results.items():
        if outcome.kind == "delivered":
            posting.results[key] = Outcome.retry(why)


def _field(activity: dict, name: str) -> str | None:
    """A custom field's value: in `ActivityFields` (Retrieve on a live account), in the
    `Data` list (older doc copies), a `Fields` list, or at the top level (flat lists)."""
    fields = activity.get("ActivityFields")
    if isinstance(fields, dict) and fields.get(name) is not None:
        return fields[name]
    for entry in activity.get("Data") or []:
        if entry.get("Key") == name:
            return entry.get("Value")
    for entry in activity.get("Fields") or []:
        if entry.get("SchemaName") == name:
            return entry.get("Value")
    return activity.get(name)


def _outcome(exc: LeadSquaredError) -> Outcome:
    if exc.kind == "rejected":
        return Outcome.rejected(f"LeadSquared {exc.exception_type or 'error'}: {exc.message}")
    if exc.kind == "auth":
        return Outcome.retry("LeadSquared refused the access key (401): check access_key, "
                             "secret_key and that the key's user is active")
    return Outcome.retry(f"LeadSquared {exc.kind.replace('_', ' ')}: {exc.message}")


def _all(batch: Batch, outcome: Outcome) -> list[Outcome]:
    return [outcome] * len(batch.messages)


def _per_message(batch: Batch, parts: list[Part], results: dict[str, Outcome]) -> list[Outcome]:
    """A message's outcome is the worst of the parts that hold it."""
    worst: dict[int, Outcome] = {}
    for part in parts:
        outcome = results.get(part.key, Outcome.retry("not attempted"))
        for message in part.messages:
            current = worst.get(id(message))
            if current is None or SEVERITY[outcome.kind] > SEVERITY[current.kind]:
                worst[id(message)] = outcome
    return [worst.get(id(m), Outcome.delivered()) for m in batch.messages]


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
