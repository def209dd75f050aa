"""The sink and source suites run on SQLite: what they test does not depend on the
buffer's backend, which tests/core's contract tests cover on both. The end-to-end tests
that matter on PostgreSQL choose both backends themselves (`on_both_backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def buffer_target(tmp_path) -> AsyncIterator[str]:
    yield str(tmp_path / "buffer.db")
