"""The webhook sink's own behaviour: signing, keys, status handling, config, filter."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from bridge import Batch, BridgeError, Conversation
from bridge.testing import kit_messages, validate_section

from chatbridge_webhook_sink.config import WebhookConfig
from chatbridge_webhook_sink.filters import ExcludeNumbers
from chatbridge_webhook_sink.payload import body, sign, verify
from chatbridge_webhook_sink.receiver import Receiver
from chatbridge_webhook_sink.sink import WebhookSink

SECRET = "sink-test-secret-0123456789"


@pytest.fixture
async def crm():
    receiver = Receiver(SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def open_sink():
    sinks: list[WebhookSink] = []

    async def make(url: str, secret: str = SECRET, timeout: float = 2) -> WebhookSink:
        sink = WebhookSink(WebhookConfig(url=url, secret=secret, timeout=timeout))
        await sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def batch(n: int = 3) -> Batch:
    messages = kit_messages("w", (n,))
    return Batch(key="b0123", sink="webhook", conversation=Conversation(messages[0].conversation),
                 messages=messages)


async def test_batch_arrives_signed_under_its_key_oldest_first(crm, open_sink):
    sink, sent = await open_sink(crm.url), batch()
    outcomes = await sink.deliver(sent)
    assert [o.kind for o in outcomes] == ["delivered"] * 3
    post = crm.posts["b0123"]
    assert [m["id"] for m in post["messages"]] == [m.provider_id for m in sent.messages]
    assert post["conversation"] == sent.conversation.key and "Hello" in post["messages"][0]["line"]
    assert sent.new_ledger == {"b0123": "b0123"}


async def test_wrong_secret_is_a_retry_that_names_the_fix(crm, open_sink):
    sink = await open_sink(crm.url, secret="another-secret-0123456789")
    (outcome, *_) = await sink.deliver(batch())
    assert outcome.kind == "retry" and "401" in outcome.reason
    assert "check url and secret" in outcome.reason and crm.posts == {}


async def test_retry_after_in_seconds_or_as_a_date_is_honoured(crm, open_sink):
    sink = await open_sink(crm.url)
    crm.fail(429, retry_after="7")
    (outcome, *_) = await sink.deliver(batch())
    assert outcome.kind == "retry" and "429" in outcome.reason
    expected = datetime.now(UTC) + timedelta(seconds=7)
    assert abs((outcome.not_before - expected).total_seconds()) < 2
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    crm.fail(503, retry_after=format_datetime(when, usegmt=True))
    (outcome, *_) = await sink.deliver(batch())
    assert outcome.kind == "retry" and outcome.not_before == when


async def test_a_refused_body_is_rejected_with_the_endpoint_answer(crm, open_sink):
    sink = await open_sink(crm.url)
    crm.fail(422)
    (outcome, *_) = await sink.deliver(batch())
    assert outcome.kind == "rejected"
    assert outcome.reason == 'endpoint answered 422: {"error": "failing on purpose"}'


async def test_lost_answer_is_retried_and_the_repeat_is_not_stored_twice(crm, open_sink):
    sink, sent = await open_sink(crm.url), batch()
    crm.lose_answers = True
    assert {o.kind for o in await sink.deliver(sent)} == {"retry"}
    crm.heal()
    replay = replace(sent, attempt=2, uncertain=True, ledger={}, new_ledger={})
    assert {o.kind for o in await sink.deliver(replay)} == {"delivered"}
    assert list(crm.posts) == ["b0123"]


async def test_slow_endpoint_times_out_into_a_retry(serve_slow, open_sink):
    sink = await open_sink(serve_slow, timeout=0.2)
    (outcome, *_) = await sink.deliver(batch())
    assert outcome.kind == "retry" and "no answer within 0.2s" in outcome.reason


@pytest.fixture
async def serve_slow():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    await runner.cleanup()


def test_replayed_batch_has_the_same_bytes_and_signature():
    sent = batch()
    replay = replace(sent, attempt=3, uncertain=True,
                     conversation=Conversation(sent.conversation.key, contact_name="New Name"))
    assert body(sent) == body(replay)
    assert verify(body(sent), SECRET, sign(body(replay), SECRET))
    assert not verify(body(sent), SECRET, sign(body(sent), "x" * 16))
    assert not verify(body(sent), SECRET, None)


def test_config_errors_name_the_key_and_never_echo_the_secret():
    bad = {"url": "crm.example.com", "secret": "tiny-secret", "timeot": 5}
    with pytest.raises(BridgeError) as error:
        validate_section("webhook", WebhookConfig, bad)
    message = str(error.value)
    assert "plugins.webhook.url: 'crm.example.com' is not an http:// or https:// URL" in message
    assert "plugins.webhook.secret: must be at least 16 characters" in message
    assert "plugins.webhook.timeot: unknown key" in message and "tiny-secret" not in message
    good = {"url": "https://crm.example.com/in", "secret": SECRET, "timeout": "5s"}
    config = validate_section("webhook", WebhookConfig, good)
    assert config.timeout == 5 and config.sync_interval == 180


def test_excluded_numbers_are_skipped_for_this_sink_only():
    kept, dropped = kit_messages("x", (1, 1))
    excluder = ExcludeNumbers("webhook", [dropped.conversation])
    assert excluder.apply(dropped, "webhook") is None
    assert excluder.apply(dropped, "leadsquared") is dropped
    assert excluder.apply(kept, "webhook") is kept
