"""One-off syncs a source asks its provider for (WhatsApp coexistence: history, contacts):
when it was requested, how far it got, and why it stopped. All their SQL lives here
(the table: bridge.buffer.tables.source_syncs).

A chunk of a sync may arrive twice (a webhook retry) or out of order: chunks are kept as a
set, progress never goes back, messages count only the new ones the caller stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bridge.buffer.codec import from_timestamp
from bridge.buffer.compiler import P, Query
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import TEXT, source_syncs

f = source_syncs.c
STATES = ("requested", "arriving", "done", "declined", "failed")
FINAL = ("done", "declined", "failed")
_KEY = (f.source == P("source"), f.account == P("account"), f.kind == P("kind"))
_COLUMNS = ("source", "account", "kind", "state", "requested_at", "request_id", "progress",
            "phase", "chunks", "messages", "detail", "updated_at")

FIRST = Query(lambda insert: insert(source_syncs).values(
    source=P("source"), account=P("account"), kind=P("kind"), state=P("state"),
    updated_at=P("now")).on_conflict_do_nothing(), "first source sync row")
LOCKED = Query(sa.select(*(f[c] for c in _COLUMNS)).where(*_KEY).with_for_update(),
               "source sync row")
SAVE = Query(sa.update(source_syncs).values(
    {c: P(c) for c in _COLUMNS if c not in ("source", "account", "kind")}).where(*_KEY),
    "save source sync")
ALL = Query(sa.select(*(f[c] for c in _COLUMNS)).where(
    sa.or_(P("only", type_=TEXT).is_(None), f.source == P("only", type_=TEXT)))
    .order_by(f.source, f.account, f.kind), "source syncs")


@dataclass(frozen=True, slots=True)
class SyncNote:
    """What happened to a sync: any field left None changes nothing.

    state: a new state (a final one is never left for "arriving"); phase/chunk: a chunk
    seen (chunk is its order within the phase); progress: the provider's 0-100 (100 means
    done); messages: new messages stored from it; detail: why it was declined or failed.
    """

    state: str | None = None
    requested_at: float | None = None
    request_id: str | None = None
    phase: int | None = None
    chunk: int | None = None
    progress: int | None = None
    messages: int = 0
    detail: str | None = None


async def note(db: Connector, source: str, account: str, kind: str, what: SyncNote,
               now: float) -> dict[str, Any]:
    """Merge `what` into the sync's row (created on first note); the row after it."""
    if what.state is not None and what.state not in STATES:
        raise ValueError(f"sync state must be one of {STATES}, not {what.state!r}")
    key = {"source": source, "account": account, "kind": kind}
    await db.run(FIRST, **key, state=what.state or "arriving", now=now)
    row = dict(zip(_COLUMNS, await db.one(LOCKED, **key), strict=True))
    merged = _merged(row, what, now)
    await db.run(SAVE, **key, **{c: merged[c] for c in _COLUMNS if c not in key})
    return _public(merged)


def _merged(row: dict[str, Any], what: SyncNote, now: float) -> dict[str, Any]:
    new = dict(row)
    chunks = set(json.loads(row["chunks"] or "[]"))
    if what.chunk is not None or what.phase is not None:
        chunks.add(f"{what.phase if what.phase is not None else '-'}:"
                   f"{what.chunk if what.chunk is not None else '-'}")
    new["chunks"] = json.dumps(sorted(chunks))
    if what.phase is not None:
        new["phase"] = max(row["phase"] or 0, what.phase)
    if what.progress is not None:
        new["progress"] = max(row["progress"] or 0, min(100, what.progress))
    new["messages"] = (row["messages"] or 0) + max(0, what.messages)
    for name in ("requested_at", "request_id", "detail"):
        if getattr(what, name) is not None:
            new[name] = getattr(what, name)
    new["state"] = _state(row["state"], what, new["progress"])
    new["updated_at"] = now
    return new


def _state(current: str, what: SyncNote, progress: int | None) -> str:
    if what.state in ("declined", "failed", "done", "requested"):
        return what.state if not (what.state == "requested" and current in FINAL) else current
    if progress == 100:
        return "done"
    if current in FINAL:
        return current  # a late chunk of a finished sync changes its counts, not its state
    return what.state or ("arriving" if what.chunk is not None or what.phase is not None
                          or what.progress is not None or what.messages else current)


async def all_syncs(db: Connector, source: str | None = None) -> list[dict[str, Any]]:
    """Every sync (of `source`, when given), oldest key first."""
    return [_public(dict(zip(_COLUMNS, row, strict=True)))
            for row in await db.rows(ALL, only=source)]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["chunks"] = len(json.loads(row["chunks"] or "[]"))
    out["requested_at"] = from_timestamp(row["requested_at"])
    out["updated_at"] = from_timestamp(row["updated_at"])
    return out
