"""The in-memory LeadSquared account behind the simulator.

Every public `Store` method checks its whole input before it writes anything and never
awaits, so concurrent requests on one event loop cannot interleave inside a commit.
Refusals are raised as `ApiError` in LeadSquared's error shape (reference §3).
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from plugins.leadsquared.simulator.switches import Switches
from plugins.leadsquared.simulator.users import (
    ADMIN_EMAIL,
    OWNER_FIELD,
    InactiveOwner,
    User,
    Users,
)

INVALID = "MXInvalidInputException"
MISSING = "MXMandatoryAttributeMissingException"
DUPLICATE = "MXDuplicateEntryException"

LSQ_TIME = "%Y-%m-%d %H:%M:%S"  # all API datetimes are UTC in this form (reference §1)
_LSQ_TIME_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CUSTOM_FIELD = re.compile(r"^mx_Custom_([1-9]|[1-4][0-9]|50)$")  # mx_Custom_1 .. _50
MAX_TYPE_FIELDS = 50

# GUESS (not in the reference): the standard lead attributes accepted without an mx_ prefix.
STANDARD_ATTRIBUTES = frozenset({
    "FirstName", "LastName", "EmailAddress", "Phone", "Mobile", "Source", "SourceCampaign",
    "SourceMedium", "OwnerId", "Notes", "Company", "JobTitle", "ProspectStage", "Website",
})
# Unique by default: EmailAddress and Phone, not Mobile [DOC:create-a-lead] (§9); switch
# unique_fields=mobile_too adds Mobile, as an account may configure.
UNIQUE_FIELDS = {"EmailAddress": "Email", "Phone": "Phone Number"}
MOBILE_UNIQUE = {"Mobile": "Mobile Number"}
# GUESS: the reference says CreateOrUpdate matches "on email and phone"; Mobile is added
# because clients such as Chatwoot send only Mobile, and Mobile is also checked for duplicates.
DEFAULT_MATCH = ("EmailAddress", "Phone", "Mobile")
OPPORTUNITY_STATUSES = ("Open", "Won", "Lost")  # GUESS: the stock status values
FIRST_CUSTOM_CODE = 201  # GUESS: any code works; clients must look codes up by name
DOCUMENTED_TYPES = ("String",)  # every CreateType example in the docs (reference §2d)
# GUESS: types an account may also accept (switch field_types=any).
OTHER_TYPES = ("Number", "Decimal", "Date", "DateTime", "Boolean")
_PHONE_QUERY = re.compile(r"^\+?\d+$")  # digits, with or without the country code
_PLUS = "+"


class ApiError(Exception):
    """A request LeadSquared would refuse; the simulator answers with `body()` and `status`."""

    def __init__(self, exception_type: str, message: str, status: int = 500) -> None:
        super().__init__(f"{exception_type}: {message}")
        self.exception_type = exception_type
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        return {"Status": "Error", "ExceptionType": self.exception_type,
                "ExceptionMessage": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(INVALID, f"Invalid Input! {message}")


def missing(name: str, why: str = "") -> ApiError:
    return ApiError(MISSING, f"'{name}' is mandatory{why}")


def utc_now() -> str:
    return datetime.now(UTC).strftime(LSQ_TIME)


def squash(phone: Any) -> str:
    """A phone number without spaces and hyphens ('' for no number)."""
    return phone.replace(" ", "").replace("-", "") if isinstance(phone, str) else ""


def as_int(value: Any, name: str, minimum: int | None = None) -> int:
    """An int from a JSON int or a digit string (paging values are strings in the docs)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"Parameter Name: {name} (a whole number is expected)")
    if minimum is not None and value < minimum:
        raise invalid(f"Parameter Name: {name} (must be at least {minimum})")
    return value


def as_object(value: Any, name: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"Parameter Name: {name} (a JSON object is expected)")
    return value


def _scalar(value: Any, name: str) -> str | None:
    """A field value as LeadSquared keeps it: text, or None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise invalid(f"Parameter Name: {name} (text is expected)")


def _comparable(name: str, value: Any) -> str:
    """The form unique fields are compared in: phones squashed, emails case-folded."""
    if not isinstance(value, str):
        return ""
    if name in ("Phone", "Mobile"):
        return squash(value)
    return value.strip().casefold() if name == "EmailAddress" else value


# --- lead attributes ---------------------------------------------------------------------


def parse_attributes(body: Any, allow_search_by: bool = False) -> tuple[dict, str | None]:
    """[{"Attribute","Value"}...] -> (attributes, SearchBy or None), refusing unknown names."""
    if not isinstance(body, list) or not body:
        raise invalid("the body must be a non-empty JSON array of {Attribute, Value}")
    attributes: dict[str, str | None] = {}
    search_by = None
    for item in body:
        name, value = _attribute(item)
        if name == "SearchBy" and allow_search_by:
            search_by = _search_key(value)
            continue
        if name not in STANDARD_ATTRIBUTES and not name.startswith("mx_"):
            raise invalid(f"Parameter Name: {name} (no such lead field; custom fields "
                          "start with mx_)")
        attributes[name] = value
    if not attributes:
        raise invalid("no lead attributes given")
    return attributes, search_by


def _attribute(item: Any) -> tuple[str, str | None]:
    item = as_object(item, "Attribute")
    name = item.get("Attribute")
    if not isinstance(name, str) or not name:
        raise missing("Attribute")
    if "Value" not in item:
        raise missing("Value", f" for attribute {name}")
    return name, _scalar(item["Value"], name)


def _search_key(value: Any) -> str:
    if value in DEFAULT_MATCH or (isinstance(value, str) and value.startswith("mx_")):
        return value
    raise invalid(f"Parameter Name: SearchBy ({value!r} is not a searchable lead field)")


# --- records -----------------------------------------------------------------------------


@dataclass
class ActivityType:
    """An activity type; `fields` maps mx_Custom_N to its definition as posted."""

    code: int
    name: str
    fields: dict[str, dict] = field(default_factory=dict)
    score: int = 0
    direction: int = 0
    description: str = ""
    opportunity: bool = False  # an opportunity type: created by Capture, not by Create
    allow_attachments: bool = False

    def as_row(self) -> dict[str, Any]:
        # GUESS: the reference confirms only ActivityEventName and ActivityEvent (§7.4).
        return {"ActivityEvent": self.code, "ActivityEventName": self.name,
                "Score": self.score, "Direction": self.direction,
                "Description": self.description, "IsCustom": self.custom}

    @property
    def custom(self) -> bool:
        return self.code >= FIRST_CUSTOM_CODE and not self.opportunity

    def setting(self, with_attachments: bool = False) -> dict[str, Any]:
        """CustomActivity/GetActivitySetting as documented: ID, Name, DisplayName, Fields
        [DOC:get-details-of-activity-type]; AllowAttachments only `with_attachments`
        (switch activity_setting, GUESS)."""
        setting = {"ID": str(self.code), "Name": self.name, "DisplayName": self.name,
                   "Fields": [dict(f) for f in self.fields.values()]}
        if with_attachments:
            setting["AllowAttachments"] = int(self.allow_attachments)
        return setting


def system_types() -> list[ActivityType]:
    """Types every account has (reference §2d: 21/22 calls, 12000 opportunities)."""
    return [ActivityType(21, "Inbound Phone Call Activity"),
            ActivityType(22, "Outbound Phone Call Activity"),
            ActivityType(12000, "Opportunity", opportunity=True)]


@dataclass
class Activity:
    """One posted activity; `seq` orders activities posted in the same second."""

    id: str
    lead_id: str
    opportunity_id: str | None
    event: int
    event_name: str
    note: str
    when: str
    created_on: str
    fields: list[tuple[str, str | None]]
    seq: int
    created_by: str = ""
    owner: str = ""  # the owning user's email (simulator/users.py)

    def as_row(self, shape: str = "live", custom: bool = True) -> dict[str, Any]:
        """The item shape of ProspectActivity.svc/Retrieve (reference §8 [LIVE], §2c).

        shape (switch retrieve_shape): live puts custom fields only in ActivityFields,
        both in ActivityFields and Data, docs only in Data (no ActivityFields). Items of
        system event codes (custom False) have no ActivityFields, as on a live account.
        """
        fields = [{"Key": name, "Value": value} for name, value in self.fields]
        data = [{"Key": "ActivityEvent_Note", "Value": self.note},
                {"Key": "CreatedBy", "Value": self.created_by}]
        row = {"Id": self.id, "ProspectActivityAutoId": self.seq, "EventCode": self.event,
               "EventName": self.event_name, "CreatedOn": self.created_on,
               "ActivityDateTime": self.when, "ModifiedOn": self.created_on,
               "RelatedProspectId": self.lead_id,
               "Data": data + fields if shape != "live" else data}
        if shape != "docs" and custom:
            row["ActivityFields"] = {**dict(self.fields), "ActivityEvent_Note": self.note,
                                     "CreatedBy": self.created_by,
                                     "CreatedOn": _us_time(self.created_on)}
        return row

    def as_list_item(self, columns: set[str]) -> dict[str, Any]:
        """A GetActivitiesOfOpportunity item: standard fields, custom ones only when named
        in Columns.Include_CSV (reference §8, [DOC:?p=2247]); the flat shape is a GUESS."""
        item = {"ProspectActivityId": self.id, "ActivityEvent": self.event,
                "ActivityEventName": self.event_name, "ActivityNote": self.note,
                "ActivityDateTime": self.when, "CreatedOn": self.created_on,
                "ModifiedOn": self.created_on, "CreatedBy": self.created_by,
                "RelatedProspectId": self.lead_id, "RelatedOpportunityId": self.opportunity_id}
        item.update((name, value) for name, value in self.fields if name in columns)
        return item

    def as_record(self) -> dict[str, Any]:
        """The activity as it was posted, for tests (Simulator.activities)."""
        return {"Id": self.id, "RelatedProspectId": self.lead_id,
                "RelatedOpportunityId": self.opportunity_id, "ActivityEvent": self.event,
                "EventName": self.event_name, "ActivityNote": self.note,
                "ActivityDateTime": self.when, "CreatedOn": self.created_on,
                "Owner": self.owner,
                "Fields": [{"SchemaName": n, "Value": v} for n, v in self.fields]}


@dataclass
class Opportunity:
    """An opportunity; its id doubles as its activity id (reference §2e, GetOpportunityDetails)."""

    id: str
    lead_id: str
    event: int
    name: str
    status: str
    note: str
    created_on: str
    seq: int
    fields: dict[str, str | None] = field(default_factory=dict)

    def as_row(self, lead: dict[str, Any]) -> dict[str, Any]:
        """A flat GetOpportunitiesOfLead List[] item, no Fields member (reference §8 [LIVE]);
        OpportunityEvent as in GetOpportunitiesByUniqueLeadField (§2e)."""
        return {"OpportunityId": self.id, "RelatedProspectId": self.lead_id,
                "ProspectId": self.lead_id, "FirstName": lead.get("FirstName"),
                "mx_Custom_1": self.name, "Status": self.status,
                "Owner": lead.get("OwnerId"), "OpportunityEvent": str(self.event),
                "OpportunityNote": self.note, "CreatedOn": self.created_on,
                "ModifiedOn": self.created_on, **self.fields}


def _us_time(lsq_time: str) -> str:
    """'2026-07-31 05:33:50' -> '7/31/2026 5:33:50 AM', ActivityFields.CreatedOn (§8)."""
    when = datetime.strptime(lsq_time, LSQ_TIME)
    hour = when.hour % 12 or 12
    return (f"{when.month}/{when.day}/{when.year} {hour}:{when.minute:02}:{when.second:02} "
            f"{'AM' if when.hour < 12 else 'PM'}")


def newest_first(activities: list[Activity]) -> list[Activity]:
    # GUESS: history is ordered by ActivityDateTime (the time the activity happened).
    return sorted(activities, key=lambda a: (a.when, a.seq), reverse=True)


# --- checks on an activity post --------------------------------------------------------


def parse_note(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid("Parameter Name: ActivityNote (text is expected)")
    if len(value) > limit:
        raise invalid(f"Parameter Name: ActivityNote is {len(value)} characters long; "
                      f"at most {limit} are allowed")
    return value


def parse_when(value: Any) -> str:
    """ActivityDateTime: 'YYYY-MM-DD HH:MM:SS' (UTC), or now when left out."""
    if value is None:
        return utc_now()
    if isinstance(value, str) and _LSQ_TIME_SHAPE.match(value):
        try:
            datetime.strptime(value, LSQ_TIME)
            return value
        except ValueError:
            pass
    raise invalid(f"Parameter Name: ActivityDateTime ({value!r} is not yyyy-MM-dd HH:mm:ss)")


# A custom field's MaxFieldLength as GetActivityDetails answers it for mx_Custom_1
# [DOC:get-activity-details] (reference §2); what it counts is switch field_length.
FIELD_LIMIT = 200


def field_length(value: str, unit: str) -> int:
    """A field value's length as switch field_length counts it."""
    if unit == "utf8_bytes":
        return len(value.encode("utf-8", "surrogatepass"))
    if unit == "utf16":
        return len(value.encode("utf-16-le", "surrogatepass")) // 2
    return len(value)


def parse_fields(value: Any, kind: ActivityType,
                 unit: str = "utf8_bytes") -> list[tuple[str, str | None]]:
    """Fields of a post: each SchemaName must be defined on the activity type, and each
    value at most FIELD_LIMIT long (counted in `unit`, switch field_length)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("Parameter Name: Fields (a JSON array is expected)")
    fields: dict[str, str | None] = {}
    for item in value:
        item = as_object(item, "Fields")
        name = item.get("SchemaName")
        if name not in kind.fields:
            raise invalid(f"Parameter Name: Fields (activity type {kind.code} has no field "
                          f"{name!r})")
        if name in fields:
            raise invalid(f"Parameter Name: Fields ({name} is given twice)")
        fields[name] = _scalar(item.get("Value"), name)
        if (got := fields[name]) is not None and field_length(got, unit) > FIELD_LIMIT:
            raise invalid(f"Parameter Name: {name} is {field_length(got, unit)} long "
                          f"({unit}); at most {FIELD_LIMIT} are allowed")
    return list(fields.items())


def parse_type_fields(value: Any, types: tuple[str, ...] = DOCUMENTED_TYPES) -> dict[str, dict]:
    """CreateType Fields: at most 50, named mx_Custom_1 .. mx_Custom_50, no repeats, each
    DataType one of `types` (String when left out)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise invalid("Parameter Name: Fields (a JSON array is expected)")
    if len(value) > MAX_TYPE_FIELDS:
        raise invalid(f"Parameter Name: Fields ({len(value)} given; at most "
                      f"{MAX_TYPE_FIELDS} custom fields)")
    fields: dict[str, dict] = {}
    for item in value:
        name = as_object(item, "Fields").get("SchemaName")
        if not isinstance(name, str) or not _CUSTOM_FIELD.match(name):
            raise invalid(f"Parameter Name: SchemaName ({name!r} is not mx_Custom_1..50)")
        if name in fields:
            raise invalid(f"Parameter Name: SchemaName ({name} is given twice)")
        kind = item.get("DataType", "String")
        if kind not in types:
            raise invalid(f"Parameter Name: DataType ({kind!r} for {name}; accepted: "
                          f"{', '.join(types)})")
        fields[name] = dict(item, DataType=kind)
    return fields


# --- the store ---------------------------------------------------------------------------


class Store:
    """Leads, activity types, activities and opportunities of one account."""

    def __init__(self, seed: int | None = None) -> None:
        self.switches = Switches()
        self.refusing: dict[str, str] = {}  # opportunity id -> why posts on it are refused
        self.refusing_notes: dict[str, str] = {}  # opportunity id -> only notes with this
        self._ids = random.Random(seed)
        self._seq = itertools.count(1)
        self.user_id = self.new_id()
        self.users = Users()
        self.users.add(User(self.user_id, "Simulator", "Admin", ADMIN_EMAIL,
                            role="Administrator"))
        self.leads: dict[str, dict[str, Any]] = {}
        self._created: dict[str, int] = {}
        self.types: dict[int, ActivityType] = {t.code: t for t in system_types()}
        self._next_code = FIRST_CUSTOM_CODE
        self.activities: dict[str, Activity] = {}
        self.opportunities: dict[str, Opportunity] = {}
        self.files: dict[str, Any] = {}  # uploadedFile name -> simulator_files.StoredFile
        self.attachments: dict[str, list[dict[str, str]]] = {}  # activity id -> attachments

    def new_id(self) -> str:
        """A GUID, reproducible under a seed."""
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # leads

    def lead(self, lead_id: str) -> dict[str, Any] | None:
        lead = self.leads.get(lead_id)
        return dict(lead) if lead else None

    def leads_by_phone(self, phone: str) -> list[dict[str, Any]]:
        """RetrieveLeadByPhoneNumber: Phone/Mobile against the query (switch phone_match).

        The query must be digits, with or without the country code (reference §2a, §9): one
        with spaces, hyphens or anything else matches nothing; a leading '+' per switch
        phone_plus (matches nothing, is compared as given, or is refused). exact compares
        the stored value less spaces and hyphens with the query as given; normalised
        compares digits, the query with or without the country code (GUESS, §7.6).
        """
        if not _PHONE_QUERY.match(phone):
            return []
        if phone.startswith(_PLUS) and self.switches.phone_plus != "accepted":
            if self.switches.phone_plus == "refused":
                raise invalid("Parameter Name: phone (digits only, no '+')")
            return []
        same = _same_digits if self.switches.phone_match == "normalised" else _same_text
        hits = [lead_id for lead_id, lead in self.leads.items()
                if same(phone, lead.get("Phone")) or same(phone, lead.get("Mobile"))]
        return self._latest(hits)

    def _latest(self, hits: list[str]) -> list[dict[str, Any]]:
        """The lead with the most recent activity, as a one-item list (reference §2a)."""
        if not hits:
            return []
        best = max(hits, key=lambda i: (self.leads[i]["ProspectActivityDate_Max"] or "",
                                        self._created[i]))
        return [dict(self.leads[best])]

    def quick_search(self, key: str) -> list[dict[str, Any]]:
        """Leads.GetByQuickSearch: leads with `key` in a name, email or phone field.

        GUESS (switch quick_search): literal = a case-insensitive substring of the value as
        stored; digits = also the key's digits inside a phone field's digits.
        """
        key = key.strip().casefold()
        digits = re.sub(r"\D", "", key)
        found = []
        for lead_id, lead in self.leads.items():
            values = [str(lead.get(n) or "").casefold() for n in QUICK_SEARCH_FIELDS]
            phones = [re.sub(r"\D", "", str(lead.get(n) or "")) for n in ("Phone", "Mobile")]
            if key and any(key in v for v in values) or (
                    self.switches.quick_search == "digits" and len(digits) >= 6
                    and any(digits in p for p in phones)):
                found.append(dict(self.leads[lead_id]))
        return found

    def search(self, body: Any) -> list[dict[str, Any]]:
        """Leads.Get: leads whose LookupName field matches LookupValue (= or LIKE).

        A body without the singular Parameter is not refused: the filter is silently
        ignored and every lead comes back (reference §2a gotcha 1, §8 [LIVE] gotchas 1, 2).
        """
        body = as_object(body or {})
        leads = [dict(lead) for lead in self.leads.values()]
        parameter = body.get("Parameter")
        if not isinstance(parameter, dict):
            return leads[index_slice(body)]
        name, value = parameter.get("LookupName"), parameter.get("LookupValue")
        operator = str(parameter.get("SqlOperator") or "=").upper()
        if not isinstance(name, str) or not isinstance(value, str):
            raise missing("LookupName and LookupValue")
        if operator not in ("=", "LIKE", "<>"):
            raise invalid(f"Parameter Name: SqlOperator ({operator!r} is not simulated)")
        if not any(name in lead for lead in leads) and self.switches.unknown_field == "ignored":
            return leads[index_slice(body)]  # a field no lead holds: the filter dropped
        test = _like(value) if operator == "LIKE" else (lambda v: v.casefold() == value.casefold())
        found = [lead for lead in leads if test(str(lead.get(name) or "")) != (operator == "<>")]
        return found[index_slice(body)]

    def create_lead(self, body: Any, api: bool = False) -> str:
        """Lead.Create (`api`: a request, whose OwnerId follows switch lead_owner; a test's
        own lead takes the OwnerId it names)."""
        attributes, _ = parse_attributes(body)
        return self._insert_lead(self._owner(attributes) if api else attributes)

    def upsert_lead(self, body: Any) -> str:
        """Lead.CreateOrUpdate: update the lead matching SearchBy (or the defaults), or create."""
        attributes, search_by = parse_attributes(body, allow_search_by=True)
        return self._upsert(self._owner(attributes), search_by)

    def _owner(self, attributes: dict) -> dict:
        """A request's OwnerId as switch lead_owner reads it: kept (an active user's id),
        dropped (ignored), or refused."""
        if "OwnerId" not in attributes:
            return attributes
        owner = attributes["OwnerId"]
        if self.switches.lead_owner == "ignored":
            return {k: v for k, v in attributes.items() if k != "OwnerId"}
        user = self.users.by_id.get(str(owner))
        if self.switches.lead_owner == "refused" or user is None or not user.active:
            raise invalid(f"Parameter Name: OwnerId ({owner!r} cannot own this lead)")
        return attributes

    def _upsert(self, attributes: dict, search_by: str | None) -> str:
        lead_id = self._match(attributes, search_by)
        if lead_id is None:
            return self._insert_lead(attributes)
        self._check_unique(attributes, lead_id)
        self.leads[lead_id].update(attributes, ModifiedOn=utc_now())
        return lead_id

    def _match(self, attributes: dict, search_by: str | None) -> str | None:
        if search_by and not attributes.get(search_by):
            raise missing(search_by, f" when SearchBy is {search_by}")
        for name in [search_by] if search_by else DEFAULT_MATCH:
            value = _comparable(name, attributes.get(name))
            for lead_id, lead in self.leads.items():
                if value and _comparable(name, lead.get(name)) == value:
                    return lead_id
        return None

    def _check_unique(self, attributes: dict, exclude: str | None = None) -> None:
        unique = UNIQUE_FIELDS | (MOBILE_UNIQUE if self.switches.unique_fields == "mobile_too"
                                  else {})
        for name, label in unique.items():
            value = _comparable(name, attributes.get(name))
            if value and any(_comparable(name, lead.get(name)) == value
                             for lead_id, lead in self.leads.items() if lead_id != exclude):
                raise ApiError(DUPLICATE, f"A Lead with same {label} already exists.")

    def _insert_lead(self, attributes: dict) -> str:
        self._check_unique(attributes)
        lead_id, now = self.new_id(), utc_now()
        lead: dict[str, Any] = {"ProspectID": lead_id}
        lead.update(dict.fromkeys(sorted(STANDARD_ATTRIBUTES)), OwnerId=self.user_id,
                    ProspectStage="Prospect", CreatedOn=now, ModifiedOn=now,
                    ProspectActivityName_Max=None, ProspectActivityDate_Max=None)
        lead.update(attributes)
        self._created[lead_id] = next(self._seq)
        lead["ProspectAutoId"] = str(self._created[lead_id])
        self.leads[lead_id] = lead
        return lead_id

    def auto_id(self, lead_id: str) -> int:
        """The lead's ProspectAutoId: its creation order."""
        return self._created.get(lead_id, 0)

    def delete_lead(self, lead_id: str) -> None:
        """Delete a lead with its activities and opportunities, as a user of the web app
        can (merging two leads likewise leaves the merged one's id resolving to nothing)."""
        if self.leads.pop(lead_id, None) is None:
            raise KeyError(f"no lead {lead_id!r}")
        self.activities = {i: a for i, a in self.activities.items() if a.lead_id != lead_id}
        self.opportunities = {i: o for i, o in self.opportunities.items()
                              if o.lead_id != lead_id}

    # activity types

    def create_type(self, body: Any) -> int:
        """CreateType: a new custom type; returns its event code."""
        body = as_object(body)
        name = body.get("ActivityEventName")
        if not isinstance(name, str) or not name.strip():
            raise missing("ActivityEventName")
        name = name.strip()
        if any(t.name.casefold() == name.casefold() for t in self.types.values()):
            # GUESS: the exception type and message for a duplicate type name.
            raise ApiError(DUPLICATE, f"An activity type with name '{name}' already exists.")
        accepted = DOCUMENTED_TYPES + (OTHER_TYPES if self.switches.field_types == "any" else ())
        fields = parse_type_fields(body.get("Fields"), accepted)
        attachments = _optional_int(body, "AllowAttachments")
        code, self._next_code = self._next_code, self._next_code + 1
        self.types[code] = ActivityType(
            code, name, fields, score=_optional_int(body, "Score"),
            direction=_optional_int(body, "Direction"),
            description=str(body.get("Description") or ""), allow_attachments=attachments == 1)
        return code

    def _activity_type(self, value: Any) -> ActivityType:
        if value is None:
            raise missing("ActivityEvent")
        kind = self.types.get(as_int(value, "ActivityEvent"))
        if kind is None:
            raise invalid(f"Parameter Name: ActivityEvent ({value} is not an activity type "
                          "of this account)")
        if kind.opportunity:
            # GUESS: opportunities are made with OpportunityManagement.svc/Capture only.
            raise invalid(f"Parameter Name: ActivityEvent ({value} is an opportunity type)")
        return kind

    # activities

    def post_activity(self, body: Any, note_limit: int, bulk: bool = False) -> Activity:
        """ProspectActivity.svc/Create, on a lead or (RelatedOpportunityId) an opportunity;
        a bulk call's row with `bulk` (its ActivityOwnerEmail names the owner)."""
        body = as_object(body)
        single = None if bulk else self.switches.create_owner
        try:
            owner = self.users.owner(body, ADMIN_EMAIL, single, self.switches)
        except InactiveOwner as exc:
            raise invalid(f"ActivityOwnerEmail {exc} is not an active user (simulated)") \
                from None
        if single == "owner_field" and isinstance(body.get("Fields"), list):
            body = {**body, "Fields": [f for f in body["Fields"] if not (
                isinstance(f, dict) and f.get("SchemaName") == OWNER_FIELD)]}
        lead_id = self._existing_lead(body.get("RelatedProspectId"))
        kind = self._activity_type(body.get("ActivityEvent"))
        note = parse_note(body.get("ActivityNote"), note_limit)
        when = parse_when(body.get("ActivityDateTime"))
        if self.switches.activity_time == "not_future" and when > utc_now():
            raise invalid(f"Parameter Name: ActivityDateTime ({when} is in the future)")
        fields = parse_fields(body.get("Fields"), kind, self.switches.field_length)
        opportunity = self._own_opportunity(body.get("RelatedOpportunityId"), lead_id)
        if opportunity in self.refusing and self.refusing_notes.get(opportunity, "") in note:
            raise invalid(self.refusing[opportunity])
        activity = Activity(self.new_id(), lead_id, opportunity, kind.code, kind.name, note,
                            when, utc_now(), fields, next(self._seq), self.user_id, owner)
        self.activities[activity.id] = activity
        self._touch(activity)
        return activity

    def _existing_lead(self, lead_id: Any) -> str:
        if not lead_id:
            # The EmailAddress form of this call (reference §2c) is not simulated.
            raise missing("RelatedProspectId")
        if not isinstance(lead_id, str) or lead_id not in self.leads:
            raise invalid(f"Parameter Name: RelatedProspectId (no lead {lead_id!r})")
        return lead_id

    def _own_opportunity(self, opportunity_id: Any, lead_id: str) -> str | None:
        if opportunity_id in (None, ""):
            return None
        opportunity = self.opportunities.get(opportunity_id) if isinstance(
            opportunity_id, str) else None
        if opportunity is None or opportunity.lead_id != lead_id:
            raise invalid(f"Parameter Name: RelatedOpportunityId (no opportunity "
                          f"{opportunity_id!r} on lead {lead_id})")
        return opportunity.id

    def _touch(self, activity: Activity) -> None:
        lead = self.leads[activity.lead_id]
        latest = lead["ProspectActivityDate_Max"]
        if latest is None or activity.when + ".000" >= latest:
            lead.update(ProspectActivityName_Max=activity.event_name,
                        ProspectActivityDate_Max=activity.when + ".000")

    def lead_activities(self, lead_id: str, event: int | None = None) -> list[Activity]:
        """A lead's activities, newest first.

        Activities posted on one of the lead's opportunities are listed here too: they carry
        the lead as RelatedProspectId and the post answers with it as RelatedId. GUESS.
        """
        return newest_first([a for a in self.activities.values() if a.lead_id == lead_id
                             and (event is None or a.event == event)])

    def opportunity_activities(self, opportunity_id: str,
                               event: int | None = None) -> list[Activity]:
        return newest_first([a for a in self.activities.values()
                             if a.opportunity_id == opportunity_id
                             and (event is None or a.event == event)])

    def stored_activities(self, lead_id: str | None = None,
                          opportunity_id: str | None = None) -> list[Activity]:
        """Activities in the order they were posted, optionally of one lead/opportunity."""
        return [a for a in self.activities.values()
                if (lead_id is None or a.lead_id == lead_id)
                and (opportunity_id is None or a.opportunity_id == opportunity_id)]

    # opportunities

    def add_opportunity(self, lead_id: str, name: str, status: str = "Open",
                        event: int = 12000, note: str = "",
                        fields: dict[str, str | None] | None = None) -> str:
        self._check_opportunity(lead_id, name, status, event)
        opportunity = Opportunity(self.new_id(), lead_id, event, name, status, note,
                                  utc_now(), next(self._seq), dict(fields or {}))
        self.opportunities[opportunity.id] = opportunity
        return opportunity.id

    def _check_opportunity(self, lead_id: str | None, name: Any, status: Any,
                           event: int) -> None:
        if lead_id is not None and lead_id not in self.leads:
            raise invalid(f"Parameter Name: leadId (no lead {lead_id!r})")
        kind = self.types.get(event)
        if kind is None or not kind.opportunity:
            raise invalid(f"Parameter Name: OpportunityEventCode ({event} is not an "
                          "opportunity type)")
        if not isinstance(name, str) or not name.strip():
            raise missing("mx_Custom_1", " (the opportunity name)")
        if status not in OPPORTUNITY_STATUSES:
            raise invalid(f"Parameter Name: Status ({status!r} is not one of "
                          f"{', '.join(OPPORTUNITY_STATUSES)})")

    def capture(self, body: Any) -> tuple[str, str]:
        """OpportunityManagement.svc/Capture: upsert the lead, add an opportunity."""
        body = as_object(body)
        if "LeadDetails" not in body:
            raise missing("LeadDetails")
        attributes, search_by = parse_attributes(body["LeadDetails"], allow_search_by=True)
        details = as_object(body.get("Opportunity"), "Opportunity")
        event = as_int(details.get("OpportunityEventCode"), "OpportunityEventCode")
        values = _opportunity_fields(details.get("Fields"))
        name, status = values.pop("mx_Custom_1", None), values.pop("Status", None) or "Open"
        note = _scalar(details.get("OpportunityNote"), "OpportunityNote") or ""
        self._check_opportunity(None, name, status, event)
        lead_id = self._upsert(attributes, search_by)
        return self.add_opportunity(lead_id, name, status, event, note, values), lead_id

    def opportunities_of(self, lead_id: str, event: int | None = None) -> list[dict]:
        """GetOpportunitiesOfLead rows, newest first (GUESS: the order is not documented)."""
        lead = self.leads.get(lead_id, {})
        found = [o for o in self.opportunities.values() if o.lead_id == lead_id
                 and (event is None or o.event == event)]
        return [o.as_row(lead) for o in sorted(found, key=lambda o: o.seq, reverse=True)]


QUICK_SEARCH_FIELDS = ("FirstName", "LastName", "EmailAddress", "Phone", "Mobile")


def _same_text(query: str, stored: Any) -> bool:
    return bool(stored) and squash(stored) == query


def _same_digits(query: str, stored: Any) -> bool:
    """Digits equal, or equal once a 1-3 digit country code is put in front of the shorter."""
    ask, have = query.lstrip("+"), re.sub(r"\D", "", stored) if isinstance(stored, str) else ""
    if not ask or not have:
        return False
    short, long = sorted((ask, have), key=len)
    return short == long or (long.endswith(short) and 1 <= len(long) - len(short) <= 3)


def _like(pattern: str) -> Any:
    """SQL LIKE ('%' any run, '_' one character), case-insensitive."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    regex = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
    return lambda value: regex.fullmatch(value) is not None


def index_slice(body: dict[str, Any], default: int = 25) -> slice:
    """{"Paging":{"PageIndex" (from 1),"PageSize"}} as a slice of rows."""
    paging = as_object(body.get("Paging") or {}, "Paging")
    size = as_int(paging.get("PageSize", default), "PageSize", 1)
    start = (as_int(paging.get("PageIndex", 1), "PageIndex", 1) - 1) * size
    return slice(start, start + size)


def _optional_int(body: dict, name: str) -> int:
    return 0 if body.get(name) is None else as_int(body[name], name)


def _opportunity_fields(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise invalid("Parameter Name: Fields (a JSON array is expected)")
    fields: dict[str, str | None] = {}
    for item in value:
        name = as_object(item, "Fields").get("SchemaName")
        if not isinstance(name, str) or not name:
            raise missing("SchemaName")
        fields[name] = _scalar(item.get("Value"), name)
    return fields
