"""The dedicated activity type chats are logged under: found by name, or created."""

from __future__ import annotations

import logging

from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError

logger = logging.getLogger(__name__)

# Custom fields of the type. A type created by hand must have these schema names.
FIELDS = {
    "key": "mx_Custom_1",      # idempotency key: a re-post finds it and is skipped
    "count": "mx_Custom_2",
    "first": "mx_Custom_3",
    "last": "mx_Custom_4",
    "number": "mx_Custom_5",
}
# String only: the one DataType every documented CreateType example uses (reference §2d);
# counts and UTC times are written as text ("3", "2025-01-31 09:15:00").
FIELD_DEFINITIONS = [
    {"SchemaName": FIELDS["key"], "DisplayName": "Chatbridge Key", "DataType": "String"},
    {"SchemaName": FIELDS["count"], "DisplayName": "Message Count", "DataType": "String"},
    {"SchemaName": FIELDS["first"], "DisplayName": "First Message At", "DataType": "String"},
    {"SchemaName": FIELDS["last"], "DisplayName": "Last Message At", "DataType": "String"},
    {"SchemaName": FIELDS["number"], "DisplayName": "WhatsApp Number", "DataType": "String"},
]


def business_definition(schema: str) -> dict[str, str]:
    """The field naming the business number and rep (plugins.leadsquared.business_field)."""
    return {"SchemaName": schema, "DisplayName": "WhatsApp Business Number and Rep",
            "DataType": "String"}


async def resolve_event(client: LeadSquaredClient, name: str, fixed: int | None,
                        business_field: str | None = None) -> int:
    """The event code: the configured one (checked), the type named `name`, or a new type.
    Two bridges starting at once may both create it: the second is refused as a duplicate
    and takes the type the first made."""
    codes = await _codes(client)
    if fixed is not None:
        if fixed not in codes:
            raise RuntimeError(f"plugins.leadsquared.activity_event: no activity type {fixed} "
                               "in this account (check the code, or use activity_type)")
        return fixed
    if (code := _named(codes, name)) is not None:
        return code
    try:
        extra = [business_definition(business_field)] if business_field and business_field \
            not in FIELDS.values() else []
        code = await client.activities.create_type(
            name, [dict(f, IsMandatory=False, Sequence=i + 1) for i, f in
                   enumerate(FIELD_DEFINITIONS + extra)],
            "WhatsApp conversations logged by Chatbridge")
    except LeadSquaredError as exc:
        if exc.exception_type != "MXDuplicateEntryException" or (
                found := _named(await _codes(client), name)) is None:
            raise
        return found
    logger.info("created LeadSquared activity type %r (event %s)", name, code)
    return code


async def _codes(client: LeadSquaredClient) -> dict[int, str | None]:
    return {int(t["ActivityEvent"]): t.get("ActivityEventName")
            for t in await client.activities.types()
            if str(t.get("ActivityEvent", "")).isdigit()}


def _named(codes: dict[int, str | None], name: str) -> int | None:
    return next((code for code, type_name in codes.items()
                 if (type_name or "").strip().lower() == name.strip().lower()), None)
