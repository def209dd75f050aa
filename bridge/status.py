"""The status report shared by `bridge status`, GET /status and the status page."""

from __future__ import annotations

import logging
import time
from typing import Any

from bridge.attention import OVERDUE_FILE
from bridge.buffer import StatusReads
from bridge.buffer.enrich import first_error
from bridge.cluster import cluster_report
from bridge.health import ago, growth_window, overall, verdict
from bridge.sync import start_note

logger = logging.getLogger(__name__)


async def buffer_report(buffer: StatusReads, search: str | None = None, limit: int = 50,
                        dead_letters: int = 10) -> dict[str, Any]:
    """Per sink: state, backlog, dead letters, what its health verdict reads; per
    conversation: last synced, per sink. One snapshot: the figures agree with each other
    (read one by one, a completion committing between two reads showed a number synced
    with its window still open, or a sink's backlog without the retries it counts)."""
    return await buffer.snapshot(lambda view: _buffer_report(view, search, limit, dead_letters))


async def _buffer_report(buffer: StatusReads, search: str | None, limit: int,
                         dead_letters: int) -> dict[str, Any]:
    sinks = await sink_rows(buffer)
    report: dict[str, Any] = {"sinks": [], "messages": await buffer.count_messages(),
                              "media": await buffer.media_counts()}
    report.update(await people_report(buffer, sinks, dead_letters))
    for sink in sinks:
        sink["overdue_files"], _ = await buffer.overdue_files(
            sink["sink"], time.time() - OVERDUE_FILE, 0)
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
    report["cluster"] = await cluster_report(bridge)
    await add_health(bridge, report["sinks"], report["cluster"])
    for entry in report["sinks"]:
        sink = sinks.get(entry["sink"])
        entry["details"] = sink_details(sink)
        for conversation in entry["conversations"]:
            conversation["record_url"] = record_link(sink, conversation["record_id"])
    report["health"] = bridge_health(bridge, report["sinks"])
    report["sources"] = [source.name for source in bridge.sources]
    report["source_syncs"] = await bridge.buffer.source_syncs()  # e.g. coexistence history
    report["started_at"] = bridge.started_at
    return report


async def sink_rows(buffer: StatusReads) -> list[dict[str, Any]]:
    """Every sink's row (sinks()) with what its health verdict reads (sync_health()):
    call it in a snapshot (buffer.snapshot(sink_rows)) so the two agree."""
    sinks = await buffer.sinks()
    for sink in sinks:
        sink.update(await buffer.sync_health(sink["sink"]))
    return sinks


def bridge_health(bridge: Any, sinks: list[dict[str, Any]]) -> dict[str, str]:
    """The running bridge's verdict: its sinks' (health.overall), and failing while a
    source refuses every signed webhook (a wrong app secret: nothing is stored, so no sink
    can tell, and a page saying healthy would hide that nothing reaches the CRM)."""
    health = with_other_objects(overall(sinks, running=True), bridge.metrics.other_objects())
    refused = bridge.metrics.wrong_signatures()
    if not refused:
        return health
    said = "; ".join(
        f"{r['source']}: {r['count']} webhooks refused for a wrong signature in "
        f"{ago(max(0.0, time.time() - r['since']))}, none accepted since ({r['fix']})"
        for r in refused)
    if health["state"] in ("healthy", "behind"):
        return {"state": "failing", "reason": said, "sources": "failing"}
    return {"state": health["state"], "reason": f"{said}; {health['reason']}",
            "sources": "failing"}


def with_other_objects(health: dict[str, str], seen: list[dict[str, Any]]) -> dict[str, str]:
    """The verdict with a note of webhooks acknowledged but not stored because they were
    of another Meta object: nothing is lost (they were never WhatsApp's), so the state
    stays; the note says where the app's subscriptions should change."""
    if not seen:
        return health
    now = time.time()
    said = "; ".join(f"{s['source']}: {s['count']} webhook(s) of object {s['object']!r} "
                     f"acknowledged and not stored, the last {ago(max(0.0, now - s['last_at']))}"
                     f" ago ({s['fix']})" for s in seen)
    return {**health, "reason": f"{health['reason']}; {said}", "other_objects": said}


async def add_health(bridge: Any, sinks: list[dict[str, Any]], cluster: dict[str, Any],
                     now: float | None = None) -> None:
    """Each sink's `health` (bridge.health), `running` and `simulated`, as this running
    process and the cluster's registry see them (`sinks`: rows of sink_rows)."""
    now = time.time() if now is None else now
    alive = {name for p in cluster["processes"] if p["alive"] for name in p["sinks"]}
    objects = {sink.name: sink for sink in bridge.sinks}
    for entry in sinks:
        name, sink = entry["sink"], objects.get(entry["sink"])
        entry["running"] = name in bridge.runners or name in alive
        interval = sink.settings.sync_interval if sink is not None else None
        growth = bridge.metrics.backlog_growth(name, growth_window(interval), now) \
            if interval else None
        entry["health"] = verdict(entry, running=entry["running"], now=now, interval=interval,
                                  started_at=bridge.started_at, growth=growth,
                                  starting=_starting(bridge.runners.get(name)))
        entry["simulated"] = simulated(sink)


def _starting(runner: Any) -> tuple[float, str | None] | None:
    """(since, note) of a start() under way in this process, else None."""
    since = getattr(runner, "starting_since", None)
    if since is None:
        return None
    return since, start_note(runner.sink)


def offline_health(sinks: list[dict[str, Any]], why: str, alive: set[str],
                   intervals: dict[str, float]) -> None:
    """Each sink's health judged from the buffer alone (`sinks`: rows of sink_rows), when
    no bridge answered: stopped, unless a live process in a shared buffer's registry runs
    it (judged from the buffer then, with the config's interval)."""
    now = time.time()
    for entry in sinks:
        entry["running"] = entry["sink"] in alive
        entry["health"] = verdict(entry, running=entry["running"], now=now,
                                  interval=intervals.get(entry["sink"]), why_stopped=why)


def simulated(sink: Any) -> str | None:
    """The real service a sink stands in for (its optional `simulated`), or None."""
    value = getattr(sink, "simulated", None)
    return str(value) if value else None


async def people_report(buffer: StatusReads, sinks: list[dict[str, Any]],
                        limit: int) -> dict[str, Any]:
    """Group chats and failed sends (counts, the latest failures with Meta's error); per
    sink, the chats it holds counted by reason (added to `sinks`)."""
    for sink in sinks:
        sink["held_chats"] = await buffer.held_chats(sink["sink"])
        sink["numbers"] = await buffer.numbers(sink["sink"])
    report = await buffer.people_counts()
    report["failed_send_sample"] = [
        {**row, **first_error(row.pop("errors"))}
        for row in await buffer.failed_sends(limit)]
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


async def page_data(buffer: StatusReads, sink: str | None = None, *, search: str | None = None,
                    sort: str = "last_message", show: str = "all", page: int = 1,
                    per_page: int = PER_PAGE) -> dict[str, Any]:
    """What the status page shows: every sink's figures (with what their health verdicts
    read) and one sink's conversation page, in one snapshot."""
    return await buffer.snapshot(lambda view: _page_data(view, sink, search, sort, show,
                                                         page, per_page))


async def _page_data(buffer: StatusReads, sink: str | None, search: str | None, sort: str,
                     show: str, page: int, per_page: int) -> dict[str, Any]:
    sinks = await sink_rows(buffer)
    names = [s["sink"] for s in sinks]
    chosen = sink if sink in names else (names[0] if names else None)
    listing = await buffer.conversation_list(chosen, search=search, sort=sort, show=show,
                                             offset=(page - 1) * per_page, limit=per_page)
    people = await people_report(buffer, sinks, 10)
    return {**people, "sinks": sinks, "sink": chosen,
            "messages": await buffer.count_messages(), "media": await buffer.media_counts(),
            "conversations": listing["rows"], "total": listing["total"],
            "page": page, "per_page": per_page}


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
