"""Fixtures of the LeadSquared tests: an in-process simulator on a loopback port."""

from __future__ import annotations

import pytest

from plugins.leadsquared.simulator import Simulator


@pytest.fixture
async def sim():
    simulator = Simulator(seed=7)
    await simulator.start()
    yield simulator
    await simulator.stop()
