"""Simulated bulk activity posts: ByLeadId and ByOpportunityId (reference §2c, §2e, §8).

ByLeadId takes a JSON array of at most 25 `{RelatedProspectId, ActivityEvent, ActivityNote?,
ActivityOwnerEmail?, ActivityDateTime?, Fields?}`; each item is posted or refused alone, so
a bad item fails alone (§2c, §8 "Bulk posting", DOC:post-bulk-activities-on-leads). The
answer per switch bulk_answer: documented = `{"Response": [{"ProspectActivityId"}, ...]}`,
one row per item in order, a refused item's id null (the sample shows only created rows:
the null is a GUESS); flagged = rows `{"RowNumber", "ActivityCreated",
"ProspectActivityId", "ExceptionMessage"}` (GH#70701181602), in reverse order so clients
must go by RowNumber (GUESS); count = `{"Status": "Success", "Message": {"Count": N}}`,
N the rows created, no ids (GH#70701181602).
ByOpportunityId takes `?opportunityId=` and up to 25 `{ActivityEvent, ActivityNote,
ActivityOwnerEmail (mandatory), Fields}` (§2e, DOC:post-bulk-activities-on-opportunities);
its answer is not documented (GUESS: the ByLeadId shape, same switch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from plugins.leadsquared.simulator.state import ApiError, Store, invalid, missing

BULK_MAX = 25  # items per bulk call (§2c, §2e)
BY_LEAD = "ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId"
BY_OPPORTUNITY = "ProspectActivity.svc/Bulk/CustomActivity/Add/ByOpportunityId"
BULK_PATHS = (BY_LEAD, BY_OPPORTUNITY)


def items_of(body: Any) -> list[Any]:
    """The body's array of 1..25 items, or the error LeadSquared answers for the whole call."""
    if not isinstance(body, list):
        raise invalid("Parameter Name: activities (a JSON array of activities is expected)")
    if not body:
        raise missing("activities")
    if len(body) > BULK_MAX:
        raise invalid(f"Parameter Name: activities (at most {BULK_MAX} per call, "
                      f"got {len(body)})")
    return body


def row(number: int, post: Callable[[], Any]) -> dict[str, Any]:
    """One item's full outcome: its activity, or its own error (the others go on)."""
    try:
        activity = post()
    except ApiError as error:
        return {"RowNumber": number, "ActivityCreated": False, "ProspectActivityId": None,
                "ExceptionMessage": error.message}
    return {"RowNumber": number, "ActivityCreated": True, "ProspectActivityId": activity.id,
            "ExceptionMessage": None}


def answer(rows: list[dict[str, Any]], shape: str) -> dict[str, Any]:
    """The call's answer in the switch bulk_answer's shape."""
    if shape == "flagged":
        return {"Response": list(reversed(rows))}
    if shape == "count":
        created = sum(1 for r in rows if r["ActivityCreated"])
        return {"Status": "Success", "Message": {"Count": created}}
    return {"Response": [{"ProspectActivityId": r["ProspectActivityId"]} for r in rows]}


def by_lead(store: Store, body: Any, note_limit: int) -> list[dict[str, Any]]:
    return [row(n, lambda item=item: _lead_item(store, item, note_limit))
            for n, item in enumerate(items_of(body), 1)]


def _lead_item(store: Store, item: Any, note_limit: int) -> Any:
    if isinstance(item, dict) and item.get("RelatedOpportunityId"):
        raise invalid("Parameter Name: RelatedOpportunityId (use the ByOpportunityId call)")
    return store.post_activity(item, note_limit, bulk=True)


def by_opportunity(store: Store, opportunity_id: str, body: Any,
                   note_limit: int) -> list[dict[str, Any]]:
    opportunity = store.opportunities.get(opportunity_id)
    if opportunity is None:
        raise invalid(f"Parameter Name: opportunityId (no opportunity {opportunity_id!r})")
    return [row(n, lambda item=item: _opportunity_item(store, opportunity, item, note_limit))
            for n, item in enumerate(items_of(body), 1)]


def _opportunity_item(store: Store, opportunity: Any, item: Any, note_limit: int) -> Any:
    if not isinstance(item, dict):
        raise invalid("Parameter Name: activity (an object is expected)")
    if not item.get("ActivityOwnerEmail"):
        raise missing("ActivityOwnerEmail")  # mandatory on this call (§2e)
    return store.post_activity({**item, "RelatedProspectId": opportunity.lead_id,
                                "RelatedOpportunityId": opportunity.id}, note_limit,
                               bulk=True)


def routes(sim_of: Callable, store_of: Callable, api_body: Callable,
           query: Callable) -> list[tuple[str, str, Callable]]:
    """The two bulk routes, for the simulator's route table."""

    async def lead_bulk(request: web.Request) -> web.Response:
        store = store_of(request)
        rows = by_lead(store, await api_body(request), sim_of(request).knobs.note_limit)
        return web.json_response(answer(rows, store.switches.bulk_answer))

    async def opportunity_bulk(request: web.Request) -> web.Response:
        opportunity, sim = query(request, "opportunityId"), sim_of(request)
        if opportunity in sim.failing_posts:  # refuse_posts(transient=True): a gateway 503
            return sim.fault_answer(503)
        store = store_of(request)
        rows = by_opportunity(store, opportunity, await api_body(request), sim.knobs.note_limit)
        return web.json_response(answer(rows, store.switches.bulk_answer))

    return [("POST", BY_LEAD, lead_bulk), ("POST", BY_OPPORTUNITY, opportunity_bulk)]
