"""`host: simulator`: the simulator run in-process for a sink, with demo leads.

The plugin's wiring (plugins/leadsquared/__init__.py) hands one to the sink as its
endpoint; the sink itself never imports this package. Nothing leaves the machine.
"""

from __future__ import annotations

import logging

from plugins.leadsquared.simulator.server import Simulator, add_demo_data

logger = logging.getLogger(__name__)


class BundledSimulator:
    """An `Endpoint` (plugins/leadsquared/account.py) serving a fresh simulator on loopback."""

    name = "simulator"

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.simulator: Simulator | None = None

    async def open(self) -> str:
        await self.close()
        self.simulator = Simulator(self.access_key, self.secret_key)
        add_demo_data(self.simulator)
        await self.simulator.start("127.0.0.1", 0)
        logger.warning("plugins.leadsquared.host is 'simulator': chats go to the bundled "
                       "LeadSquared simulator at %s, not to a real account",
                       self.simulator.base_url)
        return self.simulator.base_url

    async def close(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()
            self.simulator = None
