"""The webhook sink: one signed POST per batch, safe to repeat under the batch's key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from bridge import Batch, Outcome

from chatbridge_webhook_sink.config import WebhookConfig
from chatbridge_webhook_sink.payload import KEY_HEADER, SIGNATURE_HEADER, body, sign

RETRY_STATUSES = frozenset({408, 409, 425, 429})  # timeout, in flight, too early, too many


class WebhookSink:
    """POSTs each conversation batch as JSON; the endpoint dedupes by Idempotency-Key."""

    name = "webhook"

    def __init__(self, settings: WebhookConfig) -> None:
        self.settings = settings
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the HTTP client used for the whole run."""
        self.client = httpx.AsyncClient(timeout=self.settings.timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def deliver(self, batch: Batch) -> list[Outcome]:
        """One POST for the whole batch; every message shares its outcome."""
        if batch.key in batch.ledger:  # an earlier attempt's success is on record
            return [Outcome.delivered()] * len(batch.messages)
        return [await self.post(batch)] * len(batch.messages)

    async def post(self, batch: Batch) -> Outcome:
        """Send the batch once, signed and keyed, and say what became of it."""
        payload = body(batch)
        headers = {"Content-Type": "application/json", KEY_HEADER: batch.key,
                   SIGNATURE_HEADER: sign(payload, self.settings.secret.get_secret_value())}
        try:
            response = await self.client.post(self.settings.url, content=payload,
                                              headers=headers)
        except httpx.TimeoutException:
            return Outcome.retry(f"no answer within {self.settings.timeout:g}s; it may have "
                                 "arrived, so the retry carries the same Idempotency-Key")
        except httpx.HTTPError as exc:
            return Outcome.retry(f"could not reach the endpoint: {type(exc).__name__}: {exc}")
        outcome = outcome_of(response)
        if outcome.kind == "delivered":
            batch.remember(batch.key, response.headers.get("X-Request-Id", batch.key))
        return outcome


def outcome_of(response: httpx.Response) -> Outcome:
    """2xx delivered; 5xx and RETRY_STATUSES retry (after Retry-After); other 4xx rejected."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome.delivered()
    reason = f"endpoint answered {status}: {_snippet(response)}"
    if status >= 500 or status in RETRY_STATUSES:
        return Outcome.retry(reason, retry_after(response.headers.get("Retry-After")))
    if status < 400 or status in (401, 403, 404):  # a setting to fix, not a bad message
        return Outcome.retry(f"{reason} (check url and secret in plugins.webhook)")
    return Outcome.rejected(reason)


def retry_after(value: str | None, now: datetime | None = None) -> datetime | None:
    """When a Retry-After header (seconds or an HTTP date) allows the next try, if it says."""
    if not value:
        return None
    now = now or datetime.now(UTC)
    if value.strip().isdigit():
        return now + timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _snippet(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:200] or response.reason_phrase
