"""Issue 13, item 2: a bad buffer at startup makes `bridge run` exit at once, saying why.

It used to neither listen nor exit (a connection thread left open kept the process alive,
with the runner lock held), so a service manager never restarted it. Now it exits 1 with
one line (which file, what is wrong, what to do), and once the file is fixed the next
start serves. The files are made bad for real: `chattr +i`, a zeroed header, a full tmpfs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bridge.buffer import Buffer
from bridge.errors import BufferUnavailable
from tests.helpers import free_port, message
from tests.processes import BridgeProcess, failed_start
from tests.reliability.disks import chattr, fill
from tests.reliability.support import whatsapp_config


def _config(tmp_path: Path, db: Path) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(whatsapp_config(db, port=port))
    return config, port


def _starts(config: Path, port: int) -> None:
    """The next start serves (healthz 200): nothing of the failed one stays behind."""
    bridge = BridgeProcess(config, port).start()
    bridge.stop()
    assert bridge.proc.returncode == 0


async def _buffer_with_leases(db: Path) -> None:
    """A buffer as a killed runner leaves it: batches leased for an hour."""
    buffer = await Buffer.open(db, runner=True)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(n) for n in range(20)])
    assert await buffer.claim("crm", 10, lease=3600)
    await buffer.close()  # leases are not released on close: as after kill -9


def test_immutable_buffer_exits_with_the_reason_and_starts_once_writable(tmp_path):
    db = tmp_path / "buffer.db"
    asyncio.run(_buffer_with_leases(db))
    config, port = _config(tmp_path, db)
    chattr("+i", db)
    try:
        line = failed_start(config)
    finally:
        chattr("-i", db)
    assert line.startswith(f"Error: buffer.path {db}: the file cannot be written"), line
    assert "chattr -i" in line
    _starts(config, port)


def test_zeroed_header_exits_with_the_reason(tmp_path):
    db = tmp_path / "buffer.db"
    asyncio.run(_buffer_with_leases(db))
    with open(db, "r+b") as out:
        out.write(b"\0" * 100)
    config, port = _config(tmp_path, db)
    line = failed_start(config)
    assert line.startswith(f"Error: buffer.path {db}: the file is damaged or not an SQLite "
                           "database"), line
    assert "restore it from a backup" in line
    db.rename(tmp_path / "damaged.db")  # what the message says to do
    _starts(config, port)


def test_full_disk_with_leases_of_a_killed_run_exits_and_starts_once_space_returns(
        tmpfs, tmp_path):
    db = tmpfs / "buffer.db"
    asyncio.run(_buffer_with_leases(db))
    filler = fill(tmpfs)
    config, port = _config(tmp_path, db)
    line = failed_start(config)
    assert line.startswith(f"Error: buffer.path {db}: the disk is full"), line
    filler.unlink()
    _starts(config, port)


async def test_a_failed_open_closes_its_threads_and_gives_the_file_back(tmp_path):
    db = tmp_path / "buffer.db"
    await _buffer_with_leases(db)
    with open(db, "r+b") as out:
        out.write(b"\0" * 100)
    before = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(BufferUnavailable, match="damaged or not an SQLite database"):
            await Buffer.open(db, runner=True)
    for thread in set(threading.enumerate()) - before:
        thread.join(5)  # a stopped connection thread ends a moment after close() returns
        assert not thread.is_alive(), f"{thread.name} was left running"
    db.unlink()
    again = await Buffer.open(db, runner=True)  # the runner lock was released
    await again.close()
