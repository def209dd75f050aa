"""A LeadSquared host that takes the connection and never answers, on a real `bridge run`:
the start is bounded by the sink's call timeouts, the status names the host, and the start
is tried again soon (not after a whole sync_interval), so chats flow once the host answers.

Found by adv42: the start retried UserByAccessKey.Get for 5 x timeout while the status read
"healthy: starting", failed with "transient: ReadTimeout" (no host), and was tried again
only after sync_interval (here an hour: the chat never arrived).
"""

from __future__ import annotations

import asyncio
import threading
import time

from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import ASHA, post, write_config
from tests.processes import BridgeProcess, eventually
from tests.whatsapp import payloads as p


class Gate:
    """A TCP gate on a free port in front of `target`: while closed it takes connections
    and says nothing; opened, it forwards them (and those it held)."""

    def __init__(self, target: int) -> None:
        self.port, self.target = free_port(), target
        self.open = threading.Event()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader, writer) -> None:
        while not self.open.is_set():
            await asyncio.sleep(0.05)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def test_a_silent_host_is_named_on_the_status_and_chats_flow_soon_after_it_answers(
        tmp_path, simulator):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    gate = Gate(simulator.port)
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, host=f"http://127.0.0.1:{gate.port}",
                 sync_interval="1h", timeout="1s", rate_limit="10/1s")
    bridge = BridgeProcess(config, port).start()
    try:
        post(bridge, p.message_change([p.text_message("wamid.h1", ASHA, "hello?",
                                                      ts=int(time.time()))],
                                      contacts=[p.contact(ASHA, "Asha")]))
        host = f"LeadSquared at http://127.0.0.1:{gate.port}"
        health = eventually(lambda: (h := bridge.status()["health"])["state"] == "failing"
                            and h, timeout=30)
        assert host in health["reason"], health
        gate.open.set()
        eventually(lambda: simulator.activities(lead), timeout=60)
        eventually(lambda: bridge.status()["health"]["state"] == "healthy", timeout=30)
    finally:
        bridge.stop()
        gate.close()
