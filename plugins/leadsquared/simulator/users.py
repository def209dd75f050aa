"""Simulated users of the account (issue 26: reps own the activities of their numbers).

Sources: `UserManagement.svc/Users.Get` answers every user as `{ID, FirstName, LastName,
EmailAddress, Role, StatusCode (0 active, 1 inactive), MemberOfGroups, Tag,
IsPhoneCallAgent}`, no phone numbers [DOC:get-users]; `User/Retrieve/ByUserId?userId=` and
`User/Retrieve/ByEmailAddress?emailAddress=` answer a one-item array with `UserId`,
`EmailAddress`, `AssociatedPhoneNumbers` ("+91-8556010497"), `PhoneMain`, `PhoneMobile`,
`PhoneOthers` ..., and `[]` for an inactive or unknown user [DOC:get-user-by-id],
[DOC:get-user-by-email-id]. The ByEmailAddress path is the one public clients call (the
doc page names only its parameter). An activity's owner is given by email on the bulk calls
(`ActivityOwnerEmail`, [DOC:post-bulk-activities-on-leads], mandatory on ByOpportunityId);
how a single Create sets it is not documented (switch `create_owner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OWNER_FIELD = "Owner"  # Update Activity's system field: the owner's user id [DOC:update-activity]
ADMIN_EMAIL = "admin@simulator.invalid"  # the keys' user's login


@dataclass
class User:
    id: str
    first: str
    last: str
    email: str
    phones: str = ""  # AssociatedPhoneNumbers, as the account holds it
    mobile: str = ""  # PhoneMobile
    active: bool = True
    role: str = "Sales_User"

    def listed(self) -> dict[str, Any]:
        """A Users.Get item [DOC:get-users]."""
        return {"ID": self.id, "FirstName": self.first, "LastName": self.last,
                "EmailAddress": self.email, "Role": self.role,
                "StatusCode": 0 if self.active else 1, "MemberOfGroups": [], "Tag": None,
                "IsPhoneCallAgent": False}

    def record(self) -> dict[str, Any]:
        """A User/Retrieve/By… item [DOC:get-user-by-id]."""
        return {"UserId": self.id, "FirstName": self.first, "LastName": self.last,
                "EmailAddress": self.email, "AssociatedPhoneNumbers": self.phones,
                "PhoneMain": "", "PhoneMobile": self.mobile, "PhoneOthers": "",
                "Role": self.role, "TimeZone": "Asia/Kolkata", "IsPhoneCallAgent": False}


class Users:
    """The account's users; the keys' user is one of them."""

    def __init__(self) -> None:
        self.by_id: dict[str, User] = {}

    def add(self, user: User) -> User:
        if self.by_email(user.email, active_only=False) is not None:
            raise ValueError(f"a user with email {user.email!r} exists")
        self.by_id[user.id] = user
        return user

    def by_email(self, email: Any, active_only: bool = True) -> User | None:
        if not isinstance(email, str):
            return None
        user = next((u for u in self.by_id.values()
                     if u.email.casefold() == email.strip().casefold()), None)
        return user if user is not None and (user.active or not active_only) else None

    def listing(self) -> list[dict[str, Any]]:
        return [user.listed() for user in self.by_id.values()]

    def retrieve(self, user_id: str | None = None, email: str | None = None) -> list[dict]:
        """[user] for an active user, [] for an inactive or unknown one."""
        user = self.by_id.get(user_id or "") if user_id else self.by_email(email)
        return [user.record()] if user is not None and user.active else []

    def owner(self, item: dict[str, Any], default: str, single: str | None,
              switches: Any = None) -> str:
        """The owner (email) of a posted activity: ActivityOwnerEmail on a bulk row
        (`single` None), else per switch create_owner on Create: ignored = the keys' user
        whatever is sent (the Create page lists no owner parameter
        [DOC:post-an-activity-to-lead]); owner_email = a top-level ActivityOwnerEmail as
        the bulk calls take it (GUESS); owner_field = Fields' "Owner" with a user id, as
        Update Activity takes it (GUESS from [DOC:update-activity]). An owner that is no
        user is recorded as given; an inactive user's email per switch inactive_owner
        (read from `switches` only then): recorded as given, refused, or the keys' user
        instead. UNSURE: no source says how LeadSquared answers either (searched the docs,
        pages, issues and code corpora for ActivityOwnerEmail with inactive or deactivated
        users, December 2026), and a guess is never made strict by default (DESIGN.md
        "Reality first")."""
        if single == "ignored":
            return default
        if single == "owner_field":
            value = next((f.get("Value") for f in item.get("Fields") or []
                          if isinstance(f, dict) and f.get("SchemaName") == OWNER_FIELD), None)
            if value is None:
                return default
            user = self.by_id.get(str(value))
            return _inactive(user, switches, default) if user is not None else str(value)
        email = item.get("ActivityOwnerEmail")
        if email in (None, ""):
            return default
        user = self.by_email(email, active_only=False)
        return _inactive(user, switches, default) if user is not None else str(email)


def _inactive(user: User, switches: Any, default: str) -> str:
    """The owner a known user makes: theirs while active; when inactive, per switch
    inactive_owner: theirs (recorded), refused, or the keys' user's (api_user)."""
    if user.active:
        return user.email
    reading = getattr(switches, "inactive_owner", "recorded")
    if reading == "recorded":
        return user.email
    if reading == "refused":
        raise InactiveOwner(user.email)
    return default


class InactiveOwner(Exception):
    """An activity's owner is an inactive user and switch inactive_owner refuses it (the
    store answers MXInvalidInputException); str(e) is the email."""
