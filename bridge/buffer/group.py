"""Group commit for work that arrives together: one transaction for many callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

MAX_GROUP = 1000  # items per transaction; bounds one transaction's time and memory


class GroupCommit:
    """Items (appends, completions) that arrive while a commit is under way share the next.

    One group is in flight at a time: under load the groups grow, so each caller costs a
    share of one transaction instead of one of its own. A group that fails is retried one
    item at a time, so one bad item fails alone. `commit` returns one result per item; an
    exception among them is raised to that item's caller only.
    """

    def __init__(self, commit: Callable[[list[Any]], Awaitable[list[Any]]],
                 limit: int = MAX_GROUP) -> None:
        self._commit = commit
        self._limit = limit
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.grouped = 0  # appends that shared a commit with others

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:self._limit], self._pending[self._limit:]
            try:
                counts = await self._commit([item for item, _ in group])
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc=exc)
                    continue
                for item, future in group:  # alone, so one bad append fails alone
                    try:
                        _settle(future, (await self._commit([item]))[0])
                    except Exception as alone:
                        _settle(future, exc=alone)
                continue
            if len(group) > 1:
                self.grouped += len(group)
            for (_, future), count in zip(group, counts, strict=True):
                _settle(future, count)


def _settle(future: asyncio.Future[Any], value: Any = None,
            exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is None and isinstance(value, Exception):
        exc = value
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
