"""The processes registry and the cluster view (issue 18): each process heartbeats a row;
alive while the heartbeat is under 3 intervals old; /status, /metrics and the page show
who is alive and which process drained each sink last."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bridge.app import create_app
from bridge.cluster import Member
from bridge.config import BridgeConfig, BufferConfig
from bridge.plugins import get_plugin_manager
from tests.helpers import CorePlugin, RecordingSink, wait_until


class _Runner:
    def __init__(self, delivered_at: float | None = None) -> None:
        self.last_delivered_at = delivered_at

    def wake(self) -> None:
        pass


async def test_a_process_whose_heartbeat_stops_counts_as_gone(open_buffers):
    first, second = await open_buffers(2)
    live = Member(first, {"crm": _Runner(time.time() - 60)}, every=0.2)
    dead = Member(second, {"crm": _Runner(time.time())}, every=0.2)
    stop = asyncio.Event()
    beating = asyncio.create_task(live.run(stop))
    try:
        await live.beat()  # its loop beats too; this one is sure to be in before the report
        await dead.beat()  # one heartbeat, then silence (a SIGKILLed process)
        report = await live.report()
        assert {p["id"]: p["alive"] for p in report["processes"]} == {live.id: True,
                                                                     dead.id: True}
        assert report["drains"]["crm"]["process"] == dead.id  # it delivered last
        await asyncio.sleep(0.7)  # more than 3 heartbeats
        report = await live.report()
        assert {p["id"]: p["alive"] for p in report["processes"]} == {live.id: True,
                                                                     dead.id: False}
        assert report["drains"]["crm"]["process"] == live.id  # the live one, though older
        assert [p["this"] for p in report["processes"] if p["id"] == live.id] == [True]
    finally:
        stop.set()
        await beating
    # a clean stop leaves; a killed process's row stays
    assert [p["id"] for p in await first.processes()] == [dead.id]


async def test_status_metrics_and_page_show_the_cluster(pg_url, serve):
    bases = []
    for sink in (RecordingSink("crm"), RecordingSink("crm")):
        manager = get_plugin_manager(load_entrypoints=False)
        manager.register(CorePlugin(sinks=[sink]), name="testsource")
        bases.append(await serve(create_app(BridgeConfig(buffer=BufferConfig(url=pg_url)),
                                            manager)))
    async with aiohttp.ClientSession() as http:
        async def both_alive() -> dict | None:
            async with http.get(f"{bases[0]}/status") as resp:
                cluster = (await resp.json())["cluster"]
            return cluster if sum(p["alive"] for p in cluster["processes"]) == 2 else None
        cluster = await wait_until(both_alive, timeout=10)
        assert cluster["shared"] and sum(p["this"] for p in cluster["processes"]) == 1
        async with http.get(f"{bases[1]}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{bases[0]}/") as resp:
            page = await resp.text()
    assert "chatbridge_cluster_processes 2.0" in text
    assert 'id="cluster-processes"' in page and page.count('data-alive="yes"') == 2


async def test_an_sqlite_bridge_is_a_cluster_of_one(serve, tmp_path):
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(CorePlugin(sinks=[RecordingSink("crm")]), name="testsource")
    config = BridgeConfig(buffer=BufferConfig(path=str(tmp_path / "app.db")))
    base = await serve(create_app(config, manager))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/status") as resp:
            cluster = (await resp.json())["cluster"]
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{base}/") as resp:
            page = await resp.text()
    assert not cluster["shared"] and [p["this"] for p in cluster["processes"]] == [True]
    assert "chatbridge_cluster_processes 1.0" in text
    assert 'id="cluster-processes"' not in page  # one process: no cluster table
