"""What needs a person, for the top of the status page: dead letters, held chats, failed
sends and overdue attachments, each row naming the person, a short preview of the message,
the reason in plain words and the next step."""

from __future__ import annotations

import re
import time
from typing import Any

from bridge.buffer import Buffer
from bridge.buffer.enrich import first_error
from bridge.contracts import OVERDUE_FILE
from bridge.health import ago
from bridge.render import cut, failure_text, render_line

PREVIEW = 80  # characters of a message shown in a list (the conversation page has it whole)
__all__ = ["OVERDUE_FILE", "attention", "dead_letter_advice", "held_advice", "number_of",
           "person_of", "preview"]
RECENT_FAILURES = 7 * 86400.0  # failed sends older than this are history, not a task

_GAVE_UP = re.compile(r"gave up after (\d+) attempts: (.*)", re.S)
_KEPT_FAILING = re.compile(r"\S+ kept failing for (\S+) \(last: (.*)\): check its service "
                           r"status, then requeue$", re.S)
_TEMPORARY = re.compile(r"transient|rate.?limit|timed? ?out|timeout|HTTP 5\d\d|unavailable|"
                        r"connection|unknown outcome", re.I)
_HINT = re.compile(r"^(.*?)\s*\(([^()]*)\)$", re.S)


def preview(message: Any) -> str:
    """The message as one short line (a text's first words, or what it carries)."""
    if message is None:
        return ""
    return cut(render_line(message), PREVIEW)


def person_of(row: dict[str, Any]) -> str:
    """A conversation row's person: the profile name, else the WhatsApp username (a
    username user's chat is keyed by a business-scoped id no person knows), else the key."""
    username = (row.get("username") or "").lstrip("@")
    return row.get("contact_name") or (f"@{username}" if username else row["key"])


def number_of(row: dict[str, Any]) -> str:
    """A conversation row's phone number ("" for a username user or a group): a chat kept
    under its BSUID (a recycled number) still shows the number it came from."""
    return row.get("phone") or (row["key"] if row["key"].startswith("+") else "")


def dead_letter_advice(reason: str, sink: str) -> tuple[str, str]:
    """(the reason in plain words, the next step) for a dead letter's recorded reason."""
    outage = _KEPT_FAILING.match(reason or "")
    if outage:
        lasted, last = outage.groups()
        return (f"{sink} kept failing for {lasted} (last: {last})",
                f"Check {sink}'s service status; once it works, requeue it.")
    gave_up = _GAVE_UP.match(reason or "")
    if gave_up:
        tries, last = gave_up.groups()
        if _TEMPORARY.search(last):
            return (f"{sink} kept failing, {tries} tries in a row (last: {last})",
                    f"Requeue it once {sink} works again; it goes out at the next sync.")
        return (f"Tried {tries} times without success (last: {last})",
                "Fix what the last answer names, then requeue it.")
    if (reason or "").startswith(("sink error:", "sink timed out", "sink returned")):
        return (f"The {sink} plugin failed on it ({reason})",
                "Requeue it; if it fails again, the bridge's log has the details.")
    return (f"{sink} refused it: {reason}",
            f"Fix what {sink} objects to (in {sink} or in the config), then requeue it.")


def held_advice(reason: str) -> tuple[str, str]:
    """(why the chat waits, what to do): a reason's trailing '(…)' is its fix."""
    hint = _HINT.match(reason or "")
    cause, fix = (hint.groups() if hint else (reason, ""))
    step = f"{fix}; it is checked again at every sync." if fix else \
        "It is checked again at every sync."
    return cause[:1].upper() + cause[1:], step[:1].upper() + step[1:]


async def attention(buffer: Buffer, sinks: list[dict[str, Any]], sink: str | None,
                    limit: int = 50) -> dict[str, Any]:
    """The lists of things to act on (of `sink`, or every sink's for counts), newest first,
    in one snapshot (the page's own, given its view): the lists and previews agree."""
    return await buffer.snapshot(lambda view: _attention(view, sinks, sink, limit))


async def _attention(buffer: Buffer, sinks: list[dict[str, Any]], sink: str | None,
                     limit: int) -> dict[str, Any]:
    dead = await buffer.dead_letters(sink, limit=limit) if sink else []
    targets = await buffer.dead_targets(sink, limit=limit) if sink else []
    held = (await buffer.conversation_list(sink, show="held", limit=limit))["rows"] \
        if sink else []
    failed = [row for row in await buffer.failed_sends(limit)
              if row["failed_at"].timestamp() > time.time() - RECENT_FAILURES]
    overdue_count, overdue = await buffer.overdue_files(
        sink, time.time() - OVERDUE_FILE, limit) if sink else (0, [])
    ids = [r["message_id"] for r in dead + failed if r.get("message_id")]
    ids += [r["message_ids"][0] for r in overdue if r["message_ids"]]
    keys = [r["key"] for r in held]
    found = await buffer.previews(ids, keys)
    return {
        "dead_letters": [_dead(row, found, sink) for row in dead],
        "dead_targets": [_target(row, sink) for row in targets],
        "held": [_held(row, found) for row in held],
        "failed_sends": [_failed(row, found) for row in failed],
        "overdue": [_overdue(row, found) for row in overdue],
        "counts": {**_counts(sinks, sink, overdue_count), "failed_sends": len(failed)},
    }


def _counts(sinks: list[dict[str, Any]], sink: str | None, overdue: int) -> dict[str, int]:
    chosen = next((s for s in sinks if s["sink"] == sink), None) or {}
    return {"dead_letters": chosen.get("dead_letters", 0) + chosen.get("dead_targets", 0),
            "held": sum(h["chats"] for h in chosen.get("held_chats", [])),
            "overdue": overdue}


def _who(found: dict[Any, Any], key: Any, fallback: str | None) -> tuple[str, str]:
    """(the person's name or number, the message preview) for a message id or a chat key."""
    name, message = found.get(key, (None, None))
    return name or fallback or "unknown", preview(message)


def _dead(row: dict[str, Any], found: dict[Any, Any], sink: str) -> dict[str, Any]:
    name, text = _who(found, row["message_id"], row["conversation"])
    reason, step = dead_letter_advice(row["reason"], sink)
    return {**row, "name": name, "preview": text, "plain": reason, "next": step}


def _target(row: dict[str, Any], sink: str) -> dict[str, Any]:
    reason, step = dead_letter_advice(row["reason"], sink)
    return {**row, "plain": reason, "next": step}


def _held(row: dict[str, Any], found: dict[Any, Any]) -> dict[str, Any]:
    name, text = _who(found, row["key"], person_of(row))
    reason, step = held_advice(row["held_reason"] or "")
    return {**row, "name": name, "preview": text, "plain": reason, "next": step}


def _failed(row: dict[str, Any], found: dict[Any, Any]) -> dict[str, Any]:
    error = first_error(row.get("errors"))
    name, text = _who(found, row.get("message_id"), row["conversation"] or row["recipient"])
    return {**row, **error, "name": name, "preview": text,
            "plain": failure_text(error).removeprefix("❌ "),
            "next": "The customer did not get it: send it again from WhatsApp (after 24 hours "
                    "without a reply from them, only as a template)."}


def _overdue(row: dict[str, Any], found: dict[Any, Any]) -> dict[str, Any]:
    first = row["message_ids"][0] if row["message_ids"] else None
    name, text = _who(found, first, row["conversation"])
    waited = time.time() - row["waiting_since"].timestamp()
    if row.get("held"):
        return {**row, "name": name, "preview": text,
                "plain": f"{row['target']} has waited {ago(waited)}: its file is stored, and "
                         "it is attached when the retry of another part of its chat ends",
                "next": "See that chat's retrying post under Details: once it lands or is "
                        "given up, the file follows (no download is needed again)."}
    return {**row, "name": name, "preview": text,
            "plain": f"{row['target']} has waited {ago(waited)} for its file",
            "next": "See the media files under Details: a failed download says why; "
                    "`bridge dead-letter requeue --media` fetches it again."}
