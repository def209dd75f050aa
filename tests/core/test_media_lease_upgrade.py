"""Schema 16 (media.lease_owner): a buffer made by the code at schema 15, with media jobs
in every state and one leased mid-fetch, upgrades in place on both engines with nothing
lost; the lease it had runs out as before, and a new lease names its process (PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.buffer import Buffer
from bridge.buffer.migrations import VERSION
from tests.backends import POSTGRES, fresh_schema_url, rows
from tests.core.test_schema import (
    _comparable,
    _fresh_postgres,
    _fresh_sqlite,
    _old_code,
    postgres_catalogue,
    sqlite_catalogue,
)

BEFORE_16 = "8eb66fc331293cfed70830195aa9c7bace7e9b49"  # the last commit at schema 15
LEASED_UNTIL = 1_800_003_600.0

OLD_SCRIPT = """
import asyncio, sys
from datetime import UTC, datetime
from bridge.buffer import Buffer
from bridge.model import Direction, Media, Message

def photo(i):
    return Message(source="whatsapp", provider_id=f"p{i}", conversation="+919000000001",
                   account="acc", direction=Direction.IN,
                   sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC), kind="image",
                   media=Media(id=f"media-{i}", mime_type="image/jpeg"))

async def main(target):
    buffer = await Buffer.open(target, runner=True)
    buffer.media_sources = {"whatsapp": None}
    await buffer.append([photo(i) for i in range(1, 5)])
    jobs = await buffer.media_claim("whatsapp", 3, 3600, now=1_800_000_000)
    assert [j.message_id for j in jobs] == [1, 2, 3], jobs
    await buffer.media_fetched(jobs[0], "/media/ab/" + "ab" * 32, 10, "ab" * 32, None,
                               now=1_800_000_001)
    await buffer.media_failed(jobs[1], "gone at the provider", None, now=1_800_000_002)
    print(getattr(buffer, "owner", ""))  # the process that leased job 3 (schema 16 on)
    await buffer.close()  # job 3 stays leased (a fetch in progress); job 4 is due

asyncio.run(main(sys.argv[1]))
"""


def make_old(tmp_path: Path, target: str, commit: str = BEFORE_16) -> str | None:
    """A buffer at `target` made by the code of `commit`: four photos' jobs, fetched,
    failed, leased mid-fetch and due. The id of the process that leased job 3, where that
    code names one (PostgreSQL from schema 16), else None."""
    env = {**os.environ, "PYTHONPATH": str(_old_code(tmp_path, commit))}
    done = subprocess.run([sys.executable, "-c", OLD_SCRIPT, target], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


async def _check_upgraded(buffer: Buffer) -> list[tuple]:
    """Every job as it was; the leased one is not taken before its lease ends. The rows."""
    buffer.media_sources = {"whatsapp": None}
    before = await rows(buffer, "SELECT message_id, state, lease_until, lease_owner, path,"
                        " reason FROM media ORDER BY message_id")
    assert before == [(1, "fetched", None, None, "/media/ab/" + "ab" * 32, None),
                      (2, "dead", None, None, None, "gone at the provider"),
                      (3, "pending", LEASED_UNTIL, None, None, None),
                      (4, "pending", None, None, None, None)]
    (due,) = await buffer.media_claim("whatsapp", 4, 7200, now=1_800_000_010)
    assert due.message_id == 4  # job 3's fetch may still run: its lease holds
    (again,) = await buffer.media_claim("whatsapp", 4, 60, now=LEASED_UNTIL + 1)
    assert again.message_id == 3
    return await rows(buffer, "SELECT message_id, lease_owner FROM media"
                      " WHERE state = 'pending' ORDER BY message_id")


async def test_an_sqlite_buffer_of_schema_15_keeps_its_media_jobs_and_leases(tmp_path):
    path = tmp_path / "old.db"
    make_old(tmp_path, str(path))
    buffer = await Buffer.open(path)  # not a runner: a runner's start voids the leases
    try:
        assert await _check_upgraded(buffer) == [(3, None), (4, None)]  # one runner: no owner
    finally:
        await buffer.close()
    assert _comparable(sqlite_catalogue(path)) == await _fresh_sqlite(tmp_path)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_a_postgres_buffer_of_schema_15_keeps_its_media_jobs_and_leases(tmp_path):
    async with fresh_schema_url() as url:
        make_old(tmp_path, url)
        buffer = await Buffer.open(url)
        try:
            assert await _check_upgraded(buffer) == [(3, buffer.owner), (4, buffer.owner)]
        finally:
            await buffer.close()
        assert await rows(buffer, "SELECT version FROM schema_version") == [(VERSION,)]
        upgraded = _comparable(await postgres_catalogue(url))
    assert upgraded == await _fresh_postgres()
