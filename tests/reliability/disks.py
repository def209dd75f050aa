"""Real filesystems that say no: a small tmpfs (fills up, remounts read-only), chattr +i.

Mounting needs root; without it the fixture skips with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs at tmp_path/disk, or a skip saying why it cannot be had."""
    target = tmp_path / "disk"
    target.mkdir()
    try:
        done = mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run mount ({exc}): the tmpfs variants need root")
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here ({done.stderr.strip()}); "
                    "the SQLite max_page_count variant still runs")
    try:
        yield target
    finally:
        mount("-o", "remount,rw", str(target))
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Fill what is left of the filesystem with a file of its own (another process's)."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def chattr(flag: str, path: Path) -> None:
    """`chattr +i` / `-i`: immutable even to root; skip if this filesystem lacks it."""
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        pytest.skip(f"chattr {flag} is not supported here ({done.stderr.strip()})")
