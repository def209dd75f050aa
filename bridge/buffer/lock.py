"""One runner per buffer file: an flock on the database file itself, found by its real path.

A separate `.lock` file can be deleted under a running bridge, and a symlinked path names
a different lock file; the database file itself is neither. SQLite takes POSIX (fcntl)
locks on the same file, which Linux keeps apart from flock locks, but closing *any*
descriptor of a file drops every fcntl lock the process holds on it (SQLite's "How To
Corrupt An SQLite Database", 2.2). So this process keeps one descriptor per buffer file,
shared by every Buffer open on it, and closes it only when the last of them has closed
its connections.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from dataclasses import dataclass

from bridge.errors import BridgeError

FileId = tuple[int, int]  # (st_dev, st_ino)


@dataclass
class _Held:
    fd: int
    users: int = 0
    runner: bool = False


_HELD: dict[FileId, _Held] = {}
_GUARD = threading.Lock()


class FileHold:
    """This process's use of one buffer file; a runner's hold also has the exclusive flock."""

    def __init__(self, path: str, file_id: FileId, runner: bool) -> None:
        self.path = path
        self.file_id = file_id
        self.runner = runner
        self._released = False

    @classmethod
    def take(cls, db_path: str, runner: bool) -> FileHold:
        """Open (creating if needed) the database file; as runner, lock it or refuse."""
        real = os.path.realpath(db_path)
        with _GUARD:
            held, file_id = _held_for(real)
            if runner:
                _lock(held, file_id, db_path, real)
            held.users += 1
        return cls(db_path, file_id, runner)

    def is_current(self) -> bool:
        """Whether the configured path still leads to the file this hold opened."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.file_id

    def release(self) -> None:
        """Give the hold back (after this Buffer's connections are closed)."""
        if self._released:
            return
        self._released = True
        with _GUARD:
            held = _HELD[self.file_id]
            if self.runner:
                fcntl.flock(held.fd, fcntl.LOCK_UN)
                held.runner = False
            held.users -= 1
            _forget_if_unused(self.file_id, held)


def _held_for(real: str) -> tuple[_Held, FileId]:
    """The shared descriptor of the file at `real` (opened now if this process has none)."""
    try:
        info = os.stat(real)
    except FileNotFoundError:
        info = None
    if info is not None and (info.st_dev, info.st_ino) in _HELD:
        file_id = (info.st_dev, info.st_ino)
        return _HELD[file_id], file_id
    fd = os.open(real, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{real} is a directory")
    file_id = (info.st_dev, info.st_ino)
    return _HELD.setdefault(file_id, _Held(fd)), file_id


def _lock(held: _Held, file_id: FileId, db_path: str, real: str) -> None:
    busy = held.runner
    if not busy:
        try:
            fcntl.flock(held.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = True
    if busy:
        _forget_if_unused(file_id, held)
        where = db_path if real == db_path else f"{db_path} (that is, {real})"
        raise BridgeError(f"another bridge process is running on {where} "
                          "(stop it, or give this one its own buffer.path)")
    held.runner = True


def _forget_if_unused(file_id: FileId, held: _Held) -> None:
    if held.users == 0 and not held.runner:
        os.close(held.fd)
        del _HELD[file_id]
