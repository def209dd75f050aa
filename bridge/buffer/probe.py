"""`bridge check`'s look at the buffer: reachable, and at which schema version (read-only)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from bridge.buffer.connectors import PgConnector
from bridge.buffer.location import is_postgres
from bridge.buffer.migrations import VERSION, postgres_version
from bridge.buffer.pgurl import check_url, redact, scrub, split_schema
from bridge.errors import ConfigError


async def probe_buffer(target: str) -> str:
    """One line on the buffer `target` names; ConfigError when it cannot be used."""
    if is_postgres(target):
        return await _probe_postgres(target)
    return _probe_sqlite(target)


def _verdict(where: str, version: int) -> str:
    if version > VERSION:
        raise ConfigError(f"buffer {where}: schema version {version} is newer than this "
                          f"Chatbridge ({VERSION}); upgrade Chatbridge")
    if version == 0:
        return f"buffer OK: {where} (empty: `bridge run` creates schema version {VERSION})"
    if version < VERSION:
        return (f"buffer OK: {where} (schema version {version}; `bridge run` migrates it to "
                f"{VERSION})")
    return f"buffer OK: {where} (schema version {version})"


async def _probe_postgres(url: str) -> str:
    check_url(url)  # the same check as the config's and `bridge run`'s
    dsn, schema = split_schema(url)
    try:
        conn = await asyncpg.connect(
            dsn, timeout=10, server_settings={"search_path": schema} if schema else None)
    except (OSError, ValueError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = scrub((str(exc).strip() or type(exc).__name__).splitlines()[0], url)
        raise ConfigError(f"buffer.url {redact(url)}: cannot connect ({reason}); check the "
                          "host, port, user and password, and that PostgreSQL runs") from None
    try:
        return _verdict(redact(url), await postgres_version(PgConnector(conn)))
    finally:
        await conn.close()


def _probe_sqlite(path: str) -> str:
    if not Path(path).exists():
        return _verdict(path, 0)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"buffer.path {path}: cannot be read ({exc})") from None
    return _verdict(path, version)
