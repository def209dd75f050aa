"""The status report shared by `bridge status`, GET /status and the status page."""

from __future__ import annotations

import logging
from typing import Any

from bridge.buffer import Buffer, reads
from bridge.buffer.enrich import first_error
from bridge.cluster import cluster_report

logger = logging.getLogger(__name__)


async def buffer_report(buffer: Buffer, search: str | None = None, limit: int = 50,
                        dead_letters: int = 10) -> dict[str, Any]:
    """Per sink: state, backlog, dead letters; per conversation: last synced, per sink."""
    sinks = await buffer.sinks()
    report: dict[str, Any] = {"sinks": [], "messages": await buffer.count_messages(),
                              "media": await buffer.media_counts()}
    report.update(await people_report(buffer, sinks, dead_letters))
    for sink in sinks:
        sink["conversations"] = await buffer.conversations(sink["sink"], search, limit)
        sink["dead_letter_sample"] = await buffer.dead_letters(sink["sink"], limit=dead_letters)
        sink["dead_target_sample"] = await buffer.dead_targets(sink["sink"], limit=dead_letters)
        sink["directory"] = await buffer.directory(sink["sink"]).state()
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
        entry["details"] = sink_details(sink)
        for conversation in entry["conversations"]:
            conversation["record_url"] = record_link(sink, conversation["record_id"])
    report["sources"] = [source.name for source in bridge.sources]
    report["started_at"] = bridge.started_at
    report["cluster"] = await cluster_report(bridge)
    return report


async def people_report(buffer: Buffer, sinks: list[dict[str, Any]],
                        limit: int) -> dict[str, Any]:
    """Group chats and failed sends (counts, the latest failures with Meta's error); per
    sink, the chats it holds counted by reason (added to `sinks`)."""
    for sink in sinks:
        sink["held_chats"] = await reads.held_chats(buffer.query, sink["sink"])
    report = await reads.people_counts(buffer.query)
    report["failed_send_sample"] = [
        {**row, **first_error(row.pop("errors"))}
        for row in await reads.failed_sends(buffer.query, limit)]
    return report


def sink_details(sink: Any) -> dict[str, Any]:
    """A sink's optional describe(): live state such as its rate limit; never raises."""
    describe = getattr(sink, "describe", None)
    if describe is None:
        return {}
    try:
        return dict(describe())
    except Exception:
        logger.exception("describe() of sink %s failed", getattr(sink, "name", "?"))
        return {}


def record_link(sink: Any, record_id: str | None) -> str | None:
    """A link to the CRM record, when the sink offers record_url(); never raises."""
    return _link(sink, "record_url", record_id)


PER_PAGE = 50


async def page_data(buffer: Buffer, sink: str | None = None, *, search: str | None = None,
                    sort: str = "last_message", show: str = "all", page: int = 1,
                    per_page: int = PER_PAGE, dead_letters: int = 50) -> dict[str, Any]:
    """What the status page shows: every sink's figures and one sink's conversation page."""
    sinks = await buffer.sinks()
    names = [s["sink"] for s in sinks]
    chosen = sink if sink in names else (names[0] if names else None)
    listing = await buffer.conversation_list(chosen, search=search, sort=sort, show=show,
                                             offset=(page - 1) * per_page, limit=per_page)
    people = await people_report(buffer, sinks, 10)
    return {**people, "sinks": sinks, "sink": chosen,
            "messages": await buffer.count_messages(), "media": await buffer.media_counts(),
            "conversations": listing["rows"], "total": listing["total"],
            "page": page, "per_page": per_page,
            "dead_letter_sample": await buffer.dead_letters(chosen, limit=dead_letters)
            if chosen else [],
            "dead_target_sample": await buffer.dead_targets(chosen, limit=dead_letters)
            if chosen else []}


async def conversation_report(bridge: Any, key: str) -> dict[str, Any] | None:
    """One conversation for its page, with each sink's record and activity links."""
    found = await bridge.buffer.conversation(key)
    if found is None:
        return None
    sinks = {sink.name: sink for sink in bridge.sinks}
    for mapping in found["sinks"]:
        mapping["record_url"] = record_link(sinks.get(mapping["sink"]), mapping["record_id"])
    for entry in found["messages"]:
        for fate in entry["deliveries"]:
            for activity in fate["activities"]:
                activity["url"] = _link(sinks.get(fate["sink"]), "activity_url",
                                        activity["external_id"])
    return found


def _link(sink: Any, method: str, value: str | None) -> str | None:
    """An optional sink link method's answer; None when absent, empty or failing."""
    make = getattr(sink, method, None)
    if make is None or not value:
        return None
    try:
        return make(value)
    except Exception:
        logger.exception("%s() of sink %s failed", method, getattr(sink, "name", "?"))
        return None
