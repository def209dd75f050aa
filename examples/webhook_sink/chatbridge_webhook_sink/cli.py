"""`bridge webhook ping` checks the endpoint; `bridge webhook receive` runs the reference one."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import click
from bridge import CONFIG_OPTION, Batch, Conversation, Outcome, friendly, load

from chatbridge_webhook_sink import NAME
from chatbridge_webhook_sink.sink import WebhookSink


@click.group(NAME)
def webhook() -> None:
    """Webhook sink: check the endpoint, or run a receiver to try the sink out."""


@webhook.command("ping")
@CONFIG_OPTION
@friendly
def ping(config_path: str) -> None:
    """POST a signed batch with no messages to plugins.webhook.url and show the answer."""
    config, _ = load(config_path)
    settings = config.plugin(NAME)
    if settings is None:
        raise click.ClickException(f"plugins.{NAME} is not in the config (add it first)")
    outcome = asyncio.run(_ping(WebhookSink(settings)))
    if outcome.kind != "delivered":
        raise click.ClickException(f"{settings.url}: {outcome.kind}: {outcome.reason}")
    click.echo(f"{settings.url} accepted a signed test batch")


async def _ping(sink: WebhookSink) -> Outcome:
    await sink.start()
    try:
        return await sink.post(Batch(key=f"ping-{uuid.uuid4().hex}", sink=sink.name,
                                     conversation=Conversation("ping"), messages=[]))
    finally:
        await sink.close()


@webhook.command("receive")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8091, show_default=True, type=int)
@click.option("--secret", envvar="WEBHOOK_SECRET", required=True,
              help="the same value as plugins.webhook.secret ($WEBHOOK_SECRET)")
def receive(host: str, port: int, secret: str) -> None:
    """Run the reference receiver until Ctrl-C: verify, dedupe and print each batch."""
    from chatbridge_webhook_sink.receiver import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, secret, click.echo))
