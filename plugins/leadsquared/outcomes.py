"""From LeadSquared errors and per-part results to the core's per-message outcomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from bridge import Batch, Outcome
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.transcript import Part

SEVERITY = {"delivered": 0, "retry": 1, "rejected": 2}
WRITE_SETTLE = 3  # times the timeout after its send, a write with no answer has settled
# LeadSquared down, slow, rate-limiting or behind a failing gateway (5xx, timeouts, 429,
# HTML error pages, connection errors; a write whose answer was lost is one of these too):
# nothing is wrong with the message, so it retries for the sink's retry_for, not a count.
OUTAGE = frozenset({"transient", "rate_limited", "unknown_outcome"})
REFUSED_NEXT = "fix what LeadSquared names (in the lead, the activity type or the config), " \
               "then requeue"


def outcome_of(exc: LeadSquaredError) -> Outcome:
    """What a failed call means for what it carried: refused, or try again later."""
    if exc.kind == "rejected":
        return Outcome.rejected(f"LeadSquared {exc.exception_type or 'error'}: {exc.message}"
                                f" ({REFUSED_NEXT})")
    if exc.kind == "auth":
        return Outcome.retry("LeadSquared refused the access key (401): check access_key, "
                             "secret_key and that the key's user is active")
    return Outcome.retry(f"LeadSquared {exc.kind.replace('_', ' ')}: {exc.message}",
                         transient=exc.kind in OUTAGE)


def for_all(batch: Batch, outcome: Outcome) -> list[Outcome]:
    return [outcome] * len(batch.messages)


def per_message(batch: Batch, parts: list[Part], results: dict[str, Outcome]) -> list[Outcome]:
    """A message's outcome is the worst of the parts that hold it (a long message's pieces
    are parts of their own): two retries make one that is aside (on the lead, only other
    targets wait) or transient only when both are."""
    worst: dict[int, Outcome] = {}
    for part in parts:
        outcome = results.get(part.key, Outcome.retry("not attempted"))
        for message in part.messages:
            current = worst.get(id(message))
            if current is None or SEVERITY[outcome.kind] > SEVERITY[current.kind]:
                worst[id(message)] = outcome
            elif current.kind == outcome.kind == "retry":
                worst[id(message)] = replace(current, transient=current.transient
                                             and outcome.transient,
                                             aside=current.aside and outcome.aside)
    return [worst.get(id(m), Outcome.delivered()) for m in batch.messages]


def late_write_retry(exc: LeadSquaredError, sent: float, timeout: float) -> Outcome | None:
    """A write that timed out may still be on its way and commit late: its retry (which
    looks for the key before posting again) waits until it must have landed or died.

    A request cannot commit much after the client gave up unless something holds it
    (a proxy, a congested link); we allow twice the timeout more (so 90 s after the
    send at the default 30 s timeout; a 70 s hold was seen to post twice).
    """
    if exc.kind != "unknown_outcome" or not exc.in_flight:
        return None
    settled = sent + WRITE_SETTLE * timeout
    return Outcome.retry(f"{outcome_of(exc).reason} (looked for again before a re-post)",
                         not_before=datetime.fromtimestamp(settled, UTC), transient=True)


def owner_refused(email: str, outcome: Outcome, unread: bool) -> Outcome:
    """The retry of a post refused while its owner `email` is no active user now, or may
    not be (`unread`: the users could not be read again to tell)."""
    if not unread:
        return Outcome.retry(f"LeadSquared refused the post owned by {email}, who is no "
                             f"active user now: it is posted again under owner_fallback "
                             f"({outcome.reason})", transient=True)
    return Outcome.retry(f"LeadSquared refused the post owned by {email}, and the account's "
                         f"users could not be read to tell whether {email} is still active: "
                         f"tried again ({outcome.reason})", transient=True)
