"""One runner per buffer file: an advisory lock next to the database."""

from __future__ import annotations

import fcntl
import os

from bridge.errors import BridgeError


class RunnerLock:
    """Held for as long as a bridge process serves and drains this buffer."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, db_path: str) -> RunnerLock:
        path = db_path + ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BridgeError(
                f"another bridge process is running on {db_path} "
                "(stop it, or give this one its own buffer.path)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
