"""The aiohttp application: source routes, health, status, and the loops it owns."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import suppress
from typing import Any

import pluggy
from aiohttp import web

from bridge import address, params
from bridge.buffer import Buffer, SharedBuffer, SyncNote
from bridge.cluster import Member, cluster_report, register, tell_cluster, wake_runners
from bridge.config import BridgeConfig
from bridge.context import PluginContext
from bridge.errors import BridgeError, BufferClosed, ConfigError, PluginError
from bridge.media import close_media, media_sources, start_media
from bridge.model import Identity, Message, StatusUpdate
from bridge.page import page_routes
from bridge.page_charts import rate_budgets
from bridge.plugins import build
from bridge.security import admin_only, guard_routes, guard_the_rest
from bridge.state import BRIDGE, Bridge
from bridge.status import add_health, sink_rows, status_report
from bridge.sync import SinkRunner, settle_after_lease

logger = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # Meta sends up to 3 MB; history chunks must not get a 413
STOP_GRACE = 10.0  # seconds a drain may take to finish its batch on shutdown
PRUNE_EVERY = 3600.0
MAX_BACKFILL_DAYS = 3650


class AppIngest:
    """The buffer as sources see it; usable once the app has started."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def append(self, messages: Iterable[Message], statuses: Iterable[StatusUpdate] = (),
                     contacts: Mapping[str, str] | None = None,
                     identities: Iterable[Identity] = ()) -> int:
        if self._bridge.buffer is None:
            raise BufferClosed("the buffer is not open yet")
        messages = list(messages)
        stored = await self._bridge.buffer.append(messages, statuses, contacts, identities)
        if stored:
            for source in {m.source for m in messages if m.media is not None}:
                runner = self._bridge.media_runners.get(source)
                if runner is not None:
                    runner.wake()
        return stored

    async def note_source_sync(self, source: str, account: str, kind: str, what: SyncNote,
                               now: float | None = None) -> dict[str, Any]:
        """The buffer's SourceSyncs, for a source that tracks a provider's one-off sync."""
        if self._bridge.buffer is None:
            raise BufferClosed("the buffer is not open yet")
        return await self._bridge.buffer.note_source_sync(source, account, kind, what, now)

    async def source_syncs(self, source: str | None = None) -> list[dict[str, Any]]:
        if self._bridge.buffer is None:
            raise BufferClosed("the buffer is not open yet")
        return await self._bridge.buffer.source_syncs(source)


def create_app(config: BridgeConfig, pm: pluggy.PluginManager) -> web.Application:
    """Build the app from the config and the enabled plugins (nothing opened yet)."""
    context = PluginContext(config)
    bridge = Bridge(
        config=config,
        sources=build(pm, "register_sources", "source", context=context),
        sinks=build(pm, "register_sinks", "sink", context=context),
        filters=build(pm, "register_filters", "filter", context=context),
        plugins=pm,
        metrics=context.metrics,
    )
    app = web.Application(client_max_size=MAX_BODY)  # no middleware if all are guarded
    bridge.buffer_id = address.buffer_id(config)
    app[BRIDGE] = bridge
    app.add_routes(guard_routes([
        web.get("/healthz", healthz),
        web.get("/status", admin_only(status)),
        web.get("/metrics", admin_only(metrics)),
        web.post("/sync-now", admin_only(sync_now)),
        web.post("/backfill", admin_only(backfill)),
        *page_routes(),
    ]))
    _add_source_routes(app, bridge)  # after the core's, so none can shadow one
    guard_the_rest(app)
    for source in bridge.sources:
        bridge.metrics.declare_source(source.name)
    app.cleanup_ctx.append(_buffer_ctx)
    app.cleanup_ctx.append(_sync_ctx)
    app.cleanup_ctx.append(_cluster_ctx)
    return app


def _answer(request: web.Request, data: object) -> web.Response:
    """An admin API answer (JSON), saying which buffer this bridge runs on (hashed): a
    client command of another config that reaches this port knows it is not its bridge."""
    return web.json_response(data, dumps=_dumps,
                             headers={address.HEADER: request.app[BRIDGE].buffer_id})


def _add_source_routes(app: web.Application, bridge: Bridge) -> None:
    ingest = AppIngest(bridge)
    core = {resource.canonical for resource in app.router.resources()}
    for source in bridge.sources:
        routes = guard_routes(source.routes(ingest))
        for route in routes:
            if getattr(route, "path", None) in core:
                raise _core_route_clash(bridge.config, source.name, route.path)
        try:
            app.add_routes(routes)
        except (RuntimeError, ValueError) as exc:
            raise PluginError(f"source {source.name!r} routes clash: {exc}") from None


def _core_route_clash(config: BridgeConfig, source: str, path: str) -> BridgeError:
    """The error for a source route on a core path, naming the config key that set it."""
    for name, section in config.plugins.items():
        for key, value in section or ():
            if value == path:
                return ConfigError(f"plugins.{name}.{key}: {path!r} is a route of the bridge "
                                   f"itself (choose another path, e.g. /webhooks/{source})")
    return PluginError(f"source {source!r} asks for {path!r}, a route of the bridge itself "
                       "(the source must serve another path)")


async def _buffer_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
    settings = bridge.config.buffer
    # a batch a killed run was posting waits until a write it had in flight can no
    # longer land (its retry's key check would miss it and post again)
    after_lease = {sink.name: settle_after_lease(sink) for sink in bridge.sinks}
    bridge.buffer = await Buffer.open(settings.target, settings.synchronous, runner=True,
                                      after_lease=after_lease)
    try:
        await bridge.buffer.install_sinks([sink.name for sink in bridge.sinks])
        bridge.buffer.media_sources = media_sources(bridge.sources)
        await register(bridge.buffer, [sink.name for sink in bridge.sinks])  # before claims
        yield
    finally:
        buffer, bridge.buffer = bridge.buffer, None
        await buffer.close()


async def _sync_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
    stop = asyncio.Event()
    tasks = []
    for sink in bridge.sinks:
        runner = SinkRunner(sink, bridge.buffer, bridge.filters, bridge.sources,
                            metrics=bridge.metrics)
        bridge.runners[sink.name] = runner
        tasks.append(asyncio.create_task(runner.run(stop), name=f"sync-{sink.name}"))
    tasks.append(asyncio.create_task(_prune_loop(bridge, stop), name="prune"))
    tasks.extend(await start_media(bridge, stop))
    yield
    stop.set()
    await asyncio.wait(tasks, timeout=STOP_GRACE)
    for task in tasks:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("%s stopped with an error", task.get_name())
    for sink in bridge.sinks:
        try:
            await sink.close()
        except Exception:
            logger.exception("closing sink %r failed; carrying on with shutdown", sink.name)
    await close_media(bridge.sources)


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """On a shared (PostgreSQL) buffer: join the process registry and listen for wake-ups
    (sync-now, backfill) sent by whichever process took the request."""
    bridge = app[BRIDGE]
    if not isinstance(bridge.buffer, SharedBuffer):
        yield
        return
    stop = asyncio.Event()
    bridge.cluster = Member(bridge.buffer, bridge.runners)
    listener = bridge.buffer.listener(
        lambda action, sink: wake_runners(bridge.runners, action, sink))
    tasks = [asyncio.create_task(bridge.cluster.run(stop), name="cluster-heartbeat"),
             asyncio.create_task(listener.run(stop), name="cluster-listen")]
    yield
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    bridge.cluster = None


async def _prune_loop(bridge: Bridge, stop: asyncio.Event) -> None:
    """Delete settled messages past buffer.retention, hourly."""
    while not stop.is_set():
        try:
            removed = await bridge.buffer.prune(time.time() - bridge.config.buffer.retention)
            if removed:
                logger.info("pruned %d delivered messages past retention", removed)
        except Exception:
            logger.exception("pruning the buffer failed; will try again")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_EVERY)


async def healthz(request: web.Request) -> web.Response:
    """200 only when the buffer can commit right now."""
    buffer = request.app[BRIDGE].buffer
    try:
        if buffer is None:
            raise BufferClosed("not started")
        await asyncio.wait_for(buffer.heartbeat(), 5)
    except Exception as exc:
        logger.warning("health check failed: %s", exc)
        return web.json_response({"ok": False, "reason": "the buffer cannot commit"}, status=503)
    return web.json_response({"ok": True})


async def status(request: web.Request) -> web.Response:
    report = await status_report(request.app[BRIDGE], params.text(request.query, "q"))
    return _answer(request, report)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this bridge's registry (buffer gauges and each sink's
    health verdict read now)."""
    bridge = request.app[BRIDGE]
    bridge.metrics.buffer_state.budgets = rate_budgets(bridge.sinks)
    cluster = await cluster_report(bridge) if bridge.buffer is not None else None
    bridge.metrics.buffer_state.cluster = cluster
    sinks = None
    if cluster is not None:
        try:
            sinks = await bridge.buffer.snapshot(sink_rows)
            await add_health(bridge, sinks, cluster)
        except Exception as exc:  # the gauges are left out of this scrape, as on any failure
            logger.warning("metrics: could not judge the sinks' health: %s", exc)
            sinks = None
    body, content_type = await bridge.metrics.render(bridge.buffer, sinks)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def sync_now(request: web.Request) -> web.Response:
    """Wake one sink's drain (?sink=NAME) or all of them."""
    bridge = request.app[BRIDGE]
    name = params.text(request.query, "sink")
    if name is not None and name not in bridge.runners:
        raise web.HTTPNotFound(text=f"no sink named {params.shown(name)}")
    for runner_name, runner in bridge.runners.items():
        if name in (None, runner_name):
            runner.wake()
    for media in bridge.media_runners.values():  # the files a sink waits for, too
        media.hurry()
    await tell_cluster(bridge.buffer, "sync", name)
    return _answer(request, {"woken": [name] if name else sorted(bridge.runners)})



async def backfill(request: web.Request) -> web.Response:
    """Queue ?sink=NAME's backfill over ?days=N (default its backfill_days) and wake it."""
    bridge = request.app[BRIDGE]
    name = params.text(request.query, "sink", "")
    running = f"(running: {', '.join(sorted(bridge.runners)) or 'none'})"
    if not name:
        raise params.bad(f"sink is required {running}")
    runner = bridge.runners.get(name)
    if runner is None:
        raise web.HTTPNotFound(text=f"no running sink named {params.shown(name)} {running}")
    days = params.decimal(request.query, "days", high=MAX_BACKFILL_DAYS)
    queued = await runner.backfill(days)
    runner.wake()
    await tell_cluster(bridge.buffer, "backfill", name)
    return _answer(request, {"sink": name, "days": days or runner.settings.backfill_days,
                             "queued": queued})


def _dumps(value: object) -> str:
    return json.dumps(value, default=str)
