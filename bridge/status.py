"""The status report shared by `bridge status`, GET /status and the status page."""

from __future__ import annotations

from typing import Any

from bridge.buffer import Buffer


async def buffer_report(buffer: Buffer, search: str | None = None,
                        limit: int = 50) -> dict[str, Any]:
    """Per sink: state, backlog, dead letters; per conversation: last synced, per sink."""
    sinks = await buffer.sinks()
    report: dict[str, Any] = {"sinks": [], "messages": await buffer.count_messages()}
    for sink in sinks:
        sink["conversations"] = await buffer.conversations(sink["sink"], search, limit)
        sink["dead_letter_sample"] = await buffer.dead_letters(sink["sink"], limit=10)
        report["sinks"].append(sink)
    return report


async def status_report(bridge: Any, search: str | None = None) -> dict[str, Any]:
    """The buffer report plus what only the running process knows."""
    report = await buffer_report(bridge.buffer, search)
    for sink in report["sinks"]:
        runner = bridge.runners.get(sink["sink"])
        sink["running"] = runner is not None
    report["sources"] = [source.name for source in bridge.sources]
    report["started_at"] = bridge.started_at
    return report
