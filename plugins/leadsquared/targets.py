"""Step 2 of a delivery: plan the targets, before anything is posted.

A delivery's targets (DESIGN.md "Reality first") are the lead's activity for each part
(one note each), the same on each open opportunity, and each attachment. The plan says
which parts there are, which opportunities get them, and which keys are already in the
CRM: the batch's ledger, plus, when an earlier try may have posted (a retry, or a lease
that ran out), what the lead and each opportunity hold now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from bridge import SINK_NOTE, Batch, Outcome
from plugins.leadsquared.attachments import follow_ups, held_line
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.groups import contact_label
from plugins.leadsquared.keys import KeyCheck, add_found
from plugins.leadsquared.opportunities import Opportunities
from plugins.leadsquared.outcomes import outcome_of
from plugins.leadsquared.owners import Owners, Rep
from plugins.leadsquared.resolve import Lead
from plugins.leadsquared.transcript import (
    Part,
    label_lengths,
    lead_lengths,
    part_tail,
    split,
    transcript_lines,
)

logger = logging.getLogger(__name__)
# The batch's ledger entry holding the reps its first try on a lead chose, by business
# number: `<batch key>=owners@<lead id>` (before: `<batch key>=owners`) -> {"<number>":
# [email, name]}. Not a part key (those go on with
# ":"), so no note, opportunity or file takes it for a post (earlier_parts, own_sizes).
OWNERS_PIN = f"{SINK_NOTE}owners"
# Keeps a ledger entry in the buffer now, in a commit of its own (the sink's record_landed)
Keep = Callable[[str, str], Awaitable[None]]


@dataclass
class Plan:
    """What one delivery posts.

    parts: the notes (a part whose message cannot be rendered has `failed` set); follow-up
    parts (texts posted earlier, back for their files) carry their old key and no lines.
    opportunities: the ones that get each part too. existing: keys already in the CRM ->
    activity ids (grows as posts land). unchecked: opportunity -> why its keys could not be
    read on a retry (it waits). unread: why the lead's opportunities could not be read
    (the lead's activity goes anyway; its parts wait for them).
    """

    lead: Lead
    parts: list[Part]
    opportunities: list[str]
    existing: dict[str, str]
    unchecked: dict[str, Outcome] = field(default_factory=dict)
    unread: LeadSquaredError | None = None


class Planner:
    """Builds a batch's plan."""

    def __init__(self, settings: LeadSquaredConfig, keys: KeyCheck,
                 opportunities: Opportunities, tz: tzinfo, allow_attachments: bool,
                 owners: Owners | None = None, keep: Keep | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.opportunities = opportunities
        self.tz = tz
        self.allow_attachments = allow_attachments
        self.owners = owners
        self.keep = keep

    async def plan(self, batch: Batch, lead: Lead) -> Plan:
        """The plan; raises when the lead's own keys cannot be read on a retry (nothing may
        be posted then: it could be there already), or when the reps its first try chose
        cannot be kept (nothing is posted then either)."""
        reps = await self.owners.reps(batch.messages, lead.id) if self.owners else {}
        if self.owners is not None and self.owners.enabled:
            reps = await self._pinned(batch, reps, self.owners.can_own, lead.id)
        retry = batch.uncertain or batch.attempt > 1  # an earlier try may have posted
        found, sizes, bodies = await self.keys.parts_on_lead(lead.id) if retry else ({}, {}, {})
        existing = dict(batch.ledger)
        add_found(existing, found)
        plan = Plan(lead, self.parts(batch, reps, own_sizes(batch, sizes), bodies), [],
                    existing)
        try:
            plan.opportunities = await self.opportunities.of_lead(lead.id)
        except LeadSquaredError as exc:
            plan.unread = exc  # never "no opportunities", never a reason to hold the lead back
        if retry:
            for opportunity in plan.opportunities:
                await self._check(plan, opportunity)
        return plan

    async def _pinned(self, batch: Batch, reps: dict[Any, Rep],
                      can_own: Callable[[str | None], bool], lead: str) -> dict[Any, Rep]:
        """pinned_reps; a pin chosen now is in the buffer before anything is posted. Kept
        only with the outcomes, a kill after the first post (the lead's activity landed,
        owned by this rep) lost it, and the retry, finding that activity by its key, gave
        the rest of the chat (the deal's copy, later parts, files) today's rep."""
        key = pin_key(batch, lead)
        before = key in batch.ledger
        kept = pinned_reps(batch, reps, can_own, lead)
        if not before and key in batch.ledger and self.keep is not None:
            await self.keep(key, batch.ledger[key])
        return kept

    def parts(self, batch: Batch, reps: dict[Any, Rep] | None = None,
              landed: dict[str, int] | None = None,
              bodies: dict[str, str] | None = None) -> list[Part]:
        """The batch's notes, each with the rep of its last message (`reps` by message id);
        texts already posted whose files come now keep their key; a message whose upgrade
        is in the batch is written once, as that upgrade. `landed`: its notes an earlier
        try posted that the lead holds (found by key, not in the ledger: a crash before the
        outcomes were kept) -> their message counts: each is written again as it landed,
        however long its lines are now (another rep's name, a contact's new name).
        `bodies`: the text those notes hold after their headers, by key (KeyCheck).

        A file's message is sent alone (a follow-up) only when its window cannot be rendered
        again as it was posted: a message still waiting with its window (retried for
        another target, or after a crash mid-attach) is rendered with it, under the same
        key, since the window without it would be a new key, so a second activity."""
        reps = reps or {}
        follow, replaced = follow_ups(batch), upgraded(batch)
        shown = [m for m in batch.messages if m.id not in replaced]
        parts: list[Part] = []
        if follow:
            whole = self._render(batch, shown, reps, landed, bodies)
            again = {m.id for part in whole for m in part.messages
                     if follow.get(m.id) == part.key}
            follow = {i: key for i, key in follow.items() if i not in again}
            if not follow:
                parts = whole
        if not parts:
            parts = self._render(batch, [m for m in shown if m.id not in follow], reps,
                                 landed, bodies)
            parts += [Part(key, [], [m]) for m in batch.messages if (key := follow.get(m.id))]
        for part in parts:
            part.rep = reps.get(part.messages[-1].id) if part.messages else None
        return parts

    async def _check(self, plan: Plan, opportunity: str) -> None:
        try:  # each opportunity's own check: a failed one waits alone
            add_found(plan.existing, await self.keys.on_opportunity(opportunity))
        except LeadSquaredError as exc:
            failed = outcome_of(exc)
            plan.unchecked[opportunity] = Outcome.retry(
                f"could not check it for earlier posts: {failed.reason}",
                transient=failed.transient)

    def _render(self, batch: Batch, messages: list, reps: dict[Any, Rep],
                landed: dict[str, int] | None = None,
                bodies: dict[str, str] | None = None) -> list[Part]:
        if not messages:
            return []
        contact = contact_label(batch.conversation)
        business = self.settings.business_name
        senders = {key: rep.label(business) for key, rep in reps.items()}
        lines = transcript_lines(messages, self.tz, contact, business, senders)
        if not self.allow_attachments:
            lines = [held_line(line, m) for m, line in zip(messages, lines, strict=True)]
        landed = landed or {}
        # a note of one message may be one piece of a long line: it only ends at that
        # message; one of several holds whole lines, never cut again
        whole = {key for key, count in landed.items() if count > 1}
        labels = label_lengths(messages, self.tz, contact, business, senders)
        return split(batch.key, messages, lines, self.settings.note_limit,
                     earlier_parts(batch) | set(landed), earlier_parts(batch, landed=True) | whole,
                     single=self.settings.granularity == "message", sizes=landed,
                     labels=labels, leads=lead_lengths(messages, lines, labels),
                     bodies=bodies)


def pin_key(batch: Batch, lead: str | None) -> str:
    """The ledger key of the batch's pin on `lead`: `<batch key>=owners@<lead id>`. A pin
    is the lead's: a number mapped to nobody takes the lead's owner (owner_fallback
    lead_owner), so a chat whose cached lead was merged away, posted on the lead that
    holds the number now, would otherwise keep the old lead's owner. A pin kept before
    pins named their lead (`<batch key>=owners`) is read when the batch has no other."""
    return batch.key + OWNERS_PIN + (f"@{lead}" if lead else "")


def _pin_of(batch: Batch, lead: str | None) -> tuple[str, str | None]:
    """(the key a pin is kept under now, the pin the batch holds for `lead`)."""
    key, legacy = pin_key(batch, lead), batch.key + OWNERS_PIN
    if key in batch.ledger or lead is None:
        return key, batch.ledger.get(key)
    if any(k.startswith(legacy + "@") for k in batch.ledger):
        return key, None  # pinned on another lead only: chosen anew for this one
    return key, batch.ledger.get(legacy)


def pinned_reps(batch: Batch, reps: dict[Any, Rep],
                can_own: Callable[[str | None], bool] = lambda email: True,
                lead: str | None = None) -> dict[Any, Rep]:
    """One chat's pieces share one owner across its tries: the reps its first try chose
    (kept in its ledger: Planner._pinned commits them before the first post) own every
    later try's posts too, so an activity on the lead's deal never gets another rep than
    the one on the lead when the owners map changed in between (the users are read again
    every 10 minutes and at sync-now). A number the first try did not see takes today's rep; so
    does one whose first rep can own nothing now (`can_own`: deactivated or gone since,
    whom LeadSquared may refuse as an owner), said in the log."""
    key, pin = _pin_of(batch, lead)
    pinned = _read_pin(pin)
    if pinned is None:
        chosen = {rep.number or "": [rep.email, rep.name] for rep in reps.values()}
        if chosen:
            batch.remember(key, json.dumps(chosen, sort_keys=True))
        return reps
    kept = {}
    for message_id, rep in reps.items():
        first = pinned.get(rep.number or "")
        if first and first[0] != rep.email and not can_own(first[0]):
            logger.warning("chat %s: its first owner %s can own nothing now (inactive or "
                           "gone): the rest of it goes to %s", batch.key, first[0],
                           rep.email or "the API user")
            first = None
        kept[message_id] = Rep(first[0], first[1], rep.number) if first else rep
    return kept


def _read_pin(value: str | None) -> dict[str, list] | None:
    try:
        pinned = json.loads(value) if value else None
    except ValueError:
        return None
    return {k: v for k, v in pinned.items() if isinstance(v, list) and len(v) == 2} \
        if isinstance(pinned, dict) else None


def earlier_parts(batch: Batch, landed: bool = False) -> set[str]:
    """Part keys an earlier try of the batch posted or failed to post (its ledger and its
    targets, less their `@opportunity` and `#file` suffixes); with `landed`, only those
    posted somewhere (the ledger)."""
    prefix = f"{batch.key}:"
    keys = [k for k in (*batch.ledger, *(() if landed else batch.targets))
            if k.startswith(prefix)]
    return {*keys, *(k.rpartition("#file")[0] for k in keys if "#file" in k),
            *(k.rpartition("@")[0] for k in keys if "@" in k)}


def own_sizes(batch: Batch, sizes: dict[str, int]) -> dict[str, int]:
    """The batch's own lead notes among keys found on the lead -> their message counts
    (not its opportunity posts, `@…`, nor other batches' notes)."""
    prefix = f"{batch.key}:"
    return {key: count for key, count in sizes.items()
            if key.startswith(prefix) and part_tail(key.rpartition(":")[2])}


def upgraded(batch: Batch) -> set[int]:
    """Ids of the batch's messages that another of its messages completes (it names them in
    extra["upgrades"]: a history media follow-up and its placeholder, bridge.UPGRADE_SUFFIX).
    The buffer settles such a placeholder before any batch takes it; a held batch (no lead
    yet) takes in the follow-up later and so holds both. Left out of the notes, it counts
    as delivered with its batch."""
    named = {(m.source, m.extra.get("upgrades")) for m in batch.messages
             if isinstance(m.extra, dict) and isinstance(m.extra.get("upgrades"), str)}
    return {m.id for m in batch.messages if (m.source, m.provider_id) in named} if named \
        else set()
