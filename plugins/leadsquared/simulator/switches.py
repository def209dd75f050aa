"""Switches for what the LeadSquared reference leaves unknown: one per open question.

Each switch names the plausible readings; the first is the default: the documented sample
where there is one, else the strictest reading (the one that hides the fewest client
bugs). The sink's tests run against every setting. docs/leadsquared-simulator.md lists
each switch with its source, and `bridge leadsquared check --probe` tells which reading a
real account shows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

SWITCHES: dict[str, tuple[str, ...]] = {
    # §7.6: is a stored "+91-98..." found by a bare "98..."? exact: no (stored value less
    # spaces and hyphens must equal the query); normalised: digits compared, with or
    # without the country code.
    "phone_match": ("exact", "normalised"),
    # §8 [LIVE] says opportunityType is required; [DOC:get-opportunities-by-lead-id] says
    # optional.
    "opportunity_type": ("required", "optional"),
    # Where Retrieve puts custom fields: live = only in ActivityFields (§8 [LIVE]);
    # both = ActivityFields and Data; docs = only in Data, no ActivityFields (§2c).
    "retrieve_shape": ("live", "both", "docs"),
    # CreateType DataType: string = only String, the one type every doc example shows
    # (§2d); any = also Number, Decimal, Date, DateTime, Boolean (GUESS).
    "field_types": ("string", "any"),
    # A body that is not JSON: 500 with a non-MX .NET type (§8 [LIVE] gotcha 15) or
    # 400 ([DOC:error-handling], §3).
    "bad_json": ("500", "400"),
    # Leads.GetByQuickSearch: literal = the key is a substring of a field as stored
    # (GUESS); digits = the key's digits are found in a phone field's digits.
    "quick_search": ("literal", "digits"),
    # File Upload's answer: s3 = uploadedFile and s3FilePath, the S3 URL Attachment/Add
    # takes (§8, §9: Chatwoot's client, a client mirroring a working n8n template);
    # name_only = uploadedFile alone, as the upload page's text names it
    # [DOC:file-upload-to-leads].
    "upload_answer": ("s3", "name_only"),
    # Bulk answer rows: documented = {"Response": [{"ProspectActivityId"}]}, a refused row's
    # id null [DOC:post-bulk-activities-on-leads]; flagged = RowNumber, ActivityCreated,
    # ProspectActivityId, ExceptionMessage (GH#70701181602); count = {"Status": "Success",
    # "Message": {"Count": N}} without ids (GH#70701181602's other branch).
    "bulk_answer": ("documented", "flagged", "count"),
    # UserByAccessKey.Get: documented = "EmailAddress": null, the login in PassPhrase
    # [DOC:user-authentication]; email = EmailAddress filled (GUESS).
    "user_fields": ("documented", "email"),
    # ActivityTypes.Get: listed = opportunity types appear with codes 12000+ (§2d: codes
    # seen); absent = only activity types (no documented call lists opportunity types).
    "opportunity_types": ("listed", "absent"),
    # GetActivitySetting: documented = ID, Name, DisplayName, Fields (the doc sample has no
    # AllowAttachments) [DOC:get-details-of-activity-type]; attachments_key = also
    # AllowAttachments (GUESS, as CreateType takes it).
    "activity_setting": ("documented", "attachments_key"),
    # Leads.RecentlyModified: documented = Sorting honoured, "Direction" "1" most recent
    # first, "0" oldest first, on the column named [DOC:get-leads-by-date-range];
    # ignored = ProspectAutoId whatever ColumnName says, in the Direction asked (GUESS).
    "recent_sort": ("documented", "ignored"),
    # Unique lead fields: documented = EmailAddress and Phone; Mobile may repeat
    # [DOC:create-a-lead] (§9); mobile_too = an account that made Mobile unique as well.
    "unique_fields": ("documented", "mobile_too"),
    # RetrieveLeadByPhoneNumber with a leading '+': the docs want digits only, "no spaces,
    # hyphens or any other character" [DOC:get-lead-by-phone] (§9). no_match = it matches
    # nothing; accepted = compared like the digits; refused = MXInvalidInputException.
    "phone_plus": ("no_match", "accepted", "refused"),
    # How a single ProspectActivity.svc/Create names the activity's owner: the page lists
    # no owner parameter [DOC:post-an-activity-to-lead]; the bulk calls take
    # ActivityOwnerEmail [DOC:post-bulk-activities-on-leads], Update Activity a Fields
    # "Owner" with a user id [DOC:update-activity]. ignored = the keys' user owns it
    # whatever is sent; owner_email = a top-level ActivityOwnerEmail (GUESS);
    # owner_field = Fields "Owner" = user id (GUESS).
    "create_owner": ("ignored", "owner_email", "owner_field"),
    # Rows a read answers per call when the client asks for more: Retrieve answers 25
    # "unless paging is passed" [DOC:get-activities-of-a-lead], the opportunity lists 25 by
    # default [DOC:get-opportunities-by-lead-id]; no maximum is documented. honoured = the
    # RowCount / PageSize asked; capped = at most 25 a call whatever is asked (GUESS: a
    # server clamping page sizes), RecordCount still the total, a PageIndex counted in
    # pages of the size served.
    "paging": ("honoured", "capped"),
    # Leads.Get naming a LookupName no lead of the account holds (a misspelt custom field):
    # no_match = [] (GUESS); ignored = the filter dropped, leads answered unfiltered, as
    # §8 [LIVE] gotchas 1, 2 saw a wrongly shaped filter silently ignored (GUESS).
    "unknown_field": ("no_match", "ignored"),
    # §7.9: whether an ActivityDateTime in the future is accepted. any = stored as given
    # (no source says otherwise); not_future = refused (MXInvalidInputException) when later
    # than the server's clock, as an account dating activities by when they happened may
    # (GUESS). A wrong clock (a phone's, an import's) stamps messages in the future.
    "activity_time": ("any", "not_future"),
    # An OwnerId attribute on Lead.Create / Lead.CreateOrUpdate. The pages list no owner
    # among the lead fields ("pass as many lead fields as you want") [DOC:create-a-lead]
    # [DOC:create-or-update]; a lead record names its owner by user id in OwnerId
    # [DOC:get-lead-by-phone] (reference §2a), and public clients send
    # {"Attribute": "OwnerId", "Value": "<user id>"} to Lead.Create, Lead.Capture and
    # Lead.Update (GUESS that it works: none records the answer). honoured = the id of an
    # active user becomes the owner (any other value refused, MXInvalidInputException);
    # ignored = the keys' user owns the lead whatever is sent; refused = any OwnerId refused
    # (MXInvalidInputException: an account or a role that may not assign leads, GUESS).
    "lead_owner": ("honoured", "ignored", "refused"),
    # An activity's owner (a bulk row's ActivityOwnerEmail, or the single Create's owner
    # per create_owner) naming an inactive user. The bulk page says only "Email Id of the
    # LeadSquared user who owns the activity" [DOC:post-bulk-activities-on-leads]; how an
    # inactive user is answered is not documented. UNSURE: no source found (searched the
    # docs, pages, issues and code corpora for ActivityOwnerEmail and inactive or
    # deactivated owners, December 2026; the help pages say only that a deactivated user
    # cannot log in). recorded = owned by that user as given (GUESS, the default: never
    # strict where no source says so); refused = the row refused, MXInvalidInputException
    # (GUESS); api_user = the keys' user owns it instead (GUESS).
    "inactive_owner": ("recorded", "refused", "api_user"),
    # What a custom activity field's length counts. The limit is sourced: GetActivityDetails
    # answers "MaxFieldLength": 200 for mx_Custom_1 [DOC:get-activity-details] (reference
    # §2, §7.3); its unit is not. UNSURE: no source found (the reference gives none;
    # .NET strings count UTF-16 code units, a MySQL utf8mb4 VARCHAR counts code points, a
    # byte-limited column counts UTF-8 bytes). utf8_bytes = UTF-8 bytes (GUESS, the
    # strictest); utf16 = UTF-16 code units (GUESS); code_points = code points (GUESS).
    # A longer value is refused, MXInvalidInputException (GUESS: the shape of its other
    # refusals of a post's input).
    "field_length": ("utf8_bytes", "utf16", "code_points"),
}


@dataclass
class Switches:
    """The current reading of each open question; see SWITCHES for the choices."""

    phone_match: str = "exact"
    opportunity_type: str = "required"
    retrieve_shape: str = "live"
    field_types: str = "string"
    bad_json: str = "500"
    quick_search: str = "literal"
    upload_answer: str = "s3"
    bulk_answer: str = "documented"
    user_fields: str = "documented"
    opportunity_types: str = "listed"
    activity_setting: str = "documented"
    recent_sort: str = "documented"
    unique_fields: str = "documented"
    phone_plus: str = "no_match"
    create_owner: str = "ignored"
    paging: str = "honoured"
    unknown_field: str = "no_match"
    activity_time: str = "any"
    lead_owner: str = "honoured"
    inactive_owner: str = "recorded"
    field_length: str = "utf8_bytes"


SWITCH_NAMES = tuple(f.name for f in fields(Switches))


def check_switch(name: str, value: Any) -> str:
    """The value to store for a switch, or ValueError naming the choices."""
    value = str(value)
    if value not in SWITCHES[name]:
        raise ValueError(f"{name} {value!r}: use one of {', '.join(SWITCHES[name])}")
    return value


def every_setting() -> list[dict[str, str]]:
    """The default, each switch moved off it alone, then every switch at its last choice."""
    settings = [{}]
    for name, choices in SWITCHES.items():
        settings.extend({name: choice} for choice in choices[1:])
    settings.append({name: choices[-1] for name, choices in SWITCHES.items()})  # all loose
    return settings
