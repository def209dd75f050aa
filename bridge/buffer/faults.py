"""What a storage error means to the person running the bridge, in one line."""

from __future__ import annotations

import errno
import os
import sqlite3

_FULL = "the disk is full ({error}); free space on the filesystem that holds it"
_READ_ONLY = ("the file cannot be written ({error}); make the file and its directory writable "
              "(permissions, `chattr -i`, a read-only mount)")
_DAMAGED = ("the file is damaged or not an SQLite database ({error}); restore it from a backup, or "
            "move it and its -wal and -shm files aside to start with an empty buffer")
_BY_ERRNO = {errno.ENOSPC: _FULL, errno.EDQUOT: _FULL, errno.EROFS: _READ_ONLY,
             errno.EACCES: _READ_ONLY, errno.EPERM: _READ_ONLY}


def sqlite_name(exc: BaseException) -> str:
    """SQLite's name for the error (e.g. SQLITE_CORRUPT), or '' for anything else."""
    return getattr(exc, "sqlite_errorname", "") or "" if isinstance(exc, sqlite3.Error) else ""


def is_damage(exc: BaseException) -> bool:
    """The file itself is damaged: no retry helps until a person repairs it."""
    name = sqlite_name(exc)
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


def explain(path: str, exc: BaseException) -> str:
    """`buffer.path <file>: what is wrong; what to do` for an error opening or writing it."""
    error = str(exc) or type(exc).__name__
    name = sqlite_name(exc)
    if is_damage(exc):
        what = _DAMAGED
    elif name == "SQLITE_FULL":
        what = _FULL
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        what = _READ_ONLY
    elif isinstance(exc, IsADirectoryError):
        what = "it is a directory; point buffer.path at a file in it, e.g. {path}/buffer.db"
    elif isinstance(exc, OSError) and exc.errno in _BY_ERRNO:
        what = _BY_ERRNO[exc.errno]
    elif name.startswith("SQLITE_IOERR") and _no_room(path):
        what = _FULL  # SQLite reports a full disk while sizing the -shm file as an I/O error
    elif name.startswith("SQLITE_IOERR"):
        what = "the file cannot be read or written ({error}); check the disk and its filesystem"
    else:
        what = "the file cannot be opened ({error})"
    return f"buffer.path {path}: " + what.format(error=error, path=path.rstrip("/"))


def _no_room(path: str) -> bool:
    """Whether the filesystem holding `path` has less than a megabyte left for us."""
    try:
        info = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < 1 << 20
