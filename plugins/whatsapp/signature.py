"""Meta's webhook signatures (X-Hub-Signature-256) and the handshake's verify token."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

PREFIX = "sha256="
_HEADER = re.compile(r"sha256=[0-9a-fA-F]{64}")


def sign(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value Meta sends for `body`: `sha256=<hex HMAC-SHA256>`."""
    return PREFIX + _digest(body, secret)


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when `header` signs the raw `body` with any one of `secrets` (rotation).

    Hash the bytes as received: Meta escapes non-ASCII as \\uXXXX, so re-serialised JSON
    does not match. Every secret is tried, each compared in constant time.
    """
    if not isinstance(header, str) or not _HEADER.fullmatch(header):
        return False
    given = header[len(PREFIX):].lower()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(_digest(body, secret), given)
    return matched


def signed_like(header: str | None) -> bool:
    """Whether `header` has the form of Meta's signature (whatever secret made it)."""
    return isinstance(header, str) and _HEADER.fullmatch(header) is not None


def verify_token(given: str | None, expected: str) -> bool:
    """Constant-time check of the handshake's hub.verify_token; an empty one never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _digest(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
