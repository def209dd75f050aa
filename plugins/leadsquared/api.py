"""LeadSquared endpoints, one small class per service, each call as the docs shape it.

The transport (auth, limiters, retries, error kinds) is `client.LeadSquaredClient`; it
holds one of each service here: `client.leads.by_phone(...)`, `client.activities.post(...)`.
Sources are tagged as in shared/reference/leadsquared-api.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.fileform import FileForm

if TYPE_CHECKING:
    from plugins.leadsquared.client import LeadSquaredClient


Items = list[dict] | Callable[[], list[dict]]  # a bulk call's items, or a function giving them


def _as_sent(items: Items) -> tuple[list[dict], Callable[[], list[dict]]]:
    """(the items sent, filled as the request starts; the request's body function)."""
    sent: list[dict] = []

    def body() -> list[dict]:
        sent[:] = items() if callable(items) else items
        return sent
    return sent, body


def lsq_datetime(when: datetime) -> str:
    """UTC 'YYYY-MM-DD HH:MM:SS'; a naive datetime is taken to be UTC already."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


class LeadsApi:
    """LeadManagement.svc: find, create and update leads, page through them (§2a, §2b, §8)."""

    def __init__(self, client: LeadSquaredClient) -> None:
        self._c = client

    async def by_phone(self, phone: str) -> list[dict]:
        """RetrieveLeadByPhoneNumber: leads whose Phone or Mobile matches (digits only)."""
        return listed(await self._c.request("leads_by_phone", "GET",
                                            "LeadManagement.svc/RetrieveLeadByPhoneNumber",
                                            params={"phone": phone}),
                      "RetrieveLeadByPhoneNumber")

    async def get(self, lead_id: str) -> dict | None:
        """Leads.GetById: the lead, None for an unknown one (an empty array, [RB])."""
        leads = await self._c.request("lead_by_id", "GET", "LeadManagement.svc/Leads.GetById",
                                      params={"id": lead_id})
        return _first(listed(leads, "Leads.GetById"))

    async def create(self, attributes: dict[str, str]) -> str:
        """Lead.Create from schema-name attributes; the new ProspectID."""
        answer = await self._c.request("create_lead", "POST", "LeadManagement.svc/Lead.Create",
                                       body=_attributes(attributes), write=True)
        return str(message_id(answer))

    async def by_field(self, name: str, value: str) -> list[dict]:
        """Leads.Get with the singular Parameter (a Query wrapper is silently dropped)."""
        body = {"Parameter": {"LookupName": name, "LookupValue": value, "SqlOperator": "="},
                "Paging": {"PageIndex": 1, "PageSize": 10}}
        return listed(await self._c.request("leads_by_field", "POST",
                                            "LeadManagement.svc/Leads.Get", body=body),
                      "Leads.Get")

    async def update(self, lead_id: str, attributes: dict[str, str]) -> None:
        await self._c.request("update_lead", "POST", "LeadManagement.svc/Lead.Update",
                              params={"leadId": lead_id}, body=_attributes(attributes),
                              write=True)

    async def quick_search(self, key: str) -> list[dict]:
        """Leads.GetByQuickSearch: leads with `key` in a name, email or phone field."""
        return listed(await self._c.request("quick_search", "GET",
                                            "LeadManagement.svc/Leads.GetByQuickSearch",
                                            params={"key": key}), "Leads.GetByQuickSearch")

    async def recently_modified(self, since: str, until: str, columns: str, *,
                                page_index: int = 1, page_size: int = 5000,
                                sort: str = "ModifiedOn", newest_first: bool = True) -> dict:
        """Leads.RecentlyModified: one page of leads modified in [since, until] (UTC), only
        `columns`, sorted by `sort` ("Direction" "1" = most recent first, "0" = oldest
        first, [DOC:get-leads-by-date-range]); at most 5,000 a page."""
        body = {"Parameter": {"FromDate": since, "ToDate": until},
                "Columns": {"Include_CSV": columns},
                "Paging": {"PageIndex": page_index, "PageSize": page_size},
                "Sorting": {"ColumnName": sort, "Direction": "1" if newest_first else "0"}}
        answer = await self._c.request("leads_recently_modified", "POST",
                                       "LeadManagement.svc/Leads.RecentlyModified", body=body)
        page_rows(answer, "Leads")  # unreadable: raised, never a window without leads
        return answer


class ActivitiesApi:
    """ProspectActivity.svc: activity types, posting (single and bulk), reading (§2c, §2d)."""

    def __init__(self, client: LeadSquaredClient) -> None:
        self._c = client

    async def types(self) -> list[dict]:
        """ActivityTypes.Get: each has at least ActivityEventName and ActivityEvent."""
        return listed(await self._c.request("activity_types", "GET",
                                            "ProspectActivity.svc/ActivityTypes.Get"),
                      "ActivityTypes.Get")

    async def create_type(self, name: str, fields: list[dict], description: str = "") -> int:
        """CreateType with attachments allowed; the new event code."""
        body = {"ActivityEventName": name, "Score": 0, "Description": description,
                "Direction": 0, "AllowAttachments": 1, "Fields": fields}
        answer = await self._c.request("create_activity_type", "POST",
                                       "ProspectActivity.svc/CreateType", body=body,
                                       write=True)
        return int(message_id(answer))

    async def setting(self, code: int) -> dict:
        """CustomActivity/GetActivitySetting: a type's settings and fields."""
        return _object(await self._c.request(
            "activity_setting", "GET", "ProspectActivity.svc/CustomActivity/GetActivitySetting",
            params={"code": code}), "GetActivitySetting")

    async def post(self, item: dict[str, Any]) -> str:
        """ProspectActivity.svc/Create of one `activity_item` (with RelatedOpportunityId: on
        that opportunity, the URL a real client uses, §2e, §7.1); the activity id."""
        answer = await self._c.request("post_activity", "POST", "ProspectActivity.svc/Create",
                                       body=item, write=True)
        return str(message_id(answer))

    async def post_bulk(self, items: Items) -> list[dict]:
        """Bulk/CustomActivity/Add/ByLeadId (≤ 25 items, any leads): one answer row per
        item, in item order, read liberally (see `bulk_rows`). `items` may be a function
        giving them as the call starts (once its budget is granted)."""
        sent, body = _as_sent(items)
        answer = await self._c.request("bulk_lead_activities", "POST",
                                       "ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId",
                                       body=body, write=True, bulk=True)
        return bulk_rows(answer, len(sent))

    async def of_lead(self, lead_id: str, event: int | None = None,
                      page_size: int = 100) -> list[dict]:
        """Retrieve: every activity on the lead (optionally one event code), all pages."""
        parameter = {"ActivityEvent": event} if event is not None else {}

        async def page(offset: int, size: int) -> dict:
            paging = {"Offset": str(offset), "RowCount": str(size)}
            return await self._c.request("lead_activities", "POST",
                                         "ProspectActivity.svc/Retrieve",
                                         params={"leadId": lead_id},
                                         body={"Parameter": parameter, "Paging": paging})

        return await walk(page, "ProspectActivities", page_size)


class OpportunitiesApi:
    """OpportunityManagement.svc reads, and bulk posts on one opportunity (§2e, §8)."""

    def __init__(self, client: LeadSquaredClient) -> None:
        self._c = client

    async def of_lead(self, lead_id: str, opportunity_type: int | None, *,
                      page_size: int = 100) -> list[dict]:
        """GetOpportunitiesOfLead, all pages: of one type code, or (None) of every type as
        the docs allow; a live account refused the call without a type (§8 [LIVE])."""
        params = _drop_none(leadId=lead_id, opportunityType=opportunity_type)
        return await self._paged("opportunities_of_lead",
                                 "OpportunityManagement.svc/GetOpportunitiesOfLead",
                                 params, page_size)

    async def activities(self, opportunity_id: str, event: int | None = None, *,
                         columns: tuple[str, ...] = (), page_size: int = 100) -> list[dict]:
        """GetActivitiesOfOpportunity, all pages; custom fields only when in `columns`."""
        params = _drop_none(opportunityId=opportunity_id, activityEventCode=event)
        extra = {"Columns": {"Include_CSV": ",".join(columns)}} if columns else {}
        return await self._paged("opportunity_activities",
                                 "OpportunityManagement.svc/GetActivitiesOfOpportunity",
                                 params, page_size, extra)

    async def post_bulk(self, opportunity_id: str, items: Items) -> list[dict]:
        """Bulk/CustomActivity/Add/ByOpportunityId (≤ 25 items on one opportunity);
        `items` as ActivitiesApi.post_bulk's."""
        sent, body = _as_sent(items)
        answer = await self._c.request(
            "bulk_opportunity_activities", "POST",
            "ProspectActivity.svc/Bulk/CustomActivity/Add/ByOpportunityId",
            params={"opportunityId": opportunity_id}, body=body, write=True, bulk=True)
        return bulk_rows(answer, len(sent))

    async def _paged(self, name: str, path: str, params: dict, page_size: int,
                     extra: dict | None = None) -> list[dict]:
        async def page(offset: int, size: int) -> dict:
            paging = {"PageIndex": offset // size + 1, "PageSize": size}
            return await self._c.request(name, "POST", path, params=params,
                                         body={**(extra or {}), "Paging": paging})

        return await walk(page, "List", page_size)


class UsersApi:
    """The keys' user (Authentication.svc) and users by id (UserManagement.svc)."""

    def __init__(self, client: LeadSquaredClient) -> None:
        self._c = client

    async def by_access_key(self) -> dict:
        """UserByAccessKey.Get: Id, Role, TimeZone, LSQCommonServiceURLs ... The documented
        sample has "EmailAddress": null (the login is in PassPhrase) [DOC:user-authentication]:
        never read the user's email from it."""
        return _object(await self._c.request("user_by_access_key", "GET",
                                             "Authentication.svc/UserByAccessKey.Get"),
                       "UserByAccessKey.Get")

    async def by_id(self, user_id: str) -> dict | None:
        """User/Retrieve/ByUserId: the user with EmailAddress; None for an inactive or
        unknown user (the docs: an empty array) [DOC:get-user-by-id]; an answer that is
        no array raises (unknown), never None."""
        users = await self._c.request("user_by_id", "GET",
                                      "UserManagement.svc/User/Retrieve/ByUserId",
                                      params={"userId": user_id})
        return _first(listed(users, "User/Retrieve/ByUserId"))

    async def all(self) -> list[dict]:
        """Users.Get: every user, {ID, FirstName, LastName, EmailAddress, Role, StatusCode
        (0 active, 1 inactive)}; no phone numbers [DOC:get-users]. An answer that is no
        array of objects raises (unknown): read as "no users", the reps' numbers would
        follow owner_fallback."""
        users = await self._c.request("users", "GET", "UserManagement.svc/Users.Get")
        return listed(users, "Users.Get")

    async def by_email(self, email: str) -> dict | None:
        """User/Retrieve/ByEmailAddress: the user with AssociatedPhoneNumbers, PhoneMobile
        ...; None for an inactive or unknown user (an empty array)
        [DOC:get-user-by-email-id]."""
        users = await self._c.request("user_by_email", "GET",
                                      "UserManagement.svc/User/Retrieve/ByEmailAddress",
                                      params={"emailAddress": email})
        return _first(listed(users, "User/Retrieve/ByEmailAddress"))


@dataclass(frozen=True)
class Upload:
    """A File Upload answer: the stored file's S3 URL (what Attachment/Add takes), or None
    when the answer names none; `name` is its uploadedFile."""

    url: str | None
    name: str | None


class FilesApi:
    """File Upload on the files host, and Attachment/Add (§8 "Files and attachments")."""

    def __init__(self, client: LeadSquaredClient) -> None:
        self._c = client

    async def upload(self, files_base: str, path: str, filename: str, mime_type: str,
                     file_type: int) -> Upload:
        """Upload the file at `path` (streamed, a fresh handle per try, read in a worker
        thread: never on the event loop, never whole in memory)."""
        form = {"FileType": str(file_type), **self._c.form_keys(), "FileStorageType": "0",
                "EnableResize": "false"}

        def upload() -> FileForm:
            return FileForm(path, "uploadFiles", filename, mime_type, form)

        answer = await self._c.request("upload_file", "POST",
                                       f"{files_base.rstrip('/')}/File/Upload",
                                       multipart=upload, write=True)
        return read_upload(answer)

    async def attach(self, activity_id: str, name: str, url: str, description: str) -> str:
        """Attachment/Add with AttachmentFile = the upload's S3 URL; the attachment id. An
        activity id that is none (NO_ACTIVITY_ID) is never sent: refused here."""
        if not is_activity_id(activity_id):
            raise LeadSquaredError("rejected", f"no activity id to attach to ({activity_id!r}):"
                                   " Attachment/Add was not sent")
        body = {"ProspectActivityId": activity_id, "AttachmentName": name,
                "Description": description, "AttachmentFile": url}
        answer = await self._c.request("add_attachment", "POST",
                                       "ProspectActivity.svc/Attachment/Add", body=body,
                                       write=True)
        return str(message_id(answer))


def services(client: LeadSquaredClient) -> tuple[LeadsApi, ActivitiesApi, OpportunitiesApi,
                                                 UsersApi, FilesApi]:
    return (LeadsApi(client), ActivitiesApi(client), OpportunitiesApi(client),
            UsersApi(client), FilesApi(client))


def read_upload(answer: Any) -> Upload:
    """The S3 URL from `s3FilePath` (reference §8: Chatwoot's client and a client mirroring
    a working n8n template read it); else `uploadedFile` when that is itself a URL (the
    upload page names only uploadedFile, [DOC:file-upload-to-leads]); else none."""
    info = answer if isinstance(answer, dict) else {}
    name = info.get("uploadedFile") if isinstance(info.get("uploadedFile"), str) else None
    for candidate in (info.get("s3FilePath"), name):
        if isinstance(candidate, str) and candidate.startswith(("https://", "http://")):
            return Upload(candidate, name)
    if not name and not isinstance(info.get("s3FilePath"), str):
        raise LeadSquaredError("unknown_outcome", "File Upload answered no file: "
                                                  f"{str(answer)[:200]}")
    return Upload(None, name)


def activity_item(lead_id: str, event: int, note: str, when: datetime,
                  fields: dict[str, str], *, opportunity_id: str | None = None,
                  owner_email: str | None = None) -> dict[str, Any]:
    """An activity as Create and Bulk ByLeadId take it (§2c); on an opportunity with
    `opportunity_id` (Create only). `owner_email` is ActivityOwnerEmail, which the bulk
    calls document (§9); issue 26 will send it."""
    item: dict[str, Any] = {"RelatedProspectId": lead_id, "ActivityEvent": event,
                            "ActivityNote": note, "ActivityDateTime": lsq_datetime(when),
                            "Fields": _fields(fields)}
    if opportunity_id:
        item["RelatedOpportunityId"] = opportunity_id
    if owner_email:
        item["ActivityOwnerEmail"] = owner_email
    return item


def opportunity_item(event: int, note: str, when: datetime, fields: dict[str, str],
                     owner_email: str) -> dict[str, Any]:
    """A row of ByOpportunityId (§2e): the opportunity is the call's; ActivityOwnerEmail is
    mandatory there. §2e lists no ActivityDateTime for this call; we send it as ByLeadId
    and Create take it (GUESS: accepted alike), so a backfilled window keeps its time."""
    return {"ActivityEvent": event, "ActivityNote": note, "ActivityOwnerEmail": owner_email,
            "ActivityDateTime": lsq_datetime(when), "Fields": _fields(fields)}


def bulk_rows(answer: Any, count: int) -> list[dict]:
    """A bulk answer as one row per item, in item order; what cannot be matched to an item
    is an empty row (an unknown outcome the key check settles). Shapes read: the
    documented `{"Response": [{"ProspectActivityId"}]}`, rows with RowNumber /
    ActivityCreated / ExceptionMessage (GH#70701181602), a bare array of rows, and
    `{"Status": "Success", "Message": {"Count": N}}` without ids (GH#70701181602)."""
    rows = answer.get("Response") if isinstance(answer, dict) else answer
    if isinstance(rows, list):
        rows = [row if isinstance(row, dict) else {} for row in rows]
        numbered = {_int(row.get("RowNumber")): row for row in rows}
        if all(n in numbered for n in range(1, count + 1)):
            return [numbered[n] for n in range(1, count + 1)]
        if len(rows) == count and not any("RowNumber" in row for row in rows):
            return rows if count == 1 or all(map(_clean, rows)) else _untold(rows)
        return [{} for _ in range(count)]
    message = answer.get("Message") if isinstance(answer, dict) else None
    counted = message.get("Count") if isinstance(message, dict) else None
    if counted == count:  # all created, no ids: each row's key check finds its id
        return [{"ActivityCreated": True} for _ in range(count)]
    if isinstance(counted, int):  # some not created: the rows whose key is absent
        why = f"the bulk answer counts {counted} of {count} rows created"
        return [{"ExceptionMessage": why} for _ in range(count)]
    return [{} for _ in range(count)]


def _clean(row: dict) -> bool:
    """A row that says plainly it was created: an id, no error, no "not created" flag."""
    return bool(row.get("ProspectActivityId")) and not said_not_created(row)


def said_not_created(row: dict) -> bool:
    """The row says its item was not made: ActivityCreated false, an error message, or a
    null id."""
    return (created_flag(row) is False or bool(row_error(row))
            or ("ProspectActivityId" in row and not row["ProspectActivityId"]))


def row_error(row: dict) -> Any:
    return row.get("ExceptionMessage") or row.get("ErrorMessage")


def _untold(rows: list[dict]) -> list[dict]:
    """Rows without numbers, not all plainly created: nothing documents that they come in
    item order, and read by position a refused item could take a created one's id (and be
    recorded as delivered). So no row is read by position: each is looked for by its key,
    and, when some row said it was not created, posted singly when absent."""
    if not any(map(said_not_created, rows)):
        return [{} for _ in rows]
    why = "a row of this bulk answer was not created, and its rows are not numbered"
    return [{"ExceptionMessage": why} for _ in rows]


def created_flag(row: dict) -> bool | None:
    """A row's ActivityCreated as True, False or None (absent or unreadable): JSON true and
    false, and the strings and numbers a looser serialiser writes ("false", 0)."""
    flag = row.get("ActivityCreated")
    if isinstance(flag, str):
        flag = {"true": True, "1": True, "false": False, "0": False}.get(flag.strip().lower())
    elif isinstance(flag, int):
        flag = bool(flag)
    return flag if isinstance(flag, bool) else None


def listed(answer: Any, call: str) -> list[dict]:
    """A documented array of objects as it came; anything else (an object, null, an array
    holding something other than objects) is an answer the sink cannot read: an unknown,
    raised as a read's transient failure (a read is retried; nothing is taken as "none")."""
    if isinstance(answer, list) and all(isinstance(row, dict) for row in answer):
        return answer
    raise LeadSquaredError("transient", f"{call} answered something that is no array of "
                                        f"records (unreadable): {shape(answer)}")


def shape(answer: Any) -> str:
    """An answer's shape in words, never its values (leads and users are personal data):
    "an object with keys [Message, Status]", "an array of 3 (str, dict)", "null"."""
    if answer is None:
        return "null"
    if isinstance(answer, dict):
        return f"an object with keys {sorted(map(str, answer))[:20]}"
    if isinstance(answer, list):
        kinds = ", ".join(sorted({type(row).__name__ for row in answer}))
        return f"an array of {len(answer)} ({kinds})"
    return f"a {type(answer).__name__}"


def _object(answer: Any, call: str) -> dict:
    """A documented JSON object as it came; anything else raises as listed() does."""
    if isinstance(answer, dict):
        return answer
    raise LeadSquaredError("transient", f"{call} answered something that is no object "
                                        f"(unreadable): {shape(answer)}")


def _first(rows: list[dict]) -> dict | None:
    return rows[0] if rows else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# The id recorded for an activity found by its idempotency key in a read whose row named no
# id under any name keys.ID_NAMES reads: the key landed (never posted again), and this says
# the id is unknown in a way no call sends as an id (is_activity_id).
NO_ACTIVITY_ID = "unknown: found by its key, the answer named no activity id"


def is_activity_id(value: object) -> bool:
    """Whether a recorded activity id can be sent as one: not NO_ACTIVITY_ID, nor empty,
    nor "None" (what a ledger written before NO_ACTIVITY_ID holds for such an activity)."""
    return isinstance(value, str) and value.strip() not in ("", "None", NO_ACTIVITY_ID)


def message_id(answer: Any) -> Any:
    """`Message.Id` of a create answer; a success without it leaves the outcome unknown."""
    message = answer.get("Message") if isinstance(answer, dict) else None
    if not isinstance(message, dict) or message.get("Id") in (None, ""):
        raise LeadSquaredError("unknown_outcome", "success answer without Message.Id")
    return message["Id"]


async def walk(page: Callable[[int, int], Awaitable[dict]], key: str,
               page_size: int) -> list[dict]:
    """Concatenate pages (`page(offset, size)`) until RecordCount rows, else a short page.

    A page shorter than asked is the end only when the answer gives no RecordCount, or
    RecordCount says so: a server that serves fewer rows a call than asked (no maximum is
    documented; Retrieve's default is 25) would otherwise hide the rest, and a key on them
    would be posted again. The next page is then asked at the size served, so an offset
    or a PageIndex lands where the last page ended.
    """
    rows: list[dict] = []
    size, last = page_size, None
    while True:
        answer = await page(len(rows), size)
        batch = page_rows(answer, key)
        if batch == last:  # the paging asked is ignored: the same page again ends it
            return rows
        rows.extend(batch)
        total = _int(answer.get("RecordCount"))
        if not batch or (total is None and len(batch) < size) or (
                total is not None and len(rows) >= total):
            return rows
        size, last = min(size, len(batch)), batch


def page_rows(answer: Any, key: str) -> list[dict]:
    """A page's rows under `key` (ProspectActivities, List). An answer without them is an
    unknown, raised (a read's transient failure), never "no rows": read as none, a key
    check finds no key and posts a chat again, an opportunity read finds no deal. Only
    RecordCount 0 says plainly that there are none."""
    if isinstance(answer, dict):
        rows = answer.get(key)
        if rows is None and _int(answer.get("RecordCount")) == 0:
            return []
        if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
            return rows
    raise LeadSquaredError("transient", f"a page of {key} is unreadable (no array of "
                                        f"records under {key}): {shape(answer)}")


def _attributes(attributes: dict[str, str]) -> list[dict[str, str]]:
    return [{"Attribute": name, "Value": value} for name, value in attributes.items()]


def _fields(fields: dict[str, str]) -> list[dict[str, str]]:
    return [{"SchemaName": name, "Value": value} for name, value in fields.items()]


def _drop_none(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}
