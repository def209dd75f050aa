"""The storage port: what the core needs from a buffer, declared as types.

The core depends on these, never on a backend: `Storage` is every buffer (both
backends implement it through bridge.buffer.store.Buffer); the narrower protocols name
what one part of the core uses (a sink's drain loop needs `Deliveries`, the status page
`StatusReads`). `SharedBuffer` is what only a buffer shared by several processes offers
(PostgreSQL): rate budgets, wake-ups, the process registry and lease reaping. Check for it
with isinstance(buffer, SharedBuffer), never by looking for a method.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.directory import Directory
from bridge.buffer.media import MediaJob
from bridge.buffer.syncs import SyncNote
from bridge.contracts import Outcome, TargetFailure
from bridge.model import Identity, Message, StatusUpdate

T = TypeVar("T")


@runtime_checkable
class Appends(Protocol):
    """Writes on the webhook path (the buffer side of bridge.contracts.Ingest)."""

    async def append(self, messages: Iterable[Message], statuses: Iterable[StatusUpdate] = (),
                     contacts: Mapping[str, str] | None = None,
                     identities: Iterable[Identity] = ()) -> int: ...

    async def heartbeat(self) -> None: ...


@runtime_checkable
class SourceSyncs(Protocol):
    """A source's one-off provider syncs (WhatsApp coexistence history and contacts): noted
    as they are requested and as their chunks arrive, read by the CLI and /status."""

    async def note_source_sync(self, source: str, account: str, kind: str, what: SyncNote,
                               now: float | None = None) -> dict[str, Any]: ...

    async def source_syncs(self, source: str | None = None) -> list[dict[str, Any]]: ...


@runtime_checkable
class Deliveries(Appends, Protocol):
    """What a sink's drain loop needs: claims, outcomes, backfill (a source's recovered
    messages are appended), its record directory, and its backlog for the charts."""

    async def install_sinks(self, names: Sequence[str]) -> list[str]: ...

    async def needs_backfill(self, sink: str) -> bool: ...

    async def installed_at(self, sink: str) -> float | None: ...

    async def backfill(self, sink: str, since: float) -> int: ...

    async def recovered(self, sink: str, keys: Sequence[tuple[str, str]], since: float,
                        stored_since: float) -> int: ...

    async def claim(self, sink: str, limit: int, lease: float, now: float | None = None,
                    backfill: bool | None = None, batch_size: int | None = None,
                    history_days: float | None = None, after_lease: float = 0.0
                    ) -> list[Claim]: ...

    async def complete(self, claim: Claim, outcomes: Sequence[Outcome], policy: Policy,
                       now: float | None = None) -> dict[str, int]: ...

    async def renew(self, claim: Claim, lease: float, now: float | None = None) -> bool: ...

    async def record_landed(self, sink: str, key: str, external_id: str,
                            now: float | None = None) -> None: ...

    async def record_attempt(self, sink: str, batch_key: str, failure: TargetFailure,
                             now: float | None = None) -> None: ...

    async def retry_now(self, sink: str, now: float | None = None) -> int: ...

    async def record_sync(self, sink: str, at: float, next_at: float | None,
                          error: str | None) -> None: ...

    def directory(self, sink: str) -> Directory: ...

    async def sinks(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class MediaJobs(Protocol):
    """What the media fetchers need."""

    media_sources: dict[str, str | None]
    media_files: asyncio.Lock  # held while a file and its row change together

    async def media_paths(self) -> set[str]: ...

    async def media_stored_bytes(self) -> int: ...

    async def media_claim(self, source: str, limit: int, lease: float,
                          now: float | None = None) -> list[MediaJob]: ...

    async def media_fetched(self, job: MediaJob, path: str, size: int, sha256: str,
                            mime_type: str | None, now: float | None = None) -> None: ...

    async def media_failed(self, job: MediaJob, reason: str, retry_at: float | None,
                           now: float | None = None) -> None: ...

    async def media_hold(self, source: str, reason: str | None) -> int: ...

    async def media_give_back(self, message_ids: Sequence[int]) -> int: ...

    async def media_next_due(self, source: str) -> float | None: ...

    async def media_retry_now(self, source: str, *, every: bool,
                              now: float | None = None) -> int | None: ...


@runtime_checkable
class StatusReads(Protocol):
    """What `bridge status`, /status and the status page read."""

    async def snapshot(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """`work(view)`, every read of `view` (these methods) in one snapshot."""
        ...

    async def sinks(self) -> list[dict[str, Any]]: ...

    async def conversations(self, sink: str | None = None, search: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]: ...

    async def conversation_list(self, sink: str | None, **kwargs: Any) -> dict[str, Any]: ...

    async def conversation(self, key: str, limit: int = 2000) -> dict[str, Any] | None: ...

    async def dead_letters(self, sink: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]: ...

    async def dead_targets(self, sink: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]: ...

    async def hourly(self, since: float) -> dict[tuple[int, str], int]: ...

    async def count_messages(self) -> int: ...

    async def media_counts(self) -> dict[str, dict[str, Any]]: ...

    async def numbers(self, sink: str) -> list[dict[str, Any]]: ...

    async def held_chats(self, sink: str) -> list[dict[str, Any]]: ...

    async def failed_sends(self, limit: int) -> list[dict[str, Any]]: ...

    async def people_counts(self) -> dict[str, int]: ...

    async def sync_health(self, sink: str) -> dict[str, Any]: ...

    async def previews(self, message_ids: Sequence[int] = (),
                       conversations: Sequence[str] = ()) -> dict[Any, Any]: ...

    async def overdue_files(self, sink: str, older_than: float,
                            limit: int) -> tuple[int, list[dict[str, Any]]]: ...

    def directory(self, sink: str) -> Directory: ...


class Budget(Protocol):
    """One CRM rate budget shared by every process (bridge.buffer.shared.RateBudget)."""

    async def take(self, calls: int, spacing: float) -> Any: ...

    async def pause(self, seconds: float) -> None: ...


class Runnable(Protocol):
    """A background loop: run until `stop` is set."""

    connected: bool

    async def run(self, stop: Any) -> None: ...


class SharedBuffer(ABC):
    """The powers of a buffer several bridge processes share (PostgreSQL)."""

    owner: str  # this process: its lease tokens start with it

    @abstractmethod
    def shared_budget(self, sink: str, budget: str) -> Budget:
        """The CRM budget `budget` of `sink`, shared by every process on the buffer."""

    @abstractmethod
    def listener(self, on_wake: Callable[[str, str | None], None]) -> Runnable:
        """A loop that calls on_wake(action, sink) when any process asks for a drain."""

    @abstractmethod
    async def notify(self, action: str, sink: str | None) -> None:
        """Ask every process to drain `sink` (every sink when None) now."""

    @abstractmethod
    async def beat(self, me: Mapping[str, Any], sinks: list[str],
                   drained: Mapping[str, float]) -> None:
        """This process is alive (host, pid, version), runs `sinks`, last delivered at."""

    @abstractmethod
    async def leave(self) -> None:
        """This process stops cleanly."""

    @abstractmethod
    async def processes(self) -> list[dict[str, Any]]:
        """Every registered process, with its heartbeat's age."""

    @abstractmethod
    async def release_dead_leases(self, dead_after: float,
                                  spare: Mapping[str, float] | None = None,
                                  after_lease: Mapping[str, float] | None = None) -> int:
        """Free the leases of processes silent for `dead_after` seconds whose delivery has
        surely ended (`spare`: per sink, how long a lease outlasts deliver_timeout); their
        retry waits until `after_lease` (per sink) after the lease's end; how many."""
