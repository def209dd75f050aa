"""Page sign-ins, held in this process's memory: sign-out ends one, a restart ends all.

The cookie is a random id; the bridge keeps only its SHA-256 and expiry, so looking one
up compares nothing secret byte by byte, and a signed-out cookie can never be valid
again (there is no signature that would make it so). The cost of keeping sessions in
memory: a restart signs everyone out, and so does a new server.admin_token (it needs a
restart). The number kept is bounded; the oldest sign-in goes first.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

SESSION_TTL = 12 * 3600.0  # seconds a page sign-in lasts
MAX_SESSIONS = 1000  # sign-ins kept at once; the oldest is dropped beyond this
_LONGEST_ID = 64  # a cookie longer than any id we issue is not looked up


class Sessions:
    """The page sign-ins this bridge issued and has not ended; `clock` is a test seam."""

    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._limit = limit
        self._clock = clock
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def open(self) -> str:
        """A new session id to put in the cookie."""
        now = self._clock()
        self._drop_expired(now)
        while len(self._expiry) >= self._limit:
            self._expiry.popitem(last=False)
        value = secrets.token_urlsafe(32)
        self._expiry[_digest(value)] = now + self.ttl
        return value

    def valid(self, value: str | None) -> bool:
        """The cookie names a session that is open and not past its TTL."""
        if not value or len(value) > _LONGEST_ID:
            return False
        key = _digest(value)
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._expiry[key]
            return False
        return True

    def close(self, value: str | None) -> None:
        """End the session (sign-out); unknown values are ignored."""
        if value and len(value) <= _LONGEST_ID:
            self._expiry.pop(_digest(value), None)

    def __len__(self) -> int:
        return len(self._expiry)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, expires in self._expiry.items() if expires <= now]:
            del self._expiry[key]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()
