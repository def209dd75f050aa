"""One batch's way into LeadSquared, top to bottom: resolve → targets → post → attach.

Each step is a unit of its own (resolve.Resolver, targets.Planner, post.Poster,
attachments.Attacher); `Steps` holds one of each for a run of the sink.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bridge import WAITS_WITH_MESSAGES, Batch, Outcome, is_group
from plugins.leadsquared.attachments import Attacher
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.groups import deliver_group
from plugins.leadsquared.outcomes import for_all, outcome_of, owner_refused, per_message
from plugins.leadsquared.post import Poster
from plugins.leadsquared.resolve import Lead, Resolver
from plugins.leadsquared.targets import Plan, Planner
from plugins.leadsquared.transcript import Part


@dataclass
class Steps:
    """The four steps of a delivery, as one start of the sink set them up."""

    settings: LeadSquaredConfig
    people: Resolver
    targets: Planner
    poster: Poster
    attacher: Attacher


async def deliver_batch(steps: Steps, batch: Batch) -> list[Outcome]:
    """One outcome per message: delivered when every part holding it is posted."""
    if is_group(batch.conversation.key):
        return await deliver_group(steps.settings, batch, lambda sub: deliver_batch(steps, sub))
    lead = await steps.people.lead_for(batch)  # 1. resolve the person
    if isinstance(lead, Outcome):
        return for_all(batch, lead)
    outcomes = await _deliver_to(steps, batch, lead)
    if lead.cached and batch.record_id is None:
        # The cached lead was merged or deleted: look the number up again, now (the
        # second pass has no cached lead, so it cannot come back here).
        steps.targets.opportunities.forget(lead.id)
        return await deliver_batch(steps, batch)
    return outcomes


async def _deliver_to(steps: Steps, batch: Batch, lead: Lead) -> list[Outcome]:
    try:
        plan = await steps.targets.plan(batch, lead)  # 2. plan the targets
    except LeadSquaredError as exc:
        return for_all(batch, await steps.people.forget_if_gone(exc, batch, lead)
                       or outcome_of(exc))
    results = await steps.poster.on_lead(batch, plan)  # 3. post: the lead, then its deals
    await _owner_gone(steps, plan.parts, results)
    _remember_waiting_starts(batch, plan.parts, results)
    landed = [part for part in plan.parts if part.key not in results]
    waiting = await steps.poster.on_opportunities(batch, plan, landed)
    for part in landed:  # 4. attach the files to the activity that names them
        files = await steps.attacher.attach(batch, part, plan.existing)
        results[part.key] = _waits(waiting[part.key], files)
    for part in landed:  # landed parts wait for the opportunities not read
        results[part.key] = _unlisted(steps, batch, plan, part, results[part.key])
    return per_message(batch, plan.parts, results)


UNLISTED = "*"  # the opportunity part of the key of a landed part's wait for the list


def _unlisted(steps: Steps, batch: Batch, plan: Plan, part: Part, outcome: Outcome) -> Outcome:
    """A landed part's outcome once the lead's opportunities were listed, or not.

    Unlisted (plan.unread), its deal copies wait as a target of their own, as a copy whose
    post failed does: the part is on the lead, so the chat's later batches pass it (aside)
    and, past retry_for, the wait is given up as a dead target, never as a dead letter of
    a message the lead holds (requeued, that was batched again under a new key and posted
    on the lead twice). Listed, that wait is over (Batch.clear_target)."""
    key = f"{part.key}@{UNLISTED}"
    if plan.unread is None:
        _forget_unlisted(batch, plan, part)
        return outcome
    unread = outcome_of(plan.unread)
    why = f"opportunities of the lead could not be read: {unread.reason}"
    failure = batch.fail_target(key, "the lead's opportunities", why,
                                [m.id for m in part.messages], steps.settings.max_attempts,
                                transient=unread.transient)
    if outcome.kind != "delivered" or failure.dead:
        return outcome
    return Outcome.retry(why, transient=unread.transient, aside=True)


def _forget_unlisted(batch: Batch, plan: Plan, part: Part) -> None:
    """The lead's opportunities listed: a landed part's copies still failing on one it no
    longer lists (closed, deleted, its lead merged or deleted) wait no more, nor does its
    wait for the list. Kept, such a target stayed failing for good once the part's
    messages were delivered (nothing retried it, nothing gave it up), counted as failing
    by the status ever after. A dead one stays, for a person."""
    prefix, listed = f"{part.key}@", set(plan.opportunities)
    for key in [k for k in batch.targets if k.startswith(prefix)]:
        if key.removeprefix(prefix) not in listed:
            batch.clear_target(key)


def _waits(deals: list[Outcome], files: list[Outcome]) -> Outcome:
    """A landed part's outcome: delivered, or a retry while its opportunities' copies
    (`deals`) or files wait. On the lead already, it lets the chat's later batches pass
    (aside: one target's outage, a deal's or the files host's, never holds a chat back);
    transient when each wait is an outage's."""
    waits = deals + files
    if not waits:
        return Outcome.delivered()
    return Outcome.retry("; ".join(o.reason for o in waits),
                         transient=all(o.transient for o in waits), aside=True)


LEAD = "lead"  # the label of a part whose post on the lead waits (a target of its own)


async def _owner_gone(steps: Steps, parts: list, results: dict[str, Outcome]) -> None:
    """A post refused while its owner (a rep) may have been deactivated since the users
    were last read: how LeadSquared answers an inactive ActivityOwnerEmail is not
    documented (simulator switch inactive_owner), so a refusal of an owned post reads the
    users again, and when its owner can own nothing now it is no refusal of the chat: it
    is retried, and the retry posts it under owner_fallback (targets.pinned_reps). When
    the users cannot be read again, nothing tells whose fault the refusal is: it waits."""
    owners = steps.targets.owners
    refused = {part.rep.email for part in parts if part.rep is not None and part.rep.email
               and getattr(results.get(part.key), "kind", None) == "rejected"}
    if owners is None or not owners.enabled or not refused:
        return
    unread = await owners.refresh() is False
    for part in parts:
        email = part.rep.email if part.rep is not None else None
        outcome = results.get(part.key)  # none: the part landed (it keeps its owner)
        if outcome is not None and outcome.kind == "rejected" and email in refused \
                and (unread or not owners.can_own(email)):
            results[part.key] = owner_refused(email, outcome, unread)


def _remember_waiting_starts(batch: Batch, parts: list, results: dict[str, Outcome]) -> None:
    """A part whose post on the lead waits (failed, or not attempted after a failure) is
    recorded as a failing target under its own key, so the retry re-splits at its start
    (targets.earlier_parts): with a middle note delivered meanwhile, its messages would
    otherwise join the part before, whose key is in the ledger, and never be posted. It
    never dies as a target: its messages' own retry and dead letter cover it, so its reason
    says so (bridge.WAITS_WITH_MESSAGES: the status page does not count it as failing)."""
    for part in parts:
        outcome = results.get(part.key)
        if outcome is not None and outcome.kind == "retry":
            batch.fail_target(part.key, LEAD, f"{WAITS_WITH_MESSAGES}: {outcome.reason}",
                              [m.id for m in part.messages], sys.maxsize)
