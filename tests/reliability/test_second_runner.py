"""Issue 13, weakness "second runner": one `bridge run` per buffer file, however it is named.

The lock used to be a separate `<buffer>.lock` file: a second runner reached the same
database through a symlink (a different lock file), or started after that file was
deleted, and released the first one's leases. The lock is now an flock on the database
file itself: a symlink leads to the same file, and there is no lock file to delete.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.buffer import Buffer
from tests import oneshot
from tests.backends import query
from tests.helpers import free_port, message
from tests.processes import BridgeProcess, failed_start
from tests.reliability.support import whatsapp_config


def _config(tmp_path: Path, name: str, db: Path) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / f"{name}.yaml"
    config.write_text(whatsapp_config(db, port=port))
    return config, port


async def _leased(db: Path) -> list[tuple]:
    """The buffer's leases, read by a plain (non-runner) buffer."""
    buffer = await Buffer.open(db)
    try:
        return await query(buffer, "SELECT id, lease_token FROM batches WHERE state = 'leased'")
    finally:
        await buffer.close()


async def _lease_one(db: Path) -> None:
    buffer = await Buffer.open(db, runner=True)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    assert await buffer.claim("crm", 10, lease=3600)
    await buffer.close()


def _second_is_refused(tmp_path: Path, first_db: Path, second_db: Path) -> None:
    asyncio.run(_lease_one(first_db))
    first = BridgeProcess(*_config(tmp_path, "first", first_db))
    first.start()
    try:
        leases = asyncio.run(_leased(first_db))  # the first runner released the old ones
        for stale in first_db.parent.glob("*.lock"):
            stale.unlink()  # what defeated the old lock file
        second, _ = _config(tmp_path, "second", second_db)
        line = failed_start(second)
        assert "another bridge process is running on" in line, line
        assert str(first_db.resolve()) in line
        assert asyncio.run(_leased(first_db)) == leases  # untouched by the second
        assert oneshot.get(first.url + "/healthz", timeout=10).status_code == 200
    finally:
        first.stop()


def test_second_runner_through_a_symlink_is_refused(tmp_path):
    real = tmp_path / "data" / "buffer.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    _second_is_refused(tmp_path, real, link)


def test_second_runner_after_the_lock_file_was_deleted_is_refused(tmp_path):
    db = tmp_path / "buffer.db"
    _second_is_refused(tmp_path, db, db)


async def test_the_runner_hold_survives_a_plain_buffer_closing_on_the_same_file(tmp_path):
    """Readers come and go (bridge status, the importer); the runner's lock stays."""
    db = tmp_path / "buffer.db"
    runner = await Buffer.open(db, runner=True)
    try:
        reader = await Buffer.open(tmp_path / "." / "buffer.db")
        await reader.close()
        line = await asyncio.to_thread(failed_start, _config(tmp_path, "second", db)[0])
        assert "another bridge process is running on" in line
    finally:
        await runner.close()
