"""Schema 18 (targets.outages and targets.transient, batches.aside): a buffer made by the
code at schema 17, with an opportunity's target failing (one counted try) in a batch that
waits to retry, upgrades in place on both engines: the target reads back as it was, its
earlier try still counted, and a transient failure after the upgrade is not counted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.buffer import Buffer
from bridge.buffer.delivery import Policy
from bridge.buffer.migrations import VERSION
from bridge.contracts import Outcome
from tests.backends import POSTGRES, fresh_schema_url, rows
from tests.core.test_schema import (
    _comparable,
    _fresh_postgres,
    _fresh_sqlite,
    _old_code,
    postgres_catalogue,
    sqlite_catalogue,
)

BEFORE_18 = "4c02269b0c3cda3059da9f07145ad040a286524f"  # the last commit at schema 17
NOW = 1_800_000_000.0

OLD_SCRIPT = """
import asyncio, sys
from datetime import UTC, datetime
from bridge.buffer import Buffer
from bridge.buffer.delivery import Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Message

async def main(target):
    buffer = await Buffer.open(target, runner=True)
    await buffer.install_sinks(["leadsquared"])
    await buffer.append([Message(source="whatsapp", provider_id="p1",
        conversation="+919000000001", account="acc", direction=Direction.IN,
        sent_at=datetime.fromtimestamp(1_700_000_000, UTC), kind="text", text="hi")])
    (claim,) = await buffer.claim("leadsquared", 10, 60, now=1_800_000_000)
    claim.batch.fail_target(claim.batch.key + ":p1@opp-1", "opportunity opp-1",
                            "LeadSquared transient: HTTP 503", [claim.messages[0].id], 2)
    await buffer.complete(claim, [Outcome.retry("opportunity opp-1: HTTP 503")],
                          Policy(2, lambda n: 1, 1), now=1_800_000_001)
    await buffer.close()

asyncio.run(main(sys.argv[1]))
"""


def make_old(tmp_path: Path, target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(_old_code(tmp_path, BEFORE_18))}
    done = subprocess.run([sys.executable, "-c", OLD_SCRIPT, target], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def _check_upgraded(buffer: Buffer) -> None:
    """The target as stored (one counted try); after it, transient tries are not counted."""
    assert await rows(buffer, "SELECT attempts, outages, transient, state FROM targets") == [
        (1, 0, 0, "failing")]
    assert await rows(buffer, "SELECT aside FROM batches") == [(0,)]
    (claim,) = await buffer.claim("leadsquared", 10, 60, now=NOW + 10)
    (earlier,) = claim.batch.targets.values()
    assert (earlier.attempts, earlier.outages, earlier.counted) == (1, 0, 1)
    failure = claim.batch.fail_target(earlier.key, earlier.label, "LeadSquared transient",
                                      earlier.message_ids, 2, transient=True)
    assert not failure.dead and (failure.attempts, failure.counted) == (2, 1)
    await buffer.complete(claim, [Outcome.retry("waits", transient=True, aside=True)],
                          Policy(2, lambda n: 1, 1, retry_for=3600), now=NOW + 12)
    assert await rows(buffer, "SELECT attempts, outages, transient, state FROM targets") == [
        (2, 1, 1, "failing")]
    assert await rows(buffer, "SELECT aside FROM batches") == [(1,)]


async def test_an_sqlite_buffer_of_schema_17_keeps_its_failing_targets(tmp_path):
    path = tmp_path / "old.db"
    make_old(tmp_path, str(path))
    buffer = await Buffer.open(path)
    try:
        await _check_upgraded(buffer)
        assert await rows(buffer, "PRAGMA user_version") == [(VERSION,)]
    finally:
        await buffer.close()
    assert _comparable(sqlite_catalogue(path)) == await _fresh_sqlite(tmp_path)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_a_postgres_buffer_of_schema_17_keeps_its_failing_targets(tmp_path):
    async with fresh_schema_url() as url:
        make_old(tmp_path, url)
        buffer = await Buffer.open(url)
        try:
            await _check_upgraded(buffer)
        finally:
            await buffer.close()
        assert await rows(buffer, "SELECT version FROM schema_version") == [(VERSION,)]
        upgraded = _comparable(await postgres_catalogue(url))
    assert upgraded == await _fresh_postgres()
