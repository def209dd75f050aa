"""After `bridge whatsapp send-test` stored its message: ask the bridge to sync now and say
what each sink made of it (synced, held and why, or waiting to retry and why)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from bridge import BridgeError, Clock, as_datetime, call, zone

POLL = 0.5  # seconds between looks at /status


def follow(config: Any, base: str, key: str, since: float, wait: float) -> Iterator[str]:
    """Lines saying what became of conversation `key`'s message stored at `since`."""
    try:
        woken = call(config, "POST", "/sync-now", bases=[base], timeout=10).json()["woken"]
    except BridgeError as exc:
        yield (f"The bridge was not asked to sync now ({exc}): it syncs at each sink's next "
               "interval, and `bridge status` shows it then.")
        return
    if not woken:
        yield "No sink is enabled, so nothing is synced (add one under plugins:)."
        return
    yield f"Asked {', '.join(woken)} to sync now."
    if wait <= 0:
        yield "`bridge status` shows the outcome in a few seconds."
        return
    clock = Clock(zone(config.server.timezone))
    deadline = time.monotonic() + wait
    while True:
        report = call(config, "GET", "/status", bases=[base], timeout=10,
                      params={"q": key.lstrip("+")}).json()
        fates = {sink["sink"]: _fate(sink, key, since, clock) for sink in report["sinks"]
                 if sink["sink"] in woken}
        if all(settled for settled, _ in fates.values()) or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    for sink, (_, text) in fates.items():
        yield f"  {sink}: {text}"
    yield "`bridge status` shows the same."


def _fate(sink: dict[str, Any], key: str, since: float, clock: Clock) -> tuple[bool, str]:
    """(settled, what to say) for the test conversation in one sink's report."""
    conv = next((c for c in sink.get("conversations", []) if c["key"] == key), None)
    health = sink.get("health") or {}
    synced = as_datetime(conv and conv.get("last_synced_at"))
    if conv and conv["pending"] == 0 and synced and synced.timestamp() >= since:
        return True, f"synced at {clock.at(synced)}"
    if conv and conv.get("held_reason"):
        return True, f"held: {conv['held_reason']}"
    if conv and conv.get("last_error"):
        return True, f"not synced yet, it will be retried: {conv['last_error']}"
    if health.get("state") in ("failing", "stopped"):
        return True, f"not synced: the sink is {health['state']} ({health.get('reason')})"
    return False, ("not synced yet (still pending): `bridge status` shows when it is; the "
                   "sink syncs every few minutes")
