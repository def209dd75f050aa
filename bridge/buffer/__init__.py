"""The durable outbox: every message is committed here before a webhook is answered.

All SQL of Chatbridge lives in this package: one schema (tables), each statement defined
once and compiled per engine (compiler), run by thin connectors on sqlite3, aiosqlite and
asyncpg. The core sees the port (port): `Buffer.open(target)` returns a `Storage`; a
buffer shared by several processes is also a `SharedBuffer`.

The names below load on first use (PEP 562): a command that only reads a config (whose
`buffer` section names a target: `bridge.buffer.location`) does not import SQLAlchemy and
compile every statement.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.buffer.delivery import Claim, Policy
    from bridge.buffer.media import MediaJob
    from bridge.buffer.port import (
        Appends,
        Deliveries,
        MediaJobs,
        SharedBuffer,
        SourceSyncs,
        StatusReads,
    )
    from bridge.buffer.postgres import PostgresBuffer
    from bridge.buffer.sqlite import SQLiteBuffer
    from bridge.buffer.store import Buffer
    from bridge.buffer.syncs import SyncNote

    Storage = Buffer  # every buffer: Appends, Deliveries, MediaJobs and StatusReads

# name -> module
_LAZY = {
    "Claim": "bridge.buffer.delivery", "Policy": "bridge.buffer.delivery",
    "MediaJob": "bridge.buffer.media",
    "Appends": "bridge.buffer.port", "Deliveries": "bridge.buffer.port",
    "MediaJobs": "bridge.buffer.port", "SharedBuffer": "bridge.buffer.port",
    "SourceSyncs": "bridge.buffer.port", "StatusReads": "bridge.buffer.port",
    "PostgresBuffer": "bridge.buffer.postgres", "SQLiteBuffer": "bridge.buffer.sqlite",
    "Buffer": "bridge.buffer.store", "Storage": "bridge.buffer.store",
    "SyncNote": "bridge.buffer.syncs",
}

__all__ = ["Appends", "Buffer", "Claim", "Deliveries", "MediaJob", "MediaJobs", "Policy",
           "PostgresBuffer", "SQLiteBuffer", "SharedBuffer", "SourceSyncs", "StatusReads",
           "Storage", "SyncNote"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        # the SQLite backend registers itself for Buffer.open; the PostgreSQL one (asyncpg)
        # loads when a postgresql:// buffer is opened (bridge.buffer.store.backend)
        importlib.import_module("bridge.buffer.sqlite")
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, "Buffer" if name == "Storage" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge.buffer' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every name, the ones not loaded yet too (dir(), completion)."""
    return sorted({*globals(), *__all__})
