"""Fixtures of the core tests: an app built from test plugins."""

from __future__ import annotations

import pytest

from bridge.app import create_app
from bridge.config import BridgeConfig, BufferConfig, ServerConfig
from tests.helpers import CorePlugin


@pytest.fixture
def make_app(pm, tmp_path):
    """create_app over the test source and the given sinks (server settings as keywords)."""
    def make(sinks=(), **server):
        pm.register(CorePlugin(sinks=list(sinks)), name="testsource")
        config = BridgeConfig(server=ServerConfig(**server),
                              buffer=BufferConfig(path=str(tmp_path / "app.db")))
        return create_app(config, pm)
    return make
