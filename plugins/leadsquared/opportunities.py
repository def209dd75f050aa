"""Which linked opportunities get the chat activity too."""

from __future__ import annotations

from typing import Any

from plugins.leadsquared.config import OpportunityFilter

# The reference could not confirm the id key in GetOpportunitiesOfLead's List items
# (shared/reference/leadsquared-api.md §7.8); these are the candidates seen or likely.
ID_KEYS = ("OpportunityId", "ProspectOpportunityId", "ProspectActivityId", "Id")


def opportunity_types(activity_types: list[dict[str, Any]]) -> list[int]:
    """Opportunity type codes among an account's activity types.

    Opportunity types are event codes 12000 and up (12000-12003 seen, reference §2d); the
    reference documents no call that lists them, so they are picked from ActivityTypes.Get.
    """
    codes = (_int(t.get("ActivityEvent")) for t in activity_types)
    return sorted({c for c in codes if c is not None and 12000 <= c < 13000})


def opportunity_id(row: dict[str, Any]) -> str | None:
    return next((str(row[k]) for k in ID_KEYS if row.get(k)), None)


def pick_opportunities(rows: list[dict[str, Any]], rule: OpportunityFilter | None) -> list[str]:
    """Ids of the rows passing `rule` (None: all), most recently modified first."""
    rows = sorted(rows, key=lambda r: str(r.get("ModifiedOn") or r.get("CreatedOn") or ""),
                  reverse=True)
    if rule is not None:
        if rule.status:
            wanted = {s.lower() for s in rule.status}
            rows = [r for r in rows if str(r.get("Status", "")).lower() in wanted]
        if rule.types:
            rows = [r for r in rows if _int(r.get("OpportunityEvent")) in rule.types]
        if rule.latest:
            rows = rows[: rule.latest]
    return [i for i in map(opportunity_id, rows) if i]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
