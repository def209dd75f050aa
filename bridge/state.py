"""What one running bridge owns, and the app key it is stored under.

A home of its own so that app.py, page.py and security.py can all import it without
importing each other.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pluggy
from aiohttp import web

from bridge.buffer import Storage
from bridge.config import BridgeConfig
from bridge.contracts import Filter, Sink, Source
from bridge.metrics import Metrics
from bridge.sessions import Sessions
from bridge.sync import SinkRunner
from bridge.throttle import LoginThrottle


@dataclass
class Bridge:
    """Everything one running bridge owns; stored on the app under BRIDGE."""

    config: BridgeConfig
    sources: list[Source]
    sinks: list[Sink]
    filters: list[Filter]
    plugins: pluggy.PluginManager
    buffer: Storage | None = None
    runners: dict[str, SinkRunner] = field(default_factory=dict)
    media_runners: dict[str, Any] = field(default_factory=dict)  # source -> MediaRunner
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    csrf_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: Sessions = field(default_factory=Sessions)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    cluster: Any = None  # bridge.cluster.Member when the buffer is shared (PostgreSQL)
    buffer_id: str = ""  # bridge.address.buffer_id: sent with every answer


BRIDGE = web.AppKey("bridge", Bridge)
