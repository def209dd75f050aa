"""The simulator's stand-in for the LeadSquared web app's lead page: what landed, readable."""

from __future__ import annotations

import ipaddress
from html import escape
from typing import Any

from aiohttp import web

from plugins.leadsquared.simulator.key import SIM_KEY

LEAD_PAGE = "/LeadManagement/LeadDetails"  # the path the sink links leads to


async def lead_page(request: web.Request) -> web.Response:
    """A lead and its activity history, newest first (loopback callers only)."""
    if not ipaddress.ip_address(request.remote or "0.0.0.0").is_loopback:
        raise web.HTTPForbidden(text="the simulator's pages answer loopback callers only")
    sim = request.app[SIM_KEY]
    lead_id = request.query.get("LeadID", "")
    lead = sim.store.lead(lead_id)
    if lead is None:
        raise web.HTTPNotFound(text=f"no lead {lead_id!r} in the simulator")
    activities = sorted(sim.activities(lead_id), key=lambda a: a["ActivityDateTime"],
                        reverse=True)
    name = " ".join(filter(None, (lead.get("FirstName"), lead.get("LastName")))) or lead_id
    body = (f"<h1>{escape(name)}</h1><p>Phone {escape(str(lead.get('Phone') or ''))}"
            f" · Mobile {escape(str(lead.get('Mobile') or ''))}</p>"
            f"<h2>Activity history ({len(activities)})</h2>"
            + "".join(_activity(a, sim.store.attachments.get(a["Id"], [])) for a in activities))
    return web.Response(text=_page(f"{name} · LeadSquared simulator", body),
                        content_type="text/html")


def _activity(activity: dict[str, Any], attachments: list[dict[str, str]]) -> str:
    where = f" · opportunity {escape(activity['RelatedOpportunityId'])}" \
        if activity["RelatedOpportunityId"] else ""
    return (f"<article><h3>{escape(activity['EventName'] or '')}"
            f" <small>{escape(activity['ActivityDateTime'])} UTC{where}</small></h3>"
            f"<pre>{escape(activity['ActivityNote'] or '')}</pre>{_attachments(attachments)}"
            "</article>")


def _attachments(attachments: list[dict[str, str]]) -> str:
    """Attached files as links (an image also shown), as the CRM lists them on the activity."""
    if not attachments:
        return ""
    items = []
    for item in attachments:
        url = escape(item["AttachmentFile"], quote=True)
        name = escape(item["AttachmentName"])
        image = item["AttachmentName"].lower().endswith((".jpg", ".jpeg", ".png", ".webp"))
        preview = f"<br><img src='{url}' alt='{name}' style='max-width:20em'>" if image else ""
        items.append(f"<li><a href='{url}'>📎 {name}</a>{preview}</li>")
    return f"<ul class='attachments'>{''.join(items)}</ul>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<style>body{font:15px system-ui;margin:2em auto;max-width:60em}pre{white-space:"
            "pre-wrap;background:#f4f4f4;padding:.8em}</style></head>"
            f"<body>{body}</body></html>")
