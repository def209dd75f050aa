"""Log setup for `bridge --log-format text|json`, and redaction as a safety net.

Log calls themselves must not carry secrets, message text or full phone numbers; the
formatters redact every line as a second line of defence (on a copy of the record, so other
handlers are unaffected). They mask phone numbers (+91******3210), values of
token/secret/key/signature-like fields (query strings, headers, key=value pairs),
`Bearer ...` and `sha256=...` signatures, and any value registered with `register_secrets`
(the `run` command registers the config's secrets).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Config keys whose values are secrets, wherever they sit in the config.
SECRET_NAME = re.compile(r"(token|secret|password|passwd|key|signature|credential)", re.I)

# +E.164 (also hyphenated, as LeadSquared stores it, or %2B-encoded in a URL), or a bare
# run of 10-15 digits (WhatsApp's wa_id has no plus).
_PHONE = re.compile(r"(?<![\w.*])(?:(?:\+|%2[Bb])\d(?:-?\d){7,14}|\d{10,15})(?![\w.*])")
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.I)
_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]+:)([^\s@/]+)(?=@)")  # user:pw@host
_SIGNATURE = re.compile(r"\b(sha(?:1|256)=)[0-9a-fA-F]{8,}")
# name=value / name: value / "name": "value" where the name looks secret.
_SECRET_FIELD = re.compile(
    r"(?i)([\w.-]*(?:token|secret|passw(?:or)?d|signature|access_?key|api_?key|"
    r"secret_?key|app_?secret|authorization)[\w.-]*[\"']?\s*[=:]\s*[\"']?)"
    r"((?!\*\*\*)[^\s&\"',;)}\]]+)")
# Names of extra fields (and dict keys inside them) whose whole value is masked.
_SECRET_EXTRA = re.compile(r"(?i)token|secret|passw(?:or)?d|signature|access_?key|api_?key|"
                           r"authorization|credential")

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def mask_phone(number: str) -> str:
    """'+919876543210' -> '+91******3210': country code and last four digits only."""
    digits = re.sub(r"\D", "", number.replace("%2B", "+").replace("%2b", "+"))
    plus = "+" if number.lstrip().startswith(("+", "%2B", "%2b")) else ""
    if len(digits) <= 6:
        return plus + "*" * len(digits)
    return f"{plus}{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def register_secrets(values: Iterable[Any]) -> None:
    """Mask these exact values in every log line from now on (short ones are ignored)."""
    global _secret_pattern
    with _secrets_lock:
        _secrets.update(v for v in values if isinstance(v, str) and len(v) >= 6)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def secrets_in(value: Any, name: str = "") -> list[str]:
    """The string values under secret-looking keys of a (nested) config dict or model."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in secrets_in(item, str(key))]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in secrets_in(item, name)]
    if isinstance(value, str) and SECRET_NAME.search(name):
        return [value]
    return []


def redact(text: str) -> str:
    """The text with registered secrets, secret-looking fields and phone numbers masked."""
    if not text:
        return text
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _BEARER.sub(lambda m: m[1] + MASK, text)
    text = _SIGNATURE.sub(lambda m: m[1] + MASK, text)
    text = _USERINFO.sub(lambda m: m[1] + MASK, text)
    text = _SECRET_FIELD.sub(lambda m: m[1] + MASK, text)
    return _PHONE.sub(lambda m: mask_phone(m[0]), text)


def redacted(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of `record` with its message, traceback, stack and string extras redacted.

    The original is left alone, so other handlers (a test runner's capture) see it as is.
    """
    copy = logging.makeLogRecord(vars(record))
    copy.msg, copy.args = redact(record.getMessage()), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        copy.exc_text = redact(record.exc_text)
    if record.stack_info:
        copy.stack_info = redact(record.stack_info)
    for name, value in vars(record).items():
        if name not in _STANDARD:
            setattr(copy, name, _redact_value(value, name))
    return copy


def _redact_value(value: Any, name: object = "") -> Any:
    """Strings redacted, also inside dicts, lists and tuples (e.g. logged headers); the
    whole value when its name looks secret (verify_token=..., Authorization: ...)."""
    if isinstance(value, str):
        return MASK if _SECRET_EXTRA.search(str(name)) else redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item, key) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item, name) for item in value]
    return value


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(redacted(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, msg, then extra fields
    (and exc, stack when present); redacted."""

    def format(self, record: logging.LogRecord) -> str:
        record = redacted(record)
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr


class RepeatFilter(logging.Filter):
    """Lets one log line (logger, level, message template) through at most `burst` times per
    `window` seconds; the next one let through says how many were held back.

    A fault that repeats in a tight loop (accept() out of file descriptors, a broken disk)
    must not fill the disk the buffer lives on with the same traceback.
    """

    def __init__(self, burst: int = 10, window: float = 10.0, keys: int = 1000) -> None:
        super().__init__()
        self.burst, self.window, self.keys = burst, window, keys
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # [start, count, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or record.created - seen[0] >= self.window:
                held = int(seen[2]) if seen else 0
                if seen is None and len(self._seen) >= self.keys:
                    self._forget(record.created)
                self._seen[key] = [record.created, 1, 0]
                if held:
                    record.msg = f"{record.msg} (repeated {held} more times in {self.window:g} s)"
                return True
            seen[1] += 1
            if seen[1] <= self.burst:
                return True
            seen[2] += 1
            return False

    def _forget(self, now: float) -> None:
        """Drop lines not seen within the window (held-back counts of those are lost)."""
        for key in [k for k, v in self._seen.items() if now - v[0] >= self.window]:
            del self._seen[key]
        if len(self._seen) >= self.keys:
            self._seen.clear()


def make_handler(log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (the current sys.stderr by default) with a redacting formatter that
    collapses lines repeated in a burst."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.addFilter(RepeatFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "text":
        handler.setFormatter(TextFormatter())
    else:
        raise ValueError(f"log format {log_format!r}: use text or json")
    return handler


def setup_logging(level: str = "INFO", log_format: str = "text",
                  stream: IO[str] | None = None) -> logging.Handler:
    """Log to `stream` (default: stderr) from the root logger; replaces an earlier setup's
    handler, leaves handlers others installed (e.g. a test runner's capture) alone."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_chatbridge", False):
            root.removeHandler(old)
    handler = make_handler(log_format, stream)
    handler._chatbridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings go through the handler too (one format)
    # httpx logs every request URL at INFO; query strings can hold phone numbers
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    logging.getLogger("httpx").setLevel(quiet)
    # aiosqlite logs every statement with its parameters (message text, numbers) at DEBUG
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    return handler
