"""Settings of the WhatsApp source (`plugins.whatsapp` in the config file)."""

from __future__ import annotations

from typing import Annotated, Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge import Limits


class WhatsAppConfig(BaseModel):
    """The `plugins.whatsapp` section.

    verify_token: echoed by Meta in the handshake; app_secret: the Meta app secret, or a
    list while rotating (any one verifies); path: the webhook route; phone_number_ids:
    business numbers to store (None: all); default_region: for numbers written without a
    country code; body_timeout: seconds a POST's body may take to arrive (408 after);
    access_token: a system-user token with whatsapp_business_messaging, to fetch media
    (None: media is not fetched, and transcripts say so); graph_url, graph_version: where
    the Graph API is; media_timeout: longest one media download may take, whole
    (lookup and every byte), not each read.
    """

    model_config = ConfigDict(extra="forbid")

    verify_token: str
    app_secret: str | list[str]
    path: str = "/webhooks/whatsapp"
    phone_number_ids: list[str] | None = None
    default_region: str | None = None
    # Meta sends at most 3 MB from a data centre: 10 s is ample, and a client that trickles
    # its body holds a connection (a file descriptor) no longer than that.
    body_timeout: Annotated[float, Limits(
        1.0, why_low="a 3 MB webhook from Meta may take longer to arrive, and would be "
        "refused", example="10 (seconds)", duration=False)] = Field(10.0, gt=0, le=300)
    access_token: str | None = None
    graph_url: str = "https://graph.facebook.com"
    # v25.0: the version of the newest Graph docs and sample payloads in the reference
    # (whatsapp-webhooks.md, SAMPLE; developers.facebook.com examples read v25.0)
    graph_version: str = "v25.0"
    # a download URL lives 5 minutes [M-MEDIA]: a download must finish well within that
    media_timeout: Annotated[float, Limits(
        1.0, why_low="a photo may take longer to download, and every fetch would fail",
        example="240 (seconds)", duration=False)] = Field(240.0, gt=0, le=3600)

    @field_validator("access_token")
    @classmethod
    def _access_token(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError("is empty or has spaces around it (paste the system-user token "
                             "from Business Settings › System users, or remove the key)")
        return value

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not a URL (write it like https://graph.facebook.com)")
        return value.rstrip("/")

    @field_validator("graph_version")
    @classmethod
    def _graph_version(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"v\d+\.\d+", value):
            raise ValueError(f"{value!r} is not a Graph API version (write it like v25.0)")
        return value

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every accepted app secret, in the order written."""
        return (self.app_secret,) if isinstance(self.app_secret, str) else tuple(self.app_secret)

    @field_validator("verify_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (set it to the Verify token you enter in the App "
                             "Dashboard under WhatsApp › Configuration)")
        return value

    @field_validator("app_secret")
    @classmethod
    def _secrets(cls, value: str | list[str]) -> list[str]:
        secrets = [value] if isinstance(value, str) else value
        if not secrets or not all(s.strip() for s in secrets):
            raise ValueError("is empty (copy the App secret from the App Dashboard under "
                             "App settings › Basic)")
        if any(s != s.strip() for s in secrets):
            raise ValueError("has spaces or a line break around it (remove them; every "
                             "signature check would fail)")
        return secrets

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} does not start with '/' (write it like "
                             "/webhooks/whatsapp)")
        return value

    @field_validator("phone_number_ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("is an empty list (list at least one Phone number ID, or remove "
                             "the key to store every number)")
        ids = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        for item in ids:
            if not (isinstance(item, str) and item.isascii() and item.isdigit()):
                raise ValueError(f"{item!r} is not a Phone number ID (use the numeric ID shown "
                                 "in WhatsApp › API Setup, not the phone number)")
        return ids

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a known region (use a two-letter region like "
                             "IN or US)")
        return region
