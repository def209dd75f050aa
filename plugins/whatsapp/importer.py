"""Read a chat export (text file or WhatsApp's .zip) and store its messages in the buffer.

`ExportFile` streams the file's lines in the encoding it detects (or is told), as often
as the importer needs to read it; `store` appends messages in chunks as they are made.

The importer opens the buffer as a plain writer, without the runner lock: a running
bridge keeps serving and draining while it appends. SQLite (WAL, BEGIN IMMEDIATE, a busy
timeout on both sides) serialises the two writers; each chunk is one short transaction.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import itertools
import os
import sqlite3
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import BridgeError, Buffer, Message

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


def decode(data: bytes, encoding: str | None = None) -> str:
    """The text of a whole export, its encoding chosen as `detect_encoding` does."""
    chosen = detect_encoding(data[:SAMPLE], lambda: _utf8_error([data]), encoding)
    return data.decode(chosen.codec, errors="replace")


# -- encodings ----------------------------------------------------------------------------

SAMPLE = 64 * 1024  # bytes looked at for a byte order mark or UTF-16's zero bytes
FALLBACK = "cp1252"  # what Windows tools save a chat as when it is not UTF-8
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16")]


@dataclass(frozen=True, slots=True)
class Encoding:
    """How an export's bytes are read: the codec, how it was chosen, and a warning."""

    codec: str
    label: str
    warning: str | None = None


def detect_encoding(sample: bytes, utf8_error: Callable[[], tuple[int, int] | None],
                    requested: str | None = None) -> Encoding:
    """--encoding; else a byte order mark; else UTF-16 by its zero bytes; else UTF-8 when
    the whole file is valid UTF-8 (`utf8_error` says where it is not); else cp1252."""
    if requested:
        try:
            codec = codecs.lookup(requested).name
        except LookupError:
            raise ExportError(f"--encoding {requested!r} is not an encoding Python knows "
                              "(e.g. utf-8, cp1252, latin-1, utf-16)") from None
        return Encoding(codec, f"{requested} (from --encoding)")
    for bom, codec, label in _BOMS:
        if sample.startswith(bom):
            return Encoding(codec, f"{label} (byte order mark)")
    wide = utf16_without_bom(sample)
    if wide:
        return Encoding(wide, f"{wide.upper().replace('UTF-16-', 'UTF-16')} (no byte order "
                              "mark; told by its zero bytes)")
    error = utf8_error()
    if error is None:
        return Encoding("utf-8", "UTF-8")
    line, byte = error
    return Encoding(FALLBACK, "Windows-1252 (cp1252), as the file is not UTF-8",
                    f"line {line} holds byte 0x{byte:02x}, which is not UTF-8, so the file "
                    "is read as Windows-1252 (cp1252); if names or accents look wrong, pass "
                    "--encoding with the file's encoding (e.g. --encoding latin-1)")


def utf16_without_bom(sample: bytes) -> str | None:
    """utf-16-le or utf-16-be when zero bytes fill one side of most byte pairs, as they do
    in UTF-16 text that is mostly Latin letters, digits and punctuation."""
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    even, odd = sample[0:pairs * 2:2].count(0), sample[1:pairs * 2:2].count(0)
    if odd >= pairs * 0.3 and even <= pairs * 0.05:
        return "utf-16-le"
    if even >= pairs * 0.3 and odd <= pairs * 0.05:
        return "utf-16-be"
    return None


def _utf8_error(chunks: Iterable[bytes]) -> tuple[int, int] | None:
    """(line number, byte) of the first byte that is not UTF-8, or None when all is."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    for chunk in chunks:
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            where = max(exc.start - (len(exc.object) - len(chunk)), 0)
            return lines + chunk[:where].count(b"\n"), exc.object[exc.start]
        lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return lines, exc.object[exc.start]
    return None


class ExportFile:
    """A chat export read as a stream of lines, as many times as needed: a text file, or
    the chat's entry in a .zip (never extracted), with the sizes checked while reading."""

    def __init__(self, path: str | Path, encoding: str | None = None,
                 max_size: int = MAX_TEXT, max_ratio: float = MAX_RATIO) -> None:
        self.path = Path(path)
        self.max_size, self.max_ratio = max_size, max_ratio
        self.replaced = 0  # characters that could not be decoded, in the last read
        self.first_replaced: int | None = None  # the line of the first of them
        try:
            self._zip = zipfile.is_zipfile(self.path)
            if self._zip:
                with zipfile.ZipFile(self.path) as archive:
                    info = chat_entry(archive.infolist(), self.path.name)
                self._entry, self.name = info.filename, entry_name(info)
                _check_sizes(info.file_size, info.compress_size, self.name, max_size,
                             max_ratio)
            else:
                self.name = self.path.name
                size = self.path.stat().st_size
                if size > max_size:
                    raise ExportError(f"{self.name} is {size // 2**20} MB, more than the "
                                      f"{max_size // 2**20} MB a chat export can be")
            with self._bytes() as stream:
                sample = stream.read(SAMPLE)
            self.encoding = detect_encoding(sample, self._utf8_error, encoding)
        except OSError as exc:
            raise ExportError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def lines(self) -> Iterator[str]:
        """The decoded lines, without their line ends (split on \\n only, as `split_lines`)."""
        self.replaced, self.first_replaced = 0, None
        try:
            with self._bytes() as stream:
                text = io.TextIOWrapper(stream, encoding=self.encoding.codec,
                                        errors="replace", newline="\n")
                for number, line in enumerate(text, 1):
                    if "\ufffd" in line:
                        self.replaced += line.count("\ufffd")
                        self.first_replaced = self.first_replaced or number
                    yield line.removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise ExportError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def _utf8_error(self) -> tuple[int, int] | None:
        with self._bytes() as stream:
            return _utf8_error(iter(lambda: stream.read(_READ), b""))

    @contextmanager
    def _bytes(self) -> Iterator[io.BufferedIOBase]:
        if not self._zip:
            with open(self.path, "rb") as stream:
                yield stream
            return
        try:
            with zipfile.ZipFile(self.path) as archive:
                info = archive.getinfo(self._entry)
                with archive.open(info) as entry:
                    yield io.BufferedReader(_Checked(entry, info.compress_size, self))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
            raise ExportError(f"{self.path.name}: not a readable zip ({exc}); unzip it and "
                              "pass the .txt file instead") from None
        except RuntimeError as exc:  # encrypted entries
            raise ExportError(f"{self.path.name}: {exc}") from None


class _Checked(io.RawIOBase):
    """A zip entry's bytes, refused as soon as they grow past the size or ratio limits."""

    def __init__(self, entry: io.BufferedIOBase, packed: int, source: ExportFile) -> None:
        self.entry, self.packed, self.source, self.read_so_far = entry, packed, source, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.entry.read(len(buffer))
        self.read_so_far += len(data)
        _check_sizes(self.read_so_far, self.packed, self.source.name, self.source.max_size,
                     self.source.max_ratio)
        buffer[:len(data)] = data
        return len(data)


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

async def store(path: str, messages: Iterable[Message], *, synchronous: str = "full",
                chunk: int = CHUNK, progress: Callable[[int], None] | None = None,
                pause: float = CHUNK_PAUSE, total: int | None = None) -> Stored:
    """Append `messages` (a list, or a stream read as it goes) in chunks, `pause` s apart so
    that a live bridge's commits get in between; a failure says how far it got (re-running
    is safe). `total`: how many there are, for that message when they are streamed."""
    if total is None and isinstance(messages, Sequence):
        total = len(messages)
    try:
        buffer = await Buffer.open(path, synchronous)  # not runner: a live bridge may hold that
    except (sqlite3.Error, OSError) as exc:
        raise ExportError(f"cannot open the buffer {path}: {exc}") from None
    new = done = 0
    stream = iter(messages)
    try:
        while part := list(itertools.islice(stream, chunk)):
            if done:
                await asyncio.sleep(pause)
            try:
                new += await buffer.append(part)
            except (sqlite3.Error, OSError) as exc:
                where = part[0].raw.get("export_line", "?")
                raise ExportError(
                    f"stopped at the message of line {where} ({done} of {total or '?'} "
                    f"messages written, {new} of them new): {exc}. Nothing after it was "
                    "stored; run the same import again to finish (stored messages are not "
                    "added twice)") from None
            done += len(part)
            if progress:
                progress(len(part))
        sinks = tuple(s["sink"] for s in await buffer.sinks() if s["enabled"])
    finally:
        await buffer.close()
    return Stored(new, done - new, sinks)
