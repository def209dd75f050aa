"""The status report shared by `bridge status`, GET /status and the status page."""

from __future__ import annotations

import logging
from typing import Any

from bridge.buffer import Buffer

logger = logging.getLogger(__name__)


async def buffer_report(buffer: Buffer, search: str | None = None, limit: int = 50,
                        dead_letters: int = 10) -> dict[str, Any]:
    """Per sink: state, backlog, dead letters; per conversation: last synced, per sink."""
    sinks = await buffer.sinks()
    report: dict[str, Any] = {"sinks": [], "messages": await buffer.count_messages()}
    for sink in sinks:
        sink["conversations"] = await buffer.conversations(sink["sink"], search, limit)
        sink["dead_letter_sample"] = await buffer.dead_letters(sink["sink"], limit=dead_letters)
        report["sinks"].append(sink)
    return report


async def status_report(bridge: Any, search: str | None = None,
                        dead_letters: int = 10) -> dict[str, Any]:
    """The buffer report plus what only the running process knows (sink details, links)."""
    report = await buffer_report(bridge.buffer, search, dead_letters=dead_letters)
    sinks = {sink.name: sink for sink in bridge.sinks}
    for entry in report["sinks"]:
        sink = sinks.get(entry["sink"])
        entry["running"] = entry["sink"] in bridge.runners
        entry["details"] = _details(sink)
        for conversation in entry["conversations"]:
            conversation["record_url"] = _record_url(sink, conversation["record_id"])
    report["sources"] = [source.name for source in bridge.sources]
    report["started_at"] = bridge.started_at
    return report


def _details(sink: Any) -> dict[str, Any]:
    """A sink's optional describe(): live state such as its rate limit; never raises."""
    describe = getattr(sink, "describe", None)
    if describe is None:
        return {}
    try:
        return dict(describe())
    except Exception:
        logger.exception("describe() of sink %s failed", getattr(sink, "name", "?"))
        return {}


def _record_url(sink: Any, record_id: str | None) -> str | None:
    """A link to the CRM record, when the sink offers record_url(); never raises."""
    link = getattr(sink, "record_url", None)
    if link is None or not record_id:
        return None
    try:
        return link(record_id)
    except Exception:
        logger.exception("record_url() of sink %s failed", getattr(sink, "name", "?"))
        return None
