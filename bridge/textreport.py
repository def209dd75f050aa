"""Plain-text rendering of the status report for the terminal: the verdict first, then what
needs attention, then the details. Times are shown in one zone, named at the end."""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from bridge.contracts import SETTLING
from bridge.health import ago
from bridge.render import displayable, failure_text, in_zone

SINK_INDENT = "    "


def zone(name: str | None) -> tzinfo | None:
    """server.timezone, or None for the system's zone."""
    return ZoneInfo(name) if name else None


def as_datetime(value: Any) -> datetime | None:
    """A report's time: a datetime, an ISO string (from /status JSON) or unix seconds."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


class Clock:
    """Times in one zone, labelled; relative to now where that reads better."""

    def __init__(self, tz: tzinfo | None, now: float | None = None) -> None:
        self.tz, self.now = tz, time.time() if now is None else now

    def at(self, value: Any) -> str:
        when = as_datetime(value)
        return in_zone(when, self.tz) if when else "never"

    def ago(self, value: Any) -> str:
        """'3 min ago (2024-05-01 10:00:00 IST)', or 'never'."""
        when = as_datetime(value)
        if when is None:
            return "never"
        return f"{ago(max(0.0, self.now - when.timestamp()))} ago ({self.at(when)})"

    def zone(self) -> str:
        name = getattr(self.tz, "key", None)
        abbreviation = datetime.fromtimestamp(self.now, UTC).astimezone(self.tz).strftime("%Z")
        return f"{name} ({abbreviation})" if name else f"this machine's zone ({abbreviation})"


def _directory(state: dict[str, Any], clock: Clock) -> str:
    """The record directory: size and freshness, or why it is off."""
    if not state["enabled"]:
        return f"off (the account holds {state['records']} records, over the limit)"
    refreshed, filled = (state[k] and datetime.fromtimestamp(state[k], UTC)
                         for k in ("refreshed_at", "filled_at"))
    return (f"{state['size']} records, refreshed {clock.at(refreshed or None)}, "
            f"filled {clock.at(filled or None)}")


def shown(value: Any) -> Any:
    """`value` (a report) with every string made safe for a terminal: a customer's name
    holding ESC could otherwise move the cursor, retitle the window or rewrite the
    verdict line, and a line break in it would start a line of its own."""
    if isinstance(value, str):
        return displayable(value)
    if isinstance(value, dict):
        return {key: shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [shown(item) for item in value]
    return value


def render_status(report: dict[str, Any], tz: tzinfo | None = None,
                  now: float | None = None) -> str:
    """The verdict per sink, what needs attention, then details and conversations."""
    clock = Clock(tz, now)
    report = shown(report)  # names and errors come from customers and the CRM
    health = report.get("health") or {"state": "unknown", "reason": "not judged"}
    lines = [f"Chatbridge: {health['state'].upper()} — {health['reason']}"]
    lines += [line for sink in report["sinks"] for line in _verdict(sink, clock)]
    if not report["sinks"]:
        lines.append("  no sinks installed yet (enable one under plugins: and run the bridge)")
    attention = _attention(report, clock)
    lines += ["", "Needs attention", *(attention or ["  nothing"])]
    lines += ["", "Details", f"  messages in buffer: {report['messages']}"]
    lines += _files(report.get("media") or {})
    if report.get("group_chats"):
        lines.append(f"  group chats: {report['group_chats']} (never posted as a private chat)")
    for sink in report["sinks"]:
        lines += _details(sink, clock)
    lines += ["", f"Times are in {clock.zone()}."]
    return "\n".join(lines)



def _files(media: dict[str, Any]) -> list[str]:
    """Per source, its files (photos, voice notes, documents) by state, and the commonest
    reasons some wait or were given up (a cluster where no process can fetch says why
    here, not only in the JSON)."""
    lines = []
    for source, counts in sorted(media.items()):
        parts = [f"{counts.get('fetched', 0)} fetched", f"{counts.get('pending', 0)} waiting"]
        parts += [f"{counts[state]} {word}" for state, word in (("held", "held"),
                                                                ("dead", "given up"))
                  if counts.get(state)]
        lines.append(f"  files of {source}: " + ", ".join(parts))
        reasons = sorted((counts.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        lines += [f"    {n} × {reason}" for reason, n in reasons[:3]]
    return lines

def _verdict(sink: dict[str, Any], clock: Clock) -> list[str]:
    health = sink.get("health") or {}
    state = health.get("state", "unknown")
    lines = [f"  {sink['sink']:<14} {state.upper():<8} {health.get('reason', '')}"]
    if sink.get("simulated"):
        lines.append(f"{'':17}simulator — nothing reaches {sink['simulated']}")
    facts = [f"last sync {clock.ago(sink['last_sync_at'])}"]
    if state != "stopped" and sink.get("next_sync_at"):
        due = as_datetime(sink["next_sync_at"]).timestamp() - clock.now
        facts.append("next sync now" if due <= 1 else f"next sync in {ago(due)}")
    waiting = sink["backlog"] - sink["held"]
    facts.append(f"{waiting} waiting" + (f", {sink['held']} held" if sink["held"] else ""))
    lines.append(f"{'':17}" + " · ".join(facts))
    return lines


def _attention(report: dict[str, Any], clock: Clock) -> list[str]:
    """Counts of what a person must act on, each with its next step."""
    lines = []
    for sink in report["sinks"]:
        name = sink["sink"]
        if sink["dead_letters"]:
            lines.append(f"  {sink['dead_letters']} dead letter(s) in {name}: see `bridge "
                         f"dead-letter list --sink {name}`, fix the cause, then `bridge "
                         f"dead-letter requeue --sink {name}`")
        if sink.get("dead_targets"):
            lines.append(f"  {sink['dead_targets']} dead target(s) in {name} (one CRM record "
                         "of a message given up; requeued with the dead letters)")
        for held in sink.get("held_chats", []):
            lines.append(f"  {held['chats']} chat(s) held by {name}: {held['reason']}")
        if sink.get("overdue_files"):
            lines.append(f"  {sink['overdue_files']} attachment(s) in {name} waiting too long "
                         "for their file")
    if report.get("failed_sends"):
        lines.append(f"  {report['failed_sends']} failed send(s): the customer did not get "
                     "them; send again from WhatsApp")
        for row in report.get("failed_send_sample", [])[:5]:
            lines.append(f"    {row['conversation'] or row['recipient'] or '?':<18} "
                         f"{clock.at(row['failed_at'])}  {failure_text(row)}")
    return lines


def _details(sink: dict[str, Any], clock: Clock) -> list[str]:
    stopped = (sink.get("health") or {}).get("state") == "stopped"
    lines = ["", f"  sink {sink['sink']}{'' if sink['enabled'] else ' (disabled)'}",
             f"{SINK_INDENT}installed   {clock.at(sink['installed_at'])}",
             f"{SINK_INDENT}backlog     {sink['backlog']} (held: {sink['held']})",
             f"{SINK_INDENT}dead letter {sink['dead_letters']}",
             f"{SINK_INDENT}targets     {sink['failing_targets']} failing, "
             f"{sink['dead_targets']} dead",
             f"{SINK_INDENT}backfill    {_backfill(sink, stopped, clock)}"]
    if directory := sink.get("directory"):
        lines.append(f"{SINK_INDENT}directory   {_directory(directory, clock)}")
    if sink.get("settling"):
        lines.append(f"{SINK_INDENT}settling    {sink['settling']} batch(es): {SETTLING}, "
                     f"until {clock.at(sink['settling_until'])}")
    if sink.get("last_error"):
        lines.append(f"{SINK_INDENT}last error  {sink['last_error']} "
                     f"({clock.ago(sink['last_error_at'])})")
    if owners := (sink.get("details") or {}).get("owners"):
        lines.append(f"{SINK_INDENT}owners      {owners}")
    lines += _numbers(sink, clock)
    for target in sink.get("dead_target_sample", []):
        lines.append(f"{SINK_INDENT}dead target {target['target']} of "
                     f"{target['conversation']}: {target['reason']}")
    for conv in sink.get("conversations", []):
        name = conv["contact_name"] or ""
        note = conv["held_reason"] or conv["last_error"] or conv.get("history_note") or ""
        lines.append(f"{SINK_INDENT}  {conv['key']:<18} {name[:24]:<24} last synced "
                     f"{clock.at(conv['last_synced_at'])}  pending {conv['pending']}  {note}")
    return lines


def _numbers(sink: dict[str, Any], clock: Clock) -> list[str]:
    """Per business number (a rep's): chat windows in flight, held, failing, dead."""
    rows = sink.get("numbers") or []
    if not rows:
        return []
    lines = [f"{SINK_INDENT}by number   (last synced; chat windows in flight or stuck; "
             "messages dead)"]
    for row in rows:
        facts = [f"last synced {clock.at(row['last_synced_at'])}", f"{row['open']} open"]
        if row["held"]:
            facts.append(f"{row['held']} held ({row['held_reason']})")
        if row["failing"]:
            facts.append(f"{row['failing']} failing since {clock.at(row['failing_since'])}"
                         f" ({row['last_error']})")
        facts.append(f"{row['dead']} dead")
        lines.append(f"{SINK_INDENT}  {row['account'] or '(unknown)':<18} {', '.join(facts)}")
    return lines


def _backfill(sink: dict[str, Any], stopped: bool, clock: Clock) -> str:
    if sink["backfill_done_at"] is None:
        return "not started (runs on the sink's first sync)"
    progress = sink.get("backfill") or {}
    done, total = progress.get("messages_done", 0), progress.get("messages_total", 0)
    dead = progress.get("messages_dead", 0)
    if done >= total:
        return (f"done ({total} messages since {clock.at(sink['backfill_since'])}"
                + (f"; {dead} went to dead letters" if dead else "") + ")")
    so_far = (f"{done}/{total} messages, {progress.get('conversations_done', 0)}/"
              f"{progress.get('conversations_total', 0)} conversations")
    if held := progress.get("messages_held", 0):
        so_far += f", {held} held (see Needs attention)"
    if stopped:  # no time left to promise while nothing drains
        return so_far + " (paused: the sink is not running)"
    eta = progress.get("eta_seconds")
    return so_far + (f", about {ago(eta)} left" if eta else "")
