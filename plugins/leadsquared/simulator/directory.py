"""Simulated Leads.RecentlyModified ("Get Leads by Date Range", reference §8 "Paging
through leads", DOC:get-leads-by-date-range): the paged search the lead directory uses.

Body `{"Parameter": {"FromDate", "ToDate"}, "Columns": {"Include_CSV"}, "Paging":
{"PageIndex", "PageSize"}, "Sorting": {"ColumnName", "Direction"}}`, dates UTC
`YYYY-MM-DD HH:MM:SS`, at most 5,000 leads a call; answers `{"RecordCount": N, "Leads":
[{"LeadPropertyList": [{"Attribute", "Value"}, ...]}]}` with only the asked columns.
Sorting as documented (switch recent_sort=documented): on the column named, "Direction"
"1" most recent (largest) first, "0" oldest first; without Sorting, ProspectAutoId
newest first (GUESS). Under recent_sort=ignored, ProspectAutoId whatever ColumnName says,
in the Direction asked (GUESS): newest created first, which often looks like newest
modified first and is not.
Strict: a missing or malformed date, a page size over 5,000 or a page index under 1 is
refused (MXInvalidInputException, HTTP 500).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from plugins.leadsquared.simulator.state import LSQ_TIME, Store, as_object, invalid, missing

PAGE_MAX = 5000
PATH = "LeadManagement.svc/Leads.RecentlyModified"


def _date(parameter: dict, name: str) -> str:
    value = parameter.get(name)
    if not isinstance(value, str):
        raise missing(f"Parameter.{name}")
    try:
        datetime.strptime(value, LSQ_TIME)
    except ValueError:
        raise invalid(f"Parameter Name: {name} ({value!r}; use YYYY-MM-DD HH:MM:SS, UTC)") from None
    return value


def _paging(body: dict) -> tuple[int, int]:
    paging = as_object(body.get("Paging"), "Paging")
    try:
        index, size = int(paging.get("PageIndex")), int(paging.get("PageSize"))
    except (TypeError, ValueError):
        raise missing("Paging.PageIndex and Paging.PageSize") from None
    if index < 1 or not 1 <= size <= PAGE_MAX:
        raise invalid(f"Parameter Name: Paging (PageIndex from 1, PageSize 1..{PAGE_MAX})")
    return index, size


def _sorting(body: dict) -> tuple[str, bool]:
    """(column, most recent first) from {"Sorting": {"ColumnName", "Direction"}}."""
    sorting = body.get("Sorting")
    if not isinstance(sorting, dict):
        return "ProspectAutoId", True
    column = sorting.get("ColumnName") or "ProspectAutoId"
    direction = str(sorting.get("Direction", "1"))
    if not isinstance(column, str) or direction not in ("0", "1"):
        raise invalid("Parameter Name: Sorting (ColumnName, and Direction \"0\" or \"1\")")
    return column, direction == "1"


def _sort_value(store: Store, lead: dict, column: str) -> tuple[int, str]:
    if column == "ProspectAutoId":
        return store.auto_id(lead["ProspectID"]), ""
    return 0, str(lead.get(column) or "")


def recently_modified(store: Store, body: Any) -> dict[str, Any]:
    """The page of leads modified within [FromDate, ToDate], sorted as asked."""
    body = as_object(body)
    parameter = as_object(body.get("Parameter"), "Parameter")
    start, end = _date(parameter, "FromDate"), _date(parameter, "ToDate")
    index, size = _paging(body)
    csv = as_object(body.get("Columns") or {}, "Columns").get("Include_CSV")
    wanted = [c.strip() for c in csv.split(",") if c.strip()] if isinstance(csv, str) else []
    leads = [lead for lead in store.leads.values()
             if start <= str(lead.get("ModifiedOn") or "")[:19] <= end]
    column, newest_first = _sorting(body)
    if store.switches.recent_sort == "ignored":
        column = "ProspectAutoId"
    leads.sort(key=lambda lead: (_sort_value(store, lead, column),
                                 store.auto_id(lead["ProspectID"])), reverse=newest_first)
    page = leads[(index - 1) * size:index * size]
    return {"RecordCount": len(leads), "Leads": [
        {"LeadPropertyList": [{"Attribute": name, "Value": lead.get(name)}
                              for name in (wanted or sorted(lead))]} for lead in page]}
