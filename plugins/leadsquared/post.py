"""Step 3 of a delivery: post each part on the lead, then on each opportunity.

A post goes in a bulk call when bulk is on (rows of concurrent deliveries share calls),
else singly. Whatever the path, a part's post ends one of three ways: it is in the CRM
(now, or found there by its idempotency key after an answer we could not read), it waits
(retry), or LeadSquared refused it. A bulk row that came back without an activity id is
an unknown outcome settled by the key check, never a refusal: when the key is not there
and the row said it was not created, it is posted again at once, singly, whose answer is
exact. A failing opportunity never holds back, rejects or re-posts the lead's activity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge import Batch, Outcome
from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.api import activity_item, opportunity_item, row_error, said_not_created
from plugins.leadsquared.bulk import BulkPoster, OpportunityBulk, read_row, refused_whole
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.groups import contact_label
from plugins.leadsquared.keys import KeyCheck
from plugins.leadsquared.outcomes import late_write_retry, outcome_of, owner_refused
from plugins.leadsquared.resolve import Lead
from plugins.leadsquared.targets import Plan
from plugins.leadsquared.transcript import Part, lsq_time, note

logger = logging.getLogger(__name__)

Stale = Callable[[LeadSquaredError, Batch, Lead], Awaitable[Outcome | None]]
# Whether a rep (email) whose owned post was refused can own nothing now (users read again;
# None: they could not be read)
OwnerGone = Callable[[str], Awaitable[bool | None]]


@dataclass(frozen=True)
class Failed:
    """Why a target's post did not land, and the kind of the error behind it."""

    outcome: Outcome
    kind: str


class Poster:
    """Posts parts on their targets; one per sink run."""

    def __init__(self, client: LeadSquaredClient, settings: LeadSquaredConfig, event: int,
                 keys: KeyCheck, stale: Stale, bulk: BulkPoster | None,
                 opportunity_bulk: OpportunityBulk | None, owner_email: str | None,
                 business_field: str | None = None,
                 owner_gone: OwnerGone | None = None) -> None:
        self.client = client
        self.settings = settings
        self.event = event
        self.keys = keys
        self.stale = stale  # forgets a cached lead that no longer exists (resolve step)
        self.bulk = bulk
        self.opportunity_bulk = opportunity_bulk if owner_email else None
        self.owner_email = owner_email
        self.business_field = business_field  # the type's field naming number and rep
        self.owner_gone = owner_gone

    async def on_lead(self, batch: Batch, plan: Plan) -> dict[str, Outcome]:
        """Each part's activity on the lead; the outcomes of the parts that did not land.
        Singly, the first part that must wait stops the rest; in bulk all go at once."""
        results: dict[str, Outcome] = {}
        stop: list[Outcome] = []

        async def one(part: Part) -> None:
            if part.failed is not None:  # its message cannot be rendered: it fails alone
                results[part.key] = Outcome.rejected(part.failed)
            elif stop:  # as transient as the failure that stopped it
                results[part.key] = Outcome.retry(f"not attempted after: {stop[0].reason}",
                                                  transient=stop[0].transient)
            elif failed := await self._post(batch, plan, part, None):
                results[part.key] = failed.outcome
                if failed.outcome.kind == "retry":
                    stop.append(failed.outcome)

        if self.bulk is None:
            for part in plan.parts:
                await one(part)
        else:  # all the parts' rows at once, so they share bulk calls
            await asyncio.gather(*(one(part) for part in plan.parts))
        return results

    async def on_opportunities(self, batch: Batch, plan: Plan,
                               landed: list[Part]) -> dict[str, list[Outcome]]:
        """Each landed part on each opportunity, a target of its own; why each part still
        waits (a retry each, transient when that opportunity's post failed only so). With
        bulk on, a part's rows for one opportunity go in together, so several share a
        ByOpportunityId call."""
        waiting: dict[str, list[Outcome]] = {part.key: [] for part in landed}
        brake: list[str] = []  # a rate limit on one opportunity: spare the rest for now
        gone: dict[str, asyncio.Task[bool | None]] = {}  # owners checked after a refusal

        async def one(part: Part, opportunity: str) -> None:
            if wait := await self._on_opportunity(batch, plan, part, opportunity, brake,
                                                  gone):
                waiting[part.key].append(wait)

        for opportunity in plan.opportunities:
            if self.opportunity_bulk is None or self.bulk is None:
                for part in landed:
                    await one(part, opportunity)
                continue
            with self.bulk.aside():  # no lead rows from this delivery meanwhile
                await asyncio.gather(*(one(part, opportunity) for part in landed))
        return waiting

    async def _on_opportunity(self, batch: Batch, plan: Plan, part: Part, opportunity: str,
                              brake: list[str],
                              gone: dict[str, asyncio.Task[bool | None]] | None = None
                              ) -> Outcome | None:
        """Why the part still waits on this opportunity; None once settled (landed, or
        given up as a dead target of its own). A transient failure (5xx, a gateway's page,
        a timeout, 429, a lost answer) is an outage's: not counted to max_attempts, it
        waits for retry_for, then the buffer gives the target up, not its message (a deal's
        copy was given up after max_attempts syncs of an opportunity-only outage)."""
        key = f"{part.key}@{opportunity}"
        earlier = batch.targets.get(key)
        if key in plan.existing or (earlier is not None and earlier.dead):
            return None
        if opportunity in plan.unchecked:
            outcome = plan.unchecked[opportunity]
        elif brake:  # a rate limit: as transient as the 429 that set it
            outcome = Outcome.retry(f"not attempted after: {brake[0]}", transient=True)
        elif failed := await self._post(batch, plan, part, opportunity):
            outcome = failed.outcome
            if failed.kind == "rate_limited":
                brake.append(outcome.reason)
        else:
            return None
        outcome = await self._reowned(part, outcome, {} if gone is None else gone)
        failure = batch.fail_target(
            key, f"opportunity {opportunity}", outcome.reason, [m.id for m in part.messages],
            self.settings.max_attempts, final=outcome.kind == "rejected",
            transient=outcome.transient)
        if failure.dead:
            logger.warning("gave up posting on an opportunity after %d tries: %s",
                           failure.attempts, failure.reason)
            return None
        return Outcome.retry(f"opportunity {opportunity}: {outcome.reason}",
                             transient=outcome.transient, aside=True)

    async def _reowned(self, part: Part, outcome: Outcome,
                       gone: dict[str, asyncio.Task[bool | None]]) -> Outcome:
        """A deal's copy refused while its owner (the rep) may have been deactivated since
        the users were last read: as on the lead (delivery._owner_gone), when that rep can
        own nothing now it is no refusal: it waits, and the retry posts it under
        owner_fallback (targets.pinned_reps). Given up at the first refusal, the deal never
        got the chat its lead holds. The users are read again once a delivery per rep."""
        email = part.rep.email if part.rep is not None else None
        if outcome.kind != "rejected" or not email or self.owner_gone is None:
            return outcome
        if email not in gone:
            gone[email] = asyncio.ensure_future(self.owner_gone(email))
        if (now_gone := await gone[email]) is False:
            return outcome
        return owner_refused(email, outcome, unread=now_gone is None)

    async def _post(self, batch: Batch, plan: Plan, part: Part,
                    target: str | None) -> Failed | None:
        """Post the part on the lead (target None) or an opportunity; None once it is in
        the CRM, else why not."""
        key = part.key if target is None else f"{part.key}@{target}"
        if key in plan.existing:
            if key not in batch.ledger:
                # found by its key (an earlier try posted it and died before the answer):
                # in the ledger now, so a file that follows knows its activity
                batch.remember(key, plan.existing[key])
            return None
        sent = time.time()
        try:
            activity = await self._send(batch, plan.lead.id, part, target, key)
        except LeadSquaredError as exc:
            activity = await self._settle(exc, batch, plan, part, target, key, sent)
            if isinstance(activity, Failed):
                return activity
        batch.remember(key, activity)
        plan.existing[key] = activity
        return None

    async def _send(self, batch: Batch, lead: str, part: Part, target: str | None,
                    key: str, *, single: bool = False) -> str:
        """One post: in a bulk call where that is on (and not `single`), else Create. An
        activity with an owner that must go alone goes as the one row of a bulk call: the
        bulk calls document ActivityOwnerEmail, Create documents no owner (owners.py)."""
        item = self._item(batch, lead, part, target, key)
        owner = part.rep.email if part.rep is not None else None
        if target is None and self.bulk is not None and not single:
            return await self.bulk.post(item)
        if target is None and owner:
            return await one_row(self.client.activities.post_bulk([item]))
        if target is not None and (self.opportunity_bulk is not None or owner):
            row = opportunity_item(self.event, item["ActivityNote"], activity_time(part),
                                   self._fields(batch, part, key),
                                   owner or self.owner_email or "")
            if self.opportunity_bulk is not None and not single and (
                    activity := await self.opportunity_bulk.post(target, row)):
                return activity  # else no other row came with it: posted singly below
            if owner:
                return await one_row(self.client.opportunities.post_bulk(target, [row]))
        return await self.client.activities.post(item)

    async def _settle(self, exc: LeadSquaredError, batch: Batch, plan: Plan, part: Part,
                      target: str | None, key: str, sent: float) -> str | Failed:
        """After a failed post: the activity id when it landed after all (or when a bulk row
        that said "not created" is posted again singly now), else why it did not."""
        if may_have_landed(exc):
            return await self._checked_refusal(exc, batch, plan, target, key)
        if exc.kind != "unknown_outcome":
            return Failed(await self.stale(exc, batch, plan.lead) or outcome_of(exc), exc.kind)
        keys = await self.keys.after(exc, plan.lead.id, target)
        if keys is not None and (found := keys.get(key)):
            return found
        # answered, not created, not there: an exact single post now. Not when the keys
        # could not be read: a call refused whole may have made its rows (refused_whole);
        # posted again on a failed read, a landed row was a second activity. It waits for
        # the retry, whose plan reads the keys before anything is posted.
        if exc.not_created and keys is not None:
            try:
                return await self._send(batch, plan.lead.id, part, target, key, single=True)
            except LeadSquaredError as again:
                if again.kind == "unknown_outcome" and again.not_created:
                    return await self._refused(again, batch, plan, target, key)
                return await self._settle(_final(again), batch, plan, part, target, key, sent)
        return Failed(late_write_retry(exc, sent, self.settings.timeout) or outcome_of(exc),
                      exc.kind)

    async def _checked_refusal(self, exc: LeadSquaredError, batch: Batch, plan: Plan,
                               target: str | None, key: str) -> str | Failed:
        """A single Create answered with one of LeadSquared's own (MX) errors: a refusal
        only once its key, read without error, is not on the record. The reference says
        MX errors are application errors, not retried (§1 async API, §3), but nowhere that
        they come before the write: one raised after the activity was stored (a timeout
        or a failing step inside LeadSquared) would be a chat refused that is in the CRM.
        Found, it landed; unread, it is an unknown outcome whose retry reads the keys
        before anything is posted again (never posted twice, never refused unchecked)."""
        keys = await self.keys.after(exc, plan.lead.id, target)
        if keys is not None and (found := keys.get(key)):
            return found
        if keys is not None:
            return Failed(await self.stale(exc, batch, plan.lead) or outcome_of(exc), exc.kind)
        unknown = LeadSquaredError(
            "unknown_outcome", f"{exc.exception_type}: {exc.message}, and whether the "
            "activity was stored anyway could not be read (looked for again before a "
            "re-post)", exception_type=exc.exception_type, status=exc.status)
        return Failed(await self.stale(exc, batch, plan.lead) or outcome_of(unknown),
                      unknown.kind)

    async def _refused(self, exc: LeadSquaredError, batch: Batch, plan: Plan,
                       target: str | None, key: str) -> str | Failed:
        """Twice answered "not created" (the exact single post too): a refusal once the
        keys, read without error, show it absent (an owned activity's one-row bulk call
        answers a refusal with a null id and no reason, or refuses the call whole); found,
        it landed; unreadable, it stays an unknown outcome for the next try's check. A
        cached lead that is gone is looked up again (`stale`), as after any refusal."""
        try:
            keys = await (self.keys.on_opportunity(target) if target
                          else self.keys.on_lead(plan.lead.id))
        except LeadSquaredError as unread:
            return Failed(await self.stale(unread, batch, plan.lead)
                          or outcome_of(_final(exc)), exc.kind)
        if found := keys.get(key):
            return found
        refused = LeadSquaredError("rejected", f"LeadSquared did not create the activity, "
                                   f"twice, and it is not on the record ({exc.message})")
        return Failed(await self.stale(refused, batch, plan.lead) or outcome_of(refused),
                      "rejected")

    def _item(self, batch: Batch, lead: str, part: Part, target: str | None,
              key: str) -> dict:
        """The activity as Create and ByLeadId take it, with ActivityOwnerEmail when the
        chat's business number has an owner (the bulk calls take it; Create is never sent
        one: `_send`)."""
        text = note(part, contact_label(batch.conversation), batch.conversation.key,
                    business=self._business(part))
        owner = part.rep.email if part.rep is not None else None
        return activity_item(lead, self.event, text, activity_time(part),
                             self._fields(batch, part, key), opportunity_id=target,
                             owner_email=owner if target is None else None)

    def _business(self, part: Part) -> str | None:
        """How the note names the business number and rep; None when not known."""
        rep = part.rep
        return rep.label(self.settings.business_name) if rep is not None and (
            rep.number or rep.name) else None

    def _fields(self, batch: Batch, part: Part, key: str) -> dict[str, str]:
        fields = {FIELDS["key"]: key, FIELDS["count"]: str(len(part.messages)),
                  FIELDS["first"]: lsq_time(part.first_at),
                  FIELDS["last"]: lsq_time(part.last_at),
                  FIELDS["number"]: batch.conversation.key}
        if self.business_field and self._business(part) and part.rep is not None:
            fields[self.business_field] = part.rep.field_label(self.settings.business_name)
        return fields


async def one_row(call: Awaitable[list[dict]]) -> str:
    """The activity id of a one-row bulk call. Its row's answer is exact: a row that says
    it was not created, with LeadSquared's reason, is a refusal; other unread rows (the
    documented answer gives a refused row a null id and no message) are unknown outcomes,
    as in any bulk call (bulk.read_row), settled by the key check (Poster._refused). A
    call refused as a whole is no row's answer, as for any bulk call (an Error may come
    after the row was made): looked for by key, then posted once more (refused_whole)."""
    try:
        rows = await call
    except LeadSquaredError as exc:
        if exc.kind == "rejected":
            raise refused_whole(exc) from exc
        raise
    row = rows[0] if rows else {}
    if said_not_created(row) and row_error(row):
        raise LeadSquaredError("rejected", f"LeadSquared refused the activity: {row_error(row)}")
    return read_row(row)


def may_have_landed(exc: LeadSquaredError) -> bool:
    """A refusal of a write that may still have been stored: one of LeadSquared's own (MX)
    errors, not a rate limit (the reference does not say MX errors come before the write:
    UNSURE). A row's own "not created" (one_row) and a proxy's page carry no MX type."""
    return exc.kind == "rejected" and bool(exc.exception_type) and \
        str(exc.exception_type).startswith("MX")


def _final(exc: LeadSquaredError) -> LeadSquaredError:
    """The error of a post made because a bulk row said "not created": never sent a third
    time by itself (its own unknown outcome waits for the key check of a retry)."""
    exc.not_created = False
    return exc


def activity_time(part: Part) -> datetime:
    """When the activity happened (ActivityDateTime): its last message's time, never later
    than now. A wrong clock's future stamp (a phone's, an import's) would date it ahead of
    the CRM's clock: refused by an account that takes no future time (reference §7.9,
    switch activity_time), else on top of the lead's history until that day comes."""
    return min(part.last_at, datetime.now(UTC))
