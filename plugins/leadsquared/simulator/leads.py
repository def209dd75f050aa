"""Simulated lead search and update: Leads.Get (by any field) and Lead.Update.

Documented shapes (shared/reference/leadsquared-api.md): Leads.Get takes
`{"Parameter": {"LookupName", "LookupValue", "SqlOperator"}, "Paging": {...}}` and answers a
JSON array of leads (§2a, §8 "Search Leads by Criteria", DOC:search-by-lead-criteria);
Lead.Update takes `?leadId=` and the same attribute array as Lead.Create, answering
`{"Status": "Success", "Message": {"AffectedRows": 1}}` (§2b, CW lead_client_spec, RB).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugins.leadsquared.simulator.state import (
    ApiError,
    Store,
    as_object,
    invalid,
    missing,
    parse_attributes,
    utc_now,
)

NO_LEAD = "MXInvalidInputException"


def search(store: Store, body: Any) -> list[dict[str, Any]]:
    """Leads.Get: leads whose LookupName field equals LookupValue (=, case-insensitive)."""
    parameter = as_object(as_object(body or {}).get("Parameter"), "Parameter")
    name, value = parameter.get("LookupName"), parameter.get("LookupValue")
    if not isinstance(name, str) or not isinstance(value, str):
        raise missing("LookupName and LookupValue")
    if str(parameter.get("SqlOperator") or "=") != "=":
        raise invalid("Parameter Name: SqlOperator (only = is simulated)")
    return [dict(lead) for lead in store.leads.values()
            if str(lead.get(name) or "").casefold() == value.casefold()]


def update(store: Store, lead_id: str, body: Any) -> int:
    """Lead.Update: set the given attributes on one lead; the affected row count."""
    attributes, _ = parse_attributes(body)
    if lead_id not in store.leads:
        raise ApiError(NO_LEAD, f"Invalid Input! Parameter Name: leadId ({lead_id} not found)")
    store._check_unique(attributes, lead_id)
    store.leads[lead_id].update(attributes, ModifiedOn=utc_now())
    return 1


def routes(store_of: Any, api_body: Any, query: Any, success: Any) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of both endpoints, built on the simulator's request helpers."""

    async def leads_get(request: web.Request) -> web.Response:
        return web.json_response(search(store_of(request), await api_body(request)))

    async def lead_update(request: web.Request) -> web.Response:
        rows = update(store_of(request), query(request, "leadId"), await api_body(request))
        return success({"AffectedRows": rows})

    return [("POST", "LeadManagement.svc/Leads.Get", leads_get),
            ("POST", "LeadManagement.svc/Lead.Update", lead_update)]
