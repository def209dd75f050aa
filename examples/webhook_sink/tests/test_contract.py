"""The Chatbridge sink contract kit, run against the reference receiver on 127.0.0.1."""

from __future__ import annotations

import pytest
from bridge.testing import Received, SinkContract

from chatbridge_webhook_sink.config import WebhookConfig
from chatbridge_webhook_sink.receiver import Receiver
from chatbridge_webhook_sink.sink import WebhookSink

SECRET = "contract-test-secret-0123456789"


class TestWebhookSinkContract(SinkContract):
    """make_sink, received and the breakages, wired to a real Receiver per test."""

    crm: Receiver

    @pytest.fixture(autouse=True)
    async def receiver(self):
        self.crm = Receiver(SECRET)
        await self.crm.start()
        yield
        await self.crm.stop()

    def make_sink(self) -> WebhookSink:
        return WebhookSink(WebhookConfig(url=self.crm.url, secret=SECRET, timeout=2))

    def received(self) -> list[Received]:
        return [Received(key, tuple(m["id"] for m in post["messages"]))
                for key, post in self.crm.posts.items()]

    def break_backend(self, how: str) -> bool:
        if how == "lost_answer":
            self.crm.lose_answers = True
        else:
            self.crm.fail(503 if how == "error" else 429, retry_after="1")
        return True

    def mend_backend(self) -> None:
        self.crm.heal()
