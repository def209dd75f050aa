"""Step 1 of a delivery: resolve the person behind a chat to a lead.

The lead comes from the batch's cached mapping, the local lead directory, a remote lookup
(phone, then BSUID) or, when configured, a new lead. A number that matched nothing waits
`unknown_recheck` before it is searched again. Creating is serialised per number in this
process (concurrent deliveries for one customer on two business numbers), and across
processes LeadSquared's unique Phone field refuses the second create, which then finds
the first (leads.create_lead).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import Batch, Outcome
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.directory import LeadDirectory
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.keys import once
from plugins.leadsquared.leads import first_match
from plugins.leadsquared.outcomes import late_write_retry, outcome_of
from plugins.leadsquared.owners import Owners
from plugins.leadsquared.people import (
    earlier_phone,
    follow_number_change,
    lookup_phone,
    not_found,
    resolve,
    unreachable,
)
from plugins.leadsquared.phones import primary_candidates

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lead:
    """The lead a batch goes to; `cached` when its id came from the buffer's mapping (it
    may have been merged or deleted since)."""

    id: str
    cached: bool


class Resolver:
    """Finds (or creates) the lead of a batch's person."""

    def __init__(self, client: LeadSquaredClient, settings: LeadSquaredConfig, rows: Any,
                 directory: LeadDirectory | None,
                 asked_at: Callable[[], float] = lambda: 0.0,
                 owners: Owners | None = None) -> None:
        self.client = client
        self.owners = owners  # a lead created goes to the rep the customer wrote to
        # when a person last asked for a sync (sync now): a number found unknown before
        # then is searched again, whatever unknown_recheck says
        self.asked_at = asked_at
        self.settings = settings
        self.rows = rows  # the buffer's directory rows of this sink (None without a buffer)
        self.directory = directory
        self._creating: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def lead_for(self, batch: Batch) -> Lead | Outcome:
        """The batch's lead, or the outcome of all its messages (held, retry, refused)."""
        if reason := unreachable(self.settings, batch.conversation):
            return Outcome.held(reason)
        cached, sent = batch.record_id is not None, time.time()
        try:
            found = batch.record_id or await self._look_up(batch)
        except LeadSquaredError as exc:  # an unknown outcome here is a lead create
            return late_write_retry(exc, sent, self.settings.timeout) or outcome_of(exc)
        if found is None:
            return Outcome.held(not_found(self.settings, batch.conversation))
        batch.record_id, lead = found, Lead(found, cached)
        try:
            await follow_number_change(self.client, self.settings, found, batch.messages)
        except LeadSquaredError as exc:
            return await self.forget_if_gone(exc, batch, lead) or outcome_of(exc)
        return lead

    async def forget_if_gone(self, exc: LeadSquaredError, batch: Batch,
                             lead: Lead) -> Outcome | None:
        """A refusal on a cached lead that no longer exists: forget it (the retry outcome;
        the caller looks the number up again)."""
        if exc.kind != "rejected" or not lead.cached or await once(
                exc, ("lead", lead.id), lambda: self._exists(lead.id)):
            return None
        batch.record_id = None  # merged or deleted: the number is looked up again
        if self.rows is not None:
            await self.rows.drop(lead.id)
        return Outcome.retry("the cached lead no longer exists; it will be looked up again")

    async def _look_up(self, batch: Batch) -> str | None:
        """From the directory, else remote (one lookup when the directory is on), never
        again for a number that matched nothing within unknown_recheck."""
        phone = lookup_phone(batch.conversation)  # none for a number that changed hands
        # a number changed before the chat's first sync: the lead may hold the old one
        numbers = [n for n in (phone, phone and earlier_phone(batch.conversation)) if n]
        for number in numbers:
            if lead := await self._from_directory(number):
                return lead
        if phone and await self._recently_unknown(phone):
            return None
        if phone and self.directory is not None and self.directory.enabled \
                and not self.settings.create_leads:
            lead = None
            for number in numbers:  # one lookup a variant (Brazil's 9, Argentina's, Mexico's 1)
                lead = await first_match(self.client, number, primary_candidates(number))
                if lead is not None:
                    break
        else:
            owner = self.owners.new_lead_owner(batch.messages) \
                if self.owners is not None and self.settings.create_leads else None
            async with self._lock(phone or batch.conversation.key):  # one create a person
                lead = await resolve(self.client, self.settings, batch.conversation,
                                     batch.messages, owner)
        if phone and self.rows is not None:
            if lead is None:
                await self.rows.note_unknown(phone, time.time())
            else:
                await self.rows.forget_unknown(phone)
        return lead

    async def _from_directory(self, phone: str) -> str | None:
        if self.directory is None:
            return None
        try:
            await self.directory.refresh_if_due()
        except LeadSquaredError as exc:  # the directory is a shortcut, never a blocker
            logger.warning("lead directory refresh failed: %s", exc)
        return await self.directory.find(phone)

    async def _recently_unknown(self, phone: str) -> bool:
        if self.rows is None or self.settings.create_leads:
            return False
        checked = await self.rows.unknown_checked_at(phone)
        return checked is not None and checked >= self.asked_at() \
            and time.time() - checked < self.settings.unknown_recheck

    def _lock(self, person: str) -> asyncio.Lock:
        lock = self._creating.get(person)
        if lock is None:
            lock = self._creating[person] = asyncio.Lock()
        return lock

    async def _exists(self, lead: str) -> bool:
        try:
            return await self.client.leads.get(lead) is not None
        except LeadSquaredError:
            return True  # cannot tell: keep the mapping
