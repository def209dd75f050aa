"""The aiohttp app on a real 127.0.0.1 server, and `bridge run` as a real process."""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.config import BridgeConfig
from bridge.errors import PluginError
from bridge.security import guarded
from tests.helpers import CorePlugin, PostSource, RecordingSink, free_port, wait_until


async def test_source_route_stores_and_sink_receives(make_app, serve):
    sink = RecordingSink()
    base = await serve(make_app([sink]))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/ingest", json=[
                {"id": "a1", "conversation": "+911", "text": "hi"}]) as resp:
            assert resp.status == 200 and (await resp.json()) == {"stored": 1}
        await wait_until(lambda: sink.delivered == ["a1"])


class FailingClose(RecordingSink):
    async def close(self) -> None:
        raise ConnectionResetError("the CRM hung up while we said goodbye")


async def test_a_sink_that_fails_to_close_is_logged_and_the_others_still_close(
        make_app, caplog):
    broken, fine = FailingClose("broken"), RecordingSink("fine")
    runner = web.AppRunner(make_app([broken, fine]))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with caplog.at_level(logging.ERROR, logger="bridge.app"):
        await runner.cleanup()
    assert fine.closed
    (record,) = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.levelno == logging.ERROR and "closing sink 'broken' failed" in record.message
    assert record.exc_info[0] is ConnectionResetError


def test_a_source_route_on_a_core_path_is_refused(pm):
    pm.register(CorePlugin(source=PostSource("/metrics")), name="testsource")
    with pytest.raises(PluginError, match="source 'test' asks for '/metrics', a route of the "
                                          "bridge itself"):
        create_app(BridgeConfig(), pm)


async def test_healthz_commits_to_the_buffer(make_app, serve):
    base = await serve(make_app())
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
        assert resp.status == 200 and (await resp.json()) == {"ok": True}


async def test_status_is_open_on_loopback_without_a_token(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")]))
    async with aiohttp.ClientSession() as http, http.get(f"{base}/status") as resp:
        assert resp.status == 200
        report = await resp.json()
    assert [s["sink"] for s in report["sinks"]] == ["crm"]


async def test_status_needs_the_admin_token_when_one_is_set(make_app, serve):
    base = await serve(make_app(admin_token="t0ken"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/status") as resp:
            assert resp.status == 401
        async with http.get(f"{base}/status", headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with http.get(f"{base}/status",
                            headers={"Authorization": "Bearer t0ken"}) as resp:
            assert resp.status == 200


async def test_body_over_4_mib_is_refused_with_413(make_app, serve):
    base = await serve(make_app())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/ingest", data=b"[" + b" " * (4 * 1024 * 1024) + b"]",
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413


async def test_handler_errors_send_no_traceback(make_app, serve, caplog):
    """A source's route (a plugin's handler) that raises: a one-line JSON 500, the
    traceback in the log only."""
    base = await serve(make_app())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/ingest", json=[{"no": "id"}]) as resp:
            body = await resp.text()
    assert resp.status == 500
    assert json.loads(body) == {"error": "internal error (see the bridge log)"}
    assert "Traceback" not in body and "KeyError" not in body
    assert any(r.message == "unhandled error on POST /ingest" and r.exc_info
               for r in caplog.records)


async def test_every_route_is_guarded_without_a_middleware(make_app):
    """The error guard wraps each route's handler; the app runs no middleware (one would
    cost every webhook two more coroutine layers)."""
    app = make_app()
    assert not app.middlewares
    handlers = [route.handler for route in app.router.routes()]
    assert handlers and all(h.__code__ is guarded(h).__code__ for h in handlers)


class _OddRoutes:
    """A third-party source whose routes the per-route guard cannot wrap as they are: a
    plain (not async) handler aiohttp adapts, and a route definition of its own."""

    name = "test"

    def routes(self, ingest: object) -> list[web.AbstractRouteDef]:
        def plain(request: web.Request) -> web.Response:
            return web.Response(text="plain ok")

        async def fails(request: web.Request) -> web.Response:
            raise KeyError("the-secret-detail")

        class OwnDef(web.AbstractRouteDef):
            def register(self, router: web.UrlDispatcher) -> list:
                return [router.add_get("/own", fails)]

        return [web.get("/plain", plain), OwnDef()]


@pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning")
async def test_routes_the_guard_cannot_wrap_still_work_and_send_no_traceback(
        pm, tmp_path, serve):
    """A plain handler answers as aiohttp serves it (awaiting its Response was a 500), and
    a route a definition registered itself gets the one-line JSON 500, not aiohttp's
    own page (which shows the traceback in debug mode): the middleware guards them."""
    pm.register(CorePlugin(source=_OddRoutes()), name="testsource")
    app = create_app(BridgeConfig(buffer={"path": str(tmp_path / "odd.db")}), pm)
    base = await serve(app)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/plain") as resp:
            assert (resp.status, await resp.text()) == (200, "plain ok")
        async with http.get(f"{base}/own") as resp:
            assert resp.status == 500
            assert await resp.json() == {"error": "internal error (see the bridge log)"}


async def test_sync_now_wakes_the_named_sink(make_app, serve):
    sink = RecordingSink(sync_interval=3600)
    base = await serve(make_app([sink]))
    async with aiohttp.ClientSession() as http:
        await http.post(f"{base}/ingest", json=[{"id": "x", "conversation": "+1", "text": "t"}])
        async with http.post(f"{base}/sync-now", params={"sink": "nosuch"}) as resp:
            assert resp.status == 404
        async with http.post(f"{base}/sync-now", params={"sink": "memory"}) as resp:
            assert (await resp.json()) == {"woken": ["memory"]}
    await wait_until(lambda: sink.delivered == ["x"], timeout=5)


def test_bridge_run_serves_and_exits_0_on_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}}}\nbuffer: {{path: {tmp_path}/b.db}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                import urllib.request
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("bridge did not come up: " + proc.stderr.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert f"Chatbridge listening on http://127.0.0.1:{port}" in proc.stdout.read()


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports at run time (anywhere but `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and ast.unparse(node.test).endswith("TYPE_CHECKING")
                 for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found & modules


def test_no_module_imports_itself_through_others():
    """No import circle in bridge/ or plugins/ (e.g. app -> page -> security -> app)."""
    root = Path(__file__).resolve().parents[2]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for package in ("bridge", "plugins") for p in (root / package).rglob("*.py")}
    graph = {name: _runtime_imports(path, set(files)) - {name} for name, path in files.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop()
            for nxt in sorted(graph[path[-1]]):
                if nxt == goal:
                    return [*path, goal]
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append([*path, nxt])
        return None

    circles = [" -> ".join(c) for name in sorted(graph) if (c := reaches(name, name))]
    assert circles == []
