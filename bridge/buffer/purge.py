"""Erasure: a person's messages, identities, media references and CRM mappings, gone.

One transaction. The person is found through the contact map, so every number and
BSUID they were seen with goes too, as do their messages in group chats (their words,
not the group's others). The CRM is left alone: sinks keep what they posted.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

from bridge.model import GROUP_PREFIX


async def _rows(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """The first column of each row."""
    async with db.execute(sql, params) as cursor:
        return [row[0] for row in await cursor.fetchall()]


def _placeholders(n: int) -> str:
    """'?,?,?' for n values."""
    return ",".join("?" * n)


async def person_keys(db: aiosqlite.Connection, key: str) -> tuple[str, list[str]]:
    """The person's conversation key and every phone/BSUID linked to them."""
    person = (await _rows(db, "SELECT person FROM identities WHERE key = ?", (key,)) or [key])[0]
    keys = await _rows(db, "SELECT key FROM identities WHERE person = ?", (person,))
    return person, sorted({person, key, *keys})


async def purge(db: aiosqlite.Connection, key: str, dry_run: bool) -> dict[str, Any]:
    """Delete (or with dry_run only count) everything the buffer holds of one person."""
    person, keys = await person_keys(db, key)
    k = tuple(keys)
    marks = _placeholders(len(keys))
    chats = await _rows(db, f"SELECT key FROM conversations WHERE key IN ({marks})", k)
    messages = await _rows(
        db, f"SELECT id FROM messages WHERE conversation IN ({marks})"
        f" OR (conversation >= ? AND conversation < ?"
        f" AND json_extract(body, '$.extra.sender') IN ({marks}))",
        (*k, GROUP_PREFIX, GROUP_PREFIX + "\U0010ffff", *k))
    batches = await _rows(db, f"SELECT key FROM batches WHERE conversation IN ({marks})", k)
    identities = await _rows(db, f"SELECT key FROM identities WHERE key IN ({marks})", k)
    mappings = await _rows(
        db, f"SELECT sink FROM sink_conversations WHERE conversation IN ({marks})", k)
    found = {"person": person, "keys": keys, "conversations": len(chats),
             "messages": len(messages), "media": await _media(db, messages),
             "statuses": await _statuses(db, messages, keys, count_only=True),
             "identities": len(identities), "crm_mappings": len(mappings), "dry_run": dry_run}
    if not dry_run:
        await _delete(db, keys, messages, batches)
    return found


async def _media(db: aiosqlite.Connection, ids: list[int]) -> int:
    if not ids:
        return 0
    return len(await _rows(db, f"SELECT id FROM messages WHERE id IN ({_placeholders(len(ids))})"
                           " AND json_extract(body, '$.media') IS NOT NULL", tuple(ids)))


async def _statuses(db: aiosqlite.Connection, ids: list[int], keys: list[str],
                    count_only: bool) -> int:
    """Statuses of the person's messages, and of messages to them the buffer never stored."""
    where = f"recipient IN ({_placeholders(len(keys))})"
    if ids:  # no empty IN (): PostgreSQL refuses it
        where += (" OR (source, provider_id) IN (SELECT source, provider_id FROM messages"
                  f" WHERE id IN ({_placeholders(len(ids))}))")
    params = (*keys, *ids)
    if count_only:
        return len(await _rows(db, f"SELECT provider_id FROM statuses WHERE {where}", params))
    async with db.execute(f"DELETE FROM statuses WHERE {where}", params) as cursor:
        return cursor.rowcount


async def _delete(db: aiosqlite.Connection, keys: list[str], ids: list[int],
                  batches: list[str]) -> None:
    k = tuple(keys)
    marks = _placeholders(len(keys))
    await _statuses(db, ids, keys, count_only=False)
    if ids:
        await db.execute(
            f"DELETE FROM deliveries WHERE message_id IN ({_placeholders(len(ids))})", tuple(ids))
        await db.execute(f"DELETE FROM messages WHERE id IN ({_placeholders(len(ids))})",
                         tuple(ids))
    for batch in batches:  # what the sinks posted under the person's batches
        await db.execute("DELETE FROM ledger WHERE key >= ? AND key < ?",
                         (batch, batch + "\U0010ffff"))
    await db.execute(f"DELETE FROM batches WHERE conversation IN ({marks})", k)
    await db.execute(f"DELETE FROM sink_conversations WHERE conversation IN ({marks})", k)
    await db.execute(f"DELETE FROM conversations WHERE key IN ({marks})", k)
    await db.execute(f"DELETE FROM identities WHERE key IN ({marks}) OR person IN ({marks})",
                     k + k)
