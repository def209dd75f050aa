"""Step 4 of a delivery: attach. Each fetched media file is uploaded (File Upload on the
files host, reference §8) and attached (Attachment/Add, AttachmentFile = the S3 URL the
upload answered in `s3FilePath`) to the activity whose transcript names it.

Each attachment is a delivery target of its own (DESIGN.md): key `<part key>#file<message
id>`, its own outcome, retry and dead letter. It is tried only once the activity is in the
ledger, so a failing upload never holds back or re-posts the text. A file not fetched yet
leaves its target dead with contracts.WAITING_FOR_FILE and its message delivered: the text
waits for nothing, and the commit that stores the file re-opens the message in its own batch
(same keys), so the file follows on its own to the same activity (its id is in the ledger).

Never twice: a landed attach is in the ledger, written the moment its answer comes (the
buffer's record_landed, not with the batch's outcomes: a crash while the delivery's other
files upload must not attach this one again), and a re-delivery skips its key. Uploading
again is harmless (an unlinked copy in the files store), so an upload that failed or was
cut off is simply repeated. An attach whose answer was lost (timeout, dropped connection,
5xx) cannot be checked: the reference documents no read of an activity's attachments. It
is not repeated: it is a dead target saying UNCONFIRMED (a missing attachment beats a
duplicate; a person who checked can requeue it). So is one cut off by a kill: before
Attachment/Add goes out its target is recorded as IN_FLIGHT (the buffer's record_attempt),
and a retry that finds it so does not send it again. Left open: a kill between an attach's
answer and the write that records it (milliseconds) attaches it again on the retry, and a
kill between the IN_FLIGHT write and the request leaving leaves an unconfirmed target for a
file that never reached the CRM (requeue it).

The hand-over from the media fetch (issue 25): the wait recorded here is settled in the
core's commit of the outcomes, which re-reads the file's state (bridge/buffer/delivery.py),
so a file stored while this delivery ran still follows.

An activity found by its key in a read whose row named no activity id (keys.activity_id:
recorded as api.NO_ACTIVITY_ID, so its text is never posted again) has no id Attachment/Add
can take: its files are dead targets saying so (NO_ID), never a call with a made-up id.

An upload answer that names no S3 URL (only a file name) cannot be attached: Attachment/Add
takes the S3 URL, and a URL we built ourselves would not be it. The attachment is then a
dead target saying so, and the text is delivered.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from bridge import WAITING_FOR_FILE, Batch, Message, Outcome, TargetFailure, file_name
from plugins.leadsquared.api import is_activity_id
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.outcomes import OUTAGE
from plugins.leadsquared.transcript import Part

logger = logging.getLogger(__name__)
Landed = Callable[[str, str], Awaitable[None]]  # (idempotency key, CRM id) -> recorded
Attempt = Callable[[str, TargetFailure], Awaitable[None]]  # (batch key, in flight) -> recorded

UNCONFIRMED = "attach unconfirmed"  # an attach whose answer never came: a dead letter
IN_FLIGHT = "attach in flight"  # recorded before Attachment/Add; its answer replaces it
CUT_OFF = (f"{UNCONFIRMED}: the bridge stopped (killed or crashed) before Attachment/Add "
           "answered; it may be attached (no API reads an activity's attachments), so it "
           "is not repeated: requeue to attach again")
HELD = "held in the bridge: this activity type does not allow attachments"
NOT_ALLOWED = ("the activity type no longer allows attachments: the file stays in the bridge "
               "(turn on Allow Attachments in LeadSquared, then requeue it)")
NO_URL = ("File Upload answered no S3 URL (s3FilePath), only a file name: Attachment/Add "
          "needs the S3 URL, so the file stays in the bridge (run `bridge leadsquared check "
          "--probe`; requeue once the account's upload answers one)")

SLOW_UPLOAD = ("the upload ({size}) did not finish in the {budget:.0f} s the delivery had "
               "left for it (plugins.leadsquared.deliver_timeout less one call's timeout, "
               "kept for Attachment/Add): a slow line to the files host; tried again, and "
               "kept in the bridge if it never fits (raise deliver_timeout for such files)")
# When this delivery's uploads must end (time.monotonic()), set by the sink per deliver():
# an upload cut by the core's deliver_timeout cut the whole delivery, and every message of
# the batch, its text landed, was retried as a CRM outage until retry_for dead-lettered it.
_UPLOADS_END: ContextVar[float | None] = ContextVar("uploads_end", default=None)

NO_ID = ("no activity id to attach it to: LeadSquared holds its chat's activity (found by "
         "its Chatbridge Key {key}, so the text is not posted again) but answered no id for "
         "it, and Attachment/Add needs one. The file stays in the bridge: attach it by hand "
         "to that activity in LeadSquared, or requeue it (the retry reads the lead's "
         "activities again)")


def file_key(part_key: str, message: Message) -> str:
    return f"{part_key}#file{message.id}"


def follow_ups(batch: Batch) -> dict[int, str]:
    """Message id -> the part key its text was posted under, for messages back only for
    their file (a re-opened file target): re-rendering them alone would give a new part key,
    and so a second activity."""
    found = {}
    for key, target in batch.targets.items():
        part_key, marker, message_id = key.rpartition("#file")
        if marker and not target.dead and part_key in batch.ledger and message_id.isdigit():
            found[int(message_id)] = part_key
    return found


def held_line(line: object, message: Message) -> object:
    """The transcript line of a file the CRM cannot take: it says the file stays here."""
    if not isinstance(line, str) or message.file is None \
            or message.file.state not in ("fetched", "pending"):
        return line
    return f"{line} [{HELD}]"


def file_type(mime_type: str | None) -> int:
    """File Upload's FileType (reference §8): 1 image, 0 document (everything else)."""
    return 1 if (mime_type or "").startswith("image/") else 0


class Attacher:
    """Uploads and attaches a landed part's files."""

    def __init__(self, client: LeadSquaredClient, files_base: str, allowed: bool,
                 max_attempts: int, land: Landed | None = None,
                 attempt: Attempt | None = None) -> None:
        self.client = client
        self.files_base = files_base
        self.allowed = allowed  # the activity type's Allow Attachments
        self.max_attempts = max_attempts
        self.land = land  # records a landed attach in the buffer's ledger at once
        self.attempt = attempt  # records an attach about to go out, at once

    async def attach(self, batch: Batch, part: Part,
                     existing: dict[str, str]) -> list[Outcome]:
        """Attach the part's files to its activity (in `existing`); a retry (aside: the
        text is on the lead) for each file that still waits, transient for an outage's."""
        waiting = []
        for message in part.messages:
            if (why := await self._one(batch, part, message, existing)) is not None:
                waiting.append(why)
        return waiting

    async def _one(self, batch: Batch, part: Part, message: Message,
                   existing: dict[str, str]) -> Outcome | None:
        file = message.file
        if file is None or file.state in ("dead", "held"):
            return None  # nothing to attach: the transcript line says why
        key = file_key(part.key, message)
        earlier = batch.targets.get(key)
        if not self.allowed:  # an earlier try's target would wait in a finished batch
            if earlier is not None and not earlier.dead and key not in existing:
                batch.fail_target(key, earlier.label, NOT_ALLOWED, [message.id],
                                  self.max_attempts, final=True)
            return None
        if key in existing or (earlier is not None and earlier.dead):
            return None
        name = file_name(message)
        if earlier is not None and earlier.reason.startswith(IN_FLIGHT):
            return self._failed(batch, key, name, message, CUT_OFF, final=True)
        if not is_activity_id(existing.get(part.key)):
            return self._failed(batch, key, name, message, NO_ID.format(key=part.key),
                                final=True)
        if not file.fetched:
            batch.fail_target(key, f"attachment {name}", f"{WAITING_FOR_FILE}: it follows "
                              "once fetched", [message.id], self.max_attempts, final=True)
            return None
        budget = _upload_budget()
        try:
            async with asyncio.timeout(budget) as bound:
                upload = await self.client.files.upload(self.files_base, file.path, name,
                                                         _mime(file.mime_type, name),
                                                         file_type(file.mime_type))
        except TimeoutError:
            if not bound.expired():
                raise
            reason = SLOW_UPLOAD.format(size=_size(file.size), budget=max(budget or 0, 0))
            # a timeout, as the client takes one (an outage's): tried again for retry_for
            return self._failed(batch, key, name, message, reason, final=False,
                                transient=True)
        except (LeadSquaredError, OSError) as exc:  # OSError: the stored file is gone
            return self._failed(batch, key, name, message, *_reason(exc, upload=True))
        if upload.url is None:
            return self._failed(batch, key, name, message, NO_URL, final=True)
        await self._in_flight(batch, key, name, message)
        try:
            attachment = await self.client.files.attach(
                existing[part.key], name, upload.url,
                f"WhatsApp {message.kind}, message {message.provider_id}")
        except LeadSquaredError as exc:
            return self._failed(batch, key, name, message, *_reason(exc))
        batch.remember(key, attachment)
        existing[key] = attachment
        if self.land is not None:
            try:
                await self.land(key, attachment)
            except Exception as exc:  # the outcomes' commit records it all the same
                logger.warning("could not record an attach at once (%s: %s); it is recorded "
                               "with the delivery's outcomes", type(exc).__name__, exc)
        return None

    async def _in_flight(self, batch: Batch, key: str, name: str, message: Message) -> None:
        """Record, before Attachment/Add, that it goes out: a kill before its answer is
        then seen by the retry (an unconfirmed attach, never sent twice)."""
        if self.attempt is None:
            return
        earlier = batch.targets.get(key)
        failure = TargetFailure(key, f"attachment {name}", f"{IN_FLIGHT} since a delivery "
                                "that did not finish", False, (message.id,),
                                earlier.attempts if earlier else 0,
                                earlier.outages if earlier else 0,
                                earlier.transient if earlier else False)
        try:
            await self.attempt(batch.key, failure)
        except Exception as exc:  # not recorded: sent all the same (as before issue 25)
            logger.warning("could not record an attach before sending it (%s: %s)",
                           type(exc).__name__, exc)

    def _failed(self, batch: Batch, key: str, name: str, message: Message, reason: str,
                final: bool, transient: bool = False) -> Outcome | None:
        """Record the file's failed try; its wait (None once given up). A `transient` one
        (an outage of the files host or of Attachment/Add) is not counted to max_attempts:
        it waits for retry_for, then the buffer gives the attachment up, not its chat."""
        failure = batch.fail_target(key, f"attachment {name}", reason, [message.id],
                                    self.max_attempts, final=final, transient=transient)
        if failure.dead:
            logger.warning("gave up attaching a file after %d tries: %s", failure.attempts,
                           reason)
            return None
        return Outcome.retry(f"attachment {name}: {reason}", transient=transient, aside=True)


@contextmanager
def uploads_end_within(seconds: float) -> Iterator[None]:
    """Within this block (one deliver()), uploads end `seconds` from now: the rest of the
    delivery's time is kept for the Attachment/Add that follows each."""
    token = _UPLOADS_END.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _UPLOADS_END.reset(token)


def _upload_budget() -> float | None:
    """Seconds the next upload may take (None: no bound; 0 or less: none left)."""
    end = _UPLOADS_END.get()
    return None if end is None else end - time.monotonic()


def _size(size: int | None) -> str:
    return "of unknown size" if size is None else f"{size / (1 << 20):.1f} MiB"


def _reason(exc: Exception, upload: bool = False) -> tuple[str, bool, bool]:
    """(why, whether it is final, whether it is an outage's) of a failed upload or attach.
    An upload whose answer was lost is simply repeated (an unlinked copy is harmless); an
    attach is not. An outage is what the client calls one (outcomes.OUTAGE: 5xx, gateway
    pages, timeouts, 429, lost answers), so it is not counted to max_attempts."""
    if not isinstance(exc, LeadSquaredError):
        return f"the stored file cannot be read: {exc}", True, False
    reason = f"LeadSquared {exc.kind.replace('_', ' ')}: {exc.message}"
    if upload:
        return reason, exc.kind == "rejected", exc.kind in OUTAGE
    if exc.kind == "unknown_outcome":  # it may have landed: never sent again by itself
        reason = (f"{UNCONFIRMED}: {reason}; it may be attached (no API reads an "
                  "activity's attachments), so it is not repeated: requeue to attach again")
        return reason, True, False
    return reason, exc.kind == "rejected", exc.kind in OUTAGE


def _mime(mime_type: str | None, name: str) -> str:
    guessed = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return guessed.split(";")[0].strip()
