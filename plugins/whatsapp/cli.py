"""`bridge whatsapp ...`: commands a user runs to check their WhatsApp setup."""

from __future__ import annotations

import json
import time
import uuid

import click

from bridge.cli import CONFIG_OPTION, friendly, load
from plugins.whatsapp.signature import sign


def sample_payload(phone_number_id: str, customer: str, text: str) -> dict:
    """A realistic `messages` notification with one inbound text message."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "0", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Chatbridge test"}, "wa_id": customer}],
            "messages": [{"from": customer, "id": f"wamid.test-{uuid.uuid4().hex}",
                          "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": text}}],
        }}]}],
    }


@click.group("whatsapp")
def whatsapp() -> None:
    """WhatsApp source: test your webhook setup."""


@whatsapp.command("send-test")
@CONFIG_OPTION
@click.option("--url", default=None, help="webhook URL (default: from the config)")
@click.option("--from", "customer", default="919876543210", show_default=True,
              help="customer number, digits only as WhatsApp sends it")
@click.option("--text", default="Hello from bridge whatsapp send-test", show_default=True)
@friendly
def send_test(config_path: str, url: str | None, customer: str, text: str) -> None:
    """Post a correctly signed sample webhook to a running bridge."""
    import httpx

    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    if section is None:
        raise click.ClickException("plugins.whatsapp is not in the config (add it first)")
    if url is None:
        host = config.server.host if config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{config.server.port}{section.path}"
    phone_id = (section.phone_number_ids or ["106540352242922"])[0]
    body = json.dumps(sample_payload(phone_id, customer, text)).encode()
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body, section.secrets[0])}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no bridge answered at {url} ({exc})") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}: {response.text}")
    click.echo(f"{url} stored the test message (200). Check `bridge status`.")
