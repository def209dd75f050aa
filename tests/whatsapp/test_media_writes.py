"""A download's bytes are hashed and written in a thread, never on the event loop.

The loop serves the webhooks, whose answer waits for their commit; a write the kernel
holds back (writeback throttling pauses a writer up to 200 ms per call once a disk lags,
a network disk stalls longer) stalled every webhook while a large document arrived. Measured
here (scratch figures in the branch's report): 4 x 100 MB downloads took the loop's time
in FileOut.write, 0.2 ms per 64 KB chunk, over half of it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading

import pytest

from bridge import FileOut

MB = 1024 * 1024


class Disk(io.FileIO):
    """A real file that notes which thread writes to it, and can fail once full."""

    def __init__(self, path, room: int | None = None) -> None:
        super().__init__(path, "wb")
        self.threads: set[int] = set()
        self.room = room

    def write(self, data) -> int:
        self.threads.add(threading.get_ident())
        if self.room is not None and self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


async def stream(out: FileOut, data: bytes) -> None:
    for at in range(0, len(data), 64 * 1024):
        out.write(data[at:at + 64 * 1024])
        await out.drain()


async def test_the_bytes_are_hashed_and_written_off_the_loop_whole_and_in_order(tmp_path):
    data = os.urandom(5 * MB + 123)
    disk = Disk(tmp_path / "part")
    with io.BufferedWriter(disk) as handle:
        out = FileOut(handle, 10 * MB)
        try:
            await stream(out, data[:MB])
            out.reset()  # a refreshed link: the download starts over
            await stream(out, data)
            await out.finish()
        finally:
            out.close()
    assert disk.threads and threading.get_ident() not in disk.threads
    assert (tmp_path / "part").read_bytes() == data
    assert out.digest == hashlib.sha256(data).digest() and out.size == len(data)


async def test_a_disk_that_fills_mid_download_fails_the_download_with_its_error(tmp_path):
    with io.BufferedWriter(Disk(tmp_path / "part", room=2 * MB)) as handle:
        out = FileOut(handle, 10 * MB)
        try:
            with pytest.raises(OSError, match="No space left"):
                await stream(out, os.urandom(4 * MB))
                await out.finish()
        finally:
            out.close()
