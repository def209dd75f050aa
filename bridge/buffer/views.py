"""The status reads (the port's StatusReads), each written once over `read()`.

A Buffer runs each in a read() of its own: one snapshot per call. `snapshot(work)` hands
`work` a Snapshot instead, whose reads all run in one read(): the figures a report
composes from several of them (a sink's backlog and its retries, a number's open windows
and its last sync, the counts and the lists they count) agree with each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import bridge.buffer.media as media
import bridge.buffer.reads as reads
from bridge.buffer.connectors import Connector
from bridge.buffer.directory import Directory
from bridge.model import Message

T = TypeVar("T")


class ReadMethods:
    """Every status read as one `read()` (the class using it provides read)."""

    async def read(self, work: Callable[[Connector], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def snapshot(self, work: Callable[[Snapshot], Awaitable[T]]) -> T:
        """`work(view)` with every read of `view` in one read(): one snapshot. On SQLite a
        read of the buffer itself inside `work` joins that snapshot (it held a connection
        while waiting for another: with every reader connection held so, a deadlock)."""
        return await self.read(lambda db: work(Snapshot(db)))

    async def sinks(self) -> list[dict[str, Any]]:
        return await self.read(reads.sinks)

    def directory(self, sink: str) -> Directory:
        """The sink's record directory (phone -> CRM record) and unknown numbers."""
        return Directory(self, sink)  # type: ignore[arg-type]  # Buffer and Snapshot write

    async def conversations(self, sink: str | None = None, search: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        return await self.read(lambda db: reads.conversations(db, sink, search, limit))

    async def conversation_list(self, sink: str | None, **kwargs: Any) -> dict[str, Any]:
        """A page of the conversation list (search, sort, show, offset, limit: see reads)."""
        return await self.read(lambda db: reads.conversation_list(db, sink, **kwargs))

    async def conversation(self, key: str, limit: int = 2000) -> dict[str, Any] | None:
        """One conversation with its messages and what each sink did with them."""
        return await self.read(lambda db: reads.conversation(db, key, limit))

    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.read(lambda db: reads.dead_letters(db, sink, limit))

    async def dead_targets(self, sink: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]:
        """Targets given up on (one CRM opportunity of a message ...), with the reason."""
        return await self.read(lambda db: reads.dead_targets(db, sink, limit))

    async def messages(self, conversation: str | None = None, limit: int = 1000) -> list[Message]:
        return await self.read(lambda db: reads.messages(db, conversation, limit))

    async def status_of(self, source: str, provider_id: str) -> dict[str, Any] | None:
        return await self.read(lambda db: reads.status_of(db, source, provider_id))

    async def hourly(self, since: float) -> dict[tuple[int, str], int]:
        """Messages per (unix hour, direction) sent since `since` (the page's chart)."""
        return await self.read(lambda db: reads.hourly(db, since))

    async def count_messages(self) -> int:
        return await self.read(reads.count_messages)

    async def media_counts(self) -> dict[str, dict[str, Any]]:
        return await self.read(media.counts)

    async def numbers(self, sink: str) -> list[dict[str, Any]]:
        """Per business number: what `sink` has in flight or stuck."""
        return await self.read(lambda db: reads.numbers(db, sink))

    async def held_chats(self, sink: str) -> list[dict[str, Any]]:
        """Chats `sink` holds, counted by reason."""
        return await self.read(lambda db: reads.held_chats(db, sink))

    async def failed_sends(self, limit: int) -> list[dict[str, Any]]:
        """Outbound messages WhatsApp reported as failed, newest first."""
        return await self.read(lambda db: reads.failed_sends(db, limit))

    async def sync_health(self, sink: str) -> dict[str, Any]:
        """Batches retrying after an error, the latest error, the last delivery."""
        return await self.read(lambda db: reads.sync_health(db, sink))

    async def previews(self, message_ids: Sequence[int] = (), conversations: Sequence[str] = ()
                       ) -> dict[Any, tuple[str | None, Message]]:
        """(name, Message) per message id and per conversation's newest message."""
        return await self.read(lambda db: reads.previews(db, message_ids, conversations))

    async def overdue_files(self, sink: str, older_than: float,
                            limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Attachments waiting for their file since before `older_than`: count, oldest."""
        return await self.read(lambda db: reads.overdue_files(db, sink, older_than, limit))

    async def people_counts(self) -> dict[str, int]:
        """Group chats and failed sends in the buffer."""
        return await self.read(reads.people_counts)


class Snapshot(ReadMethods):
    """The status reads on one connection, inside the one read() that made it."""

    def __init__(self, db: Connector) -> None:
        self._db = db

    async def read(self, work: Callable[[Connector], Awaitable[T]]) -> T:
        return await work(self._db)

    async def write(self, work: Callable[[Connector], Awaitable[T]]) -> T:
        raise TypeError("a snapshot only reads")
