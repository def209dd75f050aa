"""`plugins.webhook`: where to POST, the signing secret, how long to wait for an answer."""

from __future__ import annotations

from bridge import Duration, SinkSettings
from pydantic import ConfigDict, Field, SecretStr, field_validator


class WebhookConfig(SinkSettings):
    """Keys of plugins.webhook; sync_interval, max_attempts ... come from SinkSettings."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the endpoint that receives conversations (http or https)")
    secret: SecretStr = Field(description="HMAC-SHA256 key shared with the endpoint; "
                                          "use ${WEBHOOK_SECRET}")
    timeout: Duration = Field(10.0, gt=0, description="longest wait for the endpoint's answer")
    exclude: list[str] = Field(default_factory=list,
                               description="conversations (E.164 numbers) never sent here")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:  # the message must not echo the secret
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 32)")
        return value
