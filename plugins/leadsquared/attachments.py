"""Media files into LeadSquared: each fetched file is uploaded (File Upload on the files
host, reference §8) and attached (Attachment/Add) to the activity whose transcript names it.

Each attachment is a delivery target of its own (DESIGN.md): key `<part key>#file<message
id>`, its own outcome, retry and dead letter. It is tried only once the activity is in the
ledger, so a failing upload never holds back or re-posts the text. A file not fetched yet
leaves its target dead with contracts.WAITING_FOR_FILE and its message delivered: the text
waits for nothing, and the commit that stores the file re-opens the message in its own batch
(same keys), so the file follows on its own to the same activity (its id is in the ledger).

Never twice: a landed attach is in the ledger (committed with the outcomes), and a
re-delivery skips its key. Uploading again is harmless (an unlinked copy in the files store),
so an upload that failed or was cut off is simply repeated. An attach whose answer was lost
(timeout, dropped connection) cannot be checked: the reference documents no read of an
activity's attachments. It is not repeated: it is a dead target saying UNCONFIRMED (a
missing attachment beats a duplicate; a person who checked can requeue it). Left open: a
SIGKILL between an attach's answer and the commit of the outcomes (milliseconds) leaves no
trace, and the retry attaches again.
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Any

from bridge import Batch
from bridge.contracts import WAITING_FOR_FILE
from bridge.model import Message
from bridge.render import file_name
from plugins.leadsquared.client import LeadSquaredError
from plugins.leadsquared.transcript import Part

logger = logging.getLogger(__name__)

UNCONFIRMED = "attach unconfirmed"  # an attach whose answer never came: a dead letter
HELD = "held in the bridge: this activity type does not allow attachments"


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


def held_line(line: str, message: Message) -> str:
    """The transcript line of a file the CRM cannot take: it says the file stays here."""
    if message.file is None or message.file.state not in ("fetched", "pending"):
        return line
    return f"{line} [{HELD}]"


def file_type(mime_type: str | None) -> int:
    """File Upload's FileType (reference §8): 1 image, 0 document (everything else)."""
    return 1 if (mime_type or "").startswith("image/") else 0


async def attach_files(sink: Any, batch: Batch, part: Part, activity: str,
                       existing: dict[str, str]) -> list[str]:
    """Upload and attach the part's files to `activity`; why any still waits to retry."""
    waiting = []
    for message in part.messages:
        if (why := await _attach(sink, batch, part, message, activity, existing)) is not None:
            waiting.append(why)
    return waiting


async def _attach(sink: Any, batch: Batch, part: Part, message: Message, activity: str,
                  existing: dict[str, str]) -> str | None:
    file = message.file
    if file is None or file.state in ("dead", "held") or not sink.allow_attachments:
        return None  # nothing to attach: the transcript line says why
    key = file_key(part.key, message)
    earlier = batch.targets.get(key)
    if key in existing or (earlier is not None and earlier.dead):
        return None
    name = file_name(message)
    if not file.fetched:
        batch.fail_target(key, f"attachment {name}", f"{WAITING_FOR_FILE}: it follows once "
                          "fetched", [message.id], sink.settings.max_attempts, final=True)
        return None
    try:
        url = await sink.client.upload_file(sink.files_base, file.path, name,
                                            _mime(file.mime_type, name),
                                            file_type(file.mime_type))
    except (LeadSquaredError, OSError) as exc:  # OSError: the stored file is gone (purged)
        return _failed(sink, batch, key, name, message, exc)
    try:
        attachment = await sink.client.add_attachment(
            activity, name, url, f"WhatsApp {message.kind}, message {message.provider_id}")
    except LeadSquaredError as exc:
        return _failed(sink, batch, key, name, message, exc)
    batch.remember(key, attachment)
    existing[key] = attachment
    return None


def _failed(sink: Any, batch: Batch, key: str, name: str, message: Message,
            exc: Exception) -> str | None:
    if isinstance(exc, LeadSquaredError):
        reason = f"LeadSquared {exc.kind.replace('_', ' ')}: {exc.message}"
        final = exc.kind in ("rejected", "unknown_outcome")
        if exc.kind == "unknown_outcome":  # it may have landed: never sent again by itself
            reason = f"{UNCONFIRMED}: {reason}; it may be attached (no API reads an " \
                     "activity's attachments), so it is not repeated: requeue to attach again"
    else:
        reason, final = f"the stored file cannot be read: {exc}", True
    failure = batch.fail_target(key, f"attachment {name}", reason, [message.id],
                                sink.settings.max_attempts, final=final)
    if failure.dead:
        logger.warning("gave up attaching a file after %d tries: %s", failure.attempts, reason)
        return None
    return f"attachment {name}: {reason}"


def _mime(mime_type: str | None, name: str) -> str:
    guessed = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return guessed.split(";")[0].strip()
