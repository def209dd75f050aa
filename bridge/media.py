"""Fetching media: a runner per fetching source drains its media jobs into files.

A source that fetches media has a `media` attribute (a MediaFetcher). The core owns the
files: each download is streamed into a temporary file under media_path/tmp (its bytes
hashed and counted as they arrive, so memory stays flat whatever the size), fsynced,
checked against the sha256 the provider stated, and renamed to media_path/<ab>/<sha256>
(content-addressed: the same bytes are stored once). Only then is the job marked fetched,
so a kill at any instant leaves either no file record or a whole file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import random
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from bridge.buffer import MediaJob, MediaJobs, SharedBuffer
from bridge.sizes import format_size

logger = logging.getLogger(__name__)

CLAIM_LIMIT = 4        # downloads at once per source
IDLE_POLL = 5.0        # seconds between looks when nothing is due (appends also wake it)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_STORED = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}")
WRITE_BATCH = 512 * 1024  # bytes a download's writer thread is handed at most at once
# (it takes each chunk at once while idle: a slow download is on the disk as it arrives)
WRITE_AHEAD = 2 * 1024 * 1024  # bytes a download may hold in memory while the disk lags


class MediaGone(Exception):
    """The provider says the media no longer exists: a dead letter with its reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaRetry(Exception):
    """A fetch failed in a way that may pass (outage, expired link, throttling)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(Exception):
    """More bytes arrived than buffer.media_max_bytes allows."""


class Refused(Exception):
    """The bytes would pass buffer.media_max_total or take the disk under media_min_free."""


def free_bytes(directory: str) -> int:
    """Free bytes (for an unprivileged writer) of the disk holding `directory`."""
    return shutil.disk_usage(directory).free


@dataclass
class Room:
    """What a download may still take: the stored total and the disk's free space are
    checked before each chunk is written, so a refused file never touches the disk."""

    policy: MediaPolicy
    stored: int  # bytes of fetched media stored when the download began (each file once)
    others: Callable[[], int]  # bytes the other downloads in progress hold

    def check(self, size: int, chunk: int) -> None:
        """Raise Refused if `chunk` more bytes (not on the disk yet; this download then holds
        `size`) do not fit."""
        policy = self.policy
        if self.stored + self.others() + max(size, 1) > policy.max_total:  # 1: a byte fits
            raise Refused(
                f"refused: {format_size(self.stored)} of media is stored and this file would "
                f"pass buffer.media_max_total ({format_size(policy.max_total)}); raise "
                "buffer.media_max_total (or shorten buffer.retention), then `bridge "
                "dead-letter requeue --media`")
        free = policy.free_space(policy.directory)
        if free - chunk < policy.min_free:
            raise Refused(
                f"refused: the disk of {policy.directory} has {format_size(free)} free, "
                f"under buffer.media_min_free ({format_size(policy.min_free)}), the room kept "
                "for the buffer; free some space or lower buffer.media_min_free, then `bridge "
                "dead-letter requeue --media`")


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the provider said of the file it served (its sha256 is opaque text; size: the
    bytes it said the file has, None when it did not say)."""

    mime_type: str | None = None
    sha256: str | None = None
    size: int | None = None


class MediaFetcher(Protocol):
    """A source's media download: `hold_reason` is why it will not fetch (None: it will)."""

    hold_reason: str | None

    async def fetch(self, job: MediaJob, out: FileOut) -> Fetched:
        """Write the file's bytes to `out` (out.write(chunk), then `await out.drain()`;
        out.reset() to start over); raise MediaGone or MediaRetry on failure."""

    async def close(self) -> None:
        """Release connections."""


class FileOut:
    """A download's destination: counts each chunk and refuses too much on the event loop;
    hashes and writes the bytes in a thread of its own, in order, a batch at a time (a
    large file hashed and written on the loop took over half its time while it arrived,
    and a write the kernel holds back for writeback would stall every webhook)."""

    def __init__(self, handle: BinaryIO, max_bytes: int, room: Room | None = None) -> None:
        self._handle = handle
        self.max_bytes = max_bytes
        self.room = room
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="media-write")
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        # work handed to the thread, in order: (its future, bytes it writes)
        self._queued: deque[tuple[asyncio.Future[None], int]] = deque()
        self._queued_bytes = 0
        self._error: BaseException | None = None
        self.reset()

    def reset(self) -> None:
        """Start over (a second download of the same file after a refreshed link)."""
        self._raise_failure()
        self._batch, self._batch_bytes = [], 0
        self.size = 0
        self._hash = hashlib.sha256()
        self._submit(_truncate, self._handle)  # after the batches queued before, in order

    def write(self, chunk: bytes) -> None:
        """Count `chunk` and queue it (TooLarge, Refused, or the thread's failure raise)."""
        self._raise_failure()
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"the file is larger than buffer.media_max_bytes "
                           f"({self.max_bytes} bytes); raise it to fetch such files")
        if self.room is not None:
            try:  # the bytes not on the disk yet count against its free space too
                self.room.check(self.size, len(chunk) + self._batch_bytes + self._settled())
            except Refused:
                self.size = 0  # refused: it holds no room from the other downloads now
                raise
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= WRITE_BATCH or not self._settled():  # full, or thread idle
            self._send_batch()

    async def drain(self) -> None:
        """Wait while more than WRITE_AHEAD bytes wait for the disk (a fetcher that awaits
        this after each write holds no more than that in memory)."""
        while self._settled() > WRITE_AHEAD:
            await asyncio.wait({self._queued[0][0]})
        self._raise_failure()

    async def finish(self) -> None:
        """Write what is queued, flush and fsync the file; raise the thread's failure."""
        self._send_batch()
        self._submit(_flush, self._handle)
        await asyncio.wait({future for future, _ in self._queued})
        self._settled()
        self._raise_failure()

    def close(self) -> None:
        """Drop what is not written yet and let the thread end (never waits for the disk)."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    @property
    def digest(self) -> bytes:
        return self._hash.digest()

    def _send_batch(self) -> None:
        if self._batch:
            data = b"".join(self._batch) if len(self._batch) > 1 else self._batch[0]
            self._batch, self._batch_bytes = [], 0
            self._submit(_hash_and_write, self._hash, self._handle, data)
            self._queued_bytes += len(data)

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        size = len(args[-1]) if work is _hash_and_write else 0
        future = asyncio.wrap_future(self._thread.submit(self._guarded, work, *args))
        self._queued.append((future, size))

    def _guarded(self, work: Callable[..., None], *args: Any) -> None:
        """In the thread: skip everything after a failure (the file is refused anyway)."""
        if self._error is None:
            try:
                work(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's side
                self._error = exc

    def _settled(self) -> int:
        """Forget the batches written (in order); the bytes still waiting."""
        while self._queued and self._queued[0][0].done():
            self._queued_bytes -= self._queued.popleft()[1]
        return self._queued_bytes

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error


def _hash_and_write(digest: Any, handle: BinaryIO, data: bytes) -> None:
    digest.update(data)
    handle.write(data)


def _truncate(handle: BinaryIO) -> None:
    handle.seek(0)
    handle.truncate()


def sha256_matches(stated: str | None, digest: bytes) -> bool:
    """Whether a provider's sha256 text names these bytes.

    The text is opaque (hex in the Media API, base64-like in some webhooks): it is compared
    in the forms it can take, and one in no known form is not evidence either way.
    """
    return sha256_verdict(stated, digest) is not False


def sha256_verdict(stated: str | None, digest: bytes) -> bool | None:
    """True or False when `stated` is a sha256 in a known form (hex, base64) that names or
    does not name these bytes; None when it is missing or in no known form."""
    if not stated:
        return None
    text = stated.strip()
    if _HEX64.fullmatch(text):
        return text.lower() == digest.hex()
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded == digest if len(decoded) == 32 else None


def check_download(info: Fetched, expected_sha256: str | None, digest: bytes,
                   size: int) -> None:
    """Raise MediaRetry unless the bytes are whole.

    The provider's answer for the file (its lookup) decides: a sha256 in a known form must
    name the bytes, and then they are whole. The webhook's sha256 is opaque text
    (whatsapp-webhooks.md §4: "do not parse it"; hex in some examples, base64-like in
    others): it decides only when the lookup stated none in a known form, and a webhook
    value that disagrees with a lookup value that matched is logged, not enforced (a
    guess made strict would refuse every fetch of the file for 7 days). Without any sha256
    that matched, the size the provider stated must be the size that arrived (a download
    delimited by the connection's close, cut short, is otherwise taken whole)."""
    verified = sha256_verdict(info.sha256, digest)
    if verified is False:
        raise _mismatch(digest, info.sha256)
    told = sha256_verdict(expected_sha256, digest)
    if told is False and verified is None:
        raise _mismatch(digest, expected_sha256)
    if told is False:
        logger.warning("the webhook's sha256 %s does not name the file whose sha256 the "
                       "provider stated and the bytes match (%s); stored", expected_sha256,
                       digest.hex())
    if info.size is not None and size != info.size and not (verified or told):
        raise MediaRetry(f"the download ended after {size} of the {info.size} bytes the "
                         "provider stated (a transfer cut short; fetching again)")


def _mismatch(digest: bytes, stated: str | None) -> MediaRetry:
    return MediaRetry(f"the download's sha256 {digest.hex()} is not the stated {stated} (a "
                      "damaged transfer; fetching again)")


@dataclass
class MediaPolicy:
    """Where files go and how failed fetches back off."""

    directory: str
    max_bytes: int = 100 * 1024 * 1024
    retry_base: float = 30.0
    retry_cap: float = 3600.0
    max_attempts: int = 170
    lease: float = 900.0  # a download past this is taken again (a killed runner's at once)
    max_total: int = 2 * 1024**3  # buffer.media_max_total
    min_free: int = 1024**3  # buffer.media_min_free
    free_space: Callable[[str], int] = free_bytes  # a seam: tests set the disk's free space

    def backoff(self, attempts: int) -> float:
        # the exponent capped: past 2 ** 1023 a float overflows (media_max_attempts ≤ 100000)
        delay = min(self.retry_cap, self.retry_base * 2.0 ** min(max(0, attempts - 1), 62))
        return delay * random.uniform(0.8, 1.0)


class MediaRunner:
    """Fetches one source's media jobs until stopped."""

    def __init__(self, source: str, fetcher: MediaFetcher, buffer: MediaJobs,
                 policy: MediaPolicy, metrics: Any = None) -> None:
        self.source = source
        self.fetcher = fetcher
        self.buffer = buffer
        self.policy = policy
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}  # message id -> its download
        self._outs: dict[int, FileOut] = {}  # message id -> its download's bytes so far
        # in each partial file's name: processes sharing media_path (PostgreSQL) may fetch
        # one job at once (a lease run out while its download goes on); one same-named
        # part, truncated by the other and renamed into place, left a short file recorded
        # as whole
        self._tag = uuid.uuid4().hex[:12]
        self._swept_at = 0.0
        self._hurry = False  # a person asked for a sync (sync-now): see hurry()
        self._hurried_at: float | None = None  # monotonic: when the last hurry was answered
        self._probe: int | None = None  # the message whose fetch a hurry brought forward

    def wake(self) -> None:
        self._wake.set()

    def hurry(self) -> None:
        """A person asked for a sync: fetches waiting for their backoff are brought forward,
        once and bounded. First only the one due first (a probe); when it is fetched (or
        Graph says it is gone: Graph answers), all the others. While Graph still fails,
        the others keep their backoff: a flood of sync-now against a Graph that is down
        costs one try of one file per media_retry_base, never a try of every file."""
        self._hurry = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to CLAIM_LIMIT downloads going; each finishes or fails on its own, and
        a freed place is filled at once (a slow download never holds back the others)."""
        if not await self._prepared(stop):
            return
        try:
            while not stop.is_set():
                try:
                    await self._sweep_again()
                    await self._answer_hurry()
                    busy = bool(await self._start_due())
                except Exception:
                    logger.exception("media fetching for %s failed; will try again",
                                     self.source)
                    busy = False
                if not busy or len(self._running) >= CLAIM_LIMIT:
                    await self._idle(stop)
        finally:
            await self._settle_running()

    async def _prepared(self, stop: asyncio.Event) -> bool:
        """prepare(), again every IDLE_POLL while it fails (media_path not writable yet):
        the runner never dies of it; False when stopped first."""
        while not stop.is_set():
            try:
                await self.prepare()
                return True
            except Exception:
                logger.exception("preparing %s to fetch media of %s failed; trying again "
                                 "in %g s", self.policy.directory, self.source, IDLE_POLL)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), IDLE_POLL)
        return False

    async def prepare(self) -> None:
        """Clear what a killed run left: partial downloads, files no job names; take held
        jobs back, and leased ones where this runner is the buffer's only one (SQLite's
        flock; on a shared buffer a lease may be another process's download under way)."""
        tmp = Path(self.policy.directory) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        await self._sweep()
        await self.buffer.media_hold(self.source, None)

    async def _sweep(self) -> None:
        """Delete partial downloads and files no job names (in a thread: a large media_path
        takes a while to list). On a shared buffer the other processes are alive: what
        they touched within a lease is theirs (a download under way, a file renamed into
        place whose row is not committed yet), and what they leave when killed goes at a
        later sweep (_sweep_again)."""
        shared = isinstance(self.buffer, SharedBuffer)
        self._swept_at = time.time()
        since = self._swept_at - self.policy.lease if shared else None
        root = Path(self.policy.directory)
        await asyncio.to_thread(_sweep_parts, root / "tmp", self.source, self._tag, since)
        async with self.buffer.media_files:  # none of this process's installed meanwhile
            known = await self.buffer.media_paths()
            await asyncio.to_thread(_sweep_files, root, known, since)

    async def _sweep_again(self) -> None:
        """On a shared buffer, sweep once a lease: a killed process's leftovers are young
        when the others start, and may have no restart to wait for."""
        if isinstance(self.buffer, SharedBuffer) and \
                time.time() - self._swept_at > self.policy.lease:
            await self._sweep()

    async def _answer_hurry(self) -> None:
        """hurry(), answered: the first waiting fetch due now, unless the last hurry was
        answered less than media_retry_base ago (then the asks share it)."""
        if not self._hurry:
            return
        self._hurry = False
        now = time.monotonic()
        if self._hurried_at is not None and now - self._hurried_at < self.policy.retry_base:
            logger.info("media of %s: sync-now again within %g s; the media retries keep their "
                        "backoff", self.source, self.policy.retry_base)
            return
        self._probe = await self.buffer.media_retry_now(self.source, every=False)
        self._hurried_at = now  # after: an ask whose write failed does not block the next
        if self._probe is not None:
            logger.info("media of %s: sync-now fetches message %s's file now; the other "
                        "waiting files follow once it comes", self.source, self._probe)

    async def _probed(self, job: MediaJob, answered: bool) -> None:
        """The hurried fetch ended: when Graph answered, every waiting fetch is due now;
        when it failed again, they keep their backoff. Never raises."""
        if job.message_id != self._probe:
            return
        self._probe = None
        if not answered:
            logger.info("media of %s: the fetch sync-now brought forward failed again; the "
                        "other waiting files keep their backoff", self.source)
            return
        try:
            forward = await self.buffer.media_retry_now(self.source, every=True)
        except Exception as exc:  # they are fetched at their backoff, as before
            logger.warning("media of %s: could not bring the waiting fetches forward (%s)",
                           self.source, exc)
            return
        if forward:
            logger.info("media of %s: %d waiting file(s) fetched now (sync-now)", self.source,
                        forward)

    async def step(self) -> bool:
        """Fetch the jobs due now and wait for them; whether there were any."""
        await self._answer_hurry()
        started = await self._start_due()
        if started:
            await asyncio.gather(*started)
        return bool(started)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        """Claim as many due jobs as there are free places, and start each."""
        room = CLAIM_LIMIT - len(self._running)
        if room <= 0:
            return []
        started = []
        for job in await self.buffer.media_claim(self.source, room, self.policy.lease):
            if job.message_id in self._running:  # its lease ran out while it downloads
                continue
            task = asyncio.create_task(self.fetch_one(job), name=f"media-{job.message_id}")
            self._running[job.message_id] = task
            task.add_done_callback(lambda _, key=job.message_id: self._finished(key))
            started.append(task)
        return started

    def _finished(self, message_id: int) -> None:
        self._running.pop(message_id, None)
        self._wake.set()  # a place is free: claim the next due job

    async def _settle_running(self) -> None:
        """Stopping: cut the downloads in progress and give their leases back, so the next
        claim (another process's, or this one's next run) takes them again at once. On a
        shared buffer nothing else would: a starting process leaves the leases it finds
        alone (they may be live downloads), and the registry frees only a gone process's,
        where one stopped cleanly has left the registry."""
        cut = list(self._running)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        try:
            await self.buffer.media_give_back(cut)
        except Exception as exc:  # the buffer gone: the leases run out instead
            logger.warning("media of %s: could not give back the leases of %d download(s) "
                           "cut off by the stop (%s: %s); they are fetched again once the "
                           "leases run out", self.source, len(cut), type(exc).__name__, exc)

    async def fetch_one(self, job: MediaJob) -> None:
        """Download, verify and store one file; record the outcome (never raises)."""
        part = (Path(self.policy.directory) / "tmp"
                / f"{self.source}-{job.message_id}-{self._tag}.part")
        try:
            part.parent.mkdir(parents=True, exist_ok=True)  # media_path deleted meanwhile
            room = Room(self.policy, await self.buffer.media_stored_bytes(),
                        lambda: sum(o.size for k, o in self._outs.items() if k != job.message_id))
            room.check(0, 0)  # already full: refused before anything is written
            with open(part, "wb") as handle:
                out = self._outs[job.message_id] = FileOut(handle, self.policy.max_bytes, room)
                try:
                    info = await self.fetcher.fetch(job, out)
                    await out.finish()  # written, flushed and fsynced in its thread
                finally:
                    out.close()
            digest = out.digest
            check_download(info, job.expected_sha256, digest, out.size)
            async with self.buffer.media_files:
                path = await asyncio.to_thread(_install, part, self.policy.directory,
                                               digest.hex())
                await self.buffer.media_fetched(job, path, out.size, digest.hex(),
                                                info.mime_type or job.mime_type)
            self._count("fetched")
            logger.info("media %s of message %s fetched (%d bytes)", job.media_id,
                        job.message_id, out.size)
            await self._probed(job, answered=True)
        except (MediaGone, TooLarge, Refused) as exc:
            await self.buffer.media_failed(job, _reason(exc), None)
            self._count("dead")
            logger.warning("media %s of message %s is a dead letter: %s", job.media_id,
                           job.message_id, _reason(exc))
            await self._probed(job, answered=isinstance(exc, MediaGone | TooLarge))
        except Exception as exc:  # MediaRetry, OSError, a fetcher's bug: all retried
            await self._retry(job, exc)
            await self._probed(job, answered=False)
        finally:
            self._outs.pop(job.message_id, None)
            with suppress(OSError):  # the directory gone or unusable: the try's reason says
                part.unlink(missing_ok=True)

    async def _retry(self, job: MediaJob, exc: Exception) -> None:
        reason = _reason(exc)
        if job.attempts + 1 >= self.policy.max_attempts:
            await self.buffer.media_failed(
                job, f"gave up after {job.attempts + 1} attempts: {reason}", None)
            self._count("dead")
            return
        await self.buffer.media_failed(job, reason, time.time() + self.policy.backoff(
            job.attempts + 1))
        self._count("retry")
        logger.warning("media %s of message %s: %s (will retry)", job.media_id,
                       job.message_id, reason)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None and hasattr(self.metrics, "media_fetch"):
            self.metrics.media_fetch(self.source, outcome)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait until a job is due, a download ends, an append wakes us, or stop."""
        self._wake.clear()  # first: a download ending from here on still wakes us
        wait = IDLE_POLL
        if len(self._running) < CLAIM_LIMIT:
            due = await self.buffer.media_next_due(self.source)
            wait = IDLE_POLL if due is None else min(IDLE_POLL, max(0.05, due - time.time()))
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopped, woken}, timeout=wait,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, woken):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__
    return text if isinstance(exc, MediaGone | MediaRetry | TooLarge | Refused) else \
        f"{exc.__class__.__name__}: {text}"


def _sweep_parts(tmp: Path, source: str, tag: str, since: float | None) -> None:
    """Delete the source's partial downloads but this runner's (and those touched since)."""
    for part in tmp.glob(f"{source}-*.part"):
        if not part.name.endswith(f"-{tag}.part") and not _touched_since(part, since):
            part.unlink(missing_ok=True)


def _sweep_files(root: Path, known: set[str], since: float | None) -> None:
    """Delete the stored files no job names (but those touched since)."""
    for path in root.glob("??/*"):
        if _STORED.fullmatch(path.relative_to(root).as_posix()) and str(path) not in known \
                and not _touched_since(path, since):
            path.unlink(missing_ok=True)


def _touched_since(path: Path, since: float | None) -> bool:
    """Whether the file changed after `since` (None: never asked; a file gone: no)."""
    if since is None:
        return False
    try:
        return path.stat().st_mtime > since
    except FileNotFoundError:
        return False


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _install(part: Path, directory: str, hexdigest: str) -> str:
    """Rename the finished download into place and make the rename durable; its path."""
    folder = Path(directory) / hexdigest[:2]
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / hexdigest
    os.replace(part, final)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return str(final)


# -- wiring (bridge.app) ------------------------------------------------------------------

def media_sources(sources: list[Any]) -> dict[str, str | None]:
    """Sources that fetch media: name -> None, or the reason they will not."""
    return {source.name: source.media.hold_reason for source in sources
            if getattr(source, "media", None) is not None}


async def start_media(bridge: Any, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """A runner per source that can fetch; a source that cannot has its jobs held."""
    settings = bridge.config.buffer
    policy = MediaPolicy(settings.media_dir, settings.media_max_bytes, settings.media_retry_base,
                         settings.media_retry_cap, settings.media_max_attempts,
                         max_total=settings.media_max_total, min_free=settings.media_min_free)
    tasks = []
    for name, hold in media_sources(bridge.sources).items():
        if hold is not None:
            await bridge.buffer.media_hold(name, hold)
            continue
        source = next(s for s in bridge.sources if s.name == name)
        runner = MediaRunner(name, source.media, bridge.buffer, policy, bridge.metrics)
        bridge.media_runners[name] = runner
        tasks.append(asyncio.create_task(runner.run(stop), name=f"media-{name}"))
    return tasks


async def close_media(sources: list[Any]) -> None:
    for source in sources:
        fetcher = getattr(source, "media", None)
        if fetcher is not None:
            try:
                await fetcher.close()
            except Exception:
                logger.exception("closing the media fetcher of %r failed", source.name)
