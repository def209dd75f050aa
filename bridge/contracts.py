"""What plugins hand to the core: sources, sinks, filters, and the objects they exchange."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from bridge.durations import Duration, format_duration
from bridge.limits import Limits
from bridge.model import Conversation, Identity, Message, StatusUpdate

if TYPE_CHECKING:
    from aiohttp import web

OutcomeKind = Literal["delivered", "retry", "rejected", "held", "skipped"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message handed to a sink.

    delivered: it is in the CRM. retry: try again later (not_before, or backoff), and
    after the sink's max_attempts it goes to dead letter; a transient retry (the CRM is
    down, slow, rate-limiting or behind a failing gateway: nothing is wrong with the
    message) does not count to max_attempts, and goes to dead letter only once the sink's
    retry_for has passed since the batch first failed. rejected: it can never be
    delivered as it is; reason goes to dead letter for a person to act on. held: waiting
    for something outside the bridge (e.g. no CRM record for this number yet); re-checked
    every sync, never dead-lettered, reason shown in status. skipped: deliberately not
    sent (a filter dropped it, or the sink does not sync this kind); counts as settled.

    aside: a retry of a message already in the CRM's main record (e.g. on the lead), whose
    other targets (e.g. an opportunity's copy) wait: the conversation's later batches may
    pass its batch while it waits, so one target's outage never holds a chat back.
    """

    kind: OutcomeKind
    reason: str = ""
    not_before: datetime | None = None
    transient: bool = False
    aside: bool = False

    @classmethod
    def delivered(cls) -> Outcome:
        return cls("delivered")

    @classmethod
    def retry(cls, reason: str, not_before: datetime | None = None,
              transient: bool = False, aside: bool = False) -> Outcome:
        return cls("retry", reason, not_before, transient, aside)

    @classmethod
    def rejected(cls, reason: str) -> Outcome:
        return cls("rejected", reason)

    @classmethod
    def held(cls, reason: str) -> Outcome:
        return cls("held", reason)

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls("skipped", reason)


# A target that waits for its message's media file (not fetched yet) is left dead with a
# reason starting with this; the commit that stores the file re-opens it (its message goes
# back to pending in its own batch, same keys), and one whose file never comes says why.
WAITING_FOR_FILE = "waiting for its file"
# ... and is overdue after this many seconds (at once when its file is already stored).
OVERDUE_FILE = 900.0
# A target recorded only so that a retry knows where one of the sink's posts began, whose
# post waits with its messages' own retry (and dead letter), has a reason starting with
# this: it is not a failure of its own, so it is neither counted nor listed as one.
WAITS_WITH_MESSAGES = "waits with its messages"
# A batch whose process was killed mid-delivery waits, with this as its last error, until
# a write that process had in flight can no longer land (then its retry looks for its
# keys): the sink is not failing, and health does not count it as retrying.
SETTLING = "settling a write that may still land after a crash"


@dataclass(frozen=True, slots=True)
class TargetFailure:
    """A post to one of a message's targets (e.g. a CRM opportunity) that did not land.

    key: the post's idempotency key (starts with the batch key); label: the target as a
    person reads it; reason: the last error; dead: given up (a dead letter of its own);
    message_ids: the messages the post covers; attempts: failed tries so far; outages: of
    those, the tries that failed only transiently (a CRM outage), which max_attempts does
    not count; transient: whether the last one did.
    """

    key: str
    label: str
    reason: str
    dead: bool
    message_ids: tuple[int, ...]
    attempts: int = 1
    outages: int = 0
    transient: bool = False

    @property
    def counted(self) -> int:
        """Failed tries that count to max_attempts (those that were no outage's)."""
        return self.attempts - self.outages


@dataclass(slots=True)
class Batch:
    """Messages of one conversation with one business account (the customer's chat with
    one business number), handed to a sink together, oldest first.

    A batch is fixed when it is first claimed: a retry, or a redelivery after a crash,
    hands over the same messages (less those already delivered) under the same key, so a
    sink can derive idempotency keys from it. attempt counts from 1; uncertain is true
    when an earlier attempt may have reached the CRM (its lease expired unanswered).
    ledger: idempotency key -> CRM id of what earlier attempts of any batch posted.
    Sinks call remember() for each successful post and set record_id to cache the CRM
    record; both are committed with the batch's outcomes.
    targets: key -> TargetFailure of earlier attempts, for sinks whose message goes to
    several targets (a lead and its opportunities): each target keeps its own attempts and
    dead letter (fail_target()), and a message is delivered once each of its targets is
    in the ledger or dead.
    outage_tries: earlier tries that failed only transiently (a CRM outage): max_attempts
    counts `attempt - outage_tries`; failing_since: when it first failed (None: never yet).
    """

    key: str
    sink: str
    conversation: Conversation
    messages: list[Message]
    attempt: int = 1
    uncertain: bool = False
    ledger: dict[str, str] = field(default_factory=dict)
    record_id: str | None = None
    new_ledger: dict[str, str] = field(default_factory=dict)
    targets: dict[str, TargetFailure] = field(default_factory=dict)
    new_targets: dict[str, TargetFailure] = field(default_factory=dict)
    outage_tries: int = 0
    failing_since: float | None = None
    account: str | None = None  # the business account of every message (None: mixed)
    cleared: set[str] = field(default_factory=set)  # targets that wait no more, unposted

    def remember(self, key: str, crm_id: str) -> None:
        """Record that the post under `key` succeeded as CRM object `crm_id`."""
        self.ledger[key] = crm_id
        self.new_ledger[key] = crm_id
        self.targets.pop(key, None)

    def clear_target(self, key: str) -> None:
        """A failing target that waited for something other than its own post (e.g. the
        list of a lead's opportunities) and waits no more: forgotten with the outcomes. A
        dead one stays, a dead letter for a person to requeue."""
        earlier = self.targets.get(key)
        if earlier is not None and not earlier.dead:
            del self.targets[key]
            self.new_targets.pop(key, None)
            self.cleared.add(key)

    def fail_target(self, key: str, label: str, reason: str, message_ids: Sequence[int],
                    max_attempts: int, final: bool = False,
                    transient: bool = False) -> TargetFailure:
        """Record a failed post to one target; committed with the batch's outcomes.

        Dead when `final` (refused). A `transient` failure (an outage: the message's retry
        is transient and aside too) is not counted to max_attempts: the target waits, and
        once the sink's retry_for has passed the buffer gives it up instead of its message
        (bridge.buffer.delivery). Another failure is dead after `max_attempts` counted
        tries, or on the batch's last counted try (so a target never takes its messages to
        dead letter with it: the message's retry while it waits counts to max_attempts)."""
        earlier = self.targets.get(key)
        attempts = earlier.attempts + 1 if earlier is not None else 1
        outages = (earlier.outages if earlier is not None else 0) + int(transient)
        counted = max(attempts - outages, self.attempt - self.outage_tries)
        dead = final or (not transient and counted >= max_attempts)
        failure = TargetFailure(key, label, reason, dead, tuple(message_ids), attempts,
                                outages, transient)
        self.targets[key] = self.new_targets[key] = failure
        return failure


# A ledger key `<batch key>` + SINK_NOTE + name is a sink's own note kept with the batch
# (remember()), committed with its outcomes like a post, but no CRM object: the status
# pages do not list it among the activities a message went into.
SINK_NOTE = "="
LEASE_MARGIN = 1.0  # seconds a lease outlasts deliver_timeout: time to commit the outcomes
# seconds after its lease began (or was renewed) a delivery may begin without renewing it
# first: so every write of a delivery is sent by then + deliver_timeout, which bounds how
# long a killed process's write may still land (bridge.sync.settle_after_lease)
START_WITHIN = 5.0
MOST = 100_000  # a ceiling for counts: far past any sane use, well inside a 64-bit integer


class SinkSettings(BaseModel):
    """Settings every sink has; a sink's own config model extends this one.

    Bounds (Limits) are checked when a config file is loaded; see bridge/limits.py.
    """

    model_config = ConfigDict(extra="forbid")

    sync_interval: Annotated[Duration, Limits(
        0.1, 86400.0, why_low="the sink would drain without pause",
        why_high="chats would wait days to reach the CRM", example="3m")] = Field(
        180.0, description="how often the sink drains the buffer")
    backfill_days: Annotated[float, Limits(
        0, 3650, why_high="no chat history is that old", example="3", duration=False)] = Field(
        3, ge=0, description="days of chats synced on first install")
    backfill_share: float = Field(0.5, gt=0, le=1, description="largest share of the sink's "
                                  "time (so of its rate budget) a backfill may use while "
                                  "live messages arrive; alone it uses all of it")
    max_attempts: Annotated[int, Limits(
        1, MOST, why_high="past any retry schedule", example="8", duration=False)] = Field(
        8, ge=1, description="tries before a message goes to dead letter, not counting "
                             "tries that failed only transiently (retry_for covers those); a "
                             "refusal of the message itself dead-letters at once")
    retry_for: Annotated[Duration, Limits(
        1.0, 30 * 86400.0, why_low="a CRM outage would dead-letter at once",
        why_high="a message would wait over a month for a CRM that never came back",
        example="24h")] = Field(
        86400.0, description="how long transient failures (5xx, timeouts, 429, gateway "
                             "pages, connection errors) keep retrying, from the first one, "
                             "before the message goes to dead letter")
    batch_limit: Annotated[int, Limits(
        1, MOST, why_high="one claim would hold that many messages in memory",
        example="500", duration=False)] = Field(
        500, ge=1, description="messages claimed per drain step")
    lease: Annotated[Duration, Limits(
        1.0, 86400.0, why_low="a batch would be handed out again while being delivered",
        why_high="a batch of a crashed drain would wait that long", example="5m")] = Field(
        300.0, description="how long a claimed batch is reserved")
    deliver_timeout: Annotated[Duration, Limits(
        1.0, 3600.0, why_low="no CRM answers that fast: every delivery would time out and "
        "its messages go to dead letter", why_high="one stuck delivery would hold the drain "
        "that long", example="2m")] = Field(
        120.0, description="longest one deliver() may take")
    retry_base: Annotated[Duration, Limits(
        0.01, 86400.0, why_low="a failed delivery would be retried without pause",
        why_high="the first retry would wait days", example="30s")] = Field(
        30.0, description="first retry delay; doubles per attempt")
    retry_cap: Annotated[Duration, Limits(
        0.01, 7 * 86400.0, why_low="a failed delivery would be retried without pause",
        why_high="a message would wait over a week between tries", example="1h")] = Field(
        3600.0, description="longest retry delay")
    groups: Literal["skip", "participants"] = Field(
        "skip", description="group chats: skip (stored and shown on the status page, not "
                            "posted) or participants (each message goes to its sender's "
                            "record, labelled with the group)")

    def limit_checks(self) -> Iterator[tuple[str, str]]:
        """Rules between keys, checked with the bounds: (key, what is wrong)."""
        if self.lease < self.deliver_timeout + LEASE_MARGIN:
            least = format_duration(self.deliver_timeout + LEASE_MARGIN)
            yield ("lease", f"{format_duration(self.lease)} does not outlast deliver_timeout "
                   f"({format_duration(self.deliver_timeout)}): a batch still being delivered "
                   f"would be handed out again (use at least {least}, or a shorter "
                   "deliver_timeout)")
        if self.retry_cap < self.retry_base:
            yield ("retry_cap", f"{format_duration(self.retry_cap)} is shorter than retry_base "
                   f"({format_duration(self.retry_base)}), the first delay it caps (use at "
                   f"least {format_duration(self.retry_base)}, e.g. 1h)")


@runtime_checkable
class Sink(Protocol):
    """A CRM (or any destination) that receives conversations from the buffer.

    Optional, for the status page (a sink without them still works; each may raise, which
    the page logs and shows as unknown): `record_url(record_id) -> str | None`, a link to
    the CRM record; `activity_url(external_id) -> str | None`, a link to one posted object;
    `describe() -> dict`, live figures; `rate_budget() -> (calls, per_seconds)`, the CRM's
    rate limit, which the page charts the sink's calls against; `bulk_rate_budget()`, a
    second budget the CRM counts apart (bulk calls), charted and exported apart;
    `simulated: str | None`, the real service the sink stands in for when it talks to a
    simulator (the page shows a banner, `check`/`run`/`status` say "simulator — nothing
    reaches <it>"). A sink never falls back to a simulator by itself.

    Optional, for exactly-once: `write_settle: float`, seconds a CRM write cut off in
    flight (deliver_timeout) may still take to commit; the retry, which looks for what
    landed before posting again, waits at least that long (default: deliver_timeout).
    A batch whose process was killed mid-delivery waits as long after its delivery's
    deliver_timeout (counted from when its lease began or was renewed).
    """

    name: str
    settings: SinkSettings

    async def start(self) -> None:
        """Open clients, look up what is needed once (e.g. an activity type)."""

    async def deliver(self, batch: Batch) -> Sequence[Outcome]:
        """Deliver a batch; return one Outcome per message, in batch.messages order."""

    async def close(self) -> None:
        """Release clients."""


class Ingest(Protocol):
    """The buffer as a source sees it."""

    async def append(
        self,
        messages: Iterable[Message],
        statuses: Iterable[StatusUpdate] = (),
        contacts: Mapping[str, str] | None = None,
        identities: Iterable[Identity] = (),
    ) -> int:
        """Store durably in one commit; return how many messages were new. Raises on failure.

        contacts: conversation key -> display name (e.g. from an address-book sync).
        identities: who is who (phone, business-scoped user id, username), learned in the
        same commit: messages are filed under the person, not under the key they carry.
        """


@runtime_checkable
class Source(Protocol):
    """A messaging provider that pushes (webhooks) and may recover history."""

    name: str

    def routes(self, ingest: Ingest) -> list[web.AbstractRouteDef]:
        """aiohttp routes this source serves; handlers store through `ingest`."""

    def backfill(self, since: datetime) -> AsyncIterable[Message] | Iterable[Message]:
        """Messages this source can recover from `since` until now (may be none)."""


@runtime_checkable
class Filter(Protocol):
    """Drops or redacts messages before sinks see them."""

    name: str

    def apply(self, message: Message, sink: str) -> Message | None:
        """Return the message (possibly changed) or None to skip it for this sink."""


