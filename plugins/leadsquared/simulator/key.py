"""The app key the simulator is stored under: one home for simulator.py and its pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # a type hint only: no import at run time, so no circle
    from plugins.leadsquared.simulator.server import Simulator

SIM_KEY: web.AppKey[Simulator] = web.AppKey("simulator")
