"""Media from the Graph API: look the id up for a short-lived URL, then download it.

`GET <graph_url>/<version>/<media id>?phone_number_id=<id>` with the access token answers
`{"messaging_product", "url", "mime_type", "sha256", "file_size", "id"}`; the URL is valid
for 5 minutes and needs the same bearer token [whatsapp-webhooks.md §8, M-MEDIA]. A
refused download is taken for an expired URL: the id is looked up again, once per try.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from bridge import Fetched, FileOut, MediaGone, MediaJob, MediaRetry
from plugins.whatsapp.config import WhatsAppConfig

NO_TOKEN = ("not fetched: plugins.whatsapp.access_token is not set (add a system-user "
            "token to have photos, voice notes and documents stored and sent to the CRM)")
CHUNK = 64 * 1024
_BYTES = re.compile(r"[0-9]{1,18}")
# Graph error codes that mean the media id is gone for good: 100 "does not exist, cannot
# be loaded due to missing permissions, or does not support this operation" (subcode 33),
# 803 "some of the aliases you requested do not exist". Anything else may pass.
GONE_CODES = {100, 803}
EXPIRED_DOWNLOAD = {401, 403, 404, 410}  # what an expired or refused lookaside URL answers
# A media id Graph can be asked for as one path segment. Every id in the references is
# digits [whatsapp-webhooks.md §8, M-MEDIA]; letters, '_', '-' and '.' are let through as a
# margin. Anything else ('/', '?', '#', '%', spaces) would change the lookup's URL: '?' or
# '#' cut the id short and fetched another media's file for this message, '/../' looked up
# another object, a trailing '/' was retried for days as a wrong graph_url.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_.\-]{1,256}")


class GraphMedia:
    """The WhatsApp source's media fetcher (bridge.media.MediaFetcher)."""

    def __init__(self, config: WhatsAppConfig) -> None:
        self.config = config
        self.hold_reason = None if config.access_token else NO_TOKEN
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.config.media_timeout, connect=10.0)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.access_token}"}

    async def fetch(self, job: MediaJob, out: FileOut) -> Fetched:
        """Look up and download within media_timeout, all of it (a server that drips a
        byte now and then passes every read's timeout, never this one)."""
        deadline = self.config.media_timeout
        try:
            return await asyncio.wait_for(self._fetch(job, out), deadline)
        except TimeoutError:
            raise MediaRetry(f"the download took longer than plugins.whatsapp.media_timeout "
                             f"({deadline:g} s) and was cut off ({out.size} bytes arrived); "
                             "it is tried again later") from None

    async def _fetch(self, job: MediaJob, out: FileOut) -> Fetched:
        """Look up, download; on a refused download look up once more and download again."""
        meta = await self.lookup(job)
        if not await self._download(meta["url"], out):
            meta = await self.lookup(job)
            out.reset()
            if not await self._download(meta["url"], out):
                raise MediaRetry("the download URL was refused twice, even just after a "
                                 "fresh lookup")
        return Fetched(mime_type=_text(meta.get("mime_type")), sha256=_text(meta.get("sha256")),
                       size=_size(meta.get("file_size")))

    async def lookup(self, job: MediaJob) -> dict[str, Any]:
        """The Graph API's answer for the media id (url, mime_type, sha256, file_size); an
        id that is no single path segment is MediaGone, never sent."""
        if not is_media_id(job.media_id):
            raise MediaGone(f"the webhook's media id {job.media_id[:64]!r} is not one the "
                            "Graph API can look up (only letters, digits, '_', '-', '.'); "
                            "nothing was fetched for it")
        url = f"{self.config.graph_url}/{self.config.graph_version}/{job.media_id}"
        params = {"phone_number_id": job.account} if job.account else None
        try:
            response = await self._http().get(url, params=params, headers=self._auth)
        except httpx.HTTPError as exc:
            raise MediaRetry(f"Graph API unreachable: {exc.__class__.__name__}") from None
        body = _json(response)
        if response.status_code == 200 and isinstance(body.get("url"), str):
            return body
        raise _graph_error(response.status_code, body)

    async def _download(self, url: str, out: FileOut) -> bool:
        """Stream the URL into `out`; False when the URL is refused (expired)."""
        try:
            async with self._http().stream("GET", url, headers=self._auth) as response:
                if response.status_code in EXPIRED_DOWNLOAD:
                    return False
                if response.status_code != 200:
                    raise MediaRetry(f"the media download answered HTTP {response.status_code}")
                async for chunk in response.aiter_bytes(CHUNK):
                    out.write(chunk)
                    await out.drain()  # the disk lagging: wait, never hold the file in memory
        except httpx.HTTPError as exc:
            raise MediaRetry(f"the media download broke off: {exc.__class__.__name__}") from None
        return True


def is_media_id(media_id: str) -> bool:
    """Whether `media_id` can go into the lookup's URL as it is (one plain path segment)."""
    return bool(_MEDIA_ID.fullmatch(media_id)) and media_id not in (".", "..")


def _text(value: Any) -> str | None:
    """A field of the lookup's answer as text; a value of another type says nothing."""
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    """The lookup's `file_size` (a string in M-MEDIA; a number accepted) as bytes; None
    when absent or not a whole number of bytes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _BYTES.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _graph_error(status: int, body: dict[str, Any]) -> Exception:
    """MediaGone for an answer that the id no longer exists; MediaRetry for the rest."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    code = error.get("code")
    said = f"Graph API: {message}" + (f" (code {code})" if code is not None else "")
    if code in GONE_CODES:
        return MediaGone(said)
    if status == 404 and not error:
        # Graph says "gone" with an error object (code 100); a 404 without one is a
        # proxy's or a wrong graph_url's page, so the id is looked up again later
        return MediaRetry("HTTP 404 without a Graph error object (is "
                          "plugins.whatsapp.graph_url right?); looked up again later")
    if code == 190 or status == 401:
        return MediaRetry(f"{said}; check plugins.whatsapp.access_token")
    return MediaRetry(said)
