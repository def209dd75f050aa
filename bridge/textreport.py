"""Plain-text rendering of the status report for the terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.render import failure_text


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def _directory(state: dict[str, Any]) -> str:
    """The record directory: size and freshness, or why it is off."""
    if not state["enabled"]:
        return f"off (the account holds {state['records']} records, over the limit)"
    refreshed, filled = (datetime.fromtimestamp(state[k], UTC) if state[k] else None
                         for k in ("refreshed_at", "filled_at"))
    return f"{state['size']} records, refreshed {_when(refreshed)}, filled {_when(filled)}"


def render_status(report: dict[str, Any]) -> str:
    """Sinks first, then each sink's conversations with their last synced time."""
    lines = [f"messages in buffer: {report['messages']}"]
    if report.get("group_chats"):
        lines.append(f"group chats: {report['group_chats']} (never posted as a private chat)")
    if report.get("failed_sends"):
        lines.append(f"failed sends: {report['failed_sends']}")
        for row in report.get("failed_send_sample", []):
            lines.append(f"    {row['conversation'] or row['recipient'] or '?':<18} "
                         f"{_when(row['failed_at'])}  {failure_text(row)}")
    if not report["sinks"]:
        lines.append("no sinks installed yet (enable one under plugins: and run the bridge)")
    for sink in report["sinks"]:
        lines += [
            "",
            f"sink {sink['sink']}{'' if sink['enabled'] else ' (disabled)'}",
            f"  installed   {_when(sink['installed_at'])}",
            f"  last sync   {_when(sink['last_sync_at'])}",
            f"  next sync   {_when(sink['next_sync_at'])}",
            f"  backlog     {sink['backlog']} (held: {sink['held']})",
            f"  dead letter {sink['dead_letters']}",
            f"  targets     {sink['failing_targets']} failing, {sink['dead_targets']} dead",
            f"  backfill    {_backfill(sink)}",
        ]
        if directory := sink.get("directory"):
            lines.append(f"  directory   {_directory(directory)}")
        for held in sink.get("held_chats", []):
            lines.append(f"  held chats  {held['chats']}: {held['reason']}")
        if sink["last_error"]:
            lines.append(f"  last error  {sink['last_error']} ({_when(sink['last_error_at'])})")
        for target in sink.get("dead_target_sample", []):
            lines.append(f"  dead target {target['target']} of {target['conversation']}: "
                         f"{target['reason']}")
        for conv in sink["conversations"]:
            name = conv["contact_name"] or ""
            note = conv["held_reason"] or conv["last_error"] or ""
            lines.append(f"    {conv['key']:<18} {name[:24]:<24} last synced "
                         f"{_when(conv['last_synced_at'])}  pending {conv['pending']}  {note}")
    return "\n".join(lines)


def _backfill(sink: dict[str, Any]) -> str:
    if sink["backfill_done_at"] is None:
        return "not started (runs on the sink's first sync)"
    progress = sink.get("backfill") or {}
    done, total = progress.get("messages_done", 0), progress.get("messages_total", 0)
    if done >= total:
        return f"done ({total} messages since {_when(sink['backfill_since'])})"
    eta = progress.get("eta_seconds")
    return (f"{done}/{total} messages, {progress.get('conversations_done', 0)}/"
            f"{progress.get('conversations_total', 0)} conversations"
            + (f", about {_duration(eta)} left" if eta else ""))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
