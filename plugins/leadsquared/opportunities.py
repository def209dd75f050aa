"""Which of a lead's opportunities get the chat activity too: open deals by default.

Opportunity statuses are Open, Won and Lost (reference §9); a sales team expects chats on
open deals, so the status filter is [Open] unless `opportunities.status` says otherwise.
The opportunity type codes come from `opportunities.types`, else from the account:
ActivityTypes.Get's codes 12000-12999 (opportunity types seen with those codes, §2d; no
documented call lists them), else GetOpportunitiesOfLead without a type (documented as
optional, refused on a live account, §8). When none of these works there are no
opportunity posts, and the log, the status page and `bridge leadsquared check` say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import LeadSquaredConfig, OpportunityFilter
from plugins.leadsquared.errors import LeadSquaredError

logger = logging.getLogger(__name__)

# The reference could not confirm the id key in GetOpportunitiesOfLead's List items
# (shared/reference/leadsquared-api.md §7.8); these are the candidates seen or likely.
ID_KEYS = ("OpportunityId", "ProspectOpportunityId", "ProspectActivityId", "Id")
ANY_TYPE = None  # GetOpportunitiesOfLead without opportunityType: every type
NONE_FOUND = ("no opportunity types can be found: ActivityTypes.Get lists none (codes "
              "12000-12999) and GetOpportunitiesOfLead refuses a call without one; set "
              "plugins.leadsquared.opportunities.types (My Profile > Settings > "
              "Opportunities > Opportunity Types shows the codes)")


class Opportunities:
    """A lead's opportunities that get the activity, cached `opportunity_cache` seconds."""

    def __init__(self, client: LeadSquaredClient, settings: LeadSquaredConfig) -> None:
        self.client = client
        self.settings = settings
        self.rule = rule_of(settings.opportunities)
        self.types: list[int | None] | None = None  # None until looked up
        self.source = "not looked up yet"  # where the types came from, for describe()
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = asyncio.Lock()

    async def of_lead(self, lead: str) -> list[str]:
        """Ids of the lead's opportunities passing the filter, most recently modified first;
        a failed read raises (it is never "no opportunities")."""
        if self.rule is None:
            return []
        cached = self._cache.get(lead)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        rows = []
        for kind in await self.lookup_types():
            rows.extend(await self._of_type(lead, kind))
        ids = pick_opportunities(rows, self.rule)
        self._cache[lead] = (time.monotonic() + self.settings.opportunity_cache, ids)
        return ids

    def forget(self, lead: str) -> None:
        self._cache.pop(lead, None)

    async def lookup_types(self) -> list[int | None]:
        """The type codes to ask for, found once (concurrent deliveries share the look)."""
        async with self._lock:
            if self.types is None:
                configured = self.rule.types if self.rule else None
                if configured:
                    self.types, self.source = list(configured), "configuration"
                else:
                    listed = opportunity_types(await self.client.activities.types())
                    self.types, self.source = (
                        (listed, "ActivityTypes.Get") if listed
                        else ([ANY_TYPE], "GetOpportunitiesOfLead without a type"))
        return self.types

    async def _of_type(self, lead: str, kind: int | None) -> list[dict]:
        try:
            return await self.client.opportunities.of_lead(lead, kind)
        except LeadSquaredError as exc:
            if kind is not ANY_TYPE or exc.kind != "rejected" or not await self._exists(lead):
                raise  # a lead merged or deleted away is refused whatever the type asked
            self.types, self.source = [], "none found"  # refused without a type: stop asking
            logger.warning("%s (%s)", NONE_FOUND, exc.message)
            return []


    async def _exists(self, lead: str) -> bool:
        """Whether the lead is there (so a refusal was about the missing type); False
        when it is gone, or when that cannot be told now (the read is tried again)."""
        try:
            return await self.client.leads.get(lead) is not None
        except LeadSquaredError:
            return False


def rule_of(choice: bool | OpportunityFilter) -> OpportunityFilter | None:
    """The configured filter; `true` is the default filter (open deals of every type)."""
    if choice is False:
        return None
    return OpportunityFilter() if choice is True else choice


def opportunity_types(activity_types: list[dict[str, Any]]) -> list[int]:
    """Opportunity type codes among an account's activity types: codes 12000-12999
    (12000-12003 seen, an example captures 12231, reference §2d; an inference)."""
    codes = (_int(t.get("ActivityEvent")) for t in activity_types)
    return sorted({c for c in codes if c is not None and 12000 <= c < 13000})


def opportunity_id(row: dict[str, Any]) -> str | None:
    return next((str(row[k]) for k in ID_KEYS if row.get(k)), None)


def pick_opportunities(rows: list[dict[str, Any]], rule: OpportunityFilter) -> list[str]:
    """Ids of the rows passing `rule`, most recently modified first (the rows are asked
    per type already, so `rule.types` needs no second look)."""
    rows = sorted(rows, key=lambda r: str(r.get("ModifiedOn") or r.get("CreatedOn") or ""),
                  reverse=True)
    if rule.status:
        wanted = {s.lower() for s in rule.status}
        rows = [r for r in rows if str(_readable(r, ("Status",), "status")).lower() in wanted]
    if rule.latest:
        rows = rows[: rule.latest]
    return list(dict.fromkeys(str(_readable(r, ID_KEYS, "id")) for r in rows))


def _readable(row: dict[str, Any], keys: tuple[str, ...], what: str) -> Any:
    """The row's first non-empty value under `keys` (Status may be empty: no status). A
    row holding none of them is unreadable: raised, never dropped as "no such deal" (the
    open deal would never get its chats; the id key is not documented in full, §7.8)."""
    found = next((row[k] for k in keys if row.get(k)), None)
    if found is None and not (what == "status" and "Status" in row):
        raise LeadSquaredError("transient", f"GetOpportunitiesOfLead answered an opportunity "
                                            f"whose {what} is under no key this sink reads "
                                            f"({', '.join(keys)}): keys {sorted(row)[:20]}")
    return found or ""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
