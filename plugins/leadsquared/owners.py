"""Reps: which LeadSquared user owns the activities of each business number (issue 26).

`plugins.leadsquared.owners` maps a business number (its phone_number_id, or its E.164
display number) to a user's email; `owners: auto` matches the numbers to the phone numbers
the account holds for its users (User/Retrieve/ByUserId's AssociatedPhoneNumbers,
PhoneMobile, PhoneMain, PhoneOthers [DOC:get-user-by-id]; Users.Get has none
[DOC:get-users]). A number no user is mapped to follows `owner_fallback`: the lead's owner
(its OwnerId's user), or the API user (no owner sent, as before owners existed). Without
`owners` nothing changes: no owner is sent.

An owner goes to LeadSquared as `ActivityOwnerEmail`, the way the bulk calls document
[DOC:post-bulk-activities-on-leads] (mandatory on ByOpportunityId); the single Create
documents no owner (post.py sends owned activities through the bulk calls).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from bridge import Message, joined
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.leads import LeadOwner
from plugins.leadsquared.phones import national_variants, stored_e164, variant_numbers

logger = logging.getLogger(__name__)

Line = tuple[bool, str]  # (fine, what was found)
# A custom activity field's length: MaxFieldLength 200 seen (reference §2, GetActivityDetails).
# What it counts is UNSURE (no source: UTF-16 code units for .NET, code points for a MySQL
# utf8mb4 column, bytes for a byte-limited one; simulator switch field_length): a value is
# kept within 200 UTF-8 bytes, the strictest, which is within 200 of each of the others.
FIELD_LENGTH = 200
ELLIPSIS = "…"
PHONE_FIELDS = ("AssociatedPhoneNumbers", "PhoneMobile", "PhoneMain", "PhoneOthers")
REREAD = 600.0  # seconds: how often the account's users are read again while running
NATIONAL = "nsn:"  # a user's number kept without its country code (as directory.number_keys)


@dataclass(frozen=True)
class Rep:
    """Who a business number's activities belong to.

    email: ActivityOwnerEmail (None: nothing sent, the API user owns them); name: the
    user's name, None when the number maps to no user; number: the business number (E.164,
    else its phone_number_id), None when the messages do not say.
    """

    email: str | None
    name: str | None
    number: str | None

    def label(self, business_name: str) -> str:
        """How outbound lines and the activity name the sender: "Priya Rao (+9198…)"."""
        who = self.name or business_name
        return f"{who} ({self.number})" if self.number else who

    def field_label(self, business_name: str, limit: int = FIELD_LENGTH) -> str:
        """label() within a custom field's length, `limit` UTF-8 bytes (FIELD_LENGTH: the
        strictest count): the name shortened ("…") between two visible characters (never
        inside a surrogate pair, an emoji sequence, a letter and its marks or an Indic
        conjunct), the number kept whole."""
        whole = self.label(business_name)
        if utf8_length(whole) <= limit:
            return whole
        tail = f" ({self.number})" if self.number else ""
        room = limit - utf8_length(tail) - utf8_length(ELLIPSIS)
        label = f"{fit(self.name or business_name, max(room, 0)).rstrip()}{ELLIPSIS}{tail}"
        return label if utf8_length(label) <= limit else fit(label, limit)


def utf8_length(text: str) -> int:
    """Length in UTF-8 bytes (a lone surrogate counted as the 3 bytes it would take)."""
    return len(text.encode("utf-8", "surrogatepass"))


def fit(text: str, limit: int) -> str:
    """The longest start of `text` within `limit` UTF-8 bytes that ends between two
    visible characters (bridge.joined: the render module's grapheme joining)."""
    end = used = 0
    while end < len(text) and used + utf8_length(text[end]) <= limit:
        used += utf8_length(text[end])
        end += 1
    while 0 < end < len(text) and joined(text, end):
        end -= 1
    return text[:end]


def business_of(message: Message) -> tuple[str | None, str | None]:
    """(E.164 display number, phone_number_id) a message was sent to or from."""
    number = message.extra.get("business_number") if isinstance(message.extra, dict) else None
    return (number if isinstance(number, str) and number else None), (message.account or None)


def user_name(user: dict[str, Any]) -> str | None:
    name = " ".join(str(user.get(k) or "").strip() for k in ("FirstName", "LastName")).strip()
    return name or None


def user_phones(user: dict[str, Any]) -> list[str]:
    """E.164 forms of the phone numbers a user record holds ("+91-98…", comma lists); one
    kept without its country code ("98000 00001", "098…") as `nsn:<national digits>`,
    matched after every E.164 form (`Owners.mapped`)."""
    found: list[str] = []
    for field in PHONE_FIELDS:
        value = user.get(field)
        for text in str(value).replace(";", ",").split(",") if value else ():
            text = text.strip()
            if text.startswith("00"):
                text = "+" + text[2:]
            key = stored_e164(text, international=text.startswith("+")) or national(text)
            if key and key not in found:
                found.append(key)
    return found


def national(text: str) -> str | None:
    """`nsn:<digits>` for a number written without its country code, less a trunk 0."""
    digits = "".join(c for c in text if c.isdigit()).lstrip("0")
    return NATIONAL + digits if not text.startswith("+") and len(digits) >= 6 else None


def shown_phone(key: str) -> str:
    return f"{key.removeprefix(NATIONAL)} (no country code)" if key.startswith(NATIONAL) \
        else key


def _untyped_2xx(exc: LeadSquaredError) -> bool:
    """An error envelope without ExceptionType on a success status (undocumented)."""
    return exc.exception_type is None and exc.status is not None and 200 <= exc.status < 300


def passing(exc: LeadSquaredError) -> bool:
    """A failed read of the users that a later read may not meet: anything but a refusal
    (an MX error, a refused key), and an untyped "Status: Error" on HTTP 2xx, which is no
    documented refusal (reference §3)."""
    return exc.kind not in ("rejected", "auth") or _untyped_2xx(exc)


class Owners:
    """Resolves each message's rep; one per sink run (start() reads the account's users)."""

    def __init__(self, client: LeadSquaredClient, settings: LeadSquaredConfig) -> None:
        self.client = client
        self.settings = settings
        self.mapping: dict[str, str] = {}  # business number or phone_number_id -> email
        self.names: dict[str, str | None] = {}  # email (casefolded) -> user name
        self.emails: dict[str, str] = {}  # user id -> email (lead owners)
        self.inactive: set[str] = set()  # user ids of inactive users (never an owner)
        # configured numbers left out: number -> "<email> is inactive" (status says so)
        self.refused: dict[str, str] = {}
        self._lead_owner: dict[str, tuple[float, str | None]] = {}
        self._said: set[str] = set()
        # owners: auto, and a read of the users failed for a passing reason (a gateway
        # page, a rate limit): the map is incomplete, so the sink does not start on it
        self.unread: LeadSquaredError | None = None
        self.users_read = False  # the account's users were listed (else emails unchecked)
        self.users_error: LeadSquaredError | None = None  # why they could not be listed
        self.notes: list[str] = []  # what the last read could not map, in words
        self.read_at: float | None = None  # monotonic: when the users were last read
        # why a new lead could not be given to its rep (OwnerId refused, the rep's user id
        # unknown): kept across reads of the users, shown on the status page's owners line
        self.lead_note: str | None = None
        self._lead_checked = False  # a new lead was read back for its owner this run
        self._reading = asyncio.Lock()
        # the last read of the users begun (refresh_if_due, refresh), and when it began
        self._task: asyncio.Task[bool | None] | None = None
        self._task_began = 0.0

    @property
    def enabled(self) -> bool:
        return self.settings.owners is not None

    async def start(self) -> list[Line]:
        """Read the users; build the map (auto: from their phone numbers). What it found,
        as (ok, text) lines: what it matched, and what it could not (for `bridge
        leadsquared check`, and the log)."""
        lines = await self.read()
        for ok, line in lines:
            logger.log(logging.INFO if ok else logging.WARNING, "owners: %s", line)
        return lines

    async def read(self) -> list[Line]:
        """Read the users and build the map (start() without the log)."""
        if not self.enabled:
            return []
        lines: list[Line] = []
        users = await self._users(lines)
        if self.settings.owners == "auto":
            lines += await self._auto(users)
        else:
            lines += self._configured(users)
        self.read_at = time.monotonic()
        self.notes = [line for ok, line in lines if not ok]
        return lines

    async def refresh_if_due(self) -> None:
        """Read the users again in the background every REREAD seconds (never inside a
        delivery: owners: auto reads each user, which may take longer than one)."""
        if not self.enabled or self.read_at is None \
                or time.monotonic() - self.read_at < REREAD \
                or (self._task is not None and not self._task.done()):
            return
        self.read_at = time.monotonic()  # a failing read is not tried again at once
        self._read_now()

    def _read_now(self) -> asyncio.Task[bool | None]:
        """Begin a read of the users in a task of its own (_reread)."""
        self._task_began = time.monotonic()
        self._task = asyncio.create_task(self._reread(), name="leadsquared-owners")
        return self._task

    async def refresh(self) -> bool | None:
        """_reread, begun after this call (a read under way that began before it is waited
        for, then another made: it may have listed the users before a rep's deactivation
        that a refused post just met), shared by the callers, and in a task of its own: a
        delivery that waits for it (_owner_gone, after a refusal) and is cut off by
        deliver_timeout leaves it running. Awaited inline, a read of owners: auto (one call
        a user, in the rate budget) longer than a delivery was cut off with it, begun anew
        by every retry, and never ended: a deactivated rep's chat never landed."""
        if not self.enabled:
            return True
        asked = time.monotonic()
        while True:
            task = self._task
            if task is not None and not task.done() and self._task_began < asked:
                with suppress(Exception):
                    await asyncio.shield(task)
                continue
            if task is None or self._task_began < asked:
                task = self._read_now()
            return await asyncio.shield(task)

    async def _reread(self) -> bool | None:
        """Read the users again and take the new map (also when a person asks for a sync):
        a rep deactivated, their email changed or a number moved to another rep while the
        bridge runs owns the next chats as the account now says (a number whose user is
        gone follows owner_fallback; the log and the status say why). A read that fails
        keeps the map as it was: False when it failed for a passing reason (an outage, an
        answer it could not read), None when LeadSquared refused it (a key whose user may
        not list the users: no later read will tell more)."""
        if not self.enabled:
            return True
        async with self._reading:
            self.read_at = time.monotonic()
            fresh = Owners(self.client, self.settings)
            try:
                lines = await fresh.read()
            except Exception as exc:  # the old map stays; never a reason to hold a chat
                logger.warning("owners: reading the account's users again failed (%s): the "
                               "map read before stays", exc)
                return False
            if fresh.unread is not None or not fresh.users_read:
                logger.warning("owners: the account's users could not be read again: the "
                               "map read before stays")
                refused = fresh.users_error is not None and not passing(fresh.users_error)
                return None if refused and fresh.unread is None else False
            self._adopt(fresh, lines)
            return True

    async def close(self) -> None:
        """Stop a background read."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def _adopt(self, fresh: Owners, lines: list[Line]) -> None:
        """Take a new read's map, logging each number whose owner changed and why."""
        why = {line.split(" ", 1)[0]: line for ok, line in lines if not ok}
        for number in sorted(set(self.mapping) | set(fresh.mapping)):
            was, now = self.mapping.get(number), fresh.mapping.get(number)
            if was != now:
                logger.warning("owners: %s now %s (was %s)%s", shown_phone(number),
                               f"owned by {now}" if now else "follows owner_fallback "
                               f"{self.settings.owner_fallback}", was or "unmapped",
                               f": {why[number]}" if number in why else "")
        self.mapping, self.names, self.emails = fresh.mapping, fresh.names, fresh.emails
        self.inactive, self.notes, self.refused = fresh.inactive, fresh.notes, fresh.refused
        # the users are read now (a start that could not list them used the emails
        # unchecked): can_own() goes by this read from here on
        self.users_read, self.unread = fresh.users_read, fresh.unread
        self._lead_owner.clear()  # owners of leads may be inactive now too

    async def _users(self, lines: list[Line]) -> list[dict]:
        try:
            users = await self.client.users.all()
        except LeadSquaredError as exc:
            self.users_error = exc
            self._passing(exc)
            lines.append((False, f"could not list the account's users ({exc.message}): "
                                 + ("no number is mapped (owners: auto)"
                                    if self.settings.owners == "auto"
                                    else "mapped emails are used unchecked")))
            return []
        self.users_read = True
        for user in users:
            email = user.get("EmailAddress")
            if isinstance(email, str) and "@" in email:
                self.names[email.casefold()] = user_name(user)
                if user.get("ID"):
                    self.emails[str(user["ID"])] = email
            if user.get("ID") and str(user.get("StatusCode", 0)) not in ("0", ""):
                self.inactive.add(str(user["ID"]))
        return users

    def _configured(self, users: list[dict]) -> list[Line]:
        """The configured map, less users that are missing or inactive (they would be
        refused on every post): those numbers follow owner_fallback, said once here."""
        assert isinstance(self.settings.owners, dict)
        active = {str(u.get("EmailAddress") or "").casefold(): u for u in users
                  if str(u.get("StatusCode", 0)) in ("0", "")}
        known = {str(u.get("EmailAddress") or "").casefold() for u in users}
        lines = []
        for number, email in self.settings.owners.items():
            if users and email.casefold() not in active:
                why = "is inactive" if email.casefold() in known else "is no user of this account"
                self.refused[number] = f"{email} {why}"
                lines.append((False, f"{number} -> {email} {why}: its chats follow "
                                     f"owner_fallback {self.settings.owner_fallback}"))
                continue
            # the account's spelling of the email: how LeadSquared compares an
            # ActivityOwnerEmail (case) is not documented
            email = str(active[email.casefold()]["EmailAddress"]) if users else email
            self.mapping[number] = email
            lines.append((True, f"{number} -> {self._name(email) or email} <{email}>"))
        return lines

    async def _auto(self, users: list[dict]) -> list[Line]:
        """Each active user's phone numbers (one ByUserId read a user) as business numbers.
        A number two users hold (in any of its forms) goes to the first by email, whatever
        order the account lists them in, and is reported as a failure to mend."""
        lines: list[Line] = []
        without: list[str] = []
        for user in sorted(users, key=lambda u: str(u.get("EmailAddress") or "").casefold()):
            if str(user.get("StatusCode", 0)) not in ("0", "") or not user.get("ID"):
                continue
            try:
                record = await self.client.users.by_id(str(user["ID"]))
            except LeadSquaredError as exc:
                self._passing(exc)
                lines.append((False, f"could not read user {user.get('EmailAddress')}'s phone "
                                     f"numbers ({exc.message})"))
                continue
            email = str((record or user).get("EmailAddress") or "")
            phones = user_phones(record or {})
            if not phones:
                without.append(email or str(user["ID"]))
            for phone in phones:
                holder = self.mapping.get(phone) if phone.startswith(NATIONAL) \
                    else self.mapped(phone, None)
                if holder and holder.casefold() != email.casefold():
                    lines.append((False, f"{shown_phone(phone)} is held by both {holder} and "
                                         f"{email}: {holder} owns it (remove it from one user)"))
                    continue
                self.mapping.setdefault(phone, email)
                lines.append((True, f"{shown_phone(phone)} -> {self._name(email) or email} "
                                    f"<{email}> (the user's phone number)"))
        if without:
            lines.append((True, f"no phone number held for {len(without)} user(s) "
                                f"({', '.join(without[:10])}"
                                f"{' …' if len(without) > 10 else ''}): they own no number"))
        if not self.mapping:
            lines.append((False, "no user's phone number in the account: every number "
                                 f"follows owner_fallback {self.settings.owner_fallback}"))
        return lines

    def _passing(self, exc: LeadSquaredError) -> None:
        """Remember a failed read of the users that a later start may not meet (owners:
        auto): without it a rep's numbers would follow owner_fallback for the whole run,
        their chats filed under the lead owner or the API user. A refusal is final (a key
        whose user may not list users: the sink starts, saying so), except an untyped
        "Status: Error" on HTTP 2xx: LeadSquared refuses with 4xx/5xx and an MX type
        (reference §3), so that answer is unreadable, not a refusal."""
        if self.settings.owners == "auto" and passing(exc):
            self.unread = self.unread or exc

    def _name(self, email: str) -> str | None:
        return self.names.get(email.casefold())

    def mapped(self, number: str | None, account: str | None) -> str | None:
        """The email the number (any of its variants) or phone_number_id maps to; last, a
        user's number kept without its country code (owners: auto)."""
        variants = variant_numbers(number) if number else []
        nationals = [NATIONAL + n for n in national_variants(number)] if number else []
        # a display number given without '+' (YAML reads +91... unquoted as an integer)
        for key in [*variants, number, *(v[1:] for v in variants), account, *nationals]:
            if key and key in self.mapping:
                return self.mapping[key]
        return None

    async def reps(self, messages: Iterable[Message], lead: str) -> dict[Any, Rep]:
        """Each message's rep, by message id."""
        await self.refresh_if_due()
        found: dict[tuple, Rep] = {}
        out: dict[Any, Rep] = {}
        for message in messages:
            number, account = business_of(message)
            if (number, account) not in found:
                found[(number, account)] = await self.rep(number, account, lead)
            out[message.id] = found[(number, account)]
        return out

    async def rep(self, number: str | None, account: str | None, lead: str) -> Rep:
        shown = number or account
        if not self.enabled:
            return Rep(None, None, shown)
        if email := self.mapped(number, account):
            return Rep(email, self._name(email) or email, shown)
        if shown and shown not in self._said:
            self._said.add(shown)
            logger.info("business number %s maps to no user: its activities follow "
                        "owner_fallback %s", shown, self.settings.owner_fallback)
        if self.settings.owner_fallback == "api_user":
            return Rep(None, None, shown)
        return Rep(await self.lead_owner(lead), None, shown)

    async def gone(self, email: str) -> bool | None:
        """Whether `email` can own nothing now, the users read again first (a post it owned
        was refused: it may have been deactivated since the last read); None when the users
        cannot be read again (the map read before cannot tell)."""
        if await self.refresh() is False:
            return None
        return not self.can_own(email)

    def can_own(self, email: str | None) -> bool:
        """Whether `email` may own activities now: None (the API user) always; a user
        only while active, as far as the last read of the users shows (unread: yes)."""
        if email is None or not self.users_read:
            return True
        user_id = self._user_id(email)
        return user_id is not None and user_id not in self.inactive

    def _user_id(self, email: str) -> str | None:
        """The user id of `email` in the last read of the users (emails compare in any case)."""
        return next((uid for uid, known in self.emails.items()
                     if known.casefold() == email.casefold()), None)

    def new_lead_owner(self, messages: Iterable[Message]) -> LeadOwner | None:
        """Who a lead created for these messages goes to: the rep of the business number
        the chat's first message was with (the rep who owns its activities). None (the
        lead owned as LeadSquared decides, as before owners existed) for a number mapped to
        nobody, whatever owner_fallback says: the lead owner fallback has no lead yet, and
        api_user is LeadSquared's own default."""
        first = next(iter(messages), None)
        if not self.enabled or first is None:
            return None
        email = self.mapped(*business_of(first))
        if email is None:
            return None
        user_id = self._user_id(email)
        if user_id is None:  # the users could not be listed: no id to send as OwnerId
            why = (f"{email}'s user id is unknown (the account's users could not be "
                   "listed): new leads are owned as LeadSquared decides")
            if why != self.lead_note:
                logger.warning("owners: %s", why)
            self.lead_note = why
            return None
        return LeadOwner(user_id, email, self._told, check=not self._lead_checked)

    def _told(self, why: str | None) -> None:
        """How the last new lead took its owner (None: it did) for the status line; the
        first owned lead of a run is read back once (an account ignoring OwnerId)."""
        self._lead_checked = True
        self.lead_note = why

    async def lead_owner(self, lead: str) -> str | None:
        """The email of the lead's owner (OwnerId), reused for opportunity_cache seconds;
        None when the lead has none or its user is unknown or inactive (the API user owns
        it then, as for a mapped user who is inactive)."""
        cached = self._lead_owner.get(lead)
        if cached and time.monotonic() - cached[0] < self.settings.opportunity_cache:
            return cached[1]
        record = await self.client.leads.get(lead) or {}
        owner = record.get("OwnerId") or record.get("OwnerID")
        if owner and str(owner) in self.inactive:
            owner = None
        email = self.emails.get(str(owner)) if owner else None
        if owner and email is None:
            user = await self.client.users.by_id(str(owner))
            email = (user or {}).get("EmailAddress") or None
            if email:
                self.emails[str(owner)] = email
        self._lead_owner[lead] = (time.monotonic(), email)
        return email
