"""Shared parts of the reliability and security tests: sizes, configs, webhooks, CRM counts.

Sizes: every long test reads its size from a CHATBRIDGE_* environment variable (see
README.md here); the default is the short size in the normal suite and the long one under
`-m soak`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from plugins.whatsapp.signature import sign
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import SECRET, TOKEN, key_of
from tests.leadsquared.test_end_to_end import write_config as e2e_config
from tests.processes import BridgeProcess, GraphProcess, SimulatorProcess, eventually
from tests.whatsapp import payloads as p

PATH = "/webhooks/whatsapp"
GRAPH_TOKEN = "reliability-graph-token"


def size(variable: str, default: int) -> int:
    """The test size from the environment, else `default`."""
    value = os.environ.get(variable, "").strip()
    return int(value) if value else default


def report(line: str) -> None:
    """A result line: shown with `pytest -s`, and appended to $CHATBRIDGE_REPORT if set."""
    print(line, flush=True)
    target = os.environ.get("CHATBRIDGE_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


# -- webhooks -------------------------------------------------------------------------------

def webhook_body(messages: list[tuple[str, str, str]], ts: int | None = None,
                 photos: dict[str, str] | None = None) -> bytes:
    """A signed-ready body: one `messages` change holding (id, sender digits, text) items;
    an item whose text is in `photos` is a photo (that media id) captioned with the text."""
    when = int(time.time()) if ts is None else ts
    items = [p.base(mid, sender, "image", when, image=p.media(
        photos[text], "image/jpeg", caption=text, sha256=None))
        if photos and text in photos else p.text_message(mid, sender, text, ts=when)
        for mid, sender, text in messages]
    return json.dumps(p.envelope(p.message_change(items))).encode()


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}


def post_webhook(client: httpx.Client, url: str, body: bytes) -> tuple[int | None, float]:
    """(HTTP status or None when nobody answered, seconds it took)."""
    started = time.perf_counter()
    try:
        response = client.post(url + PATH, content=body, headers=signed_headers(body))
        status: int | None = response.status_code
    except httpx.HTTPError:
        status = None
    return status, time.perf_counter() - started


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000 if seconds else float("nan")


# -- the bridge and the CRM as processes ------------------------------------------------------

def write_config(path: Path, sim: SimulatorProcess, port: int, buffer: dict | None = None,
                 graph: GraphProcess | None = None, **leadsquared: object) -> None:
    """The end-to-end config, draining fast and never giving up; settings override it;
    `buffer` is its buffer section (default: bridge.db beside the config); with `graph`,
    media are fetched from that Graph stand-in (retried fast) into media/ beside it."""
    e2e_config(path, sim, port, buffer, **{"rate_limit": "100/1s", "max_attempts": 10_000,
                                           **leadsquared})
    if graph is not None:
        config = json.loads(path.read_text())
        config["plugins"]["whatsapp"].update(access_token=GRAPH_TOKEN, graph_url=graph.url)
        config["buffer"].update(media_path=str(path.parent / "media"), media_retry_base=0.2,
                                media_retry_cap=1)
        path.write_text(json.dumps(config))


def make_bridge(tmp_path: Path, sim: SimulatorProcess, buffer: dict | None = None,
                graph: GraphProcess | None = None, **leadsquared: object) -> BridgeProcess:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, sim, port, buffer, graph, **leadsquared)
    return BridgeProcess(config, port)


class Photos:
    """Photos for a webhook driver: each a few KB of its own bytes, served by the Graph
    stand-in; `sha` maps an acknowledged photo's caption (its text) to its bytes' sha256."""

    def __init__(self, graph: GraphProcess, rng: random.Random, share: float) -> None:
        self.graph, self.rng, self.share = graph, rng, share
        self.sha: dict[str, str] = {}
        self._pending: dict[str, str] = {}

    def pick(self, texts: list[str]) -> dict[str, str]:
        """Text -> media id for the items that go as photos this time (uploaded now)."""
        chosen = {}
        for text in texts:
            if self.rng.random() < self.share:
                data = self.rng.randbytes(self.rng.randint(2_000, 6_000))
                chosen[text] = self.graph.upload(data, "image/jpeg", p.PHONE_ID)
                self._pending[text] = hashlib.sha256(data).hexdigest()
        return chosen

    def acked(self, texts: list[str]) -> None:
        self.sha.update({t: self._pending[t] for t in texts if t in self._pending})


def attached_files(sim: SimulatorProcess, captions: Iterable[str]) -> Counter:
    """sha256 -> how many attachments carry those bytes, over every activity whose note
    names one of the photos (a file is attached to the activity that names it, and a
    note posted twice would show as a duplicate text)."""
    wanted = set(captions)
    return Counter(row["Sha256"] for activity in sim.activities()
                   if any(text in (activity["ActivityNote"] or "") for text in wanted)
                   for row in sim.admin("GET", "attachments", params={"activity": activity["Id"]}))


def assert_each_file_once(sim: SimulatorProcess, photos: Photos, bridge: BridgeProcess,
                          timeout: float = 120, unconfirmed: int | None = None) -> Counter:
    """Once the bridge settled (nothing to deliver, no file to fetch): no file attached
    twice, and every acknowledged photo attached, except at most `unconfirmed` (attaches
    whose outcome was unknown: dead targets saying so, never sent again; None: as many
    as the sink's dead targets, each of which must be such an attach)."""
    def settled() -> bool:
        status = bridge.status()
        (sink,) = status["sinks"]
        media = status["media"].get("whatsapp", {})
        return sink["backlog"] == 0 and media.get("pending", 0) == 0 and bool(
            sink["last_sync_at"])

    eventually(settled, timeout=timeout, every=0.5)
    if unconfirmed is None:
        (sink,) = bridge.status()["sinks"]
        unconfirmed = sink["dead_targets"]
        assert all("attach unconfirmed" in t["reason"] for t in sink["dead_target_sample"])
    found = attached_files(sim, photos.sha)
    twice = {sha: n for sha, n in found.items() if n > 1}
    assert not twice, f"{len(twice)} file(s) attached more than once"
    missing = [t for t, sha in photos.sha.items() if not found[sha]]
    if len(missing) > unconfirmed:
        (sink,) = bridge.status()["sinks"]
        raise AssertionError(
            f"{len(missing)} of {len(photos.sha)} photos never attached ({missing[:5]}), "
            f"{unconfirmed} unconfirmed; the sink: overdue {sink.get('overdue_files')}, "
            f"dead targets {[t['reason'][:100] for t in sink['dead_target_sample']]}; media "
            f"{bridge.status()['media']}")
    return found


def drained(bridge: BridgeProcess) -> dict | None:
    """The sink's status once nothing is pending and a sync has run, else None."""
    (sink,) = bridge.status()["sinks"]
    return sink if sink["backlog"] == 0 and sink["last_sync_at"] else None


def stored_ids(db: Path) -> set[str]:
    """Provider ids committed to the buffer file (read with a separate connection)."""
    with sqlite3.connect(db, timeout=30) as conn:
        return {row[0] for row in conn.execute("SELECT provider_id FROM messages")}


class CrmCount:
    """What reached the simulator: message texts per lead/opportunity, and idempotency keys."""

    def __init__(self, activities: list[dict], pattern: str) -> None:
        self.activities = activities
        self.keys = Counter(key_of(a) for a in activities)
        self.on_leads = Counter(t for a in activities if a["RelatedOpportunityId"] is None
                                for t in re.findall(pattern, a["ActivityNote"]))
        self.on_deals = Counter(t for a in activities if a["RelatedOpportunityId"]
                                for t in re.findall(pattern, a["ActivityNote"]))

    def duplicates(self) -> int:
        """Keys posted twice plus message texts that appear twice on one record kind."""
        return sum(n - 1 for counter in (self.keys, self.on_leads, self.on_deals)
                   for n in counter.values() if n > 1)

    def assert_each_once(self, acked: Iterable[str]) -> None:
        """No duplicate anywhere, and every acknowledged message on its lead exactly once."""
        assert self.duplicates() == 0, (self.keys.most_common(3), self.on_leads.most_common(3))
        for text in acked:
            assert self.on_leads[text] == 1, text


def stop_scenario(driver: Any, bridge: BridgeProcess | None, sim: SimulatorProcess) -> None:
    """A scenario's teardown: stop the webhook driver, then the bridge, then the CRM."""
    if driver is not None:
        driver.stop.set()
    if bridge is not None:
        bridge.stop()
    sim.stop()


# -- the real app, in-process, on a loopback port -----------------------------------------------

class ThreadedApp:
    """create_app(config) served on 127.0.0.1 by an event loop in a background thread.

    Synchronous tests (hypothesis, raw sockets) talk to it over HTTP; `call` runs a
    coroutine on its loop (e.g. to read the buffer the app itself uses).
    """

    def __init__(self, config_text: str, config_path: Path) -> None:
        from bridge.app import create_app
        from bridge.plugins import get_plugin_manager, load_config

        config_path.write_text(config_text)
        pm = get_plugin_manager()
        self.app = create_app(load_config(config_path, pm), pm)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="threaded-app", daemon=True)

    def __enter__(self) -> ThreadedApp:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise AssertionError(f"the app did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app)
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def bridge(self) -> Any:
        from bridge.app import BRIDGE

        return self.app[BRIDGE]


def whatsapp_config(db: Path, whatsapp: dict[str, Any] | None = None,
                    **server: object) -> str:
    """Config text: the WhatsApp source only (plus `whatsapp` settings), the buffer at `db`."""
    source = {"verify_token": TOKEN, "app_secret": SECRET, **(whatsapp or {})}
    config: dict[str, Any] = {"buffer": {"path": str(db)}, "plugins": {"whatsapp": source}}
    if server:
        config["server"] = server
    return json.dumps(config)
