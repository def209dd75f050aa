"""LeadSquared v2 REST client: header auth, one rate limiter, errors sorted into kinds."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import re
import time
from typing import Any

import httpx

from bridge import Metrics, backoff_delay
from plugins.leadsquared.api import lsq_datetime, services
from plugins.leadsquared.errors import Kind, LeadSquaredError
from plugins.leadsquared.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

RATE_LIMIT_EXCEPTION = "MXAPIRateLimitExceededException"
RETRYABLE: frozenset[str] = frozenset({"rate_limited", "transient"})
# The request never left this machine: safe to repeat even for a write.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_NO_JSON = object()
# A 500 naming one of these refused the body's shape (reference §8 [LIVE] gotcha 15: a .NET
# parse or serialisation error, not an MX type): the same body fails every time.
_BODY_SHAPE = re.compile(r"json|serializ|deserializ|pars(e|ing)|format", re.IGNORECASE)


def retry_delay(kind: str, attempt: int, *, base: float = 1.0) -> float:
    """Seconds before retry number `attempt` (1-based) of a `kind` failure.

    A rate-limit answer (429 or the MXAPIRateLimitExceededException body) waits one window
    of 5 s (times `base`) plus up to 20 %, every time: the limit is counted per 5-second
    window and no Retry-After is documented (reference §3), so the next window is free
    again. Other transient failures back off 1, 2, 4 ... 30 s (times `base`), +-20 %.
    """
    if kind == "rate_limited":
        return 5 * base * random.uniform(1.0, 1.2)
    return backoff_delay(attempt, base=base, cap=30 * base)


class LeadSquaredClient:
    """One account's API: the transport, and its endpoints grouped by service (`leads`,
    `activities`, `opportunities`, `users`, `files`; see plugins/leadsquared/api.py).

    `calls` counts HTTP requests sent per call name (retries too). Each request is also
    counted in `metrics` (chatbridge_crm_calls_total) under `sink`, the endpoint (the URL
    path's last segment) and its outcome (see `call_outcome`).
    """

    def __init__(self, base_url: str, access_key: str, secret_key: str, *,
                 limiter: RateLimiter | None = None, timeout: float = 30.0,
                 max_retries: int = 4, backoff_base: float = 1.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 metrics: Metrics | None = None, sink: str = "leadsquared",
                 bulk_limiter: RateLimiter | None = None) -> None:
        self._limiter = limiter or RateLimiter(10, 5.0)  # the config's default "10/5s"
        self._access_key, self._secret_key = access_key, secret_key
        # Bulk calls have a budget of their own (reference §3, §8 "Bulk posting")
        self._bulk_limiter = bulk_limiter or RateLimiter(1, 5.0)
        self._max_retries = max_retries
        self._timeout = timeout
        self.host = _api_root(base_url).removesuffix("/v2/")
        # the last call that failed and is being retried (None once a call succeeds): what
        # a start that has not finished waits for (LeadSquaredSink.start_note)
        self.trouble: str | None = None
        self._in_flight: dict[int, tuple[str, float]] = {}  # attempt -> (call, monotonic)
        self._backoff_base = backoff_base
        self.calls: collections.Counter[str] = collections.Counter()
        self.metrics = metrics if metrics is not None else Metrics(process=False)
        self.sink = sink
        self._http = httpx.AsyncClient(
            base_url=_api_root(base_url), timeout=timeout, transport=transport,
            limits=httpx.Limits(max_connections=8),
            headers={"x-LSQ-AccessKey": access_key, "x-LSQ-SecretKey": secret_key},
        )
        self.leads, self.activities, self.opportunities, self.users, self.files = services(self)

    def form_keys(self) -> dict[str, str]:
        """The keys as File Upload takes them: in the multipart form (reference §8)."""
        return {"AccessKey": self._access_key, "SecretKey": self._secret_key}

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LeadSquaredClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(self, name: str, method: str, path: str, *, params: dict | None = None,
                      body: Any = None, write: bool = False,
                      multipart: Any = None, bulk: bool = False) -> Any:
        """Send through the limiter, classify the answer, retry what may be retried."""
        limiter = self._bulk_limiter if bulk else self._limiter
        for attempt in itertools.count(1):
            try:
                answer = await self._send(name, method, path, params, body, write, multipart,
                                          limiter)
                self.trouble = None
                return answer
            except LeadSquaredError as exc:
                if exc.kind not in RETRYABLE:
                    raise
                if exc.kind != "rate_limited":  # a full budget is no fault of the host
                    self.trouble = f"{name} failed {attempt} time(s): {exc}"
                delay = retry_delay(exc.kind, attempt, base=self._backoff_base)
                if exc.kind == "rate_limited":  # everyone waits, not only this request
                    limiter.pause_until(time.monotonic() + delay)
                if attempt > self._max_retries:
                    raise
                logger.warning("LeadSquared %s failed (%s), retry %d in %.2fs",
                               name, exc, attempt, delay)
                if exc.kind == "transient":
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, name: str, method: str, path: str, params: dict | None,
                    body: Any, write: bool, multipart: Any = None,
                    limiter: RateLimiter | None = None) -> Any:
        """One HTTP request; returns the JSON answer or raises LeadSquaredError."""
        await (limiter or self._limiter).acquire()
        if callable(body):  # decided as the call starts: a bulk call's rows (bulk.py)
            body = body()
        self.calls[name] += 1
        endpoint = path.rsplit("/", 1)[-1]
        budget = "bulk" if limiter is self._bulk_limiter else "ordinary"  # charted apart
        started = time.perf_counter()
        try:
            if multipart is not None:  # a FileForm, fresh per try; its file read off the loop
                form = await multipart().open()
                try:
                    response = await self._http.request(method, path, params=params,
                                                        content=form.content(),
                                                        headers=form.headers)
                finally:
                    await form.aclose()
                if response.status_code == 413:
                    raise too_large(response, form.size)
            else:
                response = await self._whole(name, write, self._http.request(
                    method, path, params=params, json=body))
            answer = _classify(response, write)
        except (httpx.TransportError, LeadSquaredError) as exc:
            self.metrics.crm_call(self.sink, endpoint, call_outcome(exc),
                                  time.perf_counter() - started, budget)
            if isinstance(exc, httpx.TransportError):
                raise _transport_error(exc, write) from exc
            raise
        self.metrics.crm_call(self.sink, endpoint, "ok", time.perf_counter() - started, budget)
        return answer


    async def _whole(self, name: str, write: bool, call: Any) -> httpx.Response:
        """A call's answer; a read whose whole answer takes longer than the timeout (a host
        trickling bytes, each within httpx's per-read timeout) is cut off as timed out and
        retried. A write is left to httpx's timeouts and the core's deliver_timeout: cut
        off sooner, it would have longer to land after we stopped waiting (write_settle)."""
        key = id(call)
        self._in_flight[key] = (name, time.monotonic())
        try:
            if write:
                return await call
            try:
                async with asyncio.timeout(self._timeout) as bound:
                    return await call
            except TimeoutError:
                if not bound.expired():
                    raise
                raise httpx.ReadTimeout(f"no whole answer within {self._timeout:g}s") from None
        finally:
            self._in_flight.pop(key, None)

    def waiting(self) -> str | None:
        """The oldest call unanswered for longer than the timeout, in words, or None."""
        now = time.monotonic()
        late = [(started, name) for name, started in self._in_flight.values()
                if now - started > self._timeout]
        if not late:
            return None
        started, name = min(late)
        return f"{name} unanswered for {now - started:.0f} s"


def call_outcome(exc: Exception) -> str:
    """The metrics outcome of a failed call: rate_limited, error_5xx, rejected, auth,
    bad_answer (a 2xx that is not JSON), timeout or connection_error."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "connection_error"
    if isinstance(exc, LeadSquaredError):
        if exc.kind in ("rate_limited", "auth", "rejected"):
            return exc.kind
        if exc.status is not None and exc.status >= 500:
            return "error_5xx"
        return "bad_answer"
    return "error"


def _classify(response: httpx.Response, write: bool) -> Any:
    """The answer's JSON, or the LeadSquaredError it stands for."""
    status = response.status_code
    answer = _json(response)
    info = answer if isinstance(answer, dict) else {}
    exception_type = info.get("ExceptionType") or None
    message = info.get("ExceptionMessage") or info.get("Message")

    def error(kind: Kind, fallback: str) -> LeadSquaredError:
        text = message if isinstance(message, str) and message else fallback
        return LeadSquaredError(kind, text, exception_type=exception_type, status=status)

    if status == 401:
        raise error("auth", "access key or secret key refused (or the user is inactive)")
    if status == 429 or exception_type == RATE_LIMIT_EXCEPTION:  # 429, or a body even on 200
        raise error("rate_limited", "API rate limit exceeded")
    if _is_mx(exception_type):
        raise error("rejected", f"HTTP {status}")
    if status >= 500 and _body_shape(exception_type, message):
        raise error("rejected", f"HTTP {status}")
    if status >= 500:
        # A write may have committed before the server failed (the reference gives no
        # guarantee either way), so the sink checks for it before posting again. A 504
        # is a gateway that stopped waiting: the write may still commit after it.
        failure = error(_lost(write), f"HTTP {status}")
        failure.in_flight = write and status == 504
        raise failure
    if not response.is_success:
        if not _from_leadsquared(answer):
            # An error page (HTML, or JSON not shaped as LeadSquared's errors) comes from a
            # proxy or gateway in front of the API: a one-off 400/403/404/408/413 there
            # never reached LeadSquared, so it is retried (and counts toward max_attempts).
            # (A 413 on a file upload is the file's size, refused: see too_large.)
            raise error("transient", f"HTTP {status} from a gateway in front of LeadSquared"
                                     " (not a LeadSquared answer)")
        raise error("rejected", f"HTTP {status}")
    if info.get("Status") == "Error":
        # Not one of LeadSquared's own (MX) refusals, on a 2xx: nothing documents this
        # answer (errors are 4xx/5xx, reference §3). It is read as on a 500: a write may
        # have landed before it failed (the key check settles it), a read is tried again,
        # typed or not (an untyped error on a read was a refusal: a key check answered so
        # sent a chat that had landed to dead letter; owners.passing reads it so too). A
        # refused body's shape stays a refusal.
        unread = not _body_shape(exception_type, message)
        raise error(_lost(write) if unread else "rejected", "LeadSquared answered Status=Error")
    if answer is _NO_JSON:
        raise error(_lost(write), "the answer is not JSON")
    return answer


def too_large(response: httpx.Response, size: int | None) -> LeadSquaredError:
    """A file upload answered 413: refused (a dead letter), with the file's size and the
    limit where the answer names one. Unlike a 413 on a JSON call (whose body is a few
    kilobytes: a proxy's one-off page, retried in _classify), an upload's body is the
    file, the same on every try: sent again, whole, it gets the same answer."""
    limit = _limit(response.text)
    return LeadSquaredError(
        "rejected", f"the files host refused the file as too large (HTTP 413): the file "
        f"is {_size(size) if size is not None else 'of unknown size'}, its limit "
        f"{_size(limit) if limit is not None else 'not stated in the answer'}; the file "
        "stays in the bridge (send it another way, or requeue if the limit was raised)",
        status=413)


def _limit(text: str) -> int | None:
    """The byte limit a 413 page names ("Maximum request body size 1048576 ..."), if any."""
    found = re.search(r"max\w*\D{0,40}?(\d{3,})", text, re.IGNORECASE)
    return int(found[1]) if found else None


def _size(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB ({count:,} bytes)"


def _from_leadsquared(answer: Any) -> bool:
    """LeadSquared's own errors are JSON with Status or ExceptionType (reference §3)."""
    return isinstance(answer, dict) and ("Status" in answer or "ExceptionType" in answer)


def _lost(write: bool) -> Kind:
    """What an answerless failure means: a read is retried, a write may have landed."""
    return "unknown_outcome" if write else "transient"


def _transport_error(exc: httpx.TransportError, write: bool) -> LeadSquaredError:
    kind: Kind = "transient" if isinstance(exc, _NOT_SENT) else _lost(write)
    in_flight = kind == "unknown_outcome" and isinstance(exc, httpx.TimeoutException)
    return LeadSquaredError(kind, f"{type(exc).__name__}: {exc}".rstrip(": "),
                            in_flight=in_flight)


def _body_shape(exception_type: str | None, message: Any) -> bool:
    """A non-MX .NET exception that refused the request body's shape (not transient)."""
    text = f"{exception_type or ''} {message if isinstance(message, str) else ''}"
    return bool(exception_type) and bool(_BODY_SHAPE.search(text))


def _is_mx(exception_type: str | None) -> bool:
    """LeadSquared's own application errors (MXDuplicateEntryException, ...)."""
    return bool(exception_type and exception_type.startswith("MX")
                and exception_type.endswith("Exception"))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NO_JSON


def _api_root(base_url: str) -> str:
    """'https://api-in21.leadsquared.com' -> 'https://api-in21.leadsquared.com/v2/'."""
    root = base_url.rstrip("/")
    if "://" not in root:
        root = "https://" + root  # UserByAccessKey.Get returns bare host names
    return root + "/" if root.endswith("/v2") else root + "/v2/"




__all__ = ["LeadSquaredClient", "LeadSquaredError", "call_outcome", "lsq_datetime",
           "retry_delay"]
