"""The LeadSquared simulator: the API subset Chatbridge uses, served on 127.0.0.1.

Its own package: the CLI (`bridge leadsquared simulator`), `bridge demo`, the bundled
`host: simulator` and the tests use it; the production sink never imports it. Every
behaviour cites its source in docs/leadsquared-simulator.md. The server is imported on
first use, so the CLI's switch options cost no aiohttp app.
"""

from __future__ import annotations

from typing import Any

from plugins.leadsquared.simulator.switches import SWITCHES, Switches, every_setting

__all__ = ["SWITCHES", "Knobs", "Simulator", "Switches", "add_demo_data", "every_setting",
           "serve"]


def __getattr__(name: str) -> Any:
    if name in ("Knobs", "Simulator", "add_demo_data", "serve"):
        from plugins.leadsquared.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
