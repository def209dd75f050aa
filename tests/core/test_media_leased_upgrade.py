"""Schema 17 (media_leased, a partial index on media.lease_owner): a buffer made by the
code at schema 16, with media jobs fetched, failed, due and leased mid-fetch, upgrades in
place on both engines with nothing lost, its schema then the same as a new buffer's."""

from __future__ import annotations

import pytest

from bridge.buffer import Buffer
from bridge.buffer.migrations import VERSION
from tests.backends import POSTGRES, fresh_schema_url, rows
from tests.core.test_media_lease_upgrade import make_old
from tests.core.test_schema import (
    _comparable,
    _fresh_postgres,
    _fresh_sqlite,
    postgres_catalogue,
    sqlite_catalogue,
)

BEFORE_17 = "6ce01b07fa864ee2edd7aea9958b54b91619c650"  # the last commit at schema 16
LEASED_UNTIL = 1_800_003_600.0

async def _check_upgraded(buffer: Buffer, owner: str | None) -> None:
    """Every job as it was, the lease and its owner kept; the leased job is not due."""
    assert await rows(buffer, "SELECT message_id, state, lease_until, lease_owner, path,"
                      " reason FROM media ORDER BY message_id") == [
        (1, "fetched", None, None, "/media/ab/" + "ab" * 32, None),
        (2, "dead", None, None, None, "gone at the provider"),
        (3, "pending", LEASED_UNTIL, owner, None, None),
        (4, "pending", None, None, None, None)]
    buffer.media_sources = {"whatsapp": None}
    (due,) = await buffer.media_claim("whatsapp", 4, 7200, now=1_800_000_010)
    assert due.message_id == 4


async def test_an_sqlite_buffer_of_schema_16_gets_the_media_leased_index(tmp_path):
    path = tmp_path / "old.db"
    make_old(tmp_path, str(path), BEFORE_17)
    buffer = await Buffer.open(path)
    try:
        await _check_upgraded(buffer, None)
        assert await rows(buffer, "PRAGMA user_version") == [(VERSION,)]
    finally:
        await buffer.close()
    assert "media_leased" in sqlite_catalogue(path)["media"]["indexes"]
    assert _comparable(sqlite_catalogue(path)) == await _fresh_sqlite(tmp_path)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_a_postgres_buffer_of_schema_16_gets_the_media_leased_index(tmp_path):
    async with fresh_schema_url() as url:
        owner = make_old(tmp_path, url, BEFORE_17)
        assert owner
        buffer = await Buffer.open(url)
        try:
            await _check_upgraded(buffer, owner)
        finally:
            await buffer.close()
        assert await rows(buffer, "SELECT version FROM schema_version") == [(VERSION,)]
        upgraded = _comparable(await postgres_catalogue(url))
    assert "media_leased" in upgraded["media"]["indexes"]
    assert upgraded == await _fresh_postgres()
