"""Prometheus metrics: one registry per bridge, generic families that plugins record into.

The core names no provider and no CRM: a source records under its own `source` label, a
sink under its `sink` label. Plugins get the bridge's `Metrics` from the PluginContext
(`context.metrics`) and may register their own families on `metrics.registry`.

Buffer-derived gauges (backlog, dead letters, backfill progress) are read from the buffer
when /metrics is scraped (`await metrics.refresh(buffer)`), so they are never stale and
never need a background task.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.contracts import OVERDUE_FILE

logger = logging.getLogger(__name__)

# Webhook outcomes a source reports (one per request).
WEBHOOK_OUTCOMES = (
    "stored",              # committed; at least one new message or status update
    "duplicate",           # committed nothing new: every message was already stored
    "ignored",             # acknowledged, nothing to store (unsubscribed field, other number)
    "unauthorized",        # missing or wrong signature
    "bad_request",         # not JSON, or not the provider's payload shape
    "unsupported_media_type",
    "too_large",           # body over the server's limit (413)
    "unavailable",         # the buffer could not commit (503: the provider retries)
    "handshake_verified",  # subscription handshake answered
    "handshake_refused",   # subscription handshake with a wrong token or mode
)
# Outcomes a sink reports per CRM API call.
CRM_OUTCOMES = ("ok", "rate_limited", "error_5xx", "rejected", "auth", "bad_answer", "timeout",
                "connection_error")
# What became of messages handed to a sink (per message, as recorded in the buffer).
DELIVERY_OUTCOMES = {"done": "delivered", "dead": "dead_letter", "skipped": "skipped",
                     "retry": "retry", "held": "held"}

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SYNC_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                600.0)
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CALL_LOG = 20_000  # CRM call start times kept per sink for the page's calls-per-window chart
BACKLOG_EVERY = 60.0  # seconds between backlog samples (the page's backlog-over-time chart)
BACKLOG_SAMPLES = 2 * 24 * 60  # 48 hours of them
SIGNED = ("stored", "duplicate", "ignored")  # outcomes of a webhook whose signature held
WRONG_SIGNATURES = 2  # signed-looking refusals in a row, none accepted since: a wrong secret
WRONG_SIGNATURE_WINDOW = 3600.0  # seconds after the last such refusal it is still reported
OTHER_OBJECT_WINDOW = 86400.0  # a webhook of an unhandled object is reported for a day


class Metrics:
    """The metric families of one bridge, in its own CollectorRegistry (never the global one).

    Several bridges (or tests) in one process each get their own, so nothing collides.
    `process=False` leaves out the process_*/python_* collectors (for throwaway instances).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[Any, ...], Any] = {}
        self._call_log: dict[tuple[str, str], deque[float]] = {}
        self._backlog: dict[str, deque[tuple[float, int]]] = {}
        # per source: [first refusal, last refusal, refusals, signed webhooks at the first]
        self._wrong_signatures: dict[str, list[float]] = {}
        self._signature_fix: dict[str, str] = {}
        # per (source, object): [count, last at]; and each source's fix
        self._other_objects: dict[tuple[str, str], list[float]] = {}
        self._other_fix: dict[str, str] = {}
        r = self.registry
        self.webhooks = Counter(
            "chatbridge_webhooks", "Webhook requests by source and outcome",
            ["source", "outcome"], registry=r)
        self.messages_stored = Counter(
            "chatbridge_messages_stored", "New messages committed to the buffer",
            ["source"], registry=r)
        self.messages_duplicate = Counter(
            "chatbridge_messages_duplicate", "Messages received again and stored once",
            ["source"], registry=r)
        self.items_ignored = Counter(
            "chatbridge_webhook_items_ignored",
            "Parts of acknowledged webhooks not stored, by reason (a change field the source "
            "does not store, a business number outside its allow-list)",
            ["source", "reason"], registry=r)
        self.statuses = Counter(
            "chatbridge_statuses", "Delivery status updates received (sent, read, failed ...)",
            ["source"], registry=r)
        self.status_kinds = Counter(
            "chatbridge_status_updates",
            "Delivery status updates received, by status and error code (failed sends carry "
            "Meta's code, e.g. 131047; others an empty code)",
            ["source", "status", "error_code"], registry=r)
        self.webhook_ack_seconds = Histogram(
            "chatbridge_webhook_ack_seconds",
            "Time from receiving a webhook to acknowledging it (after the commit)",
            ["source"], buckets=ACK_BUCKETS, registry=r)
        self.sync_runs = Counter(
            "chatbridge_sync_runs", "Drain runs per sink (error: the run raised)",
            ["sink", "outcome"], registry=r)
        self.sync_duration = Histogram(
            "chatbridge_sync_duration_seconds", "Duration of one drain run",
            ["sink"], buckets=SYNC_BUCKETS, registry=r)
        self.deliveries = Counter(
            "chatbridge_deliveries", "Message outcomes recorded per sink",
            ["sink", "outcome"], registry=r)
        self.crm_calls = Counter(
            "chatbridge_crm_calls", "HTTP calls a sink made to its CRM, retries included, by "
            "the rate budget they spend (ordinary, or e.g. bulk for a CRM that counts bulk "
            "calls apart)", ["sink", "endpoint", "outcome", "budget"], registry=r)
        self.crm_call_seconds = Histogram(
            "chatbridge_crm_call_seconds", "Duration of one CRM API call",
            ["sink", "endpoint"], buckets=CALL_BUCKETS, registry=r)
        self.buffer_state = BufferCollector()
        r.register(self.buffer_state)
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # -- recording (what sources, sinks and the core call) --------------------------------

    def webhook(self, source: str, outcome: str, *, seconds: float | None = None) -> None:
        """Count one webhook request; `seconds` (time to the 2xx) for acknowledged ones."""
        self._child(self.webhooks, source, outcome).inc()
        if seconds is not None:
            self._child(self.webhook_ack_seconds, source).observe(seconds)

    def wrong_signature(self, source: str, fix: str, now: float | None = None) -> None:
        """Note a webhook refused although it carried a signature of the right form (a
        scanner sends none): several in a row with none accepted since is a wrong secret,
        which the bridge's health reports with `fix` (see wrong_signatures)."""
        now = time.time() if now is None else now
        signed = self._signed(source)
        streak = self._wrong_signatures.get(source)
        if streak is None or streak[3] != signed:  # one was accepted since: a new streak
            streak = self._wrong_signatures[source] = [now, now, 0, signed]
        streak[1], streak[2] = now, streak[2] + 1
        self._signature_fix[source] = fix

    def wrong_signatures(self, now: float | None = None) -> list[dict[str, Any]]:
        """Sources whose recent signed webhooks were all refused: {source, count, since,
        last_at, fix}, for the health verdict."""
        now = time.time() if now is None else now
        return [{"source": source, "count": int(count), "since": first, "last_at": last,
                 "fix": self._signature_fix.get(source, "check its secret")}
                for source, (first, last, count, signed) in self._wrong_signatures.items()
                if count >= WRONG_SIGNATURES and now - last <= WRONG_SIGNATURE_WINDOW
                and self._signed(source) == signed]

    def other_object(self, source: str, name: str, fix: str,
                     now: float | None = None) -> float | None:
        """Note a signed webhook of an object the source does not handle (acknowledged,
        not stored): the bridge's health names it with `fix` (see other_objects). When the
        one before it came (None: the first)."""
        seen = self._other_objects.get((source, name))
        before = seen[1] if seen else None
        if seen is None:
            seen = self._other_objects[(source, name)] = [0, 0.0]
        seen[0] += 1
        seen[1] = time.time() if now is None else now
        self._other_fix[source] = fix
        return before

    def other_objects(self, now: float | None = None) -> list[dict[str, Any]]:
        """Objects acknowledged without storing in the last OTHER_OBJECT_WINDOW seconds:
        {source, object, count, last_at, fix}."""
        now = time.time() if now is None else now
        return [{"source": source, "object": name, "count": int(count), "last_at": last,
                 "fix": self._other_fix.get(source, "")}
                for (source, name), (count, last) in self._other_objects.items()
                if now - last <= OTHER_OBJECT_WINDOW]

    def _signed(self, source: str) -> float:
        """Webhooks of `source` whose signature held, since the start."""
        return sum(self._child(self.webhooks, source, outcome)._value.get()
                   for outcome in SIGNED)

    def declare_source(self, source: str) -> None:
        """Every webhook outcome of `source` at 0 from the start: a series that first
        appears at 1 reads as no increase, so an alert on increase() would miss the first
        burst of 503s (ChatbridgeBufferUnavailable)."""
        for outcome in WEBHOOK_OUTCOMES:
            self._child(self.webhooks, source, outcome)

    def stored(self, source: str, new: int, duplicate: int = 0, statuses: int = 0) -> None:
        """Count what one commit of a source held."""
        if new:
            self._child(self.messages_stored, source).inc(new)
        if duplicate:
            self._child(self.messages_duplicate, source).inc(duplicate)
        if statuses:
            self._child(self.statuses, source).inc(statuses)

    def status(self, source: str, status: str, error_code: str = "") -> None:
        """Count one status update by its kind and (for failures) Meta's error code."""
        self._child(self.status_kinds, source, status, error_code).inc()

    def ignored(self, source: str, reason: str, n: int = 1) -> None:
        """Count parts of a webhook that were acknowledged but deliberately not stored."""
        if n:
            self._child(self.items_ignored, source, reason).inc(n)

    def _child(self, family: Any, *labels: str) -> Any:
        """`family.labels(*labels)`, remembered: labels() validates and locks on every call,
        and a webhook records four to six samples."""
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def sync_run(self, sink: str, outcome: str, seconds: float) -> None:
        """Count one drain run ("ok" or "error") and its duration."""
        self.sync_runs.labels(sink, outcome).inc()
        self.sync_duration.labels(sink).observe(seconds)

    def delivered(self, sink: str, counts: dict[str, int]) -> None:
        """Count the per-message outcomes the buffer recorded for one batch."""
        for state, n in counts.items():
            if n:
                self.deliveries.labels(sink, DELIVERY_OUTCOMES.get(state, state)).inc(n)

    def crm_call(self, sink: str, endpoint: str, outcome: str,
                 seconds: float | None = None, budget: str = "ordinary") -> None:
        """Count one CRM API call by endpoint (e.g. the URL path's last segment), outcome
        and the rate budget it spent ("ordinary", or e.g. "bulk")."""
        self.crm_calls.labels(sink, endpoint, outcome, budget).inc()
        log = self._call_log.setdefault((sink, budget), deque(maxlen=CALL_LOG))
        log.append(time.time() - (seconds or 0.0))  # when it started, as a rate limit counts
        if seconds is not None:
            self.crm_call_seconds.labels(sink, endpoint).observe(seconds)

    def calls_per_window(self, sink: str, per: float, windows: int,
                         now: float | None = None, budget: str = "ordinary") -> list[int]:
        """CRM calls of one budget the sink started in each of the last `windows` windows
        of `per` seconds (oldest first; the last window ends at `now`). In memory: restarts
        begin at zero."""
        end = time.time() if now is None else now
        counts = [0] * windows
        for started in self._call_log.get((sink, budget), ()):
            slot = windows - 1 - int((end - started) // per)
            if 0 <= slot < windows:
                counts[slot] += 1
        return counts

    def sample_backlog(self, sinks: list[dict[str, Any]], now: float | None = None) -> None:
        """Keep each sink's waiting backlog (Buffer.sinks()' backlog less its held chats),
        at most once per BACKLOG_EVERY."""
        at = time.time() if now is None else now
        for state in sinks:
            samples = self._backlog.setdefault(state["sink"], deque(maxlen=BACKLOG_SAMPLES))
            if not samples or at - samples[-1][0] >= BACKLOG_EVERY:
                samples.append((at, int(state.get("backlog", 0)) - int(state.get("held", 0))))

    def backlog_growth(self, sink: str, window: float,
                       now: float | None = None) -> tuple[int, int] | None:
        """(largest waiting backlog in the window before, the latest) when every sample of
        the last `window` seconds is above every sample of the window before it (two
        samples each at least); else None. In memory: a restart judges afresh."""
        end = time.time() if now is None else now
        recent = [n for at, n in self._backlog.get(sink, ()) if end - window < at <= end]
        before = [n for at, n in self._backlog.get(sink, ())
                  if end - 2 * window < at <= end - window]
        if len(recent) < 2 or len(before) < 2 or min(recent) <= max(before):
            return None
        return max(before), recent[-1]

    def backlog_due(self, now: float | None = None) -> bool:
        """True when no sink has a backlog sample from the last BACKLOG_EVERY seconds."""
        at = time.time() if now is None else now
        latest = max((s[-1][0] for s in self._backlog.values() if s), default=None)
        return latest is None or at - latest >= BACKLOG_EVERY

    def backlog_per_hour(self, sink: str, first_hour: int, hours: int) -> list[int | None]:
        """The largest backlog sampled in each hour (unix hour numbers); None: no sample.
        In memory: a restart starts the series again."""
        peaks: list[int | None] = [None] * hours
        for at, backlog in self._backlog.get(sink, ()):
            slot = int(at // 3600) - first_hour
            if 0 <= slot < hours:
                peaks[slot] = max(peaks[slot] or 0, backlog)
        return peaks

    # -- exposition ----------------------------------------------------------------------

    async def refresh(self, buffer: Any, sinks: list[dict[str, Any]] | None = None) -> None:
        """Read the buffer-derived gauges now (`sinks`: Buffer.sinks() already read); on
        failure they are left out of this scrape."""
        if buffer is None:
            self.buffer_state.update([], None)
            return
        try:
            sinks = await buffer.sinks() if sinks is None else sinks
        except Exception as exc:
            logger.warning("metrics: could not read the buffer: %s", exc)
            self.buffer_state.update([], None)
            return
        try:
            media = await buffer.media_counts()
        except Exception as exc:
            logger.warning("metrics: could not read media jobs: %s", exc)
            media = {}
        sinks = [dict(s) for s in sinks]
        for state in sinks:
            try:  # the status page's count (bridge.attention): waits past OVERDUE_FILE
                state["overdue_files"], _ = await buffer.overdue_files(
                    state["sink"], time.time() - OVERDUE_FILE, 0)
            except Exception as exc:
                logger.warning("metrics: could not read overdue attachments: %s", exc)
        self.buffer_state.update(sinks, dict(buffer.stats), media)
        self.sample_backlog(sinks)

    async def render(self, buffer: Any,
                     sinks: list[dict[str, Any]] | None = None) -> tuple[bytes, str]:
        """(exposition body, Content-Type) after refreshing the buffer gauges."""
        await self.refresh(buffer, sinks)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


MEDIA_STATES = ("pending", "fetched", "dead", "held")
HEALTH_CODES = {"healthy": 0, "behind": 1, "failing": 2, "stopped": 3}  # bridge.health.STATES


class BufferCollector:
    """Gauges per sink from the last buffer read (see Metrics.refresh)."""

    def __init__(self) -> None:
        self._sinks: list[dict[str, Any]] = []
        self._stats: dict[str, int] | None = None
        # (sink, budget) -> (calls, per seconds); budget "ordinary", or e.g. "bulk" for a
        # CRM that counts bulk calls apart
        self.budgets: dict[tuple[str, str], tuple[int, float]] = {}
        self._media: dict[str, dict[str, Any]] = {}
        self.cluster: dict[str, Any] | None = None  # bridge.cluster's report, set per scrape

    def update(self, sinks: list[dict[str, Any]], stats: dict[str, int] | None,
               media: dict[str, dict[str, Any]] | None = None) -> None:
        self._sinks, self._stats, self._media = list(sinks), stats, dict(media or {})

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        families = {
            "backlog": GaugeMetricFamily(
                "chatbridge_backlog", "Messages waiting for the sink (held ones included)",
                labels=["sink"]),
            "held": GaugeMetricFamily(
                "chatbridge_held", "Messages waiting on something outside the bridge "
                "(e.g. no CRM record for the number)", labels=["sink"]),
            "dead_letters": GaugeMetricFamily(
                "chatbridge_dead_letters", "Messages in dead letter", labels=["sink"]),
            "messages_done": GaugeMetricFamily(
                "chatbridge_backfill_messages_done", "Backfill messages settled",
                labels=["sink"]),
            "messages_total": GaugeMetricFamily(
                "chatbridge_backfill_messages_total", "Backfill messages queued",
                labels=["sink"]),
            "last_sync": GaugeMetricFamily(
                "chatbridge_last_sync_timestamp_seconds", "Unix time of the sink's last drain",
                labels=["sink"]),
            "enabled": GaugeMetricFamily(
                "chatbridge_sink_enabled", "1 if the config enables the sink", labels=["sink"]),
            "overdue": GaugeMetricFamily(
                "chatbridge_overdue_attachments", "Attachments waiting for their file longer "
                "than they should (15 minutes, or at all once the file is stored)",
                labels=["sink"]),
            "health": GaugeMetricFamily(
                "chatbridge_sink_health", "The sink's health verdict: 0 healthy, 1 behind, "
                "2 failing, 3 stopped (README: Health)", labels=["sink"]),
        }
        for state in self._sinks:
            name = [state["sink"]]
            families["backlog"].add_metric(name, state.get("backlog", 0))
            families["held"].add_metric(name, state.get("held", 0))
            families["dead_letters"].add_metric(name, state.get("dead_letters", 0))
            progress = state.get("backfill") or {}
            families["messages_done"].add_metric(name, progress.get("messages_done", 0))
            families["messages_total"].add_metric(name, progress.get("messages_total", 0))
            if state.get("last_sync_at") is not None:
                families["last_sync"].add_metric(name, state["last_sync_at"].timestamp())
            families["enabled"].add_metric(name, 1 if state.get("enabled") else 0)
            if "overdue_files" in state:
                families["overdue"].add_metric(name, state["overdue_files"])
            if state.get("health"):
                families["health"].add_metric(name, HEALTH_CODES[state["health"]["state"]])
        yield from families.values()
        limit = GaugeMetricFamily(
            "chatbridge_crm_rate_limit_calls",
            "Calls the sink's CRM allows per rate-limit window, per budget (ordinary, bulk)",
            labels=["sink", "budget"])
        window = GaugeMetricFamily(
            "chatbridge_crm_rate_limit_window_seconds",
            "Length of the sink's CRM rate-limit window, per budget", labels=["sink", "budget"])
        for (sink, budget), (calls, per) in sorted(self.budgets.items()):
            limit.add_metric([sink, budget], calls)
            window.add_metric([sink, budget], per)
        yield limit
        yield window
        yield from self._media_families()
        yield from self._cluster_families()
        if self._stats is not None:
            yield CounterMetricFamily("chatbridge_buffer_commits", "Buffer write commits",
                                      value=self._stats.get("commits", 0))
            yield CounterMetricFamily(
                "chatbridge_buffer_grouped_appends",
                "Appends that shared a commit with another (group commit)",
                value=self._stats.get("grouped_appends", 0))

    def _cluster_families(self) -> Iterator[Metric]:
        if self.cluster is None:
            return
        processes = self.cluster["processes"]
        yield GaugeMetricFamily(
            "chatbridge_cluster_processes", "Bridge processes alive on this buffer (their "
            "heartbeat is recent); 1 on an SQLite buffer",
            value=sum(1 for p in processes if p["alive"]))
        drainer = GaugeMetricFamily(
            "chatbridge_cluster_drainer", "1 for the process that delivered to the sink last "
            "(alive ones first)", labels=["sink", "hostname", "pid", "process"])
        last = GaugeMetricFamily(
            "chatbridge_cluster_last_drain_timestamp_seconds",
            "Unix time of the sink's last delivery by that process", labels=["sink", "process"])
        for sink, who in sorted(self.cluster["drains"].items()):
            drainer.add_metric([sink, who["hostname"], str(who["pid"]), who["process"]],
                               1 if who["alive"] else 0)
        for process in processes:
            for sink, at in sorted(process["drained"].items()):
                last.add_metric([sink, process["id"]], at)
        yield drainer
        yield last

    def _media_families(self) -> Iterator[Metric]:
        files = GaugeMetricFamily(
            "chatbridge_media_files", "Media files per source by fetch state (pending, "
            "fetched, dead: failed for good, held: the source will not fetch)",
            labels=["source", "state"])
        stored = GaugeMetricFamily("chatbridge_media_bytes",
                                   "Bytes of fetched media stored (each file once)",
                                   labels=["source"])
        for source, counts in sorted(self._media.items()):
            for state in MEDIA_STATES:
                files.add_metric([source, state], counts.get(state, 0))
            stored.add_metric([source], counts.get("bytes", 0))
        yield files
        yield stored
