"""Read a chat export (text file or WhatsApp's .zip) and store its messages in the buffer.

The importer opens the buffer as a plain writer, without the runner lock: a running
bridge keeps serving and draining while it appends. SQLite (WAL, BEGIN IMMEDIATE, a busy
timeout on both sides) serialises the two writers; each chunk is one short transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.buffer import Buffer
from bridge.errors import BridgeError
from bridge.model import Message

MAX_TEXT = 200 * 1024 * 1024  # the chat text of the largest export is a few tens of MB
MAX_RATIO = 100  # chat text deflates 5-15x; far more is a zip bomb
RATIO_FLOOR = 1024 * 1024  # small entries may compress oddly well; judge ratios above this
CHUNK = 500  # messages per buffer commit
# Seconds the write lock is left free between chunks, for a live bridge's commits waiting
# in SQLite's busy handler. Without it the next chunk, 0.75 ms of encoding away, usually
# took the lock first: 18,000 messages imported beside a runner appending every 5 ms let
# 11 of its appends in (worst wait 35 ms), sometimes none; with 25 ms, ~170 (worst 6 ms),
# for +0.9 s on the import.
CHUNK_PAUSE = 0.025
_READ = 1024 * 1024


class ExportError(BridgeError):
    """The export file cannot be read safely; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing did: new and already present counts, and the sinks that will get them."""

    new: int
    present: int
    sinks: tuple[str, ...]


# -- reading ------------------------------------------------------------------------------

def read_export(path: str | Path, max_size: int = MAX_TEXT,
                max_ratio: float = MAX_RATIO) -> tuple[str, str]:
    """(text, name) of a chat export: the file itself, or the chat .txt inside a .zip."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return read_zip(path, max_size, max_ratio)
        size = path.stat().st_size
        if size > max_size:
            raise ExportError(f"{path.name} is {size // 2**20} MB, more than the "
                              f"{max_size // 2**20} MB a chat export can be")
        return decode(path.read_bytes()), path.name
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_zip(path: Path, max_size: int = MAX_TEXT,
             max_ratio: float = MAX_RATIO) -> tuple[str, str]:
    """The chat text of a WhatsApp export .zip, read in memory (nothing is extracted)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = chat_entry(archive.infolist(), path.name)
            name = entry_name(info)
            _check_sizes(info.file_size, info.compress_size, name, max_size, max_ratio)
            data = bytearray()
            with archive.open(info) as entry:
                while chunk := entry.read(_READ):
                    data += chunk
                    _check_sizes(len(data), info.compress_size, name, max_size, max_ratio)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise ExportError(f"{path.name}: not a readable zip ({exc}); unzip it and pass the "
                          ".txt file instead") from None
    except RuntimeError as exc:  # encrypted entries
        raise ExportError(f"{path.name}: {exc}") from None
    return decode(bytes(data)), name


def entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's file name without any folders (which are ignored, never followed)."""
    return PurePosixPath(info.filename.replace("\\", "/")).name


def chat_entry(infos: Sequence[zipfile.ZipInfo], archive: str) -> zipfile.ZipInfo:
    """The chat's entry: `_chat.txt` (iOS), `WhatsApp Chat ...txt` (Android), or the only .txt."""
    texts = [i for i in infos if not i.is_dir() and entry_name(i).lower().endswith(".txt")]
    chats = [i for i in texts if entry_name(i) == "_chat.txt"
             or entry_name(i).startswith("WhatsApp Chat")]
    if len(chats) == 1:
        return chats[0]
    if len(texts) == 1:
        return texts[0]
    if not texts:
        raise ExportError(f"{archive} holds no .txt file; is it a WhatsApp chat export?")
    names = ", ".join(sorted(entry_name(i) for i in texts)[:5])
    raise ExportError(f"{archive} holds several .txt files ({names}); unzip it and pass the "
                      "chat's .txt file instead")


def _check_sizes(size: int, compressed: int, name: str, max_size: int,
                 max_ratio: float) -> None:
    if size > max_size:
        raise ExportError(f"{name} unpacks to more than {max_size // 2**20} MB; that is not "
                          "a chat export (refused without unpacking it)")
    if size > RATIO_FLOOR and size > max_ratio * max(compressed, 1):
        raise ExportError(f"{name} unpacks to over {max_ratio:g} times its packed size, as "
                          "zip bombs do (refused without unpacking it)")


def decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), or UTF-16 when it starts with a UTF-16 BOM."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


# -- time zone ----------------------------------------------------------------------------

def resolve_zone(name: str | None, configured: str | None) -> tuple[tzinfo | None, str]:
    """(zone, how it was chosen): --tz, else server.timezone, else this computer's zone.

    None stands for this computer's local time when it has no IANA name we can find.
    """
    for value, origin in ((name, "--tz"), (configured, "server.timezone")):
        if value:
            return _zone(value, origin), f"{value} (from {origin})"
    local = system_zone_name()
    if local:
        return ZoneInfo(local), f"{local} (this computer's time zone; pass --tz to change)"
    return None, "this computer's local time (pass --tz to change)"


def _zone(value: str, origin: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"{origin} {value!r} is not a known time zone (use an IANA name "
                          "like Asia/Kolkata or Europe/Berlin)") from None


def system_zone_name() -> str | None:
    """The IANA name of this computer's zone: $TZ, else where /etc/localtime points."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for candidate in candidates:
        if candidate:
            try:
                ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return candidate
    return None


# -- storing ------------------------------------------------------------------------------

async def store(path: str, messages: Sequence[Message], *, synchronous: str = "full",
                chunk: int = CHUNK, progress: Callable[[int], None] | None = None,
                pause: float = CHUNK_PAUSE) -> Stored:
    """Append `messages` in chunks, `pause` s apart so that a live bridge's commits get
    in between; a failure says how far it got (re-running is safe)."""
    try:
        buffer = await Buffer.open(path, synchronous)  # not runner: a live bridge may hold that
    except (sqlite3.Error, OSError) as exc:
        raise ExportError(f"cannot open the buffer {path}: {exc}") from None
    new = done = 0
    try:
        for start in range(0, len(messages), chunk):
            if start:
                await asyncio.sleep(pause)
            part = messages[start:start + chunk]
            try:
                new += await buffer.append(part)
            except (sqlite3.Error, OSError) as exc:
                where = part[0].raw.get("export_line", "?")
                raise ExportError(
                    f"stopped at the message of line {where} ({done} of {len(messages)} "
                    f"messages written, {new} of them new): {exc}. Nothing after it was "
                    "stored; run the same import again to finish (stored messages are not "
                    "added twice)") from None
            done += len(part)
            if progress:
                progress(len(part))
        sinks = tuple(s["sink"] for s in await buffer.sinks() if s["enabled"])
    finally:
        await buffer.close()
    return Stored(new, len(messages) - new, sinks)
