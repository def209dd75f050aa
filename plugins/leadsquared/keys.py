"""Idempotency keys already in the CRM: what an earlier try (or a lost answer) posted.

Every chat activity carries its key in a custom field (activity_type.FIELDS["key"]); a
retry, or a post whose answer was lost, reads the keys on the lead or opportunity before
posting, so nothing is posted twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.api import NO_ACTIVITY_ID, is_activity_id
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError

# The names an activity read's row may give the activity's id under, the sourced first:
# - Id: Retrieve's documented sample [DOC:get-activities-of-a-lead] and, on a live
#   account, its primary key (reference §8 [LIVE], gotcha 14). Sourced for Retrieve.
# - ProspectActivityId: the id's name in bulk answers [DOC:post-bulk-activities-on-leads],
#   RetrieveByActivityEvent's List (§2c) and Attachment/Add [DOC:attach-a-file-to-activities].
#   In GetActivitiesOfOpportunity rows a GUESS: the page says only "paged", no sample
#   (§2e, [DOC:?p=2247]); the simulator serves this name there (docs row O5).
# - ActivityId: Capture's AdditionalDetails[].ActivityId [DOC:capture-opportunities]. In a
#   read's row a GUESS.
# - ID: GetActivityDetails names the activity "ID" [DOC:get-activity-details]. In a read's
#   row a GUESS.
# Each is read at the row's top level, then where custom fields live (field_value): a GUESS.
# Not ProspectActivityAutoId (§8 [LIVE]: Retrieve's "second id", a number): Attachment/Add
# takes ProspectActivityId, and no source says it takes the auto id.
ID_NAMES = ("Id", "ProspectActivityId", "ActivityId", "ID")


class KeyCheck:
    """Reads the keys on one lead or one opportunity."""

    def __init__(self, client: LeadSquaredClient, event: int) -> None:
        self.client = client
        self.event = event

    async def on_lead(self, lead: str) -> dict[str, str]:
        """Keys on the lead's activities of our type -> activity ids."""
        return _keys(await self.client.activities.of_lead(lead, self.event))

    async def parts_on_lead(self, lead: str
                            ) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
        """on_lead's keys, how many messages each of those activities holds (its count
        field), and the text after each note's header where readable: a retry re-splits its
        notes as they landed (targets.Planner.plan)."""
        activities = await self.client.activities.of_lead(lead, self.event)
        return _keys(activities), _sizes(activities), _bodies(activities)

    async def on_opportunity(self, opportunity: str) -> dict[str, str]:
        """Keys on the opportunity's activities (custom fields must be asked for by name)."""
        return _keys(await self.client.opportunities.activities(
            opportunity, self.event, columns=(FIELDS["key"],)))

    async def after(self, exc: LeadSquaredError, lead: str,
                    target: str | None) -> dict[str, str] | None:
        """The keys on the lead (target None) or opportunity after the failed call `exc`;
        None when they cannot be read (never "no keys": a post that may have landed is not
        sent again on a failed read). The rows of one failed bulk call share one read."""
        async def read() -> dict[str, str] | None:
            try:
                return await (self.on_opportunity(target) if target else self.on_lead(lead))
            except LeadSquaredError:
                return None

        return await once(exc, ("keys", lead, target), read)


async def once(exc: LeadSquaredError, spot: tuple, check: Callable[[], Awaitable[Any]]) -> Any:
    """One check per failed call and spot: the rows of a failed bulk call share its error,
    so they share the look that follows it (one read of the opportunity, not one a row)."""
    checks = exc.__dict__.setdefault("checks", {})
    if spot not in checks:
        checks[spot] = asyncio.ensure_future(check())
    return await asyncio.shield(checks[spot])


def field_value(activity: dict, name: str) -> str | None:
    """A custom field's value: in `ActivityFields` (Retrieve on a live account), in the
    `Data` list (older doc copies), a `Fields` list, or at the top level (flat lists)."""
    fields = activity.get("ActivityFields")
    if isinstance(fields, dict) and fields.get(name) is not None:
        return fields[name]
    for entry in activity.get("Data") or []:
        if entry.get("Key") == name:
            return entry.get("Value")
    for entry in activity.get("Fields") or []:
        if entry.get("SchemaName") == name:
            return entry.get("Value")
    return activity.get(name)


def activity_id(activity: dict) -> str:
    """The activity's id under the first of ID_NAMES it has; NO_ACTIVITY_ID when none."""
    for name in ID_NAMES:
        for value in (activity.get(name), field_value(activity, name)):
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if is_activity_id(value):
                return value.strip()
    return NO_ACTIVITY_ID


def add_found(existing: dict[str, str], found: dict[str, str]) -> None:
    """Add the keys a read found to `existing` (key -> activity id); a found id replaces
    one already there only where that one is unknown (a ledger's id from the post's own
    answer stays when the read names none)."""
    for key, activity in found.items():
        if not is_activity_id(existing.get(key)):
            existing[key] = activity


def _keys(activities: list[dict]) -> dict[str, str]:
    """Key -> the id of an activity holding it; a key on an activity whose row names no id
    still counts as landed (never posted twice), as NO_ACTIVITY_ID."""
    found: dict[str, str] = {}
    for activity in activities:
        if key := field_value(activity, FIELDS["key"]):
            add_found(found, {key: activity_id(activity)})
    return found


def _bodies(activities: list[dict]) -> dict[str, str]:
    """Key -> its note's lines after the header (the note field, however it is answered);
    left out when the note cannot be read."""
    found = {}
    for activity in activities:
        note = field_value(activity, "ActivityEvent_Note") or activity.get("ActivityNote")
        if (key := field_value(activity, FIELDS["key"])) and isinstance(note, str) \
                and "\n" in note:
            found[key] = note.partition("\n")[2]
    return found


def _sizes(activities: list[dict]) -> dict[str, int]:
    """Key -> the message count an activity says it holds; left out when unreadable."""
    found = {}
    for activity in activities:
        key, count = field_value(activity, FIELDS["key"]), field_value(activity, FIELDS["count"])
        if key and str(count).strip().isdigit() and int(count) > 0:
            found[key] = int(count)
    return found
