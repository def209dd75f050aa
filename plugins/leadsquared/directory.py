"""A local lead directory: phone -> lead, filled by paging through the account's leads.

Filled on first start with Leads.RecentlyModified over all time (id, name and phone
fields only, ≤ 5,000 leads a call; reference §8 "Paging through leads"), then kept current
by asking for leads modified since the last refresh, with an overlap (ModifiedOn has
second resolution and a lead saved during our call must not be missed). Every stored
number is reduced to keys both sides agree on: E.164 when the country code is there,
else `nsn:<national digits>` (trunk 0 dropped), so `+91-98…`, `098…`, `98…` and `+9198…`
all match a chat from +9198…. A full fill, run again every `full_every` refreshes, drops
leads that vanished (deleted, merged).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from plugins.leadsquared.client import LeadSquaredClient, lsq_datetime

logger = logging.getLogger(__name__)

PAGE = 5000  # leads per call, the documented maximum
COLUMNS = "ProspectID,FirstName,LastName,Phone,Mobile"
OVERLAP = 120.0  # seconds each incremental refresh reaches back before the last one
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def number_keys(stored: object) -> list[str]:
    """Directory keys for a stored Phone/Mobile value in any format."""
    if not isinstance(stored, str):
        return []
    digits = re.sub(r"\D", "", stored)
    if len(digits) < 6:
        return []
    text = stored.strip()
    keys: list[str] = []
    if text.startswith(("+", "00")):
        e164 = _e164("+" + digits[2:] if text.startswith("00") else "+" + digits)
        return [e164] if e164 else ["nsn:" + digits.lstrip("0")]
    if e164 := _e164("+" + digits):
        keys.append(e164)  # country code without the '+' (e.g. 9198...)
    keys.append("nsn:" + digits.lstrip("0"))  # national, maybe after the trunk 0
    return keys


def chat_keys(e164: str) -> list[str]:
    """The keys a WhatsApp number (E.164) is looked up under, most exact first."""
    try:
        number = phonenumbers.parse(e164 if e164.startswith("+") else "+" + e164, None)
    except phonenumbers.NumberParseException:
        return []
    exact = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return [exact, "nsn:" + phonenumbers.national_significant_number(number)]


def _e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _row(lead: dict[str, Any]) -> tuple[str, str | None, list[str]] | None:
    """(id, name, keys) from one answer item (`LeadPropertyList` or flat)."""
    props = lead.get("LeadPropertyList")
    fields = ({p.get("Attribute"): p.get("Value") for p in props if isinstance(p, dict)}
              if isinstance(props, list) else lead)
    lead_id = fields.get("ProspectID") or fields.get("ProspectId")
    if not lead_id:
        return None
    name = " ".join(filter(None, [fields.get("FirstName"), fields.get("LastName")])) or None
    keys = list(dict.fromkeys(k for f in ("Phone", "Mobile") for k in number_keys(fields.get(f))))
    return str(lead_id), name, keys


class LeadDirectory:
    """The sink's view of the directory rows in the buffer."""

    def __init__(self, client: LeadSquaredClient, rows: Any, *, mode: str, limit: int,
                 refresh_every: float, full_every: int = 24) -> None:
        self.client = client
        self.rows = rows  # bridge.buffer.directory.Directory
        self.mode = mode
        self.limit = limit
        self.refresh_every = refresh_every
        self.full_every = full_every
        self.enabled = False
        self._lock = asyncio.Lock()
        self._refreshes = 0
        self.calls = 0

    async def start(self) -> None:
        """Fill on first start (or after a restart, catch up); decide auto mode."""
        state = await self.rows.state()
        if state is None or (self.mode == "on" and not state["enabled"]):
            await self.refresh(full=True)
        else:
            self.enabled = state["enabled"]
            await self.refresh_if_due()

    async def refresh_if_due(self, now: float | None = None) -> None:
        state = await self.rows.state()
        now = time.time() if now is None else now
        if state is None or state["refreshed_at"] is None \
                or now - state["refreshed_at"] >= self.refresh_every:
            await self.refresh(full=self._refreshes % self.full_every == self.full_every - 1)

    async def refresh(self, *, full: bool) -> None:
        async with self._lock:
            state = await self.rows.state() or {"generation": 0, "watermark": None,
                                                 "enabled": True}
            full = full or state["watermark"] is None
            generation = state["generation"] + (1 if full else 0)
            until = datetime.now(UTC)
            since = EPOCH if full else (datetime.strptime(state["watermark"], "%Y-%m-%d %H:%M:%S")
                                        .replace(tzinfo=UTC) - timedelta(seconds=OVERLAP))
            total, enabled = await self._page_all(since, until, generation, full)
            self.enabled = enabled
            self._refreshes += 1
            await self.rows.save_state(enabled=enabled, generation=generation,
                                       watermark=lsq_datetime(until), full=full,
                                       records=total if full else None)
            logger.info("lead directory %s: %s leads%s", "filled" if full else "refreshed",
                        total, "" if enabled else " (over lead_directory_max: off)")

    async def _page_all(self, since: datetime, until: datetime, generation: int,
                        full: bool) -> tuple[int, bool]:
        index, total = 1, 0
        while True:
            answer = await self.client.leads_recently_modified(
                lsq_datetime(since), lsq_datetime(until), COLUMNS, index, PAGE)
            self.calls += 1
            total = int(answer.get("RecordCount") or 0)
            if full and index == 1 and self.mode == "auto" and total > self.limit:
                return total, False
            rows = [r for r in map(_row, answer.get("Leads") or []) if r]
            if rows:
                await self.rows.put(rows, generation)
            if len(answer.get("Leads") or []) < PAGE or index * PAGE >= total:
                return total, True
            index += 1

    async def find(self, e164: str) -> str | None:
        return await self.rows.lookup(chat_keys(e164)) if self.enabled else None
