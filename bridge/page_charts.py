"""The status page's charts and their text equivalents, from the buffer and live metrics."""

from __future__ import annotations

import logging
import time
from datetime import tzinfo
from typing import Any

from bridge.charts import Series, bars, hbars, hour_labels
from bridge.health import ago

logger = logging.getLogger(__name__)

HOURS = 48
CALL_WINDOWS = 60  # rate-limit windows shown (60 x 5 s = the last 5 minutes)


async def charts(bridge: Any, sinks: list[dict[str, Any]], tz: tzinfo | None,
                 now: float | None = None) -> list[dict[str, Any]]:
    """Each chart: id, heading, svg, and a table (caption, columns, rows) of its figures."""
    now = time.time() if now is None else now
    bridge.metrics.sample_backlog(sinks, now)
    found = [await traffic(bridge.buffer, tz, now), backlog(sinks, now),
             backlog_history(bridge.metrics, [s["sink"] for s in sinks], tz, now)]
    for sink in bridge.sinks:
        found += calls(bridge.metrics, sink, now)
    return found


async def traffic(buffer: Any, tz: tzinfo | None, now: float) -> dict[str, Any]:
    """Messages in and out per hour over the last 48 hours."""
    last = int(now // 3600)
    first = last - HOURS + 1
    counts = await buffer.hourly(first * 3600.0)
    inbound = [counts.get((first + i, "in"), 0) for i in range(HOURS)]
    outbound = [counts.get((first + i, "out"), 0) for i in range(HOURS)]
    labels = hour_labels(first, HOURS, tz)
    svg = bars("chart-traffic", "Messages in and out per hour, last 48 hours",
               f"{sum(inbound)} in and {sum(outbound)} out in 48 hours; busiest hour "
               f"{max(inbound + outbound)} messages. In: solid bars, out: hatched bars.",
               labels, [Series("in", inbound, "solid"), Series("out", outbound, "hatch")],
               tick_every=6)
    rows = [(labels[i], inbound[i], outbound[i]) for i in range(HOURS)
            if inbound[i] or outbound[i]]
    return {"id": "chart-traffic", "heading": "Messages per hour (48 h)", "svg": svg,
            "timeline": True,
            "table": {"caption": "Messages per hour (hours with none left out)",
                      "columns": ("Hour", "In", "Out"), "rows": rows}}


def backlog(sinks: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Per sink: messages waiting (held apart) and time since the last sync."""
    rows, table = [], []
    for s in sinks:
        since = now - s["last_sync_at"].timestamp() if s["last_sync_at"] else None
        waiting = s["backlog"] - s["held"]
        rows.append((f"{s['sink']} waiting", waiting, f"{waiting} waiting", "solid"))
        rows.append((f"{s['sink']} held", s["held"], f"{s['held']} held", "hatch"))
        rows.append((f"{s['sink']} dead", s["dead_letters"], f"{s['dead_letters']} dead",
                     "dots"))
        table.append((s["sink"], waiting, s["held"], s["dead_letters"], ago(since)))
    desc = "; ".join(f"{r[0]}: {r[1]} waiting, {r[2]} held, {r[3]} dead letters, last sync "
                     f"{r[4]} ago" for r in table) or "no sink installed"
    svg = hbars("chart-backlog", "Backlog per sink", desc + ". Waiting: solid, held: "
                "hatched, dead letters: dotted.", rows)
    return {"id": "chart-backlog", "heading": "Backlog and last sync per sink", "svg": svg,
            "timeline": False,
            "table": {"caption": "Backlog per sink",
                      "columns": ("Sink", "Waiting", "Held", "Dead letters", "Since last sync"),
                      "rows": table}}


def rate_budget(sink: Any, method: str = "rate_budget") -> tuple[int, float] | None:
    """The sink's optional rate_budget() (or bulk_rate_budget()): (calls, per seconds), or
    None; never raises."""
    budget = getattr(sink, method, None)
    if budget is None:
        return None
    try:
        calls, per = budget()
        return int(calls), float(per)
    except Exception:
        logger.exception("%s() of sink %s failed", method, getattr(sink, "name", "?"))
        return None


def rate_budgets(sinks: Any) -> dict[tuple[str, str], tuple[int, float]]:
    """(sink name, "ordinary" or "bulk") -> its rate budget, for the sinks that state one."""
    found = {(sink.name, kind): rate_budget(sink, method) for sink in sinks
             for kind, method in (("ordinary", "rate_budget"), ("bulk", "bulk_rate_budget"))}
    return {key: budget for key, budget in found.items() if budget is not None}


def backlog_history(metrics: Any, names: list[str], tz: tzinfo | None,
                    now: float) -> dict[str, Any]:
    """The largest waiting backlog (held chats apart) per hour and sink over the last 48
    hours (sampled in memory)."""
    last = int(now // 3600)
    first = last - HOURS + 1
    labels = hour_labels(first, HOURS, tz)
    fills = ("solid", "hatch", "dots")
    peaks = {name: metrics.backlog_per_hour(name, first, HOURS) for name in names}
    series = [Series(f"{name} ({fills[i % 3]})", [p or 0 for p in peaks[name]], fills[i % 3])
              for i, name in enumerate(names)]
    trend = "; ".join(_trend(name, peaks[name]) for name in names) or "no sink installed"
    svg = bars("chart-backlog-history", "Waiting backlog per hour and sink, last 48 hours",
               f"The largest waiting backlog (held chats apart) sampled each hour (once a "
               f"minute while the bridge runs). "
               f"{trend}.", labels, series, tick_every=6)
    rows = [(labels[i], *(("–" if peaks[n][i] is None else peaks[n][i]) for n in names))
            for i in range(HOURS) if any(peaks[n][i] is not None for n in names)]
    return {"id": "chart-backlog-history", "heading": "Is the waiting backlog growing? (48 h)",
            "svg": svg, "timeline": True,
            "table": {"caption": "Largest waiting backlog per hour (– : no sample)",
                      "columns": ("Hour", *names), "rows": rows}}


def _trend(name: str, peaks: list[int | None]) -> str:
    seen = [p for p in peaks if p is not None]
    if len(seen) < 2:
        return f"{name}: backlog {seen[-1]} (one hour sampled)" if seen else \
            f"{name}: no sample yet"
    change = "growing" if seen[-1] > seen[0] else "shrinking" if seen[-1] < seen[0] else "flat"
    return f"{name}: {seen[0]} then {seen[-1]} now ({change})"


BUDGETS = (("ordinary", "rate_budget", "CRM calls"),
           ("bulk", "bulk_rate_budget", "bulk calls"))


def calls(metrics: Any, sink: Any, now: float) -> list[dict[str, Any]]:
    """One chart per rate budget the sink states (ordinary calls; bulk calls, which a CRM
    may count apart): its calls per window, each against its own limit."""
    found = []
    for budget, method, what in BUDGETS:
        stated = rate_budget(sink, method)
        if stated is not None:
            found.append(_calls(metrics, sink.name, budget, what, stated, now))
    return found


def _calls(metrics: Any, name: str, budget: str, what: str, stated: tuple[int, float],
           now: float) -> dict[str, Any]:
    limit, per = stated
    counts = metrics.calls_per_window(name, per, CALL_WINDOWS, now, budget)
    span = ago(per * CALL_WINDOWS)
    labels = [f"-{ago(per * (CALL_WINDOWS - i))}" for i in range(CALL_WINDOWS)]
    full = sum(1 for c in counts if c >= limit)
    chart_id = f"chart-calls-{name}-{budget}"
    svg = bars(chart_id, f"{name}: {what} per {per:g} s window, last {span}",
               f"Peak {max(counts)} {what} in a window against their limit of {limit}; "
               f"{full} of {CALL_WINDOWS} windows at the limit; {sum(counts)} in all.",
               labels, [Series(what, counts, "solid")], tick_every=12,
               limit=limit, limit_label=f"limit {limit} per {per:g} s (dashed)")
    return {"id": chart_id, "heading": f"{name}: {what} against their own limit",
            "svg": svg, "timeline": True, "table": {
                "caption": f"{what[:1].upper()}{what[1:]} per {per:g} s window (last {span})",
                "columns": ("Limit per window", "Peak", "Windows at the limit", "Calls"),
                "rows": [(limit, max(counts), full, sum(counts))]}}
