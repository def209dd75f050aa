"""A multipart form with one file, streamed without touching the disk on the event loop.

httpx reads a file given in `files=` synchronously, chunk by chunk, inside the event loop:
each read of a stored video waits for the disk while webhooks wait for the loop. Here the
file is opened, measured and read in a worker thread, a chunk at a time (never whole in
memory), and httpx encodes everything around it exactly as it would have (the same
`files=` encoding, taken from an httpx request holding an empty file), so the bytes that
arrive are the ones a plain `files=` upload sends.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from typing import IO

import httpx

CHUNK = 256 * 1024  # bytes per read (httpx's own: 64 KiB; fewer thread hops per file)


class FileForm:
    """`data` fields, then the file at `path` as `field`; `headers` and `content()` for
    httpx. One per try: `open()` it, send `content()`, then `aclose()`."""

    def __init__(self, path: str, field: str, filename: str, mime_type: str,
                 data: dict[str, str]) -> None:
        self.path = path
        shape = httpx.Request("POST", "http://form.invalid/", data=data,
                              files={field: (filename, b"", mime_type)})
        body = shape.read()
        boundary = shape.headers["Content-Type"].split("boundary=", 1)[1].encode("ascii")
        epilogue = b"\r\n--" + boundary + b"--\r\n"  # the file is the last field
        self.head, self.tail = body[:-len(epilogue)], epilogue
        self.content_type = shape.headers["Content-Type"]
        self._file: IO[bytes] | None = None
        self._size: int | None = None

    async def open(self) -> FileForm:
        """Open and measure the file in a worker thread (OSError when it is gone)."""
        self._file, self._size = await asyncio.to_thread(_open, self.path)
        return self

    @property
    def size(self) -> int | None:
        """The file's size in bytes once open (None: not a regular file, or not open)."""
        return self._size

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type with the boundary; Content-Length when the file has a known size
        (a regular file), else httpx sends the body chunked."""
        headers = {"Content-Type": self.content_type}
        if self._size is not None:
            headers["Content-Length"] = str(len(self.head) + self._size + len(self.tail))
        return headers

    async def content(self) -> AsyncIterator[bytes]:
        """The body: the form and the file's headers, its bytes read off the loop, the end."""
        if self._file is None:
            raise RuntimeError("FileForm.open() first")
        yield self.head
        sent = 0
        while chunk := await asyncio.to_thread(self._file.read, CHUNK):
            sent += len(chunk)
            if self._size is not None and sent > self._size:
                raise OSError(f"{self.path} grew while it was uploaded")
            yield chunk
        if self._size is not None and sent != self._size:
            raise OSError(f"{self.path} shrank while it was uploaded")
        yield self.tail

    async def aclose(self) -> None:
        """Close the file (in a worker thread: a close may flush or wait on the disk)."""
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)


def _open(path: str) -> tuple[IO[bytes], int | None]:
    """The file opened for reading, and its size when it is a regular file."""
    file = open(path, "rb")  # noqa: SIM115 - closed by FileForm.aclose
    try:
        info = os.fstat(file.fileno())
    except OSError:
        file.close()
        raise
    return file, info.st_size if stat.S_ISREG(info.st_mode) else None
