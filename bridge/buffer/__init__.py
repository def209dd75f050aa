"""The durable outbox: every message is committed here before a webhook is answered.

All SQL of Chatbridge lives in this package: one schema (tables), each statement defined
once and compiled per engine (compiler), run by thin connectors on sqlite3, aiosqlite and
asyncpg. The core sees the port (port): `Buffer.open(target)` returns a `Storage`; a
buffer shared by several processes is also a `SharedBuffer`.
"""

from __future__ import annotations

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

__all__ = ["Appends", "Buffer", "Claim", "Deliveries", "MediaJob", "MediaJobs", "Policy",
           "PostgresBuffer", "SQLiteBuffer", "SharedBuffer", "SourceSyncs", "StatusReads",
           "Storage", "SyncNote"]
