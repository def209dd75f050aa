"""The health verdict of a sink: healthy, behind, failing or stopped, and why, in words.

The rule (the first that holds wins; README "Health" says the same):

- **stopped**: no bridge process drains the sink: the bridge is not running, or the sink
  is no longer in its config (its history is kept; `bridge status` leaves such a sink out
  of its exit code).
- **failing**: the sink's last sync ended in an error (the drain itself failed, e.g. the
  CRM refused the keys or cannot be reached), or batches wait to be retried after an
  error and the sink has delivered nothing since the oldest of them was first tried, at
  least two sync intervals ago (the CRM answers every post with an error; a lone blip
  retried on the next sync is not an outage), or it gave up on the messages of two or more
  chats (dead letters) and has delivered nothing since the first of them. One message
  that keeps failing while others get through is not "failing": it shows under "Needs
  attention" when it gives up.
- **behind**: the last sync is older than two sync intervals (at least LATE_FLOOR), or
  stamped more than that in the future (a clock set back: its age cannot be told), or
  there has been no sync that long after the start; or the waiting backlog (held chats
  apart) is growing: every sample of the last window is above every sample of the window
  before it (a window is two sync intervals, at least GROWTH_FLOOR), so even the syncs do
  not bring it back down.
- **healthy**: none of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

STATES = ("healthy", "behind", "failing", "stopped")  # also the /metrics gauge's codes 0..3
LATE_FLOOR = 60.0  # seconds: a sync is never "late" sooner (a slow CRM call takes a while)
GROWTH_FLOOR = 300.0  # seconds: the shortest window the backlog's growth is judged over
# dead letters of this many chats with no delivery since: the CRM refuses everything (a
# revoked key past max_attempts, a broken activity type), not one chat's bad message
GIVEN_UP_CHATS = 2


def late_after(interval: float) -> float:
    """Seconds after the last sync when a sink counts as behind."""
    return max(2 * interval, LATE_FLOOR)


def growth_window(interval: float) -> float:
    """The window over which a growing backlog is judged."""
    return max(2 * interval, GROWTH_FLOOR)


def verdict(sink: Mapping[str, Any], *, running: bool, now: float,
            interval: float | None = None, started_at: float | None = None,
            growth: tuple[int, int] | None = None, why_stopped: str | None = None,
            starting: tuple[float, str | None] | None = None) -> dict[str, Any]:
    """{state, reason, last_sync_age_s} of one sink.

    `sink` is a row of Buffer.sinks() plus Buffer.sync_health(); `running`: some process
    drains it now; `interval`: its sync interval (needed when running); `started_at`: when
    the drain began (the process start); `growth`: (waiting before, waiting now) when the
    backlog is growing; `why_stopped`: what to say when it is not running; `starting`:
    (when its start() began, what it waits for in the sink's words) while one runs.
    """
    last = _epoch(sink.get("last_sync_at"))
    age = None if last is None else round(max(0.0, now - last), 1)
    state, reason = _judge(sink, running, now, age, interval, started_at, growth, why_stopped,
                           starting)
    return {"state": state, "reason": reason, "last_sync_age_s": age}


def _judge(sink: Mapping[str, Any], running: bool, now: float, age: float | None,
           interval: float | None, started_at: float | None,
           growth: tuple[int, int] | None, why_stopped: str | None,
           starting: tuple[float, str | None] | None = None) -> tuple[str, str]:
    if not sink.get("enabled", True):
        return "stopped", "not in the config (disabled); its history is kept"
    if not running:
        return "stopped", why_stopped or "no bridge process is running it"
    failing = _failing(sink, now, 2 * (interval or 0.0))
    if failing:
        return "failing", failing
    if starting is not None:
        return _starting(now, *starting)
    late = late_after(interval or 0.0)
    ahead = (_epoch(sink.get("last_sync_at")) or now) - now
    if ahead > late:  # within `late`: another process's clock a little ahead is fine
        return "behind", (f"the last sync is stamped {ago(ahead)} in the future: this "
                          "machine's clock was set back (or the process that synced runs "
                          "ahead); it cannot tell when the sink last synced")
    if age is None:
        waited = now - started_at if started_at else 0.0
        if waited > late:
            return "behind", f"no sync yet, {ago(waited)} after the start"
        return "healthy", "starting: the first sync is under way"
    if age > late:
        return "behind", (f"last sync {ago(age)} ago (it runs every {ago(interval or 0)})")
    if growth is not None:
        before, current = growth
        return "behind", (f"the backlog is growing: {current:,} waiting, up from {before:,} "
                          f"{ago(growth_window(interval or 0))} ago")
    return "healthy", "synced just now" if age < 1 else f"synced {ago(age)} ago"


def _starting(now: float, since: float, note: str | None) -> tuple[str, str]:
    """A start() under way: failing when the sink says what keeps failing (a CRM host
    that does not answer), behind once it has taken LATE_FLOOR, else healthy."""
    took = max(0.0, now - since)
    if note:
        return "failing", f"starting for {ago(took)}: {note}"
    if took > LATE_FLOOR:
        return "behind", f"starting: the sink's start has been under way for {ago(took)}"
    return "healthy", "starting: the first sync is under way"


def _failing(sink: Mapping[str, Any], now: float, grace: float) -> str | None:
    """Why the sink counts as failing, or None. Retries count only once the oldest has
    waited `grace` (two sync intervals): one transient 502 on a lone chat, retried on the
    next sync, is not an outage a cron check should page anyone for."""
    error_at, last = _epoch(sink.get("last_error_at")), _epoch(sink.get("last_sync_at"))
    if sink.get("last_error") and error_at is not None and last is not None \
            and error_at >= last:
        return f"the last sync failed: {sink['last_error']}"
    since = _epoch(sink.get("retrying_since"))
    delivered = _epoch(sink.get("last_delivered_at"))
    if sink.get("retrying") and since is not None and now - since >= grace \
            and (delivered is None or delivered < since):
        count = sink["retrying"]
        return (f"nothing delivered for {ago(max(0.0, now - since))}: {count} "
                f"chat{'s' if count != 1 else ''} waiting to retry after "
                f"“{sink.get('retry_error') or 'an error'}”")
    given_up = sink.get("given_up") or 0
    if given_up >= GIVEN_UP_CHATS:
        return (f"gave up on {given_up} chats and delivered nothing since (latest: "
                f"“{sink.get('given_up_reason') or 'an error'}”): see `bridge dead-letter "
                "list`, fix the cause, then requeue them")
    return None


def _epoch(value: Any) -> float | None:
    """Unix seconds of a datetime, a number, an ISO string (from JSON), or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def ago(seconds: float | None) -> str:
    """A short human duration: '42 s', '7 min', '3.5 h', '2 days'."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{seconds / 86400:.0f} days"


def worst(states: list[str]) -> str:
    """The worst of several states (healthy < behind < failing < stopped)."""
    return max(states, key=STATES.index, default="healthy")


def overall(sinks: list[dict[str, Any]], *, running: bool,
            why: str = "the bridge is not running") -> dict[str, str]:
    """The bridge's verdict: the worst of its enabled sinks' (disabled ones left out)."""
    judged = [s for s in sinks if s.get("enabled", True) and s.get("health")]
    if not judged:
        none = "no sink enabled in the config (plugins:)" if sinks else "no sink installed yet"
        return ({"state": "healthy", "reason": none} if running
                else {"state": "stopped", "reason": why})
    state = worst([s["health"]["state"] for s in judged])
    if state == "healthy":
        return {"state": state, "reason": "every sink is healthy" if len(judged) > 1
                else f"{judged[0]['sink']}: {judged[0]['health']['reason']}"}
    named = {s["sink"]: s["health"]["reason"] for s in judged if s["health"]["state"] == state}
    if len(set(named.values())) == 1 and (len(named) > 1 or state == "stopped"):
        return {"state": state, "reason": next(iter(named.values()))}  # the same for all
    return {"state": state, "reason": "; ".join(f"{k}: {v}" for k, v in named.items())}
