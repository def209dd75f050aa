"""A local lead directory: phone -> lead, filled by reading the account's leads.

Filled on first start with Leads.RecentlyModified over all time (id, name, phone fields and
ModifiedOn only, ≤ 5,000 leads a call; reference §8 "Paging through leads"), then kept
current by asking for leads modified since the last refresh, with an overlap (ModifiedOn
has second resolution and a lead saved during our call must not be missed). Every stored
number is reduced to keys both sides agree on: E.164 when the country code is there,
else `nsn:<national digits>` (trunk 0 dropped), so `+91-98…`, `098…`, `98…` and `+9198…`
all match a chat from +9198…. A full fill, run again every `full_every` refreshes, drops
leads that vanished (deleted, merged).

Reading a window never pages by position. A lead edited while we read leaves the window
(its ModifiedOn moves past ToDate), which would shift every later page by one and skip a
lead that was never edited. So a window is read only when one call holds all of it (its
RecordCount), and a larger one is cut in two by time, each part read the same way: no
edit can shift a window defined by time. The calls ask for the most recent first by
ModifiedOn ("Direction" "1", [DOC:get-leads-by-date-range]) so that the cut falls where
a page ends and most parts are read in one call; an account that does not sort as asked
costs more calls, never a lead. Leads sharing one second beyond a page (a bulk import)
are paged by position, read again until their count holds still. After a full fill, the
leads modified since it began are read once more before the old rows are dropped, so a
lead edited mid-fill is in the directory when the fill ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from plugins.leadsquared.client import LeadSquaredClient, lsq_datetime
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.phones import national_variants, stored_e164, variant_numbers

logger = logging.getLogger(__name__)

PAGE = 5000  # leads per call, the documented maximum
COLUMNS = "ProspectID,FirstName,LastName,Phone,Mobile,ModifiedOn"
SECOND = timedelta(seconds=1)
STEADY_TRIES = 3  # reads of a one-second slice beyond a page before giving up on it
OVERLAP = 120.0  # seconds each incremental refresh reaches back before the last one
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def number_keys(stored: object) -> list[str]:
    """Directory keys for a stored Phone/Mobile value in any format: its E.164 form when it
    names its country (a Mexican +52 1 … read as +52 …, `phones.stored_e164`), and
    `nsn:<national digits>` when it may be national."""
    if not isinstance(stored, str):
        return []
    digits = re.sub(r"\D", "", stored)
    if len(digits) < 6:
        return []
    text = stored.strip()
    keys: list[str] = []
    if text.startswith(("+", "00")):
        e164 = stored_e164(digits[2:] if text.startswith("00") else digits, international=True)
        return [e164] if e164 else ["nsn:" + digits.lstrip("0")]
    if e164 := stored_e164(digits, international=False):
        keys.append(e164)  # country code without the '+' (e.g. 9198...)
    keys.append("nsn:" + digits.lstrip("0"))  # national, maybe after the trunk 0
    return keys


def chat_keys(e164: str) -> list[str]:
    """The keys a WhatsApp number (E.164) is looked up under, most exact first: the number
    and its Brazil/Argentina/Mexico twins (`phones.variant_numbers`), then their national
    digits."""
    numbers = variant_numbers(e164)
    return numbers + ["nsn:" + national for national in national_variants(e164)]


def _row(lead: dict[str, Any]) -> tuple[str, str | None, list[str]] | None:
    """(id, name, keys) from one answer item (`LeadPropertyList` or flat)."""
    fields = _fields(lead)
    lead_id = fields.get("ProspectID") or fields.get("ProspectId")
    if not lead_id:
        return None
    name = " ".join(filter(None, [fields.get("FirstName"), fields.get("LastName")])) or None
    keys = list(dict.fromkeys(k for f in ("Phone", "Mobile") for k in number_keys(fields.get(f))))
    return str(lead_id), name, keys


class LeadDirectory:
    """The sink's view of the directory rows in the buffer."""

    def __init__(self, client: LeadSquaredClient, rows: Any, *, mode: str, limit: int,
                 refresh_every: float, full_every: int = 24, page: int = PAGE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.rows = rows  # bridge.buffer.directory.Directory
        self.mode = mode
        self.limit = limit
        self.refresh_every = refresh_every
        self.full_every = full_every
        self.page = page
        # when a person last asked for a sync (sync now): a refresh older than that is due
        self.asked_at: Callable[[], float] = lambda: 0.0
        self._asked_done = 0.0  # the ask the last refresh answered
        self.clock = clock  # UTC now: the end of each window read
        self.enabled = False
        self._lock = asyncio.Lock()
        self._refreshes = 0
        self._failed_at: float | None = None  # when the last refresh failed
        self.calls = 0

    async def start(self) -> None:
        """Fill on first start (or after a restart, catch up); decide auto mode. A read
        that fails (a key not allowed Leads.RecentlyModified, an outage) never stops the
        sink: the directory is a shortcut; lookups go remote until a later refresh works."""
        state = await self.rows.state()
        try:
            if state is None or (self.mode == "on" and not state["enabled"]):
                await self._failing(self.refresh(full=True))
            else:
                self.enabled = state["enabled"]
                await self.refresh_if_due()
        except LeadSquaredError as exc:
            logger.warning("lead directory not filled (%s): leads are looked up remotely; "
                           "tried again in %.0f s", exc, self.refresh_every)

    async def refresh_if_due(self, now: float | None = None) -> None:
        """Refresh when refresh_every has passed since the last refresh, or since the
        last one that failed (a refused read is not asked again for every chat), or when a
        person asked for a sync since (a lead created meanwhile is found at once)."""
        state = await self.rows.state()
        now = time.time() if now is None else now
        asked = self.asked_at() > self._asked_done  # one refresh per ask, not per chat
        if asked:
            self._asked_done = self.asked_at()
        if self._failed_at is not None and now - self._failed_at < self.refresh_every \
                and not asked:
            return
        if asked or state is None or state["refreshed_at"] is None \
                or now - state["refreshed_at"] >= self.refresh_every:
            full = self._refreshes % self.full_every == self.full_every - 1
            await self._failing(self.refresh(full=full))

    async def _failing(self, refresh: Awaitable[None]) -> None:
        """Run a refresh; when it fails, note when (and raise)."""
        try:
            await refresh
        except LeadSquaredError:
            self._failed_at = time.time()
            raise
        self._failed_at = None

    async def refresh(self, *, full: bool) -> None:
        async with self._lock:
            state = await self.rows.state() or {"generation": 0, "watermark": None,
                                                 "enabled": True}
            full = full or state["watermark"] is None
            generation = state["generation"] + (1 if full else 0)
            until = self.clock().replace(microsecond=0)
            since = EPOCH if full else _parse(state["watermark"]) - timedelta(seconds=OVERLAP)
            total, enabled = await self._read(since, until, generation, full)
            if full and enabled:  # what changed while we read, before old rows go
                until, since = self.clock().replace(microsecond=0), until - SECOND
                await self._read(since, until, generation, False)
            self.enabled = enabled
            self._refreshes += 1
            await self.rows.save_state(enabled=enabled, generation=generation,
                                       watermark=lsq_datetime(until), full=full,
                                       records=total if full else None)
            logger.info("lead directory %s: %s leads%s", "filled" if full else "refreshed",
                        total, "" if enabled else " (over lead_directory_max: off)")

    async def find(self, e164: str) -> str | None:
        return await self.rows.lookup(chat_keys(e164)) if self.enabled else None

    async def _read(self, since: datetime, until: datetime, generation: int,
                    full: bool) -> tuple[int, bool]:
        """Every lead modified in [since, until] into the rows; (how many, still on)."""
        answer = await self._call(since, until)
        total = int(answer.get("RecordCount") or 0)
        if full and self.mode == "auto" and total > self.limit:
            return total, False
        await self._window(since, until, answer, generation)
        return total, True

    async def _window(self, since: datetime, until: datetime, answer: dict,
                      generation: int) -> None:
        """Put the window's leads. A window is read when one call holds all of it; a
        larger one is cut in two by time (both parts hold the cut's second) and each part
        read the same way. The cut is the oldest ModifiedOn of the page when the page came
        sorted newest first as asked (then the upper part is the page again, its leads
        checked complete by that call's own count), else the window's middle."""
        while True:
            leads = answer.get("Leads") or []
            await self._put(leads, generation)
            if int(answer.get("RecordCount") or 0) <= len(leads):
                return
            if until - since < 2 * SECOND:  # a burst within a second: by position
                for second in sorted({since, until}, reverse=True):
                    await self._second(second, generation)
                return
            cut = _cut(since, until, leads)
            await self._window(cut, until, await self._call(cut, until), generation)
            until = cut
            answer = await self._call(since, until)

    async def _second(self, when: datetime, generation: int) -> None:
        """The leads of one second, paged by position. A lead can only leave a past second
        (an edit moves it later), which shifts the pages: read again until the count
        holds still (the edited leads come back with the next refresh)."""
        for _ in range(STEADY_TRIES):
            first = await self._call(when, when)
            count = int(first.get("RecordCount") or 0)
            await self._put(first.get("Leads") or [], generation)
            steady = True
            for index in range(2, -(-count // self.page) + 1):
                answer = await self._call(when, when, index)
                await self._put(answer.get("Leads") or [], generation)
                steady = steady and int(answer.get("RecordCount") or 0) == count
            if steady:
                return
        logger.warning("lead directory: leads modified at %s kept changing while read; the "
                       "next full fill completes them (lookups find them meanwhile)", when)

    async def _call(self, since: datetime, until: datetime, index: int = 1) -> dict:
        self.calls += 1
        return await self.client.leads.recently_modified(
            lsq_datetime(since), lsq_datetime(until), COLUMNS, page_index=index,
            page_size=self.page)

    async def _put(self, leads: list, generation: int) -> None:
        rows = [r for r in map(_row, leads) if r]
        if rows:
            await self.rows.put(rows, generation)


def _cut(since: datetime, until: datetime, leads: list[dict]) -> datetime:
    """Where to cut [since, until] in two: strictly inside it, so both parts shrink."""
    times = [_modified(lead) for lead in leads]
    if leads and None not in times and times == sorted(times, reverse=True) \
            and since < times[-1] < until:
        return times[-1]  # type: ignore[return-value]
    return (since + (until - since) / 2).replace(microsecond=0)


def _fields(lead: dict[str, Any]) -> dict[str, Any]:
    """An answer item's fields (`LeadPropertyList` of Attribute/Value, or flat)."""
    props = lead.get("LeadPropertyList")
    if isinstance(props, list):
        return {p.get("Attribute"): p.get("Value") for p in props if isinstance(p, dict)}
    return lead


def _modified(lead: dict[str, Any]) -> datetime | None:
    value = _fields(lead).get("ModifiedOn")
    try:
        return _parse(str(value)[:19]) if value else None
    except ValueError:
        return None


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
