"""A PostgreSQL buffer URL: checked by one function (config validation, `bridge check` and
`bridge run` alike), split into what asyncpg takes and the schema, and shown without its
secrets (the userinfo password and every `pass...` query parameter, e.g. ?password=,
&sslpassword=, in the URL itself and in any error text that might repeat them)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from bridge.errors import ConfigError

MASK = "***"
SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"  # lowercase: PostgreSQL folds unquoted names
_SCHEMA = re.compile(SCHEMA_PATTERN)
EXAMPLE = "postgresql://chatbridge:${PGPASSWORD}@127.0.0.1:5432/chatbridge"


def _secret_key(key: str) -> bool:
    """A query parameter whose value is a secret (password, sslpassword, passfile...)."""
    return "pass" in unquote_plus(key).lower()


def _cut_password(url: str) -> tuple[int, int] | None:
    """Where a password holding '/', '?' or '#' (not percent-encoded) sits in the URL: those
    end the host part early, so the parsed host part has no '@' and a port that is no
    number (the password's start); None for a URL parsed as written."""
    start = url.find("://") + 3
    parts = urlsplit(url)
    if start < 3 or "@" in parts.netloc:
        return None
    try:
        if parts.port is not None or ":" not in parts.netloc:
            return None
    except ValueError:  # 'user:pass' read as host:port
        pass
    colon, at = url.find(":", start), url.rfind("@")
    return (colon + 1, at) if -1 < colon < at else None


def redact(url: str) -> str:
    """The URL without its secrets (for logs, /status, `bridge check` and errors)."""
    if cut := _cut_password(url):
        return redact(url[:cut[0]] + MASK + url[cut[1]:])
    scheme, netloc, path, query, fragment = urlsplit(url)
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"
    if query:
        parts = [part.split("=", 1) for part in query.split("&")]
        query = "&".join(f"{p[0]}={MASK}" if len(p) == 2 and _secret_key(p[0]) else "=".join(p)
                         for p in parts)
    return _joined(url, (scheme, netloc, path, query, fragment))


def _joined(url: str, parts: tuple[str, str, str, str, str]) -> str:
    """urlunsplit, keeping the '//' of a URL with nothing before its path (a unix
    socket's `postgresql:///db?host=/run/postgresql`), which urlunsplit drops."""
    joined = urlunsplit(parts)
    scheme = parts[0]
    if not parts[1] and url.startswith(f"{scheme}://") and not joined.startswith(f"{scheme}://"):
        joined = f"{scheme}://{joined[len(scheme) + 1:]}"
    return joined


def secrets_of(url: str) -> list[str]:
    """The secret values the URL carries, raw and decoded (to mask them in any text)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    if cut := _cut_password(url):
        found.append(url[cut[0]:cut[1]])
    for part in parts.query.split("&") if parts.query else ():
        key, eq, value = part.partition("=")
        if eq and _secret_key(key):
            found.append(value)
    decoded = [unquote(v) for v in found] + [unquote_plus(v) for v in found]
    return sorted({v for v in found + decoded if v}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with the URL's secrets masked."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def split_schema(url: str) -> tuple[str, str | None]:
    """(URL for asyncpg, schema) — `?schema=name` keeps the buffer in its own schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return _joined(url, (parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL buffer URL, as one line naming buffer.url and the
    fix; None when it can be used."""
    if _cut_password(url):
        return ("buffer.url: the password holds '/', '?' or '#', which end a URL's host "
                "part: percent-encode them (/ as %2F, ? as %3F, # as %23)")
    parts = urlsplit(url)
    if not parts.hostname and "host=" not in parts.query:
        return f"buffer.url: a PostgreSQL URL needs a host, e.g. {EXAMPLE}"
    _, schema = split_schema(url)
    if schema is not None and not _SCHEMA.fullmatch(schema):
        fix = re.sub(r"[^a-z0-9_]", "_", schema.lower())[:63] or "chatbridge"
        fix = fix if _SCHEMA.fullmatch(fix) else f"_{fix}"[:63]
        return (f"buffer.url: schema {scrub(schema, url)!r} must match {SCHEMA_PATTERN} "
                f"(lowercase letters, digits and _, at most 63), e.g. ?schema={fix}")
    return None


def check_url(url: str) -> None:
    """Raise ConfigError (one line, naming buffer.url and the fix) for a URL that cannot work."""
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(problem)
