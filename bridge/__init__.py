"""Chatbridge: WhatsApp Business webhooks to CRM activities, durably buffered.

Everything a plugin may use is named here (and in bridge.testing, the sink authors'
contract kit); plugins import nothing else of the core (an import-linter contract in
pyproject.toml, run by tests/test_imports.py). The names of heavier parts (the app, the
CLI helpers, the buffer) load on first use, so `import bridge` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bridge.contracts import (
    SINK_NOTE,
    WAITING_FOR_FILE,
    WAITS_WITH_MESSAGES,
    Batch,
    Filter,
    Ingest,
    Outcome,
    Sink,
    SinkSettings,
    Source,
    TargetFailure,
)
from bridge.durations import Duration
from bridge.errors import BridgeError
from bridge.hookspecs import hookimpl
from bridge.limits import Limits
from bridge.model import (
    GROUP_PREFIX,
    STATUS_KINDS,
    UPGRADE_SUFFIX,
    Conversation,
    Direction,
    Identity,
    Media,
    Message,
    StatusUpdate,
    is_group,
)
from bridge.render import clean, file_name, joined, lead_in, quote, render_line, visible
from bridge.retry import backoff_delay

if TYPE_CHECKING:
    from bridge.metrics import Metrics
    from bridge.params import text as query_text

# name -> module: loaded when first asked for (PEP 562). Metrics (prometheus_client) and
# query_text (aiohttp) too: a process that only uses the buffer (an appender the crash
# test starts twenty times, a migration) imports neither (~0.2 s of CPU)
_LAZY = {
    "Metrics": "bridge.metrics", "query_text": "bridge.params",
    "Buffer": "bridge.buffer", "MediaJob": "bridge.buffer", "SharedBuffer": "bridge.buffer",
    "SourceSyncs": "bridge.buffer", "SyncNote": "bridge.buffer",
    "Fetched": "bridge.media", "FileOut": "bridge.media", "MediaGone": "bridge.media",
    "MediaRetry": "bridge.media",
    "CONFIG_OPTION": "bridge.cli", "friendly": "bridge.cli", "load": "bridge.cli",
    "create_app": "bridge.app", "BRIDGE": "bridge.state", "PluginContext": "bridge.context",
    "get_plugin_manager": "bridge.plugins", "load_config": "bridge.plugins",
    "candidates": "bridge.address", "call": "bridge.remote",
    "bound_socket": "bridge.serve",
    "Clock": "bridge.textreport", "as_datetime": "bridge.textreport", "zone": "bridge.textreport",
}

_RENAMED = {"query_text": "text"}  # exported name -> its name in its module

__all__ = [
    "as_datetime", "backoff_delay", "Batch", "bound_socket", "BRIDGE", "BridgeError", "Buffer",
    "call", "candidates", "clean", "Clock", "CONFIG_OPTION", "Conversation", "create_app",
    "Direction", "Duration", "Fetched", "file_name", "FileOut", "Filter", "friendly",
    "get_plugin_manager", "GROUP_PREFIX", "hookimpl", "Identity", "Ingest", "is_group",
    "joined", "lead_in", "Limits", "load", "load_config", "Media", "MediaGone", "MediaJob",
    "MediaRetry",
    "Message", "Metrics", "Outcome", "PluginContext", "query_text", "quote", "render_line",
    "SharedBuffer", "Sink", "SINK_NOTE", "SinkSettings", "Source", "SourceSyncs", "STATUS_KINDS",
    "StatusUpdate", "SyncNote",
    "TargetFailure", "UPGRADE_SUFFIX",
    "visible", "WAITING_FOR_FILE", "WAITS_WITH_MESSAGES", "zone",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every name, the ones not loaded yet too (dir(), completion)."""
    return sorted({*globals(), *__all__})
